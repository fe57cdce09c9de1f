"""Capture and restore POSIX file metadata, create special files, and handle sparse files.

``Meta`` is what a backup records about one file-system object besides its contents.
``Meta.to_dict()`` gives a compact JSON-able dict with short keys; keys whose value is
the default are omitted, and ``Meta.from_dict()`` fills them back in:

====  ==========================================================  ==========
key   meaning                                                     default
====  ==========================================================  ==========
t     type: f file, d dir, l symlink, c chardev, b blockdev,      (always)
      p fifo, s socket
m     permission bits incl. setuid/setgid/sticky (``S_IMODE``)     0
u, g  numeric uid, gid                                            0
un    user name of ``u`` on the backed-up host                    absent
gn    group name of ``g``                                         absent
mt    mtime in ns since the epoch                                 0
at    atime in ns (backups omit it: it changes on every read)     0
ct    ctime in ns (informational, never restored)                 0
sz    size in bytes (regular files only)                          0
lt    symlink target (a *name*, see below)                        absent
rd    [major, minor] (character and block devices only)           absent
x     extended attributes: {name: base64(value)}, including       {}
      ``system.posix_acl_access`` / ``system.posix_acl_default``
ino   inode number    (change / hard-link detection; not          0
dev   st_dev           restored)                                  0
nl    link count (non-directories; directories record 1)          1
sp    true when st_blocks*512 < size: the file may be sparse      false
====  ==========================================================  ==========

Names (file names, symlink targets) are arbitrary bytes on Linux. In JSON a name is a
``str`` when its bytes are valid UTF-8, else ``{"b64": base64(bytes)}``; see
``encode_name`` / ``decode_name``. An extended-attribute name that is not valid UTF-8
is keyed as ``"b64:" + base64(name)`` (real names always start with a namespace such as
``user.``, so this cannot collide). In Python, paths and xattr names are ``str`` decoded
with ``surrogateescape`` (the ``os`` module's convention) and symlink targets are ``bytes``.
"""
from __future__ import annotations

import base64
import binascii
import errno
import functools
import grp
import os
import pwd
import stat
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from .errors import CorruptData

__all__ = [
    "Meta",
    "capture",
    "apply",
    "apply_at",
    "create_special",
    "read_xattrs",
    "encode_name",
    "decode_name",
    "data_extents",
    "pwrite_all",
    "write_sparse",
    "finish_sparse",
    "SPARSE_BLOCK",
]

PathT = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

_TYPES = {
    stat.S_IFREG: "f",
    stat.S_IFDIR: "d",
    stat.S_IFLNK: "l",
    stat.S_IFCHR: "c",
    stat.S_IFBLK: "b",
    stat.S_IFIFO: "p",
    stat.S_IFSOCK: "s",
}
_NOTSUP = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP})
_XATTR_B64_PREFIX = "b64:"


# ---------------------------------------------------------------- names


def encode_name(name: Union[str, bytes]) -> Union[str, Dict[str, str]]:
    """JSON form of a file name or link target: ``str`` if valid UTF-8, else ``{"b64": ...}``.

    A ``str`` argument is first turned back into bytes with ``os.fsencode`` (surrogateescape).
    """
    raw = os.fsencode(name) if isinstance(name, str) else bytes(name)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(raw).decode("ascii")}


def decode_name(obj: Union[str, Dict[str, str]]) -> bytes:
    """Inverse of ``encode_name``: the name's raw bytes. Raises ``CorruptData`` if malformed."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "surrogateescape")
    if isinstance(obj, dict) and set(obj) == {"b64"} and isinstance(obj["b64"], str):
        try:
            return base64.b64decode(obj["b64"], validate=True)
        except (binascii.Error, ValueError):
            pass
    raise CorruptData(f"malformed name in metadata: {obj!r}")


def _xattr_key(name: str) -> str:
    raw = os.fsencode(name)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _XATTR_B64_PREFIX + base64.b64encode(raw).decode("ascii")


def _xattr_name(key: str) -> str:
    if key.startswith(_XATTR_B64_PREFIX):
        return os.fsdecode(base64.b64decode(key[len(_XATTR_B64_PREFIX):], validate=True))
    return key


# ---------------------------------------------------------------- user / group lookups (cached)


def _valid_utf8(name: str) -> Optional[str]:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes: not representable in JSON
        return None
    return name


@functools.lru_cache(maxsize=4096)
def _user_name(uid: int) -> Optional[str]:
    try:
        return _valid_utf8(pwd.getpwuid(uid).pw_name)
    except (KeyError, OverflowError):
        return None


@functools.lru_cache(maxsize=4096)
def _group_name(gid: int) -> Optional[str]:
    try:
        return _valid_utf8(grp.getgrgid(gid).gr_name)
    except (KeyError, OverflowError):
        return None


@functools.lru_cache(maxsize=4096)
def _uid_of(name: str) -> Optional[int]:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


@functools.lru_cache(maxsize=4096)
def _gid_of(name: str) -> Optional[int]:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


# ---------------------------------------------------------------- Meta


@dataclass
class Meta:
    """POSIX metadata of one file-system object (see the module docstring for the dict schema)."""

    type: str
    mode: int = 0
    uid: int = 0
    gid: int = 0
    user: Optional[str] = None
    group: Optional[str] = None
    mtime_ns: int = 0
    atime_ns: int = 0
    ctime_ns: int = 0
    size: int = 0
    target: Optional[bytes] = None
    rdev: Optional[Tuple[int, int]] = None
    xattrs: Dict[str, bytes] = field(default_factory=dict)
    ino: int = 0
    dev: int = 0
    nlink: int = 1
    sparse: bool = False

    def to_dict(self) -> Dict[str, Any]:
        """Compact JSON-able dict; default values are omitted."""
        d: Dict[str, Any] = {"t": self.type}
        for key, value, default in (
            ("m", self.mode, 0),
            ("u", self.uid, 0),
            ("g", self.gid, 0),
            ("un", self.user, None),
            ("gn", self.group, None),
            ("mt", self.mtime_ns, 0),
            ("at", self.atime_ns, 0),
            ("ct", self.ctime_ns, 0),
            ("sz", self.size, 0),
            ("ino", self.ino, 0),
            ("dev", self.dev, 0),
            ("nl", self.nlink, 1),
        ):
            if value != default:
                d[key] = value
        if self.target is not None:
            d["lt"] = encode_name(self.target)
        if self.rdev is not None:
            d["rd"] = [self.rdev[0], self.rdev[1]]
        if self.xattrs:
            d["x"] = {
                _xattr_key(k): base64.b64encode(v).decode("ascii") for k, v in sorted(self.xattrs.items())
            }
        if self.sparse:
            d["sp"] = True
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Meta":
        """Inverse of ``to_dict``. Raises ``CorruptData`` on a malformed dict."""
        try:
            t = d["t"]
            if t not in _TYPES.values():
                raise ValueError(f"unknown type {t!r}")
            ints = {}
            for key, attr, default in (
                ("m", "mode", 0),
                ("u", "uid", 0),
                ("g", "gid", 0),
                ("mt", "mtime_ns", 0),
                ("at", "atime_ns", 0),
                ("ct", "ctime_ns", 0),
                ("sz", "size", 0),
                ("ino", "ino", 0),
                ("dev", "dev", 0),
                ("nl", "nlink", 1),
            ):
                v = d.get(key, default)
                if type(v) is not int:
                    raise ValueError(f"{key} is not an integer")
                ints[attr] = v
            names = {}
            for key, attr in (("un", "user"), ("gn", "group")):
                v = d.get(key)
                if v is not None and not isinstance(v, str):
                    raise ValueError(f"{key} is not a string")
                names[attr] = v
            target = decode_name(d["lt"]) if "lt" in d else None
            rdev = None
            if "rd" in d:
                major, minor = d["rd"]
                if type(major) is not int or type(minor) is not int:
                    raise ValueError("rd is not two integers")
                rdev = (major, minor)
            xattrs = {
                _xattr_name(k): base64.b64decode(v, validate=True) for k, v in d.get("x", {}).items()
            }
            sparse = d.get("sp", False)
            if not isinstance(sparse, bool):
                raise ValueError("sp is not a boolean")
        except CorruptData:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as e:
            raise CorruptData(f"malformed file metadata {d!r}: {e}") from None
        return cls(type=t, target=target, rdev=rdev, xattrs=xattrs, sparse=sparse, **ints, **names)


# ---------------------------------------------------------------- capture


def read_xattrs(path: PathT, dir_fd: Optional[int] = None) -> Dict[str, bytes]:
    """All extended attributes of ``path`` (not following symlinks); ``{}`` where unsupported.
    With ``dir_fd``, ``path`` is a name in that directory (the xattr calls have no ``dir_fd`` form: the
    name is reached through ``/proc/self/fd``, so the length of the full path does not matter).

    Raises ``OSError`` for other failures (e.g. the file vanished, EACCES).
    """
    if dir_fd is not None:
        path = _at_path(dir_fd, os.fsencode(path))
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in _NOTSUP:
            return {}
        raise
    out: Dict[str, bytes] = {}
    for name in sorted(names):
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.ENODATA or e.errno in _NOTSUP:  # removed since listing
                continue
            raise
    return out


def capture(path: PathT, st: Optional[os.stat_result] = None, *, xattrs: bool = True,
            dir_fd: Optional[int] = None) -> Meta:
    """Metadata of ``path`` (never following symlinks). ``st`` is its ``lstat`` if already known. With
    ``dir_fd``, ``path`` is relative to that directory (as in ``os``), which works at any depth.

    Raises ``OSError`` if the object cannot be stat'ed, its link read or its xattrs read,
    and ``ValueError`` for an unknown file type.
    """
    if st is None:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    fmt = stat.S_IFMT(st.st_mode)
    try:
        t = _TYPES[fmt]
    except KeyError:
        raise ValueError(f"{os.fsdecode(path)!r}: unsupported file type {fmt:o}") from None
    m = Meta(
        type=t,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        user=_user_name(st.st_uid),
        group=_group_name(st.st_gid),
        mtime_ns=st.st_mtime_ns,
        atime_ns=st.st_atime_ns,
        ctime_ns=st.st_ctime_ns,
        ino=st.st_ino,
        dev=st.st_dev,
        nlink=1 if t == "d" else st.st_nlink,
    )
    if t == "f":
        m.size = st.st_size
        m.sparse = st.st_blocks * 512 < st.st_size
    elif t == "l":
        m.target = os.readlink(os.fsencode(path), dir_fd=dir_fd)
    elif t in ("c", "b"):
        m.rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
    if xattrs:
        m.xattrs = read_xattrs(path, dir_fd)
    return m


# ---------------------------------------------------------------- apply


def _owner_ids(meta: Meta, numeric_ids: bool) -> Tuple[int, int]:
    uid, gid = meta.uid, meta.gid
    if not numeric_ids:
        if meta.user is not None:
            u = _uid_of(meta.user)
            if u is not None:
                uid = u
        if meta.group is not None:
            g = _gid_of(meta.group)
            if g is not None:
                gid = g
    return uid, gid


def _warn(warnings: List[str], path: PathT, what: str, e: OSError) -> None:
    if e.errno == errno.ENOENT:
        raise e
    warnings.append(f"{os.fsdecode(path)}: cannot {what}: {e.strerror or e}")


def apply(
    path: PathT,
    meta: Meta,
    *,
    owners: bool,
    xattrs: bool = True,
    times: bool = True,
    numeric_ids: bool = False,
) -> List[str]:
    """Restore ``meta`` onto the existing object at ``path`` (never following a symlink at ``path``; the
    directories on the way to it are the caller's). A restore uses ``apply_at``, which follows none.

    Returns warning strings for non-fatal failures; raises ``FileNotFoundError`` only if ``path`` does not
    exist. See ``apply_at``.
    """
    return apply_at(None, os.fsencode(path), meta, owners=owners, xattrs=xattrs, times=times,
                    numeric_ids=numeric_ids)


def apply_at(
    dir_fd: Optional[int],
    name: bytes,
    meta: Meta,
    *,
    fd: Optional[int] = None,
    owners: bool,
    xattrs: bool = True,
    times: bool = True,
    numeric_ids: bool = False,
    label: Optional[str] = None,
) -> List[str]:
    """Restore ``meta`` onto the object ``name`` in the directory open as ``dir_fd``, or, when ``fd`` is
    given, onto the object open as ``fd``. ``label`` names it in warnings (default: ``name``). No call follows a
    symlink: by descriptor (fchown, fchmod, fsetxattr, futimens), or by name with ``AT_SYMLINK_NOFOLLOW``
    (xattrs by name go through ``/proc/self/fd/DIR_FD/NAME``, since ``setxattr`` has no ``dir_fd``).

    Order: owner (only if ``owners``; by name when the name exists on this host unless
    ``numeric_ids``), mode (not for symlinks; after chown, which clears setuid), xattrs
    (added/overwritten, existing extra ones are left alone), then atime/mtime last.
    Directories' times must be applied after their children are restored (caller's job).

    Returns warning strings for non-fatal failures (EPERM, unsupported xattrs, ...);
    raises ``FileNotFoundError`` only if the object does not exist.
    """
    warnings: List[str] = []
    shown = name if label is None else label
    by_name = {"dir_fd": dir_fd, "follow_symlinks": False}
    if owners:
        uid, gid = _owner_ids(meta, numeric_ids)
        try:
            os.chown(fd, uid, gid) if fd is not None else os.chown(name, uid, gid, **by_name)
        except OSError as e:
            _warn(warnings, shown, f"set owner {uid}:{gid}", e)
    if meta.type != "l":
        try:
            _chmod_at(dir_fd, name, fd, meta.mode)
        except OSError as e:
            _warn(warnings, shown, f"set mode {meta.mode:04o}", e)
    if xattrs and meta.xattrs:
        target = fd if fd is not None else _at_path(dir_fd, name)
        nofollow = {} if fd is not None else {"follow_symlinks": False}
        for key, value in meta.xattrs.items():
            try:
                os.setxattr(target, key, value, **nofollow)
            except OSError as e:
                _warn(warnings, shown, f"set extended attribute {key!r}", e)
    if times:
        ns = (meta.atime_ns or meta.mtime_ns, meta.mtime_ns)
        try:
            os.utime(fd, ns=ns) if fd is not None else os.utime(name, ns=ns, **by_name)
        except OSError as e:
            _warn(warnings, shown, "set times", e)
    return warnings


def _at_path(dir_fd: Optional[int], name: bytes) -> bytes:
    """A path for ``name`` in ``dir_fd`` usable by calls that take no ``dir_fd``: the directory by its
    descriptor's /proc name, so that no component on the way is looked up (or followed) again."""
    return name if dir_fd is None else b"/proc/self/fd/%d/%s" % (dir_fd, name)


def _chmod_at(dir_fd: Optional[int], name: bytes, fd: Optional[int], mode: int) -> None:
    if fd is not None:
        os.chmod(fd, mode)
        return
    try:
        os.chmod(name, mode, dir_fd=dir_fd, follow_symlinks=False)
    except (NotImplementedError, ValueError):  # a libc without fchmodat(AT_SYMLINK_NOFOLLOW)
        opath = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            if stat.S_ISLNK(os.fstat(opath).st_mode):
                return
            os.chmod(b"/proc/self/fd/%d" % opath, mode)  # the inode opened, not a name looked up again
        finally:
            os.close(opath)


def create_special(path: PathT, meta: Meta, *, dir_fd: Optional[int] = None) -> List[str]:
    """Create the fifo or device node ``meta`` describes at ``path`` (which must not exist).

    Sockets are not created (a socket is only meaningful to a listening process) and
    device nodes need CAP_MKNOD: both yield a warning and create nothing. Call ``apply``
    afterwards for mode, owner and times. Raises ``ValueError`` for other types and
    ``OSError`` for other failures (e.g. ``FileExistsError``). ``dir_fd``: ``path`` is relative to it.
    """
    perm = meta.mode & 0o777
    if meta.type == "p":
        os.mkfifo(path, perm, dir_fd=dir_fd)
        return []
    if meta.type in ("c", "b"):
        if meta.rdev is None:
            raise ValueError(f"{os.fsdecode(path)!r}: device metadata has no rdev")
        kind = stat.S_IFCHR if meta.type == "c" else stat.S_IFBLK
        try:
            os.mknod(path, kind | perm, os.makedev(*meta.rdev), dir_fd=dir_fd)
        except PermissionError as e:
            return [f"{os.fsdecode(path)}: cannot create device node: {e.strerror}"]
        return []
    if meta.type == "s":
        return [f"{os.fsdecode(path)}: socket not restored"]
    raise ValueError(f"{os.fsdecode(path)!r}: create_special cannot create type {meta.type!r}")


# ---------------------------------------------------------------- sparse files

#: Granularity of hole detection when writing: aligned all-zero blocks of this size are skipped.
SPARSE_BLOCK = 4096
_ZERO_BLOCK = bytes(SPARSE_BLOCK)


def open_to_read(name: PathT, dir_fd: Optional[int]) -> int:
    """Open a regular file to read, relative to its directory's descriptor, never through a symlink (nor
    blocking on a fifo swapped in since it was seen), without touching its atime where allowed (as the
    pipeline does)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags | os.O_NOATIME, dir_fd=dir_fd)
    except PermissionError:  # O_NOATIME needs ownership or CAP_FOWNER
        fd = os.open(name, flags, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "no longer a regular file", name)
    return fd


def data_extents(fd: int, size: int) -> List[Tuple[int, int]]:
    """(offset, length) of the data regions of the first ``size`` bytes of open file ``fd``.

    Uses SEEK_DATA/SEEK_HOLE; where unsupported the whole file is one extent. The file
    position is restored. Holes are the gaps (a file of only holes gives ``[]``).
    """
    if size <= 0:
        return []
    seek_data = getattr(os, "SEEK_DATA", None)
    seek_hole = getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None:
        return [(0, size)]
    saved = os.lseek(fd, 0, os.SEEK_CUR)
    extents: List[Tuple[int, int]] = []
    try:
        off = 0
        while off < size:
            try:
                data = os.lseek(fd, off, seek_data)
            except OSError as e:
                if e.errno == errno.ENXIO:  # no data after off: the rest is a hole
                    break
                if e.errno == errno.EINVAL or e.errno in _NOTSUP:
                    return [(0, size)]
                raise
            if data >= size:
                break
            hole = min(os.lseek(fd, data, seek_hole), size)
            extents.append((data, hole - data))
            off = hole
    finally:
        os.lseek(fd, saved, os.SEEK_SET)
    return extents


def pwrite_all(fd: int, buf: memoryview, offset: int) -> None:
    """``pwrite`` all of ``buf`` at ``offset`` (a single pwrite may write less)."""
    while buf:
        n = os.pwrite(fd, buf, offset)
        buf = buf[n:]
        offset += n


def write_sparse(fd: int, offset: int, data: Union[bytes, bytearray, memoryview]) -> int:
    """``pwrite`` ``data`` at ``offset`` but skip (leave as holes) aligned all-zero 4 KiB blocks.

    The target range must read as zeros already (a new or truncated file): skipped blocks
    are not written. Call ``finish_sparse`` at the end so trailing holes get their size.
    Does not move the file position. Returns the number of bytes actually written.
    """
    if not isinstance(data, bytes):
        data = bytes(data)  # bytes slicing + == is memcmp speed; memoryview == is not
    n = len(data)
    mv = memoryview(data)
    if _ZERO_BLOCK not in data:  # fast path (one C-level search): no 4 KiB zero run at all, so no hole
        pwrite_all(fd, mv, offset)
        return n
    written = 0
    pending = 0  # start of the not-yet-written run of non-zero blocks
    i = (-offset) % SPARSE_BLOCK  # first block-aligned position in data
    while i + SPARSE_BLOCK <= n:
        if data[i:i + SPARSE_BLOCK] == _ZERO_BLOCK:
            if pending < i:
                pwrite_all(fd, mv[pending:i], offset + pending)
                written += i - pending
            pending = i + SPARSE_BLOCK
        i += SPARSE_BLOCK
    if pending < n:
        pwrite_all(fd, mv[pending:n], offset + pending)
        written += n - pending
    return written


def finish_sparse(fd: int, size: int) -> None:
    """Set the final size of a file written with ``write_sparse`` (creates trailing holes)."""
    os.ftruncate(fd, size)
