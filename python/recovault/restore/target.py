"""The restore's target directory: every call that creates, replaces, removes or changes an entry beneath it
(as restic's fileswriter.go owns the destination files). The walk (job.py) and the content writers
(files.py) reach the target only through this module, and only with the descriptors it opened.

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
entries of the target that the recovery point does not hold, only inside the restored subtrees (rmtree by
descriptors: it follows no symlink either).
"""
from __future__ import annotations

import errno
import itertools
import os
import resource
import secrets
import shutil
import stat as st_mod
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import List, Optional, Set, Tuple

from .. import fsmeta
from .report import Report

OVERWRITE_MODES = ("if-changed", "always", "if-newer", "never")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_TOKEN = secrets.token_hex(4).encode()  # this process's: two restores into one target never collide
_tmp_count = itertools.count()

Parts = Tuple[bytes, ...]


def _tmp_name(name: bytes) -> bytes:
    """A temporary name beside `name` (kept under NAME_MAX: 255 bytes): ``.NAME.recovault-TOKEN-N``."""
    return b".%s.recovault-%s-%d" % (name[:200], _TMP_TOKEN, next(_tmp_count))


def _unlink_quietly(dir_fd: int, name: bytes) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _raise_fd_limit() -> None:
    """Directories are held open along the current path (and up to job.MAX_OPEN_DIRS more): deep trees need
    more descriptors than the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def _exists(dir_fd: int, name: bytes) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
        return True
    except FileNotFoundError:
        return False


@dataclass
class Dir:
    """A directory of the target being restored, open as `fd`."""
    fd: int
    parts: Parts
    meta: Optional[fsmeta.Meta]  # None: only an ancestor of a selected path, whose metadata is not restored
    names: Optional[Set[bytes]]  # with delete: the names the recovery point holds here (None: delete nothing)
    made: bool = False  # made by this restore: nothing is in the way of its entries
    pending: List["Future[None]"] = field(default_factory=list)  # runs of its files still in the pool
    batched: int = 0  # its files in the restore's batch not yet flushed (restore/batch.py)


class Target:
    """The open target directory, and the overwrite and delete rules for what it already holds."""

    def __init__(self, path: str, overwrite: str, owners: bool, report: Report) -> None:
        self.path = path  # absolute
        self.overwrite = overwrite
        self.owners = owners
        self._report = report
        self._root_fd = -1

    def open(self, names: Optional[Set[bytes]]) -> Dir:
        """Open (or make) the target directory as given; its root as a Dir (`names`: as Dir.names)."""
        os.makedirs(self.path, exist_ok=True)
        _raise_fd_limit()
        self._root_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return Dir(os.dup(self._root_fd), (), None, names)

    def close(self) -> None:
        os.close(self._root_fd)

    def path_of(self, parts: Parts) -> str:
        return os.path.join(self.path, os.fsdecode(b"/".join(parts)))

    def apply_meta(self, dir_fd: Optional[int], name: bytes, meta: fsmeta.Meta, path: str,
                   fd: Optional[int] = None) -> None:
        """Apply `meta` through `fd`, or to `name` of `dir_fd` without following a symlink; what could not be
        applied is a warning."""
        for w in fsmeta.apply_at(dir_fd, name, meta, fd=fd, owners=self.owners, label=path):
            self._report.warn(path, w)

    # ---- directories ---------------------------------------------------------------------------
    def open_dir(self, parent: Dir, name: bytes, mode: int) -> Optional[Tuple[int, bool]]:
        """Open directory `name` of `parent`, never through a symlink: made when missing; a symlink or other
        non-directory there is replaced (refused with --overwrite never). (fd, made by us), or None: refused."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent.fd), False
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            if self.overwrite == "never":
                self._report.error(self.path_of(parent.parts + (name,)),
                                   "the target holds a symlink or file where the recovery point has a "
                                   "directory; not replaced (--overwrite never), nothing restored in it")
                return None
            os.unlink(name, dir_fd=parent.fd)  # the link itself, inside the target: not what it points to
        os.mkdir(name, mode, dir_fd=parent.fd)
        return os.open(name, _DIR_FLAGS, dir_fd=parent.fd), True

    def open_beneath(self, parts: Parts) -> int:
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

    def finish_dir(self, d: Dir) -> None:
        """A directory whose entries are all restored: delete what the point does not hold, apply its metadata."""
        if d.names is not None:
            self._delete_extra(d)
        if d.meta is not None:
            self.apply_meta(None, d.parts[-1], d.meta, self.path_of(d.parts), fd=d.fd)

    def _delete_extra(self, d: Dir) -> None:
        """delete: remove what the recovery point does not hold here (rmtree by descriptors)."""
        for entry in os.listdir(d.fd):
            name = os.fsencode(entry)
            if name in d.names:  # type: ignore[operator]
                continue
            try:
                if st_mod.S_ISDIR(os.lstat(name, dir_fd=d.fd).st_mode):
                    shutil.rmtree(entry, dir_fd=d.fd)
                else:
                    os.unlink(name, dir_fd=d.fd)
                self._report.stats.deleted += 1
            except OSError as e:
                self._report.error(self.path_of(d.parts + (name,)), f"cannot delete: {e.strerror}")

    # ---- files ---------------------------------------------------------------------------------
    def keep_file(self, d: Dir, name: bytes, meta: fsmeta.Meta, path: str) -> bool:
        """The overwrite rule for a file: True when what the target holds at `name` is kept."""
        try:
            st = os.lstat(name, dir_fd=d.fd)
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
                self._apply_kept(d.fd, name, meta, st, path)
        if keep:
            self._report.skipped()
        return keep

    def _apply_kept(self, dir_fd: int, name: bytes, meta: fsmeta.Meta, st: os.stat_result, path: str) -> None:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            if (os.fstat(fd).st_ino, os.fstat(fd).st_dev) == (st.st_ino, st.st_dev):
                self.apply_meta(dir_fd, name, meta, path, fd=fd)
        finally:
            os.close(fd)

    def create(self, d: Dir, name: bytes, path: str) -> Optional[Tuple[bytes, int]]:
        """A new temporary file beside `name`: (its name, a descriptor to write it), or None (reported)."""
        tmp = _tmp_name(name)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=d.fd)
        except OSError as e:
            self._report.fail_on_full_disk(e, path)
            self._report.error(path, f"cannot create: {e.strerror}")
            return None
        return tmp, fd

    @staticmethod
    def discard(d: Dir, tmp: bytes) -> None:
        """Remove a temporary file that could not be completed."""
        _unlink_quietly(d.fd, tmp)

    def replace(self, d: Dir, tmp: bytes, name: bytes, path: str) -> bool:
        """Rename the completed temporary file over `name`. False (reported, `tmp` removed) when it failed."""
        try:
            os.rename(tmp, name, src_dir_fd=d.fd, dst_dir_fd=d.fd)
        except OSError as e:
            _unlink_quietly(d.fd, tmp)
            self._report.fail_on_full_disk(e, path)
            self._report.error(path, f"cannot replace what the target holds there: {e.strerror}")
            return False
        return True

    def link(self, d: Dir, name: bytes, first: Parts, path: str) -> bool:
        """Make `name` a hard link of the restored file `first` (linkat from descriptors, no symlink
        followed), through a temporary name renamed over `name`. False: kept (--overwrite never) or failed
        (reported)."""
        try:
            if self.overwrite == "never" and _exists(d.fd, name):
                self._report.skipped()
                return False
            src = self.open_beneath(first[:-1])
            tmp = _tmp_name(name)
            try:
                os.link(first[-1], tmp, src_dir_fd=src, dst_dir_fd=d.fd, follow_symlinks=False)
            finally:
                os.close(src)
            try:
                os.rename(tmp, name, src_dir_fd=d.fd, dst_dir_fd=d.fd)
            finally:
                _unlink_quietly(d.fd, tmp)  # rename leaves both names when they were one inode already
        except OSError as e:
            self._report.fail_on_full_disk(e, path)
            self._report.error(path, f"cannot create hard link: {e.strerror}")
            return False
        return True

    # ---- symlinks, fifos, devices --------------------------------------------------------------
    def make_other(self, d: Dir, name: bytes, meta: fsmeta.Meta) -> None:
        """Restore a symlink, fifo or device node (the same link already there is kept)."""
        path = self.path_of(d.parts + (name,))
        try:
            st: Optional[os.stat_result] = os.lstat(name, dir_fd=d.fd)
        except FileNotFoundError:
            st = None
        if st is not None:
            if self.overwrite == "never" or (self.overwrite == "if-newer" and meta.mtime_ns <= st.st_mtime_ns):
                self._report.skipped()
                return
            same_link = (meta.type == "l" and st_mod.S_ISLNK(st.st_mode)
                         and os.readlink(name, dir_fd=d.fd) == meta.target)
            if not same_link:  # the same link (/bin -> usr/bin onto a merged-/usr system) is kept
                if st_mod.S_ISDIR(st.st_mode):
                    self._report.error(path, "a directory in the target where the recovery point has no "
                                             "directory; not replaced")
                    return
                os.unlink(name, dir_fd=d.fd)
                st = None
        if st is None:
            if meta.type == "l":
                os.symlink(meta.target or b"", name, dir_fd=d.fd)
            else:
                for w in fsmeta.create_special(name, meta, dir_fd=d.fd):
                    self._report.warn(path, w)
                if not _exists(d.fd, name):
                    return
        self.apply_meta(d.fd, name, meta, path)
        self._report.stats.others += 1
