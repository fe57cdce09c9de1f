"""Disk images, block devices and streams.

An image is cut into fixed-size blocks: 64 KiB by default, doubled for images of more than 256 GiB so that
the block map stays under 4 Mi entries (128 MiB), and always the size the image's previous recovery point
used (another size would share no block with it). 64 KiB was chosen by measurement on the peers bench's 2
GB ext4 image with 16 MiB clustered + 200 scattered 4 KiB writes: 32K/64K/128K blocks added 19.6/20.1/21.8
MB where restic added 42.3, for vaults of 320/316/313 MB; since restore runs in C++ (core.restore_blobs),
smaller blocks no longer cost restore time (see docs/performance.md). Each recovery point keeps a *block
map*: for block i, the chunk ID of its bytes, or 32 zero bytes for an all-zero block
or a hole. The map is split into pages of PAGE_BLOCKS entries, each a tree-type blob, so an unchanged
region's pages deduplicate between recovery points and a restore of point N needs N's map only.

Backup reads only the data extents (SEEK_DATA/SEEK_HOLE: holes are never read), streams them through the
C++ pipeline in fixed-block mode on all cores, and stores only blocks whose ID the vault does not have:
an unchanged block costs a read and a hash, an all-zero block costs nothing.

Restore turns the block map into items for the C++ restore engine (core.restore_blobs: pread from the pack
file, open, pwrite, on every core without the GIL), one batch of blocks at a time; packs that are not local
files (object stores) have the ranges the batch needs fetched first (engine.BlobWriter(fetch=True)).
"""
from __future__ import annotations

import errno
import os
import stat as st_mod
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import core, fsmeta
from ..engine import BlobWriter
from ..errors import CorruptData, RecovaultError, TargetFull, UsageError
from ..vault import format as fmt
from ..vault.repo import Vault

DEFAULT_BLOCK_SIZE = 64 << 10
MAX_MAP_BLOCKS = 1 << 22  # default block size doubles until an image has at most this many blocks
PAGE_BLOCKS = 4096
ZERO_ID = bytes(32)


def device_size(fd: int) -> int:
    st = os.fstat(fd)
    if st_mod.S_ISREG(st.st_mode):
        return st.st_size
    return os.lseek(fd, 0, os.SEEK_END)  # block devices: lseek gives the size


def default_block_size(size: int) -> int:
    """The block size for a new image of `size` bytes: DEFAULT_BLOCK_SIZE, doubled while the image would have
    more than MAX_MAP_BLOCKS blocks (at most 64 MiB)."""
    bs = DEFAULT_BLOCK_SIZE
    while size > bs * MAX_MAP_BLOCKS and bs < (64 << 20):
        bs *= 2
    return bs


def data_ranges(fd: int, size: int, block_size: int) -> List[Tuple[int, int]]:
    """Data extents widened to whole blocks and merged: (start, length) pairs to read."""
    out: List[Tuple[int, int]] = []
    for off, length in fsmeta.data_extents(fd, size):
        a = off - off % block_size
        b = min(size, -(-(off + length) // block_size) * block_size)
        if out and a <= out[-1][0] + out[-1][1]:
            s, l = out[-1]
            out[-1] = (s, max(s + l, b) - s)
        else:
            out.append((a, b - a))
    return out


def backup_image(vault: Vault, path: str, *, block_size: int = 0, workers: int = 0,
                 progress: Optional[Callable[[str, Dict[str, Any]], None]] = None) -> Tuple[Dict[str, Any], Dict[str, int]]:
    """Back up one image file or block device (block_size 0: default_block_size of its size). Returns (image
    descriptor for the tree node, stats)."""
    progress = progress or (lambda kind, info: None)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise UsageError(f"cannot open image {path}: {e.strerror}") from None
    stats = {"bytes_read": 0, "chunks_new": 0, "bytes_added": 0, "zero_blocks": 0, "data_blocks": 0}
    try:
        mode = os.fstat(fd).st_mode
        if not (st_mod.S_ISREG(mode) or st_mod.S_ISBLK(mode)):
            raise UsageError(f"cannot back up image {path}: not a regular file or block device")
        size = device_size(fd)
        block_size = block_size or default_block_size(size)
        nblocks = -(-size // block_size)
        ids = bytearray(nblocks * 32)  # zero = hole / all-zero block
        ranges = data_ranges(fd, size, block_size)
        # progress: the image counts as one file of its data extents' bytes, advanced as blocks are read
        progress("more", {"files": 1, "bytes": sum(n for _, n in ranges)})
        pipe = vault.pipeline(workers=workers, fixed_block=block_size)
        done = 0
        for batch in pipe.run([(fd, start, length) for start, length in ranges]):
            before = done
            for ev in batch:  # core.PipelineEvent
                start = ranges[ev.source][0]
                if ev.kind == core.END:
                    if ev.payload is not None:
                        raise RecovaultError(f"cannot read image {path}: {ev.payload}")
                    if ev.length != ranges[ev.source][1]:
                        # Its end would be recorded as zeros (or a partial last block) that were never on it.
                        raise RecovaultError(
                            f"image {path} shrank while it was being read (from {size} bytes; read stopped at "
                            f"{start + ev.length}): back up a snapshot of a disk that is in use")
                    continue
                block = (start + ev.offset) // block_size
                done += ev.length
                if ev.kind == core.CHUNK:
                    ids[block * 32:(block + 1) * 32] = ev.id
                    stats["data_blocks"] += 1
                    if ev.payload is not None:
                        vault.add_sealed(fmt.BLOB_DATA, ev.id, ev.payload, ev.length)
                        stats["chunks_new"] += 1
                        stats["bytes_added"] += len(ev.payload)
            progress("bytes", {"path": path, "bytes": done - before, "done_bytes": done})
        progress("file", {"path": path, "bytes": 0})
        stats["bytes_read"] = done
        stats["zero_blocks"] = nblocks - stats["data_blocks"]
        pages = []
        for i in range(0, nblocks, PAGE_BLOCKS):
            pages.append(vault.save_blob(fmt.BLOB_TREE, bytes(ids[i * 32:(i + PAGE_BLOCKS) * 32])).hex())
        desc = {"bs": block_size, "size": size, "pages": pages}
        return desc, stats
    finally:
        os.close(fd)


class ImageMap:
    """A recovery point's block map for one image, with reads of any byte range (for restore and FUSE)."""

    def __init__(self, vault: Vault, desc: Dict[str, Any],
                 read_blob: Optional[Callable[[bytes], bytes]] = None) -> None:
        self.vault = vault
        self.read_blob = read_blob or vault.read_blob  # FUSE passes its LRU cache here
        self.block_size = int(desc["bs"])
        self.size = int(desc["size"])
        self.pages = [bytes.fromhex(p) for p in desc["pages"]]
        self.nblocks = -(-self.size // self.block_size) if self.size else 0
        if len(self.pages) != -(-self.nblocks // PAGE_BLOCKS):
            raise CorruptData("image block map has the wrong number of pages")
        self._page_cache: Dict[int, bytes] = {}
        self._lock = threading.Lock()

    def page(self, p: int) -> bytes:
        """Page p of the block map: the IDs of blocks p * PAGE_BLOCKS... (32 bytes each), read once."""
        with self._lock:
            page = self._page_cache.get(p)
        if page is None:
            page = self.vault.read_blob(self.pages[p])
            expected = min(PAGE_BLOCKS, self.nblocks - p * PAGE_BLOCKS) * 32
            if len(page) != expected:
                raise CorruptData(f"image block map page {p} has the wrong length")
            with self._lock:
                self._page_cache[p] = page
        return page

    def block_id(self, block: int) -> Optional[bytes]:
        p, i = divmod(block, PAGE_BLOCKS)
        bid = self.page(p)[i * 32:(i + 1) * 32]
        return None if bid == ZERO_ID else bid

    def block_len(self, block: int) -> int:
        return min(self.block_size, self.size - block * self.block_size)

    def read_block(self, block: int) -> Optional[bytes]:
        """The block's bytes, or None for a zero block / hole."""
        bid = self.block_id(block)
        if bid is None:
            return None
        data = self.read_blob(bid)
        if len(data) != self.block_len(block):
            raise CorruptData(f"image block {block} has the wrong length")
        return data

    def read(self, offset: int, length: int) -> bytes:
        end = min(self.size, offset + length)
        out = bytearray()
        while offset < end:
            block, within = divmod(offset, self.block_size)
            n = min(self.block_len(block) - within, end - offset)
            data = self.read_block(block)
            out += data[within:within + n] if data is not None else bytes(n)
            offset += n
        return bytes(out)


#: Blocks planned and handed to the C++ restore engine per call: bounds the item list's memory on huge images.
ENGINE_BATCH = 1 << 16


def restore_image(vault: Vault, desc: Dict[str, Any], dest: str, *, byte_range: Optional[Tuple[int, int]] = None,
                  workers: int = 0, verify: bool = False,
                  progress: Optional[Callable[[str, Dict[str, Any]], None]] = None,
                  dest_fd: Optional[int] = None) -> Dict[str, int]:
    """Write an image to a file (sparse: zero blocks become holes) or onto a block device (zero blocks are
    written as zeros, since the device's old contents must not show through). With byte_range (start, end),
    only those bytes are written, at their own offsets. workers: threads (0: one per core).

    Blocks are restored by the C++ engine (core.restore_blobs: read, open and write on every core, GIL
    released), from the pack files, or from the ranges of packs that are not local files (object stores)
    fetched first, each batch's packs in parallel (engine.BlobWriter(fetch=True))."""
    progress = progress or (lambda kind, info: None)
    m = ImageMap(vault, desc)
    start, end = byte_range if byte_range else (0, m.size)
    if not 0 <= start <= end <= m.size:
        raise UsageError(f"range {start}:{end} " + ("ends before it starts" if end < start else
                                                     f"is outside the image (size {m.size})"))
    if dest_fd is not None:  # a new, empty file the caller opened (a file restore, opened beneath its target)
        return _restore_image_fd(m, dest_fd, dest, start, end, byte_range is not None, workers,
                                 f"/proc/self/fd/{dest_fd}" if verify else None, progress)
    exists = os.path.exists(dest)
    is_dev = exists and st_mod.S_ISBLK(os.stat(dest).st_mode)
    # A block device is opened exclusively (O_EXCL): Linux then refuses it while it is mounted or held by
    # another exclusive user (LVM, RAID, another restore), as mkfs does; writing under a mounted file
    # system would corrupt both.
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_EXCL if is_dev else os.O_CREAT)
    if not is_dev and byte_range is None:
        flags |= os.O_TRUNC
    try:
        fd = os.open(dest, flags, 0o600)
    except OSError as e:
        if is_dev and e.errno == errno.EBUSY:
            raise UsageError(f"device {dest} is in use (mounted, or held by another program): "
                             "unmount or release it first") from None
        raise UsageError(f"cannot open {dest} for writing: {e.strerror}") from None
    if is_dev and device_size(fd) < end:
        os.close(fd)
        raise UsageError(f"device {dest} is smaller than the image ({m.size} bytes)")
    # Skipping zeros (holes) is only right when the destination already reads as zeros: a file we just
    # truncated. A device or a range written into an existing file must get every byte, zeros included.
    try:
        return _restore_image_fd(m, fd, dest, start, end, is_dev or byte_range is not None, workers,
                                 dest if verify else None, progress, is_dev=is_dev)
    finally:
        os.close(fd)


def _restore_image_fd(m: ImageMap, fd: int, dest: str, start: int, end: int, overwrite: bool, workers: int,
                      read_back: Optional[str], progress: Callable[[str, Dict[str, Any]], None],
                      is_dev: bool = False) -> Dict[str, int]:
    """restore_image into the open `fd` (`dest` names it in messages). overwrite: every byte is written,
    zeros included (a device, or a range of an existing file); else `fd` is empty and zeros stay holes.
    read_back: the path to verify the result by (None: no verify)."""
    stats = {"bytes_written": 0, "blocks": 0, "zero_blocks": 0}
    progress("plan", {"files": 1, "bytes": 0})  # the bytes to write are known only block by block
    bs = m.block_size
    first, last = start // bs, -(-end // bs)
    try:
        for b in range(first, last, ENGINE_BATCH):
            batch = range(b, min(b + ENGINE_BATCH, last))
            plan = _plan(m, batch, start, end, overwrite)
            progress("more", {"files": 0, "bytes": sum(item[7] for item in plan.writer.items)})
            _run_engine(plan, fd, dest, overwrite, workers, stats, progress)
        if not overwrite:
            fsmeta.finish_sparse(fd, m.size)
        if is_dev:
            os.fsync(fd)  # a device restore is done when it is on the device (files: like any write)
        progress("file", {"path": dest, "bytes": 0})
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TargetFull(f"no space left on the restore target (writing {dest})") from e
        raise
    if read_back is not None:
        verify_image(m, read_back, start, end, workers, label=dest)
    return stats


def _describe_block(block: int) -> str:
    return f"image block {block}"


class _Batch:
    """One batch of blocks as engine items (tagged with their block), and its block counts."""

    def __init__(self, m: ImageMap) -> None:
        self.writer = BlobWriter(m.vault, _describe_block, fetch=True)  # packs not local: their ranges fetched
        self.data_blocks = 0
        self.zero_blocks = 0


def _plan(m: ImageMap, blocks: range, start: int, end: int, overwrite: bool) -> _Batch:
    """The engine items for `blocks` clipped to [start, end). Zero
    blocks become zero items (merged when adjacent) only when overwriting: a fresh file keeps them as
    holes. (Runs per block: kept lean, ~2.5 us a block.)"""
    batch = _Batch(m)
    add, add_zeros, locations = batch.writer.add, batch.writer.add_zeros, m.vault.locations
    bs, size = m.block_size, m.size
    for p in range(blocks.start // PAGE_BLOCKS, -(-blocks.stop // PAGE_BLOCKS)):
        page = m.page(p)
        base = p * PAGE_BLOCKS
        for block in range(max(blocks.start, base), min(blocks.stop, base + PAGE_BLOCKS)):
            j = (block - base) * 32
            bid = page[j:j + 32]
            lo = block * bs
            blen = min(bs, size - lo)
            a, b = max(lo, start), min(lo + blen, end)
            if bid == ZERO_ID:
                batch.zero_blocks += 1
                if overwrite:
                    add_zeros(a, b - a, block)
                continue
            loc = locations.get(bid) or m.vault.locate(bid)  # locate raises, naming the missing blob
            if loc.raw_length != blen:
                raise CorruptData(f"image block {block} has the wrong length")
            add(bid, a, a - lo, b - a, block, loc)
            batch.data_blocks += 1
    return batch


def _run_engine(batch: _Batch, fd: int, dest: str, overwrite: bool, workers: int, stats: Dict[str, int],
                progress: Callable[[str, Dict[str, Any]], None]) -> None:
    res = batch.writer.run(fd, dest, sparse=not overwrite, workers=workers,
                           progress=lambda n: progress("bytes", {"bytes": n}))
    stats["blocks"] += batch.data_blocks
    stats["zero_blocks"] += batch.zero_blocks
    stats["bytes_written"] += res["data_bytes"]


def verify_image(m: ImageMap, dest: str, start: int, end: int, workers: int = 0,
                 label: Optional[str] = None) -> None:
    """Re-read [start, end) of dest and compare it with the recovery point. Whole blocks are hashed again by
    the pipeline as a backup would (on every core; nothing is stored) and their IDs compared with the block
    map; the partial blocks at the edges of a range are compared byte for byte. label: dest in messages."""
    bs = m.block_size
    first, last = start // bs, -(-end // bs)
    whole_lo = first if start == first * bs else first + 1
    whole_hi = last if end == min(last * bs, m.size) else last - 1

    def differs(a: int, b: int) -> CorruptData:
        return CorruptData(f"verify: {label or dest} differs from the recovery point at bytes {a}..{b}")

    with open(dest, "rb", buffering=0) as f:
        for block in sorted({first, last - 1}):  # partial blocks at the edges: byte for byte
            if not first <= block < last or whole_lo <= block < whole_hi:
                continue
            lo = block * bs
            a, b = max(lo, start), min(lo + m.block_len(block), end)
            f.seek(a)
            data = m.read_block(block)
            if f.read(b - a) != (bytes(b - a) if data is None else data[a - lo:b - lo]):
                raise differs(a, b)
        if whole_hi <= whole_lo:
            return
        # Every ID of the map is "known", so the pipeline only hashes; a block that differs gets an ID the
        # map does not have at that place.
        scratch = core.IdSet()
        for p in range(whole_lo // PAGE_BLOCKS, -(-whole_hi // PAGE_BLOCKS)):
            scratch.update(m.page(p))
        pipe = m.vault.pipeline(workers=workers, fixed_block=bs, compress="never", known=scratch,
                                hashing_only=True)
        lo, hi = whole_lo * bs, min(whole_hi * bs, m.size)
        if device_size(f.fileno()) < hi:
            raise differs(device_size(f.fileno()), hi)  # the destination is shorter than the image
        # Only the destination's data extents are read: its holes read as zeros, so the map must have a
        # zero block wherever no extent is.
        ranges = [(max(a, lo), min(a + n, hi) - max(a, lo)) for a, n in data_ranges(f.fileno(), hi, bs)
                  if a + n > lo]
        seen = bytearray(whole_hi - whole_lo)
        for batch in pipe.run([(f.fileno(), a, n) for a, n in ranges]):
            for ev in batch:  # core.PipelineEvent
                start, n = ranges[ev.source][0], ev.length
                if ev.kind == core.END:
                    if ev.payload is not None:
                        raise CorruptData(f"verify: cannot read back {label or dest}: {ev.payload}")
                    if n != ranges[ev.source][1]:
                        raise differs(start + n, start + ranges[ev.source][1])  # shrank
                    continue
                at = start + ev.offset
                block = at // bs
                if (ev.id if ev.kind == core.CHUNK else None) != m.block_id(block) or n != m.block_len(block):
                    raise differs(at, at + n)
                seen[block - whole_lo] = 1
        for i in range(len(seen)):
            if not seen[i] and m.block_id(whole_lo + i) is not None:
                a = (whole_lo + i) * bs
                raise differs(a, a + m.block_len(whole_lo + i))  # a hole where the image has data
