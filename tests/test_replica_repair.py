"""repair --from REPLICA (vault/replica_repair.py): what is damaged or missing in a vault is restored, blob by
blob, from another vault holding the same recovery points, with the same keys (blobs moved sealed) or other
keys (the points that lost data rebuilt from the replica's copies); --dry-run reports what the repair then
does, field for field, and leaves every file of the vault as it was."""
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


DONE_FIELDS = ("mode", "index_rebuilt", "packs_read", "damaged_packs", "rescued_blobs", "restored_blobs",
               "restored_bytes", "restored_points", "dropped_packs", "incomplete_points", "lacking")


def _files(root: str) -> Dict[str, bytes]:
    """Every file under `root`, by relative path, with its bytes."""
    out = {}
    for dp, _dn, fns in os.walk(root):
        for f in fns:
            with open(os.path.join(dp, f), "rb") as fh:
                out[os.path.relpath(os.path.join(dp, f), root)] = fh.read()
    return out


def _same_as_real(dry: Dict, real: Dict) -> None:
    assert dry["dry_run"] is True and real["dry_run"] is False
    assert {k: dry[k] for k in DONE_FIELDS} == {k: real[k] for k in DONE_FIELDS}


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
    before = _files(root + "/d0"), _files(root + "/d1"), _files(root + "/d2")
    dry = json.loads(ok(cli("repair", "--from", replica, "--vault", vault, "--json", "--dry-run")).stdout)["from"]
    assert (_files(root + "/d0"), _files(root + "/d1"), _files(root + "/d2")) == before  # no shard written
    doc = json.loads(ok(cli("repair", "--from", replica, "--vault", vault, "--json")).stdout)["from"]
    assert [d["reason"] for d in doc["damaged_packs"]] == ["missing from storage"] and doc["restored_blobs"] > 0
    _same_as_real(dry, doc)
    s = Scene(root, vault, replica, point, point, {point: tree}, {point: src}, [])
    res = _check(s, "after")
    assert res["ok"], res["problems"]
    _restores(s, "after")


# ---- --dry-run: what a real run would do, and nothing written ------------------------------------------------

def _dry_then_real(cli: Cli, s: Scene, code: int = 0) -> Dict:
    """repair --from --dry-run, the vault's files unchanged by it, then the real run: the two reports agree."""
    before = _files(s.vault)
    res = _repair(cli, s, "--dry-run")
    assert res.returncode == code, res.stderr
    assert _files(s.vault) == before
    dry = json.loads(res.stdout)["from"]
    res = _repair(cli, s)
    assert res.returncode == code, res.stderr
    real = json.loads(res.stdout)["from"]
    _same_as_real(dry, real)
    return dry


def test_a_dry_run_with_the_same_keys_says_what_the_repair_then_does_and_writes_nothing(tmp_path):
    s = _scene(str(tmp_path), shared=True)
    _damage_first(s)
    os.remove(os.path.join(s.vault, "snapshots", s.first))
    cli = _cli(str(tmp_path))
    before = _files(s.vault)
    text = ok(cli("repair", "--from", s.replica, "--vault", s.vault, "--dry-run"))
    assert _files(s.vault) == before
    assert "would restore" in text.stdout and "would put back 1 recovery point(s)" in text.stdout, text.stdout
    dry = _dry_then_real(cli, s)
    assert dry["restored_points"] == [s.first] and dry["restored_blobs"] > 0 and dry["rescued_blobs"] > 0
    assert len(dry["dropped_packs"]) == 2 and dry["lacking"] == []
    res = _check(s, "after")
    assert res["ok"], res["problems"]
    # on a whole vault, a dry run finds nothing to do
    again = json.loads(ok(_repair(cli, s, "--dry-run")).stdout)["from"]
    assert (again["damaged_packs"], again["restored_blobs"], again["rescued_blobs"], again["restored_points"],
            again["dropped_packs"], again["lacking"]) == ([], 0, 0, [], [], [])


def test_a_dry_run_with_other_keys_through_the_api_matches_the_real_rebuild(tmp_path):
    from recovault.vault.replica_repair import repair_from
    s = _scene(str(tmp_path), shared=False)
    _damage_first(s)
    before = _files(s.vault)
    reports = []
    for dry_run in (True, False):
        with api.open_vault(s.vault, PASSPHRASE, cache_dir=os.path.join(s.root, "c"),
                             write=not dry_run) as v, \
                api.open_vault(s.replica, PASSPHRASE, cache_dir=os.path.join(s.root, "rc")) as r:
            reports.append(repair_from(v, r, dry_run=dry_run).to_json())
            if dry_run:
                assert _files(s.vault) == before
    _same_as_real(*reports)
    assert reports[0]["mode"] == "re-encoded" and reports[0]["restored_blobs"] > 0
    assert len(reports[0]["dropped_packs"]) == 2 and reports[0]["lacking"] == []
    res = _check(s, "after")
    assert res["ok"], res["problems"]


def test_a_dry_run_names_what_the_replica_lacks_and_exits_as_the_repair_does(tmp_path):
    s = _scene(str(tmp_path), shared=True)
    _damage_first(s)
    second_packs = [p for p in object_files(s.vault, "data") if p not in s.first_packs]
    os.remove(max(second_packs, key=os.path.getsize))
    cli = _cli(str(tmp_path))
    fails(_repair(cli, s, "--dry-run"), 15, "not everything can be restored", "dry run: nothing was written",
          f"still missing data: {s.second[:8]}")
    dry = _dry_then_real(cli, s, code=15)
    assert dry["incomplete_points"] == [s.second] and len(dry["dropped_packs"]) == 2


def test_a_dry_run_on_a_damaged_index_says_the_index_would_be_rebuilt_first(tmp_path):
    s = _scene(str(tmp_path), shared=True)
    _damage_first(s)
    _flip(object_files(s.vault, "index")[0])
    cli = _cli(str(tmp_path))
    text = ok(cli("repair", "--from", s.replica, "--vault", s.vault, "--dry-run"))
    assert "would rebuild the index from the packs first" in text.stdout, text.stdout
    dry = _dry_then_real(cli, s)
    assert dry["index_rebuilt"] and dry["restored_blobs"] > 0
