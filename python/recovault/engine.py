"""Writing vault blobs into one file or device with the C++ restore engine (``core.restore_blobs``).

A caller (image restore, the content of big files in a restore) adds blobs with where their bytes go; the
engine then reads each from its pack file, opens it and writes it on every core, without the GIL. Packs that
are not local files (``Storage.local_path`` gives None: object stores) are refused by :meth:`BlobWriter.add`
(the caller then takes its Python path: image restores still do), or, with ``fetch=True``, fetched first, as restic's
restorer reads each pack once: per pack, the byte ranges the items need, merged when less than
``MERGE_GAP`` apart, are fetched with ranged gets on ``connections`` threads into an anonymous memory file
(memfd) at their offsets, which the engine reads as that pack (``/proc/self/fd/N``); packs are taken in
windows of at most ``WINDOW`` fetched bytes, so memory stays bounded whatever the file's size. Engine
failures become the project's errors, naming the blob, the pack and what the caller says the blob is for
(an image block).
"""
from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional

from . import core
from .errors import CorruptData, ObjectMissing, RecovaultError, StorageError
from .packfetch import FetchedPacks, PackCache, Span, merged_spans

if TYPE_CHECKING:
    from .vault.repo import Location, Vault

_NO_ID = bytes(32)
#: At most this many bytes of fetched pack ranges are held at once (a window of packs per engine call).
WINDOW = 256 << 20


class BlobWriter:
    """Items for one ``core.restore_blobs`` call (``core.RestoreItem``: a pack index, or -1 for zeros; where
    the sealed blob is; its id; where it goes; which of its plaintext bytes)."""

    def __init__(self, vault: "Vault", describe: Optional[Callable[[int], str]] = None, fetch: bool = False,
                 fetched: Optional[FetchedPacks] = None) -> None:
        self.vault = vault
        self.fetch = fetch  # packs that are not local files: fetched at run time (else refused by add)
        self.fetched = fetched  # packs already fetched (their needed ranges) by the caller: read there
        self.describe = describe  # tag -> what a blob is for, in messages ("image block 17")
        self.packs: List[Optional[str]] = []  # local paths (None: fetched at run time), indexed by the items
        self.names: List[str] = []  # the same packs' object names
        self.items: List[core.RestoreItem] = []
        self.tags: List[int] = []
        self._pack_index: Dict[bytes, int] = {}

    def add(self, blob_id: bytes, dest: int, skip: int = 0, length: Optional[int] = None, tag: int = 0,
            loc: Optional["Location"] = None) -> bool:
        """Write bytes [skip, skip + length) of the blob (to its end by default) at `dest`. `loc`: the blob's
        location, if the caller has it. False (nothing added) when the blob's pack is not a local file and this
        writer does not fetch."""
        if loc is None:
            loc = self.vault.locate(blob_id)
        i = self._pack_index.get(loc.pack)
        if i is None:
            name = self.vault.pack_name(loc.pack)
            path = self.vault.storage.local_path(name)
            if path is None and self.fetched is not None:
                path = self.fetched.path(name)
            if path is None and not self.fetch:
                return False
            i = self._pack_index[loc.pack] = len(self.packs)
            self.packs.append(path)
            self.names.append(name)
        n = loc.raw_length - skip if length is None else length
        self.items.append(core.RestoreItem(i, loc.offset, loc.length, blob_id, dest, loc.raw_length, skip, n))
        self.tags.append(tag)
        return True

    def add_zeros(self, dest: int, length: int, tag: int = 0) -> None:
        """Write `length` zero bytes at `dest` (one item with a zero run that ends there)."""
        items = self.items
        last = items[-1] if items else None
        if last is not None and last.pack == -1 and last.dest + last.length == dest:
            items[-1] = last._replace(length=last.length + length)
            return
        items.append(core.RestoreItem(-1, 0, 0, _NO_ID, dest, 0, 0, length))
        self.tags.append(tag)

    def run(self, fd: int, dest: str, *, sparse: bool, workers: int = 0,
            progress: Optional[Callable[[int], None]] = None) -> Dict[str, int]:
        """Write every item into `fd` (`dest` names it in messages). sparse: `fd` is a fresh file that reads
        as zeros, so aligned all-zero 4 KiB blocks are left as holes (call fsmeta.finish_sparse after).
        progress(n) gets the bytes put in place since its last call. Returns {"data_bytes", "zero_bytes",
        "items"}. Raises CorruptData / ObjectMissing / StorageError for the vault's side, OSError (errno as
        the kernel gave it: ENOSPC...) for the destination's."""
        reported = [0]

        def tick(done: int) -> None:
            if progress is not None and done > reported[0]:
                progress(done - reported[0])
                reported[0] = done

        if all(p is not None for p in self.packs):
            res = self._restore(fd, dest, self.packs, self.items, range(len(self.items)), sparse, workers, tick)
        else:
            res = {"data_bytes": 0, "zero_bytes": 0, "items": 0}
            for window in self._windows():
                done = res["data_bytes"] + res["zero_bytes"]
                part = self._fetch_and_restore(fd, dest, window, sparse, workers,
                                               lambda n, done=done: tick(done + n))
                for k in res:
                    res[k] += part.get(k, 0)
        tick(res["data_bytes"] + res["zero_bytes"])
        return res

    def _restore(self, fd: int, dest: str, packs: List[Optional[str]], items: List["core.RestoreItem"],
                 indexes: Iterable[int], sparse: bool, workers: int,
                 tick: Callable[[int], None]) -> Dict[str, int]:
        """One engine call; `indexes`: each item's index in self.items (for messages)."""
        try:
            return core.restore_blobs(self.vault.master.enc_key, fd, [p or "" for p in packs], items,
                                      workers=workers, sparse=sparse, progress=tick,
                                      session_key=self.vault.sealer.session_key)
        except core.RestoreError as e:
            raise self._error(e, dest, None if e.index is None else list(indexes)[e.index]) from None

    def _windows(self) -> List[List[int]]:
        """The items (indexes) in windows: each window's remote packs need at most WINDOW fetched bytes (at
        least one pack each); zero runs and local packs go with the first."""
        by_pack: Dict[int, List[int]] = {}
        first: List[int] = []
        for k, item in enumerate(self.items):
            if item.pack == -1 or self.packs[item.pack] is not None:
                first.append(k)
            else:
                by_pack.setdefault(item.pack, []).append(k)
        windows, current, size = [first], first, 0
        for ks in by_pack.values():
            need = sum(n for _o, n in merged_spans((self.items[k].pack_offset, self.items[k].sealed_length)
                                                   for k in ks))
            if size and size + need > WINDOW:
                current, size = [], 0
                windows.append(current)
            current.extend(ks)
            size += need
        return [w for w in windows if w]

    def _fetch_and_restore(self, fd: int, dest: str, window: List[int], sparse: bool, workers: int,
                           tick: Callable[[int], None]) -> Dict[str, int]:
        """Fetch the window's remote packs (their needed ranges, merged) into memory files, in parallel, and
        run the engine on the window's items reading them there."""
        spans: Dict[str, List[Span]] = {}
        for k in window:
            item = self.items[k]
            if item.pack != -1 and self.packs[item.pack] is None:
                spans.setdefault(self.names[item.pack], []).append((item.pack_offset, item.sealed_length))
        with PackCache(self.vault, keep=0).fetch(spans) as fetched:
            fetched.raise_first()
            packs = [fetched.path(self.names[i]) if p is None and self.names[i] in spans else p
                     for i, p in enumerate(self.packs)]
            return self._restore(fd, dest, packs, [self.items[k] for k in window], window, sparse, workers, tick)

    def _error(self, e: "core.RestoreError", dest: str, index: Optional[int]) -> BaseException:
        if e.kind == "write":
            return OSError(e.errno, os.strerror(e.errno), dest)
        if e.errno == errno.ENOMEM:
            return MemoryError()
        if index is None:
            return RecovaultError(f"restore of {dest} failed: {e.detail}")
        item = self.items[index]
        bid, name = item.id.hex()[:16], self.names[item.pack]
        purpose = self.describe(self.tags[index]) if self.describe else ""
        what = f"blob {bid} in pack {name}" + (f" ({purpose})" if purpose else "")
        if e.kind in ("auth", "corrupt"):
            return CorruptData(f"{what} is corrupt or was tampered with ({e.detail})")
        if e.kind == "length":
            return CorruptData(f"{what} has the wrong length ({e.detail})")
        if e.kind == "truncated":
            return CorruptData(f"pack {name} is truncated (blob {bid} cut short"
                               + (f", {purpose})" if purpose else ")"))
        if e.kind == "pack_missing":
            return ObjectMissing(f"object {name} is missing from the vault at {self.vault.storage.url}"
                                 + (f" (needed for {purpose})" if purpose else ""))
        if e.kind == "read":
            path = self.packs[item.pack] or f"{name} in {self.vault.storage.url} (fetched)"
            if e.errno in (errno.EACCES, errno.EPERM):
                return StorageError(f"permission denied: cannot read {path}")
            return StorageError(f"cannot read {path}: {os.strerror(e.errno)}")
        return RecovaultError(f"{what}: restore failed: {e.detail}")
