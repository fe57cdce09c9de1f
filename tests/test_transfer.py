"""Transfer to and from object stores (issue 10), on the in-memory double (tests/memstore.py).

Interrupted backups ("resumable, with nothing lost"): a backup stopped by a failing store or by Ctrl-C saves
what it finished as a partial recovery point that restores byte for byte, says what happened in one message
naming the store and the operation, and the next backup uploads only what is missing. Fast transfer:
--connections uploads in parallel; restores read each pack's needed ranges once, in parallel."""
from __future__ import annotations

import json
import os
import random

import pytest

from memstore import STORES, MemoryStorage
from recovault.errors import Interrupted, StorageError
from recovault.jobs.backup import BackupJob, BackupOptions
from recovault.restore import RestoreJob
from recovault.vault import format as fmt
from recovault.vault.check import Checker
from recovault.vault.keys import KdfParams
from recovault.vault.repo import Settings, Vault

PASS = "correct horse battery staple"
FAST_KDF = KdfParams(memory_kib=8, iterations=1, lanes=1)
SETTINGS = Settings(min_size=16 << 10, avg_size=32 << 10, max_size=64 << 10, pack_size=128 << 10)
NFILES = 48


@pytest.fixture
def src(tmp_path):
    """48 files of 48 KiB of distinct random bytes (~18 packs of 128 KiB), in two directories."""
    rnd = random.Random(10)
    root = tmp_path / "src"
    for i in range(NFILES):
        d = root / ("a" if i < NFILES // 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:02}").write_bytes(rnd.randbytes(48 << 10))
    os.symlink("a/f00", root / "link")
    return root


def make_vault(tmp_path, store: MemoryStorage) -> None:
    Vault.create(store, PASS, settings=SETTINGS, kdf=FAST_KDF, cache_dir=str(tmp_path / "cache")).close()


def open_vault(tmp_path, store: MemoryStorage, cache: str = "cache", connections: int = 0) -> Vault:
    return Vault.open(store, PASS, cache_dir=str(tmp_path / cache), connections=connections)


def backup(tmp_path, store, paths, progress=None, connections: int = 0):
    with open_vault(tmp_path, store, connections=connections) as v:
        return BackupJob(v, BackupOptions(paths=[str(p) for p in paths]), progress).run()


def restored_files(tmp_path, store, point_id: str, target) -> dict:
    """Restore the point into `target`; return {relative path: bytes} of its regular files."""
    with open_vault(tmp_path, store) as v:
        point = v.find_snapshot(point_id)
        RestoreJob(v, point, str(target)).run()
    out = {}
    for dp, _dn, fns in os.walk(target):
        for fn in fns:
            p = os.path.join(dp, fn)
            if not os.path.islink(p):
                out[os.path.relpath(p, target)] = open(p, "rb").read()
    return out


def check_ok(v: Vault) -> None:
    checker = Checker(v)
    checker.run(read_data=True)
    assert checker.problems == []


def data_put_bytes(store: MemoryStorage) -> int:
    return sum(len(d) for n, (d, _t) in store.objects.items() if n.startswith(fmt.DATA))


class FailPuts:
    """Makes pack uploads fail: the ones after the first `after` (`times` of them; None: all of them)."""

    def __init__(self, after: int, times=None, prefix: str = fmt.DATA) -> None:
        self.after, self.times, self.prefix, self.seen, self.failed = after, times, prefix, 0, 0

    def __call__(self, op: str, name: str, size: int) -> bool:
        if op != "put" or not name.startswith(self.prefix):
            return False
        self.seen += 1
        if self.seen > self.after and (self.times is None or self.failed < self.times):
            self.failed += 1
            return True
        return False


def assert_subset_restores(tmp_path, store, point, src, name) -> dict:
    """The partial point restores; every file it holds is byte for byte the source's."""
    got = restored_files(tmp_path, store, point.id, tmp_path / name)
    prefix = str(src).lstrip("/")
    for rel, data in got.items():
        assert data == (src / os.path.relpath(rel, prefix)).read_bytes(), rel
    return got


def test_a_failed_upload_saves_a_partial_point_and_the_next_backup_uploads_only_what_is_missing(tmp_path, src):
    store = MemoryStorage("fail1")
    make_vault(tmp_path, store)
    store.fail_when = FailPuts(after=6, times=1)  # the 7th pack fails once, the store works again after
    with pytest.raises(StorageError) as ei:
        backup(tmp_path, store, [src])
    msg = str(ei.value)
    assert "storing pack data/" in msg and "mem://fail1" in msg and "connection reset" in msg
    assert "partial recovery point" in msg
    point = ei.value.point
    assert point.partial and not point.complete
    with open_vault(tmp_path, store) as v:
        [listed] = v.snapshots()
        assert listed.id == point.id and listed.partial
        check_ok(v)
    got = assert_subset_restores(tmp_path, store, point, src, "r1")
    assert 0 < len(got) < NFILES  # what was finished, and no more than that

    stored_before = data_put_bytes(store)
    store.fail_when = None
    store.reset_counts()
    done = backup(tmp_path, store, [src])
    assert done.complete and not done.partial and done.parent == point.id
    resumed = store.bytes["put"]
    full = MemoryStorage("full1")
    make_vault(tmp_path, full)
    backup(tmp_path, full, [src])
    assert resumed < data_put_bytes(full) - stored_before * 0.9  # the stored packs were not sent again
    got = restored_files(tmp_path, store, done.id, tmp_path / "r2")
    assert len(got) == NFILES


def test_a_store_that_stays_down_saves_no_point_but_the_indexed_packs_are_reused(tmp_path, src):
    store = MemoryStorage("dead")
    make_vault(tmp_path, store)
    store.fail_when = lambda op, name, size: op == "put" and name.startswith(fmt.DATA) and \
        sum(n.startswith(fmt.DATA) for n in store.objects) >= 9  # down for good after 9 packs
    with pytest.raises(StorageError) as ei:
        backup(tmp_path, store, [src], connections=1)
    msg = str(ei.value)
    assert "mem://dead" in msg and "saving what it finished failed too" in msg and not hasattr(ei.value, "point")
    with open_vault(tmp_path, store) as v:
        assert v.snapshots() == []
        check_ok(v)
    store.fail_when = None
    store.reset_counts()
    backup(tmp_path, store, [src])
    full = MemoryStorage("full2")
    make_vault(tmp_path, full)
    backup(tmp_path, full, [src])
    # the index written every 4 packs and on close lists the 9 packs: at most one pack's worth is sent again
    assert store.bytes["put"] < data_put_bytes(full) * 0.75


def test_a_directory_stored_before_the_failure_surfaced_keeps_its_stored_files(tmp_path, src):
    """Every file is read and every directory stored when the last data pack fails: the partial point
    still holds the files of those directories whose chunks were stored (their trees are read back)."""
    store = MemoryStorage("late")
    make_vault(tmp_path, store)
    failed = []

    def fail(op, name, size):
        if op == "put" and name.startswith(fmt.DATA) and size > 32 << 10 and not failed:
            failed.append(name)
            return True
        return False

    with open_vault(tmp_path, store, connections=1) as v:
        def progress(kind, info):
            if kind == "file" and info["path"].endswith(f"f{NFILES - 1:02}"):
                store.fail_when = fail  # the data pack flushed at the end fails: it holds at least this blob
                v.add_sealed(fmt.BLOB_DATA, bytes(32), os.urandom(40 << 10), 40 << 10)
        with pytest.raises(StorageError) as ei:
            BackupJob(v, BackupOptions(paths=[str(src)]), progress).run()
    assert failed and failed[0] in str(ei.value)
    got = assert_subset_restores(tmp_path, store, ei.value.point, src, "r1")
    assert NFILES - 6 <= len(got) <= NFILES  # less the files with a chunk in the lost pack, if any
    assert {os.path.basename(os.path.dirname(r)) for r in got} == {"a", "b"}


def test_ctrl_c_saves_every_file_read_so_far(tmp_path, src):
    store = MemoryStorage("ctrlc")
    make_vault(tmp_path, store)
    os.link(src / "a" / "f00", src / "a" / "h00")  # a later name of a file read before the interruption
    seen = []

    def progress(kind, info):
        if kind == "file":
            seen.append(info["path"])
            if len(seen) == 20:
                raise KeyboardInterrupt

    with pytest.raises(Interrupted) as ei:
        backup(tmp_path, store, [src], progress)
    assert "interrupted" in str(ei.value) and "partial recovery point" in str(ei.value)
    point = ei.value.point
    got = assert_subset_restores(tmp_path, store, point, src, "r1")
    prefix = str(src).lstrip("/")
    assert str(src / "a" / "f00") in seen
    assert sorted(str(src / os.path.relpath(r, prefix)) for r in got) == sorted(seen + [str(src / "a" / "h00")])
    with open_vault(tmp_path, store) as v:
        check_ok(v)
    assert not [n for n in store.objects if n.startswith("sessions/")]  # the writer's session is closed


def test_cli_names_the_store_and_lists_the_point_as_partial(tmp_path, src, monkeypatch, capsys):
    from recovault.cli import main
    store = STORES["cli"] = MemoryStorage("cli")
    make_vault(tmp_path, store)
    monkeypatch.setenv("RECOVAULT_PASSPHRASE", PASS)
    common = ["--vault", "mem://cli", "--cache-dir", str(tmp_path / "cache")]

    def run(*args):
        with pytest.raises(SystemExit) as ei:
            main(list(args) + common)
        out = capsys.readouterr()
        return ei.value.code, out.out, out.err

    store.fail_when = FailPuts(after=3, times=1)
    code, out, err = run("backup", str(src), "--json")
    assert code == StorageError.exit_code
    [line] = [x for x in err.splitlines() if x.startswith("recovault: error: ")]
    assert "storing pack data/" in line and "mem://cli" in line and "partial recovery point" in line
    doc = json.loads(out)
    assert doc["partial"] is True and doc["complete"] is False
    store.fail_when = None
    code, out, _ = run("snapshots")
    assert code == 0 and "(partial" in out
    code, out, _ = run("snapshots", "--json")
    assert [d["partial"] for d in json.loads(out)] == [True]
    code, out, _ = run("backup", str(src), "--json")
    assert code == 0 and "partial" not in json.loads(out)  # a complete point's document has no such key


@pytest.mark.parametrize("connections", [1, 4])
def test_connections_bound_the_uploads_in_flight(tmp_path, src, connections):
    """--connections N: N pack uploads at once on a slow store, never more (memory: about N + 1 packs)."""
    store = MemoryStorage(f"conn{connections}", latency=0.02)
    make_vault(tmp_path, store)
    store.reset_counts()
    point = backup(tmp_path, store, [src], connections=connections)
    assert store.in_flight_max == connections
    store.latency = 0
    assert len(restored_files(tmp_path, store, point.id, tmp_path / "r")) == NFILES


def test_connections_option_is_checked(tmp_path, monkeypatch, capsys):
    from recovault.cli import main
    with pytest.raises(SystemExit) as ei:
        main(["snapshots", "--connections", "0", "--vault", str(tmp_path)])
    assert ei.value.code == 2 and "--connections" in capsys.readouterr().err


def test_restore_from_an_object_store_reads_each_pack_once_in_parallel(tmp_path):
    """A big file restored from a store without local paths: the C++ engine gets each pack's needed ranges
    merged (one ranged get per pack here) and fetched on several connections, and writes the same bytes."""
    from recovault.engine import merged_spans
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(3).randbytes(3 << 20)
    (src / "big").write_bytes(data)
    store = MemoryStorage("restore", latency=0.01)
    make_vault(tmp_path, store)
    point = backup(tmp_path, store, [src])
    with open_vault(tmp_path, store) as v:
        node = v.find_node(point, str(src / "big"))
        packs = {v.pack_name(v.locate(bytes.fromhex(c)).pack) for c in node.content}
    assert len(packs) > 5
    store.reset_counts()
    got = restored_files(tmp_path, store, point.id, tmp_path / "r")
    assert list(got.values()) == [data]
    assert {p: store.gets[p] for p in packs} == {p: 1 for p in packs}
    assert store.in_flight_max > 1
    assert merged_spans([(100, 10), (0, 10), (5, 20), (2000, 5)], gap=1000) == [(0, 110), (2000, 5)]
    assert merged_spans([(0, 10), (2000, 5)], gap=100) == [(0, 10), (2000, 5)]


def test_small_files_from_an_object_store_are_restored_on_every_connection(tmp_path, src):
    store = MemoryStorage("small", latency=0.005)
    make_vault(tmp_path, store)
    point = backup(tmp_path, store, [src])
    with open_vault(tmp_path, store) as v:
        chunks = sum(1 for loc in v.locations.values() if loc.type == fmt.BLOB_DATA)
    store.reset_counts()
    assert len(restored_files(tmp_path, store, point.id, tmp_path / "r")) == NFILES
    assert store.in_flight_max > 2  # 2 file threads, 16 files a task, before
    # a file of a few chunks reads each of its packs once (the chunks of a file mostly share a pack)
    assert sum(c for n, c in store.gets.items() if n.startswith(fmt.DATA)) < chunks  # was one a chunk + trees


def test_check_read_data_reads_each_pack_once_on_several_connections(tmp_path, src):
    store = MemoryStorage("check", latency=0.005)
    make_vault(tmp_path, store)
    backup(tmp_path, store, [src])
    packs = [n for n in store.objects if n.startswith(fmt.DATA)]
    victim = packs[len(packs) // 2]
    data, mtime = store.objects[victim]
    store.objects[victim] = (data[:100] + bytes([data[100] ^ 1]) + data[101:], mtime)
    store.reset_counts()
    with open_vault(tmp_path, store) as v:
        checker = Checker(v)
        checker.run(read_data=True)
    assert checker.stats["packs_read"] == len(packs)
    assert {p: store.whole_gets[p] for p in packs} == {p: 1 for p in packs}
    # the header is taken from the bytes read (was 2 more ranged gets a pack); the rest: trees the walk reads
    assert sum(store.gets[p] for p in packs) < 2 * len(packs)
    assert store.in_flight_max > 1
    assert [m for m in checker.problems if victim in m]  # the damage is still found, in its pack


SLOW_BOOT = r"""
import time
from recovault.jobs import backup as _b
_orig = _b.BackupJob._file_read
def _slow(self, f, ev, contents):
    time.sleep(0.1)
    return _orig(self, f, ev, contents)
_b.BackupJob._file_read = _slow
from recovault.cli import main
main()
"""


def test_sigint_to_the_cli_saves_a_partial_point(tmp_path, src):
    """A real SIGINT to `recovault backup` (files slowed to 100 ms each: 4.8 s in all, so that a loaded machine
    still interrupts it half way): exit 130, one message, and a partial point that `snapshots` lists and
    `check --read-data` accepts."""
    import signal
    import subprocess
    import time
    from test_cli import Cli, api_vault, fails, json_out
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "vault")
    proc = subprocess.Popen(cli.cmd("backup", "--vault", vault, src, boot=SLOW_BOOT), env=cli.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.2)
    deadline = time.monotonic() + 30
    while not list((tmp_path / "vault" / "sessions").glob("*")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the backup has registered its session: it is under way
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    res = subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())
    fails(res, 130, "interrupted", "partial recovery point")
    [point] = json_out(cli("snapshots", "--json", "--vault", vault))
    assert point["partial"] is True
    assert json_out(cli("check", "--read-data", "--json", "--vault", vault))["ok"]


def test_trees_come_from_the_agent_cache_on_an_object_store(tmp_path, src):
    """An object store: a re-run and a restore read the trees they met before from the agent cache (no
    request); a damaged cached tree is not believed (the seal fails) but read again from the store."""
    store = MemoryStorage("trees")
    make_vault(tmp_path, store)
    point = backup(tmp_path, store, [src])
    tree_packs = set()
    with open_vault(tmp_path, store) as v:
        for loc in v.locations.values():
            if loc.type == fmt.BLOB_TREE:
                tree_packs.add(v.pack_name(loc.pack))
    assert tree_packs
    store.reset_counts()
    backup(tmp_path, store, [src])  # unchanged: it walks the base's trees
    assert not any(store.gets[p] for p in tree_packs), store.gets
    cached = list((tmp_path / "cache").glob("*/trees/*"))
    assert cached
    for f in cached:  # damage every cached tree: each must be read from the store again, and still be right
        f.write_bytes(b"\x00" * f.stat().st_size)
    store.reset_counts()
    files = restored_files(tmp_path, store, point.id, tmp_path / "out")
    assert sum(store.gets[p] for p in tree_packs) > 0  # the damaged copies were not used: read from the store
    repaired = [f for f in cached if f.read_bytes().strip(b"\x00")]
    assert repaired  # and cached again
    inner = str(src).lstrip("/")
    assert files == {os.path.join(inner, str(p.relative_to(src))): p.read_bytes()
                     for p in src.rglob("*") if p.is_file() and not p.is_symlink()}
