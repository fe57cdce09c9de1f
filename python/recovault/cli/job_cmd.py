"""recovault job validate | run | list | schedule: jobs described by job files (TOML, one per job,
`/etc/recovault/jobs/NAME.toml`; jobfile/). Each lane of issue 12 adds its subcommands in a block of its own
below the group."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, List, Optional

import click

from ..errors import UsageError
from .context import Ctx, common_options, examples, pass_ctx


@click.group(epilog=examples(
    "recovault job list",
    "recovault job list --jobs-dir /srv/jobs --json"))
@common_options
def job() -> None:
    """Jobs described by job files: list them with their last and next runs."""


# ---- job list (history lane) -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Schedule:
    calendar: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class _JobFile:
    """What `job list` reads of a job file: its name, path and [schedule] (JobSpec's attributes of the same
    names, so `load_job` can take `_read_job`'s place)."""

    name: str
    path: str
    schedule: _Schedule


def _read_job(path: str) -> _JobFile:
    """The job file's name and [schedule] calendar (to be replaced by jobfile.spec.load_job); UsageError
    naming the file when it does not parse."""
    import tomllib
    from ..jobfile.locations import job_name
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"{path}: {getattr(e, 'strerror', None) or e}") from None
    calendar = doc.get("schedule", {}).get("calendar", []) if isinstance(doc.get("schedule"), dict) else []
    calendar = [calendar] if isinstance(calendar, str) else calendar
    if not isinstance(calendar, list) or not all(isinstance(c, str) for c in calendar):
        raise UsageError(f"{path}: [schedule] calendar is not a list of strings")
    return _JobFile(job_name(path), path, _Schedule(list(calendar)))


def next_run(spec: Any, after: Optional[datetime] = None) -> Optional[datetime]:
    """When the job's timer fires next: the earliest `calendar.next_elapse(expr, after)` of its [schedule]
    calendar expressions; None without a calendar, or without jobfile/calendar.py (the schedule lane's)."""
    try:
        from ..jobfile import calendar  # type: ignore[attr-defined]
    except ImportError:
        return None
    from datetime import timezone
    after = after or datetime.now(timezone.utc)
    times = []
    for expr in spec.schedule.calendar:
        try:
            t = calendar.next_elapse(expr, after)
        except ValueError:
            continue
        if t is not None:
            times.append(t)
    return min(times, default=None)


def _job_row(path: str, history: Any) -> Dict[str, Any]:
    from ..jobfile.locations import job_name, valid_job_name
    from ..timefmt import format_time
    name = job_name(path)
    problem: Optional[str] = None
    spec: Optional[_JobFile] = None
    if not valid_job_name(name):
        problem = f"{name!r} is no job name (letters, digits, '_', '.' and '-')"
    else:
        try:
            spec = _read_job(path)
        except UsageError as e:
            problem = str(e)
    last = history.last(name) if valid_job_name(name) else None
    upcoming = next_run(spec) if spec is not None else None
    return {"job": name, "file": path, "calendar": spec.schedule.calendar if spec else [],
            "last": last.to_json() if last else None, "status": last.status if last else None,
            "next": format_time(upcoming) if upcoming else None, "problem": problem}


def _list_text(rows: List[Dict[str, Any]], directory: str) -> str:
    if not rows:
        return f"no job files (*.toml) in {directory}"
    from .history_cmd import when
    lines = [f"{'JOB':<16}{'LAST RUN (UTC)':<21}{'STATUS':<13}{'NEXT RUN (UTC)':<21}FILE"]
    for r in rows:
        last = r["last"]
        lines.append(f"{r['job']:<16}{when(last['start'] if last else None):<21}{r['status'] or 'never run':<13}"
                     f"{when(r['next']):<21}{r['file']}" + (f"  PROBLEM: {r['problem']}" if r["problem"] else ""))
    return "\n".join(lines)


@job.command(name="list", epilog=examples(
    "recovault job list",
    "recovault job list --jobs-dir /srv/recovault/jobs",
    "recovault job list --json"))
@common_options
@click.option("--jobs-dir", metavar="DIR",
              help="The directory of the job files (NAME.toml; default $RECOVAULT_JOBS_DIR or /etc/recovault/jobs).")
@pass_ctx
def job_list(c: Ctx, jobs_dir: Optional[str]) -> None:
    """List the jobs (the job files of the jobs directory) with their last run, its status, and the next run."""
    from ..jobfile.history import History
    from ..jobfile.locations import jobs_dir as default_jobs_dir
    directory = default_jobs_dir(jobs_dir)
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".toml"))
    except FileNotFoundError:
        raise UsageError(f"no jobs directory {directory} (--jobs-dir or RECOVAULT_JOBS_DIR names another)") from None
    except NotADirectoryError:
        raise UsageError(f"{directory} is not a directory (--jobs-dir names the directory of the job files)") from None
    history = History()
    rows = [_job_row(os.path.join(os.path.abspath(directory), n), history) for n in names]
    c.out(rows, _list_text(rows, directory))

# ---- end of job list ----------------------------------------------------------------------------------------


command = job
