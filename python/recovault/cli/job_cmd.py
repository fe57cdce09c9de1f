"""recovault job: job files (one TOML file per job, e.g. /etc/recovault/jobs/NAME.toml) and what runs them.
Each subcommand is its own block below (validate and run, list, schedule)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import click

from .context import Ctx, common_options, examples, pass_ctx


@click.group(epilog=examples(
    "recovault job schedule /etc/recovault/jobs/web.toml",
    "recovault job schedule /etc/recovault/jobs/web.toml --dry-run"))
@common_options
def job() -> None:
    """Job files: one TOML file describes a backup job; the system's scheduler runs it."""


# --- job schedule ----------------------------------------------------------------------------------------

def _calendar_json(exprs: List[str]) -> List[Dict[str, Any]]:
    from datetime import datetime, timezone
    from ..jobfile import calendar
    from ..timefmt import format_time
    now = datetime.now(timezone.utc)
    out = []
    for expr in exprs:
        nxt = calendar.next_elapse(expr, now)
        out.append({"expression": expr, "next": format_time(nxt) if nxt else None, "cron": calendar.to_cron(expr)})
    return out


def _schedule_text(p: Any, cal: List[Dict[str, Any]], dry_run: bool) -> str:
    lines: List[str] = []
    if dry_run:
        files = list(p.units) + ([p.cron] if p.cron is not None else [])
        for f in files:
            lines += [f"# {f.path}", f.text]
        lines.append({"systemd": f"would write the units and {'enable' if p.enable else 'not enable'} {p.timer}",
                      "cron": (f"would refuse: cron cannot say {', '.join(map(repr, p.no_cron))}" if p.no_cron
                               else f"would write {p.cron.path if p.cron else 'nothing'} (no systemd here)"),
                      "none": "neither systemd nor cron here: nothing would be scheduled"}[p.scheduler])
    else:
        lines += p.done
        if p.scheduler == "systemd" and not p.enable:
            lines.append(f"not enabled: systemd does not run here or does not read that directory "
                         f"(there: systemctl enable --now {p.timer})")
    lines += [f"{c['expression']}: next run {c['next'] or 'never'}" for c in cal]
    return "\n".join(lines)


@job.command(name="schedule", epilog=examples(
    "recovault job schedule /etc/recovault/jobs/web.toml",
    "recovault job schedule /etc/recovault/jobs/web.toml --dry-run",
    "recovault job schedule ~/jobs/laptop.toml --user",
    "recovault job schedule web.toml --unit-dir ./units --json"))
@common_options
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the units (and the cron file) instead of writing them; "
              "nothing is written or enabled.")
@click.option("--user", is_flag=True, help="A timer of your user's systemd (~/.config/systemd/user, "
              "systemctl --user) instead of the system's.")
@click.option("--unit-dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write the units into DIR (default /etc/systemd/system, or the user's with --user); the "
                   "timer is enabled only in the default directory.")
@pass_ctx
def job_schedule(c: Ctx, file: str, dry_run: bool, user: bool, unit_dir: Optional[str]) -> None:
    """Put a job on the system's scheduler: a systemd service + timer (enabled), else a cron file."""
    from ..jobfile import schedule
    spec = schedule.read_job_schedule(file)
    p = schedule.plan(spec, user=user, unit_dir=unit_dir)
    if not dry_run:
        schedule.install(p)
    cal = _calendar_json(spec.calendar)
    doc = {"job": spec.name, "file": spec.path, "dry_run": dry_run, "user": user, "scheduler": p.scheduler,
           "units": [{"path": u.path, "text": u.text} for u in p.units],
           "cron": {"path": p.cron.path, "text": p.cron.text} if p.cron else None,
           "enabled": p.enable and not dry_run, "done": p.done, "calendar": cal}
    c.out(doc, _schedule_text(p, cal, dry_run))


command = job
