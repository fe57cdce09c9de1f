"""recovault snapshots: list the recovery points."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, List

import click

from ..errors import CorruptData
from .context import Ctx, common_options, examples, pass_ctx

if TYPE_CHECKING:
    from ..vault.lifecycle import DeletedPoint
    from ..vault.records import RecoveryPoint


@click.command(epilog=examples(
    'recovault snapshots', 'recovault snapshots --deleted --json'))
@common_options
@click.option("--deleted", is_flag=True, help="List the soft-deleted recovery points, with their expiry.")
@pass_ctx
def snapshots(c: Ctx, deleted: bool) -> None:
    """List recovery points (the live ones; --deleted: the soft-deleted ones)."""
    damaged: List[str] = []
    with c.open() as v:
        if deleted:
            gone = v.deleted_snapshots(on_corrupt=damaged.append)
        else:
            snaps = v.snapshots(on_corrupt=damaged.append)
    for msg in damaged:
        c.warn(msg)
    if deleted:
        _deleted(c, gone)
    else:
        _live(c, snaps)
    if damaged:
        raise CorruptData(f"{len(damaged)} recovery point(s) damaged, first: {damaged[0]}; run 'recovault check'")


def _when(time: str) -> str:
    return time[:19].replace("T", " ")


def _deleted(c: Ctx, gone: List[DeletedPoint]) -> None:
    now = datetime.now(timezone.utc)
    lines = [f"{'ID':8}  {'time':19}  {'host':12}  {'removed':19}  {'expires':19}  paths"]
    for d in gone:
        s = d.point
        lines.append(f"{s.short_id}  {_when(s.time)}  {s.host[:12]:12}  {_when(d.removed)}  {_when(d.expires)}  "
                     f"{' '.join(s.paths)}" + ("  (expired: the next prune purges it)" if d.expired(now) else ""))
    c.out([d.to_json() for d in gone], "\n".join(lines))


def _live(c: Ctx, snaps: List[RecoveryPoint]) -> None:
    lines = [f"{'ID':8}  {'time':19}  {'host':12}  {'mode':12}  {'size':>10}  paths"]
    for s in snaps:
        lines.append(f"{s.short_id}  {s.time[:19].replace('T', ' ')}  {s.host[:12]:12}  {s.mode:12}  "
                     f"{s.stats.get('bytes_total', 0) / 1e6:>8.1f}MB  {' '.join(s.paths)}"
                     + ("  (partial: interrupted)" if s.partial else "" if s.complete else "  (incomplete)"))
    c.out([s.to_json() for s in snaps], "\n".join(lines))


command = snapshots
