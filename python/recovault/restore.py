"""Restore a recovery point (whole, or selected paths) to a target directory, byte for byte.

Files are restored by a small pool of threads (the C++ decrypt/decompress and the file writes release the
GIL); all-zero runs are left as holes, so sparse files come back sparse. Directory metadata is applied last,
deepest first, so restoring children does not disturb their parents' times. ``verify`` re-reads every
restored file, chunks and hashes it, and compares with the recovery point.
"""
from __future__ import annotations

import errno
import os
import stat as st_mod
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import core, fsmeta
from .engine import BlobWriter
from .errors import CorruptData, NotFound, RecovaultError, TargetFull
from .vault.repo import Vault
from .vault.tree import decode_name


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    others: int = 0
    bytes: int = 0
    errors: int = 0
    verified: int = 0
    duration: float = 0.0


@dataclass
class _FileTask:
    dest: str
    node: Dict[str, Any]
    meta: fsmeta.Meta


def _clear_for_file(dest: str) -> None:
    """Unlink whatever is at dest: a file is recreated, never written in place, since what is there may be a
    symlink or a hard link to a file outside the target. (A directory in the way fails: EISDIR.)"""
    try:
        os.unlink(dest)
    except FileNotFoundError:
        pass


def _split(path: str) -> Tuple[bytes, ...]:
    return tuple(p for p in os.fsencode(path).split(b"/") if p)


class RestoreJob:
    def __init__(self, vault: Vault, snap: Dict[str, Any], target: str, paths: Optional[List[str]] = None, *,
                 verify: bool = False, owners: Optional[bool] = None, workers: int = 2,
                 progress: Optional[Callable[[str, Dict[str, Any]], None]] = None) -> None:
        self.vault = vault
        self.snap = snap
        self.target = os.path.abspath(target)
        self.selection = [_split(p) for p in (paths or [])]
        self.verify = verify
        self.owners = (os.geteuid() == 0) if owners is None else owners
        self.workers = max(1, workers)
        self.progress = progress or (lambda kind, info: None)
        self.stats = RestoreStats()
        self.errors: List[Dict[str, str]] = []
        self.warnings: List[Dict[str, str]] = []
        self._lock = threading.Lock()
        self.data_errors = 0  # errors from the vault (corrupt or missing data), as opposed to the target

    # ---- selection ---------------------------------------------------------------------------
    def _wanted(self, parts: Tuple[bytes, ...]) -> Tuple[bool, bool]:
        """(restore this node, descend into it)."""
        if not self.selection:
            return True, True
        for sel in self.selection:
            if parts[: len(sel)] == sel:
                return True, True  # inside a selected path
            if sel[: len(parts)] == parts:
                return False, True  # an ancestor of a selected path: create it, descend
        return False, False

    def _warn(self, path: str, msg: str) -> None:
        """Metadata that could not be applied (an unsupported xattr, a socket, a device node without
        privileges): reported, counted, but the data is restored, so the restore still succeeds."""
        with self._lock:
            self.warnings.append({"path": path, "warning": msg})
        self.progress("error", {"path": path, "error": msg})

    def _fail_on_full_disk(self, e: OSError, path: str) -> None:
        """A full target (or quota) ends the restore with one message, instead of one error per file."""
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise self._target_full(path)

    def _target_full(self, path: str) -> TargetFull:
        return TargetFull(f"no space left on the restore target (writing {path}); "
                          f"{self.stats.files} files were restored before it filled up")

    def _error(self, path: str, msg: str) -> None:
        with self._lock:
            self.errors.append({"path": path, "error": msg})
            self.stats.errors += 1
        self.progress("error", {"path": path, "error": msg})

    # ---- the job -----------------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        t0 = time.monotonic()
        os.makedirs(self.target, exist_ok=True)
        files: List[_FileTask] = []
        dirs: List[Tuple[str, fsmeta.Meta]] = []
        found = [not sel for sel in self.selection]  # "/" selects everything
        self._plan(bytes.fromhex(self.snap["tree"]), (), files, dirs, found)
        for sel, hit in zip(self.selection, found):
            if not hit:
                raise NotFound(f"path /{os.fsdecode(b'/'.join(sel))} is not in recovery point {self.snap['id'][:8]}")
        total = sum(f.node.get("size", 0) for f in files)
        self.progress("plan", {"files": len(files), "bytes": total})
        # Hard links: the first path of an inode gets the data, the others link to it afterwards.
        first: List[_FileTask] = []
        later: List[Tuple[_FileTask, str]] = []  # (a further link, the path of the inode's first link)
        seen: Dict[Tuple[int, int], str] = {}
        for f in files:
            if f.meta.nlink > 1 and f.meta.ino:
                key = (f.meta.dev, f.meta.ino)
                if key in seen:
                    later.append((f, seen[key]))
                    continue
                seen[key] = f.dest
            first.append(f)
        # Files in a pool of `workers` threads; the chunks of big files in a second pool (a separate one, so
        # a file thread waiting for its segments can never starve them).
        with ThreadPoolExecutor(self.workers, thread_name_prefix="recovault-restore") as pool, \
                ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="recovault-segment") as seg:
            self._segments = seg
            # Files go to the threads in runs of 16: one task per small file cost more than restoring it.
            runs = [first[i:i + 16] for i in range(0, len(first), 16)]
            for _ in pool.map(lambda run: [self._restore_file(f) for f in run], runs):
                pass
        for f, src in later:
            try:
                if os.path.lexists(f.dest):
                    os.unlink(f.dest)
                os.link(src, f.dest)
                self.stats.files += 1
            except OSError as e:
                self._error(f.dest, f"cannot create hard link: {e.strerror}")
        for path, meta in reversed(dirs):  # deepest last-listed first: children before parents
            for w in fsmeta.apply(path, meta, owners=self.owners):
                self._warn(path, w)
        if self.verify:
            self._verify([f for f in first if "image" not in f.node])
        self.stats.duration = round(time.monotonic() - t0, 3)
        return {"snapshot": self.snap["id"], "target": self.target, "stats": dict(self.stats.__dict__),
                "errors": self.errors[:1000], "warnings": self.warnings[:1000], "data_errors": self.data_errors}

    def _plan(self, tree_id: bytes, parts: Tuple[bytes, ...], files: List[_FileTask],
              dirs: List[Tuple[str, fsmeta.Meta]], found: List[bool]) -> None:
        tree = self.vault.load_tree(tree_id)
        for node in tree["nodes"]:
            name = decode_name(node["name"])
            if name in (b"", b".", b"..") or b"/" in name:
                raise CorruptData(f"tree {tree_id.hex()[:16]} holds an invalid file name {name!r}")
            p = parts + (name,)
            want, descend = self._wanted(p)
            if not want and not descend:
                continue
            for i, sel in enumerate(self.selection):
                if p == sel:
                    found[i] = True
            dest = os.path.join(self.target, os.fsdecode(b"/".join(p)))
            meta = fsmeta.Meta.from_dict(node["meta"])
            try:
                if meta.type == "d":
                    os.makedirs(dest, exist_ok=True)
                    if want:
                        dirs.append((dest, meta))
                        self.stats.dirs += 1
                    if descend and "subtree" in node:
                        self._plan(bytes.fromhex(node["subtree"]), p, files, dirs, found)
                    continue
                if not want:
                    continue
                if meta.type == "f" or "image" in node:
                    files.append(_FileTask(dest, node, meta))
                    continue
                if os.path.lexists(dest):
                    os.unlink(dest)
                if meta.type == "l":
                    os.symlink(meta.target or b"", os.fsencode(dest))
                else:
                    for w in fsmeta.create_special(dest, meta):
                        self._warn(dest, w)
                    if not os.path.lexists(dest):
                        continue
                for w in fsmeta.apply(dest, meta, owners=self.owners):
                    self._warn(dest, w)
                self.stats.others += 1
            except OSError as e:
                self._fail_on_full_disk(e, dest)
                self._error(dest, f"cannot create: {e.strerror}")

    def _restore_file(self, f: _FileTask) -> None:
        if "image" in f.node:
            self._restore_image(f)
            return
        try:
            _clear_for_file(f.dest)
            fd = os.open(f.dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            self._fail_on_full_disk(e, f.dest)
            self._error(f.dest, f"cannot create: {e.strerror}")
            return
        written = 0
        try:
            ids = [bytes.fromhex(h) for h in f.node.get("content", [])]
            if len(ids) <= self.SEGMENT:
                offset = self._write_chunks(fd, ids, 0)
            else:  # a big file: its chunks are fetched, opened and written by all cores at once
                offset = self._write_big(fd, f.dest, ids)
            fsmeta.finish_sparse(fd, offset)
            written = offset
        except (RecovaultError, OSError) as e:
            self._file_failed(f.dest, e)
            return
        finally:
            os.close(fd)
        self._file_done(f.dest, f.meta, written)

    def _file_failed(self, dest: str, e: "RecovaultError | OSError") -> None:
        """A file whose data could not be restored: vault-side (corrupt or missing data) or target-side."""
        if isinstance(e, RecovaultError):
            with self._lock:
                self.data_errors += 1
            self._error(dest, str(e))
        else:
            self._fail_on_full_disk(e, dest)
            self._error(dest, f"write failed: {e.strerror}")

    def _file_done(self, dest: str, meta: fsmeta.Meta, written: int, verified: bool = False) -> None:
        for w in fsmeta.apply(dest, meta, owners=self.owners):
            self._warn(dest, w)
        with self._lock:
            self.stats.files += 1
            self.stats.bytes += written
            self.stats.verified += verified
        self.progress("file", {"path": dest, "bytes": written})

    SEGMENT = 4  # chunks per task when a file is split across threads

    def _write_big(self, fd: int, dest: str, ids: List[bytes]) -> int:
        """Write a file of many chunks on every core: by the C++ restore engine when all its packs are local
        files, else in segments of SEGMENT chunks by the segment pool. Returns the file's size."""
        writer: Optional[BlobWriter] = BlobWriter(self.vault)
        starts, offset = [], 0
        for cid in ids:
            starts.append(offset)
            loc = self.vault.locate(cid)
            if writer is not None and not writer.add(cid, offset, loc=loc):
                writer = None  # a pack that is not a local file: the Python path for the whole file
            offset += loc.raw_length
        if writer is not None:
            writer.run(fd, dest, sparse=True)
            return offset
        segs = [self._segments.submit(self._write_chunks, fd, ids[i:i + self.SEGMENT], starts[i])
                for i in range(0, len(ids), self.SEGMENT)]
        # Every segment must be over before fd is closed, failed or not: a segment still writing
        # after the close would write into whatever file reuses the descriptor number next.
        futures_wait(segs)
        for seg in segs:
            seg.result()
        return offset

    def _write_chunks(self, fd: int, ids: List[bytes], offset: int) -> int:
        for cid in ids:
            data = self.vault.read_blob(cid)
            fsmeta.write_sparse(fd, offset, data)
            offset += len(data)
        return offset

    def _restore_image(self, f: _FileTask) -> None:
        from .jobs.image import restore_image
        try:
            _clear_for_file(f.dest)
            # workers=0: the C++ engine on every core (its threads need no GIL, unlike the file pool's)
            st = restore_image(self.vault, f.node["image"], f.dest, verify=self.verify, workers=0)
        except TargetFull:
            raise self._target_full(f.dest) from None  # the same message as for files, with the count
        except (RecovaultError, OSError) as e:
            self._file_failed(f.dest, e)
            return
        meta = f.meta
        if meta.type != "f":  # a block device's image is restored as a regular file under --target
            meta = fsmeta.Meta.from_dict(dict(f.node["meta"], t="f"))
        self._file_done(f.dest, meta, st["bytes_written"], verified=self.verify)

    def _verify(self, files: List[_FileTask]) -> None:
        """Re-read what was written: chunk and hash each file as a backup would, compare chunk IDs."""
        scratch = core.IdSet()
        pipe = self.vault.pipeline(compress="never", known=scratch)
        # Preload every id as known so nothing is sealed: verification only hashes.
        ids = [[] for _ in files]
        for f in files:
            for c in f.node.get("content", []):
                scratch.add(bytes.fromhex(c))
        for batch in pipe.run([f.dest for f in files]):
            for kind, src, _off, _len, cid, payload in batch:
                if kind == core.CHUNK:
                    ids[src].append(cid.hex())
                elif kind == core.END:
                    f = files[src]
                    if payload is not None:
                        self._error(f.dest, f"verify: cannot read back: {payload}")
                    elif ids[src] != f.node.get("content", []):
                        self._error(f.dest, "verify: restored content differs from the recovery point")
                    else:
                        self.stats.verified += 1
                    ids[src] = []
