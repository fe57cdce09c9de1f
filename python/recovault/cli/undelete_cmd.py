"""recovault undelete: bring back a soft-deleted recovery point before it expires."""
from __future__ import annotations

import click

from ..timefmt import shown
from .context import Ctx, common_options, examples, pass_ctx


@click.command(epilog=examples(
    'recovault undelete 1a2b3c4d   (ids: recovault snapshots --deleted)'))
@common_options
@click.argument("snapshot", metavar="ID")
@pass_ctx
def undelete(c: Ctx, snapshot: str) -> None:
    """Make a soft-deleted recovery point live again (see 'recovault snapshots --deleted')."""
    with c.open(write=True) as v:
        point = v.undelete(snapshot)
    c.out(point.to_json(), f"recovery point {point.short_id} of {point.host} at "
                           f"{shown(point.time)} is live again")


command = undelete
