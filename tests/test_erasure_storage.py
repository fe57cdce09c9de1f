"""The erasure-coded storage layer (storage/erasure.py, docs/vault-format.md §13): shards and their checksums,
reads around lost locations and rotten bytes, ranged reads of only the shards they need, the set's descriptors
checked at init and open, and a vault on ec:4+2 through the CLI. The Storage contract itself runs on ec:2+1 and
ec:4+2 in test_storage_contract.py."""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from recovault import core
from recovault.errors import CorruptData, ObjectMissing, StorageError, UsageError, VaultNotFound
from recovault.storage import open_storage
from recovault.storage.erasure import (
    BLOCK,
    DESCRIPTOR,
    HEADER_SIZE,
    TAG,
    ErasureStorage,
    Location,
    open_erasure,
    parse_header,
)
from recovault.storage.local import LocalStorage
from recovault.storage.wrappers import StorageWrapper

from e2e_tree import assert_same, build_tree, flip_byte, restored_root, state
from test_cli import Cli, api_vault, fails, json_out, ok


def ec_location(root: Path, k: int, m: int) -> str:
    return f"ec:{k}+{m}:" + ",".join(str(root / f"d{i}") for i in range(k + m))


def shard_file(root: Path, i: int, name: str) -> Path:
    return root / f"d{i}" / name


class Counting(StorageWrapper):
    """Counts the gets (and their bytes) of one location."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.gets: List[tuple] = []

    def get(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        data = self._inner.get(name, offset, length)
        self.gets.append((name, offset, length, len(data)))
        return data


def counted(root: Path, k: int, m: int) -> ErasureStorage:
    """The set at ``root`` (created first) with a request counter on each location."""
    open_storage(ec_location(root, k, m), create=True).close()
    return ErasureStorage(k, m, [Location(str(root / f"d{i}"), Counting(LocalStorage(root / f"d{i}")), "")
                                 for i in range(k + m)])


# -- the shard format --------------------------------------------------------------------------------


def test_shards_are_the_kernels_with_headers_and_block_tags(tmp_path: Path) -> None:
    """Each location holds its shard of the object: a header naming K, M, its index and the object's length,
    then the kernel's shard in 64 KiB blocks, each followed by a 32-byte tag; the overhead of a 16 MiB pack
    stays within 2% of (K+M)/K."""
    s = open_storage(ec_location(tmp_path, 4, 2), create=True)
    data = random.Random(1).randbytes(16 << 20)
    s.put("data/ab/abcd", data)
    expected = core.ErasureCode(4, 2).encode(data)
    total = 0
    for i in range(6):
        raw = shard_file(tmp_path, i, "data/ab/abcd").read_bytes()
        total += len(raw)
        h = parse_header("data/ab/abcd", raw)
        assert h is not None and (h.k, h.m, h.index, h.length, h.shard_size) == (4, 2, i, len(data), 4 << 20)
        assert h.digest == core.blake3(data)
        payload = b"".join(raw[HEADER_SIZE + j * (BLOCK + TAG):HEADER_SIZE + j * (BLOCK + TAG) + BLOCK]
                           for j in range(h.blocks()))
        assert payload == expected[i]
        assert parse_header("data/ab/abce", raw) is None  # bound to the object's name
    assert total / len(data) <= 1.5 * 1.02
    assert s.stat("data/ab/abcd").size == len(data)
    s.close()
    assert s.get("data/ab/abcd", (4 << 20) - 5, 10) == data[(4 << 20) - 5:(4 << 20) + 5]  # usable after close
    s.close()


def test_ranged_reads_touch_only_the_shards_they_need(tmp_path: Path) -> None:
    """A range inside one data shard reads only that shard's blocks (plus one header read per location the
    first time an object is read); a range across a shard boundary reads the two shards."""
    s = counted(tmp_path, 4, 2)
    data = os.urandom(1 << 20)  # 256 KiB per shard: 4 blocks each
    s.put("data/00/0001", data)
    assert s.get("data/00/0001", 10, 100) == data[10:110]
    first = [len(loc.storage.gets) for loc in s.locations]
    assert first == [2, 1, 1, 1, 0, 0]  # the headers of K locations (they agree), then one block of shard 0
    for loc in s.locations:
        loc.storage.gets.clear()
    assert s.get("data/00/0001", (1 << 18) * 2 + 70_000, 1000) == data[(1 << 19) + 70_000:(1 << 19) + 71_000]
    reads = [loc.storage.gets for loc in s.locations]
    assert [len(r) for r in reads] == [0, 0, 1, 0, 0, 0]
    assert reads[2][0][3] == BLOCK + TAG  # one block (the second of shard 2) with its tag
    for loc in s.locations:
        loc.storage.gets.clear()
    assert s.get("data/00/0001", (1 << 18) - 5, 10) == data[(1 << 18) - 5:(1 << 18) + 5]
    assert [len(loc.storage.gets) for loc in s.locations] == [1, 1, 0, 0, 0, 0]
    s.close()


def test_a_lost_data_shard_is_rebuilt_from_k_shards_on_the_same_blocks(tmp_path: Path) -> None:
    s = counted(tmp_path, 4, 2)
    data = os.urandom(1 << 20)
    s.put("data/00/0002", data)
    shard_file(tmp_path, 1, "data/00/0002").unlink()
    s.get("data/00/0002", 0, 1)  # the header is now known
    for loc in s.locations:
        loc.storage.gets.clear()
    assert s.get("data/00/0002", (1 << 18) + 5, 10) == data[(1 << 18) + 5:(1 << 18) + 15]
    sizes = [[g[3] for g in loc.storage.gets] for loc in s.locations]
    assert sizes[1] == [] or all(n == 0 for n in sizes[1])  # shard 1 is gone
    assert sum(1 for r in sizes if any(r)) == 4  # any 4 others, one block each
    assert all(n == BLOCK + TAG for r in sizes for n in r if n)
    s.close()


@pytest.mark.parametrize("where", ["header", "payload", "tag", "truncated", "misplaced"])
def test_damaged_shards_are_detected_and_read_around(tmp_path: Path, where: str) -> None:
    """A flipped byte anywhere in a shard (header, payload, block tag), a truncated shard, or a shard
    at another location than its own: that shard counts as missing and the object still reads whole and by range."""
    s = open_storage(ec_location(tmp_path, 2, 1), create=True)
    data = os.urandom(200_000)
    s.put("data/11/1111", data)
    f0, f1 = shard_file(tmp_path, 0, "data/11/1111"), shard_file(tmp_path, 1, "data/11/1111")
    if where == "header":
        flip_byte(f0, 9)
    elif where == "payload":
        flip_byte(f0, HEADER_SIZE + BLOCK + TAG + 17)
    elif where == "tag":
        flip_byte(f0, HEADER_SIZE + BLOCK + TAG + (100_000 - BLOCK) + 3)  # the tag of block 1
    elif where == "truncated":
        os.truncate(f0, f0.stat().st_size - 1)
    else:  # location 1 holds location 2's shard (a disk put back in the wrong slot)
        f0.write_bytes(f1.read_bytes())
    s.close()
    s = open_storage(ec_location(tmp_path, 2, 1))
    assert s.get("data/11/1111") == data
    assert s.get("data/11/1111", BLOCK + 100, 5000) == data[BLOCK + 100:BLOCK + 5100]
    assert s.stat("data/11/1111").size == len(data)
    if where == "misplaced":
        return
    flip_byte(shard_file(tmp_path, 2, "data/11/1111"), HEADER_SIZE + BLOCK + TAG + 200)  # fewer than K left
    s.close()
    s = open_storage(ec_location(tmp_path, 2, 1))
    if where == "header":  # its blocks are intact: they are checked against the header the other shards carry
        assert s.get("data/11/1111", BLOCK + 100, 10) == data[BLOCK + 100:BLOCK + 110]
    else:
        with pytest.raises(CorruptData, match=r"fewer than 2 of its 3 shards.*location 1 .*corrupt"):
            s.get("data/11/1111", BLOCK + 100, 10)
    s.close()


def test_rot_in_more_than_m_shards_is_read_around_block_by_block(tmp_path: Path) -> None:
    """On 2+1, a rotten block in each of the three shards, each in another column of blocks: every column still
    has two intact blocks, so the object reads whole (each block rebuilt from its own column)."""
    s = open_storage(ec_location(tmp_path, 2, 1), create=True)
    data = os.urandom(6 * BLOCK - 1000)  # three blocks per shard
    s.put("data/22/2222", data)
    for i in range(3):
        flip_byte(shard_file(tmp_path, i, "data/22/2222"), HEADER_SIZE + i * (BLOCK + TAG) + 99)
    s.close()
    s = open_storage(ec_location(tmp_path, 2, 1))
    assert s.get("data/22/2222") == data
    assert s.get("data/22/2222", 10, 3 * BLOCK) == data[10:10 + 3 * BLOCK]
    flip_byte(shard_file(tmp_path, 0, "data/22/2222"), HEADER_SIZE + 1 * (BLOCK + TAG) + 5)  # column 1: one left
    with pytest.raises(CorruptData, match="location 1 .*corrupt.*location 2 .*corrupt"):
        s.get("data/22/2222")
    s.close()


def test_fewer_than_k_shards_name_the_locations_missing(tmp_path: Path) -> None:
    s = open_storage(ec_location(tmp_path, 2, 2), create=True)
    s.put("index/" + "a" * 64, b"x" * 5000)
    for i in (0, 2, 3):
        shard_file(tmp_path, i, "index/" + "a" * 64).unlink()
    with pytest.raises(ObjectMissing) as exc:
        s.get("index/" + "a" * 64)
    msg = str(exc.value)
    assert "fewer than 2 of its 4 shards are intact" in msg
    assert [f"location {i + 1} ({tmp_path / f'd{i}'}): missing" in msg for i in range(4)] == [True, False, True, True]
    assert list(s.list("index/")) == []  # an object exists when K shards do: for a listing, a stat, a get
    assert not s.exists("index/" + "a" * 64)
    with pytest.raises(ValueError, match="reserved"):
        s.get(DESCRIPTOR)
    s.close()


def test_an_interrupted_overwrite_reads_as_one_version(tmp_path: Path) -> None:
    """A put again (a session's heartbeat) interrupted after some shards: readers get the old or the new
    object whole, never a mix of the two."""
    s = open_storage(ec_location(tmp_path, 2, 2), create=True)
    old, new = b"old heartbeat " * 100, b"NEW heartbeat " * 100
    s.put("sessions/" + "1" * 32, old)
    saved = [shard_file(tmp_path, i, "sessions/" + "1" * 32).read_bytes() for i in range(4)]
    s.put("sessions/" + "1" * 32, new)
    shard_file(tmp_path, 0, "sessions/" + "1" * 32).write_bytes(saved[0])  # shard 0 still old
    s.close()
    s = open_storage(ec_location(tmp_path, 2, 2))
    assert s.get("sessions/" + "1" * 32) == new
    assert s.get("sessions/" + "1" * 32, 3, 20) == new[3:23]
    s.close()


# -- init and open -----------------------------------------------------------------------------------


@pytest.mark.parametrize("location,needle", [
    ("ec:0+2:a,b", "K must be at least 1"),
    ("ec:2+0:a,b", "M at least 1"),
    ("ec:200+60:a", "at most 255"),
    ("ec:2+1:a,b", "2+1 needs 3 locations, got 2"),
    ("ec:2+1:a,,c", "an empty one"),
    ("ec:x+1:a,b", "ec:K+M:LOC1"),
    ("ec:2+1:a,b,ec:1+1:c,d", "cannot itself be"),
])
def test_bad_ec_locations_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, location: str,
                                      needle: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=needle.replace("+", r"\+")):
        open_storage(location, create=True)
    assert list(tmp_path.iterdir()) == []


def test_a_location_given_twice_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "d"
    loc = f"ec:2+1:{d},{tmp_path / 'e'},{tmp_path / 'x' / '..' / 'd'}"
    with pytest.raises(UsageError, match="location 3 .* is location 1 .* again"):
        open_storage(loc, create=True)
    assert not d.exists() and not (tmp_path / "e").exists()


def test_init_refuses_a_location_of_another_vault_or_set(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    api_vault(plain)
    with pytest.raises(UsageError, match="location 2 .*plain.* already holds a vault"):
        open_storage(f"ec:1+1:{tmp_path / 'a'},{plain}", create=True)
    assert not (tmp_path / "a").exists()  # nothing written, no directory made
    open_storage(ec_location(tmp_path / "set1", 2, 1), create=True).close()
    mixed = f"ec:2+1:{tmp_path / 'n0'},{tmp_path / 'n1'},{tmp_path / 'set1' / 'd2'}"
    with pytest.raises(UsageError, match=r"location 3 .* already belongs to another erasure-coded set"):
        open_storage(mixed, create=True)
    assert not (tmp_path / "n0").exists() and not (tmp_path / "n1").exists()
    # the same set again (init on an existing set): its descriptors are kept; the vault's init then says so
    again = open_storage(ec_location(tmp_path / "set1", 2, 1), create=True)
    assert isinstance(again, ErasureStorage)
    again.close()


def test_open_checks_the_descriptors(tmp_path: Path) -> None:
    open_storage(ec_location(tmp_path / "s", 2, 1), create=True).close()
    open_storage(ec_location(tmp_path / "t", 2, 1), create=True).close()
    d = [tmp_path / "s" / f"d{i}" for i in range(3)]
    with pytest.raises(UsageError, match="location 1 .* is location 2 of an ec:2\\+1 set"):
        open_storage(f"ec:2+1:{d[1]},{d[0]},{d[2]}")
    with pytest.raises(UsageError, match="belongs to another erasure-coded set"):
        open_storage(f"ec:2+1:{d[0]},{d[1]},{tmp_path / 't' / 'd2'}")
    with pytest.raises(VaultNotFound, match="no erasure-coded vault"):
        open_storage(ec_location(tmp_path / "empty", 2, 1).replace("empty/d0", "s/../empty0"))


def test_fewer_than_k_locations_reachable_is_one_message_and_nothing_written(tmp_path: Path) -> None:
    loc = ec_location(tmp_path, 2, 2)
    open_storage(loc, create=True).close()
    shutil.rmtree(tmp_path / "d0")
    shutil.rmtree(tmp_path / "d3")
    s = open_storage(loc)  # K of 4 are enough to read
    with pytest.raises(StorageError, match=r"location 1 \(.*d0\) not reachable .*; location 4 \(.*d3\) not reachable"):
        s.put("data/00/00aa", b"x")
    assert not (tmp_path / "d1" / "data").exists()  # nothing written
    s.close()
    (tmp_path / "d1" / DESCRIPTOR).unlink()
    with pytest.raises(StorageError, match=r"only 1 of its 4 locations are reachable, 2 needed; missing: .*d0.*d1"
                                           r".*d3") as exc:
        open_storage(loc)
    assert type(exc.value) is StorageError and "d2" not in str(exc.value).split("missing:")[1]


# -- a vault on it -------------------------------------------------------------------------------------


def _shard_files(directory: Path) -> List[str]:
    out = []
    for dp, _dn, fns in os.walk(directory):
        out += [os.path.join(dp, f) for f in fns if f != DESCRIPTOR and not f.startswith(".tmp-")]
    return sorted(out)


def test_cli_round_trip_on_ec_4_2_with_lost_locations_and_rotten_bytes(tmp_path: Path) -> None:
    """init, backup, restore byte for byte and check --read-data on ec:4+2. Then, on one copy of the set, two of
    the six directories deleted; on another, a byte flipped in every shard of two locations: every point still
    restores byte for byte, and check --read-data reads every pack around the damage."""
    cli = Cli(tmp_path / "home")
    loc = ec_location(tmp_path / "ec", 4, 2)
    ok(cli("init", "--vault", loc))
    src = build_tree(tmp_path / "src", big=False, doc=False)
    expected = state(src)
    first = json_out(cli("backup", "--vault", loc, "--json", src))["id"]
    (Path(os.fsdecode(src)) / "new-file").write_bytes(os.urandom(300_000))
    second = json_out(cli("backup", "--vault", loc, "--json", src))["id"]
    expected2 = state(src)
    chk = json_out(cli("check", "--vault", loc, "--json", "--read-data"))
    assert chk["ok"] is True and chk["problems"] == []
    res = json_out(cli("restore", "--vault", loc, "--json", first[:8], "--target", tmp_path / "out1"))
    assert res["errors"] == []
    assert_same(expected, restored_root(tmp_path / "out1", src))

    shutil.copytree(tmp_path / "ec", tmp_path / "lost")
    lost = ec_location(tmp_path / "lost", 4, 2)
    shutil.rmtree(tmp_path / "lost" / "d1")
    shutil.rmtree(tmp_path / "lost" / "d4")
    rng = random.Random(13)
    flipped = 0
    for i in (0, 3):
        for p in _shard_files(tmp_path / "ec" / f"d{i}"):
            if os.path.getsize(p):
                flip_byte(p, rng.randrange(os.path.getsize(p)))
                flipped += 1
    assert flipped > 10
    for where, n in ((lost, 2), (loc, 4)):
        for point, want in ((first, expected), (second, expected2)):
            out = tmp_path / f"out-{n}-{point[:8]}"
            res = json_out(cli("restore", "--vault", where, "--json", point[:8], "--target", out))
            assert res["errors"] == [] and res["snapshot"] == point
            assert_same(want, restored_root(out, src))
    chk = json_out(cli("check", "--vault", loc, "--json", "--read-data"))
    assert chk["ok"] is True and chk["problems"] == [] and chk["stats"]["packs_read"] == chk["stats"]["packs"]
    fails(cli("backup", "--vault", lost, src), 13, "not reachable")
    shutil.rmtree(tmp_path / "lost" / "d0")
    msg = fails(cli("snapshots", "--vault", lost), 13, "only 3 of its 6 locations are reachable, 4 needed")
    assert all(f"lost/d{i} (" in msg for i in (0, 1, 4)) and "lost/d2 (" not in msg


def test_forget_prune_and_check_on_an_ec_vault(tmp_path: Path) -> None:
    """The vault's lifecycle on ec:2+1 unchanged: forget, a prune that deletes packs (sessions, lease and plan
    objects, pack sizes from list_info), then the kept point restores and check --read-data is clean."""
    from recovault import api
    from recovault.vault.keys import KdfParams
    loc = ec_location(tmp_path / "ec", 2, 1)
    cache = str(tmp_path / "cache")
    api.init_vault(loc, "correct horse battery staple", kdf=KdfParams(memory_kib=8, iterations=1, lanes=1),
                   cache_dir=cache, soft_delete_days=0).close()
    src = tmp_path / "src"
    src.mkdir()
    (src / "gone").write_bytes(os.urandom(400_000))
    (src / "kept").write_bytes(os.urandom(300_000))
    with api.open_vault(loc, "correct horse battery staple", cache_dir=cache) as v:
        first = api.backup(v, [str(src)])
        (src / "gone").unlink()
        api.backup(v, [str(src)])
        packs = list(v.storage.list("data/"))
        api.forget(v, ids=[first.id])
        result = api.prune(v, margin=0, max_unused="0%")
        assert result.bytes_deleted > 300_000
        assert len(list(v.storage.list("data/"))) < len(packs)
        api.restore(v, "latest", str(tmp_path / "out"))
    cli = Cli(tmp_path / "home")
    chk = json_out(cli("check", "--vault", loc, "--json", "--read-data"))
    assert chk["ok"] is True and chk["problems"] == []
    out = restored_root(tmp_path / "out", os.fsencode(src))
    assert Path(os.fsdecode(out), "kept").read_bytes() == (src / "kept").read_bytes()
