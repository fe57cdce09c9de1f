"""Restore a recovery point (whole, or selected paths) to a target directory, byte for byte.

Containment: nothing outside ``--target`` is ever created, written, removed, or has its metadata changed.
The target directory itself (and the path to it) is the caller's choice and is opened as given; beneath it,
every directory is opened from its parent's descriptor with ``O_NOFOLLOW`` (one component at a time, as
``openat2(RESOLVE_BENEATH)`` would), every file is created from its directory's descriptor with
``O_CREAT | O_EXCL | O_NOFOLLOW``, and metadata is applied through the object's descriptor or with
``AT_SYMLINK_NOFOLLOW`` (fsmeta.apply_at). So a symlink already in the target (``TGT/tmp -> /elsewhere``),
nested or at the top, or one the recovery point itself restored earlier in the same run, is never followed:

- where the recovery point has a directory and the target a symlink (or another non-directory), the
  symlink is removed (it is inside the target: only the link goes, never what it points to) and a directory
  made in its place; with ``--overwrite never`` that path is refused with one message instead;
- where the recovery point has a symlink and the target already has the same symlink (same name, same
  target: ``/bin -> usr/bin`` when restoring ``/`` onto a merged-/usr system), it is kept as it is. The
  restore never descends through it either way: in the recovery point it is a symlink, with no entries
  beneath it, and the directories it points to are restored through their own real path (``usr/bin``).

Files are written to a temporary name in their directory (``.NAME.recovault-XXXXXXXX``) and renamed over
NAME once complete, with their metadata, so a file that could not be finished (a full target) is never
left looking complete; the temporary file is removed on failure. Hard links are made with ``linkat`` from
descriptors, never following a symlink.

Overwrite rules (``overwrite``, restic's): "if-changed" (default) keeps an existing regular file whose size
and mtime match the recovery point and that has no other hard links (its metadata is then applied), and
replaces anything else; "if-newer" replaces an existing entry only when the recovery point's mtime is
newer; "always" replaces everything; "never" keeps every existing entry untouched. ``delete`` removes
entries of the target that the recovery point does not hold, only inside the restored subtrees.

Memory follows the tree's depth, not its file count: directories are restored one at a time, depth-first;
their files go to a small pool of threads in runs, through a bounded number of slots; a directory's metadata
is applied once its files are done, children before parents (times would otherwise be disturbed). Only
the hard-link table (recovault.hardlinks) grows with the number of (hard-linked) files. ``verify``
re-reads every restored file, chunks and hashes it, and compares with the recovery point: each file is read
through a descriptor opened from its directory's descriptor with ``O_NOFOLLOW`` just after its rename and
checked to be the inode written, never by path (deep trees; no symlink swapped in since is followed).
"""
from __future__ import annotations

import errno
import itertools
import os
import resource
import secrets
import shutil
import stat as st_mod
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, NamedTuple, Optional, Set, Tuple

from . import core, fsmeta
from .engine import BlobWriter
from .errors import CorruptData, NotFound, RecovaultError, TargetFull, UsageError
from .hardlinks import HardLinks
from .vault.repo import Vault
from .paths import split_path
from .vault.records import Node, RecoveryPoint

OVERWRITE_MODES = ("if-changed", "always", "if-newer", "never")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
RUN_FILES = 16  # files per pool task: one task per small file costs more than restoring it
MAX_OPEN_DIRS = 64  # restored directories waiting for their files (each holds a descriptor)
VERIFY_BATCH = 256  # restored files re-read together by verify


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    others: int = 0
    bytes: int = 0
    errors: int = 0
    verified: int = 0
    skipped: int = 0  # existing entries kept by the overwrite rule
    deleted: int = 0  # entries removed by delete
    duration: float = 0.0


@dataclass
class _Dir:
    """A directory of the target being restored, open as `fd`."""
    fd: int
    parts: Tuple[bytes, ...]
    meta: Optional[fsmeta.Meta]  # None: only an ancestor of a selected path, whose metadata is not restored
    names: Optional[Set[bytes]]  # with delete: the names the recovery point holds here (None: delete nothing)
    made: bool = False  # made by this restore: nothing is in the way of its entries
    pending: List["Future[None]"] = field(default_factory=list)  # runs of its files still in the pool


@dataclass
class _First:
    """The first name of a hard-linked inode: the later names are linked to it once it is written."""
    parts: Tuple[bytes, ...]
    future: Optional["Future[None]"] = None
    ok: bool = False


@dataclass
class _FileTask:
    dir: _Dir
    name: bytes
    node: Node
    meta: fsmeta.Meta
    first: Optional[_First] = None  # set when this file is the first name of a hard-linked inode


class _Written(NamedTuple):
    """A file written to its temporary name: the bytes written, and its (st_dev, st_ino)."""
    nbytes: int
    inode: Tuple[int, int]


class _Readback(NamedTuple):
    """A restored file waiting for verify: `fd` reads exactly the file written (opened from its directory's
    descriptor, never through a symlink), `content` is the recovery point's chunk list."""
    path: str
    content: List[str]
    fd: int


_TMP_TOKEN = secrets.token_hex(4).encode()  # this process's: two restores into one target never collide
_tmp_count = itertools.count()


def _tmp_name(name: bytes) -> bytes:
    """A temporary name beside `name` (kept under NAME_MAX: 255 bytes): ``.NAME.recovault-TOKEN-N``."""
    return b".%s.recovault-%s-%d" % (name[:200], _TMP_TOKEN, next(_tmp_count))


def _unlink_quietly(dir_fd: int, name: bytes) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _raise_fd_limit() -> None:
    """Directories are held open along the current path (and up to MAX_OPEN_DIRS more): deep trees need
    more descriptors than the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


class RestoreJob:
    def __init__(self, vault: Vault, point: RecoveryPoint, target: str, paths: Optional[List[str]] = None, *,
                 verify: bool = False, owners: Optional[bool] = None, workers: int = 2,
                 overwrite: str = "if-changed", delete: bool = False,
                 progress: Optional[Callable[[str, Dict[str, Any]], None]] = None) -> None:
        if overwrite not in OVERWRITE_MODES:
            raise UsageError(f"--overwrite must be one of {', '.join(OVERWRITE_MODES)}, not {overwrite!r}")
        self.vault = vault
        self.point = point
        self.target = os.path.abspath(target)
        self.selection = [split_path(p) for p in (paths or [])]
        self.verify = verify
        self.owners = (os.geteuid() == 0) if owners is None else owners
        self.workers = max(1, workers)
        self.overwrite = overwrite
        self.delete = delete
        self.progress = progress or (lambda kind, info: None)
        self.stats = RestoreStats()
        self.errors: List[Dict[str, str]] = []
        self.warnings: List[Dict[str, str]] = []
        self._lock = threading.Lock()
        self.data_errors = 0  # errors from the vault (corrupt or missing data), as opposed to the target
        self._links: HardLinks[_First] = HardLinks(forget=True)
        self._closing: Deque[_Dir] = deque()  # restored directories, children before parents
        self._slots = threading.BoundedSemaphore(8 * self.workers)  # runs of files queued or in the pool
        self._to_verify: List[_Readback] = []  # each holds a descriptor until it is verified
        self._stop = False  # the target is full: the pool's remaining runs do nothing
        self._root_fd = -1

    # ---- selection and reporting -----------------------------------------------------------
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

    def _path(self, parts: Tuple[bytes, ...]) -> str:
        return os.path.join(self.target, os.fsdecode(b"/".join(parts)))

    def _warn(self, path: str, msg: str) -> None:
        """Metadata that could not be applied (an unsupported xattr, a socket, a device node without
        privileges): reported, counted, but the data is restored, so the restore still succeeds."""
        with self._lock:
            if len(self.warnings) < 1000:
                self.warnings.append({"path": path, "warning": msg})
        self.progress("error", {"path": path, "error": msg})

    def _fail_on_full_disk(self, e: OSError, path: str) -> None:
        """A full target (or quota) ends the restore with one message, instead of one error per file."""
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise self._target_full(path)

    def _target_full(self, path: str) -> TargetFull:
        self._stop = True
        return TargetFull(f"no space left on the restore target (writing {path}); "
                          f"{self.stats.files} files were restored before it filled up")

    def _error(self, path: str, msg: str) -> None:
        with self._lock:
            if len(self.errors) < 1000:
                self.errors.append({"path": path, "error": msg})
            self.stats.errors += 1
        self.progress("error", {"path": path, "error": msg})

    # ---- the job -----------------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        t0 = time.monotonic()
        for sel in self.selection:  # before anything is written
            if self.vault.find_node(self.point, "/" + os.fsdecode(b"/".join(sel))) is None:
                raise NotFound(f"path /{os.fsdecode(b'/'.join(sel))} is not in recovery point {self.point.short_id}")
        os.makedirs(self.target, exist_ok=True)
        _raise_fd_limit()
        self._root_fd = os.open(self.target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        root = _Dir(os.dup(self._root_fd), (), None, set() if self.delete and not self.selection else None)
        self.progress("plan", {"files": 0, "bytes": 0})  # the totals grow directory by directory ("more")
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="recovault-restore") as pool, \
                    ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="recovault-segment") as seg:
                self._pool, self._segments = pool, seg
                try:
                    try:
                        self._restore_dir(root, bytes.fromhex(self.point.tree))
                    finally:
                        self._closing.append(root)
                    self._drain(0)
                finally:
                    self._stop = self._stop or bool(self._closing)  # failed: let the queued runs end
            self._verify_queued()
        finally:
            for d in self._closing:  # left open by a failure (the pool is over: nothing uses them)
                os.close(d.fd)
            for f in self._to_verify:
                os.close(f.fd)
            os.close(self._root_fd)
        self.stats.duration = round(time.monotonic() - t0, 3)
        return {"snapshot": self.point.id, "target": self.target, "stats": dict(self.stats.__dict__),
                "errors": self.errors, "warnings": self.warnings, "data_errors": self.data_errors}

    def _restore_dir(self, d: _Dir, tree_id: bytes) -> None:
        """Restore the entries of tree `tree_id` into the open directory `d`, its subdirectories first
        (depth-first), its files handed to the pool."""
        run: List[_FileTask] = []
        files = nbytes = 0
        for node in self.vault.load_nodes(tree_id):
            name = node.name
            if name in (b"", b".", b"..") or b"/" in name:
                raise CorruptData(f"tree {tree_id.hex()[:16]} holds an invalid file name {name!r}")
            p = d.parts + (name,)
            want, descend = self._wanted(p)
            if not want and not descend:
                continue
            if d.names is not None:
                d.names.add(name)
            meta = fsmeta.Meta.from_dict(node.meta)
            try:
                if meta.type == "d":
                    self._restore_subdir(d, name, node, meta, want, descend)
                elif not want:
                    continue
                elif meta.type == "f" or node.image is not None:
                    files, nbytes = files + 1, nbytes + (node.size or 0)
                    run = self._add_file(_FileTask(d, name, node, meta), run)
                else:
                    self._restore_other(d, name, meta)
            except OSError as e:
                self._fail_on_full_disk(e, self._path(p))
                self._error(self._path(p), f"cannot create: {e.strerror}")
        self._submit(d, run)
        if files:
            self.progress("more", {"files": files, "bytes": nbytes})

    def _restore_subdir(self, parent: _Dir, name: bytes, node: Node, meta: fsmeta.Meta, want: bool,
                        descend: bool) -> None:
        parts = parent.parts + (name,)
        opened = self._open_dir(parent.fd, name, parts, 0o700 if want else 0o777)
        if opened is None:
            return
        fd, made = opened
        d = _Dir(fd, parts, meta if want else None, set() if self.delete and want else None, made)
        if want:
            self.stats.dirs += 1
        try:
            if descend and node.subtree is not None:
                self._restore_dir(d, bytes.fromhex(node.subtree))
        finally:
            self._closing.append(d)
        self._drain(MAX_OPEN_DIRS)

    def _open_dir(self, parent_fd: int, name: bytes, parts: Tuple[bytes, ...], mode: int
                  ) -> Optional[Tuple[int, bool]]:
        """Open directory `name` of `parent_fd`, never through a symlink: made when missing; a symlink or
        other non-directory there is replaced (refused with --overwrite never). (fd, made by us), or None:
        refused."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd), False
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            if self.overwrite == "never":
                self._error(self._path(parts), "the target holds a symlink or file where the recovery point has a "
                                               "directory; not replaced (--overwrite never), nothing restored in it")
                return None
            os.unlink(name, dir_fd=parent_fd)  # the link itself, inside the target: not what it points to
        os.mkdir(name, mode, dir_fd=parent_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd), True

    def _open_beneath(self, parts: Tuple[bytes, ...]) -> int:
        """A new descriptor of directory `parts` of the target, opened one component at a time, never
        through a symlink."""
        fd = os.dup(self._root_fd)
        for part in parts:
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            finally:
                os.close(fd)
            fd = nxt
        return fd

    # ---- directories done: metadata, delete ---------------------------------------------------
    def _drain(self, keep: int) -> None:
        """Finish the restored directories whose files are done, in order (children before parents); past
        `keep` of them waiting, wait for the oldest."""
        while self._closing and (len(self._closing) > keep or all(f.done() for f in self._closing[0].pending)):
            d = self._closing[0]
            futures_wait(d.pending)
            self._closing.popleft()
            try:
                for f in d.pending:
                    f.result()  # a full target ends the restore here
                self._finish_dir(d)
            finally:
                os.close(d.fd)
            if len(self._to_verify) >= VERIFY_BATCH:
                self._verify_queued()

    def _finish_dir(self, d: _Dir) -> None:
        if d.names is not None:
            self._delete_extra(d)
        if d.meta is not None:
            path = self._path(d.parts)
            for w in fsmeta.apply_at(None, d.parts[-1], d.meta, fd=d.fd, owners=self.owners, label=path):
                self._warn(path, w)

    def _delete_extra(self, d: _Dir) -> None:
        """delete: remove what the recovery point does not hold here (rmtree by descriptors: it follows no
        symlink either)."""
        for entry in os.listdir(d.fd):
            name = os.fsencode(entry)
            if name in d.names:  # type: ignore[operator]
                continue
            path = self._path(d.parts + (name,))
            try:
                if st_mod.S_ISDIR(os.lstat(name, dir_fd=d.fd).st_mode):
                    shutil.rmtree(entry, dir_fd=d.fd)
                else:
                    os.unlink(name, dir_fd=d.fd)
                self.stats.deleted += 1
            except OSError as e:
                self._error(path, f"cannot delete: {e.strerror}")

    # ---- files --------------------------------------------------------------------------------
    def _add_file(self, t: _FileTask, run: List[_FileTask]) -> List[_FileTask]:
        """Add a file to the directory's current run (sent to the pool when full); the run left open."""
        m = t.meta
        if m.nlink > 1 and m.ino:
            first = _First(t.dir.parts + (t.name,))
            prior = self._links.see((m.dev, m.ino), m.nlink, first)
            if prior is not None:
                self._link(t, prior)
                return run
            t.first = first  # its run goes to the pool now, so that later names can wait for it
            run.append(t)
            self._submit(t.dir, run)
            return []
        run.append(t)
        if len(run) >= RUN_FILES:
            self._submit(t.dir, run)
            return []
        return run

    def _submit(self, d: _Dir, run: List[_FileTask]) -> None:
        if not run:
            return
        if len(self._to_verify) >= VERIFY_BATCH:  # (a huge directory: bounds the descriptors held for verify)
            self._verify_queued()
        self._slots.acquire()  # bounds the queued work, and so the memory, whatever the tree's size
        try:
            fut = self._pool.submit(self._restore_run, run)
        except BaseException:
            self._slots.release()
            raise
        fut.add_done_callback(lambda _f: self._slots.release())
        if len(d.pending) >= 64:  # a huge directory: keep only what is still running or failed
            d.pending = [f for f in d.pending if not f.done() or f.exception() is not None]
        d.pending.append(fut)
        for t in run:
            if t.first is not None:
                t.first.future = fut

    def _restore_run(self, run: List[_FileTask]) -> None:
        for t in run:
            if self._stop:
                return
            self._restore_file(t)

    def _keep_existing(self, dir_fd: int, name: bytes, meta: fsmeta.Meta, path: str) -> bool:
        """The overwrite rule for a file: True when what the target holds at `name` is kept."""
        try:
            st = os.lstat(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return False
        if self.overwrite == "always":
            return False
        if self.overwrite == "never":
            keep = True
        elif self.overwrite == "if-newer":
            keep = meta.mtime_ns <= st.st_mtime_ns
        else:  # if-changed: the same size and mtime, as a backup decides a file is unchanged
            keep = (st_mod.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_size == meta.size
                    and st.st_mtime_ns == meta.mtime_ns)
            if keep:  # kept, but its metadata is the recovery point's (through the opened file: no link)
                self._apply_kept(dir_fd, name, meta, st, path)
        if keep:
            self._count_skipped()
        return keep

    def _count_skipped(self) -> None:
        with self._lock:
            self.stats.skipped += 1

    def _apply_kept(self, dir_fd: int, name: bytes, meta: fsmeta.Meta, st: os.stat_result, path: str) -> None:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            if (os.fstat(fd).st_ino, os.fstat(fd).st_dev) == (st.st_ino, st.st_dev):
                for w in fsmeta.apply_at(dir_fd, name, meta, fd=fd, owners=self.owners, label=path):
                    self._warn(path, w)
        finally:
            os.close(fd)

    def _restore_file(self, t: _FileTask) -> None:
        path = self._path(t.dir.parts + (t.name,))
        try:
            if not t.dir.made and self._keep_existing(t.dir.fd, t.name, t.meta, path):
                if t.first is not None:
                    t.first.ok = True
                return
        except OSError as e:
            self._error(path, f"cannot compare with what the target holds: {e.strerror}")
            return
        tmp = _tmp_name(t.name)
        written = self._write_tmp(t, tmp, path)
        if written is None:
            return
        try:
            os.rename(tmp, t.name, src_dir_fd=t.dir.fd, dst_dir_fd=t.dir.fd)
        except OSError as e:
            _unlink_quietly(t.dir.fd, tmp)
            self._fail_on_full_disk(e, path)
            self._error(path, f"cannot replace what the target holds there: {e.strerror}")
            return
        if t.first is not None:
            t.first.ok = True
        with self._lock:
            self.stats.files += 1
            self.stats.bytes += written.nbytes
        if self.verify:
            self._queue_verify(t, path, written.inode)
        self.progress("file", {"path": path, "bytes": written.nbytes})

    def _queue_verify(self, t: _FileTask, path: str, inode: Tuple[int, int]) -> None:
        """Open the file just restored for verify to read back: from its directory's descriptor (paths may
        pass PATH_MAX), never through a symlink, and only if it is still the file written."""
        if t.node.image is not None:
            with self._lock:
                self.stats.verified += 1  # verified by restore_image, through the descriptor it wrote
            return
        try:
            fd = fsmeta.open_to_read(t.name, t.dir.fd)
        except OSError as e:
            why = "a symlink is there now, not the restored file" if e.errno == errno.ELOOP else e.strerror
            self._error(path, f"verify: cannot read back: {why}")
            return
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != inode:
            os.close(fd)
            self._error(path, "verify: cannot read back: another file is there now, not the restored file")
            return
        with self._lock:
            self._to_verify.append(_Readback(path, t.node.content or [], fd))

    def _write_tmp(self, t: _FileTask, tmp: bytes, path: str) -> Optional[_Written]:
        """Write the file's content and metadata to `tmp` in its directory. What was written, or None
        (reported) when it failed: `tmp` is then removed, never left looking like a complete file."""
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=t.dir.fd)
        except OSError as e:
            self._fail_on_full_disk(e, path)
            self._error(path, f"cannot create: {e.strerror}")
            return None
        try:
            written = self._write_content(fd, t, path)
            st = os.fstat(fd)
            warnings = fsmeta.apply_at(t.dir.fd, tmp, t.meta if t.meta.type == "f" else self._as_file(t),
                                       fd=fd, owners=self.owners, label=path)
        except TargetFull:
            _unlink_quietly(t.dir.fd, tmp)
            raise
        except (RecovaultError, OSError) as e:
            _unlink_quietly(t.dir.fd, tmp)
            self._file_failed(path, e)
            return None
        finally:
            os.close(fd)
        for w in warnings:
            self._warn(path, w)
        return _Written(written, (st.st_dev, st.st_ino))

    @staticmethod
    def _as_file(t: _FileTask) -> fsmeta.Meta:
        """A block device's image is restored as a regular file under the target."""
        return fsmeta.Meta.from_dict(dict(t.node.meta, t="f"))

    def _write_content(self, fd: int, t: _FileTask, path: str) -> int:
        if t.node.image is not None:
            from .jobs.image import restore_image
            try:
                # workers=0: the C++ engine on every core (its threads need no GIL, unlike the file pool's)
                st = restore_image(self.vault, t.node.image, path, verify=self.verify, workers=0, dest_fd=fd)
            except TargetFull:
                raise self._target_full(path) from None  # the same message as for files, with the count
            return st["bytes_written"]
        ids = [bytes.fromhex(h) for h in t.node.content or []]
        if len(ids) <= self.SEGMENT:
            offset = self._write_chunks(fd, ids, 0)
        else:  # a big file: its chunks are fetched, opened and written by all cores at once
            offset = self._write_big(fd, path, ids)
        fsmeta.finish_sparse(fd, offset)
        return offset

    def _file_failed(self, dest: str, e: "RecovaultError | OSError") -> None:
        """A file whose data could not be restored: vault-side (corrupt or missing data) or target-side."""
        if isinstance(e, RecovaultError):
            with self._lock:
                self.data_errors += 1
            self._error(dest, str(e))
        else:
            self._fail_on_full_disk(e, dest)
            self._error(dest, f"write failed: {e.strerror}")

    def _link(self, t: _FileTask, first: _First) -> None:
        """A later name of a hard-linked inode: linked to the first name once that is written (linkat
        from descriptors, no symlink followed), through a temporary name renamed over `t.name`."""
        path = self._path(t.dir.parts + (t.name,))
        if first.future is not None:
            futures_wait([first.future])
        if not first.ok:
            self._error(path, f"not restored: {self._path(first.parts)}, which it is a hard link of, was not")
            return
        try:
            if self.overwrite == "never" and self._exists(t.dir.fd, t.name):
                self._count_skipped()
                return
            src = self._open_beneath(first.parts[:-1])
            tmp = _tmp_name(t.name)
            try:
                os.link(first.parts[-1], tmp, src_dir_fd=src, dst_dir_fd=t.dir.fd, follow_symlinks=False)
            finally:
                os.close(src)
            try:
                os.rename(tmp, t.name, src_dir_fd=t.dir.fd, dst_dir_fd=t.dir.fd)
            finally:
                _unlink_quietly(t.dir.fd, tmp)  # rename leaves both names when they were one inode already
        except OSError as e:
            self._fail_on_full_disk(e, path)
            self._error(path, f"cannot create hard link: {e.strerror}")
            return
        with self._lock:
            self.stats.files += 1

    @staticmethod
    def _exists(dir_fd: int, name: bytes) -> bool:
        try:
            os.lstat(name, dir_fd=dir_fd)
            return True
        except FileNotFoundError:
            return False

    # ---- symlinks, fifos, devices ---------------------------------------------------------------
    def _restore_other(self, d: _Dir, name: bytes, meta: fsmeta.Meta) -> None:
        path = self._path(d.parts + (name,))
        try:
            st: Optional[os.stat_result] = os.lstat(name, dir_fd=d.fd)
        except FileNotFoundError:
            st = None
        if st is not None:
            if self.overwrite == "never" or (self.overwrite == "if-newer" and meta.mtime_ns <= st.st_mtime_ns):
                self._count_skipped()
                return
            same_link = (meta.type == "l" and st_mod.S_ISLNK(st.st_mode)
                         and os.readlink(name, dir_fd=d.fd) == meta.target)
            if not same_link:  # the same link (/bin -> usr/bin onto a merged-/usr system) is kept
                if st_mod.S_ISDIR(st.st_mode):
                    self._error(path, "a directory in the target where the recovery point has no directory; "
                                      "not replaced")
                    return
                os.unlink(name, dir_fd=d.fd)
                st = None
        if st is None:
            if meta.type == "l":
                os.symlink(meta.target or b"", name, dir_fd=d.fd)
            else:
                for w in fsmeta.create_special(name, meta, dir_fd=d.fd):
                    self._warn(path, w)
                if not self._exists(d.fd, name):
                    return
        for w in fsmeta.apply_at(d.fd, name, meta, owners=self.owners, label=path):
            self._warn(path, w)
        self.stats.others += 1

    # ---- content ------------------------------------------------------------------------------
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

    def _verify_queued(self) -> None:
        """Re-read what was written, through the descriptors opened as it was restored: chunk and hash each
        file as a backup would, compare chunk IDs. Each descriptor is closed once its file is read."""
        with self._lock:
            files, self._to_verify = self._to_verify, []
        if not files:
            return
        scratch = core.IdSet()
        pipe = self.vault.pipeline(compress="never", known=scratch)
        # Preload every id as known so nothing is sealed: verification only hashes.
        ids: List[List[str]] = [[] for _ in files]
        for f in files:
            for c in f.content:
                scratch.add(bytes.fromhex(c))
        open_fds = {f.fd for f in files}
        try:
            for batch in pipe.run([f.fd for f in files]):
                for kind, src, _off, _len, cid, payload in batch:
                    if kind == core.CHUNK:
                        ids[src].append(cid.hex())
                    elif kind == core.END:
                        f = files[src]
                        os.close(f.fd)
                        open_fds.discard(f.fd)
                        self._verified(f, ids[src], payload)
                        ids[src] = []
        finally:
            for fd in open_fds:
                os.close(fd)

    def _verified(self, f: _Readback, ids: List[str], error: Optional[str]) -> None:
        if error is not None:
            self._error(f.path, f"verify: cannot read back: {error}")
        elif ids != f.content:
            self._error(f.path, "verify: restored content differs from the recovery point")
        else:
            with self._lock:
                self.stats.verified += 1
