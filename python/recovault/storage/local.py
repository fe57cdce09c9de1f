"""A vault in a local (or locally mounted) directory.

Each object is one file at ``<root>/<name>``. Writes go to ``.tmp-*`` files in the
destination directory, are fsynced and then renamed into place, and the directory is
fsynced, so a crash leaves either the old object or the complete new one.

A destination directory with the append-only attribute (``chattr +a``: entries can be added, never removed or
replaced, not even by root) cannot have a temp file renamed out of it: there the temp file is written in
``<root>/.tmp-staging/`` and renamed into place from it. Replacing an existing object and deleting one are
then refused by the file system (``AccessDenied``): the create-only storage of docs/vault-format.md §10.2.
"""
from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat as stat_mod
import struct
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from ..errors import AccessDenied, NoSpace, ObjectMissing, StorageError, VaultNotFound
from .base import (
    MAX_NAME_LENGTH,
    RESERVED_PREFIX,
    ObjectInfo,
    Storage,
    stream_pieces,
    validate_name,
    validate_prefix,
)

__all__ = ["LocalStorage"]

FILE_MODE = 0o600  # objects are encrypted, but sizes and key files are nobody else's business
DIR_MODE = 0o700
_MAX_PREAD = 1 << 30  # bytes per os.pread call (Linux caps one read at ~2 GiB anyway)
_MISSING_ERRNOS = (errno.ENOENT, errno.ENOTDIR)
_FS_IOC_GETFLAGS = 0x80086601  # Linux: a file's attribute flags (lsattr)
_FS_APPEND_FL = 0x20  # chattr +a
#: Where temp files are written for an append-only destination directory (never listed: RESERVED_PREFIX).
STAGING = RESERVED_PREFIX + "staging"


def append_only(directory: Union[str, Path]) -> bool:
    """Whether ``directory`` has the append-only attribute (False where the file system does not say)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        flags = struct.unpack_from("<i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, bytes(8)))[0]
    except OSError:
        return False
    finally:
        os.close(fd)
    return bool(flags & _FS_APPEND_FL)


def _fsync_dir(path: Union[str, Path]) -> None:
    """fsync a directory so a rename/creation in it is durable (ignored where unsupported)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


class _Exists(Exception):
    """put_if_absent found the name taken."""


def _view(data: Union[bytes, bytearray, memoryview]) -> memoryview:
    """``data`` as one contiguous byte view (no copy unless it is not contiguous)."""
    view = memoryview(data)
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    return view.cast("B")


class LocalStorage(Storage):
    """Objects stored as files under ``root``.

    ``create=True`` creates ``root`` (and missing parents) if needed; otherwise a missing
    root raises ``VaultNotFound``. Reading (get/list/stat/exists) works on read-only trees.
    New files are created mode 0600 and new directories 0700.
    """

    def __init__(self, root: Union[str, "os.PathLike[str]"], create: bool = False) -> None:
        self._fds: Dict[str, Tuple[int, int]] = {}
        self._retired: List[int] = []  # descriptors of cached packs put again or deleted: closed at close()
        self._fd_lock = threading.Lock()
        self._append_only: Dict[Path, bool] = {}  # per destination directory, asked once
        self.root = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
        if create:
            self._create_root()
        try:
            st = os.stat(self.root)
        except OSError as exc:
            if exc.errno in _MISSING_ERRNOS:
                raise VaultNotFound(f"no vault at {self.root}") from exc
            raise self._error(exc, "open vault directory", "", self.root) from exc
        if not stat_mod.S_ISDIR(st.st_mode):
            raise VaultNotFound(f"no vault at {self.root}: not a directory")

    # -- helpers -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def __str__(self) -> str:
        return str(self.root)

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*validate_name(name).split("/"))

    def _error(self, exc: OSError, action: str, name: str, path: Path) -> StorageError:
        """Turn an OSError into a StorageError with an operator-ready message."""
        code = exc.errno
        if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            what = "no space left on device" if code == errno.ENOSPC else "disk quota exceeded"
            if name:
                return NoSpace(f"{what} while writing {name} to {self.root}")
            return NoSpace(f"{what}: cannot {action} {path}")
        if code in (errno.EACCES, errno.EPERM):
            where = exc.filename if exc.filename is not None else path
            if code == errno.EPERM and self._is_append_only(path.parent):
                return AccessDenied(f"not permitted: {path.parent} is append-only (chattr +a): cannot {action} "
                                    f"{path}")
            if os.path.basename(os.fspath(where)).startswith(RESERVED_PREFIX):  # our temp file
                return StorageError(f"permission denied: cannot {action} {path} (directory {path.parent})")
            return StorageError(f"permission denied: cannot {action} {where}")
        if code == errno.EROFS:
            return StorageError(f"read-only file system: cannot {action} {path}")
        reason = exc.strerror or str(exc)
        return StorageError(f"cannot {action} {path}: {reason}")

    def _missing(self, name: str) -> ObjectMissing:
        return ObjectMissing(f"object {name} is missing from {self.root}")

    def _create_root(self) -> None:
        missing: List[Path] = []
        p = self.root
        try:
            while not p.exists() and p != p.parent:
                missing.append(p)
                p = p.parent
            for d in reversed(missing):
                try:
                    os.mkdir(d, DIR_MODE)
                except FileExistsError:
                    continue
                _fsync_dir(d.parent)
        except OSError as exc:
            raise self._error(exc, "create vault directory", "", self.root) from exc

    def _ensure_dir(self, directory: Path) -> None:
        """Create ``directory`` (inside root) and missing parents, fsyncing each new entry."""
        if directory.is_dir():
            return
        rel = directory.relative_to(self.root).parts
        current = self.root
        for part in rel:
            parent, current = current, current / part
            try:
                os.mkdir(current, DIR_MODE)
            except FileExistsError:
                continue  # a concurrent writer made it, or it is a file: open() will tell
            _fsync_dir(parent)

    def _is_append_only(self, directory: Path) -> bool:
        known = self._append_only.get(directory)
        if known is None:
            known = self._append_only[directory] = append_only(directory)
        return known

    def _temp_dir(self, directory: Path) -> Path:
        """Where a temp file for an object in ``directory`` is written: beside it, or in the staging
        directory when ``directory`` is append-only (a temp file could never be renamed out of it)."""
        if not self._is_append_only(directory):
            return directory
        staging = self.root / STAGING
        if not staging.is_dir():
            try:
                os.mkdir(staging, DIR_MODE)
            except FileExistsError:
                pass
        return staging

    # -- the Storage interface -----------------------------------------------------------

    #: put_stream writes the stream's pieces as it reads them (a rate-limited put is paced, not a burst).
    streams_puts = True

    def put(self, name: str, data: Union[bytes, bytearray, memoryview]) -> None:
        """Write ``data`` to ``name`` atomically (temp file, fsync, rename, fsync dir)."""
        self._commit(name, [_view(data)], os.replace)
        self._retire(name)

    def _retire(self, name: str) -> None:
        """Stop reading ``name`` through a cached descriptor (it was put again, or deleted): later reads open
        the new file. The old descriptor stays open until close() (a concurrent pread may still use it)."""
        with self._fd_lock:
            hit = self._fds.pop(name, None)
            if hit is not None:
                self._retired.append(hit[0])

    def put_if_absent(self, name: str, data: Union[bytes, bytearray, memoryview]) -> bool:
        """Create ``name`` only if it does not exist: the complete, fsynced temp file is hard-linked to the
        name (``link`` fails with EEXIST rather than replace), so readers never see a partial object and an
        existing one is never touched. On a file system without hard links (FAT, exFAT, some network file
        systems) the temp file is renamed into place after an existence check: still atomic for readers,
        but two writers racing there can both win (the docs say so)."""
        def link(tmp: Path, path: Path) -> None:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise _Exists from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                    raise
                if os.path.lexists(path):
                    raise _Exists from None
                os.replace(tmp, path)

        try:
            self._commit(name, [_view(data)], link)
        except _Exists:
            return False
        return True

    def put_stream(self, name: str, stream: BinaryIO, size: int) -> None:
        """Write the ``size`` bytes read from ``stream`` to ``name`` atomically, piece by piece as read."""
        self._commit(name, stream_pieces(name, stream, size), os.replace)
        self._retire(name)

    def _commit(self, name: str, pieces: Iterable[memoryview], place: Callable[[Path, Path], None]) -> None:
        """Write ``pieces`` to a fsynced temp file beside ``name``, ``place(tmp, path)`` it, fsync the
        directory; the temp file is removed whatever happens."""
        path = self._path(name)
        tmp: Optional[Path] = None
        fd = -1
        try:
            self._ensure_dir(path.parent)
            where = self._temp_dir(path.parent)
            while True:
                tmp = where / f"{RESERVED_PREFIX}{secrets.token_hex(8)}"
                try:
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
                    break
                except FileExistsError:
                    continue
            for view in pieces:
                written = 0
                while written < view.nbytes:
                    written += os.write(fd, view[written:])
            os.fsync(fd)
            os.close(fd)
            fd = -1
            place(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise self._error(exc, "write", name, path) from exc
        finally:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def _open_regular(self, name: str) -> Tuple[int, os.stat_result]:
        path = self._path(name)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            if exc.errno in _MISSING_ERRNOS:
                raise self._missing(name) from exc
            raise self._error(exc, "read", name, path) from exc
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise self._error(exc, "read", name, path) from exc
        if not stat_mod.S_ISREG(st.st_mode):
            os.close(fd)
            raise self._missing(name)
        return fd, st

    # Packs (data/...) are immutable once written, so ranged reads of them keep their descriptors open:
    # a restore reads thousands of small blobs, and open+fstat+close per blob cost more than the read.
    # Descriptors are never closed while the storage is in use (a concurrent pread could otherwise hit a
    # reused descriptor number); past _FD_CACHE_MAX packs, reads fall back to open/close.
    _FD_CACHE_MAX = 256

    def _pack_fd(self, name: str) -> Optional[Tuple[int, int]]:
        with self._fd_lock:
            hit = self._fds.get(name)
            if hit is not None or len(self._fds) >= self._FD_CACHE_MAX:
                return hit
        fd, st = self._open_regular(name)
        with self._fd_lock:
            if name in self._fds or len(self._fds) >= self._FD_CACHE_MAX:
                os.close(fd)
                return self._fds.get(name)
            self._fds[name] = (fd, st.st_size)
            return fd, st.st_size

    def local_path(self, name: str) -> Optional[str]:
        """``<root>/<name>``: objects are plain files (validated name; existence is not checked)."""
        return str(self._path(name))

    def close(self) -> None:
        with self._fd_lock:
            fds, self._fds = [fd for fd, _ in self._fds.values()] + self._retired, {}
            self._retired = []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def get(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        """Read a byte range with ``os.pread``; see :meth:`Storage.get` for range semantics."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if length is not None and length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        cached = self._pack_fd(name) if length is not None and name.startswith("data/") else None
        if cached is not None:
            fd, size = cached
            end = min(size, offset + length)
            try:
                data = os.pread(fd, max(0, end - offset), offset) if end - offset <= _MAX_PREAD else None
            except OSError as exc:
                raise self._error(exc, "read", name, self._path(name)) from exc
            if data is not None and len(data) == max(0, end - offset):
                return data
        fd, st = self._open_regular(name)
        try:
            end = st.st_size if length is None else min(st.st_size, offset + length)
            want = max(0, end - offset)
            chunks: List[bytes] = []
            pos = offset
            while want > 0:
                chunk = os.pread(fd, min(want, _MAX_PREAD), pos)
                if not chunk:  # the file shrank under us (it is being replaced): return what exists
                    break
                chunks.append(chunk)
                pos += len(chunk)
                want -= len(chunk)
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        except OSError as exc:
            raise self._error(exc, "read", name, self._path(name)) from exc
        finally:
            os.close(fd)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield names starting with ``prefix`` in lexicographic order, skipping ``.tmp-*`` files
        and anything that is not a valid object name."""
        for name, _ in self._scan(prefix):
            yield name

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """:meth:`list` with sizes and mtimes, from the directory scan's own ``stat`` of each entry (one
        call per object, no second lookup by path); an object deleted meanwhile is skipped."""
        for name, entry in self._scan(prefix):
            try:
                st = entry.stat()
            except OSError:
                continue
            yield ObjectInfo(name=name, size=st.st_size, mtime=st.st_mtime)

    def _scan(self, prefix: str) -> Iterator[Tuple[str, "os.DirEntry[str]"]]:
        validate_prefix(prefix)
        base_rel = prefix[: prefix.rfind("/") + 1]  # "" or "a/b/"
        base = self.root.joinpath(*base_rel.split("/")[:-1]) if base_rel else self.root
        yield from self._walk(base, base_rel, prefix)

    def _walk(self, directory: Path, rel: str, prefix: str) -> Iterator[Tuple[str, "os.DirEntry[str]"]]:
        try:
            with os.scandir(directory) as it:
                entries = []
                for entry in it:
                    if entry.name.startswith(RESERVED_PREFIX):
                        continue
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        continue
                    # Sorting "dir/" keeps full names in exact lexicographic order ("a-b" < "a/x").
                    entries.append((entry.name + ("/" if is_dir else ""), entry, is_dir))
        except OSError as exc:
            if exc.errno in _MISSING_ERRNOS or (rel and exc.errno == errno.ELOOP):
                return
            raise self._error(exc, "list", "", directory) from exc
        entries.sort(key=lambda e: e[0])
        for key, entry, is_dir in entries:
            full = rel + key
            if len(full) > MAX_NAME_LENGTH + 1:
                continue
            if is_dir:
                # Descend only into valid name segments ("lost+found" is not) that may match.
                if full.startswith(prefix) or prefix.startswith(full):
                    try:
                        validate_prefix(full)
                    except ValueError:
                        continue
                    yield from self._walk(Path(entry.path), full, prefix)
                continue
            if not full.startswith(prefix):
                continue
            try:
                validate_name(full)
            except ValueError:
                continue  # foreign file ("lost+found", editor backups...): not an object
            try:
                if not entry.is_file():
                    continue
            except OSError:
                continue
            yield full, entry

    def stat(self, name: str) -> ObjectInfo:
        path = self._path(name)
        try:
            st = os.stat(path)
        except OSError as exc:
            if exc.errno in _MISSING_ERRNOS:
                raise self._missing(name) from exc
            raise self._error(exc, "stat", name, path) from exc
        if not stat_mod.S_ISREG(st.st_mode):
            raise self._missing(name)
        return ObjectInfo(name=name, size=st.st_size, mtime=st.st_mtime)

    def delete(self, name: str) -> None:
        """Unlink ``name`` and fsync its directory; a missing object is fine."""
        path = self._path(name)
        self._retire(name)
        try:
            if not path.is_file():  # missing, or a directory (not an object)
                return
            os.unlink(path)
        except OSError as exc:
            if exc.errno in _MISSING_ERRNOS:
                return
            raise self._error(exc, "delete", name, path) from exc
        try:
            _fsync_dir(path.parent)
        except OSError as exc:
            raise self._error(exc, "delete", name, path) from exc
