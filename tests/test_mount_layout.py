"""The browsable mount without the kernel: the directory model (recovault.mount_layout, pure), the FUSE
operations called in-process on it (no /dev/fuse needed), reading ahead from an object store (the in-memory
double, tests/memstore.py), and `mount` without pyfuse3. tests/test_mount.py mounts for real."""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import pytest

import recovault
from memstore import MemoryStorage
from recovault.mount_layout import (LatestLink, MetaDir, PointEntry, build_layout, file_name, id_names,
                                    time_name)
from recovault.timefmt import parse_time
from recovault.vault.keys import KdfParams
from recovault.vault.records import Node, RecoveryPoint

PASS = "correct horse battery staple"
FAST_KDF = KdfParams(memory_kib=8, iterations=1, lanes=1)
PYTHONPATH = str(Path(recovault.__file__).resolve().parent.parent)


def point(n: int, time: str, host: str = "web1", tags=(), sid: str = "") -> RecoveryPoint:
    return RecoveryPoint(time=time, host=host, paths=["/srv"], tree=f"{n:064x}", tags=list(tags),
                         id=sid or hashlib.sha256(b"%d" % n).hexdigest())


def names(d) -> List[str]:
    assert isinstance(d, MetaDir), d
    return sorted(d.entries)


# ---- the model ---------------------------------------------------------------------------------------------
def test_layout_groups_by_id_time_host_and_tag_with_latest_links():
    a = point(1, "2026-11-20T08:00:00.000001Z", "web1", ["daily"])
    b = point(2, "2026-11-21T08:00:00.500000Z", "db", ["daily", "weekly"])
    c = point(3, "2026-11-22T09:30:15.250000Z", "web1", [])
    root = build_layout([c, a, b])  # any order
    assert names(root) == ["hosts", "ids", "snapshots", "tags"]
    assert names(root.walk("ids")) == sorted(p.id[:8] for p in (a, b, c))
    assert root.walk(f"ids/{b.id[:8]}") == PointEntry(b)
    assert names(root.walk("snapshots")) == ["2026-11-20T08:00:00Z", "2026-11-21T08:00:00Z",
                                             "2026-11-22T09:30:15Z", "latest"]
    assert root.walk("snapshots/latest") == LatestLink("2026-11-22T09:30:15Z", c)
    assert root.walk("snapshots/2026-11-21T08:00:00Z") == PointEntry(b)
    assert names(root.walk("hosts")) == ["db", "web1"]
    assert names(root.walk("hosts/web1")) == ["2026-11-20T08:00:00Z", "2026-11-22T09:30:15Z", "latest"]
    assert root.walk("hosts/web1/latest") == LatestLink("2026-11-22T09:30:15Z", c)
    assert root.walk("hosts/db/latest") == LatestLink("2026-11-21T08:00:00Z", b)
    assert names(root.walk("tags")) == ["daily", "weekly"]
    assert names(root.walk("tags/daily")) == ["2026-11-20T08:00:00Z", "2026-11-21T08:00:00Z", "latest"]
    assert root.walk("tags/daily/latest") == LatestLink("2026-11-21T08:00:00Z", b)
    assert root.walk("tags/weekly/2026-11-21T08:00:00Z") == PointEntry(b)
    # directory times: the newest point under each
    assert root.time == root.walk("hosts").time == c.time
    assert root.walk("tags").time == root.walk("hosts/db").time == b.time


def test_an_empty_vault_has_the_four_empty_directories():
    root = build_layout([])
    assert names(root) == ["hosts", "ids", "snapshots", "tags"]
    assert all(names(root.walk(top)) == [] for top in ("ids", "snapshots", "hosts", "tags"))


def test_points_of_one_second_get_numbered_names_in_time_then_id_order():
    t = "2026-11-25T14:00:00.%06dZ"
    p1, p2 = point(1, t % 10, sid="b" * 64), point(2, t % 20, sid="a" * 64)
    p3 = point(3, t % 20, sid="c" * 64)  # the same instant as p2: the id decides
    root = build_layout([p3, p1, p2])
    snaps = root.walk("snapshots")
    assert snaps.entries["2026-11-25T14:00:00Z"] == PointEntry(p1)
    assert snaps.entries["2026-11-25T14:00:00Z-1"] == PointEntry(p2)
    assert snaps.entries["2026-11-25T14:00:00Z-2"] == PointEntry(p3)
    assert snaps.entries["latest"] == LatestLink("2026-11-25T14:00:00Z-2", p3)
    assert len(snaps.entries) == 4


def test_time_names_are_utc_to_the_second():
    assert time_name(point(1, "2026-11-25T14:00:59.999999Z")) == "2026-11-25T14:00:59Z"
    assert time_name(point(1, "2026-11-25T16:00:00+02:00")) == "2026-11-25T14:00:00Z"
    assert time_name(point(1, "not a time/really")) == "_not a time_really"


def test_id_names_are_the_shortest_unique_prefixes_of_at_least_8():
    ids = ["0123456789ab" + "0" * 52, "0123456789ac" + "1" * 52, "fedcba98" + "2" * 56]
    got = id_names([point(i, "2026-11-25T14:00:00.000000Z", sid=s) for i, s in enumerate(ids)])
    assert got == {ids[0]: "0123456789ab", ids[1]: "0123456789ac", ids[2]: "fedcba98"}


def test_host_and_tag_names_that_cannot_be_file_names():
    assert [file_name(x) for x in ("", ".", "..", "a/b", "nul\0x", "ok")] == ["_", "_", "__", "a_b", "nul_x", "ok"]
    assert file_name("bad\ud800name") == "bad?name"  # a lone surrogate (valid JSON): no file name holds it
    assert file_name("caf\udce9") == "caf\udce9"  # a non-UTF-8 byte, as os.fsdecode spells it: kept
    assert os.fsencode(file_name("caf\udce9")) == b"caf\xe9"
    t = "2026-11-25T14:00:00.000000Z"
    root = build_layout([point(1, t, "a/b", ["x/y", ".."]), point(2, t, "a_b", ["x_y"]), point(3, t, "", ["."])])
    # "a/b" and "a_b" are different hosts: two directories, never one holding both
    assert names(root.walk("hosts")) == ["_", "a_b", "a_b-1"]
    hosts = root.walk("hosts").entries
    assert {e.entries["latest"].point.host for e in hosts.values()} == {"a/b", "a_b", ""}
    assert names(root.walk("tags")) == ["_", "__", "x_y", "x_y-1"]


def test_2000_points_are_laid_out_from_their_records_in_well_under_a_second():
    hosts = [f"host{i}" for i in range(20)]
    pts = [point(i, f"2026-{1 + i % 12:02}-{1 + i % 28:02}T{i % 24:02}:{i % 60:02}:00.{i:06}Z", hosts[i % 20],
                 [f"t{i % 7}"]) for i in range(2000)]
    start = time.perf_counter()
    root = build_layout(pts)
    took = time.perf_counter() - start
    assert len(root.walk("ids").entries) == 2000
    assert len(root.walk("snapshots").entries) == 2001  # and latest
    assert sum(len(h.entries) - 1 for h in root.walk("hosts").entries.values()) == 2000
    assert took < 1.0, f"{took:.2f} s to lay out 2000 points"


# ---- the FUSE operations on the layout, in-process -------------------------------------------------------------
pyfuse3 = pytest.importorskip("pyfuse3", reason="pyfuse3 is a test dependency (recovault[fuse])")
from recovault.mount import RecoveryPointFS, _BlobCache, mount_info, read_ahead_threads  # noqa: E402


class TreeCountingVault:
    """A vault double that counts tree reads: every point's root tree holds one file, `f`."""

    def __init__(self) -> None:
        self.tree_reads: List[bytes] = []

    def load_nodes(self, tree_id: bytes) -> List[Node]:
        self.tree_reads.append(tree_id)
        return [Node(b"f", {"t": "f", "m": 0o644}, size=0, content=[])]


def listdir(fs, ino: int) -> List[bytes]:
    """What readdir answers for `ino`, through pyfuse3.readdir_reply (replaced: no kernel here), in batches
    of 100 as the kernel asks."""
    got: List[bytes] = []
    real = pyfuse3.readdir_reply
    batch: List[bytes] = []

    def reply(token, name, attr, next_id):
        if len(batch) == 100:
            return False
        batch.append(bytes(name))
        return True

    pyfuse3.readdir_reply = reply
    try:
        while True:
            batch.clear()
            call(fs.readdir, ino, len(got), None)
            if not batch:
                return got
            got += batch
    finally:
        pyfuse3.readdir_reply = real


def call(op, *args):
    """One FUSE operation, in-process: those the layout serves never wait for anything, so the coroutine
    ends at its first step (trio.run would cost more than the operation)."""
    coro = op(*args)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError(f"{op.__name__} waited")


def lookup(fs, path: bytes) -> int:
    ino = pyfuse3.ROOT_INODE
    for part in path.split(b"/"):
        ino = call(fs.lookup, ino, part).st_ino
    return ino


def test_listing_2000_points_through_fuse_operations_reads_no_tree():
    pts = [point(i, f"2026-11-{1 + i // 100:02}T00:{(i // 60) % 60:02}:{i % 60:02}.000000Z", f"h{i % 3}", ["t"])
           for i in range(2000)]
    vault = TreeCountingVault()
    fs = RecoveryPointFS(vault, None, points=pts)
    start = time.perf_counter()
    assert listdir(fs, pyfuse3.ROOT_INODE) == [b"hosts", b"ids", b"snapshots", b"tags"]
    listed = {top: listdir(fs, lookup(fs, top)) for top in (b"ids", b"snapshots", b"hosts/h1", b"tags/t")}
    for name in listed[b"snapshots"]:  # every entry's attributes, as `ls -l` asks
        call(fs.getattr, lookup(fs, b"snapshots/" + name), None)
    took = time.perf_counter() - start
    assert len(listed[b"ids"]) == 2000 and len(listed[b"snapshots"]) == 2001
    assert len(listed[b"hosts/h1"]) == 667 + 1 and len(listed[b"tags/t"]) == 2001
    assert vault.tree_reads == [], "listing the points read trees"
    assert took < 2.0, f"{took:.2f} s to list 2000 points (about 0.1 s on an idle machine)"
    # entering a point reads its tree, once
    latest = lookup(fs, b"hosts/h1/latest")
    target = call(fs.readlink, latest, None)
    newest_h1 = max((p for p in pts if p.host == "h1"), key=lambda p: (p.time, p.id))
    assert target == time_name(newest_h1).encode()
    assert listdir(fs, lookup(fs, b"hosts/h1/" + target)) == [b"f"]
    assert vault.tree_reads == [bytes.fromhex(newest_h1.tree)]
    attr = call(fs.getattr, lookup(fs, b"hosts/h1/" + target), None)
    assert stat.S_ISDIR(attr.st_mode) and attr.st_mtime_ns // 10**9 == int(parse_time(newest_h1.time).timestamp())
    assert stat.S_ISLNK(call(fs.getattr, latest, None).st_mode)


def test_a_changed_set_of_points_rebuilds_the_layout_keeping_the_directories_inodes():
    """As restic's mount: the points are listed again (at most every refresh_seconds) when a directory of
    the layout is used; a new backup appears, a forgotten point goes, `latest` follows; a failed listing
    keeps the old layout and is reported."""
    a = point(1, "2026-11-20T08:00:00.000000Z", "web1")
    b = point(2, "2026-11-21T08:00:00.000000Z", "web1")
    served = [a]
    events: List = []

    class Vault(TreeCountingVault):
        index_loads = 0

        def load_index(self) -> int:
            self.index_loads += 1
            return 1

    def list_points():
        if served is None:
            raise OSError("store unreachable")
        return list(served)

    vault = Vault()
    fs = RecoveryPointFS(vault, None, lambda kind, info: events.append((kind, info)), points=served,
                         list_points=list_points, refresh_seconds=0)
    web1 = lookup(fs, b"hosts/web1")
    assert listdir(fs, web1) == [b"2026-11-20T08:00:00Z", b"latest"]
    assert vault.index_loads == 0  # unchanged: nothing reloaded
    served = [a, b]
    assert lookup(fs, b"hosts/web1") == web1  # the same inode
    assert listdir(fs, web1) == [b"2026-11-20T08:00:00Z", b"2026-11-21T08:00:00Z", b"latest"]
    assert call(fs.readlink, lookup(fs, b"hosts/web1/latest"), None) == b"2026-11-21T08:00:00Z"
    assert vault.index_loads == 1  # the new point's blobs
    served = [point(3, "2026-11-22T08:00:00.000000Z", "db")]  # web1's points forgotten, a new host
    assert listdir(fs, pyfuse3.ROOT_INODE) == [b"hosts", b"ids", b"snapshots", b"tags"]
    assert listdir(fs, lookup(fs, b"hosts")) == [b"db"]
    assert listdir(fs, web1) == []  # still open somewhere: shown empty
    served = None  # the store fails: the layout stays, the failure is reported
    assert listdir(fs, lookup(fs, b"hosts")) == [b"db"]
    assert [k for k, _ in events] == ["error"] and "store unreachable" in events[0][1]["message"]
    assert call(fs.getattr, web1, None).attr_timeout == 1  # the kernel asks again soon


def test_without_list_points_the_layout_never_changes():
    fs = RecoveryPointFS(TreeCountingVault(), None, points=[point(1, "2026-11-20T08:00:00.000000Z")],
                         refresh_seconds=0)
    assert listdir(fs, lookup(fs, b"hosts")) == [b"web1"]


def test_mount_info_names_each_point_s_directory():
    a, b = point(1, "2026-11-21T00:00:00.000000Z", "db", ["x"]), point(2, "2026-11-20T00:00:00.000000Z")
    info = mount_info("/mnt/v", None, [a, b]).to_json()
    assert info["mountpoint"] == "/mnt/v" and info["pid"] == os.getpid() and info["snapshot"] is None
    assert info["layout"] == "browse"
    assert [p["id"] for p in info["points"]] == [b.id, a.id]  # oldest first
    assert info["points"][1] == {"id": a.id, "time": a.time, "host": "db", "tags": ["x"], "dir": f"ids/{a.id[:8]}"}
    one = mount_info("/mnt/p", a, [a]).to_json()
    assert one["snapshot"] == a.id and one["layout"] == "point" and one["points"][0]["dir"] == ""


# ---- reading ahead from an object store ----------------------------------------------------------------------
def _store_with_one_file(tmp_path, latency: float):
    from recovault.jobs.backup import BackupJob, BackupOptions
    from recovault.vault.repo import Settings, Vault
    store = MemoryStorage("readahead", latency=0.0)
    kdf = FAST_KDF
    settings = Settings(min_size=16 << 10, avg_size=32 << 10, max_size=64 << 10, pack_size=128 << 10)
    Vault.create(store, PASS, settings=settings, kdf=kdf, cache_dir=str(tmp_path / "cache")).close()
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(1 << 20)
    (src / "big").write_bytes(data)
    with Vault.open(store, PASS, cache_dir=str(tmp_path / "cache")) as v:
        snap = BackupJob(v, BackupOptions(paths=[str(src)])).run()
    store.latency = latency
    return store, data, snap, src


def _file_inode(fs, src) -> int:
    return lookup(fs, os.fsencode(src).lstrip(b"/") + b"/big")


def test_a_file_read_in_sequence_is_read_ahead_in_parallel_without_reading_a_chunk_twice(tmp_path):
    from recovault.vault.repo import Vault
    store, data, snap, src = _store_with_one_file(tmp_path, latency=0.02)
    with Vault.open(store, PASS, cache_dir=str(tmp_path / "cache"), connections=4) as v:
        assert read_ahead_threads(v) == 4
        fs = RecoveryPointFS(v, snap, read_ahead=read_ahead_threads(v))
        try:
            ino = _file_inode(fs, src)
            chunks = len(fs.inodes[ino].node.content)
            assert chunks >= 12, chunks
            store.reset_counts()
            out = bytearray()
            for off in range(0, len(data), 128 << 10):  # as the kernel asks: 128 KiB at a time
                out += fs._read(ino, off, 128 << 10)
            assert bytes(out) == data
            assert store.in_flight_max >= 3, "chunks were not read ahead in parallel"
            assert store.requests["get"] == chunks, "a chunk was read twice (or read whole packs)"
        finally:
            fs.close()


def test_random_reads_read_only_what_they_touch(tmp_path):
    from recovault.vault.repo import Vault
    store, data, snap, src = _store_with_one_file(tmp_path, latency=0.0)
    with Vault.open(store, PASS, cache_dir=str(tmp_path / "cache"), connections=4) as v:
        fs = RecoveryPointFS(v, snap, read_ahead=4)
        try:
            ino = _file_inode(fs, src)
            fs._read(ino, 0, 10)  # a read at 0 counts as in sequence: it reads ahead
            store.reset_counts()
            fs.close()  # wait for that read-ahead
            fs.cache = _BlobCache(v, workers=4)
            for off in (700_000, 300_000, 900_000):  # not in sequence: only the chunk(s) of each read
                assert fs._read(ino, off, 100) == data[off:off + 100]
            assert store.requests["get"] == 3
        finally:
            fs.close()


def test_an_image_read_in_sequence_is_read_ahead_too(tmp_path):
    from recovault.jobs.backup import BackupJob, BackupOptions
    from recovault.vault.repo import Vault
    store, _, _, _ = _store_with_one_file(tmp_path, latency=0.0)
    img = tmp_path / "disk.img"
    data = bytearray(os.urandom(1 << 20))
    data[256 << 10:320 << 10] = bytes(64 << 10)  # a zero block: no blob, never asked for
    img.write_bytes(data)
    with Vault.open(store, PASS, cache_dir=str(tmp_path / "cache")) as v:
        snap = BackupJob(v, BackupOptions(paths=[], images=[str(img)], image_block_size=64 << 10)).run()
    store.latency = 0.02

    def read_all(read_ahead: int) -> int:
        """Read the image in sequence as the kernel does; the requests it took."""
        with Vault.open(store, PASS, cache_dir=str(tmp_path / f"cache-{read_ahead}"), connections=4) as v:
            fs = RecoveryPointFS(v, snap, read_ahead=read_ahead)
            try:
                ino = lookup(fs, os.fsencode(img).lstrip(b"/"))
                store.reset_counts()
                out = bytearray(fs._read(ino, 0, 1))
                for off in range(1, len(data), 128 << 10):
                    out += fs._read(ino, off, 128 << 10)
                assert bytes(out) == bytes(data)
            finally:
                fs.close()
        return store.requests["get"]

    alone = read_all(0)
    assert store.in_flight_max == 1
    assert read_all(4) == alone, "a block was read twice, or the zero block was read"
    assert store.in_flight_max >= 3, "image blocks were not read ahead in parallel"


def test_a_local_vault_reads_no_further_than_asked(tmp_path):
    from recovault import api
    v = api.init_vault(str(tmp_path / "vault"), PASS, cache_dir=str(tmp_path / "cache"), kdf=FAST_KDF)
    try:
        assert read_ahead_threads(v) == 0
    finally:
        v.close()


def test_a_failed_read_ahead_fails_only_the_read_that_waited_for_it():
    """A get of a blob whose read-ahead is under way waits for it and gets its error (one EIO for that
    FUSE read); the blob is not left marked as under way, so the next get reads it again."""
    release = threading.Event()

    class Flaky:
        def __init__(self) -> None:
            self.calls = 0

        def read_blob(self, blob_id: bytes) -> bytes:
            self.calls += 1
            if self.calls == 1:
                release.wait(10)
                raise OSError("connection reset")
            return blob_id * 2

    vault = Flaky()
    cache = _BlobCache(vault, workers=2)
    try:
        cache.prefetch([b"bad"])
        timer = threading.Timer(0.1, release.set)
        timer.start()
        with pytest.raises(OSError, match="connection reset"):
            cache.get(b"bad")
        timer.join()
        assert cache.get(b"bad") == b"badbad" and vault.calls == 2
        assert cache.get(b"bad") == b"badbad" and vault.calls == 2  # now cached
    finally:
        cache.close()
    assert not cache.pending


# ---- the mount point ------------------------------------------------------------------------------------------
def test_a_mount_point_must_be_a_free_directory(tmp_path, monkeypatch):
    from recovault.errors import MountBusy, UsageError
    from recovault.mount import check_mountpoint
    assert check_mountpoint(str(tmp_path)) == str(tmp_path)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    assert check_mountpoint("sub") == str(tmp_path / "sub")  # absolute: the mount and its report use it
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is not a directory"):
        check_mountpoint(str(tmp_path / "file"))
    with pytest.raises(UsageError, match="does not exist"):
        check_mountpoint(str(tmp_path / "missing"))
    with pytest.raises(MountBusy, match="is in use") as ei:
        check_mountpoint("/")  # always a mount point
    assert ei.value.exit_code == 20


# ---- without pyfuse3 ------------------------------------------------------------------------------------------
def test_mount_without_pyfuse3_says_how_to_get_it_before_anything_else(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "pyfuse3.py").write_text("raise ImportError('No module named pyfuse3 (blocked by the test)')\n")
    env = dict(os.environ, PYTHONPATH=f"{blocker}:{PYTHONPATH}", HOME=str(tmp_path))
    env.pop("RECOVAULT_PASSPHRASE", None)
    env.pop("RECOVAULT_VAULT", None)
    for args in (["mount", "/nonexistent/mnt"],  # no vault, no mount point: still the FUSE hint first
                 ["mount", "--vault", str(tmp_path / "no-vault"), "latest", str(tmp_path)],
                 ["mount", "--json", str(tmp_path)]):
        p = subprocess.run([sys.executable, "-m", "recovault.cli", *args], capture_output=True, text=True,
                           env=env, stdin=subprocess.DEVNULL, timeout=60)
        assert p.returncode == 2, (args, p.stderr)
        assert "pip install 'recovault[fuse]'" in p.stderr or "pip install 'recovault[fuse]'" in p.stdout, p
        assert "vault" not in p.stderr.replace("recovault", ""), p.stderr  # nothing about the vault first
        assert "passphrase" not in p.stderr.lower()
        assert "Traceback" not in p.stderr
