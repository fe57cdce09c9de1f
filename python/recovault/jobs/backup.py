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
from datetime import datetime
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

from .. import __version__, core, timefmt
from .. import fsmeta
from ..errors import CorruptData, Interrupted, ObjectMissing, RecovaultError, StorageError, UsageError
from ..hardlinks import HardLinks
from ..paths import split_path
from ..vault import format as fmt
from ..vault.coordination import Coordinator, Plan, WriterSession
from ..vault.reach import ids_of, referenced
from ..vault.records import DEFAULT_DIR_META, Node, RecoveryPoint
from ..vault.repo import Vault
from . import MODES
from .tree_builder import UNSETTLED, BaseTrees, FileItem, Leaf, PendingDir, TreeBuilder, pinned_dirs
from .walk import Entry, ExcludeRules, walk


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
    time: Union[str, datetime, None] = None  # when the recovery point says it was made (default: now)


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


def _point_time(given: Union[str, datetime, None]) -> Optional[str]:
    """The stored form of a given time (restic's --time: "YYYY-MM-DD HH:MM:SS" in local time, or a datetime,
    naive = local), None for "now"; UsageError if it is not a time."""
    if given is None:
        return None
    if isinstance(given, datetime):
        return timefmt.format_time(given if given.tzinfo else given.astimezone())
    try:
        return timefmt.format_time(timefmt.parse_local(given))
    except (ValueError, TypeError) as e:
        raise UsageError(f"--time: {e}") from None


def _same_content(old: Node, st: os.stat_result) -> bool:
    """Same size, mtime, ctime and inode as in the base recovery point: the content is unchanged."""
    m = old.meta
    return (m.get("t") == "f" and old.content is not None and m.get("sz", 0) == st.st_size
            and m.get("mt", 0) == st.st_mtime_ns and m.get("ct", 0) == st.st_ctime_ns
            and m.get("ino", 0) == st.st_ino)


def _unchanged(old: Node, st: os.stat_result) -> bool:
    """Content unchanged, and so is the metadata: any change of owner, mode or xattrs moves ctime too,
    so the whole node can be reused as it is."""
    return _same_content(old, st) and "at" not in old.meta


class _Chain(NamedTuple):
    """Where the new recovery point sits: its sources' paths, its mode, and the points it follows."""
    paths: List[str]
    mode: str
    base: Optional[RecoveryPoint]
    last_full: Optional[RecoveryPoint]


class _Sources(NamedTuple):
    """What a run backs up, made absolute and checked."""
    paths: List[str]  # the recovery point's identity for choosing a base: files, images and the stream name
    tree_paths: List[str]  # walked
    images: List[str]  # backed up by block map
    stdin_path: Optional[str]  # the stream's made-up path


def _sources(opts: BackupOptions) -> _Sources:
    """The named paths, images and stream name, checked (UsageError for what cannot be backed up)."""
    paths = []
    for p in opts.paths:
        ap = os.path.abspath(p)
        if not os.path.lexists(ap):
            raise UsageError(f"cannot back up {p}: no such file or directory")
        paths.append(ap)
    paths = sorted(set(paths))
    images: List[str] = []
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
    _refuse_beneath_links(paths, paths + images)
    every = sorted(set(paths + images + ([stdin_path] if stdin_path else [])))
    return _Sources(every, [p for p in every if p not in images and p != stdin_path], images, stdin_path)


def _refuse_beneath_links(named: List[str], others: List[str]) -> None:
    """A named symlink is backed up as a link (never followed), and a tree cannot hold a link and a
    directory at one name: a path named beneath it is refused (UsageError), rather than turning the link
    into a made-up directory. (restic turns the link into a copy of its target directory instead, which
    on a restore onto / would replace /bin -> usr/bin by a directory.)"""
    links = {p for p in named if os.path.islink(p)}
    for q in others:
        for a in links:
            if q.startswith(a.rstrip("/") + "/"):
                raise UsageError(f"cannot back up {q}: it is beneath {a}, a symlink that is backed up as a link; "
                                 f"name the link's target instead ({os.path.realpath(a)}), or leave one out")


def find_base(snaps: List[RecoveryPoint], host: str, paths: List[str], mode: str) -> Optional[RecoveryPoint]:
    """The recovery point to compare against: latest of this host+paths (incremental) or latest full."""
    if mode == "full":
        return None
    same = [s for s in snaps if s.same_source(host, paths)]
    if mode == "differential":  # a partial point (an interrupted backup's) is no full one
        same = [s for s in same if s.mode == "full" and not s.partial]
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
        self.time = _point_time(opts.time)
        self.vault = vault
        self.opts = opts
        self.progress = progress or (lambda kind, info: None)
        self.stats = BackupStats()
        self.errors: List[Dict[str, str]] = []
        self.host = opts.host or socket.gethostname()
        self._pipe: Optional["core.Pipeline"] = None
        self._plans: List[Plan] = []  # the pending plans this run has seen (its session says so)
        self._base_id: Optional[str] = None
        self._links: HardLinks[FileItem] = HardLinks()  # (dev, ino) -> the first name read (set by the walk)
        self._reader: Optional[_BatchReader] = None  # set by the walk

    def _error(self, path: str, err: Any) -> None:
        msg = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        self.errors.append({"path": path, "error": msg})
        self.stats.errors += 1
        self.progress("error", {"path": path, "error": msg})

    def run(self) -> RecoveryPoint:
        opts = self.opts
        src = _sources(opts)
        rules = ExcludeRules.from_options(opts.excludes, opts.exclude_files, opts.exclude_caches)
        # Registered before the index is loaded, so a prune sees this writer; the garbage of the plans it
        # read is never "known" here (docs/vault-format.md §10).
        session = WriterSession(Coordinator(self.vault.storage, self.vault.sealer))
        try:
            self._plans = session.open()
            for plan in self._plans:
                self.vault.blobs.exclude(plan.garbage)
            return self._run(src, rules, session)
        finally:
            session.close()

    def _run(self, src: "_Sources", rules: ExcludeRules, session: WriterSession) -> RecoveryPoint:
        t0 = time.monotonic()
        opts = self.opts
        # A damaged recovery point is reported and skipped: it must not prevent new backups.
        snaps = self.vault.backup_bases(self.host, src.paths,
                                        on_corrupt=lambda msg: self.progress("error", {"path": "", "error": msg}))
        base = find_base(snaps, self.host, src.paths, opts.mode)
        self._base_id = base.id if base else None
        mode = self._mode = opts.mode if (opts.mode == "full" or base is not None) else "full"
        self._base = BaseTrees(self.vault, base.tree if base else None, self._problem)
        # A full backup trusts nothing of its base, but keeps the block size of each image in it (blocks of
        # another size would share nothing with what the vault has).
        latest = find_base(snaps, self.host, src.paths, "incremental")
        self._sizes_from = (self._base if mode != "full"
                            else BaseTrees(self.vault, latest.tree if latest else None, self._problem))
        chain = _Chain(src.paths, mode, base, find_base(snaps, self.host, src.paths, "differential"))
        on_disk = [split_path(p) for p in src.tree_paths + src.images]  # a stream's path has no ancestors
        tree = self._tree = TreeBuilder(self.vault, self._base, pinned_dirs(
            on_disk + ([split_path(src.stdin_path)] if src.stdin_path else [])))
        tree.add_ancestors(on_disk, self._ancestor_meta)
        self.progress("plan", {"files": 0, "bytes": 0})  # totals grow as the walk finds changed files ("more")
        try:
            self._walk(src, rules, compare=mode != "full", last=not (src.images or src.stdin_path))
            for path in src.images:
                self._add_image(path)
            if src.stdin_path:
                self._add_stdin(src.stdin_path)
            if src.images or src.stdin_path:
                self.progress("walked", {})  # an image's size and a stream's are known only as they are read
            self._resolve_links()
            root_id = tree.save_root()
            self.vault.flush()
        except (StorageError, KeyboardInterrupt) as e:
            self._interrupted(e, chain, session, t0)  # raises
        return self._finish(chain, session, root_id, t0)

    def _problem(self, message: str) -> None:
        self.progress("problem", {"message": message})

    def _finish(self, chain: _Chain, session: WriterSession, root_id: bytes, t0: float,
                partial: bool = False) -> RecoveryPoint:
        """Store what is queued, index it, and record the recovery point (docs/vault-format.md §10.1)."""
        self.vault.flush()
        if session.lapsed:
            revalidate(self.vault, session, root_id)
        self.stats.duration = round(time.monotonic() - t0, 3)
        def check_stored() -> None:  # stopped between the check and the save: the point must not stay if it lost blobs
            if session.lapsed:
                revalidate(self.vault, session, root_id, rescue=False)
        return self._save_point(chain, root_id, check_stored, partial)

    def _resolve_links(self) -> None:
        """Hard links after the first: the first link's content (None if it could not be read, or is not
        read yet when the backup was interrupted)."""
        for f in self._tree.files():
            if f.link_key is not None:
                first = self._links.get(f.link_key)
                f.content, f.stamp = first.content, first.stamp

    def _interrupted(self, e: BaseException, chain: _Chain, session: WriterSession, t0: float) -> None:
        """The storage failed or the operator interrupted: save what was finished (every file whose blobs
        are all stored; the directories with what they hold so far) as a partial recovery point, then raise
        one error saying what happened and what was saved. If the storage fails again meanwhile, say so:
        the packs already stored are indexed on close and reused by the next backup."""
        ctrl_c = isinstance(e, KeyboardInterrupt)
        what = "interrupted (Ctrl-C or SIGTERM)" if ctrl_c else f"stopped: {e}"
        make = Interrupted if ctrl_c else (type(e) if isinstance(e, RecovaultError) else StorageError)
        self._stop_reading()
        try:
            lost_from = self.vault.blobs.salvage()
            self.vault.flush()  # what is queued: stored now, or the storage is still failing
            self._resolve_links()  # later names of the hard-linked files read so far
            root_id = self._tree.save_root(UNSETTLED - 1 if lost_from is None else lost_from)
            point = self._finish(chain, session, root_id, t0, partial=True)
        except (StorageError, CorruptData, KeyboardInterrupt) as again:
            why = "interrupted again" if isinstance(again, KeyboardInterrupt) else str(again)
            raise make(f"backup {what}; saving what it finished failed too ({why}); the packs already stored "
                       "and indexed are reused by the next backup") from None
        err = make(f"backup {what}; what it finished is saved as partial recovery point {point.short_id}: "
                   "run the backup again to complete it (it uploads only what is missing)")
        err.point = point  # type: ignore[attr-defined]
        raise err from None

    def _stop_reading(self) -> None:
        """Stop the pipeline batch under way (its files are unfinished) and close the descriptors of files
        handed over as such."""
        reader = self._reader
        if reader is None:
            return
        files = list(reader.batch)
        if reader.running is not None:
            run, running = reader.running
            reader.running = None
            run.close()
            files += running
        for f in files:
            if f.fd is not None:
                os.close(f.fd)
                f.fd = None

    def _ancestor_meta(self, parts: Tuple[bytes, ...]) -> Dict[str, Any]:
        """Metadata of a directory above a named path. An ancestor may be a symlink (/lib -> usr/lib on
        merged-/usr systems): it leads to the directory holding the backed-up path, so record that
        directory. Recorded as a symlink, a restore would make a link and nothing under it."""
        anc = "/" + os.fsdecode(b"/".join(parts))
        try:
            meta = fsmeta.capture(os.path.realpath(anc)).to_dict()
            meta.pop("at", None)
            return meta
        except OSError as e:
            self._error(anc, e)
            return dict(DEFAULT_DIR_META)

    def _walk(self, src: "_Sources", rules: ExcludeRules, compare: bool, last: bool) -> None:
        """Walk the named paths: compare each entry with the base, record it in the tree, and hand changed
        files to the pipeline while the walk goes on. When the walk is over, the totals of the changed files
        ("more" events) are final: say so ("walked") if nothing else is to come (`last`)."""
        self._compare = compare
        self._links = HardLinks()
        self._reader = _BatchReader(self)
        as_images = set(src.images)  # inside a backed-up directory but named with --image: stored as an image only
        walker = walk(src.tree_paths, rules, one_file_system=self.opts.one_file_system, on_error=self._error)
        for entry in walker:
            if entry.path not in as_images:
                self._add_entry(entry)
        if last:
            self.progress("walked", {})
        self._reader.finish()
        self._tree.leave_all()
        # Saved all the same (a directory may hold only what is excluded tonight), but never silently.
        for root in walker.roots_emptied:
            self.progress("problem", {"path": root, "message": "the exclude patterns removed everything in "
                                      "it: the recovery point holds it as an empty directory"})

    def _add_entry(self, entry: Entry) -> None:
        st = entry.st
        parts = split_path(entry.path)
        dparts, name = parts[:-1], (parts[-1] if parts else b"")
        tree = self._tree
        tree.leave_until(dparts)
        parent_dir = tree.dir_for(dparts)
        old = self._base.node(parts) if self._compare and parts else None
        if (old is not None and st.st_nlink == 1 and st_mod.S_ISREG(st.st_mode) and _unchanged(old, st)
                and self._all_known(old.content)):
            f = FileItem(old, entry.path, st.st_size)  # fast path: no capture, node reused as it is
            f.content = old.content
            f.reused = True
            tree.stamps.stamp(f)
            parent_dir.children[name] = f
            self.stats.files_unmodified += 1
            self.stats.bytes_total += st.st_size
            return
        try:
            name_or_path, dir_fd = entry.at
            meta = fsmeta.capture(name_or_path, st, dir_fd=dir_fd)
        except (OSError, ValueError) as e:
            self._error(entry.path, e)
            return
        md = meta.to_dict()
        md.pop("at", None)  # atime changes on every read: storing it would defeat tree dedup
        if meta.type == "d":
            tree.enter_dir(parts, md, old)
            self.stats.dirs += 1
            return
        node = Node(name, md)
        if meta.type != "f":
            parent_dir.children[name] = Leaf(node)
            self.stats.others += 1
            return
        self._add_file(entry, node, meta, old, parent_dir, name)

    def _add_file(self, entry: Entry, node: Node, meta: fsmeta.Meta, old: Optional[Node],
                  parent_dir: PendingDir, name: bytes) -> None:
        size = node.size = entry.st.st_size
        f = FileItem(node, entry.path, size)
        parent_dir.children[name] = f
        self.stats.bytes_total += size
        if meta.nlink > 1:
            key = (meta.dev, meta.ino)
            if self._links.see(key, meta.nlink, f) is not None:
                f.link_key = key
                parent_dir.hold = True  # stored at the end, once the first link's content is known
                return
        if old is not None and _same_content(old, entry.st) and self._all_known(old.content):
            f.content = old.content
            self._tree.stamps.stamp(f)
            self.stats.files_unmodified += 1
            return
        if entry.beyond_path_max:
            try:  # the pipeline opens files by path: beyond PATH_MAX, hand it a descriptor instead
                f.fd = fsmeta.open_to_read(*entry.at)
            except OSError as e:
                self._error(entry.path, e)
                return
        if old is None:
            self.stats.files_new += 1
        else:
            self.stats.files_changed += 1
        f.dir = parent_dir
        parent_dir.pending += 1
        self._reader.add(f)

    def _all_known(self, chunk_ids: Optional[List[str]]) -> bool:
        known = self.vault.known
        return all(bytes.fromhex(c) in known for c in chunk_ids or ())

    def _save_point(self, chain: _Chain, root_id: bytes, check_stored: Optional[Callable[[], None]] = None,
                    partial: bool = False) -> RecoveryPoint:
        """Record the recovery point (written last: until then the run left only packs and indexes)."""
        opts = self.opts
        paths, mode, base, last_full = chain
        if mode == "full" or base is None:
            base_full = None
        elif mode == "differential" and last_full is not None:
            base_full = last_full.id
        else:
            base_full = base.id if base.mode == "full" and not base.partial else base.base_full
        point = RecoveryPoint(
            time=self.time or timefmt.now(), host=self.host, username=getpass.getuser(), paths=paths, tree=root_id.hex(),
            tags=sorted(set(opts.tags)), mode=mode, parent=base.id if base else None, base_full=base_full,
            excludes=opts.excludes, program=f"recovault {__version__}", stats=self.stats.to_dict(),
            errors=self.errors[:1000], complete=not self.errors and not partial, partial=partial)
        self.vault.save_snapshot(point, check_stored)  # sets point.id
        return point

    def _add_image(self, path: str) -> None:
        from .image import backup_image
        parts = split_path(path)
        d, name = self._tree.leaf_dir(parts), parts[-1]
        meta = fsmeta.capture(path).to_dict()
        meta.pop("at", None)
        self.progress("image", {"path": path})
        old = self._base.node(parts) if self._mode != "full" else None
        # The block size: as asked; else the one the image's previous recovery point used (blocks of another
        # size share nothing with its map); else chosen from the image's size by backup_image.
        prev = self._sizes_from.node(parts)
        bs = self.opts.image_block_size or (int(prev.image["bs"]) if prev is not None and prev.image is not None else 0)
        # An image *file* whose size, mtime, ctime and inode are unchanged keeps its block map without being
        # read (as for files; a VM that wrote to it moved its mtime). Block devices have no such metadata
        # for their contents: they are always read and hashed, and only changed blocks are stored.
        if (old is not None and meta["t"] == "f" and old.image is not None and old.image.get("bs") == bs
                and all(old.meta.get(k) == meta.get(k) for k in ("sz", "mt", "ct", "ino"))
                and all(bytes.fromhex(p) in self.vault.known for p in old.image["pages"]) and self._map_reusable()):
            desc, st = old.image, {"bytes_read": 0, "chunks_new": 0, "bytes_added": 0}
            self.stats.files_unmodified += 1
        else:
            desc, st = backup_image(self.vault, path, block_size=bs, workers=self.opts.workers,
                                    progress=self.progress)
            if old is None:
                self.stats.files_new += 1
            else:
                self.stats.files_changed += 1
        d.children[name] = Leaf(Node(name, meta, size=desc["size"], image=desc), stamp=self.vault.blobs.queued)
        self.stats.bytes_total += desc["size"]
        self.stats.bytes_read += st["bytes_read"]
        self.stats.chunks_new += st["chunks_new"]
        self.stats.bytes_added += st["bytes_added"]

    def _map_reusable(self) -> bool:
        """Whether the base's block maps may be reused without reading their pages: only if the base point is
        one every pending plan's referenced set was walked from (so the blocks its pages name are in no
        plan's garbage). A base made after a plan, by a backup that had not seen it, may name that plan's
        garbage blocks in a new page; its image is read again, storing what the plan may delete
        (docs/vault-format.md §10.4)."""
        return all(self._base_id in plan.points for plan in self._plans)

    def _add_stdin(self, path: str) -> None:
        parts = split_path(path)
        d, name = self._tree.leaf_dir(parts), parts[-1]
        now = time.time_ns()
        node = Node(name, {"t": "f", "m": 0o600, "u": os.getuid(), "g": os.getgid(), "mt": now, "at": now})
        f = FileItem(node, "<stdin>", 0)
        self._read_files([f], sources=[self.opts.stdin_fd])
        if f.content is not None:
            node.size = f.size
            node.meta["sz"] = f.size
            d.children[name] = f
            self.stats.files_new += 1
            self.stats.bytes_total += f.size

    def _read_files(self, files: List[FileItem], sources: Optional[List[Any]] = None) -> None:
        self._drain(self._start(files, sources))

    def _pipeline(self) -> "core.Pipeline":
        if self._pipe is None:
            self._pipe = self.vault.pipeline(workers=self.opts.workers)
        return self._pipe

    def _start(self, files: List[FileItem], sources: Optional[List[Any]] = None):
        """Start reading `files` in the C++ pipeline (its threads work while Python goes on)."""
        if not files:
            return None
        pipe = self._pipeline()
        self._tree.stamps.start()
        if sources is not None:
            return pipe.run(sources, None), files
        return pipe.run([f.path if f.fd is None else f.fd for f in files], [f.size for f in files]), files

    def _drain(self, started) -> None:
        """Take a started run's events: record chunk lists, queue new blobs into packs."""
        if started is None:
            return
        run, files = started
        contents: List[List[str]] = [[] for _ in files]
        add = self.vault.add_sealed
        stats = self.stats
        for batch in run:
            for ev in batch:  # core.PipelineEvent
                if ev.kind == core.CHUNK:
                    contents[ev.source].append(ev.id.hex())
                    if ev.payload is not None:
                        add(fmt.BLOB_DATA, ev.id, ev.payload, ev.length)
                        stats.chunks_new += 1
                        stats.bytes_added += len(ev.payload)
                elif ev.kind == core.END:
                    self._file_read(files[ev.source], ev, contents)
        self._tree.stamps.settle()

    def _file_read(self, f: FileItem, ev: "core.PipelineEvent", contents: List[List[str]]) -> None:
        """A file's END event: record its content, or the error that leaves it out."""
        if f.fd is not None:
            os.close(f.fd)
            f.fd = None
        error = ev.payload
        if error is None and ev.offset & core.END_CHANGED:  # torn: left out like an unreadable file
            error = "changed while reading"
        if error is not None:
            self._error(f.path, error)
            f.content = None
        else:
            f.content = contents[ev.source]
            f.stamp = self.vault.blobs.queued  # its chunks are all queued (events come in source order)
            if ev.length != f.size:  # the file changed while we read it: record what we read
                f.node.size = f.size = ev.length
        contents[ev.source] = []
        self.stats.bytes_read += ev.length
        self.progress("file", {"path": f.path, "bytes": ev.length})
        d = f.dir
        if d is not None:
            f.dir = None
            self._tree.file_done(d)


def revalidate(vault: Vault, session: WriterSession, root_id: bytes, rescue: bool = True) -> None:
    """The heartbeat lapsed (this process was stopped, or the storage refused it): a prune may have taken
    this writer for dead and deleted what it reuses. Block every plan again, reload the index as it is now,
    and check that every blob the new point references is indexed and in no pending plan's garbage; copy
    (`rescue`) the ones in garbage into new packs while they exist. StorageError if one is gone: no
    recovery point is saved (what was stored is reused next run)."""
    session.block_plans()
    garbage = core.IdSet()
    for plan in session.coord.plans():
        garbage.update(plan.garbage)
    vault.blobs.reload_index()
    try:
        refs = referenced(vault, [root_id])
    except (CorruptData, ObjectMissing) as e:  # a tree itself is gone
        raise StorageError(_LOST.format(what=f"a tree it reuses ({e})")) from None
    missing = [b for b in ids_of(refs) if b not in vault.locations]
    doomed = [b for b in ids_of(refs) if b in garbage] if rescue else []
    try:
        for blob_id in doomed:
            loc = vault.locate(blob_id)
            sealed = vault.blobs.get(vault.pack_name(loc.pack), loc.offset, loc.length)
            vault.add_sealed(loc.type, blob_id, sealed, loc.raw_length)
    except ObjectMissing:
        missing.append(blob_id)
    vault.flush()
    if missing:
        raise StorageError(_LOST.format(what=f"{len(missing)} blob(s) it reuses (first {missing[0].hex()[:16]})"))


_LOST = ("this backup was stopped long enough for a prune to delete {what}; no recovery point was saved: run the "
         "backup again (what it stored is reused)")


class _BatchReader:
    """Feeds changed files to the pipeline in batches while the walk goes on: batch k is read, chunked,
    hashed and sealed by the C++ threads while Python walks and compares the entries of batch k+1."""

    MAX_FILES = 2000
    MAX_BYTES = 64 << 20
    MAX_FDS = 64  # files handed over as open descriptors (paths beyond PATH_MAX)

    def __init__(self, job: "BackupJob") -> None:
        self.job = job
        self.batch: List[FileItem] = []
        self.bytes = 0
        self.fds = 0
        self.running = None

    def add(self, f: FileItem) -> None:
        self.batch.append(f)
        self.bytes += f.size
        self.fds += f.fd is not None
        self.job.progress("more", {"files": 1, "bytes": f.size})
        if len(self.batch) >= self.MAX_FILES or self.bytes >= self.MAX_BYTES or self.fds >= self.MAX_FDS:
            self.flush()

    def flush(self) -> None:
        self.job._drain(self.running)
        self.running = self.job._start(self.batch)
        self.batch, self.bytes, self.fds = [], 0, 0

    def finish(self) -> None:
        self.flush()
        self.job._drain(self.running)
        self.running = None
