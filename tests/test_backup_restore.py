"""End-to-end tests through the Python API (recovault.api): back up real trees into a local vault and
restore them, byte for byte and with their metadata (checked with os.lstat against the source).

Vaults here use tiny Argon2id parameters and small chunks and packs, so multi-chunk files and several
packs happen with a few MiB of data.
"""
from __future__ import annotations

import errno
import os
import random
import stat
from types import SimpleNamespace
from typing import Dict, List, Tuple

import pytest

from recovault import api
from recovault.errors import NotFound, UsageError
from recovault.jobs.backup import BackupJob
from recovault.jobs.walk import CACHEDIR_SIGNATURE
from recovault.paths import split_path
from recovault.vault import format as fmt
from recovault.vault.keys import KdfParams
from recovault.vault.records import Node
from recovault.vault.repo import Settings

from e2e_tree import (
    IS_ROOT,
    NON_UTF8_DIR,
    NON_UTF8_FILE,
    SPARSE_FILES,
    assert_same,
    assert_sparse,
    b,
    build_tree,
    entries,
    rand_bytes,
    regular_inodes,
    restored_root,
    state,
    unique_file_bytes,
    write,
)

PASSPHRASE = "correct horse battery staple"
FAST_KDF = KdfParams(memory_kib=8, iterations=1, lanes=1)


def small_settings() -> Settings:
    return Settings(min_size=16 << 10, avg_size=64 << 10, max_size=256 << 10, pack_size=1 << 20)


def new_vault(base, name="vault"):
    return api.init_vault(str(base / name), PASSPHRASE, settings=small_settings(), kdf=FAST_KDF,
                          cache_dir=str(base / "cache"))


def open_vault(location, cache_dir):
    return api.open_vault(str(location), PASSPHRASE, cache_dir=str(cache_dir))


def node_at(vault, snap, path) -> Node:
    """The tree node of absolute `path` in recovery point `snap`."""
    nodes = vault.load_nodes(bytes.fromhex(snap.tree))
    parts = split_path(path)
    node = None
    for i, part in enumerate(parts):
        node = {n.name: n for n in nodes}.get(part)
        if node is None:
            raise KeyError(path)
        if i < len(parts) - 1:
            nodes = vault.load_nodes(bytes.fromhex(node.subtree))
    return node


def snapshot_paths(vault, snap, root) -> List[bytes]:
    """Relative paths of everything under `root` in recovery point `snap` (sorted)."""
    out: List[bytes] = []

    def walk(tree_id, prefix):
        for n in vault.load_nodes(bytes.fromhex(tree_id)):
            p = prefix + (b"/" if prefix else b"") + n.name
            out.append(p)
            if n.subtree is not None:
                walk(n.subtree, p)

    walk(node_at(vault, snap, root).subtree, b"")
    return sorted(out)


def file_size(path) -> int:
    return os.lstat(b(path)).st_size


# ---------------------------------------------------------------- one real tree, backed up once


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory):
    base = tmp_path_factory.mktemp("roundtrip")
    src = build_tree(base / "src")
    expected = state(src)
    with new_vault(base) as v:
        snap = api.backup(v, [os.fsdecode(src)])
    return SimpleNamespace(base=base, src=src, expected=expected, vault=base / "vault", cache=base / "cache",
                           snap=snap)


def test_round_trip_real_tree(backed_up, tmp_path):
    ns = backed_up
    snap = ns.snap
    src = ns.src
    assert snap.mode == "full"  # the first backup of a path set is a full one
    assert snap.parent is None
    assert snap.complete is True and snap.errors == []
    st = snap.stats
    assert st["errors"] == 0
    assert st["files_new"] == regular_inodes(src)
    assert st["files_changed"] == 0 and st["files_unmodified"] == 0
    assert st["bytes_read"] == unique_file_bytes(src)
    all_sizes = sum(os.lstat(p).st_size for _r, p in entries(src) if stat.S_ISREG(os.lstat(p).st_mode))
    assert st["bytes_total"] == all_sizes
    # identical files are stored once: far less added than read (most data is random, so incompressible)
    assert st["bytes_added"] < st["bytes_read"]

    with open_vault(ns.vault, ns.cache) as v:
        # small packs: the data spans many packs; big files span many chunks
        assert len(list(v.storage.list(fmt.DATA))) > 3
        big = node_at(v, snap, os.path.join(src, b"rand/r15-5242880.bin"))
        assert len(big.content) > 5 and big.size == 5 << 20
        assert node_at(v, snap, os.path.join(src, b"dup/one.bin")).content == \
            node_at(v, snap, os.path.join(src, b"dup/two.bin")).content
        assert node_at(v, snap, os.path.join(src, b"empty.txt")).content == []
        res = api.restore(v, snap.id, str(tmp_path / "out"), verify=True)
    assert res["errors"] == []
    regular_paths = [p for _r, p in entries(src) if stat.S_ISREG(os.lstat(p).st_mode)]
    assert res["stats"]["files"] == len(regular_paths)
    assert res["stats"]["verified"] == regular_inodes(src)
    out = restored_root(tmp_path / "out", src)
    assert_same(ns.expected, out)
    for rel, size in SPARSE_FILES.items():
        assert_sparse(os.path.join(out, rel), size)
    # hard links share one inode after the restore
    a = os.lstat(os.path.join(out, b"links/a.txt"))
    c = os.lstat(os.path.join(out, b"links/sub/c.txt"))
    assert (a.st_ino, a.st_nlink) == (c.st_ino, 3)
    # the ancestors of the backed-up path are recreated too
    assert os.path.isdir(os.path.join(b(tmp_path / "out"), os.path.dirname(src).lstrip(b"/")))


def test_restore_over_existing_restore(backed_up, tmp_path):
    """Restoring again into the same target overwrites what is there and ends in the same state."""
    ns = backed_up
    target = tmp_path / "out"
    with open_vault(ns.vault, ns.cache) as v:
        api.restore(v, "latest", str(target))
        out = restored_root(target, ns.src)
        # damage the first restore a little
        with open(os.path.join(out, b"text/t04.txt"), "r+b") as f:
            f.write(b"CLOBBERED")
        os.unlink(os.path.join(out, b"sym/relative"))
        os.symlink(b"elsewhere", os.path.join(out, b"sym/relative"))
        os.chmod(os.path.join(out, b"modes/private"), 0o666)
        res = api.restore(v, "latest", str(target))
    assert res["errors"] == []
    assert_same(ns.expected, out)


def test_restore_on_another_host(backed_up, tmp_path):
    """A fresh agent cache (another host): the index comes from the vault alone."""
    ns = backed_up
    fresh = tmp_path / "other-host-cache"
    with open_vault(ns.vault, fresh) as v:
        assert len(v.locations) > 0
        res = api.restore(v, ns.snap.id[:12], str(tmp_path / "out"))
    assert res["errors"] == []
    assert_same(ns.expected, restored_root(tmp_path / "out", ns.src))
    assert os.listdir(fresh)  # the cache was filled from the vault


def test_restore_single_files_and_folders(backed_up, tmp_path):
    ns = backed_up
    src = ns.src
    picks = [os.path.join(src, b"text/t03.txt"), os.path.join(src, NON_UTF8_DIR), os.path.join(src, b"links/sub"),
             os.path.join(src, b"sym/relative"), os.path.join(src, b"sparse")]
    target = tmp_path / "out"
    with open_vault(ns.vault, ns.cache) as v:
        res = api.restore(v, ns.snap.id[:8], str(target), [os.fsdecode(p) for p in picks])
    assert res["errors"] == []
    out = restored_root(target, src)
    got = sorted(rel for rel, _p in entries(out) if rel)
    assert got == sorted([b"text", b"text/t03.txt", b"names", NON_UTF8_DIR, NON_UTF8_DIR + b"/inside.txt",
                          b"links", b"links/sub", b"links/sub/c.txt", b"sym", b"sym/relative", b"sparse",
                          b"sparse/data-and-holes.img", b"sparse/only-hole.img"])
    restored = state(out)
    for rel in [b"text/t03.txt", NON_UTF8_DIR, NON_UTF8_DIR + b"/inside.txt", b"sym/relative", b"sparse",
                b"sparse/data-and-holes.img"]:
        assert restored[rel] == ns.expected[rel], rel
    # one name of a hard-link group alone: a plain file with the content
    c = restored[b"links/sub/c.txt"]
    assert c["digest"] == ns.expected[b"links/a.txt"]["digest"] and c["nlink"] == 1
    for rel, size in SPARSE_FILES.items():
        assert_sparse(os.path.join(out, rel), size)


def test_restore_single_non_utf8_file_with_latest(backed_up, tmp_path):
    ns = backed_up
    path = os.path.join(ns.src, NON_UTF8_FILE)
    with open_vault(ns.vault, ns.cache) as v:
        api.restore(v, "latest", str(tmp_path / "out"), [os.fsdecode(path)])
    out = restored_root(tmp_path / "out", ns.src)
    assert state(out)[NON_UTF8_FILE] == ns.expected[NON_UTF8_FILE]


def test_restore_selection_of_root_is_everything(backed_up, tmp_path):
    ns = backed_up
    with open_vault(ns.vault, ns.cache) as v:
        res = api.restore(v, "latest", str(tmp_path / "out"), ["/"])
    assert res["errors"] == []
    assert_same(ns.expected, restored_root(tmp_path / "out", ns.src))


def test_restore_unknown_path_or_point(backed_up, tmp_path):
    ns = backed_up
    with open_vault(ns.vault, ns.cache) as v:
        with pytest.raises(NotFound, match="not in recovery point"):
            api.restore(v, "latest", str(tmp_path / "out"), [os.fsdecode(os.path.join(ns.src, b"no/such/file"))])
        with pytest.raises(NotFound, match="not in recovery point"):
            api.restore(v, "latest", str(tmp_path / "out"), ["/definitely/not/backed/up"])
        with pytest.raises(NotFound):
            api.restore(v, "ffffffffffff" if not ns.snap.id.startswith("f") else "000000000000",
                        str(tmp_path / "out"))


# ---------------------------------------------------------------- modes


def edit(path, data: bytes, mtime_bump_s: int = 0) -> None:
    st = os.lstat(b(path))
    with open(b(path), "wb") as f:
        f.write(data)
    if mtime_bump_s:
        os.utime(b(path), ns=(st.st_atime_ns, st.st_mtime_ns + mtime_bump_s * 10**9))


def test_incremental_differential_full(tmp_path):
    rng = random.Random(7)
    src = build_tree(tmp_path / "src", seed=7, big=False, doc=False)
    P = lambda rel: os.path.join(src, rel)  # noqa: E731
    cache = tmp_path / "cache"
    with new_vault(tmp_path) as v:
        s1 = api.backup(v, [os.fsdecode(src)])
    state1 = state(src)
    assert s1.mode == "full"

    # --- edits, adds, deletes, renames
    with open(P(b"text/t04.txt"), "ab") as f:
        f.write(b" appended text")
    old = os.lstat(P(b"rand/r05-4097.bin"))
    edit(P(b"rand/r05-4097.bin"), rand_bytes(rng, 4097), mtime_bump_s=1)  # same size, new content
    assert os.lstat(P(b"rand/r05-4097.bin")).st_size == old.st_size
    write(P(b"new/added.bin"), rand_bytes(rng, 200_000))
    os.unlink(P(b"rand/r03-4095.bin"))
    os.rename(P(b"text/t05.txt"), P(b"text/t05-renamed.txt"))
    os.rename(P(b"dup"), P(b"dup-renamed"))
    os.chmod(P(b"modes/private"), 0o640)  # metadata only: ctime changes, file is re-read
    read_a = [b"text/t04.txt", b"rand/r05-4097.bin", b"new/added.bin", b"text/t05-renamed.txt",
              b"dup-renamed/one.bin", b"dup-renamed/two.bin", b"modes/private"]
    state2 = state(src)

    with open_vault(tmp_path / "vault", cache) as v:
        s2 = api.backup(v, [os.fsdecode(src)])
    assert s2.mode == "incremental" and s2.parent == s1.id and s2.base_full == s1.id
    st = s2.stats
    assert st["files_changed"] == 3  # t04, r05, private
    assert st["files_new"] == 4  # added, t05-renamed, dup-renamed/*
    assert st["files_unmodified"] == regular_inodes(src) - len(read_a)
    assert st["bytes_read"] == sum(file_size(P(r)) for r in read_a)
    # renamed files are read again but stored no new data: only t04's tail, r05 and added.bin are new
    new_data = file_size(P(b"new/added.bin")) + 4097 + (256 << 10)
    assert 200_000 < st["bytes_added"] <= new_data

    # --- more changes, then a differential: compared with the full (s1), not with s2
    edit(P(b"rand/r06-16383.bin"), rand_bytes(rng, 20_000))
    write(P(b"new/b.bin"), rand_bytes(rng, 100_000))
    read_b = [b"rand/r06-16383.bin", b"new/b.bin"]
    state3 = state(src)
    with open_vault(tmp_path / "vault", cache) as v:
        s3 = api.backup(v, [os.fsdecode(src)], mode="differential")
    assert s3.mode == "differential"
    assert s3.parent == s1.id and s3.base_full == s1.id
    st = s3.stats
    changed_since_full = read_a + read_b
    assert st["bytes_read"] == sum(file_size(P(r)) for r in changed_since_full)
    assert st["files_unmodified"] == regular_inodes(src) - len(changed_since_full)
    # what s2 already stored is not stored again
    assert st["bytes_added"] <= 120_000 + 4 * 1024

    # --- nothing changed: an incremental reads nothing and adds nothing
    with open_vault(tmp_path / "vault", cache) as v:
        s4 = api.backup(v, [os.fsdecode(src)])
    assert s4.mode == "incremental" and s4.parent == s3.id and s4.base_full == s1.id
    assert s4.stats["bytes_read"] == 0 and s4.stats["bytes_added"] == 0
    assert s4.stats["files_unmodified"] == regular_inodes(src)

    # --- full: everything is read again, (almost) nothing is added
    with open_vault(tmp_path / "vault", cache) as v:
        s5 = api.backup(v, [os.fsdecode(src)], mode="full")
    assert s5.mode == "full" and s5.parent is None and s5.base_full is None
    st = s5.stats
    assert st["bytes_read"] == unique_file_bytes(src)
    assert st["files_new"] + st["files_changed"] == regular_inodes(src)
    assert st["chunks_new"] == 0 and st["bytes_added"] == 0

    # a differential now compares with the newest full
    write(P(b"new/c.bin"), b"c" * 1000)
    with open_vault(tmp_path / "vault", cache) as v:
        s6 = api.backup(v, [os.fsdecode(src)], mode="differential")
    assert s6.parent == s5.id and s6.base_full == s5.id
    assert s6.stats["bytes_read"] == 1000
    state6 = state(src)

    # --- every recovery point restores on its own, to its own state
    with open_vault(tmp_path / "vault", tmp_path / "cache2") as v:
        ids = [s.id for s in api.snapshots(v)]
        assert ids == [s1.id, s2.id, s3.id, s4.id, s5.id, s6.id]
        for snap, expected in ((s1, state1), (s2, state2), (s3, state3), (s6, state6)):
            target = tmp_path / ("out-" + snap.id[:8])
            res = api.restore(v, snap.id[:10], str(target))
            assert res["errors"] == []
            assert_same(expected, restored_root(target, src))
        with pytest.raises(UsageError, match="matches 6 recovery points"):
            v.find_snapshot("")
        assert v.find_snapshot("latest").id == s6.id


def test_unchanged_but_touched_file_is_reread(tmp_path):
    """A change that keeps the size but moves mtime is noticed by an incremental."""
    src = tmp_path / "src"
    f = write(src / "f.txt", b"A" * 5000)
    with new_vault(tmp_path) as v:
        api.backup(v, [str(src)])
        st = os.lstat(f)
        edit(f, b"B" * 5000, mtime_bump_s=2)
        s2 = api.backup(v, [str(src)])
        assert s2.stats["files_changed"] == 1 and s2.stats["bytes_read"] == 5000
        api.restore(v, "latest", str(tmp_path / "out"))
    assert open(restored_root(tmp_path / "out", f), "rb").read() == b"B" * 5000
    assert os.lstat(restored_root(tmp_path / "out", f)).st_mtime_ns == st.st_mtime_ns + 2 * 10**9


def test_several_roots_and_a_single_file_root(tmp_path):
    one = write(tmp_path / "one/file.bin", rand_bytes(random.Random(3), 300_000))
    two = tmp_path / "two"
    write(two / "x.txt", b"x")
    write(two / "y/z.txt", b"z")
    with new_vault(tmp_path) as v:
        snap = api.backup(v, [os.fsdecode(one), str(two)])
        assert snap.paths == sorted([os.fsdecode(one), str(two)])
        with pytest.raises(UsageError, match="no such file"):
            api.backup(v, [str(tmp_path / "missing")])
        api.restore(v, "latest", str(tmp_path / "out"))
    assert_same(state(one), restored_root(tmp_path / "out", one))
    assert_same(state(two), restored_root(tmp_path / "out", two))
    # only the named file of the first root's directory is there
    assert os.listdir(os.path.dirname(restored_root(tmp_path / "out", one))) == [b"file.bin"]


# ---------------------------------------------------------------- excludes


def test_excludes(tmp_path):
    src = tmp_path / "src"
    for rel in ["keep.txt", "a.tmp", "important.tmp", "sub/b.tmp", "sub/keep.log", "build/out.o", "sub/build/x",
                "top-only", "sub/top-only", "listed-in-file.txt", "sub/listed-in-file.txt", "build.txt",
                "cache/data.bin", "cache/sub/more", "fakecache/data.bin"]:
        write(src / rel, b"data of " + rel.encode())
    write(src / "cache/CACHEDIR.TAG", CACHEDIR_SIGNATURE + b"\n# This file is a cache directory tag.\n")
    write(src / "fakecache/CACHEDIR.TAG", b"Signature: not the right one\n")
    exclude_file = write(tmp_path / "excludes.txt", b"# comment\n\nlisted-in-*.txt\r\n")
    with new_vault(tmp_path) as v:
        snap = api.backup(v, [str(src)], excludes=["*.tmp", "build/", "/top-only", "!important.tmp"],
                          exclude_files=[os.fsdecode(exclude_file)], exclude_caches=True)
        got = snapshot_paths(v, snap, src)
        api.restore(v, "latest", str(tmp_path / "out"))
    assert got == sorted([b"keep.txt", b"important.tmp", b"sub", b"sub/keep.log", b"sub/top-only", b"build.txt",
                          b"cache", b"cache/CACHEDIR.TAG", b"fakecache", b"fakecache/CACHEDIR.TAG",
                          b"fakecache/data.bin"])
    assert sorted(rel for rel, _ in entries(restored_root(tmp_path / "out", src)) if rel) == got
    assert snap.excludes == ["*.tmp", "build/", "/top-only", "!important.tmp"]


def test_exclude_file_missing_is_a_usage_error(tmp_path):
    write(tmp_path / "src/a", b"a")
    with new_vault(tmp_path) as v:
        with pytest.raises(UsageError, match="cannot read exclude file"):
            api.backup(v, [str(tmp_path / "src")], exclude_files=[str(tmp_path / "nope")])
        assert api.snapshots(v) == []


# ---------------------------------------------------------------- unreadable files


def vanish_during_backup(monkeypatch, victim):
    """Make `victim` disappear between the walk and the read: the file cannot be read."""
    orig = BackupJob._start  # hands a batch of files to the pipeline

    def patched(self, files, sources=None):
        if os.path.exists(victim):
            os.unlink(victim)
        return orig(self, files, sources)

    monkeypatch.setattr(BackupJob, "_start", patched)


def test_unreadable_file_is_reported_and_left_out(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write(src / "ok.txt", b"fine")
    victim = write(src / "sub/victim.txt", b"gone before it is read" * 1000)
    write(src / "sub/other.txt", b"other")
    with new_vault(tmp_path) as v:
        vanish_during_backup(monkeypatch, victim)
        snap = api.backup(v, [str(src)])
        monkeypatch.undo()
        assert snap.complete is False
        assert snap.stats["errors"] == 1
        assert [e["path"] for e in snap.errors] == [os.fsdecode(victim)]
        assert snap.errors[0]["error"]
        assert api.snapshots(v)[-1].errors == snap.errors  # stored in the recovery point
        assert snapshot_paths(v, snap, src) == [b"ok.txt", b"sub", b"sub/other.txt"]
        res = api.restore(v, "latest", str(tmp_path / "out"))
        assert res["errors"] == []
        # the next backup is complete again and does not list the file
        s2 = api.backup(v, [str(src)])
        assert s2.complete is True and s2.errors == []
    out = restored_root(tmp_path / "out", src)
    assert open(os.path.join(out, b"ok.txt"), "rb").read() == b"fine"
    assert not os.path.lexists(os.path.join(out, b"sub/victim.txt"))
    assert open(os.path.join(out, b"sub/other.txt"), "rb").read() == b"other"


def test_a_file_changed_while_read_is_an_error_and_left_out(tmp_path, monkeypatch):
    # The pipeline sees the file grow between two of its reads (its test hook appends once, after the first
    # read): the bytes read are neither the old nor the new file, so it is reported and left out, like an
    # unreadable file (exit 3 in the CLI), and the next backup stores it whole.
    src = tmp_path / "src"
    write(src / "ok.txt", b"fine")
    victim = write(src / "log.bin", rand_bytes(random.Random(4), 3 << 20))
    orig = BackupJob._pipeline

    def with_hook(self):
        pipe = orig(self)

        def grow(path, done):
            if path == os.fsencode(victim) and os.path.getsize(victim) == 3 << 20:
                with open(victim, "ab") as f:
                    f.write(b"appended while read")
        pipe._set_after_read(grow)
        return pipe

    with new_vault(tmp_path) as v:
        monkeypatch.setattr(BackupJob, "_pipeline", with_hook)
        snap = api.backup(v, [str(src)])
        monkeypatch.undo()
        assert snap.complete is False
        assert snap.errors == [{"path": os.fsdecode(victim), "error": "changed while reading"}]
        assert snapshot_paths(v, snap, src) == [b"ok.txt"]
        s2 = api.backup(v, [str(src)])
        assert s2.complete is True
        api.restore(v, "latest", str(tmp_path / "out"))
    out = restored_root(tmp_path / "out", src)
    assert open(os.path.join(out, b"log.bin"), "rb").read() == open(victim, "rb").read()


@pytest.mark.skipif(IS_ROOT, reason="root can read a mode-000 file")
def test_unreadable_file_permission_denied(tmp_path):
    src = tmp_path / "src"
    write(src / "ok.txt", b"fine")
    locked = write(src / "locked.txt", b"secret", 0o000)
    with new_vault(tmp_path) as v:
        snap = api.backup(v, [str(src)])
    assert [e["path"] for e in snap.errors] == [os.fsdecode(locked)]
    assert "ermission" in snap.errors[0]["error"]


def test_path_under_a_symlinked_directory(tmp_path):
    """Backing up /x/link/data where link -> real (like /lib -> usr/lib): the restore has the files."""
    real = tmp_path / "real"
    write(real / "data/f.txt", b"under a symlinked ancestor\n")
    os.symlink("real", tmp_path / "link")
    src = tmp_path / "link" / "data"
    with new_vault(tmp_path) as v:
        snap = api.backup(v, [str(src)])
        assert node_at(v, snap, tmp_path / "link").meta["t"] == "d"
        res = api.restore(v, "latest", str(tmp_path / "out"))
        assert res["errors"] == [] and res["stats"]["files"] == 1
        api.restore(v, "latest", str(tmp_path / "out2"), [str(src / "f.txt")])
    for out in ("out", "out2"):
        restored = restored_root(tmp_path / out, src / "f.txt")
        assert not os.path.islink(os.path.dirname(os.path.dirname(restored)))
        assert open(restored, "rb").read() == b"under a symlinked ancestor\n"


def make_deep(base, levels: int, name_len: int = 200) -> Tuple[bytes, bool]:
    """Directories `levels` deep under `base` (names of `name_len` bytes), made through directory
    descriptors since their paths pass PATH_MAX; in the deepest: a multi-chunk file, a small file with a
    user xattr (where the file system has them), a symlink and an empty directory. Returns the deepest
    directory's path and whether the xattr was set."""
    names = [b"%03d" % i + b"d" * (name_len - 3) for i in range(levels)]
    fd = os.open(b(base), os.O_RDONLY | os.O_DIRECTORY)
    has_xattr = True
    try:
        for name in names:
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        for name, data in ((b"big.bin", rand_bytes(random.Random(8), 300_000)), (b"small.txt", b"deep, small\n")):
            f = os.open(name, os.O_WRONLY | os.O_CREAT, 0o640, dir_fd=fd)
            os.write(f, data)
            if name == b"small.txt":
                try:
                    os.setxattr(f, "user.deep", b"far down")
                except OSError as e:  # pragma: no cover - file systems without user xattrs
                    if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                        raise
                    has_xattr = False
            os.close(f)
        os.symlink(b"big.bin", b"link", dir_fd=fd)
        os.mkdir(b"empty", dir_fd=fd)
    finally:
        os.close(fd)
    return os.path.join(b(base), *names), has_xattr


def test_tree_deeper_than_path_max(tmp_path):
    """A tree whose paths pass PATH_MAX (4096 bytes) is backed up whole: contents, xattrs, links."""
    src = tmp_path / "src"
    src.mkdir()
    deepest, has_xattr = make_deep(src, levels=25)
    assert len(deepest) > 5000
    with new_vault(tmp_path) as v:
        snap = api.backup(v, [str(src)])
        assert snap.errors == []
        assert snap.stats["files_new"] == 2 and snap.stats["dirs"] == 27

        def content(name: bytes) -> bytes:
            node = node_at(v, snap, os.path.join(deepest, name))
            return b"".join(v.read_blob(bytes.fromhex(c)) for c in node.content)

        assert content(b"big.bin") == rand_bytes(random.Random(8), 300_000)
        assert content(b"small.txt") == b"deep, small\n"
        small = node_at(v, snap, os.path.join(deepest, b"small.txt")).meta
        assert small["m"] == 0o640 and (not has_xattr or small["x"] == {"user.deep": "ZmFyIGRvd24="})
        assert node_at(v, snap, os.path.join(deepest, b"link")).meta["lt"] == "big.bin"
        assert node_at(v, snap, os.path.join(deepest, b"empty")).meta["t"] == "d"


def fd_state(root) -> Dict[bytes, Tuple]:
    """Every entry under `root` (walked through directory descriptors, so paths may pass PATH_MAX): its
    type, mode, contents (files), target (symlinks) and user xattrs, by its path relative to `root`."""
    out: Dict[bytes, Tuple] = {}

    def walk(dfd: int, rel: bytes) -> None:
        for name in sorted(os.listdir(dfd)):
            name = os.fsencode(name)
            st = os.lstat(name, dir_fd=dfd)
            key = os.path.join(rel, name)
            if stat.S_ISLNK(st.st_mode):
                out[key] = ("l", os.readlink(name, dir_fd=dfd))
                continue
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | (os.O_DIRECTORY if stat.S_ISDIR(st.st_mode) else 0),
                         dir_fd=dfd)
            try:
                xattrs = {k: os.getxattr(fd, k) for k in os.listxattr(fd) if k.startswith("user.")}
                if stat.S_ISDIR(st.st_mode):
                    out[key] = ("d", stat.S_IMODE(st.st_mode), xattrs)
                    walk(fd, key)
                else:
                    with os.fdopen(os.dup(fd), "rb") as f:
                        out[key] = ("f", stat.S_IMODE(st.st_mode), xattrs, f.read())
            finally:
                os.close(fd)

    top = os.open(b(root), os.O_RDONLY | os.O_DIRECTORY)
    try:
        walk(top, b"")
    finally:
        os.close(top)
    return out


def test_tree_deeper_than_path_max_restores_and_verifies(tmp_path):
    """A tree whose paths pass PATH_MAX restores byte for byte, and --verify reads every file back (through
    its directory's descriptor, not by path: a path this long cannot be opened)."""
    src = tmp_path / "src"
    src.mkdir()
    deepest, _ = make_deep(src, levels=60, name_len=100)
    assert len(deepest) > 6000
    with new_vault(tmp_path) as v:
        api.backup(v, [str(src)])
        res = api.restore(v, "latest", str(tmp_path / "out"), verify=True)
    assert res["errors"] == [] and res["warnings"] == []
    assert res["stats"]["files"] == 2 and res["stats"]["verified"] == 2
    expected = fd_state(src)
    assert len(expected) == 60 + 4 and expected == fd_state(restored_root(tmp_path / "out", src))


def test_restore_never_writes_through_what_is_in_the_target(tmp_path):
    """Restoring over an earlier restore (or in place) replaces a symlink or a hard link found where a file
    goes: the file it leads to, outside the target, stays as it was."""
    outside = write(tmp_path / "outside/precious", b"precious\n")
    outside2 = write(tmp_path / "outside/linked", b"hard-linked\n")
    src = tmp_path / "src"
    os.makedirs(src)
    os.symlink(outside, src / "a")
    with new_vault(tmp_path) as v:
        s1 = api.backup(v, [str(src)])
        os.unlink(src / "a")
        write(src / "a", b"the file a\n")
        write(src / "b", b"the file b\n")
        s2 = api.backup(v, [str(src)])
        api.restore(v, s1.id, str(tmp_path / "out"))
        out = restored_root(tmp_path / "out", src)
        assert os.readlink(os.path.join(out, b"a")) == outside
        os.link(outside2, os.path.join(out, b"b"))
        res = api.restore(v, s2.id, str(tmp_path / "out"))
    assert res["errors"] == []
    assert open(outside, "rb").read() == b"precious\n"
    assert open(outside2, "rb").read() == b"hard-linked\n" and os.lstat(outside2).st_nlink == 1
    assert_same(state(src), out)


def test_nested_and_sibling_roots_restore_completely(tmp_path):
    # Directories are stored as soon as the walk leaves them; a root nested in another root, and roots
    # sharing ancestors, must still end up complete (the nested root is walked after its parent).
    src = tmp_path / "src"
    for rel in ("a/one.txt", "a/b/two.txt", "a/b/c/three.txt", "d/four.txt", "e/f/five.txt"):
        write(src / rel, rel.encode() * 1000)
    os.link(src / "a/one.txt", src / "e/f/link-to-one")  # a hard link across directories
    roots = [str(src / "a"), str(src / "a/b/c"), str(src / "d"), str(src / "e")]
    with new_vault(tmp_path) as v:
        snap = api.backup(v, roots)
        for _ in range(2):  # unchanged incrementals reuse the same trees (below the roots' ancestors, which
            again = api.backup(v, roots)  # /tmp is among: another process may change its times meanwhile)
            assert v.find_node(again, str(src)).subtree == v.find_node(snap, str(src)).subtree
        api.restore(v, snap.id, str(tmp_path / "out"))  # (after: it changes the ancestors' times)
    out = tmp_path / "out" / str(src).lstrip("/")
    for rel in ("a/one.txt", "a/b/two.txt", "a/b/c/three.txt", "d/four.txt", "e/f/five.txt"):
        assert (out / rel).read_bytes() == (src / rel).read_bytes()
    assert os.stat(out / "e/f/link-to-one").st_ino == os.stat(out / "a/one.txt").st_ino


def test_a_damaged_recovery_point_does_not_stop_backups_or_other_restores(tmp_path):
    from recovault.errors import CorruptData
    src = tmp_path / "src"
    write(src / "a.txt", b"version one")
    with new_vault(tmp_path) as v:
        one = api.backup(v, [str(src)])
        write(src / "a.txt", b"version two")
        two = api.backup(v, [str(src)])
        path = tmp_path / "vault" / "snapshots" / two.id
        data = bytearray(path.read_bytes())
        data[40] ^= 1
        path.write_bytes(bytes(data))
        with pytest.raises(CorruptData, match=two.id[:8]):
            v.snapshots()  # strict listing names it
        three = api.backup(v, [str(src)])  # the damaged point is skipped, the backup completes
        assert three.id not in (one.id, two.id)
        with pytest.raises(CorruptData, match=two.id[:8]):
            api.restore(v, "latest", str(tmp_path / "r0"))  # never an older point passed off as latest
        api.restore(v, one.id[:10], str(tmp_path / "r1"))
        api.restore(v, three.id, str(tmp_path / "r3"))
    assert (tmp_path / "r1" / str(src).lstrip("/") / "a.txt").read_bytes() == b"version one"
    assert (tmp_path / "r3" / str(src).lstrip("/") / "a.txt").read_bytes() == b"version two"


def test_a_socket_is_a_warning_not_a_failed_restore(tmp_path):
    import socket as so
    src = tmp_path / "src"
    write(src / "a.txt", b"data")
    s = so.socket(so.AF_UNIX)
    s.bind(str(src / "sock"))
    try:
        with new_vault(tmp_path) as v:
            api.backup(v, [str(src)])
            res = api.restore(v, "latest", str(tmp_path / "out"))
    finally:
        s.close()
    assert res["errors"] == [] and any("sock" in w["path"] for w in res["warnings"])
    assert (tmp_path / "out" / str(src).lstrip("/") / "a.txt").read_bytes() == b"data"


def test_a_full_restore_target_stops_with_one_clear_error(tmp_path, small_tmpfs):
    from recovault.errors import StorageError
    src = tmp_path / "src"
    for i in range(20):
        write(src / f"f{i}.bin", os.urandom(200_000))
    with new_vault(tmp_path) as v:
        api.backup(v, [str(src)])
        with pytest.raises(StorageError, match="no space left on the restore target"):
            api.restore(v, "latest", str(small_tmpfs))


def test_a_stream_stored_inside_a_backed_up_directory_keeps_that_directory(tmp_path, monkeypatch):
    # The walk stores each directory as soon as it leaves it; a stream (or image) placed inside a backed-up
    # directory afterwards must be added to that directory, not replace it by a new, empty one.
    src = tmp_path / "src"
    write(src / "keep.txt", b"keep me")
    stream = tmp_path / "stream"
    stream.write_bytes(b"streamed bytes" * 1000)
    name = str(src / "sub" / "dump.sql").lstrip("/")
    with new_vault(tmp_path) as v, open(stream, "rb") as f:
        snap = api.backup(v, [str(src)], stdin_name=name, stdin_fd=f.fileno())
        api.restore(v, snap.id, str(tmp_path / "out"))
    out = tmp_path / "out" / str(src).lstrip("/")
    assert (out / "keep.txt").read_bytes() == b"keep me"
    assert (out / "sub" / "dump.sql").read_bytes() == stream.read_bytes()


# ---- big files: the C++ restore engine, from pack files or from ranges fetched when packs are not local -------
def _big_files(src) -> Dict[str, bytes]:
    """Files of many chunks (small_settings: 16K/64K/256K): random, compressible, with zero runs (aligned
    and not, whole chunks of zeros), and a sparse one with holes."""
    r = random.Random(11)
    files = {
        "random.bin": r.randbytes(3 << 20),
        "text.txt": b"".join(b"line %d of a compressible file\n" % i for i in range(60000)),
        "zeros-inside.bin": r.randbytes(300 << 10) + bytes(700 << 10) + r.randbytes(5000) + bytes(12345)
        + r.randbytes(400 << 10),
    }
    for name, data in files.items():
        write(src / name, data)
    with open(src / "sparse.img", "wb") as f:  # holes around data
        f.truncate(6 << 20)
        for off in (0, 2 << 20, (5 << 20) + 1000):
            f.seek(off)
            f.write(r.randbytes(300 << 10))
    files["sparse.img"] = (src / "sparse.img").read_bytes()
    return files


def test_big_files_engine_from_local_and_fetched_packs_restore_the_same(tmp_path, monkeypatch):
    from recovault.engine import BlobWriter
    from recovault.packfetch import PackCache
    src = tmp_path / "src"
    files = _big_files(src)
    outs = {}
    with new_vault(tmp_path) as v:
        snap = api.backup(v, [os.fsdecode(src)])
        for name in files:
            assert len(node_at(v, snap, os.path.join(b(src), name.encode())).content) > 4, name
        for engine in (True, False):  # False: packs as an object store's (no local path): ranges fetched
            runs, fetched = [], []
            with monkeypatch.context() as mp:
                real_run, real_fetch = BlobWriter.run, PackCache._get
                mp.setattr(BlobWriter, "run", lambda self, *a, **kw: runs.append(1) or real_run(self, *a, **kw))
                mp.setattr(PackCache, "_get", lambda self, *a: fetched.append(1) or real_fetch(self, *a))
                if not engine:
                    mp.setattr(v.storage, "local_path", lambda name: None)
                res = api.restore(v, snap.id, str(tmp_path / f"out-{engine}"), verify=True)
            assert res["errors"] == [] and res["stats"]["verified"] == len(files)
            assert len(runs) == len(files) and bool(fetched) == (not engine)
            outs[engine] = restored_root(tmp_path / f"out-{engine}", src)
    for name, data in files.items():
        e, p = os.path.join(outs[True], name.encode()), os.path.join(outs[False], name.encode())
        for path in (e, p):
            with open(path, "rb") as f:
                assert f.read() == data, name
        assert file_extents(e) == file_extents(p), f"{name}: holes differ between the engine and the Python path"
        assert os.stat(e).st_blocks == os.stat(p).st_blocks
    assert os.stat(os.path.join(outs[True], b"sparse.img")).st_blocks * 512 < 2 << 20  # holes came back


def file_extents(path):
    from recovault.fsmeta import data_extents
    fd = os.open(path, os.O_RDONLY)
    try:
        return data_extents(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def test_corrupt_chunk_of_a_big_file_is_named_and_the_rest_restored(tmp_path):
    from pathlib import Path
    src = tmp_path / "src"
    files = _big_files(src)
    with new_vault(tmp_path) as v:
        snap = api.backup(v, [os.fsdecode(src)])
        node = node_at(v, snap, os.path.join(b(src), b"random.bin"))
        cid = bytes.fromhex(node.content[3])
        loc = v.locate(cid)
        name = v.pack_name(loc.pack)
    pack = Path(tmp_path, "vault", *name.split("/"))
    os.chmod(pack, 0o644)
    raw = bytearray(pack.read_bytes())
    raw[loc.offset + 100] ^= 0x10
    pack.write_bytes(bytes(raw))
    with open_vault(tmp_path / "vault", tmp_path / "cache") as v:
        res = api.restore(v, snap.id, str(tmp_path / "out"))
    assert res["data_errors"] == 1 and len(res["errors"]) == 1, res["errors"]
    err = res["errors"][0]
    assert err["path"].endswith("random.bin")
    assert cid.hex()[:16] in err["error"] and name in err["error"] and "tampered" in err["error"]
    out = restored_root(tmp_path / "out", src)
    for fname, data in files.items():
        if fname != "random.bin":
            with open(os.path.join(out, fname.encode()), "rb") as f:
                assert f.read() == data, fname


def test_a_full_target_stops_a_big_file_restore_with_one_clear_error(tmp_path, small_tmpfs):
    from recovault.errors import StorageError, TargetFull
    src = tmp_path / "src"
    write(src / "big.bin", os.urandom(3 << 20))
    with new_vault(tmp_path) as v:
        snap = api.backup(v, [str(src)])
        assert len(node_at(v, snap, os.path.join(b(src), b"big.bin")).content) > 4
        with pytest.raises(StorageError, match="no space left on the restore target") as ei:
            api.restore(v, "latest", str(small_tmpfs))
        assert isinstance(ei.value, TargetFull)

