"""The long form of the tamper sweep (tests/test_tamper.py), with figures for docs/reliability.md: a seeded
sample of byte flips in every kind of object of a small vault, and of every shard (and descriptor) of an
erasure-coded set, each followed by `check --read-data` and a restore of every recovery point, in this
process (tests/tamper_sweep.py). Prints, per kind of object and region, how many flips were reported and
how (check, check warning, restore, harmless with the reason), then the findings (flips that broke the
rules: a wrong byte restored silently, a traceback, a flip nobody noticed), and exits 1 if there was one.

    .venv/bin/python bench/tamper.py [--per-kind 8000] [--ec 2+1] [--per-kind-ec 300] [--seed S]

Every byte of a region smaller than its share is flipped: with --per-kind 8000 that is every byte of every
object but the packs (config, key files, index files, points, journal entries, the plan, the session, the
lease), and 1,334 of each region of the packs (data blobs, tree blobs, the header's ciphertext; every byte
of the header's sealed header, tag and the trailer), ~11,800 positions in all. --ec K+M adds the set ('' for none).
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import tamper_sweep as sweep  # noqa: E402


def run(label: str, per_kind: int, seed: int, ec: Optional[Tuple[int, int]]) -> List[str]:
    """One scene's sweep; prints its table and returns its findings."""
    root = sweep.scratch("/tmp")
    findings: List[str] = []
    try:
        scene = sweep.make_scene(root, seed=seed, ec=ec)
        sample = sweep.positions(scene, per_kind, seed)
        size = sum(r.end - r.start for rs in scene.regions.values() for r in rs)
        print(f"\n{label}: {len(scene.regions)} object files, {size} bytes; {len(sample)} positions (seed {seed})")
        hows: Dict[Tuple[str, str], Counter] = defaultdict(Counter)
        restores: Dict[Tuple[str, str], Counter] = defaultdict(Counter)
        seconds: Counter = Counter()
        start = time.monotonic()
        for pos in sample:
            t0 = time.monotonic()
            try:
                o = sweep.probe(scene, pos, os.path.join(root, "work"))
                how, restore = o.how, o.restore
            except sweep.Finding as e:
                findings.append(str(e))
                how = restore = "FINDING"
            hows[pos.region.kind, pos.region.what][how] += 1
            restores[pos.region.kind, pos.region.what][restore] += 1
            seconds[pos.region.kind] += time.monotonic() - t0
        _table(hows, restores, seconds)
        took = time.monotonic() - start
        print(f"{len(sample)} flips in {took:.0f} s ({1000 * took / len(sample):.1f} ms a flip), "
              f"{len(findings)} finding(s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return findings


def _table(hows: Dict[Tuple[str, str], Counter], restores: Dict[Tuple[str, str], Counter],
           seconds: Counter) -> None:
    print(f"{'object':14} {'region':22} {'flips':>6}  {'restores alone':24}  how each was noticed")
    per_kind: Counter = Counter()
    for (kind, what), c in sorted(hows.items()):
        per_kind[kind] += sum(c.values())
        shown = ", ".join(f"{how}: {n}" for how, n in c.most_common())
        alone = ", ".join(f"{r}: {n}" for r, n in sorted(restores[kind, what].items()))
        print(f"{kind:14} {what:22} {sum(c.values()):6}  {alone:24}  {shown}")
    print("per kind: " + ", ".join(f"{k} {n} ({seconds[k]:.0f} s)" for k, n in sorted(per_kind.items())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-kind", type=int, default=8000, help="positions per kind of object (plain vault)")
    ap.add_argument("--ec", default="2+1", help="the erasure-coded set K+M ('' for none)")
    ap.add_argument("--per-kind-ec", type=int, default=300, help="positions per kind of object (ec set)")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    findings = run("plain vault", args.per_kind, seed, None) if args.per_kind else []
    if args.ec and args.per_kind_ec:
        k, m = (int(x) for x in args.ec.split("+"))
        findings += run(f"ec:{k}+{m} set", args.per_kind_ec, seed, (k, m))
    for f in findings:
        print("FINDING", f)
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
