"""Tests for recovault.fsmeta: capture/apply of POSIX metadata, special files, sparse files."""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import struct
import subprocess

import pytest

from recovault import fsmeta
from recovault.errors import CorruptData
from recovault.fsmeta import (
    SPARSE_BLOCK,
    Meta,
    apply,
    capture,
    create_special,
    data_extents,
    decode_name,
    encode_name,
    finish_sparse,
    write_sparse,
)

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")


def json_roundtrip(m: Meta) -> Meta:
    return Meta.from_dict(json.loads(json.dumps(m.to_dict())))


def xattrs_supported(path) -> bool:
    try:
        os.setxattr(path, "user.recovault-probe", b"1", follow_symlinks=False)
        os.removexattr(path, "user.recovault-probe", follow_symlinks=False)
        return True
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return False
        raise


def touch(path, data=b"") -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


# ---------------------------------------------------------------- names and dict schema


@pytest.mark.parametrize(
    "raw", [b"plain", "h\u00e9llo \u2603".encode(), b"\xff\xfebad", b"", b"a\x80b"]
)
def test_name_roundtrip(raw):
    enc = encode_name(raw)
    assert json.loads(json.dumps(enc)) == enc
    assert decode_name(enc) == raw
    assert encode_name(os.fsdecode(raw)) == enc  # surrogateescape str gives the same form
    try:
        raw.decode("utf-8")
        assert isinstance(enc, str)
    except UnicodeDecodeError:
        assert set(enc) == {"b64"}


@pytest.mark.parametrize("bad", [{"b64": "!!"}, {"x": "AA=="}, 3, None, {"b64": 1}])
def test_decode_name_malformed(bad):
    with pytest.raises(CorruptData):
        decode_name(bad)


def test_dict_omits_defaults():
    assert Meta(type="d").to_dict() == {"t": "d"}
    m = Meta(type="f", mode=0o644, uid=1000, gid=100, user="alice", mtime_ns=5, size=10, nlink=2, sparse=True)
    assert m.to_dict() == {
        "t": "f", "m": 0o644, "u": 1000, "g": 100, "un": "alice", "mt": 5, "sz": 10, "nl": 2, "sp": True,
    }
    assert Meta.from_dict(m.to_dict()) == m


def test_dict_full_roundtrip():
    m = Meta(
        type="c", mode=0o4755, uid=1, gid=2, user="u", group="g", mtime_ns=1, atime_ns=2,
        ctime_ns=3, rdev=(8, 1), xattrs={"user.a": b"\x00\xff", os.fsdecode(b"user.\xff"): b"v"},
        ino=99, dev=7, nlink=3,
    )
    d = m.to_dict()
    assert d["rd"] == [8, 1]
    assert d["x"]["user.a"] == "AP8="
    assert any(k.startswith("b64:") for k in d["x"])
    assert json_roundtrip(m) == m


@pytest.mark.parametrize(
    "bad",
    [{}, {"t": "z"}, {"t": "f", "m": "755"}, {"t": "f", "x": {"user.a": "!!"}}, {"t": "c", "rd": [1]},
     {"t": "f", "un": 5}, {"t": "l", "lt": {"b64": 5}}, {"t": "f", "sp": 1}, {"t": "f", "x": []}],
)
def test_from_dict_malformed(bad):
    with pytest.raises(CorruptData):
        Meta.from_dict(bad)


# ---------------------------------------------------------------- capture


def test_capture_regular_file(tmp_path):
    p = touch(tmp_path / "f", b"hello")
    os.chmod(p, 0o640)
    os.utime(p, ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    st = os.lstat(p)
    m = capture(p)
    assert (m.type, m.mode, m.size, m.uid, m.gid) == ("f", 0o640, 5, st.st_uid, st.st_gid)
    assert m.mtime_ns == 1_500_000_000_987_654_321 and m.atime_ns == 1_600_000_000_123_456_789
    assert m.ctime_ns == st.st_ctime_ns and m.ino == st.st_ino and m.dev == st.st_dev and m.nlink == 1
    assert not m.sparse and m.target is None and m.rdev is None
    assert capture(p, st) == m
    assert json_roundtrip(m) == m
    if IS_ROOT:
        assert m.user == "root" and m.group == "root"


def test_capture_dir_and_hardlink(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    m = capture(str(d))
    assert m.type == "d" and m.nlink == 1 and m.size == 0
    a = touch(d / "a")
    os.link(a, d / "b")
    assert capture(a).nlink == 2


@pytest.mark.parametrize("target", [b"relative/target", b"/abs/dangling", b"\xff\xfe-not-utf8"])
def test_capture_symlink(tmp_path, target):
    link = tmp_path / "l"
    os.symlink(target, os.fsencode(str(link)))
    m = capture(str(link))
    assert m.type == "l" and m.target == target and m.size == 0
    assert json_roundtrip(m).target == target


def test_capture_fifo_socket_unknown_user(tmp_path):
    fifo = str(tmp_path / "p")
    os.mkfifo(fifo)
    assert capture(fifo).type == "p"
    sock_path = str(tmp_path / "s")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(sock_path)
        assert capture(sock_path).type == "s"
    finally:
        s.close()
    if IS_ROOT:
        f = touch(tmp_path / "nobody")
        os.chown(f, 54321, 54322)
        m = capture(f)
        assert (m.uid, m.gid, m.user, m.group) == (54321, 54322, None, None)
        assert "un" not in m.to_dict()


def test_capture_device():
    m = capture("/dev/null")
    assert m.type == "c" and m.rdev == (1, 3)


def test_capture_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        capture(str(tmp_path / "nope"))


def test_capture_non_utf8_path(tmp_path):
    p = os.path.join(os.fsencode(str(tmp_path)), b"caf\xe9")
    with open(p, "wb") as f:
        f.write(b"x")
    assert capture(p).size == 1
    assert capture(os.fsdecode(p)).size == 1


# ---------------------------------------------------------------- apply


def test_times_roundtrip_ns(tmp_path):
    src = touch(tmp_path / "src", b"x")
    os.utime(src, ns=(1_234_567_890_123_456_789, 1_111_111_111_222_222_222))
    m = json_roundtrip(capture(src))
    dst = touch(tmp_path / "dst", b"x")
    assert apply(dst, m, owners=False) == []
    st = os.lstat(dst)
    assert st.st_mtime_ns == 1_111_111_111_222_222_222
    assert st.st_atime_ns == 1_234_567_890_123_456_789


def test_times_on_symlink_and_dir(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    os.utime(d, ns=(10**18 + 1, 10**18 + 2))
    link = tmp_path / "l"
    os.symlink("nowhere", link)
    os.utime(link, ns=(3 * 10**17 + 5, 3 * 10**17 + 7), follow_symlinks=False)
    md, ml = capture(str(d)), capture(str(link))
    d2 = tmp_path / "d2"
    d2.mkdir()
    l2 = tmp_path / "l2"
    os.symlink("nowhere", l2)
    assert apply(str(d2), md, owners=IS_ROOT) == []
    assert apply(str(l2), ml, owners=IS_ROOT) == []
    assert os.lstat(d2).st_mtime_ns == 10**18 + 2
    assert os.lstat(l2).st_mtime_ns == 3 * 10**17 + 7
    assert os.lstat(l2).st_atime_ns == 3 * 10**17 + 5


def test_apply_times_false_and_missing_path(tmp_path):
    f = touch(tmp_path / "f")
    before = os.lstat(f).st_mtime_ns
    apply(f, Meta(type="f", mode=0o600, mtime_ns=5), owners=False, times=False)
    assert os.lstat(f).st_mtime_ns == before and stat.S_IMODE(os.lstat(f).st_mode) == 0o600
    with pytest.raises(FileNotFoundError):
        apply(str(tmp_path / "missing"), Meta(type="f"), owners=False)


@needs_root
def test_setuid_survives_chown(tmp_path):
    src = touch(tmp_path / "src", b"#!/bin/sh\n")
    os.chown(src, 1234, 2345)
    os.chmod(src, 0o6755)
    m = json_roundtrip(capture(src))
    assert m.mode == 0o6755
    dst = touch(tmp_path / "dst")
    assert apply(dst, m, owners=True) == []
    st = os.lstat(dst)
    assert (st.st_uid, st.st_gid) == (1234, 2345)
    assert stat.S_IMODE(st.st_mode) == 0o6755


@needs_root
def test_sticky_dir(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    os.chmod(d, 0o1777)
    m = capture(str(d))
    d2 = tmp_path / "d2"
    d2.mkdir()
    apply(str(d2), m, owners=True)
    assert stat.S_IMODE(os.lstat(d2).st_mode) == 0o1777


@needs_root
def test_owner_name_mapping(tmp_path):
    f = touch(tmp_path / "f")
    # the name exists here: it wins over the recorded number
    apply(f, Meta(type="f", mode=0o644, uid=4242, gid=4243, user="root", group="root"), owners=True)
    assert (os.lstat(f).st_uid, os.lstat(f).st_gid) == (0, 0)
    # numeric_ids ignores names
    apply(f, Meta(type="f", mode=0o644, uid=4242, gid=4243, user="root", group="root"), owners=True,
          numeric_ids=True)
    assert (os.lstat(f).st_uid, os.lstat(f).st_gid) == (4242, 4243)
    # unknown names fall back to the numbers
    apply(f, Meta(type="f", mode=0o644, uid=777, gid=778, user="no-such-user-rv", group="no-such-group-rv"),
          owners=True)
    assert (os.lstat(f).st_uid, os.lstat(f).st_gid) == (777, 778)
    # owners=False leaves ownership alone
    apply(f, Meta(type="f", mode=0o644, uid=1, gid=1), owners=False)
    assert os.lstat(f).st_uid == 777


@needs_root
def test_symlink_owner(tmp_path):
    link = tmp_path / "l"
    os.symlink("/nowhere", link)
    assert apply(str(link), Meta(type="l", uid=31, gid=32, target=b"/nowhere"), owners=True) == []
    assert (os.lstat(link).st_uid, os.lstat(link).st_gid) == (31, 32)


def test_apply_collects_warnings(tmp_path, monkeypatch):
    f = touch(tmp_path / "f")

    def deny(*a, **k):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    def notsup(*a, **k):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "chown", deny)
    monkeypatch.setattr(os, "setxattr", notsup)
    m = Meta(type="f", mode=0o600, uid=5, xattrs={"user.a": b"1", "user.b": b"2"}, mtime_ns=10**18)
    w = apply(f, m, owners=True)
    assert len(w) == 3 and "owner" in w[0] and "user.a" in w[1] and "user.b" in w[2]
    # the rest was still applied
    assert stat.S_IMODE(os.lstat(f).st_mode) == 0o600 and os.lstat(f).st_mtime_ns == 10**18
    assert apply(f, m, owners=False, xattrs=False) == []


# ---------------------------------------------------------------- xattrs and ACLs


def test_xattrs_roundtrip(tmp_path):
    src = touch(tmp_path / "src")
    if not xattrs_supported(src):
        pytest.skip("user xattrs not supported here")
    odd = os.fsdecode(b"user.\xffodd")
    os.setxattr(src, "user.text", b"hello")
    os.setxattr(src, "user.bin", bytes(range(256)))
    os.setxattr(src, "user.empty", b"")
    os.setxattr(src, odd, b"x")
    m = json_roundtrip(capture(src))
    assert m.xattrs["user.text"] == b"hello" and m.xattrs["user.bin"] == bytes(range(256))
    assert m.xattrs["user.empty"] == b"" and m.xattrs[odd] == b"x"
    dst = touch(tmp_path / "dst")
    assert apply(dst, m, owners=False) == []
    for name, value in m.xattrs.items():
        assert os.getxattr(dst, name) == value
    assert capture(str(tmp_path / "dst")).xattrs == capture(src).xattrs
    assert capture(src, xattrs=False).xattrs == {}


def test_read_xattrs_unsupported(tmp_path, monkeypatch):
    f = touch(tmp_path / "f")

    def notsup(*a, **k):
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(os, "listxattr", notsup)
    assert capture(f).xattrs == {}


def _acl_xattr(entries):
    """Build a system.posix_acl_* value: version 2 header + (tag, perm, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, i) for t, p, i in entries)


def test_posix_acl_roundtrip(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    undef = 0xFFFFFFFF
    if shutil.which("setfacl"):
        subprocess.run(["setfacl", "-m", "u:4321:rwx,g:4322:r-x", str(src)], check=True)
        subprocess.run(["setfacl", "-d", "-m", "u:4321:rw-", str(src)], check=True)
    else:  # write the ACL xattrs directly (USER_OBJ 1, USER 2, GROUP_OBJ 4, GROUP 8, MASK 0x10, OTHER 0x20)
        acl = _acl_xattr([(1, 7, undef), (2, 7, 4321), (4, 5, undef), (8, 5, 4322), (0x10, 7, undef),
                          (0x20, 5, undef)])
        dflt = _acl_xattr([(1, 7, undef), (2, 6, 4321), (4, 5, undef), (0x10, 7, undef), (0x20, 5, undef)])
        try:
            os.setxattr(src, "system.posix_acl_access", acl)
            os.setxattr(src, "system.posix_acl_default", dflt)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                pytest.skip("POSIX ACLs not supported here")
            raise
    m = json_roundtrip(capture(str(src)))
    assert "system.posix_acl_access" in m.xattrs and "system.posix_acl_default" in m.xattrs
    dst = tmp_path / "dst"
    dst.mkdir()
    assert apply(str(dst), m, owners=IS_ROOT) == []
    got = capture(str(dst))
    assert got.xattrs["system.posix_acl_access"] == m.xattrs["system.posix_acl_access"]
    assert got.xattrs["system.posix_acl_default"] == m.xattrs["system.posix_acl_default"]
    assert got.mode == m.mode


# ---------------------------------------------------------------- special files


def test_create_fifo(tmp_path):
    src = str(tmp_path / "p")
    os.mkfifo(src, 0o640)
    os.utime(src, ns=(10**18, 10**18 + 1))
    m = json_roundtrip(capture(src))
    dst = str(tmp_path / "p2")
    assert create_special(dst, m) == []
    assert apply(dst, m, owners=IS_ROOT) == []
    st = os.lstat(dst)
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime_ns == 10**18 + 1
    with pytest.raises(FileExistsError):
        create_special(dst, m)


@needs_root
@pytest.mark.parametrize("kind,rdev", [("c", (1, 3)), ("b", (7, 200))])
def test_create_device(tmp_path, kind, rdev):
    m = Meta(type=kind, mode=0o660, rdev=rdev, uid=0, gid=6)
    dst = str(tmp_path / "dev")
    try:
        w = create_special(dst, m)
    except PermissionError:
        pytest.skip("mknod not permitted")
    if w:
        pytest.skip(w[0])
    apply(dst, m, owners=True)
    got = capture(dst)
    assert (got.type, got.rdev, got.mode, got.gid) == (kind, rdev, 0o660, 6)


def test_create_device_not_permitted_is_warning(tmp_path, monkeypatch):
    def deny(*a, **k):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "mknod", deny)
    dst = str(tmp_path / "dev")
    w = create_special(dst, Meta(type="c", mode=0o600, rdev=(1, 3)))
    assert len(w) == 1 and "device" in w[0] and not os.path.lexists(dst)


def test_create_socket_and_bad_types(tmp_path):
    dst = str(tmp_path / "s")
    w = create_special(dst, Meta(type="s"))
    assert len(w) == 1 and "socket" in w[0] and not os.path.lexists(dst)
    for t in ("f", "d", "l"):
        with pytest.raises(ValueError):
            create_special(dst, Meta(type=t))
    with pytest.raises(ValueError):
        create_special(dst, Meta(type="c"))  # no rdev


# ---------------------------------------------------------------- sparse files


def _make_sparse(path, size, chunks):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    for off, data in chunks:
        os.pwrite(fd, data, off)
    os.ftruncate(fd, size)
    return fd


def test_data_extents_sparse(tmp_path):
    size = 8 * 1024 * 1024
    fd = _make_sparse(str(tmp_path / "s"), size, [(1024 * 1024, b"A" * 100), (5 * 1024 * 1024, b"B" * 70000)])
    try:
        os.lseek(fd, 123, os.SEEK_SET)
        ext = data_extents(fd, size)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 123  # position restored
        if ext == [(0, size)]:
            pytest.skip("file system does not report holes")
        assert len(ext) == 2
        (o1, l1), (o2, l2) = ext
        assert o1 <= 1024 * 1024 < 1024 * 1024 + 100 <= o1 + l1 < 5 * 1024 * 1024
        assert o2 <= 5 * 1024 * 1024 and 5 * 1024 * 1024 + 70000 <= o2 + l2 <= size
        assert all(l > 0 for _, l in ext)
        # size limits the result
        assert data_extents(fd, 1024 * 1024) == []
    finally:
        os.close(fd)
    assert capture(str(tmp_path / "s")).sparse


def test_data_extents_dense_empty_and_all_hole(tmp_path):
    fd = _make_sparse(str(tmp_path / "d"), 10000, [(0, b"x" * 10000)])
    try:
        assert data_extents(fd, 10000) == [(0, 10000)]
        assert data_extents(fd, 0) == []
    finally:
        os.close(fd)
    fd = _make_sparse(str(tmp_path / "h"), 1 << 20, [])
    try:
        assert data_extents(fd, 1 << 20) in ([], [(0, 1 << 20)])
    finally:
        os.close(fd)


def test_data_extents_fallback(tmp_path, monkeypatch):
    fd = _make_sparse(str(tmp_path / "f"), 1 << 20, [(0, b"x")])
    real = os.lseek

    def lseek(f, off, how):
        if how == os.SEEK_DATA:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(f, off, how)

    monkeypatch.setattr(os, "lseek", lseek)
    try:
        assert data_extents(fd, 1 << 20) == [(0, 1 << 20)]
    finally:
        os.close(fd)


def test_write_sparse_aligned(tmp_path):
    path = str(tmp_path / "out")
    size = 4 * 1024 * 1024
    zeros = bytes(1024 * 1024)
    blob = os.urandom(3 * SPARSE_BLOCK + 17)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        written = 0
        written += write_sparse(fd, 0, zeros)  # a leading hole
        written += write_sparse(fd, 1024 * 1024, bytearray(blob))
        written += write_sparse(fd, 1024 * 1024 + len(blob), memoryview(zeros))
        finish_sparse(fd, size)  # trailing hole up to 4 MiB
    finally:
        os.close(fd)
    # the zeros after the unaligned blob: a 4079-byte head and a 17-byte tail are written
    assert written == len(blob) + (SPARSE_BLOCK - 17) + 17
    with open(path, "rb") as f:
        content = f.read()
    assert len(content) == size
    assert content == zeros + blob + bytes(size - len(zeros) - len(blob))
    st = os.stat(path)
    assert st.st_blocks * 512 < 64 * 1024  # almost all holes
    assert capture(path).sparse


def test_write_sparse_unaligned_and_mixed(tmp_path):
    path = str(tmp_path / "out")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # offset 100: bytes up to the first 4 KiB boundary are written even if zero,
        # the aligned zero block [4096, 8192) is skipped, the 1908-byte tail is written.
        assert write_sparse(fd, 100, bytes(10000)) == (4096 - 100) + (10100 - 8192)
        data = b"a" * SPARSE_BLOCK + bytes(2 * SPARSE_BLOCK) + b"b" * SPARSE_BLOCK + bytes(SPARSE_BLOCK)
        assert write_sparse(fd, 16 * SPARSE_BLOCK, data) == 2 * SPARSE_BLOCK
        assert write_sparse(fd, 0, b"") == 0
        finish_sparse(fd, 16 * SPARSE_BLOCK + len(data))
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        content = f.read()
    assert content == bytes(16 * SPARSE_BLOCK) + data


def test_fsmeta_exports():
    for name in fsmeta.__all__:
        assert hasattr(fsmeta, name)


def test_apply_at_never_follows_a_symlink(tmp_path):
    # Metadata recorded for a file, applied by name to what is in fact a symlink to a file elsewhere:
    # the link's own owner and times may change, the file it points to must not.
    victim = tmp_path / "victim"
    victim.write_bytes(b"x")
    os.chmod(victim, 0o644)
    os.utime(victim, ns=(10**9, 10**9))
    d = tmp_path / "d"
    d.mkdir()
    os.symlink(victim, d / "f")
    before = os.stat(victim)
    meta = fsmeta.Meta(type="f", mode=0o600, uid=os.getuid(), gid=os.getgid(), mtime_ns=2 * 10**9,
                       xattrs={"user.k": b"v"})
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsmeta.apply_at(dfd, b"f", meta, owners=True)
    finally:
        os.close(dfd)
    after = os.stat(victim)
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)
    assert os.listxattr(victim) == []
    assert os.lstat(d / "f").st_mtime_ns == 2 * 10**9  # the link's own times
