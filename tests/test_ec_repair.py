"""Repair of an erasure-coded vault (storage/ec_scan.py, storage/ec_repair.py, `recovault repair`,
docs/vault-format.md §13): check's per-shard findings, the rebuild of missing, corrupt and stale shards,
--replace, --dry-run, the removal of interrupted writes, and issue 13's "done when": an ec 4+2 vault with two of
its six location directories deleted restores every point byte for byte, `repair --replace` brings it back to
full redundancy, check --read-data is clean and the storage overhead is within 2% of (k+m)/k.

1,000 flipped bytes: the code corrects erasures, and a flipped block is one (its tag says so). With two of six
locations gone every column of blocks is down to its last K, so a flipped byte there is beyond any 4+2 code:
that case must give a clear error, never a wrong byte. The 1,000 flips that must be corrected are seeded
across the five locations left when one is deleted, drawn at random and kept only while no column of blocks
loses more than the code can rebuild (a flip in a header counts against every column of its object)."""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Dict, List, NamedTuple, Set, Tuple

import pytest

from recovault import api
from recovault.errors import RecovaultError
from recovault.storage import open_storage
from recovault.storage.ec_repair import erasure_of
from recovault.storage.erasure import BLOCK, DESCRIPTOR, HEADER_SIZE, TAG, parse_header

from e2e_tree import flip_byte
from test_cli import PASSPHRASE, Cli, api_vault, fails, json_out, ok

K, M = 4, 2
Tree = Dict[str, bytes]


def location(root: Path, dirs: List[str]) -> str:
    return f"ec:{K}+{M}:" + ",".join(str(root / d) for d in dirs)


DIRS = [f"d{i}" for i in range(K + M)]


class Built(NamedTuple):
    root: Path  # holds d0..d5 and src
    points: Dict[str, Tree]  # point id -> the files it holds


def _write(src: Path, tree: Tree) -> None:
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for name, data in tree.items():
        (src / name).write_bytes(data)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Built:
    """An ec 4+2 vault with three recovery points (packs of 1 MiB, so most bytes are in packs of several
    blocks per shard), to copy per test."""
    root = tmp_path_factory.mktemp("ec-template")
    rng = random.Random(1313)
    loc = api_vault(location(root, DIRS))
    points: Dict[str, Tree] = {}
    tree: Tree = {f"f{i:02}": rng.randbytes(rng.randrange(1, 400_000)) for i in range(12)}
    with api.open_vault(loc, PASSPHRASE, cache_dir=str(root / "cache")) as v:
        for step in range(3):
            _write(root / "src", tree)
            points[api.backup(v, [str(root / "src")]).id] = dict(tree)
            tree = dict(tree, **{f"g{step}{i}": rng.randbytes(150_000) for i in range(4)})
            tree.pop(f"f{step:02}")
    shutil.rmtree(root / "cache")
    return Built(root, points)


def copy_of(template: Built, tmp: Path) -> Path:
    root = tmp / "set"
    shutil.copytree(template.root, root)
    return root


def restore_all(loc: str, built: Built, root: Path, tag: str) -> None:
    """Every point restores byte for byte."""
    with api.open_vault(loc, PASSPHRASE, cache_dir=str(root / f"cache-{tag}")) as v:
        for pid, tree in built.points.items():
            target = root / f"r-{tag}-{pid[:8]}"
            res = api.restore(v, pid, str(target))
            assert res["errors"] == [], res["errors"]
            inner = target / str(built.root / "src").lstrip("/")
            got = {p.name: p.read_bytes() for p in inner.iterdir()}
            assert got == tree, (tag, pid)


def shard_files(root: Path, dirs: List[str]) -> List[Tuple[int, str, Path]]:
    """(location, object name, path) of every shard file under the given location directories."""
    out = []
    for i, d in enumerate(dirs):
        base = root / d
        if not base.exists():
            continue
        for dp, _dn, fns in os.walk(base):
            for f in fns:
                p = Path(dp) / f
                name = str(p.relative_to(base))
                if f != DESCRIPTOR and not f.startswith(".tmp-"):
                    out.append((i, name, p))
    return sorted(out)


def flip_within(rng: random.Random, files: List[Tuple[int, str, Path]], lost: Set[int], count: int
                ) -> Dict[int, Set[str]]:
    """Flip ``count`` seeded random bytes of ``files`` (all of one set), each kept only while every column of
    blocks of its object keeps K intact blocks (the ``lost`` locations count as bad everywhere; a header flip
    counts against every column). Returns, per location, the objects whose shard there was flipped."""
    bad: Dict[Tuple[str, object], Set[int]] = {}  # (object, column or "h") -> locations bad there
    flipped: Dict[int, Set[str]] = {}
    done = 0
    while done < count:
        i, name, path = rng.choice(files)
        size = path.stat().st_size
        offset = rng.randrange(size)
        column = "h" if offset < HEADER_SIZE else (offset - HEADER_SIZE) // (BLOCK + TAG)
        blocks = -(-(size - HEADER_SIZE) // (BLOCK + TAG))
        cols = range(blocks) if column == "h" else [column]
        ok_ = all(len(lost | bad.get((name, "h"), set()) | bad.get((name, c), set()) | {i}) <= M for c in cols)
        if not ok_:
            continue
        bad.setdefault((name, column), set()).add(i)
        flip_byte(path, offset)
        flipped.setdefault(i, set()).add(name)
        done += 1
    return flipped


def cli_for(tmp: Path) -> Cli:
    return Cli(tmp / "home")


def set_bytes(root: Path, dirs: List[str]) -> int:
    return sum(p.stat().st_size for _, _, p in shard_files(root, dirs))


# -- the "done when" ------------------------------------------------------------------------------


def test_two_locations_lost_restore_then_replace_back_to_full_redundancy(template: Built, tmp_path: Path) -> None:
    root = copy_of(template, tmp_path)
    cli = cli_for(tmp_path)
    loc = location(root, DIRS)
    with open_storage(loc) as s:
        logical = sum(info.size for info in s.list_info(""))
    before = set_bytes(root, DIRS)
    assert before / logical == pytest.approx((K + M) / K, rel=0.02)
    shutil.rmtree(root / "d1")
    shutil.rmtree(root / "d4")
    restore_all(loc, template, tmp_path, "lost")
    chk = json_out(cli("check", "--vault", loc, "--json"))
    assert chk["ok"] is True and chk["shards"]["clean"] is False
    assert [x["reachable"] for x in chk["shards"]["locations"]] == [True, False, True, True, False, True]
    assert any("location 2 (" in w and "--replace" in w for w in chk["warnings"])

    new = ["d0", "n1", "d2", "d3", "n4", "d5"]
    rep = json_out(cli("repair", "--vault", loc, "--replace", f"{root / 'd1'}={root / 'n1'}",
                       "--replace", f"{root / 'd4'}={root / 'n4'}", "--json"))
    assert rep["vault"] == location(root, new)
    objects = rep["objects"]
    assert objects > 15 and rep["objects_rebuilt"] == objects and rep["shards_rebuilt"] == 2 * objects
    assert rep["unrepairable"] == [] and rep["removed"] == []
    chk = json_out(cli("check", "--vault", rep["vault"], "--json", "--read-data"))
    assert chk["ok"] is True and chk["problems"] == [] and chk["warnings"] == []
    shards = chk["shards"]
    assert shards["clean"] is True and shards["read_data"] is True and shards["objects"] == objects
    assert [x["intact"] for x in shards["locations"]] == [objects] * (K + M)
    assert set_bytes(root, new) / logical == pytest.approx((K + M) / K, rel=0.02)  # the overhead, as before
    assert before == set_bytes(root, new)
    shutil.rmtree(root / "d0")
    shutil.rmtree(root / "d2")
    restore_all(location(root, new), template, tmp_path, "rebuilt")  # the rebuilt shards read as the lost ones


def test_a_thousand_flips_the_code_can_correct_are_read_around_then_repaired(template: Built,
                                                                                 tmp_path: Path) -> None:
    root = copy_of(template, tmp_path)
    cli = cli_for(tmp_path)
    loc = location(root, DIRS)
    shutil.rmtree(root / "d2")
    flipped = flip_within(random.Random(2026), shard_files(root, DIRS), {2}, 1000)
    assert sum(map(len, flipped.values())) > 20  # the flips hit many shards, at every location left
    assert sorted(flipped) == [0, 1, 3, 4, 5]
    restore_all(loc, template, tmp_path, "flipped")
    chk = json_out(cli("check", "--vault", loc, "--json", "--read-data"))
    assert chk["ok"] is True  # no data lost: redundancy, reported as warnings
    by_loc = {x["index"] - 1: x for x in chk["shards"]["locations"]}
    for i in (0, 1, 3, 4, 5):
        assert by_loc[i]["corrupt"] == len(flipped[i]), i
        assert f"location {i + 1} (" in " ".join(chk["warnings"])
    assert by_loc[2]["reachable"] is False
    fails(cli("repair", "--vault", loc), 15, "location 3", "--replace")  # the rest is rebuilt, d2 cannot be
    chk = json_out(cli("check", "--vault", loc, "--json", "--read-data"))
    assert [x["corrupt"] for x in chk["shards"]["locations"]] == [0] * (K + M)
    new = location(root, ["d0", "d1", "n2", "d3", "d4", "d5"])
    ok(cli("repair", "--vault", loc, "--replace", f"{root / 'd2'}={root / 'n2'}"))
    chk = json_out(cli("check", "--vault", new, "--json", "--read-data"))
    assert chk["ok"] is True and chk["shards"]["clean"] is True and chk["warnings"] == []
    restore_all(new, template, tmp_path, "repaired")


@pytest.mark.parametrize("where,count", [("", 1000), ("data/", 3)])
def test_flips_beyond_what_the_code_corrects_give_a_clear_error_never_a_wrong_byte(template: Built, tmp_path: Path,
                                                                                   where: str, count: int) -> None:
    """Two of six lost and bytes flipped in what is left (the issue's scenario): nothing is left to rebuild the
    flipped blocks from. Every point either restores byte for byte or fails with a clear error naming the
    damage, and repair says what it cannot rebuild (exit 15)."""
    root = copy_of(template, tmp_path)
    cli = cli_for(tmp_path)
    loc = location(root, DIRS)
    shutil.rmtree(root / "d0")
    shutil.rmtree(root / "d5")
    rng = random.Random(77)
    files = [f for f in shard_files(root, DIRS) if f[1].startswith(where)]
    for _ in range(count):
        _, _, path = rng.choice(files)
        flip_byte(path, rng.randrange(path.stat().st_size))
    restored = 0
    try:
        with api.open_vault(loc, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
            for pid, tree in template.points.items():
                target = tmp_path / f"r-{pid[:8]}"
                try:
                    res = api.restore(v, pid, str(target))
                except RecovaultError as exc:
                    assert "cannot be read" in str(exc) or "corrupt" in str(exc).lower(), exc
                    continue
                inner = target / str(template.root / "src").lstrip("/")
                failed = {os.path.basename(e["path"]) for e in res["errors"]}
                assert all("cannot be read" in e["error"] or "corrupt" in e["error"].lower() for e in res["errors"])
                for name, data in tree.items():
                    if name not in failed:
                        assert (inner / name).read_bytes() == data, name
                        restored += 1
    except RecovaultError as exc:  # the config or the key cannot be read: one clear error
        assert "cannot be read from the ec:4+2 set" in str(exc), exc
    if where:
        assert restored > 0  # only a few packs hit: most files still restore
    res = cli("repair", "--vault", loc, "--json")
    msg = fails(res, 15, "repair could not rebuild everything")
    assert "cannot be read from the ec:4+2 set" in msg or "not reachable" in msg
    doc = json.loads(res.stdout)  # one document: the report, naming each thing it could not rebuild
    assert doc["unrepairable"] and msg.split("everything: ")[1].startswith(doc["unrepairable"][0][:60])


# -- repair, piece by piece -------------------------------------------------------------------------------


def test_repair_on_a_plain_vault_says_what_it_can_do(tmp_path: Path) -> None:
    cli = cli_for(tmp_path)
    plain = api_vault(tmp_path / "plain")
    fails(cli("repair", "--vault", plain), 2, "not an erasure-coded vault", "repair --from REPLICA",
          "repair index")
    ok(cli("repair", "index", "--vault", plain))  # the subcommand is unchanged
    fails(cli("repair", "--dry-run", "index", "--vault", plain), 2, "not to 'repair index'")


def test_missing_corrupt_and_stale_shards_found_by_check_and_rebuilt(template: Built, tmp_path: Path) -> None:
    root = copy_of(template, tmp_path)
    cli = cli_for(tmp_path)
    loc = location(root, DIRS)
    files = shard_files(root, DIRS)
    packs = sorted({name for _, name, _ in files if name.startswith("data/")})
    (root / "d3" / packs[0]).unlink()  # missing
    body = root / "d1" / packs[1]
    flip_byte(body, body.stat().st_size - 5)  # a block tag: only a read of the data finds it
    with open_storage(loc) as s:  # a stale shard: location 5 holds another version of "keys/..." / a pack
        ec = erasure_of(s)
        other = [n for n in ec.list("") if n.startswith("index/")][0]
        data = ec.get(other)
        ec.locations[4].storage.put(other, ec._shards(other, data + b"x")[4])
    chk = json_out(cli("check", "--vault", loc, "--json"))
    by = {x["index"]: x for x in chk["shards"]["locations"]}
    assert (by[4]["missing"], by[2]["corrupt"], by[5]["stale"]) == (1, 0, 1)  # headers only: the tag not read
    assert chk["shards"]["read_data"] is False and chk["ok"] is True
    chk = json_out(cli("check", "--vault", loc, "--json", "--read-data"))
    by = {x["index"]: x for x in chk["shards"]["locations"]}
    assert (by[4]["missing"], by[2]["corrupt"], by[5]["stale"]) == (1, 1, 1)
    damaged = {d["name"]: d for d in chk["shards"]["damaged"]}
    assert damaged[packs[0]]["missing"] == [4] and damaged[packs[1]]["corrupt"] == [2]
    assert damaged[other]["stale"] == [5]
    verbose = ok(cli("check", "--vault", loc, "--read-data", "--verbose")).stderr
    assert f"shards: {packs[0]}: missing at location(s) 4" in verbose
    assert f"shards: {packs[1]}: corrupt at location(s) 2" in verbose and f"shards: {other}: stale at location(s) 5" \
        in verbose
    dry = json_out(cli("repair", "--vault", loc, "--dry-run", "--json"))
    assert (dry["dry_run"], dry["objects_rebuilt"], dry["shards_rebuilt"]) == (True, 3, 3)
    assert not (root / "d3" / packs[0]).exists()  # nothing written
    rep = json_out(cli("repair", "--vault", loc, "--json"))
    assert (rep["objects_rebuilt"], rep["shards_rebuilt"], rep["unrepairable"]) == (3, 3, [])
    assert (root / "d3" / packs[0]).read_bytes() == (template.root / "d3" / packs[0]).read_bytes()
    assert body.read_bytes() == (template.root / "d1" / packs[1]).read_bytes()
    chk = json_out(cli("check", "--vault", loc, "--json", "--read-data"))
    assert chk["shards"]["clean"] is True and chk["warnings"] == []
    again = json_out(cli("repair", "--vault", loc, "--json"))
    assert again["shards_rebuilt"] == 0  # nothing left to do


def test_an_interrupted_create_is_removed_after_the_margin(tmp_path: Path) -> None:
    """init killed after the first shard of `config`: the name is taken though no object exists; repair
    removes it (once older than --margin), and init succeeds."""
    cli = cli_for(tmp_path)
    loc = location(tmp_path, DIRS)
    with open_storage(loc, create=True) as s:
        ec = erasure_of(s)
        ec.locations[0].storage.put("config", ec._shards("config", b"half")[0])
    fails(cli("init", "--vault", loc), 11)
    rep = json_out(cli("repair", "--vault", loc, "--json"))
    assert rep["kept"] == ["config"] and rep["removed"] == [] and rep["shards"]["incomplete"] == ["config"]
    rep = json_out(cli("repair", "--vault", loc, "--json", "--margin", "0"))
    assert rep["removed"] == ["config"]
    assert not (tmp_path / "d0" / "config").exists()
    api_vault(loc)  # init now succeeds


def test_replace_refuses_what_is_not_a_new_location(template: Built, tmp_path: Path) -> None:
    root = copy_of(template, tmp_path)
    cli = cli_for(tmp_path)
    loc = location(root, DIRS)
    shutil.rmtree(root / "d1")
    (root / "full").mkdir()
    (root / "full" / "something").write_bytes(b"x")
    fails(cli("repair", "--vault", loc, "--replace", f"{root / 'd1'}={root / 'full'}"), 2, "not empty")
    fails(cli("repair", "--vault", loc, "--replace", f"{root / 'd1'}={root / 'd2'}"), 2, "location 3 of the set")
    fails(cli("repair", "--vault", loc, "--replace", f"{root / 'nope'}={root / 'n1'}"), 2, "OLD=NEW")
    other = tmp_path / "other"
    api_vault(location(other, DIRS))  # another set, its own descriptors
    fails(cli("repair", "--vault", loc, "--replace", f"{root / 'd1'}={other / 'd1'}"), 2, "another erasure-coded set")
    assert not (root / "n1").exists() and sorted(os.listdir(root / "full")) == ["something"]
    dry = json_out(cli("repair", "--vault", loc, "--replace", f"{root / 'd1'}={root / 'n1'}", "--dry-run", "--json"))
    assert dry["shards_rebuilt"] == dry["objects"] and dry["unrepairable"] == []
    assert not (root / "n1").exists()  # --dry-run makes nothing


def test_writes_with_a_location_down_name_it_and_say_replace(template: Built, tmp_path: Path) -> None:
    """Degraded writes are not done (docs/vault-format.md §13): the message names the location and the way
    out."""
    root = copy_of(template, tmp_path)
    cli = cli_for(tmp_path)
    shutil.rmtree(root / "d3")
    fails(cli("backup", "--vault", location(root, DIRS), str(root / "src")), 13, "location 4 (",
          f"repair --replace {root / 'd3'}=NEW")


def test_a_wiped_disk_is_replaced_by_itself(template: Built, tmp_path: Path) -> None:
    """A location whose disk came back empty (no descriptor: the set leaves it out) is rebuilt in place with
    --replace D=D; the URL stays the same."""
    root = copy_of(template, tmp_path)
    cli = cli_for(tmp_path)
    loc = location(root, DIRS)
    shutil.rmtree(root / "d2")
    (root / "d2").mkdir()
    fails(cli("repair", "--vault", loc), 15, "location 3", f"--replace {root / 'd2'}=NEW")
    res = ok(cli("repair", "--vault", loc, "--replace", f"{root / 'd2'}={root / 'd2'}"))
    assert "URL is now" not in res.stdout
    chk = json_out(cli("check", "--vault", loc, "--json", "--read-data"))
    assert chk["shards"]["clean"] is True and chk["warnings"] == []
    rebuilt = {name: p.read_bytes() for _, name, p in shard_files(root, ["d2"])}
    assert rebuilt == {name: p.read_bytes() for _, name, p in shard_files(template.root, ["d2"])}  # the very bytes


def test_a_rotten_header_with_two_locations_lost_is_read_around(template: Built, tmp_path: Path) -> None:
    """A shard's header is the same as every other shard's but for the index, so a rotten one is rebuilt from
    any other: with two of six locations lost and a byte of a header flipped at each of the others (in
    different objects), every object still reads (its blocks are checked against the header the others
    carry), every point restores, and repair rewrites the headers."""
    root = copy_of(template, tmp_path)
    cli = cli_for(tmp_path)
    loc = location(root, DIRS)
    shutil.rmtree(root / "d0")
    shutil.rmtree(root / "d5")
    names = sorted({name for _, name, _ in shard_files(root, DIRS)})
    hit = {}
    for n, i in enumerate((1, 2, 3, 4)):
        for name in names[n::4]:  # each object: one header flipped, at one location
            flip_byte(root / f"d{i}" / name, 40)
            hit[name] = i
    with open_storage(loc) as s:
        for name in names:
            assert s.get(name) == s.get(name)  # reads (and the same twice)
    restore_all(loc, template, tmp_path, "headers")
    chk = json_out(cli("check", "--vault", loc, "--json"))
    assert chk["ok"] is True
    assert [x["corrupt"] for x in chk["shards"]["locations"]] == [0] + [len(names[n::4]) for n in range(4)] + [0]
    new = location(root, ["n0", "d1", "d2", "d3", "d4", "n5"])
    ok(cli("repair", "--vault", loc, "--replace", f"{root / 'd0'}={root / 'n0'}",
           "--replace", f"{root / 'd5'}={root / 'n5'}"))
    chk = json_out(cli("check", "--vault", new, "--json", "--read-data"))
    assert chk["shards"]["clean"] is True and chk["warnings"] == []
