"""The backup job: walk the sources, decide what changed since the base recovery point, stream changed
files through the C++ pipeline into packs, build one tree per directory, and record a recovery point.

Modes (Azure Backup's vocabulary):
- incremental (default): compare with the last recovery point of the same host and paths;
- differential: compare with the last *full* recovery point of the same host and paths;
- full: trust no metadata; read and hash every file (storage still deduplicates).
Every recovery point holds a complete tree, so each restores on its own.
"""
from __future__ import annotations

import getpass
import os
import socket
import stat as st_mod
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import __version__, core
from .. import fsmeta
from ..errors import UsageError
from ..hardlinks import HardLinks
from ..vault import format as fmt
from ..vault.repo import Vault, now_rfc3339
from ..vault.tree import make_tree, node_map
from . import MODES
from .walk import ExcludeRules, walk



@dataclass
class BackupOptions:
    paths: List[str]
    mode: str = "incremental"
    excludes: List[str] = field(default_factory=list)
    exclude_files: List[str] = field(default_factory=list)
    exclude_caches: bool = False
    one_file_system: bool = False
    tags: List[str] = field(default_factory=list)
    host: Optional[str] = None
    workers: int = 0
    images: List[str] = field(default_factory=list)  # disk images / block devices, backed up by block map
    image_block_size: int = 0  # 0 = the previous recovery point's, else jobs.image.default_block_size
    stdin_name: Optional[str] = None  # back up standard input as a file of this name
    stdin_fd: int = 0


@dataclass
class BackupStats:
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    dirs: int = 0
    others: int = 0
    bytes_total: int = 0  # size of all files in the recovery point
    bytes_read: int = 0  # bytes read and chunked
    chunks_new: int = 0
    bytes_added: int = 0  # sealed data bytes added to the vault
    errors: int = 0
    duration: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


class _Dir:
    """A directory being assembled. It is stored (and its children freed) as soon as the walk has left it,
    none of its files is still being read, and all its subdirectories are stored: memory follows the
    depth of the tree, not the number of files."""

    __slots__ = ("meta", "children", "old", "parts", "up", "name", "pending", "open_children", "closed",
                 "hold")

    def __init__(self, meta: Optional[Dict[str, Any]], up: "Optional[_Dir]" = None, name: bytes = b"") -> None:
        self.meta = meta
        self.children: Dict[bytes, Any] = {}
        self.old: Optional[Dict[str, Any]] = None  # this directory's node in the base recovery point
        self.parts: Optional[Tuple[bytes, ...]] = None
        self.up = up
        self.name = name
        self.pending = 0  # files handed to the pipeline, not yet drained
        self.open_children = 0  # subdirectories not stored yet
        self.closed = False  # the walk has left it
        self.hold = False  # holds a hard link whose content is only known at the end of the walk
        if up is not None:
            up.open_children += 1


class _SavedDir:
    """A stored subdirectory: its tree node, and its node in the base (for tree-id reuse upstream)."""

    __slots__ = ("node", "old")

    def __init__(self, node: Dict[str, Any], old: Optional[Dict[str, Any]]) -> None:
        self.node = node
        self.old = old


class _File:
    __slots__ = ("node", "content", "needs_read", "path", "size", "link_key", "reused", "dir")

    def __init__(self, node: Dict[str, Any], path: str, size: int) -> None:
        self.node = node
        self.path = path
        self.size = size
        self.content: Optional[List[str]] = None
        self.needs_read = True
        self.link_key: Optional[Tuple[int, int]] = None
        self.reused = False  # node taken unchanged from the base recovery point
        self.dir: Optional[_Dir] = None  # set while the file is being read


class _Leaf:
    __slots__ = ("node",)

    def __init__(self, node: Dict[str, Any]) -> None:
        self.node = node


class _ParentTrees:
    """Looks up nodes of the base recovery point by path, loading its trees lazily."""

    def __init__(self, vault: Vault, root_tree: Optional[str]) -> None:
        self.vault = vault
        self.cache: Dict[Tuple[bytes, ...], Optional[Dict[bytes, Dict[str, Any]]]] = {}
        self.root = root_tree

    def dir_nodes(self, parts: Tuple[bytes, ...]) -> Optional[Dict[bytes, Dict[str, Any]]]:
        if parts in self.cache:
            return self.cache[parts]
        if not parts:
            result = node_map(self.vault.load_tree(bytes.fromhex(self.root))) if self.root else None
        else:
            up = self.dir_nodes(parts[:-1])
            node = up.get(parts[-1]) if up else None
            sub = node.get("subtree") if node else None
            result = node_map(self.vault.load_tree(bytes.fromhex(sub))) if sub else None
        self.cache[parts] = result
        return result

    def forget(self, parts: Tuple[bytes, ...]) -> None:
        """The walk is done with this directory: drop its loaded tree."""
        self.cache.pop(parts, None)


def _same_content(old: Dict[str, Any], st: os.stat_result) -> bool:
    """Same size, mtime, ctime and inode as in the base recovery point: the content is unchanged."""
    m = old.get("meta")
    return (m is not None and m.get("t") == "f" and "content" in old and m.get("sz", 0) == st.st_size
            and m.get("mt", 0) == st.st_mtime_ns and m.get("ct", 0) == st.st_ctime_ns
            and m.get("ino", 0) == st.st_ino)


def _unchanged(old: Dict[str, Any], st: os.stat_result) -> bool:
    """Content unchanged, and so is the metadata: any change of owner, mode or xattrs moves ctime too,
    so the whole node can be reused as it is."""
    return _same_content(old, st) and "at" not in old["meta"]


def find_base(vault: Vault, snaps: List[Dict[str, Any]], host: str, paths: List[str], mode: str):
    """The recovery point to compare against: latest of this host+paths (incremental) or latest full."""
    if mode == "full":
        return None
    same = [s for s in snaps if s.get("host") == host and sorted(s.get("paths", [])) == sorted(paths)]
    if mode == "differential":
        same = [s for s in same if s.get("mode") == "full"]
    return same[-1] if same else None


class BackupJob:
    def __init__(self, vault: Vault, opts: BackupOptions,
                 progress: Optional[Callable[[str, Dict[str, Any]], None]] = None) -> None:
        if opts.mode not in MODES:
            raise UsageError(f"unknown mode {opts.mode!r}: use incremental, differential or full")
        if not opts.paths and not opts.images and not opts.stdin_name:
            raise UsageError("nothing to back up: name at least one path, --image or --stdin")
        bs = opts.image_block_size
        if bs and not (4096 <= bs <= 64 << 20 and bs % 4096 == 0):
            raise UsageError(f"image block size {bs} is not a multiple of 4 KiB between 4 KiB and 64 MiB")
        self.vault = vault
        self.opts = opts
        self.progress = progress or (lambda kind, info: None)
        self.stats = BackupStats()
        self.errors: List[Dict[str, str]] = []
        self.host = opts.host or socket.gethostname()
        self._pipe: Optional["core.Pipeline"] = None

    def _error(self, path: str, err: Any) -> None:
        msg = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        self.errors.append({"path": path, "error": msg})
        self.stats.errors += 1
        self.progress("error", {"path": path, "error": msg})

    def run(self) -> Dict[str, Any]:
        t0 = time.monotonic()
        opts = self.opts
        paths = []
        for p in opts.paths:
            ap = os.path.abspath(p)
            if not os.path.lexists(ap):
                raise UsageError(f"cannot back up {p}: no such file or directory")
            paths.append(ap)
        paths = sorted(set(paths))
        images = []
        for p in opts.images:
            ap = os.path.abspath(p)
            if not os.path.exists(ap):
                raise UsageError(f"cannot back up image {p}: no such file or device")
            mode = os.stat(ap).st_mode
            if not (st_mod.S_ISREG(mode) or st_mod.S_ISBLK(mode)):
                raise UsageError(f"cannot back up image {p}: not a regular file or block device"
                                 + (" (a directory: name it without --image)" if st_mod.S_ISDIR(mode) else
                                    " (for a stream, use --stdin)"))
            if ap not in images:  # named twice: backed up once
                images.append(ap)
        stdin_path = None
        if opts.stdin_name:
            name = opts.stdin_name.strip("/")
            if not name or any(part in ("", ".", "..") for part in name.split("/")):
                raise UsageError(f"--stdin-name {opts.stdin_name!r} is not a valid file name")
            stdin_path = "/" + name
        # the recovery point's identity for choosing a base: files, images and the stream name
        paths = sorted(set(paths + images + ([stdin_path] if stdin_path else [])))
        tree_paths = [p for p in paths if p not in images and p != stdin_path]
        rules = ExcludeRules.from_options(opts.excludes, opts.exclude_files, opts.exclude_caches)
        # A damaged recovery point is reported and skipped: it must not prevent new backups.
        snaps = self.vault.snapshots(on_corrupt=lambda msg: self.progress("error", {"path": "", "error": msg}))
        base = find_base(self.vault, snaps, self.host, paths, opts.mode)
        mode = self._mode = opts.mode if (opts.mode == "full" or base is not None) else "full"
        parent = self._parent = _ParentTrees(self.vault, base["tree"] if base else None)
        # A full backup trusts nothing of its base, but keeps the block size of each image in it (blocks of
        # another size would share nothing with what the vault has).
        self._sizes_from = parent if mode != "full" else _ParentTrees(
            self.vault, (find_base(self.vault, snaps, self.host, paths, "incremental") or {}).get("tree"))
        last_full = next((s for s in reversed(snaps) if s.get("host") == self.host and s.get("mode") == "full"
                          and sorted(s.get("paths", [])) == paths), None)

        root = _Dir(None)
        links: HardLinks[_File] = HardLinks()
        # Ancestors of each source path: directories recorded with their metadata, without contents.
        for p in tree_paths + images:  # (a stream's made-up path has no ancestors on disk)
            cur = root
            parts = [x for x in os.fsencode(p).split(b"/") if x]
            for i, part in enumerate(parts[:-1]):
                d = cur.children.get(part)
                if not isinstance(d, _Dir):
                    anc = "/" + os.fsdecode(b"/".join(parts[: i + 1]))
                    try:
                        # An ancestor may be a symlink (/lib -> usr/lib on merged-/usr systems): it leads to the
                        # directory holding the backed-up path, so record that directory. Recorded as a symlink,
                        # a restore would make a link and nothing under it.
                        meta = fsmeta.capture(os.path.realpath(anc)).to_dict()
                        meta.pop("at", None)
                    except OSError as e:
                        self._error(anc, e)
                        meta = {"t": "d", "m": 0o755}
                    d = cur.children[part] = _Dir(meta, cur, part)
                cur = d
        # Directories on the way to a root, an image or the stream are stored only at the end: something is
        # still to be added below them after the walk has left them (a later root, an image, the stream).
        self._pinned = {tuple(x for x in os.fsencode(p).split(b"/") if x)[:i]
                        for p in tree_paths + images + ([stdin_path] if stdin_path else [])
                        for i in range(1, p.count("/"))}

        self.progress("plan", {"files": 0, "bytes": 0})  # totals grow as the walk finds changed files
        reader = _BatchReader(self)
        dirs: Dict[Tuple[bytes, ...], _Dir] = {(): root}
        compare = mode != "full"
        known = self.vault.known

        self._dirs = dirs

        def dir_for(parts: Tuple[bytes, ...]) -> _Dir:
            d = dirs.get(parts)
            if d is None:
                up = dir_for(parts[:-1])
                d = up.children.get(parts[-1])
                if not isinstance(d, _Dir):
                    d = up.children[parts[-1]] = _Dir({"t": "d", "m": 0o755}, up, parts[-1])
                d.parts = parts
                dirs[parts] = d
            return d

        open_dirs: List[Tuple[bytes, ...]] = []  # directories the walk is inside, outermost first
        as_images = set(images)  # inside a backed-up directory but named with --image: stored as an image only
        for entry in walk(tree_paths, rules, one_file_system=opts.one_file_system, on_error=self._error):
            if entry.path in as_images:
                continue
            st = entry.st
            parts = tuple(x for x in os.fsencode(entry.path).split(b"/") if x)
            dparts, name = parts[:-1], (parts[-1] if parts else b"")
            while open_dirs and dparts[:len(open_dirs[-1])] != open_dirs[-1]:
                self._close_dir(dirs.get(open_dirs.pop()))  # the walk has left it (depth-first order)
            parent_dir = dir_for(dparts)
            old = None
            if compare:
                pdir = parent.dir_nodes(dparts)
                old = pdir.get(name) if pdir else None
            if (old is not None and st.st_nlink == 1 and st_mod.S_ISREG(st.st_mode) and _unchanged(old, st)
                    and all(bytes.fromhex(c) in known for c in old["content"])):
                f = _File(old, entry.path, st.st_size)  # fast path: no capture, node reused as it is
                f.content = old["content"]
                f.needs_read = False
                f.reused = True
                parent_dir.children[name] = f
                self.stats.files_unmodified += 1
                self.stats.bytes_total += st.st_size
                continue
            try:
                meta = fsmeta.capture(entry.path, st)
            except (OSError, ValueError) as e:
                self._error(entry.path, e)
                continue
            md = meta.to_dict()
            md.pop("at", None)  # atime changes on every read: storing it would defeat tree dedup
            if meta.type == "d":
                d = dir_for(parts) if parts else root
                d.meta = md
                d.parts = parts
                d.old = old
                self.stats.dirs += 1
                if parts:
                    open_dirs.append(parts)
                continue
            node: Dict[str, Any] = {"name": fsmeta.encode_name(name), "meta": md}
            if meta.type != "f":
                parent_dir.children[name] = _Leaf(node)
                self.stats.others += 1
                continue
            size = st.st_size
            node["size"] = size
            f = _File(node, entry.path, size)
            parent_dir.children[name] = f
            self.stats.bytes_total += size
            if meta.nlink > 1:
                key = (meta.dev, meta.ino)
                if links.see(key, meta.nlink, f) is not None:
                    f.link_key = key
                    f.needs_read = False
                    parent_dir.hold = True  # stored at the end, once the first link's content is known
                    continue
            if (old is not None and _same_content(old, st)
                    and all(bytes.fromhex(c) in known for c in old["content"])):
                f.content = old["content"]
                f.needs_read = False
                self.stats.files_unmodified += 1
            else:
                if old is None:
                    self.stats.files_new += 1
                else:
                    self.stats.files_changed += 1
                f.dir = parent_dir
                parent_dir.pending += 1
                reader.add(f)

        reader.finish()
        while open_dirs:
            self._close_dir(dirs.get(open_dirs.pop()))
        for path in images:
            self._add_image(root, path)
        if stdin_path:
            self._add_stdin(root, stdin_path)
        for f in self._all_files(root):
            if f.link_key is not None:
                first = links.get(f.link_key)
                f.content = first.content  # None if the first link could not be read
        root_id = self._save_dir(root)
        self.vault.flush()
        self.stats.duration = round(time.monotonic() - t0, 3)
        snap = {
            "version": 1,
            "time": now_rfc3339(),
            "host": self.host,
            "username": getpass.getuser(),
            "paths": paths,
            "tags": sorted(set(opts.tags)),
            "mode": mode,
            "parent": base["id"] if base else None,
            "base_full": (base["id"] if base and base.get("mode") == "full" else
                          (base or {}).get("base_full") if mode != "full" else None),
            "tree": root_id.hex(),
            "excludes": opts.excludes,
            "program": f"recovault {__version__}",
            "stats": self.stats.to_dict(),
            "errors": self.errors[:1000],
            "complete": not self.errors,
        }
        if last_full is not None and mode == "differential":
            snap["base_full"] = last_full["id"]
        sid = self.vault.save_snapshot(snap)
        snap["id"] = sid
        return snap

    def _leaf_dir(self, root: _Dir, path: str) -> Tuple[_Dir, bytes]:
        parts = [x for x in os.fsencode(path).split(b"/") if x]
        d = root
        for part in parts[:-1]:
            nxt = d.children.get(part)
            if not isinstance(nxt, _Dir):
                nxt = d.children[part] = _Dir({"t": "d", "m": 0o755})
            d = nxt
        return d, parts[-1]

    def _add_image(self, root: _Dir, path: str) -> None:
        from .image import backup_image
        d, name = self._leaf_dir(root, path)
        meta = fsmeta.capture(path).to_dict()
        meta.pop("at", None)
        self.progress("image", {"path": path})
        parts = tuple(x for x in os.fsencode(path).split(b"/") if x)
        pdir = self._parent.dir_nodes(parts[:-1]) if self._mode != "full" else None
        old = pdir.get(name) if pdir else None
        # The block size: as asked; else the one the image's previous recovery point used (blocks of another
        # size share nothing with its map); else chosen from the image's size by backup_image.
        prev = (self._sizes_from.dir_nodes(parts[:-1]) or {}).get(name)
        bs = self.opts.image_block_size or (int(prev["image"]["bs"]) if prev is not None and "image" in prev else 0)
        # An image *file* whose size, mtime, ctime and inode are unchanged keeps its block map without being
        # read (as for files; a VM that wrote to it moved its mtime). Block devices have no such metadata
        # for their contents: they are always read and hashed, and only changed blocks are stored.
        if (old is not None and meta["t"] == "f" and "image" in old and old["image"].get("bs") == bs
                and all(old["meta"].get(k) == meta.get(k) for k in ("sz", "mt", "ct", "ino"))
                and all(bytes.fromhex(p) in self.vault.known for p in old["image"]["pages"])):
            desc, st = old["image"], {"bytes_read": 0, "chunks_new": 0, "bytes_added": 0}
            self.stats.files_unmodified += 1
        else:
            desc, st = backup_image(self.vault, path, block_size=bs, workers=self.opts.workers,
                                    progress=self.progress)
            if old is None:
                self.stats.files_new += 1
            else:
                self.stats.files_changed += 1
        node = {"name": fsmeta.encode_name(name), "meta": meta, "size": desc["size"], "image": desc}
        d.children[name] = _Leaf(node)
        self.stats.bytes_total += desc["size"]
        self.stats.bytes_read += st["bytes_read"]
        self.stats.chunks_new += st["chunks_new"]
        self.stats.bytes_added += st["bytes_added"]

    def _add_stdin(self, root: _Dir, path: str) -> None:
        d, name = self._leaf_dir(root, path)
        now = time.time_ns()
        node: Dict[str, Any] = {"name": fsmeta.encode_name(name),
                                "meta": {"t": "f", "m": 0o600, "u": os.getuid(), "g": os.getgid(), "mt": now,
                                         "at": now}}
        f = _File(node, "<stdin>", 0)
        self._read_files([f], sources=[self.opts.stdin_fd])
        if f.content is not None:
            node["size"] = f.size
            node["meta"]["sz"] = f.size
            d.children[name] = f
            self.stats.files_new += 1
            self.stats.bytes_total += f.size

    def _all_files(self, d: _Dir):
        for child in list(d.children.values()):
            if isinstance(child, _Dir):
                yield from self._all_files(child)
            elif isinstance(child, _File):
                yield child

    def _read_files(self, files: List[_File], sources: Optional[List[Any]] = None) -> None:
        self._drain(self._start(files, sources))

    def _pipeline(self) -> "core.Pipeline":
        if self._pipe is None:
            self._pipe = self.vault.pipeline(workers=self.opts.workers)
        return self._pipe

    def _start(self, files: List[_File], sources: Optional[List[Any]] = None):
        """Start reading `files` in the C++ pipeline (its threads work while Python goes on)."""
        if not files:
            return None
        pipe = self._pipeline()
        if sources is not None:
            return pipe.run(sources, None), files
        return pipe.run([f.path for f in files], [f.size for f in files]), files

    def _drain(self, started) -> None:
        """Take a started run's events: record chunk lists, queue new blobs into packs."""
        if started is None:
            return
        run, files = started
        contents: List[List[str]] = [[] for _ in files]
        add = self.vault.add_sealed
        stats = self.stats
        for batch in run:
            for kind, src, _offset, length, cid, payload in batch:
                if kind == core.CHUNK:
                    contents[src].append(cid.hex())
                    if payload is not None:
                        add(fmt.BLOB_DATA, cid, payload, length)
                        stats.chunks_new += 1
                        stats.bytes_added += len(payload)
                elif kind == core.END:
                    f = files[src]
                    if payload is not None:
                        self._error(f.path, payload)
                        f.content = None
                    else:
                        f.content = contents[src]
                        if length != f.size:  # the file changed while we read it: record what we read
                            f.node["size"] = f.size = length
                    contents[src] = []
                    stats.bytes_read += length
                    self.progress("file", {"path": f.path, "bytes": length})
                    d = f.dir
                    if d is not None:
                        f.dir = None
                        d.pending -= 1
                        if d.closed:
                            self._try_save(d)


    def _close_dir(self, d: Optional[_Dir]) -> None:
        if d is not None:
            d.closed = True
            self._try_save(d)

    def _try_save(self, d: _Dir) -> None:
        """Store a closed directory whose files are all read and whose subdirectories are stored; then
        replace it in its parent by its node, freeing its children, and try the parent in turn."""
        while (d.closed and d.pending == 0 and d.open_children == 0 and not d.hold and d.up is not None
               and d.parts is not None and d.parts not in self._pinned):
            node = {"name": fsmeta.encode_name(d.name), "meta": d.meta or {"t": "d", "m": 0o755},
                    "subtree": self._save_dir(d).hex()}
            up = d.up
            up.children[d.name] = _SavedDir(node, d.old)
            up.open_children -= 1
            self._dirs.pop(d.parts, None)
            self._parent.forget(d.parts)
            d.children = {}
            d = up

    def _save_dir(self, d: _Dir) -> bytes:
        """Store the directory's tree (children first). A directory whose every entry is exactly as in the
        base recovery point reuses the base's tree id without encoding anything."""
        nodes = []
        old = d.old
        same = old is not None and d.parts is not None and "subtree" in old and d.meta == old.get("meta")
        old_map = None
        for name, child in d.children.items():
            if isinstance(child, (_Dir, _SavedDir)):
                if isinstance(child, _Dir):
                    meta = child.meta or {"t": "d", "m": 0o755}
                    node = {"name": fsmeta.encode_name(name), "meta": meta, "subtree": self._save_dir(child).hex()}
                else:
                    node = child.node
                sub, meta = node["subtree"], node["meta"]
                same = same and child.old is not None and child.old.get("subtree") == sub and \
                    child.old.get("meta") == meta
            elif isinstance(child, _File):
                if child.content is None:
                    same = False
                    continue  # unreadable: reported in the recovery point's errors
                child.node["content"] = child.content
                node = child.node
                same = same and child.reused
            else:
                node = child.node
                if same:
                    if old_map is None:
                        old_map = self._parent.dir_nodes(d.parts) or {}
                    same = old_map.get(name) == node
            nodes.append(node)
        if same:
            if old_map is None:
                old_map = self._parent.dir_nodes(d.parts) or {}
            tree_id = bytes.fromhex(old["subtree"])
            if len(old_map) == len(nodes) and tree_id in self.vault.known:
                return tree_id
        return self.vault.save_tree(make_tree(nodes))


class _BatchReader:
    """Feeds changed files to the pipeline in batches while the walk goes on: batch k is read, chunked,
    hashed and sealed by the C++ threads while Python walks and compares the entries of batch k+1."""

    MAX_FILES = 2000
    MAX_BYTES = 64 << 20

    def __init__(self, job: "BackupJob") -> None:
        self.job = job
        self.batch: List[_File] = []
        self.bytes = 0
        self.running = None

    def add(self, f: _File) -> None:
        self.batch.append(f)
        self.bytes += f.size
        self.job.progress("more", {"files": 1, "bytes": f.size})
        if len(self.batch) >= self.MAX_FILES or self.bytes >= self.MAX_BYTES:
            self.flush()

    def flush(self) -> None:
        self.job._drain(self.running)
        self.running = self.job._start(self.batch)
        self.batch, self.bytes = [], 0

    def finish(self) -> None:
        self.flush()
        self.job._drain(self.running)
        self.running = None
