"""The long form of the reliability tests (tests/test_kill9.py, tests/test_faults.py), with figures for
docs/reliability.md:

* kill -9 at random points (RECOVAULT_FAULTS=kill=N, spread over each command's storage calls) in backup,
  prune, copy, repair --from, repair of an erasure-coded vault (--replace of a lost location, corrupt
  shards rebuilt) and key rotate --rewrite, each followed by check --read-data, byte-for-byte restores of
  the earlier points and a successful next run (a repair --from, which starts from a damaged vault: the
  points the damage spared after the kill, every point and a clean check after the next run; a repair of
  an ec vault: then full redundancy);
* backup, restore, check, forget and prune under seeded random faults of every kind, each followed by a
  clean check --read-data, then a clean backup, check and restore.

    .venv/bin/python bench/reliability.py [--points 20] [--rounds 30] [--rate 0.06] [--seed S] [--scene NAME]

--points is per scene (20: 140 kill points over seven scenes); --seed fixes the kill points and the fault
seeds (default: a random one, printed, so a failure can be replayed). Any failed check raises: the run
stops there.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import test_faults  # noqa: E402
import test_kill9  # noqa: E402


def _kill(scene: "test_kill9.Scene", tmp: str, n: int) -> int:
    """One kill point, its copies and restores removed after (a long run would fill the disk)."""
    try:
        return test_kill9.kill_and_recover(scene, tmp, n)
    finally:
        for name in (f"k{n}", f"home{n}"):
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)


def kills(root: str, per_command: int, seed: int, only: Sequence[str] = ()) -> None:
    scenes = test_kill9.make_scenes(os.path.join(root, "scenes"), seed, only)
    print(f"{'command':8} {'calls':>5} {'points':>6} {'killed':>6} {'recovered':>9} {'seconds':>8}")
    for name, scene in sorted(scenes.items()):
        tmp = os.path.join(root, "k-" + name)
        os.makedirs(tmp)
        start = time.monotonic()
        calls = test_kill9.count_calls(scene, os.path.join(tmp, "tally"))
        rng = random.Random(f"{seed}-{name}")
        points = sorted(rng.sample(range(1, calls + 1), min(per_command, calls)))
        killed = sum(_kill(scene, tmp, n) == -9 for n in points)
        print(f"{name:8} {calls:5} {len(points):6} {killed:6} {len(points):9} {time.monotonic() - start:8.1f}",
              flush=True)


def rounds(root: str, count: int, rate: float, seed: int) -> None:
    small = test_faults.make_small_vault(Path(root) / "small")
    outcomes: Counter = Counter()
    start = time.monotonic()
    for i in range(count):
        tmp = Path(root) / f"r{i}"
        tmp.mkdir()
        for command, code in test_faults.faulted_round(small, tmp, seed + i, rate).items():
            outcomes[command, code] += 1
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{count} rounds at rate {rate} in {time.monotonic() - start:.0f} s; exit codes per command "
          "(0 done, 13 storage error, 14 missing, 19 unavailable, 24 no space), every round then checked clean:")
    for command in ("backup", "restore", "check", "forget", "prune"):
        shown = ", ".join(f"{code}: {n}" for (c, code), n in sorted(outcomes.items()) if c == command)
        print(f"  {command:8} {shown}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=20, help="kill points per command (default 20)")
    ap.add_argument("--rounds", type=int, default=30, help="random-fault rounds (default 30)")
    ap.add_argument("--rate", type=float, default=0.06, help="fault probability per storage call")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--scene", action="append", default=[], choices=sorted(test_kill9.SCENES),
                    help="kill only in this scene (repeatable; default every one)")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"seed {seed}")
    with tempfile.TemporaryDirectory(prefix="rv-reliability-") as root:
        os.environ.setdefault("XDG_CACHE_HOME", os.path.join(root, "cache"))
        os.environ.setdefault("RECOVAULT_STATE_DIR", os.path.join(root, "state"))
        if args.points:
            kills(root, args.points, seed, args.scene)
        if args.rounds:
            rounds(root, args.rounds, args.rate, seed)


if __name__ == "__main__":
    main()
