"""Instant access: a recovery point as a read-only FUSE file system (pyfuse3).

Files read their chunks on demand; disk images read their blocks through the block map, so a user can
loop-mount the file system inside a backed-up disk image and copy single files out without restoring the
whole disk. Decrypted blobs are kept in a small LRU cache.

A failure while serving (a damaged or missing blob) fails that one call with EIO and is reported through
``on_event("error", {"message": ...})``; the mount goes on. The library never prints: the CLI shows the
events as warnings.
"""
from __future__ import annotations

import bisect
import errno
import os
import stat as st_mod
import threading
from collections import OrderedDict
from typing import Dict, List, Optional

from .errors import UsageError
from .fsmeta import decode_name
from .jobs.image import ImageMap
from .vault.blobstore import EventSink, no_events
from .vault.records import Node, RecoveryPoint
from .vault.repo import Vault

try:  # optional dependency: pip install recovault[fuse]
    import pyfuse3
    import trio
except ImportError:  # pragma: no cover - exercised only where pyfuse3 is missing
    pyfuse3 = None
    trio = None

_TYPE_BITS = {"f": st_mod.S_IFREG, "d": st_mod.S_IFDIR, "l": st_mod.S_IFLNK, "c": st_mod.S_IFCHR,
              "b": st_mod.S_IFBLK, "p": st_mod.S_IFIFO, "s": st_mod.S_IFSOCK}


class _BlobCache:
    """Decrypted blobs, least recently used first out, bounded in bytes (blobs range from 4 KiB image blocks
    to 2 MiB chunks, so a count would bound nothing); the newest blob always stays."""

    def __init__(self, vault: Vault, max_bytes: int = 64 << 20) -> None:
        self.vault = vault
        self.max_bytes = max_bytes
        self.bytes = 0
        self.data: "OrderedDict[bytes, bytes]" = OrderedDict()
        self.lock = threading.Lock()  # reads run on several threads (trio.to_thread)

    def get(self, blob_id: bytes) -> bytes:
        with self.lock:
            hit = self.data.get(blob_id)
            if hit is not None:
                self.data.move_to_end(blob_id)
                return hit
        blob = self.vault.read_blob(blob_id)  # outside the lock: reads of different blobs run in parallel
        with self.lock:
            old = self.data.pop(blob_id, None)  # another thread may have read it meanwhile
            self.bytes += len(blob) - (len(old) if old is not None else 0)
            self.data[blob_id] = blob
            while self.bytes > self.max_bytes and len(self.data) > 1:
                self.bytes -= len(self.data.popitem(last=False)[1])
        return blob


class _Inode:
    __slots__ = ("node", "children", "offsets", "image")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.children: Optional[Dict[bytes, int]] = None
        self.offsets: Optional[List[int]] = None
        self.image: Optional[ImageMap] = None


def _base():
    if pyfuse3 is None:
        raise UsageError("mount needs pyfuse3 (pip install 'recovault[fuse]') and FUSE 3 (apt-get install fuse3)")
    return pyfuse3.Operations


class RecoveryPointFS(_base() if pyfuse3 is not None else object):  # type: ignore[misc]
    def __init__(self, vault: Vault, point: RecoveryPoint, on_event: EventSink = no_events) -> None:
        super().__init__()
        self.vault = vault
        self.on_event = on_event
        self.cache = _BlobCache(vault)
        root = Node.directory(b"", None, point.tree)
        self.inodes: Dict[int, _Inode] = {pyfuse3.ROOT_INODE: _Inode(root)}
        self.next_inode = pyfuse3.ROOT_INODE + 1

    # ---- helpers ------------------------------------------------------------------------------
    def _failed(self, what: str, e: Exception) -> "pyfuse3.FUSEError":
        """Report a failure of one call (the mount goes on) and return the EIO it answers with."""
        self.on_event("error", {"message": f"mount: {what}: {e}"})
        return pyfuse3.FUSEError(errno.EIO)

    def _children(self, ino: int) -> Dict[bytes, int]:
        entry = self.inodes[ino]
        if entry.children is None:
            # loaded before anything is recorded: a tree that fails to load fails every call, and never
            # leaves the directory looking empty
            nodes = self.vault.load_nodes(bytes.fromhex(entry.node.subtree)) if entry.node.subtree else []
            children = {}
            for n in nodes:
                children[n.name] = self.next_inode
                self.inodes[self.next_inode] = _Inode(n)
                self.next_inode += 1
            entry.children = children
        return entry.children

    def _attr(self, ino: int) -> "pyfuse3.EntryAttributes":
        node = self.inodes[ino].node
        m = node.meta
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        t = "f" if node.image is not None else node.type
        a.st_mode = _TYPE_BITS.get(t, st_mod.S_IFREG) | (m.get("m", 0) & 0o7777)
        a.st_nlink = 1
        a.st_uid = m.get("u", 0)
        a.st_gid = m.get("g", 0)
        a.st_size = node.size if node.size is not None else len(decode_name(m["lt"])) if "lt" in m else 0
        a.st_blksize = 4096
        a.st_blocks = (a.st_size + 511) // 512
        a.st_mtime_ns = m.get("mt", 0)
        a.st_atime_ns = m.get("at", m.get("mt", 0))
        a.st_ctime_ns = m.get("ct", m.get("mt", 0))
        if "rd" in m:
            a.st_rdev = os.makedev(*m["rd"])
        a.entry_timeout = 300
        a.attr_timeout = 300
        return a

    def _read(self, ino: int, off: int, size: int) -> bytes:
        entry = self.inodes[ino]
        node = entry.node
        if node.image is not None:
            if entry.image is None:
                entry.image = ImageMap(self.vault, node.image, self.cache.get)
            return entry.image.read(off, size)
        content = [bytes.fromhex(c) for c in node.content or ()]
        if entry.offsets is None:
            offs, pos = [], 0
            for cid in content:
                offs.append(pos)
                pos += self.vault.locate(cid).raw_length
            entry.offsets = offs
        end = min(off + size, node.size or 0)
        out = bytearray()
        i = bisect.bisect_right(entry.offsets, off) - 1
        while off < end and 0 <= i < len(content):
            data = self.cache.get(content[i])
            within = off - entry.offsets[i]
            piece = data[within:within + (end - off)]
            if not piece:
                break
            out += piece
            off += len(piece)
            i += 1
        return bytes(out)

    # ---- FUSE operations ----------------------------------------------------------------------
    async def getattr(self, inode, ctx=None):
        if inode not in self.inodes:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(inode)

    async def lookup(self, parent_inode, name, ctx=None):
        try:
            ino = self._children(parent_inode).get(bytes(name))
        except Exception as e:  # noqa: BLE001
            raise self._failed(f"lookup in inode {parent_inode}", e) from None
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(ino)

    async def opendir(self, inode, ctx):
        if self.inodes[inode].node.meta.get("t") != "d":
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh, start_id, token):
        try:
            items = sorted(self._children(fh).items())
        except Exception as e:  # noqa: BLE001
            raise self._failed(f"listing inode {fh}", e) from None
        for i, (name, ino) in enumerate(items[start_id:], start_id):
            if not pyfuse3.readdir_reply(token, name, self._attr(ino), i + 1):
                break

    async def readlink(self, inode, ctx):
        m = self.inodes[inode].node.meta
        if "lt" not in m:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return decode_name(m["lt"])

    async def open(self, inode, flags, ctx):
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise pyfuse3.FUSEError(errno.EROFS)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh, off, size):
        try:
            return await trio.to_thread.run_sync(self._read, fh, off, size)
        except Exception as e:  # noqa: BLE001 - any failure is an I/O error for this read, never the end of the mount
            raise self._failed(f"read of inode {fh} at {off}", e) from None

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s


def mount(vault: Vault, point: RecoveryPoint, mountpoint: str, *, allow_other: bool = False,
          on_event: EventSink = no_events) -> None:
    """Serve the recovery point at mountpoint until it is unmounted (fusermount3 -u) or interrupted.
    `on_event(kind, info)` hears each call that failed (kind "error", info["message"])."""
    if pyfuse3 is None:
        _base()
    if not os.path.isdir(mountpoint):
        raise UsageError(f"mount point {mountpoint} is not a directory")
    if not os.path.exists("/dev/fuse"):
        raise UsageError("FUSE is not available on this machine (/dev/fuse is missing)")
    fs = RecoveryPointFS(vault, point, on_event)
    options = set(pyfuse3.default_options)
    options.add("fsname=recovault")
    options.add("ro")
    if allow_other:
        options.add("allow_other")
    try:
        pyfuse3.init(fs, mountpoint, options)
    except RuntimeError as e:
        raise UsageError(f"cannot mount at {mountpoint}: {e}") from None
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)
