"""recovault check: verify the vault's structure, and with --read-data its every byte."""
from __future__ import annotations

from typing import Optional

import click

from ..errors import CorruptData
from .context import Ctx, common_options, examples, pass_ctx


@click.command(epilog=examples(
    'recovault check', 'recovault check --read-data-subset 10% --json'))
@common_options
@click.option("--read-data", is_flag=True, help="Read and decrypt every pack and chunk.")
@click.option("--read-data-subset", default=None, help="Read a subset: 'n/m' or a percentage like '10%'.")
@pass_ctx
def check(c: Ctx, read_data: bool, read_data_subset: Optional[str]) -> None:
    """Verify the vault's structure, and with --read-data every byte of it."""
    with c.open(quiet=True) as v, c.progress("reading", "packs") as prog:
        from ..vault.check import Checker
        checker = Checker(v, prog)
        res = checker.run(read_data=read_data, subset=read_data_subset)
    for m in checker.missing_packs():  # --verbose: every path that lost data, not only the first ones
        for path in m.every_file:
            c.info(f"lost data: {path} (pack {m.pack or 'unknown: in no index'})")
    scan = checker.shard_scan
    for obj in (scan.damaged + scan.unreadable + scan.incomplete) if scan is not None else []:
        c.info(f"shards: {obj.line()}")  # --verbose: each object of an erasure-coded vault not whole
    st = res["stats"]
    affected = []
    if res["damaged_points"] or res["damaged_indexes"]:
        affected = [f"{st['restorable']} of {st['snapshots']} recovery points fully restorable"
                    + (f"; not restorable in full: {' '.join(s[:8] for s in res['damaged_points'])}"
                       if res["damaged_points"] else "")]
    g = res["garbage"]
    garbage = [f"garbage (not damage; prune reclaims it): {g.get('unreferenced_blobs', '?')} unreferenced blob(s) "
               f"({g.get('unreferenced_bytes', 0) / 1e6:.1f} MB, {g.get('unreferenced_packs', 0)} whole pack(s)), "
               f"{g['unindexed_packs']} pack(s) no index lists, {g['condemned_packs']} pack(s) condemned by "
               f"{g.get('pending_plans', 0)} pending plan(s)"] if any(g.values()) else []
    shards = scan.lines() if scan is not None else []  # an erasure-coded vault: a line per location
    text = "\n".join([f"warning: {w}" for w in res["warnings"]] + affected + garbage + shards +
                     [f"checked {st['snapshots']} recovery points, {st['trees']} trees, {st['packs']} packs"
                      + (f", read {st['packs_read']} packs / {st['blobs_read']} blobs" if st["packs_read"] else "")
                      + (": no problems" if res["ok"] else f": {len(res['problems'])} PROBLEM(S)")])
    c.out(res, text)
    if not res["ok"]:
        raise CorruptData(f"check found {len(res['problems'])} problem(s); first: {res['problems'][0]}")


command = check
