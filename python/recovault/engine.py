"""Writing vault blobs into one file or device with the C++ restore engine (``core.restore_blobs``).

A caller (image restore, the content of big files in a restore) adds blobs with where their bytes go; the
engine then reads each from its pack file, opens it and writes it on every core, without the GIL. A blob
whose pack is not a local file (``Storage.local_path`` gives None, as object stores will) is refused by
:meth:`BlobWriter.add`, and the caller uses its Python path instead. Engine failures become the project's
errors, naming the blob, the pack and what the caller says the blob is for (an image block).
"""
from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Callable, Dict, List, Optional

from . import core
from .errors import CorruptData, ObjectMissing, RecovaultError, StorageError

if TYPE_CHECKING:
    from .vault.repo import Location, Vault

_NO_ID = bytes(32)


class BlobWriter:
    """Items for one ``core.restore_blobs`` call (``core.RestoreItem``: a pack index, or -1 for zeros; where
    the sealed blob is; its id; where it goes; which of its plaintext bytes)."""

    def __init__(self, vault: "Vault", describe: Optional[Callable[[int], str]] = None) -> None:
        self.vault = vault
        self.describe = describe  # tag -> what a blob is for, in messages ("image block 17")
        self.packs: List[str] = []  # local paths, indexed by the items
        self.names: List[str] = []  # the same packs' object names
        self.items: List[core.RestoreItem] = []
        self.tags: List[int] = []
        self._pack_index: Dict[bytes, int] = {}

    def add(self, blob_id: bytes, dest: int, skip: int = 0, length: Optional[int] = None, tag: int = 0,
            loc: Optional["Location"] = None) -> bool:
        """Write bytes [skip, skip + length) of the blob (to its end by default) at `dest`. False (nothing
        added) when the blob's pack is not a local file. `loc`: the blob's location, if the caller has it."""
        if loc is None:
            loc = self.vault.locate(blob_id)
        i = self._pack_index.get(loc.pack)
        if i is None:
            name = self.vault.pack_name(loc.pack)
            path = self.vault.storage.local_path(name)
            if path is None:
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

        try:
            res = core.restore_blobs(self.vault.master.enc_key, fd, self.packs, self.items, workers=workers,
                                     sparse=sparse, progress=tick)
        except core.RestoreError as e:
            raise self._error(e, dest) from None
        tick(res["data_bytes"] + res["zero_bytes"])
        return res

    def _error(self, e: "core.RestoreError", dest: str) -> BaseException:
        if e.kind == "write":
            return OSError(e.errno, os.strerror(e.errno), dest)
        if e.errno == errno.ENOMEM:
            return MemoryError()
        if e.index is None:
            return RecovaultError(f"restore of {dest} failed: {e.detail}")
        item = self.items[e.index]
        bid, name = item.id.hex()[:16], self.names[item.pack]
        purpose = self.describe(self.tags[e.index]) if self.describe else ""
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
            path = self.packs[item[0]]
            if e.errno in (errno.EACCES, errno.EPERM):
                return StorageError(f"permission denied: cannot read {path}")
            return StorageError(f"cannot read {path}: {os.strerror(e.errno)}")
        return RecovaultError(f"{what}: restore failed: {e.detail}")
