"""Writing the content of restored files (as restic's filerestorer.go): small files chunk by chunk through
Python on the job's file pool, files of many chunks by the C++ restore engine (engine.BlobWriter) on every
core (from an object store, each pack's needed ranges fetched first, merged and in parallel), block-device
images by ``restore_image``; all-zero runs are left as holes (fsmeta). Later names of a hard-linked inode are linked to
its first name once that is written.

Every file is written into a temporary file the target made (target.py: created from its directory's
descriptor, renamed over its name only when complete, with its metadata), and, with verify, handed to the
Verifier just after its rename.
"""
from __future__ import annotations

import os
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Tuple

from .. import fsmeta
from ..engine import BlobWriter
from ..packfetch import FetchedPacks
from ..errors import CorruptData, ObjectMissing, RecovaultError, TargetFull
from ..storage.base import has_local_files
from ..vault.records import Node
from ..vault.repo import Vault
from .report import Report
from .target import Dir, Parts, Target
from .verify import Verifier

SEGMENT = 4  # a file of more chunks goes to the C++ restore engine


@dataclass
class First:
    """The first name of a hard-linked inode: the later names are linked to it once it is written."""
    parts: Parts
    future: Optional["Future[None]"] = None
    ok: bool = False


@dataclass
class FileTask:
    dir: Dir
    name: bytes
    node: Node
    meta: fsmeta.Meta
    first: Optional[First] = None  # set when this file is the first name of a hard-linked inode


class _Written(NamedTuple):
    """A file written to its temporary name: the bytes written, and its (st_dev, st_ino)."""
    nbytes: int
    inode: Tuple[int, int]


class FileRestorer:
    """Restores files into the target: `restore_run` on the file pool's threads, `link` on the walk's."""

    def __init__(self, vault: Vault, target: Target, report: Report, verifier: Verifier, verify: bool) -> None:
        self.vault = vault
        self.target = target
        self.report = report
        self.verifier = verifier
        self.verify = verify
        self._local = has_local_files(vault.storage)  # packs are files the engine reads

    def restore_run(self, run: List[FileTask], fetched: "Optional[Future[FetchedPacks]]" = None) -> None:
        """Restore the files of `run`; `fetched`: the packs of their batch (restore/batch.py), being fetched."""
        packs = None if fetched is None else fetched.result()
        for t in run:
            if self.report.stopped:
                return
            self.restore_file(t, packs)

    def restore_file(self, t: FileTask, fetched: Optional[FetchedPacks] = None) -> None:
        path = self.target.path_of(t.dir.parts + (t.name,))
        try:
            if not t.dir.made and self.target.keep_file(t.dir, t.name, t.meta, path):
                if t.first is not None:
                    t.first.ok = True
                return
        except OSError as e:
            self.report.error(path, f"cannot compare with what the target holds: {e.strerror}")
            return
        created = self.target.create(t.dir, t.name, path)
        if created is None:
            return
        tmp, fd = created
        written = self._write_tmp(t, tmp, fd, path, fetched)
        if written is None or not self.target.replace(t.dir, tmp, t.name, path):
            return
        if t.first is not None:
            t.first.ok = True
        self.report.restored(written.nbytes)
        if self.verify:
            if t.node.image is not None:
                self.report.verified()  # verified by restore_image, through the descriptor it wrote
            else:
                self.verifier.add(t.dir.fd, t.name, path, written.inode, t.node.content or [])
        self.report.progress("file", {"path": path, "bytes": written.nbytes})

    def _write_tmp(self, t: FileTask, tmp: bytes, fd: int, path: str,
                   fetched: Optional[FetchedPacks]) -> Optional[_Written]:
        """Write the file's content and metadata to `tmp` (open as `fd`, closed here). What was written, or
        None (reported) when it failed: `tmp` is then removed, never left looking like a complete file."""
        try:
            written = self._write_content(fd, t, path, fetched)
            st = os.fstat(fd)
            self.target.apply_meta(t.dir.fd, tmp, t.meta if t.meta.type == "f" else self._as_file(t), path, fd=fd)
        except TargetFull:
            self.target.discard(t.dir, tmp)
            raise
        except (RecovaultError, OSError) as e:
            self.target.discard(t.dir, tmp)
            self.report.file_failed(path, e)
            return None
        finally:
            os.close(fd)
        return _Written(written, (st.st_dev, st.st_ino))

    @staticmethod
    def _as_file(t: FileTask) -> fsmeta.Meta:
        """A block device's image is restored as a regular file under the target."""
        return fsmeta.Meta.from_dict(dict(t.node.meta, t="f"))

    def _write_content(self, fd: int, t: FileTask, path: str, fetched: Optional[FetchedPacks]) -> int:
        if t.node.image is not None:
            from ..jobs.image import restore_image
            try:
                # workers=0: the C++ engine on every core (its threads need no GIL, unlike the file pool's)
                st = restore_image(self.vault, t.node.image, path, verify=self.verify, workers=0, dest_fd=fd)
            except TargetFull:
                raise self.report.target_full(path) from None  # the same message as for files, with the count
            return st["bytes_written"]
        ids = [bytes.fromhex(h) for h in t.node.content or []]
        if len(ids) <= 1 or (len(ids) <= SEGMENT and (self._local or fetched is not None)):
            offset = self._write_chunks(fd, ids, 0, fetched)
        else:  # a big file (or, from an object store, one of a few chunks: one get a pack instead of one a chunk)
            offset = self._write_big(fd, path, ids, fetched)
        fsmeta.finish_sparse(fd, offset)
        return offset

    def _write_big(self, fd: int, path: str, ids: List[bytes], fetched: Optional[FetchedPacks] = None) -> int:
        """Write a file of many chunks on every core, by the C++ restore engine (which fetches the needed
        ranges of packs that are not local files first). Returns the file's size. A pack that vanished (a
        prune repacked it after the index was loaded): the index files written since are loaded and the file
        is written again, once (as BlobStore.read_blob does for one blob)."""
        try:
            return self._write_big_once(fd, path, ids, fetched)
        except ObjectMissing:
            if not self.vault.load_index():
                raise
            return self._write_big_once(fd, path, ids)

    def _write_big_once(self, fd: int, dest: str, ids: List[bytes], fetched: Optional[FetchedPacks] = None) -> int:
        writer = BlobWriter(self.vault, fetch=True, fetched=fetched)
        offset = 0
        for cid in ids:
            loc = self.vault.locate(cid)
            writer.add(cid, offset, loc=loc)
            offset += loc.raw_length
        writer.run(fd, dest, sparse=True)
        return offset

    def _write_chunks(self, fd: int, ids: List[bytes], offset: int, fetched: Optional[FetchedPacks] = None) -> int:
        for cid in ids:
            data = self.vault.read_blob(cid) if fetched is None else self._fetched_blob(cid, fetched)
            fsmeta.write_sparse(fd, offset, data)
            offset += len(data)
        return offset

    def _fetched_blob(self, cid: bytes, fetched: FetchedPacks) -> bytes:
        """A blob from its batch's fetched packs; read from the vault if its pack could not be fetched (a
        prune moved it: read_blob loads the index files written since)."""
        loc = self.vault.locate(cid)
        name = self.vault.pack_name(loc.pack)
        if name not in fetched:
            return self.vault.read_blob(cid)
        raw = fetched.read(name, loc.offset, loc.length)
        if len(raw) != loc.length:
            raise CorruptData(f"pack {name} is truncated (blob {cid.hex()[:16]} cut short)")
        return self.vault.open_sealed(cid, raw, name, loc.raw_length)

    def link(self, t: FileTask, first: First) -> None:
        """A later name of a hard-linked inode: linked to the first name once that is written."""
        path = self.target.path_of(t.dir.parts + (t.name,))
        if first.future is not None:
            futures_wait([first.future])
        if not first.ok:
            self.report.error(path, f"not restored: {self.target.path_of(first.parts)}, which it is a hard link "
                                    f"of, was not")
            return
        if self.target.link(t.dir, t.name, first.parts, path):
            self.report.restored(0)
