"""recovault snapshots: list the recovery points."""
from __future__ import annotations

from typing import List

import click

from ..errors import CorruptData
from .context import Ctx, common_options, pass_ctx


@click.command()
@common_options
@pass_ctx
def snapshots(c: Ctx) -> None:
    """List recovery points."""
    damaged: List[str] = []
    with c.open() as v:
        snaps = v.snapshots(on_corrupt=damaged.append)
    for msg in damaged:
        c.warn(msg)
    lines = [f"{'ID':8}  {'time':19}  {'host':12}  {'mode':12}  {'size':>10}  paths"]
    for s in snaps:
        lines.append(f"{s.short_id}  {s.time[:19].replace('T', ' ')}  {s.host[:12]:12}  {s.mode:12}  "
                     f"{s.stats['bytes_total'] / 1e6:>8.1f}MB  {' '.join(s.paths)}"
                     + ("" if s.complete else "  (incomplete)"))
    c.out([s.to_json() for s in snaps], "\n".join(lines))
    if damaged:
        raise CorruptData(f"{len(damaged)} recovery point(s) damaged, first: {damaged[0]}; run 'recovault check'")


command = snapshots
