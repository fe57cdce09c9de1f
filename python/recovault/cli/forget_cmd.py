"""recovault forget: soft-delete recovery points by a retention policy (restic's forget --keep-*) or by id."""
from __future__ import annotations

from typing import Any, List, Tuple

import click

from ..errors import UsageError
from ..timefmt import shown
from .context import Ctx, common_options, examples, pass_ctx
from .keep_options import keep_options, policy_from


@click.command(epilog=examples(
    'recovault forget --keep-daily 7 --keep-weekly 5 --dry-run', 'recovault forget --keep-last 3 --host web1 --path /srv --prune', 'recovault forget 1a2b3c4d'))
@common_options
@click.argument("ids", nargs=-1, metavar="[ID]...")
@keep_options
@click.option("--host", "hosts", multiple=True, help="Only points of this host (repeatable).")
@click.option("--path", "paths", multiple=True, help="Only points that include this path (repeatable: all).")
@click.option("--tag", "tags", multiple=True, metavar="TAG[,TAG]", help="Only points with these tags (repeatable: any).")
@click.option("--group-by", default="host,paths", show_default=True,
              help="Apply the policy per group of points sharing these (host, paths, tags; '' for one group).")
@click.option("--dry-run", "-n", is_flag=True, help="Only show what would be removed; change nothing.")
@click.option("--allow-empty", is_flag=True, help="Allow removing the last recovery point of a host and paths.")
@click.option("--prune", "then_prune", is_flag=True, help="Run prune afterwards (reclaim the space).")
@pass_ctx
def forget(c: Ctx, ids: Tuple[str, ...], hosts: Tuple[str, ...], paths: Tuple[str, ...], tags: Tuple[str, ...],
           group_by: str, dry_run: bool, allow_empty: bool, then_prune: bool, **keep: Any) -> None:
    """Forget recovery points: those named by ID, or those the --keep-* rules (default: the vault's stored
    policy, see 'recovault policy') do not keep, per group. A forgotten point is soft-deleted: it can be
    undeleted until the vault's soft-delete period has passed; 'prune' then reclaims its space."""
    from ..retention import parse_group_by
    from ..selection import PointFilter
    policy = policy_from(keep)
    if ids and (policy is not None or hosts or paths or tags):
        raise UsageError("give recovery point IDs or --keep-*/--host/--path/--tag, not both")
    parse_group_by(group_by)  # a bad grouping fails before the vault is opened
    with c.open(write=not dry_run) as v:
        groups = v.forget(policy, ids, group_by=group_by, where=PointFilter(hosts, paths, tags),
                          dry_run=dry_run, allow_empty=allow_empty)
        stored = set(v.points.ids())
        purged = 0 if dry_run else sum(p.id not in stored for g in groups for p in g.remove)
        c.out([g.to_json() for g in groups], _text(groups, dry_run, purged))
        if then_prune and not dry_run:
            from .prune_cmd import _text as prune_text
            result = v.prune()  # the defaults of 'recovault prune' (margin 2h)
            if not c.json and not c.quiet:
                click.echo(prune_text(result))


def _text(groups: List[Any], dry_run: bool, purged: int) -> str:
    lines: List[str] = []
    for g in groups:
        what = ", ".join(f"{k} {v}" for k, v in (("host", g.key.host), ("paths", " ".join(g.key.paths)),
                                                   ("tags", ",".join(g.key.tags))) if v) or "all points"
        lines.append(f"{what}:")
        for k in g.keep:
            lines.append(f"  keep    {k.point.short_id}  {shown(k.point.time)}  "
                         f"{', '.join(k.matches)}")
        for p in g.remove:
            lines.append(f"  remove  {p.short_id}  {shown(p.time)}")
    removed = sum(len(g.remove) for g in groups)
    if not removed:
        lines.append("nothing to remove")
    elif dry_run:
        lines.append(f"would remove {removed} recovery point(s) (dry run: nothing changed)")
    elif purged:
        lines.append(f"removed {removed} recovery point(s) for good (soft delete is off)")
    else:
        lines.append(f"soft-deleted {removed} recovery point(s): 'recovault snapshots --deleted' lists them, "
                     "'recovault undelete ID' brings one back until it expires")
    return "\n".join(lines)


command = forget
