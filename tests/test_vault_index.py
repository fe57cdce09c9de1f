"""The index is an accelerator: a damaged index file is reported and skipped (its blobs are found in the
packs' own headers), `repair index` rebuilds it, `check` says what is affected, and backups running at the
same time leave every pack they store indexed. Most tests go through the CLI with a cold agent cache (a fresh
HOME: the disaster-recovery host)."""
from __future__ import annotations

import os
import random
import threading
import time
from typing import List

import pytest

from recovault import api
from recovault.vault import format as fmt
from recovault.vault.check import Checker
from recovault.vault.repair import repair_index
from recovault.vault.repo import Settings

from e2e_tree import assert_same, rand_bytes, restored_root, state, write
from test_cli import FAST_KDF, PASSPHRASE, Cli, api_vault, fails, json_docs, json_out, object_files, ok

TINY = Settings(min_size=4 << 10, avg_size=8 << 10, max_size=16 << 10, pack_size=16 << 10)


def _two_points(tmp_path):
    """A vault (small packs) with two recovery points of a small tree, made through the API."""
    src = tmp_path / "src"
    rng = random.Random(7)
    write(src / "big.bin", rand_bytes(rng, 3 << 20))
    write(src / "small.txt", b"small and untouched\n")
    vault = api_vault(tmp_path / "vault")
    with api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(tmp_path / "cache")) as v:
        api.backup(v, [os.fspath(src)])
        write(src / "mid.bin", rand_bytes(rng, 300_000))
        api.backup(v, [os.fspath(src)])
    return src, vault


def _damage(path: str, how: str) -> None:
    data = open(path, "rb").read()
    if how == "zeroed":
        data = bytes(len(data))
    elif how == "truncated":
        data = data[: len(data) // 2]
    else:  # one flipped byte
        data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
    os.chmod(path, 0o600)
    with open(path, "wb") as f:
        f.write(data)


def _packs_listed_by(vault: str, index: str) -> set:
    with api.open_vault(vault, PASSPHRASE, cache_dir=os.path.join(vault + "-cache")) as v:
        listed = fmt.decode_index(v.unseal(fmt.AAD_INDEX, open(index, "rb").read(), "index"))
        return {v.pack_name(p) for p in listed}


def _biggest_index(vault: str) -> str:
    return max(object_files(vault, "index"), key=os.path.getsize)


@pytest.mark.parametrize("how", ["zeroed", "truncated", "flipped"])
def test_a_damaged_index_with_a_cold_cache_is_reported_skipped_and_repaired(tmp_path, how):
    src, vault = _two_points(tmp_path)
    index = _biggest_index(vault)
    name = fmt.name_to_id(index)
    damaged_lists = _packs_listed_by(vault, index)
    _damage(index, how)
    expected = state(src)

    # listing the points never reads the index (it loads on first use of a blob): no index warning
    res = ok(Cli(tmp_path / "h1")("snapshots", "--vault", vault, "--json"))
    assert len(json_docs(res.stdout)[0]) == 2
    assert name not in res.stderr and "index" not in res.stderr

    res = ok(Cli(tmp_path / "h2")("restore", "--vault", vault, "latest", "--target", tmp_path / "out"))
    assert name in res.stderr and "no good index lists were read" in res.stderr
    assert_same(expected, restored_root(tmp_path / "out", src))

    res = Cli(tmp_path / "h3")("check", "--vault", vault, "--json")
    fails(res, 15, "index")
    report = json_docs(res.stdout)[0]
    assert report["damaged_indexes"] == [fmt.INDEX + name] and report["damaged_points"] == []
    assert report["stats"]["restorable"] == 2 and report["stats"]["packs_recovered"] > 0
    assert set(report["recovered_packs"]) >= damaged_lists  # which packs the damaged index affected
    assert any("repair index" in p for p in report["problems"])
    assert "skipped: the blobs it lists" not in res.stderr  # check reports the damage once, not also on opening

    # a full backup with a cold cache reads every file and still stores nothing again (dedup works on the
    # recovered blobs), and it indexes the packs it had to read: its recovery point depends on no unlisted
    # pack, and the next cold start no longer reads their headers
    snap = json_out(Cli(tmp_path / "h4")("backup", "--vault", vault, "--json", "--mode", "full", src))
    assert snap["stats"]["bytes_read"] > 3 << 20 and snap["stats"]["bytes_added"] == 0 and not snap["errors"]
    res = ok(Cli(tmp_path / "h5")("stats", "--vault", vault))  # stats loads the index (snapshots does not)
    assert name in res.stderr and "no good index lists were read" not in res.stderr

    res = json_out(Cli(tmp_path / "h6")("repair", "index", "--vault", vault, "--json"))
    assert fmt.INDEX + name in res["removed"] and res["unreadable_packs"] == []
    assert not os.path.exists(index)
    res = ok(Cli(tmp_path / "h7")("check", "--vault", vault, "--read-data", "--json"))
    report = json_docs(res.stdout)[0]
    assert report["ok"] and report["warnings"] == [] and report["stats"]["restorable"] == 3
    assert res.stderr == ""


def test_check_names_the_points_a_damaged_index_and_an_unreadable_pack_leave_unrestorable(tmp_path):
    """A damaged index and, among the packs it listed, one whose header is gone: the file whose data is
    there restores (exit 0 for it alone), check names the recovery points that are not whole."""
    src, vault = _two_points(tmp_path)
    with api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(tmp_path / "c0")) as v:
        first, second = v.snapshots()
        mid = v.find_node(second, os.path.join(os.fspath(src), "mid.bin"))
        mid_pack = v.pack_name(v.locate(bytes.fromhex(mid.content[0])).pack)
        index_of = {}
        for path in object_files(vault, "index"):
            listed = fmt.decode_index(v.unseal(fmt.AAD_INDEX, open(path, "rb").read(), "index"))
            index_of.update({v.pack_name(p): path for p in listed})
    _damage(index_of[mid_pack], "zeroed")
    pack = os.path.join(vault, mid_pack)
    os.chmod(pack, 0o600)
    with open(pack, "r+b") as f:
        f.truncate(os.path.getsize(pack) - 3)  # the trailer is gone: the header cannot be found

    res = ok(Cli(tmp_path / "h1")("restore", "--vault", vault, first.id, "--target", tmp_path / "out"))
    assert mid_pack in res.stderr
    assert open(os.path.join(restored_root(tmp_path / "out", src), b"small.txt"), "rb").read() == \
        b"small and untouched\n"
    res = Cli(tmp_path / "h2")("check", "--vault", vault, "--json")
    fails(res, 15)
    report = json_docs(res.stdout)[0]
    assert second.id in report["damaged_points"] and first.id not in report["damaged_points"]
    assert any(mid_pack in p for p in report["problems"])
    assert "1 of 2 recovery points fully restorable" in Cli(tmp_path / "h2")("check", "--vault", vault).stdout


@pytest.mark.parametrize("content", [b"", b"RVP", b"x" * 8, (1 << 30).to_bytes(4, "little") + fmt.PACK_MAGIC,
                                     "garbage"])
def test_check_read_data_reports_a_too_small_or_garbled_pack_and_goes_on(tmp_path, content):
    src, vault = _two_points(tmp_path)
    packs = object_files(vault, "data")
    victim = packs[len(packs) // 2]
    if content == "garbage":
        content = random.Random(3).randbytes(os.path.getsize(victim))
    os.chmod(victim, 0o600)
    with open(victim, "wb") as f:
        f.write(content)
    res = Cli(tmp_path / "h")("check", "--vault", vault, "--read-data", "--json")
    fails(res, 15, "problem")
    assert "internal error" not in res.stderr
    report = json_docs(res.stdout)[0]
    name = os.path.relpath(victim, vault)
    assert any(name in p and "corrupt" in p for p in report["problems"]), report["problems"]
    assert report["stats"]["packs_read"] == len(packs)  # it went on to every other pack


def test_parallel_backups_leave_every_pack_indexed(tmp_path):
    """Backups running at once into one vault store the same chunks twice (neither knows of the other's);
    every pack they stored is listed by an index file, and check says so (it once counted the packs that
    blob locations point at, one per blob, and called the others unindexed)."""
    src = tmp_path / "src"
    rng = random.Random(11)
    for i in range(30):
        write(src / f"f{i:02d}", rand_bytes(rng, 20_000))
    api.init_vault(os.fspath(tmp_path / "vault"), PASSPHRASE, settings=TINY, kdf=FAST_KDF,
                   cache_dir=os.fspath(tmp_path / "cache")).close()
    vaults = [api.open_vault(os.fspath(tmp_path / "vault"), PASSPHRASE, cache_dir=os.fspath(tmp_path / "cache"))
              for _ in range(4)]  # all open before any backup: they run as hosts starting at once do
    errors: List[BaseException] = []

    def run(v):
        try:
            with v:
                api.backup(v, [os.fspath(src)])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=run, args=(v,)) for v in vaults]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with api.open_vault(os.fspath(tmp_path / "vault"), PASSPHRASE, cache_dir=os.fspath(tmp_path / "c2")) as v:
        report = Checker(v).run()
        assert len(object_files(tmp_path / "vault", "data")) > 30  # each backup stored its own copies
        assert v.blobs.indexed_packs == {bytes.fromhex(fmt.name_to_id(p))
                                         for p in object_files(tmp_path / "vault", "data")}
    assert report["ok"] and report["warnings"] == [] and report["stats"]["restorable"] == 4


class _Crash(BaseException):
    pass


class _CrashingStorage:
    """Wraps a storage; the n-th put or delete raises _Crash instead (a kill -9 between two writes)."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.n = inner, n

    def _tick(self) -> None:
        self.n -= 1
        if self.n < 0:
            raise _Crash()

    def put(self, name, data):
        self._tick()
        self.inner.put(name, data)

    def delete(self, name):
        self._tick()
        self.inner.delete(name)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


def test_repair_index_interrupted_at_any_write_leaves_a_valid_vault(tmp_path):
    src, vault = _two_points(tmp_path)
    _damage(_biggest_index(vault), "flipped")
    expected = state(src)
    for n in range(0, 50):
        with api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(tmp_path / f"c{n}")) as v:
            v.blobs.storage = _CrashingStorage(v.storage, n)
            try:
                repair_index(v.blobs)
                finished = True
            except _Crash:
                finished = False
            v.blobs.storage = v.storage
        with api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(tmp_path / f"d{n}")) as v:
            report = Checker(v).run()
            assert report["damaged_points"] == [] and report["stats"]["restorable"] == 2, (n, report)
            assert all("cannot be located" not in p for p in report["problems"]), (n, report)
        if finished:
            assert report["ok"] and report["warnings"] == [], report
            break
    else:
        pytest.fail("repair never finished")
    with api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(tmp_path / "r")) as v:
        api.restore(v, "latest", os.fspath(tmp_path / "out"))
    assert_same(expected, restored_root(tmp_path / "out", src))


def test_an_index_file_that_fails_to_store_is_written_again_with_the_next_one(tmp_path):
    """The packs a failed index write would have listed stay queued: the next index file lists them."""
    from recovault.errors import StorageError
    vault = api_vault(tmp_path / "vault")
    with api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(tmp_path / "c")) as v:
        put = v.storage.put

        def failing_put(name, data):
            if name.startswith(fmt.INDEX):
                raise StorageError("no space left on device")
            put(name, data)
        v.storage.put = failing_put
        ids = [v.save_blob(fmt.BLOB_DATA, os.urandom(50_000)) for _ in range(3)]
        with pytest.raises(StorageError):
            v.flush()
        assert object_files(vault, "data") and not object_files(vault, "index")
        v.storage.put = put
    with api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(tmp_path / "c2")) as v:
        assert all(v.read_blob(i) for i in ids)
        assert Checker(v).run()["warnings"] == []


def test_an_index_file_replaced_while_the_vault_opens_is_found_by_listing_again(tmp_path):
    """A repair on another host stores new index files, then deletes the old one between this host's
    listing and its read: no damage is reported, and every blob is located from the new files."""
    src, vault = _two_points(tmp_path)
    with api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(tmp_path / "c0")) as v:
        before = dict(v.locations.items())
    from recovault.storage.local import LocalStorage
    real_get = LocalStorage.get
    replaced = []

    def get(self, name, offset=0, length=None):
        if name.startswith(fmt.INDEX) and not replaced:
            replaced.append(None)
            with api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(tmp_path / "c1")) as other:
                replaced[0] = repair_index(other.blobs)
        return real_get(self, name, offset, length)
    events = []
    LocalStorage.get = get
    try:
        v = api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(tmp_path / "c2"),
                           on_event=lambda kind, info: events.append(info))
        len(v.locations)  # the index loads on its first use, not on opening: list and read it here
    finally:
        LocalStorage.get = real_get
    with v:
        assert replaced and replaced[0].removed and events == [] and v.blobs.damaged_indexes == []
        assert dict(v.locations.items()) == before


def test_the_index_loads_on_first_use_once_whatever_the_threads(tmp_path, monkeypatch):
    """Opening a vault reads no index file; the first use of the index loads it, once: threads that ask at
    the same time all wait for that one load and all see every blob."""
    src, vault = _two_points(tmp_path)
    with api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(tmp_path / "c0")) as v:
        blobs = len(v.known)
    from recovault.storage.local import LocalStorage
    real_list = LocalStorage.list
    listings: List[str] = []

    def slow_list(self, prefix=""):
        if prefix == fmt.INDEX:
            listings.append(prefix)
            time.sleep(0.2)  # a slow listing: the other threads ask while this load runs
        return real_list(self, prefix)
    monkeypatch.setattr(LocalStorage, "list", slow_list)
    with api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(tmp_path / "c1")) as v:
        assert listings == [] and not v.blobs.index_loaded
        start = threading.Barrier(6)
        seen: List[int] = []
        uses = [lambda: len(v.known), lambda: len(v.locations), lambda: len(v.blobs.indexed_packs)]

        def use(i):
            start.wait()
            seen.append(uses[i % 3]())
        threads = [threading.Thread(target=use, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert listings == [fmt.INDEX] and len(seen) == 6
        assert seen.count(blobs) == 4 and set(seen) - {blobs} == {len(v.blobs.indexed_packs)}
        assert v.has_blob(next(iter(dict(v.locations.items())))) and listings == [fmt.INDEX]


def test_an_event_sink_that_looks_at_the_index_while_it_loads_does_not_load_it_again(tmp_path):
    """The damaged-index warning is sent while the index loads; a sink that then reads the vault's known IDs
    sees what is loaded so far instead of starting the load again (which would report the damage again)."""
    src, vault = _two_points(tmp_path)
    _damage(_biggest_index(vault), "flipped")
    seen = []
    with api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(tmp_path / "c1"),
                        on_event=lambda kind, info: seen.append((info["message"], len(v.known)))) as v:
        blobs = len(v.known)
    assert len([m for m, _ in seen if "skipped" in m]) == 1  # the damaged index file, reported once
    assert len(seen) == 2 and seen[0][1] < blobs and seen[1][1] == blobs  # damaged reported, then recovered
