"""recovault snapshots: list the recovery points."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, List, Optional

import click

from ..errors import CorruptData, UsageError
from ..timefmt import shown
from .context import Ctx, common_options, examples, pass_ctx, point_options

if TYPE_CHECKING:
    from ..vault.lifecycle import DeletedPoint
    from ..vault.records import RecoveryPoint


@click.command(epilog=examples(
    'recovault snapshots', 'recovault snapshots --deleted --json'))
@common_options
@point_options
@click.option("--deleted", is_flag=True, help="List the soft-deleted recovery points, with their expiry.")
@click.option("--group-by", default=None, metavar="host,paths,tags",
              help="List the points in groups sharing these fields (--json: a list of groups).")
@pass_ctx
def snapshots(c: Ctx, deleted: bool, group_by: Optional[str]) -> None:
    """List recovery points (the live ones; --deleted: the soft-deleted ones), those of --host/--path/--tag."""
    from ..retention import parse_group_by
    if group_by is not None:
        if deleted:
            raise UsageError("--group-by lists live recovery points: not with --deleted")
        parse_group_by(group_by)  # a bad grouping fails before the vault is opened
    damaged: List[str] = []
    with c.open() as v:
        if deleted:
            gone = v.deleted_snapshots(on_corrupt=damaged.append)
        else:
            snaps = v.snapshots(on_corrupt=damaged.append)
    for msg in damaged:
        c.warn(msg)
    if deleted:
        _deleted(c, [d for d in gone if c.where(d.point)] if c.where else gone)
    elif group_by is not None:
        _grouped(c, c.select_points(snaps), group_by)
    else:
        _live(c, c.select_points(snaps))
    if damaged:
        raise CorruptData(f"{len(damaged)} recovery point(s) damaged, first: {damaged[0]}; run 'recovault check'")


def _when(time: str) -> str:
    return shown(time)


def _deleted(c: Ctx, gone: List[DeletedPoint]) -> None:
    now = datetime.now(timezone.utc)
    lines = [f"{'ID':8}  {'time':20}  {'host':12}  {'removed':20}  {'expires':20}  paths"]
    for d in gone:
        s = d.point
        lines.append(f"{s.short_id}  {_when(s.time)}  {s.host[:12]:12}  {_when(d.removed)}  {_when(d.expires)}  "
                     f"{' '.join(s.paths)}" + ("  (expired: the next prune purges it)" if d.expired(now) else ""))
    c.out([d.to_json() for d in gone], "\n".join(lines))


_HEADER = f"{'ID':8}  {'time':20}  {'host':12}  {'tags':12}  {'mode':12}  {'size':>10}  paths"


def _row(s: RecoveryPoint) -> str:
    tags = ",".join(s.tags)
    return (f"{s.short_id}  {_when(s.time)}  {s.host[:12]:12}  {tags if len(tags) <= 12 else tags[:11] + '~':12}  "
            f"{s.mode:12}  {s.stats.get('bytes_total', 0) / 1e6:>8.1f}MB  {' '.join(s.paths)}"
            + ("  (partial: interrupted)" if s.partial else "" if s.complete else "  (incomplete)"))


def _live(c: Ctx, snaps: List[RecoveryPoint]) -> None:
    c.out([s.to_json() for s in snaps], "\n".join([_HEADER] + [_row(s) for s in snaps]))


def _grouped(c: Ctx, snaps: List[RecoveryPoint], group_by: str) -> None:
    """One table per group (restic's snapshots --group-by); --json: a list of {host, paths, tags, snapshots}."""
    from ..retention import group_points, parse_group_by
    fields = parse_group_by(group_by)
    groups = group_points(snaps, by=fields)
    lines: List[str] = []
    for g in groups:
        shown = {"host": g.key.host, "paths": " ".join(g.key.paths), "tags": ",".join(g.key.tags) or "(none)"}
        what = ", ".join(f"{f} {shown[f]}" for f in fields) or "all points"
        lines += [f"{what}:", _HEADER] + [_row(s) for s in g.points] + [""]
    c.out([dict(g.key.to_json(), snapshots=[s.to_json() for s in g.points]) for g in groups],
          "\n".join(lines).rstrip("\n"))


command = snapshots
