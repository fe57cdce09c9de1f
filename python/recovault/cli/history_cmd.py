"""recovault history [JOB]: the journal of job runs (jobfile/history.py), newest first; with --stale DURATION,
each job checked instead: stale when it has no successful run within DURATION or its last run did not end ok
(exit 21, errors.Stale: for monitoring). Needs no vault and no passphrase."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import click

from ..errors import Stale, UsageError
from .context import Ctx, common_options, examples, pass_ctx

if TYPE_CHECKING:
    from ..jobfile.history import History, JobHealth, RunRecord


def job_argument(job: str) -> str:
    """JOB as given: a job's name, or its job file (`/etc/recovault/jobs/web.toml` names `web`)."""
    from ..jobfile.locations import job_name, valid_name
    name = job_name(job) if job.endswith(".toml") else job
    if not valid_name(name):
        raise UsageError(f"{job!r} is no job name (letters, digits, '_', '.' and '-'), nor a job file NAME.toml")
    return name


def when(time: Optional[str]) -> str:
    """A stored time as the text tables show it (UTC, to the second)."""
    from ..timefmt import shown
    return shown(time) if time else "-"


def _duration(r: "RunRecord") -> str:
    from ..progress import elapsed_text
    seconds = r.seconds
    return elapsed_text(seconds) if seconds is not None else "-"


def _runs_table(runs: List["RunRecord"]) -> str:
    from ..progress import human_bytes
    if not runs:
        return "no job runs recorded"
    lines = [f"{'ID':>5}  {'JOB':<16}{'START (UTC)':<21}{'TOOK':>9}  {'STATUS':<12}{'MODE':<13}{'POINT':<10}"
             f"{'ADDED':>11}  MESSAGE"]
    for r in runs:
        lines.append(f"{r.id:>5}  {r.job:<16}{when(r.start):<21}{_duration(r):>9}  {r.status:<12}{r.mode:<13}"
                     f"{(r.snapshot or '-')[:8]:<10}{human_bytes(r.bytes_added, binary=False):>11}  "
                     f"{r.message or ''}".rstrip())
    return "\n".join(lines)


def _jobs_to_check(h: "History", job: Optional[str], jobs_dir: Optional[str]) -> List[str]:
    """JOB; else the jobs of the jobs directory, when it exists; else every job the journal has."""
    if job is not None:
        return [job]
    from ..jobfile.locations import jobs_dir as default_jobs_dir, job_name
    directory = default_jobs_dir(jobs_dir)
    if os.path.isdir(directory):
        return sorted(job_name(n) for n in os.listdir(directory) if n.endswith(".toml"))
    if jobs_dir is not None:
        raise UsageError(f"--jobs-dir {jobs_dir}: no such directory")
    return h.jobs()


def _health_text(checked: List["JobHealth"]) -> str:
    if not checked:
        return "no jobs to check"
    lines = []
    for j in checked:
        if j.stale:
            lines.append(f"{j.job}: STALE: " + "; ".join(j.problems))
        else:
            assert j.last_success is not None
            lines.append(f"{j.job}: ok (last success {when(j.last_success.end)} UTC)")
    return "\n".join(lines)


def _check(c: Ctx, h: "History", jobs: List[str], stale: str, within: float) -> None:
    from datetime import datetime, timezone
    from ..timefmt import format_time
    now = datetime.now(timezone.utc)
    checked = [h.health(name, within, now) for name in jobs]
    bad = [j.job for j in checked if j.stale]
    doc: Dict[str, Any] = {"within": stale, "seconds": within, "checked": format_time(now), "stale": bool(bad),
                           "jobs": [j.to_json() for j in checked]}
    c.out(doc, _health_text(checked))
    if bad:
        raise Stale(f"{len(bad)} job(s) stale or failing: {', '.join(bad)}")


@click.command(epilog=examples(
    "recovault history",
    "recovault history web --limit 10",
    "recovault history --json",
    "recovault history --stale 2d     (exit 21 if a job has no successful run in 2 days or its last run failed)",
    "recovault history web --stale 36h --json"))
@common_options
@click.argument("job", required=False)
@click.option("--limit", type=click.IntRange(1), metavar="N", help="Show only the N newest runs.")
@click.option("--stale", metavar="DURATION",
              help="Check the jobs instead of listing runs: exit 21 when a job has no successful run within "
                   "DURATION (2d, 36h, 1w) or its last run did not end ok.")
@click.option("--jobs-dir", metavar="DIR",
              help="The jobs --stale checks without JOB: the job files here (default $RECOVAULT_JOBS_DIR or "
                   "/etc/recovault/jobs; when that does not exist, every job the history has).")
@pass_ctx
def history(c: Ctx, job: Optional[str], limit: Optional[int], stale: Optional[str], jobs_dir: Optional[str]) -> None:
    """Show the runs of jobs (all, or JOB's), newest first; --stale checks them for monitoring."""
    from ..jobfile.history import History
    name = job_argument(job) if job is not None else None
    h = History()
    if stale is not None:
        from ..jobfile.timespan import parse_timespan
        within = parse_timespan(stale, "--stale")
        _check(c, h, _jobs_to_check(h, name, jobs_dir), stale, within)
        return
    runs = h.runs(name, limit)
    c.out([r.to_json() for r in runs], _runs_table(runs))


command = history
