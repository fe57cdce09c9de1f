"""Helpers for the end-to-end tests: build a realistic source tree, record its state (contents and
POSIX metadata, via os.lstat), and compare a restored tree with it.

Paths are handled as bytes throughout so non-UTF-8 names need no special casing.
"""
from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import stat
from typing import Dict, Iterable, List, Optional, Tuple, Union

IS_ROOT = os.geteuid() == 0

PathT = Union[str, bytes, "os.PathLike"]

# Files the builder makes sparse (relative paths), and their expected apparent sizes.
SPARSE_FILES = {b"sparse/data-and-holes.img": 8 << 20, b"sparse/only-hole.img": 4 << 20}

NON_UTF8_FILE = b"names/caf\xe9.txt"
NON_UTF8_DIR = b"names/\xff\xfe-dir"


def b(p: PathT) -> bytes:
    return os.fsencode(p)


def rand_bytes(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n) if n else b""


LOREM = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore "
         "et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris. ")


def text_bytes(rng: random.Random, n: int) -> bytes:
    words = LOREM.split()
    out: List[str] = []
    size = 0
    line = 0
    while size < n:
        w = rng.choice(words)
        out.append(w)
        size += len(w) + 1
        line += 1
        if line % 12 == 0:
            out.append(f"\n{line}:")
            size += 8
    return (" ".join(out)).encode()[:n]


def write(path: PathT, data: bytes, mode: Optional[int] = None) -> bytes:
    p = b(path)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(p, mode)
    return p


def set_mtime(path: PathT, mtime_ns: int, atime_ns: Optional[int] = None) -> None:
    os.utime(b(path), ns=(mtime_ns if atime_ns is None else atime_ns, mtime_ns), follow_symlinks=False)


def copy_doc_slice(dest: PathT, max_bytes: int = 2 << 20, max_dirs: int = 40) -> int:
    """Copy some of /usr/share/doc (symlinks kept as symlinks). Returns the bytes copied (0 if absent)."""
    src = b"/usr/share/doc"
    if not os.path.isdir(src):
        return 0
    total = 0
    os.makedirs(b(dest), exist_ok=True)
    for name in sorted(os.listdir(src))[:max_dirs]:
        s = os.path.join(src, name)
        d = os.path.join(b(dest), name)
        try:
            if os.path.islink(s) or not os.path.isdir(s):
                continue
            shutil.copytree(s, d, symlinks=True)
        except (OSError, shutil.Error):
            shutil.rmtree(d, ignore_errors=True)
            continue
        for dp, _dn, fn in os.walk(d):
            for f in fn:
                total += os.lstat(os.path.join(dp, f)).st_size
        if total >= max_bytes:
            break
    return total


def build_tree(root: PathT, *, seed: int = 1, big: bool = True, doc: bool = True) -> bytes:
    """A tree with every kind of object recovault handles. Returns the root as bytes."""
    root = b(root)
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    # sizes around chunker and block boundaries, 0 bytes included
    sizes = [0, 1, 100, 4095, 4096, 4097, 16383, 16384, 16385, 65535, 65536, 65537, 300_001, 1 << 20]
    if big:
        sizes += [(3 << 20) + 17, 5 << 20]
    for i, n in enumerate(sizes):
        write(os.path.join(root, b"rand", b"r%02d-%d.bin" % (i, n)), rand_bytes(rng, n))
    for i, n in enumerate([0, 10, 700, 5000, 40_000, 150_000, 600_000]):
        write(os.path.join(root, b"text", b"t%02d.txt" % i), text_bytes(rng, n))
    write(os.path.join(root, b"empty.txt"), b"")
    # identical content under two names: stored once
    dup = rand_bytes(rng, 700_000)
    write(os.path.join(root, b"dup/one.bin"), dup)
    write(os.path.join(root, b"dup/two.bin"), dup)
    # sparse files
    sp = os.path.join(root, b"sparse/data-and-holes.img")
    write(sp, b"")
    with open(sp, "r+b") as f:
        f.write(rand_bytes(rng, 5000))
        f.seek(5 << 20)
        f.write(rand_bytes(rng, 70_000))
        f.truncate(8 << 20)
    with open(write(os.path.join(root, b"sparse/only-hole.img"), b""), "r+b") as f:
        f.truncate(4 << 20)
    # hard links (a group of three across directories, one pair)
    a = write(os.path.join(root, b"links/a.txt"), text_bytes(rng, 3000))
    os.link(a, os.path.join(root, b"links/b.txt"))
    os.makedirs(os.path.join(root, b"links/sub"))
    os.link(a, os.path.join(root, b"links/sub/c.txt"))
    p = write(os.path.join(root, b"links/pair-1"), b"")
    os.link(p, os.path.join(root, b"links/pair-2"))
    # symlinks
    os.makedirs(os.path.join(root, b"sym"))
    os.symlink(b"../text/t01.txt", os.path.join(root, b"sym/relative"))
    os.symlink(b"/etc/hostname", os.path.join(root, b"sym/absolute"))
    os.symlink(b"does/not/exist", os.path.join(root, b"sym/dangling"))
    os.symlink(b"../rand", os.path.join(root, b"sym/to-dir"))
    os.symlink(b"caf\xe9-target", os.path.join(root, b"sym/non-utf8-target"))
    # special files
    os.makedirs(os.path.join(root, b"special"))
    os.mkfifo(os.path.join(root, b"special/fifo"), 0o640)
    if IS_ROOT:
        try:
            os.mknod(os.path.join(root, b"special/null-dev"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
        except OSError:
            pass
    # empty directories
    os.makedirs(os.path.join(root, b"empty-dir"))
    os.makedirs(os.path.join(root, b"nested/empty/deeper"))
    # modes
    write(os.path.join(root, b"modes/private"), b"secret\n", 0o600)
    write(os.path.join(root, b"modes/none"), b"nobody may read\n", 0o000)
    write(os.path.join(root, b"modes/setuid"), b"#!/bin/sh\n", 0o4755)
    write(os.path.join(root, b"modes/setgid"), b"#!/bin/sh\n", 0o2750)
    write(os.path.join(root, b"modes/exec"), b"#!/bin/sh\necho hi\n", 0o755)
    os.makedirs(os.path.join(root, b"modes/sticky"))
    os.chmod(os.path.join(root, b"modes/sticky"), 0o1777)
    os.makedirs(os.path.join(root, b"modes/closed"))
    write(os.path.join(root, b"modes/closed/inside"), b"x")
    os.chmod(os.path.join(root, b"modes/closed"), 0o700)
    # owners (only root can give files away)
    if IS_ROOT:
        o = write(os.path.join(root, b"owners/numeric-only"), b"owned by an id with no name\n")
        os.chown(o, 4242, 4343)
        n = write(os.path.join(root, b"owners/nobody"), b"owned by nobody\n")
        os.chown(n, 65534, 65534)
        os.makedirs(os.path.join(root, b"owners/dir"))
        os.chown(os.path.join(root, b"owners/dir"), 4242, 65534)
        os.symlink(b"nobody", os.path.join(root, b"owners/link"))
        os.chown(os.path.join(root, b"owners/link"), 4242, 4343, follow_symlinks=False)
    # extended attributes
    x = write(os.path.join(root, b"xattr/file"), b"has attributes\n")
    xd = os.path.join(root, b"xattr/dir")
    os.makedirs(xd)
    try:
        os.setxattr(x, "user.comment", b"hello")
        os.setxattr(x, "user.binary", bytes(range(256)))
        os.setxattr(x, "user.empty", b"")
        os.setxattr(xd, "user.dir-attr", b"on a directory")
    except OSError as e:  # pragma: no cover - file systems without user xattrs
        if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    # names
    write(os.path.join(root, NON_UTF8_FILE), b"latin-1 name\n")
    write(os.path.join(root, NON_UTF8_DIR, b"inside.txt"), b"in a non-UTF-8 directory\n")
    write(os.path.join(root, "names/ünïcödé ☃.txt".encode()), b"utf-8 name\n")
    write(os.path.join(root, b"names/with space"), b"space\n")
    write(os.path.join(root, b"names/new\nline"), b"newline\n")
    write(os.path.join(root, b"names/-dash"), b"dash\n")
    write(os.path.join(root, b"names/" + b"L" * 255), b"long name\n")
    write(os.path.join(root, b"names/.hidden"), b"dot file\n")
    # timestamps with nanoseconds, before 1970 and far in the future
    set_mtime(os.path.join(root, b"text/t00.txt"), 1_234_567_890_123_456_789)
    set_mtime(os.path.join(root, b"text/t02.txt"), -86_400_000_000_007)
    set_mtime(os.path.join(root, b"text/t03.txt"), 4_102_444_800_999_999_999)
    set_mtime(os.path.join(root, b"sym/relative"), 1_500_000_000_000_000_001)
    if doc:
        copy_doc_slice(os.path.join(root, b"doc"))
    # directory times last (creating entries changes them)
    set_mtime(os.path.join(root, b"nested/empty"), 1_111_111_111_111_111_111)
    set_mtime(os.path.join(root, b"modes"), 1_222_222_222_000_000_002)
    return root


# ---------------------------------------------------------------- state capture and comparison


def _digest(path: bytes) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        while True:
            buf = f.read(1 << 20)
            if not buf:
                break
            h.update(buf)
    return h.hexdigest()


def user_xattrs(path: bytes) -> Dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in sorted(names) if n.startswith("user.")}


def entries(root: PathT) -> Iterable[Tuple[bytes, bytes]]:
    """(relative path, absolute path) of root and everything under it, never following symlinks."""
    root = b(root)
    yield b"", root
    for dp, dns, fns in os.walk(root):
        for name in sorted(dns + fns):
            p = os.path.join(dp, name)
            yield os.path.relpath(p, root), p


def state(root: PathT, *, times: bool = True, owners: bool = True) -> Dict[bytes, Dict]:
    """Everything a restore must reproduce, per relative path."""
    out: Dict[bytes, Dict] = {}
    inodes: Dict[Tuple[int, int], List[bytes]] = {}
    for rel, p in entries(root):
        st = os.lstat(p)
        t = stat.S_IFMT(st.st_mode)
        rec: Dict = {"type": t, "mode": stat.S_IMODE(st.st_mode)}
        if t == stat.S_IFLNK:
            rec["mode"] = None  # symlink permission bits are not meaningful on Linux
        if owners:
            rec["uid"], rec["gid"] = st.st_uid, st.st_gid
        if times:
            rec["mtime_ns"] = st.st_mtime_ns
        if t == stat.S_IFREG:
            rec["size"] = st.st_size
            rec["digest"] = _digest(p)
            rec["nlink"] = st.st_nlink
            if st.st_nlink > 1:
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        elif t == stat.S_IFLNK:
            rec["target"] = os.readlink(p)
        elif t in (stat.S_IFCHR, stat.S_IFBLK):
            rec["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        if t != stat.S_IFLNK:
            rec["xattrs"] = user_xattrs(p)
        out[rel] = rec
    for group in inodes.values():
        for rel in group:
            out[rel]["links"] = tuple(sorted(group))
    return out


def diff_states(expected: Dict[bytes, Dict], actual: Dict[bytes, Dict], limit: int = 20) -> List[str]:
    problems: List[str] = []
    for rel in sorted(set(expected) | set(actual)):
        e, a = expected.get(rel), actual.get(rel)
        if e is None:
            problems.append(f"unexpected {rel!r}: {a}")
        elif a is None:
            problems.append(f"missing {rel!r}: {e}")
        elif e != a:
            keys = sorted(k for k in set(e) | set(a) if e.get(k) != a.get(k))
            problems.append(f"{rel!r} differs in {keys}: expected {[e.get(k) for k in keys]}, "
                            f"got {[a.get(k) for k in keys]}")
        if len(problems) >= limit:
            problems.append("...")
            break
    return problems


def assert_same(expected: Dict[bytes, Dict], actual_root: PathT, **kw) -> None:
    problems = diff_states(expected, state(actual_root, **kw))
    assert not problems, "restored tree differs:\n" + "\n".join(problems)


def restored_root(target: PathT, src_root: PathT) -> bytes:
    """Where a restore of `src_root` (an absolute path) lands under `target`."""
    return os.path.join(b(target), b(src_root).lstrip(b"/"))


def unique_file_bytes(root: PathT) -> int:
    """Sum of the sizes of regular files under root, each inode counted once."""
    seen = set()
    total = 0
    for _rel, p in entries(root):
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def regular_inodes(root: PathT) -> int:
    return len({(os.lstat(p).st_dev, os.lstat(p).st_ino) for _r, p in entries(root)
                if stat.S_ISREG(os.lstat(p).st_mode)})


def assert_sparse(path: PathT, size: int) -> None:
    st = os.lstat(b(path))
    assert st.st_size == size
    assert st.st_blocks * 512 < st.st_size, f"{path!r} is not sparse: {st.st_blocks * 512} of {st.st_size} allocated"


def flip_byte(path: PathT, offset: int) -> None:
    """Invert one byte of a file in place (vault objects are created read-only for others: 0600)."""
    p = b(path)
    with open(p, "rb") as f:
        data = bytearray(f.read())
    data[offset] ^= 0xFF
    mode = stat.S_IMODE(os.lstat(p).st_mode)
    os.chmod(p, mode | 0o200)
    with open(p, "r+b") as f:
        f.write(data)
    os.chmod(p, mode)
