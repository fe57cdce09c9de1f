"""Instant access: a recovery point, or every recovery point of a vault, as a read-only FUSE file system
(pyfuse3).

`mount(vault, point, ...)` serves one point's tree at the mount point; `mount(vault, None, ...)` serves the
browsable layout of mount_layout.py (ids/, snapshots/, hosts/HOST/, tags/TAG/, `latest` links): a point's
directory is the root of its tree, read only when something inside is listed or looked up (listing the
points reads no tree). Files read their chunks on demand; disk images read their blocks through the block
map, so a user can loop-mount the file system inside a backed-up disk image and copy single files out
without restoring the whole disk. Decrypted blobs are kept in a small LRU cache. From a vault whose objects
are not local files (an object store), each blob is one ranged request, the blobs one read spans are
fetched together, and a file or image read in sequence has its next blobs read ahead,
`vault.blobs.connections` at once on as many threads (a FUSE read asks for 128 KiB; each blob is a round
trip): a point is copied out at the store's throughput, not its latency.

A failure while serving (a damaged or missing blob) fails that one call with EIO and is reported through
``on_event("error", {"message": ...})``; the mount goes on. The library never prints: the CLI shows the
events as warnings.
"""
from __future__ import annotations

import bisect
import errno
import os
import signal
import stat as st_mod
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import MountBusy, UsageError
from .fsmeta import decode_name, encode_name
from .jobs.image import ImageMap
from .mount_layout import MetaDir, PointEntry, build_layout, id_names
from .storage.base import has_local_files
from .timefmt import parse_time
from .vault.blobstore import EventSink, no_events
from .vault.records import DEFAULT_DIR_META, Node, RecoveryPoint
from .vault.repo import Vault

#: Where pyfuse3 comes from: said before anything else when `mount` runs without it.
FUSE_HINT = "pip install 'recovault[fuse]' (pyfuse3; FUSE 3 itself: apt-get install fuse3)"

if TYPE_CHECKING:
    from .mount_layout import Entry

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
    to 2 MiB chunks, so a count would bound nothing); the newest blob always stays. With `workers` > 0,
    `prefetch` reads blobs ahead on that many threads; a `get` of a blob under way waits for that read
    rather than asking the store a second time."""

    def __init__(self, vault: Vault, max_bytes: int = 64 << 20, workers: int = 0) -> None:
        self.vault = vault
        self.max_bytes = max_bytes
        self.bytes = 0
        self.data: "OrderedDict[bytes, bytes]" = OrderedDict()
        self.lock = threading.Lock()  # reads run on several threads (trio.to_thread)
        self.workers = workers
        self.pending: Dict[bytes, "Future[bytes]"] = {}
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="recovault-readahead") if workers > 0 else None

    def get(self, blob_id: bytes) -> bytes:
        with self.lock:
            hit = self.data.get(blob_id)
            if hit is not None:
                self.data.move_to_end(blob_id)
                return hit
            under_way = self.pending.get(blob_id)
        if under_way is not None:
            return under_way.result()  # the read-ahead's bytes, or its error
        blob = self.vault.read_blob(blob_id)  # outside the lock: reads of different blobs run in parallel
        self._keep(blob_id, blob)
        return blob

    def _keep(self, blob_id: bytes, blob: bytes) -> None:
        with self.lock:
            old = self.data.pop(blob_id, None)  # another thread may have read it meanwhile
            self.bytes += len(blob) - (len(old) if old is not None else 0)
            self.data[blob_id] = blob
            while self.bytes > self.max_bytes and len(self.data) > 1:
                self.bytes -= len(self.data.popitem(last=False)[1])

    def prefetch(self, blob_ids: Iterable[bytes]) -> None:
        """Start reading those of `blob_ids` neither cached nor under way, in order, while fewer than
        2 x workers reads are under way (no-op without workers)."""
        if self.pool is None:
            return
        with self.lock:
            for blob_id in blob_ids:
                if len(self.pending) >= 2 * self.workers:
                    break
                if blob_id not in self.data and blob_id not in self.pending:
                    self.pending[blob_id] = self.pool.submit(self._fetch, blob_id)

    def _fetch(self, blob_id: bytes) -> bytes:
        try:
            blob = self.vault.read_blob(blob_id)
            self._keep(blob_id, blob)  # cached before it stops being pending: a get sees one or the other
            return blob
        finally:
            with self.lock:
                self.pending.pop(blob_id, None)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def read_ahead_threads(vault: Vault) -> int:
    """Threads that read a file's next chunks ahead: the vault's connections for an object store, none for
    a local directory (the kernel's page cache and the disk read ahead there)."""
    return 0 if has_local_files(vault.storage) else vault.blobs.connections


class _Inode:
    __slots__ = ("node", "layout", "volatile", "children", "listing", "chunks", "offsets", "image", "next_off")

    def __init__(self, node: Node, layout: Optional[MetaDir] = None, volatile: bool = False) -> None:
        self.node = node
        self.layout = layout  # a directory of the browsable layout: its entries are its children
        self.volatile = volatile  # made by the layout, which a refresh may change: the kernel keeps it 1 s
        self.children: Optional[Dict[bytes, int]] = None
        self.listing: Optional[List[Tuple[bytes, int]]] = None  # children by name, for readdir
        self.chunks: Optional[List[bytes]] = None
        self.offsets: Optional[List[int]] = None
        self.image: Optional[ImageMap] = None
        self.next_off = 0  # where the last read ended: a read that starts there is sequential


def _ns(time: str) -> int:
    """A stored time as nanoseconds since the epoch (0 if it does not parse)."""
    try:
        dt = parse_time(time)
    except (ValueError, TypeError):
        return 0
    return int(dt.replace(microsecond=0).timestamp()) * 10**9 + dt.microsecond * 1000


def _layout_node(name: str, entry: "Entry") -> Node:
    """The node the FUSE view shows for an entry of the layout: its own directories read-only (0555), a
    point's directory as the root of its tree, `latest` as a relative symlink; owned by who mounted."""
    owner = {"u": os.getuid(), "g": os.getgid()}
    raw = os.fsencode(name)
    if isinstance(entry, MetaDir):
        return Node(raw, {"t": "d", "m": 0o555, "mt": _ns(entry.time), **owner})
    if isinstance(entry, PointEntry):
        return Node.directory(raw, {**DEFAULT_DIR_META, "mt": _ns(entry.point.time), **owner}, entry.point.tree)
    return Node(raw, {"t": "l", "m": 0o777, "lt": encode_name(entry.target), "mt": _ns(entry.point.time), **owner})


def _base():
    if pyfuse3 is None:
        raise UsageError(f"mount needs pyfuse3, which is not installed: {FUSE_HINT}")
    return pyfuse3.Operations


#: How often at most a browsable mount asks the vault whether its points changed (restic's mount: 60 s).
REFRESH_SECONDS = 60.0


class RecoveryPointFS(_base() if pyfuse3 is not None else object):  # type: ignore[misc]
    """The FUSE operations: one point's tree at the root (`point`), or the browsable layout of `points`
    (mount_layout.build_layout). `read_ahead`: threads reading a file's next chunks ahead. `list_points`
    (browsable only): asked again, at most every `refresh_seconds`, when a directory of the layout is
    looked up or opened; when the points changed (a backup, a forget), the layout is rebuilt from them."""

    def __init__(self, vault: Vault, point: Optional[RecoveryPoint], on_event: EventSink = no_events, *,
                 points: Optional[Sequence[RecoveryPoint]] = None, read_ahead: int = 0,
                 list_points: Optional[Callable[[], Sequence[RecoveryPoint]]] = None,
                 refresh_seconds: float = REFRESH_SECONDS) -> None:
        super().__init__()
        self.vault = vault
        self.on_event = on_event
        self.cache = _BlobCache(vault, workers=read_ahead)
        self.list_points = list_points
        self.refresh_seconds = refresh_seconds
        self.refresh_at = time.monotonic() + refresh_seconds
        self.layout_paths: Dict[int, str] = {}  # inode -> path of each directory of the layout made so far
        self.layout_inodes: Dict[str, int] = {}  # and back
        if points is not None:
            layout = build_layout(points)
            self.served = frozenset(p.id for p in points)
            root = _Inode(_layout_node("", layout), layout, volatile=True)
            self.layout_paths[pyfuse3.ROOT_INODE] = ""
            self.layout_inodes[""] = pyfuse3.ROOT_INODE
        elif point is not None:
            root = _Inode(Node.directory(b"", None, point.tree))
        else:
            raise ValueError("a point or points to serve")
        self.inodes: Dict[int, _Inode] = {pyfuse3.ROOT_INODE: root}
        self.next_inode = pyfuse3.ROOT_INODE + 1

    def close(self) -> None:
        self.cache.close()

    # ---- helpers ------------------------------------------------------------------------------
    def _failed(self, what: str, e: Exception) -> "pyfuse3.FUSEError":
        """Report a failure of one call (the mount goes on) and return the EIO it answers with."""
        self.on_event("error", {"message": f"mount: {what}: {e}"})
        return pyfuse3.FUSEError(errno.EIO)

    def _refresh(self, ino: int) -> None:
        """Rebuild the layout if the vault's points changed (asked at most every refresh_seconds, when a
        directory of the layout is used). Every directory of the layout keeps its inode; what is under it
        gets new ones (the kernel keeps those 1 s). A failure to list is reported; the old layout stays."""
        if self.list_points is None or ino not in self.layout_paths or time.monotonic() < self.refresh_at:
            return
        self.refresh_at = time.monotonic() + self.refresh_seconds
        try:
            points = self.list_points()
            if frozenset(p.id for p in points) == self.served:
                return
            self.vault.load_index()  # the blobs of the new points
        except Exception as e:  # noqa: BLE001 - the mount goes on with the points it has
            self._failed("listing the recovery points again", e)
            return
        self.served = frozenset(p.id for p in points)
        root = build_layout(points)
        for dir_ino, path in self.layout_paths.items():
            entry = self.inodes[dir_ino]
            found = root.walk(path)
            entry.layout = found if isinstance(found, MetaDir) else MetaDir()  # gone: shown empty
            entry.node = _layout_node(os.fsdecode(entry.node.name), entry.layout)
            entry.children = entry.listing = None

    def _children(self, ino: int) -> Dict[bytes, int]:
        entry = self.inodes[ino]
        if entry.children is None:
            # loaded before anything is recorded: a tree that fails to load fails every call, and never
            # leaves the directory looking empty
            if entry.layout is not None:  # the layout's own directories: no tree is read
                made = [(_layout_node(name, e), e if isinstance(e, MetaDir) else None, True)
                        for name, e in entry.layout.entries.items()]
            else:
                nodes = self.vault.load_nodes(bytes.fromhex(entry.node.subtree)) if entry.node.subtree else []
                made = [(n, None, False) for n in nodes]
            base = self.layout_paths.get(ino)
            children = {}
            for node, layout, volatile in made:
                path = f"{base}/{os.fsdecode(node.name)}".lstrip("/") if layout is not None else None
                children[node.name] = self._layout_dir(path, node, layout) if path is not None else self._new(
                    _Inode(node, layout, volatile))
            entry.children = children
        return entry.children

    def _new(self, entry: _Inode) -> int:
        ino = self.next_inode
        self.inodes[ino] = entry
        self.next_inode += 1
        return ino

    def _layout_dir(self, path: str, node: Node, layout: MetaDir) -> int:
        """The inode of the layout's directory at `path`: the same one for as long as the mount lives."""
        ino = self.layout_inodes.get(path)
        if ino is None:
            ino = self.layout_inodes[path] = self._new(_Inode(node, layout, volatile=True))
            self.layout_paths[ino] = path
        return ino

    def _listing(self, ino: int) -> List[Tuple[bytes, int]]:
        entry = self.inodes[ino]
        if entry.listing is None:
            entry.listing = sorted(self._children(ino).items())
        return entry.listing

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
        a.entry_timeout = a.attr_timeout = 1 if self.inodes[ino].volatile else 300
        return a

    def _read_ahead(self, entry: _Inode, off: int, end: int, first: int, last: int, count: int,
                    blob_of: Callable[[int], Optional[bytes]]) -> None:
        """For a read of [off, end) spanning blobs first..last (of `count`; `blob_of(i)` the ID of blob i, None
        for none: a hole), start reading the others than `first` (read by the caller meanwhile), and the
        `workers` after `last` too if the read continues the previous one: a reader in sequence finds
        them read. Nothing without read-ahead threads."""
        if self.cache.pool is None or first < 0 or off >= end:
            return
        stop = min(last + 1 + (self.cache.workers if off == entry.next_off else 0), count)
        ids = [blob_of(i) for i in range(first + 1, stop)]  # before prefetch takes its lock (a map page read)
        self.cache.prefetch([b for b in ids if b is not None])

    def _read(self, ino: int, off: int, size: int) -> bytes:
        entry = self.inodes[ino]
        node = entry.node
        if node.image is not None:
            if entry.image is None:
                entry.image = ImageMap(self.vault, node.image, self.cache.get)
            m = entry.image
            end = min(off + size, m.size)
            self._read_ahead(entry, off, end, off // m.block_size, (end - 1) // m.block_size, m.nblocks, m.block_id)
            entry.next_off = end
            return m.read(off, size)
        if entry.chunks is None:
            entry.chunks = [bytes.fromhex(c) for c in node.content or ()]
        content = entry.chunks
        if entry.offsets is None:
            offs, pos = [], 0
            for cid in content:
                offs.append(pos)
                pos += self.vault.locate(cid).raw_length
            entry.offsets = offs
        end = min(off + size, node.size or 0)
        i = bisect.bisect_right(entry.offsets, off) - 1
        self._read_ahead(entry, off, end, i, bisect.bisect_right(entry.offsets, end - 1) - 1, len(content),
                         content.__getitem__)
        entry.next_off = end
        out = bytearray()
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
        self._refresh(parent_inode)
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
        self._refresh(inode)
        return inode

    async def readdir(self, fh, start_id, token):
        try:
            items = self._listing(fh)
        except Exception as e:  # noqa: BLE001
            raise self._failed(f"listing inode {fh}", e) from None
        for i in range(start_id, len(items)):
            name, ino = items[i]
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


@dataclass(frozen=True)
class MountedPoint:
    """One point a mount serves, and its directory under the mount point ("" for a one-point mount)."""

    id: str
    time: str
    host: str
    tags: List[str]
    dir: str


@dataclass(frozen=True)
class MountInfo:
    """A live mount, reported once the kernel has it (`mount --json`): where, by which process, and what:
    `snapshot` the one point at its root, or None for the browsable layout of `points`."""

    mountpoint: str
    pid: int
    snapshot: Optional[str]
    points: List[MountedPoint] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {"mountpoint": self.mountpoint, "pid": self.pid, "snapshot": self.snapshot,
                "layout": "point" if self.snapshot else "browse", "points": [vars(p) for p in self.points]}


def require_fuse() -> None:
    """UsageError unless this process can serve a FUSE mount: pyfuse3 importable (the message says how to
    get it) and /dev/fuse present. Asked before anything else (the CLI: before the vault is opened)."""
    if pyfuse3 is None:
        _base()
    if not os.path.exists("/dev/fuse"):
        raise UsageError("FUSE is not available on this machine (/dev/fuse is missing)")


def check_mountpoint(mountpoint: str) -> str:
    """The mount point as an absolute path, if a mount can go there: UsageError if it is no directory;
    MountBusy if something is mounted there already, or a FUSE mount whose server died is still there."""
    where = os.path.abspath(mountpoint)
    dead = MountBusy(f"mount point {mountpoint} is in use: a FUSE mount whose server is gone is still there; "
                     f"unmount it first (fusermount3 -u {where})")
    try:
        st = os.stat(where)
    except FileNotFoundError:
        raise UsageError(f"mount point {mountpoint} does not exist") from None
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            raise dead from None
        raise UsageError(f"mount point {mountpoint}: {e.strerror}") from None
    if not st_mod.S_ISDIR(st.st_mode):
        raise UsageError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(where):
        try:  # the stat may have come from the kernel's attribute cache: opening asks the server itself
            os.scandir(where).close()
        except OSError as e:
            if e.errno == errno.ENOTCONN:
                raise dead from None
        raise MountBusy(f"mount point {mountpoint} is in use: something is mounted there already "
                        f"(unmount it first: fusermount3 -u {where}, or umount)")
    return where


def mount_info(mountpoint: str, point: Optional[RecoveryPoint], points: Sequence[RecoveryPoint]) -> MountInfo:
    """What a mount of `point` (or the browsable layout of `points`) at `mountpoint` serves."""
    if point is not None:
        return MountInfo(mountpoint, os.getpid(), point.id, [MountedPoint(point.id, point.time, point.host,
                                                                          list(point.tags), "")])
    names = id_names(points)
    ordered = sorted(points, key=lambda p: (p.time, p.id))
    return MountInfo(mountpoint, os.getpid(), None,
                     [MountedPoint(p.id, p.time, p.host, list(p.tags), f"ids/{names[p.id]}") for p in ordered])


def mount(vault: Vault, point: Optional[RecoveryPoint], mountpoint: str, *,
          points: Sequence[RecoveryPoint] = (), allow_other: bool = False, on_event: EventSink = no_events,
          on_ready: Optional[Callable[[MountInfo], None]] = None,
          list_points: Optional[Callable[[], Sequence[RecoveryPoint]]] = None) -> None:
    """Serve the recovery point at mountpoint (None: the browsable layout of `points`, rebuilt from
    `list_points()` when the vault's points change: RecoveryPointFS) until it is unmounted (fusermount3 -u)
    or the process gets SIGTERM or SIGINT (kill PID, Ctrl-C: a normal end, the mount is undone).
    `on_event(kind, info)` hears each call that failed (kind "error", info["message"]); `on_ready(info)` is
    called once the mount is live. UsageError without FUSE or for a mount point that is no directory;
    MountBusy for one in use."""
    require_fuse()
    where = check_mountpoint(mountpoint)
    threads = read_ahead_threads(vault)
    if point is not None:
        fs = RecoveryPointFS(vault, point, on_event, read_ahead=threads)
    else:
        fs = RecoveryPointFS(vault, None, on_event, points=points, read_ahead=threads, list_points=list_points)
    options = set(pyfuse3.default_options)
    options.add("fsname=recovault")
    options.add("ro")
    if allow_other:
        options.add("allow_other")
    try:
        pyfuse3.init(fs, where, options)
    except RuntimeError as e:
        fs.close()
        raise UsageError(f"cannot mount at {mountpoint}: {e}") from None
    try:
        if on_ready is not None:
            on_ready(mount_info(where, point, points))
        trio.run(_serve)
    finally:
        pyfuse3.close(unmount=True)
        fs.close()


async def _serve() -> None:
    """pyfuse3's loop until the file system is unmounted, or until SIGTERM or SIGINT (kill PID, Ctrl-C): a
    signal ends the loop as the operator's way to unmount (the caller then unmounts), not as an error."""
    async with trio.open_nursery() as nursery:
        async def until_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(until_signal)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()  # unmounted: stop waiting for a signal
