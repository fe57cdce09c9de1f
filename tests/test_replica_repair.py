"""repair --from REPLICA (vault/replica_repair.py): what is damaged or missing in a vault is restored, blob by
blob, from another vault holding the same recovery points, with the same keys (blobs moved sealed) or other
keys (the points that lost data rebuilt from the replica's copies)."""
from __future__ import annotations

import json
import os
import random
import shutil
from typing import Dict, List, NamedTuple

import pytest

from recovault import api
from recovault.vault.check import Checker
from test_cli import FAST_KDF, PASSPHRASE, Cli, api_vault, fails, object_files, ok

Tree = Dict[str, bytes]


class Scene(NamedTuple):
    root: str
    vault: str
    replica: str
    first: str  # in the replica too
    second: str  # made after the copy: the replica lacks it
    trees: Dict[str, Tree]  # point id -> the files it holds
    srcs: Dict[str, str]  # point id -> its backed-up directory
    first_packs: List[str]  # the packs the first backup stored (only the first point uses them)


def _write(path: str, tree: Tree) -> None:
    os.makedirs(path)
    for name, data in tree.items():
        with open(os.path.join(path, name), "wb") as f:
            f.write(data)


def _scene(root: str, shared: bool) -> Scene:
    rng = random.Random(31 + shared)
    a = {f"a{i}": rng.randbytes(200_000) for i in range(6)}
    b = {f"b{i}": rng.randbytes(150_000) for i in range(3)}
    src_a, src_b = os.path.join(root, "a"), os.path.join(root, "b")
    _write(src_a, a)
    _write(src_b, b)
    vault = api_vault(os.path.join(root, "v"))
    replica = os.path.join(root, "r")
    with api.open_vault(vault, PASSPHRASE, cache_dir=os.path.join(root, "c")) as v:
        first = api.backup(v, [src_a]).id
        packs = object_files(vault, "data")
        if shared:
            api.init_vault(replica, PASSPHRASE, kdf=FAST_KDF, keys_from=v, cache_dir=os.path.join(root, "rc")).close()
        else:
            api_vault(replica)
        with api.open_vault(replica, PASSPHRASE, cache_dir=os.path.join(root, "rc")) as r:
            api.copy(v, r)
        second = api.backup(v, [src_b]).id
    return Scene(root, vault, replica, first, second, {first: a, second: b}, {first: src_a, second: src_b}, packs)


def _cli(root: str) -> Cli:
    cli = Cli(os.path.join(root, "home"))
    cli.env["RECOVAULT_FROM_PASSPHRASE"] = PASSPHRASE
    return cli


def _flip(path: str, at: float = 0.5) -> None:
    with open(path, "r+b") as f:
        size = f.seek(0, 2)
        f.seek(int(size * at))
        byte = f.read(1)
        f.seek(int(size * at))
        f.write(bytes([byte[0] ^ 0x55]))


def _damage_first(s: Scene) -> List[str]:
    """The first point's tree pack (its smallest) deleted and a byte flipped in its largest data pack."""
    by_size = sorted(s.first_packs, key=os.path.getsize)
    os.remove(by_size[0])
    _flip(by_size[-1])
    return [by_size[0], by_size[-1]]


def _check(s: Scene, tag: str) -> Dict:
    with api.open_vault(s.vault, PASSPHRASE, cache_dir=os.path.join(s.root, f"check-{tag}")) as v:
        return Checker(v).run(read_data=True)


def _restores(s: Scene, tag: str) -> None:
    with api.open_vault(s.vault, PASSPHRASE, cache_dir=os.path.join(s.root, f"restore-{tag}")) as v:
        for pid, tree in s.trees.items():
            target = os.path.join(s.root, f"out-{tag}-{pid[:8]}")
            api.restore(v, pid, target)
            inner = os.path.join(target, s.srcs[pid].lstrip("/"))
            got = {}
            for name in os.listdir(inner):
                with open(os.path.join(inner, name), "rb") as f:
                    got[name] = f.read()
            assert got == tree, (tag, pid)


def _repair(cli: Cli, s: Scene, *more: str):
    return cli("repair", "--from", s.replica, "--vault", s.vault, "--json", *more)


def test_a_replica_with_the_same_keys_gives_back_lost_packs_damaged_blobs_and_a_recovery_point(tmp_path):
    s = _scene(str(tmp_path), shared=True)
    damaged = _damage_first(s)
    os.remove(os.path.join(s.vault, "snapshots", s.first))
    before = _check(s, "before")
    assert not before["ok"]
    cli = _cli(str(tmp_path))
    doc = json.loads(ok(_repair(cli, s)).stdout)["from"]
    assert doc["mode"] == "sealed" and doc["lacking"] == []
    assert doc["restored_points"] == [s.first]
    assert doc["restored_blobs"] > 0
    assert sorted(d["reason"] for d in doc["damaged_packs"]) == ["content does not match its name",
                                                                  "missing from storage"]
    assert len(doc["dropped_packs"]) == 2
    res = _check(s, "after")
    assert res["ok"], res["problems"]
    _restores(s, "after")
    # a second run finds nothing to do
    again = json.loads(ok(_repair(cli, s)).stdout)["from"]
    assert (again["damaged_packs"], again["restored_blobs"], again["restored_points"]) == ([], 0, [])
    # the damaged pack left the index but not the storage; the normal prune deletes it, and nothing is lost
    assert os.path.exists(damaged[1])
    ok(cli("prune", "--margin", "0", "--vault", s.vault))
    assert not os.path.exists(damaged[1])
    res = _check(s, "pruned")
    assert res["ok"], res["problems"]
    _restores(s, "pruned")


def test_a_replica_with_other_keys_rebuilds_the_points_that_lost_data(tmp_path):
    s = _scene(str(tmp_path), shared=False)
    _damage_first(s)
    cli = _cli(str(tmp_path))
    doc = json.loads(ok(_repair(cli, s)).stdout)["from"]
    assert doc["mode"] == "re-encoded" and doc["lacking"] == []
    assert doc["restored_blobs"] > 0 and len(doc["dropped_packs"]) == 2
    res = _check(s, "after")
    assert res["ok"], res["problems"]
    _restores(s, "after")
    again = json.loads(ok(_repair(cli, s)).stdout)["from"]
    assert (again["damaged_packs"], again["restored_blobs"]) == ([], 0)


def test_what_the_replica_lacks_is_named_and_the_rest_is_restored(tmp_path):
    s = _scene(str(tmp_path), shared=True)
    _damage_first(s)
    second_packs = [p for p in object_files(s.vault, "data") if p not in s.first_packs]
    os.remove(max(second_packs, key=os.path.getsize))  # a data pack of the point the replica does not hold
    cli = _cli(str(tmp_path))
    res = _repair(cli, s)
    fails(res, 15, "not everything could be restored", "blob(s) the recovery points reference",
          f"still missing data: {s.second[:8]}")
    doc = json.loads(res.stdout)["from"]
    assert doc["incomplete_points"] == [s.second]
    assert doc["restored_blobs"] > 0
    assert len(doc["dropped_packs"]) == 2  # the first point's; the pack still lost stays in the index
    problems = _check(s, "after")["problems"]
    assert problems and all(s.first[:8] not in p for p in problems), problems
    assert any(s.second[:8] in p for p in problems), problems
    s.trees.pop(s.second)
    _restores(s, "after")  # the first point is whole again


def test_a_missing_point_cannot_come_back_from_a_replica_with_other_keys(tmp_path):
    s = _scene(str(tmp_path), shared=False)
    os.remove(os.path.join(s.vault, "snapshots", s.first))
    fails(_repair(_cli(str(tmp_path)), s), 15, f"recovery point {s.first[:8]}", "copy --from REPLICA")


def test_repair_needs_from_on_a_plain_vault_and_refuses_the_vault_itself(tmp_path):
    vault = api_vault(tmp_path / "v")
    cli = _cli(str(tmp_path))
    fails(cli("repair", "--vault", vault), 2, "--from REPLICA", "repair index")
    fails(cli("repair", "--from", vault, "--vault", vault), 2, "is the vault itself")
    fails(cli("repair", "--from", str(tmp_path / "nothing"), "--vault", vault), 10, "replica")
    fails(cli("repair", "--from", vault, "index", "--vault", vault), 2, "not to 'repair index'")


def test_a_damaged_index_file_is_rebuilt_first_and_a_copied_directory_serves_as_replica(tmp_path):
    """A replica made outside recovault (the vault's directory copied: the same id and keys) works as one made
    by copy; a damaged index file is replaced (as repair index does) before the packs are read."""
    s = _scene(str(tmp_path), shared=True)
    plain_copy = os.path.join(s.root, "dircopy")
    shutil.copytree(s.vault, plain_copy)
    s = s._replace(replica=plain_copy)
    _damage_first(s)
    _flip(object_files(s.vault, "index")[0])
    doc = json.loads(ok(_repair(_cli(str(tmp_path)), s)).stdout)["from"]
    assert doc["index_rebuilt"] and doc["mode"] == "sealed" and doc["restored_blobs"] > 0
    res = _check(s, "after")
    assert res["ok"], res["problems"]
    _restores(s, "after")


def test_an_ec_vault_gets_back_a_pack_lost_beyond_what_its_code_rebuilds(tmp_path):
    """ec:2+1 with two of a pack's three shards gone: the pack is lost to the vault, and the replica gives its
    blobs back into new packs."""
    root = str(tmp_path)
    locs = [os.path.join(root, f"d{i}") for i in range(3)]
    vault = "ec:2+1:" + ",".join(locs)
    src = os.path.join(root, "src")
    tree = {f"f{i}": random.Random(i).randbytes(150_000) for i in range(4)}
    _write(src, tree)
    cli = _cli(root)
    api.init_vault(vault, PASSPHRASE, kdf=FAST_KDF, cache_dir=os.path.join(root, "c")).close()
    point = json.loads(ok(cli("backup", src, "--vault", vault, "--json")).stdout)["id"]
    replica = os.path.join(root, "r")
    with api.open_vault(vault, PASSPHRASE, cache_dir=os.path.join(root, "c")) as v:
        api.init_vault(replica, PASSPHRASE, kdf=FAST_KDF, keys_from=v, cache_dir=os.path.join(root, "rc")).close()
        with api.open_vault(replica, PASSPHRASE, cache_dir=os.path.join(root, "rc")) as r:
            api.copy(v, r)
    shard = max(object_files(locs[0], "data"), key=os.path.getsize)
    for loc in locs[:2]:
        os.remove(os.path.join(loc, os.path.relpath(shard, locs[0])))
    doc = json.loads(ok(cli("repair", "--from", replica, "--vault", vault, "--json")).stdout)["from"]
    assert [d["reason"] for d in doc["damaged_packs"]] == ["missing from storage"] and doc["restored_blobs"] > 0
    s = Scene(root, vault, replica, point, point, {point: tree}, {point: src}, [])
    res = _check(s, "after")
    assert res["ok"], res["problems"]
    _restores(s, "after")
