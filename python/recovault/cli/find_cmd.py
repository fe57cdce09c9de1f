"""recovault find: the recovery points that hold paths matching a pattern (restic find)."""
from __future__ import annotations

from typing import List, Optional

import click

from ..errors import UsageError
from ..timefmt import shown
from .context import Ctx, common_options, examples, pass_ctx, point_options


@click.command(epilog=examples(
    "recovault find '*.conf' --host web1 --newest 7",
    "recovault find '/etc/nginx/*' --json"))
@common_options
@point_options
@click.argument("pattern")
@click.option("--newest", type=click.IntRange(1), default=None, metavar="N",
              help="Search only the N newest of the chosen recovery points.")
@click.option("--oldest", type=click.IntRange(1), default=None, metavar="N",
              help="Search only the N oldest of the chosen recovery points.")
@pass_ctx
def find(c: Ctx, pattern: str, newest: Optional[int], oldest: Optional[int]) -> None:
    """Find entries matching PATTERN (a glob: * ? [..]) in the recovery points: against each entry's name, or
    its whole path when PATTERN holds a '/'. Lists each point that holds matches, with their mode, owner,
    size and mtime. Reads only trees (the agent cache's, for an object store), never file data.
    """
    if newest is not None and oldest is not None:
        raise UsageError("give --newest or --oldest, not both")
    from ..find import find as do_find
    with c.open() as v:
        points = c.select_points(v.snapshots(on_corrupt=c.warn))
        points = points[-newest:] if newest else points[:oldest] if oldest else points
        found = do_find(v, pattern, points)
    lines: List[str] = []
    for pm in found:
        p = pm.point
        lines.append(f"recovery point {p.short_id} of {shown(p.time)} (host {p.host}):")
        lines += [f"  {e.long_line()}" for e in pm.matches]
    lines.append(f"{sum(len(pm.matches) for pm in found)} matching entries in {len(found)} of {len(points)} "
                 "recovery points searched")
    c.out([pm.to_json() for pm in found], "\n".join(lines))


command = find
