"""Tests of the local-directory backend: what only it does (files, fsync order, modes, errno mapping). The
contract every backend keeps is tests/test_storage_contract.py (which runs on the local directory too)."""
from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

import pytest

from recovault.errors import ObjectMissing, StorageError, UsageError, VaultNotFound
from recovault.storage import LocalStorage, ObjectInfo, Storage, open_storage, validate_name, validate_prefix
from recovault.storage import local as local_mod


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "vault", create=True)


def tmp_files(root: Path) -> list:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


# -- basic operations ----------------------------------------------------------------------


def test_put_get_roundtrip_and_overwrite(store: LocalStorage) -> None:
    store.put("data/3f/3f9a", b"hello")
    assert store.get("data/3f/3f9a") == b"hello"
    assert (store.root / "data" / "3f" / "3f9a").read_bytes() == b"hello"
    store.put("data/3f/3f9a", b"second version")
    assert store.get("data/3f/3f9a") == b"second version"
    assert tmp_files(store.root) == []


def test_put_handles_short_writes(store: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    monkeypatch.setattr(local_mod.os, "write", lambda fd, buf: real_write(fd, bytes(buf[:3])))
    payload = bytes(range(256)) * 10
    store.put("obj", payload)
    monkeypatch.undo()
    assert store.get("obj") == payload


def test_new_files_and_dirs_are_private(store: LocalStorage) -> None:
    store.put("keys/abc", b"x")
    assert stat.S_IMODE(os.stat(store.root / "keys" / "abc").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.root / "keys").st_mode) == 0o700


# -- ranges --------------------------------------------------------------------------------


def test_get_range_with_short_preads(store: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = os.urandom(10_000)
    store.put("big", payload)
    real_pread = os.pread
    monkeypatch.setattr(local_mod.os, "pread", lambda fd, n, off: real_pread(fd, min(n, 7), off))
    assert store.get("big", 123, 4567) == payload[123 : 123 + 4567]
    assert store.get("big", 9990) == payload[9990:]


# -- missing objects, stat, exists, delete -------------------------------------------------


def test_missing_object_errors_name_it(store: LocalStorage) -> None:
    with pytest.raises(ObjectMissing, match="data/00/0000"):
        store.get("data/00/0000")
    with pytest.raises(ObjectMissing, match="nope"):
        store.stat("nope")
    store.put("file", b"x")
    with pytest.raises(ObjectMissing):  # a path *through* an object
        store.get("file/below")
    assert not store.exists("file/below")
    assert issubclass(ObjectMissing, StorageError)


def test_directories_are_not_objects(store: LocalStorage) -> None:
    store.put("data/ab/abcd", b"x")
    with pytest.raises(ObjectMissing):
        store.get("data/ab")
    with pytest.raises(ObjectMissing):
        store.stat("data")
    assert not store.exists("data")
    store.delete("data")  # not an object: nothing to delete, and no error
    assert store.get("data/ab/abcd") == b"x"


def test_stat_and_exists(store: LocalStorage) -> None:
    before = time.time()
    store.put("s/obj", b"12345")
    info = store.stat("s/obj")
    assert info == ObjectInfo(name="s/obj", size=5, mtime=info.mtime)
    assert before - 2 <= info.mtime <= time.time() + 2
    assert store.exists("s/obj")
    assert not store.exists("s/other")


def test_list_info_gives_sizes_and_mtimes(store: LocalStorage) -> None:
    """list_info = list + stat, in one pass for a directory; the default (any backend) stats each name."""
    store.put("p/a", b"12345")
    store.put("p/b/c", b"1")
    store.put("q", b"22")
    os.utime(store.local_path("p/a"), (1000, 1000))
    infos = list(store.list_info("p/"))
    assert [(i.name, i.size) for i in infos] == [("p/a", 5), ("p/b/c", 1)]
    assert infos[0].mtime == 1000 and infos == [store.stat("p/a"), store.stat("p/b/c")]
    assert list(Storage.list_info(store, "p/")) == infos  # the generic default agrees

    class Vanishing(LocalStorage):  # an object deleted between the listing and its stat is skipped
        def stat(self, name):
            raise ObjectMissing(name)
    assert list(Storage.list_info(Vanishing(store.root), "p/")) == []


def test_local_path_is_the_object_file(store: LocalStorage) -> None:
    store.put("data/3f/3f9a", b"pack bytes")
    path = store.local_path("data/3f/3f9a")
    assert path == str(store.root / "data" / "3f" / "3f9a")
    with open(path, "rb") as f:
        assert f.read() == b"pack bytes"
    assert store.local_path("data/00/missing") == str(store.root / "data" / "00" / "missing")  # not checked
    with pytest.raises(ValueError):
        store.local_path("../escape")


def test_local_path_defaults_to_none() -> None:
    """A backend that is not a local directory (object stores) has no paths: readers use get()."""

    class Remote(Storage):
        url = "remote://x"

        def put(self, name, data): ...
        def get(self, name, offset=0, length=None): return b""
        def list(self, prefix=""): return iter(())
        def stat(self, name): raise ObjectMissing(name)
        def delete(self, name): ...

    assert Remote().local_path("data/3f/3f9a") is None


# -- list ----------------------------------------------------------------------------------


def test_list_skips_temp_and_foreign_files(store: LocalStorage) -> None:
    store.put("data/aa/aa11", b"x")
    (store.root / "data" / "aa" / ".tmp-0123abcd").write_bytes(b"half")
    (store.root / "lost+found").mkdir()
    (store.root / "lost+found" / "junk").write_bytes(b"?")
    (store.root / "data" / "notes~").write_bytes(b"?")
    assert list(store.list()) == ["data/aa/aa11"]


# -- name validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/abs",
        "a//b",
        "a/",
        "..",
        "../x",
        "a/../b",
        "a/./b",
        "a b",
        "caf\u00e9",
        "a\\b",
        "a\x00b",
        ".tmp-123",
        "data/.tmp-abc",
        "x" * 256,
        "a/" * 600 + "b",
    ],
)
def test_invalid_names_are_rejected(store: LocalStorage, name: str) -> None:
    with pytest.raises(ValueError):
        validate_name(name)
    with pytest.raises(ValueError):
        store.put(name, b"x")
    with pytest.raises(ValueError):
        store.get(name)
    with pytest.raises(ValueError):
        store.delete(name)
    assert list(store.root.iterdir()) == []


@pytest.mark.parametrize("name", ["config", "data/3f/3f9a", "a.b-c_D9", "..x", "x" * 255, ".hidden"])
def test_valid_names(store: LocalStorage, name: str) -> None:
    assert validate_name(name) == name
    store.put(name, b"ok")
    assert store.get(name) == b"ok"
    assert list(store.list()) == [name]


def test_validate_prefix() -> None:
    assert validate_prefix("") == ""
    assert validate_prefix("data/") == "data/"
    assert validate_prefix("data/3") == "data/3"
    for bad in ["/x", "a//", "../", "a/../", "a b"]:
        with pytest.raises(ValueError):
            validate_prefix(bad)


# -- atomicity and durability --------------------------------------------------------------


def test_failed_fsync_leaves_old_content_and_no_temp(store: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("data/ab/abcd", b"old content")

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(local_mod.os, "fsync", broken_fsync)
    with pytest.raises(StorageError, match="Input/output error"):
        store.put("data/ab/abcd", b"new content that never lands")
    monkeypatch.undo()
    assert store.get("data/ab/abcd") == b"old content"
    assert tmp_files(store.root) == []


def test_failed_write_midway_leaves_old_content(store: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("obj", b"A" * 100)
    real_write = os.write
    calls = []

    def half_then_fail(fd: int, buf) -> int:
        calls.append(len(buf))
        if len(calls) == 1:
            return real_write(fd, bytes(buf[:50]))
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(local_mod.os, "write", half_then_fail)
    with pytest.raises(StorageError):
        store.put("obj", b"B" * 100)
    monkeypatch.undo()
    assert len(calls) == 2  # the temp file really was half-written
    assert store.get("obj") == b"A" * 100
    assert tmp_files(store.root) == []


def test_interrupt_midway_cleans_temp(store: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(fd: int, buf) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(local_mod.os, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.put("new/obj", b"data")
    monkeypatch.undo()
    assert not store.exists("new/obj")
    assert tmp_files(store.root) == []


def test_put_fsyncs_file_before_rename_then_directories(store: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def spy_fsync(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            events.append(("fsync-dir", next(p for p in dirs if os.stat(p).st_ino == st.st_ino)))
        else:
            events.append(("fsync-file", None))
        real_fsync(fd)

    def spy_replace(src, dst) -> None:
        assert Path(src).name.startswith(".tmp-") and Path(src).parent == Path(dst).parent
        events.append(("replace", Path(dst).name))
        real_replace(src, dst)

    dirs = [store.root, store.root / "data", store.root / "data" / "ab"]
    monkeypatch.setattr(local_mod.os, "fsync", spy_fsync)
    monkeypatch.setattr(local_mod.os, "replace", spy_replace)
    store.put("data/ab/abcd", b"x")
    assert events == [
        ("fsync-dir", store.root),  # new "data" made durable in the root
        ("fsync-dir", store.root / "data"),  # new "ab" made durable in "data"
        ("fsync-file", None),
        ("replace", "abcd"),
        ("fsync-dir", store.root / "data" / "ab"),
    ]


def test_enospc_is_reported_plainly(store: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("data/cc/cc00", b"old")

    def full(fd: int, buf) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local_mod.os, "write", full)
    with pytest.raises(StorageError) as info:
        store.put("data/cc/cc00", b"new")
    monkeypatch.undo()
    assert str(info.value) == f"no space left on device while writing data/cc/cc00 to {store.root}"
    assert info.value.exit_code == 24  # errors.NoSpace: a full disk has its own exit code
    assert store.get("data/cc/cc00") == b"old"
    assert tmp_files(store.root) == []


def test_permission_denied_names_the_path(store: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("keys/k", b"x")
    path = str(store.root / "keys" / "k")

    def denied(p, *a, **kw):
        raise PermissionError(errno.EACCES, "Permission denied", os.fspath(p))

    monkeypatch.setattr(local_mod.os, "open", denied)
    with pytest.raises(StorageError, match="permission denied") as info:
        store.get("keys/k")
    assert path in str(info.value)
    assert not isinstance(info.value, ObjectMissing)
    with pytest.raises(StorageError, match="permission denied"):
        store.put("keys/k", b"y")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_vault_is_readable(tmp_path: Path) -> None:
    s = LocalStorage(tmp_path / "ro", create=True)
    s.put("config", b"cfg")
    s.put("data/ab/abcd", b"chunk")
    for p in sorted(s.root.rglob("*"), reverse=True) + [s.root]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        ro = LocalStorage(s.root)
        assert ro.get("data/ab/abcd", 1, 3) == b"hun"
        assert list(ro.list()) == ["config", "data/ab/abcd"]
        assert ro.stat("config").size == 3
        with pytest.raises(StorageError, match="permission denied"):
            ro.put("data/ab/new", b"x")
    finally:
        for p in [s.root] + sorted(s.root.rglob("*")):
            p.chmod(0o700 if p.is_dir() else 0o600)


def test_put_if_absent_links_a_complete_file(store: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    """The conditional create hard-links the fsynced temp file to the name: an existing file is never
    replaced (same inode, same bytes), and no temp file stays behind either way."""
    linked = []
    real_link = os.link

    def spy_link(src, dst) -> None:
        linked.append((Path(src).name, Path(dst).name, os.stat(src).st_size))
        real_link(src, dst)

    monkeypatch.setattr(local_mod.os, "link", spy_link)
    assert store.put_if_absent("locks/lease", b"mine") is True
    inode = os.stat(store.local_path("locks/lease")).st_ino
    assert store.put_if_absent("locks/lease", b"theirs") is False
    assert os.stat(store.local_path("locks/lease")).st_ino == inode and store.get("locks/lease") == b"mine"
    assert [(src.startswith(".tmp-"), dst, size) for src, dst, size in linked] == [(True, "lease", 4), (True, "lease", 6)]
    assert tmp_files(store.root) == []


@pytest.mark.parametrize("code", [errno.EPERM, errno.EOPNOTSUPP])
def test_put_if_absent_without_hard_links(store: LocalStorage, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """A file system without hard links (FAT, exFAT: an offline-seeding disk) still gets a complete object,
    renamed into place, and an existing one is still left alone."""
    def no_links(src, dst) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(local_mod.os, "link", no_links)
    assert store.put_if_absent("k", b"1") is True
    assert store.put_if_absent("k", b"2") is False
    assert store.get("k") == b"1" and tmp_files(store.root) == []


def test_put_if_absent_io_error_is_reported_and_cleaned(store: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(src, dst) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(local_mod.os, "link", broken)
    with pytest.raises(StorageError, match="Input/output error"):
        store.put_if_absent("k", b"1")
    monkeypatch.undo()
    assert not store.exists("k") and tmp_files(store.root) == []


# -- roots and open_storage ----------------------------------------------------------------


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(VaultNotFound) as info:
        LocalStorage(tmp_path / "nothing")
    assert str(info.value) == f"no vault at {tmp_path / 'nothing'}"
    assert not (tmp_path / "nothing").exists()


def test_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(VaultNotFound, match="not a directory"):
        LocalStorage(tmp_path / "f")


def test_create_makes_nested_root_and_reopens(tmp_path: Path) -> None:
    s = LocalStorage(tmp_path / "a" / "b" / "vault", create=True)
    s.put("x", b"1")
    again = LocalStorage(str(tmp_path / "a" / "b" / "vault"))
    assert again.get("x") == b"1"
    assert again.url == (tmp_path / "a" / "b" / "vault").as_uri()
    assert isinstance(again, Storage)


def test_open_storage_locations(tmp_path: Path) -> None:
    root = tmp_path / "my vault"
    s = open_storage(str(root), create=True)
    assert isinstance(s, LocalStorage) and s.root == root
    s.put("obj", b"v")
    assert open_storage(root.as_uri()).get("obj") == b"v"  # file:// with %20
    assert open_storage("file://localhost" + str(root)).get("obj") == b"v"
    assert open_storage(root).get("obj") == b"v"  # a Path
    with pytest.raises(VaultNotFound):
        open_storage(str(tmp_path / "missing"))


@pytest.mark.parametrize("location,form", [
    ("azure://con_tainer/path", "azure://CONTAINER[/PREFIX]"), ("AZURE://Upper", "azure://CONTAINER"),
    ("azure://c", "azure://CONTAINER"), ("azure://user@box/p", "azure://CONTAINER"),
    ("azure://box:10000/p", "azure://CONTAINER"), ("azure://box/p?sv=1&sig=x", "azure://CONTAINER"),
    ("azure://box/a//b", "prefix"), ("azure://box/a/../b", "prefix"), ("s3://b_ucket/p", "s3://BUCKET[/PREFIX]"),
    ("s3://x", "s3://BUCKET"), ("s3://bucket/p#frag", "s3://BUCKET"), ("s3://a..b/p", "s3://BUCKET"),
])
def test_object_store_locations_that_do_not_parse(location: str, form: str) -> None:
    """azure:// and s3:// are the object-store back ends now: a location that does not parse is one usage
    error saying how to write it (before any credentials are looked at or any request is made)."""
    with pytest.raises(UsageError) as info:
        open_storage(location)
    assert form in str(info.value) and "invalid vault location" in str(info.value)


@pytest.mark.parametrize("location", ["", "http://example.com/v", "file://otherhost/srv/v", "sftp://h/p"])
def test_open_storage_rejects_other_locations(location: str) -> None:
    with pytest.raises(UsageError):
        open_storage(location)


# -- schemes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("location", ["azur://x", "AzUr://x/y", "gs://bucket/p", "ec://4+2/d1"])
def test_unknown_scheme_is_refused_listing_the_known_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          location: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as info:
        open_storage(location, create=True)
    msg = str(info.value)
    assert "unknown storage scheme" in msg and location in msg
    for form in ("file:///path", "azure://", "s3://", "ec:K+M:"):
        assert form in msg
    assert list(tmp_path.iterdir()) == []  # nothing was created


@pytest.mark.parametrize("location", ["ec:4+2:/d1,/d2", "EC:4+2:/d1"])
def test_erasure_coded_form_is_reserved_not_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        location: str) -> None:
    """The ec: form is the erasure-coded back end's (storage/erasure.py), never a directory: with too few
    locations for 4+2 it is refused, and nothing is created."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="4\\+2 needs 6 locations"):
        open_storage(location, create=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("location", ["a:b", "./a:b", "x/y:z", "backup:2026/v", "./ec:4+2:/d1", "./azur://x"])
def test_local_paths_with_colons_still_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, location: str) -> None:
    monkeypatch.chdir(tmp_path)
    s = open_storage(location, create=True)
    assert isinstance(s, LocalStorage)
    s.put("obj", b"v")
    assert s.root.resolve() == (tmp_path / location).resolve()
    assert open_storage(str(tmp_path / location)).get("obj") == b"v"  # and as an absolute path


def test_registered_scheme_opens_through_its_opener(tmp_path: Path) -> None:
    from recovault import storage as storage_mod
    seen = []

    def opener(location: str, create: bool) -> Storage:
        seen.append((location, create))
        return LocalStorage(tmp_path / "v", create=create)

    saved = storage_mod.schemes()
    try:
        storage_mod.register_scheme("mem", "a test back end", opener)
        storage_mod.register_scheme("xs", "an opaque test back end", opener, opaque=True)
        assert isinstance(open_storage("mem://anything", create=True), LocalStorage)
        assert isinstance(open_storage("xs:1+1:a"), LocalStorage)
        assert seen == [("mem://anything", True), ("xs:1+1:a", False)]
    finally:
        storage_mod._registry.clear()
        storage_mod._registry.update(saved)


def test_a_pack_put_again_or_deleted_is_not_read_through_a_stale_descriptor(tmp_path: Path) -> None:
    """Ranged reads of data/ objects keep their descriptors open; putting the name again (an erasure-coded set
    overwrites its shards in place) or deleting it must not leave reads on the old file."""
    s = LocalStorage(tmp_path / "v", create=True)
    s.put("data/aa/aa01", b"first version")
    assert s.get("data/aa/aa01", 0, 5) == b"first"
    s.put("data/aa/aa01", b"SECOND version")
    assert s.get("data/aa/aa01", 0, 6) == b"SECOND"
    s.delete("data/aa/aa01")
    with pytest.raises(ObjectMissing):
        s.get("data/aa/aa01", 0, 6)
    s.close()
