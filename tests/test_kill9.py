"""kill -9 at seeded points spread over backup, prune, copy and key rotate --rewrite (RECOVAULT_FAULTS=kill=N: SIGKILL just before
the process's Nth storage call). After each kill: `check --read-data` finds no problem, every recovery point
made before the kill restores byte for byte, and the next run of the same command succeeds. The long form
(more points, at random) is bench/reliability.py."""
from __future__ import annotations

import os
import random
import shutil
from typing import Callable, Dict, List, NamedTuple

import pytest

from recovault import api
from recovault.storage import faults
from recovault.vault.check import Checker
from recovault.vault.journal import VaultPolicy
from test_cli import PASSPHRASE, Cli, api_vault, ok

SEED = 1313
#: Kill points per command (at least 20 in all).
POINTS = {"backup": 8, "prune": 6, "copy": 6, "rotate": 4}

Tree = Dict[str, bytes]


class Scene(NamedTuple):
    """A template to copy for each kill point: its vaults, the command to kill (run in the copy), and the
    points that must survive (id -> the tree it holds, in the vault named by `check`)."""

    root: str
    args: Callable[[str], List[str]]  # the command line, given the copy's root
    check: str  # the vault (relative to the root) to check and restore from
    points: Dict[str, Tree]
    src: str


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


SCENES = {"backup": _backup_scene, "prune": _prune_scene, "copy": _copy_scene, "rotate": _rotate_scene}


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


def _verify(scene: Scene, work: str, tag: str) -> None:
    cache = os.path.join(work, f"vc-{tag}")
    with _open(os.path.join(work, scene.check), cache) as v:
        res = Checker(v).run(read_data=True)
        assert res["ok"], (tag, res["problems"])
        for pid, tree in scene.points.items():
            target = os.path.join(work, f"r-{tag}-{pid[:8]}")
            api.restore(v, pid, target)
            inner = os.path.join(target, scene.src.lstrip("/"))
            got = {}
            for name in os.listdir(inner):
                with open(os.path.join(inner, name), "rb") as f:
                    got[name] = f.read()
            assert got == tree, (tag, pid)


def make_scenes(root: str, seed: int = SEED) -> Dict[str, Scene]:
    """Every scene's template, under `root`."""
    rng = random.Random(seed)
    out = {}
    for name, make in SCENES.items():
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
    _verify(scene, work, f"k{n}")
    ok(run(*scene.args(work)))  # the next run succeeds, with the agent cache the killed one left
    _verify(scene, work, f"n{n}")
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
