"""recovault policy set | show: the retention policy stored in the vault (applied by `forget` with no rules)
and the soft-delete period."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Dict, Optional

import click

from ..errors import UsageError
from ..timefmt import shown
from .context import Ctx, common_options, examples, pass_ctx
from .keep_options import keep_options, policy_from


@click.group(epilog=examples(
    'recovault policy show', 'recovault policy set --keep-daily 7 --keep-weekly 5'))
@common_options
def policy() -> None:
    """Show or set the vault's retention policy and soft-delete period."""


def _describe(v: Any) -> Dict[str, Any]:
    """The stored policy and the soft-delete period in force now (a shortening waits for the old period)."""
    from .. import timefmt
    from ..vault.journal import longer_period_until, soft_delete_days_at
    now = datetime.now(timezone.utc)
    stored = v.policy
    changes = v.journal.period_changes()
    until = longer_period_until(changes, now)
    doc = stored.to_json()
    doc["in_force"] = {"soft_delete_days": soft_delete_days_at(changes, now),
                       "until": timefmt.format_time(until) if until else None}
    return doc


def _text(doc: Dict[str, Any]) -> str:
    from ..retention import Policy
    retention = doc["retention"]
    lines = [f"retention: {Policy.from_json(retention) if retention is not None else 'none stored'}",
             f"soft delete: {doc['soft_delete_days']} day(s)" + ("" if doc["soft_delete_days"] else " (off)")]
    force = doc["in_force"]
    if force["until"]:
        lines.append(f"  {force['soft_delete_days']} day(s) stay in force until {shown(force['until'])} "
                     "UTC (a shorter period takes effect only once the old one has passed)")
    return "\n".join(lines)


@policy.command(name="show", epilog=examples(
    'recovault policy show --json'))
@common_options
@pass_ctx
def policy_show(c: Ctx) -> None:
    """Show the stored policy and the soft-delete period in force."""
    with c.open() as v:
        doc = _describe(v)
    c.out(doc, _text(doc))


@policy.command(name="set", epilog=examples(
    'recovault policy set --keep-daily 7 --keep-weekly 5 --soft-delete-days 30', 'recovault policy set --no-retention'))
@common_options
@keep_options
@click.option("--soft-delete-days", type=int, default=None, metavar="N",
              help="Keep forgotten points recoverable for N days (0: off; a shorter period takes effect only "
                   "once the current one has passed).")
@click.option("--no-retention", is_flag=True, help="Store no retention rules (forget then needs --keep-*).")
@pass_ctx
def policy_set(c: Ctx, soft_delete_days: Optional[int], no_retention: bool, **keep: Any) -> None:
    """Store the retention rules forget applies when given none (the --keep-* rules replace the stored
    ones), and/or the soft-delete period."""
    from ..vault.journal import VaultPolicy
    retention = policy_from(keep)
    if retention is not None and no_retention:
        raise UsageError("give --keep-* rules or --no-retention, not both")
    if retention is None and soft_delete_days is None and not no_retention:
        raise UsageError("nothing to set: give --keep-* rules, --no-retention or --soft-delete-days")
    with c.open(write=True) as v:
        current = v.policy
        new = VaultPolicy(None if no_retention else retention or current.retention,
                          current.soft_delete_days if soft_delete_days is None else soft_delete_days)
        v.set_policy(new)
        doc = _describe(v)
    c.out(doc, _text(doc))


command = policy
