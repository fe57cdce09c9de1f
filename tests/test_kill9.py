"""kill -9 at seeded points spread over backup, prune, copy, repair --from, repair of an erasure-coded
vault and key rotate --rewrite (RECOVAULT_FAULTS=kill=N: SIGKILL just before the process's Nth storage call,
each location of a set counted). After each kill: `check --read-data` finds no problem, every recovery point made before the kill
restores byte for byte, and the next run of the same command succeeds. A repair --from starts from a
damaged vault: after its kill the points the damage spared restore, and after the next run the check is
clean and every point restores. The long form (more points, at random) is bench/reliability.py."""
from __future__ import annotations

import os
import random
import shutil
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Union

import pytest

from recovault import api
from recovault.storage import faults
from recovault.vault.check import Checker
from recovault.vault.journal import VaultPolicy
from test_cli import FAST_KDF, PASSPHRASE, Cli, api_vault, object_files, ok

SEED = 1313
#: Kill points per command (at least 20 in all).
POINTS = {"backup": 8, "prune": 6, "copy": 6, "repair": 5, "repair-reencoded": 3, "repair-ec": 5, "rotate": 6}

Tree = Dict[str, bytes]


class Scene(NamedTuple):
    """A template to copy for each kill point: its vaults, the command to kill (run in the copy), and the
    points that must survive (id -> the tree it holds, in the vault named by `check`)."""

    root: str
    args: Callable[[str], List[str]]  # the command line, given the copy's root
    check: str  # the vault (relative to the root; "{root}" in it: the root) to check and restore from
    points: Dict[str, Tree]
    src: Union[str, Dict[str, str]]  # the backed-up directory (or one per point)
    healed: Dict[str, Tree] = {}  # points damaged before the command, whole after its next run (repair)
    after: Optional[Callable[[str], None]] = None  # more to verify once the next run succeeded (given the root)


def _write(src: str, tree: Tree) -> None:
    shutil.rmtree(src, ignore_errors=True)
    os.makedirs(src)
    for name, data in tree.items():
        with open(os.path.join(src, name), "wb") as f:
            f.write(data)


def _tree(rng: random.Random, n: int, size: int) -> Tree:
    return {f"f{i:02}": rng.randbytes(size) for i in range(n)}


def _open(path: str, cache: str) -> "api.Vault":
    return api.open_vault(path, PASSPHRASE, cache_dir=cache)


def _backup_scene(root: str, rng: random.Random) -> Scene:
    src = os.path.join(root, "src")
    a = _tree(rng, 6, 150_000)
    _write(src, a)
    vault = api_vault(os.path.join(root, "v"))
    with _open(vault, os.path.join(root, "c")) as v:
        first = api.backup(v, [src])
    b = dict(a, **{f"g{i}": rng.randbytes(200_000) for i in range(12)})
    del b["f00"]
    _write(src, b)
    return Scene(root, lambda r: ["backup", src, "--vault", os.path.join(r, "v")], "v",
                 {first.id: a}, src)


def _prune_scene(root: str, rng: random.Random) -> Scene:
    src = os.path.join(root, "src")
    vault = api_vault(os.path.join(root, "v"))
    keep = _tree(rng, 8, 60_000)
    _write(src, dict(keep, gone=rng.randbytes(1_500_000)))
    with _open(vault, os.path.join(root, "c")) as v:
        v.set_policy(VaultPolicy(None, 0))  # soft delete off: the deleted point's data is prune's
        first = api.backup(v, [src])
        _write(src, keep)
        second = api.backup(v, [src])
        v.delete_snapshot(first.id)
    return Scene(root, lambda r: ["prune", "--margin", "0", "--max-unused", "0%", "--vault",
                                  os.path.join(r, "v")], "v", {second.id: keep}, src)


def _copy_scene(root: str, rng: random.Random) -> Scene:
    src = os.path.join(root, "src")
    a = _tree(rng, 5, 100_000)
    _write(src, a)
    source, target = api_vault(os.path.join(root, "s")), api_vault(os.path.join(root, "t"))
    with _open(source, os.path.join(root, "c")) as s, _open(target, os.path.join(root, "c2")) as t:
        api.backup(s, [src])
        copied = api.copy(s, t)
        _write(src, dict(a, **{f"h{i}": rng.randbytes(150_000) for i in range(10)}))
        api.backup(s, [src])
        first = [p.id for p in t.snapshots()]
    assert len(first) == 1 and len(copied.copied) == 1
    return Scene(root, lambda r: ["copy", "--from", os.path.join(r, "s"), "--to", os.path.join(r, "t")], "t",
                 {first[0]: a}, src)


def _repair_scene(root: str, rng: random.Random, shared: bool = True) -> Scene:
    """A vault whose first point lost its tree pack and has a flipped byte in a data pack, a replica holding
    that point (with the same keys, or `shared` False other keys), and a second point the damage spared (the
    replica lacks it)."""
    src_a, src_b = os.path.join(root, "src"), os.path.join(root, "src-b")
    a, b = _tree(rng, 6, 120_000), _tree(rng, 3, 100_000)
    _write(src_a, a)
    _write(src_b, b)
    vault, replica = api_vault(os.path.join(root, "v")), os.path.join(root, "r")
    with _open(vault, os.path.join(root, "c")) as v:
        first = api.backup(v, [src_a])
        packs = sorted(object_files(vault, "data"), key=os.path.getsize)
        api.init_vault(replica, PASSPHRASE, kdf=FAST_KDF, keys_from=v if shared else None,
                       cache_dir=os.path.join(root, "c2")).close()
        with _open(replica, os.path.join(root, "c2")) as r:
            api.copy(v, r)
        second = api.backup(v, [src_b])
    os.remove(packs[0])  # the first point's trees
    with open(packs[-1], "r+b") as f:
        f.seek(os.path.getsize(packs[-1]) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with _open(vault, os.path.join(root, "c3")) as v:
        assert len(Checker(v).run(read_data=True)["problems"]) >= 2  # both packs' damage is seen
    return Scene(root, lambda r: ["repair", "--from", os.path.join(r, "r"), "--vault", os.path.join(r, "v")], "v",
                 {second.id: b}, {first.id: src_a, second.id: src_b}, {first.id: a})


EC_DIRS = [f"d{i}" for i in range(6)]


def _ec_url(root: str, dirs: List[str]) -> str:
    return "ec:4+2:" + ",".join(os.path.join(root, d) for d in dirs)


def _repair_ec_scene(root: str, rng: random.Random) -> Scene:
    """An ec 4+2 vault that lost location 2 and has a corrupt shard of every pack at location 4: `repair
    --replace` moves location 2 to a new directory and rebuilds every shard there and the corrupt ones."""
    src = os.path.join(root, "src")
    a = _tree(rng, 6, 120_000)
    _write(src, a)
    with _open(api_vault(_ec_url(root, EC_DIRS)), os.path.join(root, "c")) as v:
        first = api.backup(v, [src])
    shutil.rmtree(os.path.join(root, "d1"))
    for dp, _dn, fns in os.walk(os.path.join(root, "d3", "data")):
        for f in fns:
            with open(os.path.join(dp, f), "r+b") as fh:
                fh.seek(200)
                byte = fh.read(1)
                fh.seek(200)
                fh.write(bytes([byte[0] ^ 0xFF]))
    new = [d if d != "d1" else "n1" for d in EC_DIRS]

    def args(r: str) -> List[str]:
        return ["repair", "--vault", _ec_url(r, EC_DIRS), "--replace", f"{os.path.join(r, 'd1')}={os.path.join(r, 'n1')}"]

    def whole(r: str) -> None:  # the next run brought the set back to full redundancy
        with _open(_ec_url(r, new), os.path.join(r, "vc-whole")) as v:
            res = Checker(v).run(read_data=True)
        assert res["ok"] and res["shards"]["clean"], res["shards"]

    return Scene(root, args, _ec_url("{root}", EC_DIRS), {first.id: a}, src, after=whole)


def _rotate_scene(root: str, rng: random.Random) -> Scene:
    """A format 2 vault with two points: the rewrite upgrades it to format 3, rotates, and re-seals every
    blob (the next run, after a completed one, rotates and rewrites again)."""
    src = os.path.join(root, "src")
    vault = api_vault(os.path.join(root, "v"))
    a = _tree(rng, 6, 80_000)
    _write(src, a)
    with _open(vault, os.path.join(root, "c")) as v:
        first = api.backup(v, [src])
        b = dict(a, **{f"r{i}": rng.randbytes(120_000) for i in range(6)})
        _write(src, b)
        second = api.backup(v, [src])
    return Scene(root, lambda r: ["key", "rotate", "--rewrite", "--margin", "0", "--vault", os.path.join(r, "v")],
                 "v", {first.id: a, second.id: b}, src)


SCENES = {"backup": _backup_scene, "prune": _prune_scene, "copy": _copy_scene, "repair": _repair_scene,
          "repair-reencoded": lambda root, rng: _repair_scene(root, rng, shared=False), "repair-ec": _repair_ec_scene,
          "rotate": _rotate_scene}


def _cli(home) -> Cli:
    cli = Cli(home)
    cli.env["RECOVAULT_FROM_PASSPHRASE"] = PASSPHRASE  # copy's source
    return cli


def count_calls(scene: Scene, work: str) -> int:
    """The storage calls the command makes on an untouched copy (RECOVAULT_FAULTS with no fault counts them)."""
    shutil.copytree(scene.root, work, ignore=shutil.ignore_patterns("src"))
    cli = _cli(os.path.join(work + "-home"))
    ok(cli(*scene.args(work), env={faults.ENV: "tally=" + os.path.join(work, "calls")}))
    with open(os.path.join(work, "calls")) as f:
        return int(f.read())


def kill_points(rng: random.Random, calls: int, n: int) -> List[int]:
    """`n` distinct calls to kill at, spread over the whole run: one at random in each of n equal stretches."""
    edges = [1 + (calls - 1) * i // n for i in range(n + 1)]
    return [rng.randint(lo, max(lo, hi - 1)) for lo, hi in zip(edges, edges[1:])]


def _verify(scene: Scene, work: str, tag: str, after: bool = True) -> None:
    """check --read-data is clean and the scene's points restore byte for byte; `after` False (just after the
    kill) for a scene that starts damaged: only the points the damage spared are asked for."""
    cache = os.path.join(work, f"vc-{tag}")
    where = scene.check.format(root=work) if "{root}" in scene.check else os.path.join(work, scene.check)
    with _open(where, cache) as v:
        res = Checker(v).run(read_data=True)
        assert res["ok"] or not (after or not scene.healed), (tag, res["problems"])
        for pid, tree in dict(scene.points, **(scene.healed if after else {})).items():
            target = os.path.join(work, f"r-{tag}-{pid[:8]}")
            api.restore(v, pid, target)
            src = scene.src if isinstance(scene.src, str) else scene.src[pid]
            inner = os.path.join(target, src.lstrip("/"))
            got = {}
            for name in os.listdir(inner):
                with open(os.path.join(inner, name), "rb") as f:
                    got[name] = f.read()
            assert got == tree, (tag, pid)


def make_scenes(root: str, seed: int = SEED, only: Sequence[str] = ()) -> Dict[str, Scene]:
    """Every scene's template (or those named in `only`), under `root`."""
    rng = random.Random(seed)
    out = {}
    for name, make in SCENES.items():
        if only and name not in only:
            continue
        os.makedirs(os.path.join(root, name))
        out[name] = make(os.path.join(root, name), rng)
    return out


def kill_and_recover(scene: Scene, tmp: str, n: int) -> int:
    """Run the scene's command killed before storage call `n` in a copy of its template, then verify: check
    --read-data, the earlier points restored byte for byte, the next run, and both again. Returns the
    killed run's exit status (-9 when the kill came)."""
    work = os.path.join(tmp, f"k{n}")
    shutil.copytree(scene.root, work, ignore=shutil.ignore_patterns("src"))
    run = _cli(os.path.join(tmp, f"home{n}"))  # a cold agent cache, as in the run that counted the calls
    res = run(*scene.args(work), env={faults.ENV: f"kill={n}"})
    assert res.returncode in (-9, 0), (n, res.returncode, res.stderr)
    _verify(scene, work, f"k{n}", after=res.returncode == 0)
    ok(run(*scene.args(work)))  # the next run succeeds, with the agent cache the killed one left
    _verify(scene, work, f"n{n}")
    if scene.after is not None:
        scene.after(work)
    return res.returncode


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return make_scenes(str(tmp_path_factory.mktemp("scenes")))


@pytest.mark.parametrize("command", sorted(POINTS))
def test_kill_9_at_seeded_points_leaves_a_valid_vault_and_the_next_run_succeeds(scenes, tmp_path, command):
    scene = scenes[command]
    calls = count_calls(scene, str(tmp_path / "tally"))
    points = kill_points(random.Random(f"{SEED}-{command}"), calls, POINTS[command])
    killed = sum(kill_and_recover(scene, str(tmp_path), n) == -9 for n in points)
    assert killed == len(points), f"{command}: {killed} of {len(points)} kill points reached ({calls} calls)"
