"""recovault job validate | run | list | schedule: jobs described by job files (TOML, one per job,
`/etc/recovault/jobs/NAME.toml`; jobfile/). The group is one module; each subcommand is a block of its own
below it."""
from __future__ import annotations

import os
from datetime import datetime
from typing import Any, Dict, List, Optional

import click

from ..errors import RecovaultError, UsageError
from .context import Ctx, common_options, examples, pass_ctx


@click.group(epilog=examples(
    "recovault job validate /etc/recovault/jobs/web.toml",
    "recovault job run /etc/recovault/jobs/web.toml --json",
    "recovault job list",
    "recovault job schedule /etc/recovault/jobs/web.toml --dry-run"))
@common_options
def job() -> None:
    """Job files: one TOML file per backup job (vault, sources, modes, retention, limits, check, hooks,
    schedule, reports); see the README's "Scheduled jobs". validate checks one, run runs it, list shows the
    jobs with their last and next runs, schedule puts one on the system's scheduler. The job file names its
    vault and passphrase source: --vault and the passphrase options are not used by job commands."""


# -- run lane: validate, run -----------------------------------------------------------------------------------

class RunEnded(RecovaultError):
    """A job run that did not end ok: its exit code is the run's (3 partial, 17 busy vault lease, 130
    interrupted, ...), its message the record's."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@job.command(name="validate", epilog=examples(
    "recovault job validate /etc/recovault/jobs/web.toml",
    "recovault job validate web.toml --json"))
@common_options
@click.argument("file", type=click.Path(dir_okay=False))
@pass_ctx
def job_validate(c: Ctx, file: str) -> None:
    """Check a job file: every problem is listed with its line (exit 2); nothing is run or opened."""
    from ..jobfile.spec import JobFileError, load_job
    try:
        spec = load_job(file)
    except JobFileError as e:
        from ..jobfile.locations import job_name
        path = os.path.abspath(file)
        c.out({"file": path, "job": job_name(path), "valid": False,
               "problems": [{"line": p.line, "message": p.message} for p in e.problems]}, "")
        raise
    doc = validate_json(spec)
    c.out(doc, _validate_text(doc))


def validate_json(spec: Any) -> Dict[str, Any]:
    """`job validate --json` of a valid job file: what the job will do."""
    from datetime import datetime
    b, r = spec.backup, spec.retention
    return {
        "file": spec.path, "job": spec.name, "valid": True, "problems": [],
        "vault": spec.vault.url, "passphrase": spec.vault.passphrase.kind,
        "paths": b.point_paths(), "host": b.host, "tags": b.tags,
        "mode_today": b.mode_on(datetime.now().astimezone().date()),
        "retention": None if r is None else {"policy": r.policy.to_json(), "prune": r.prune},
        "calendar": spec.schedule.calendar,
        "check": None if spec.check is None else {"every": spec.check.every_text},
        "hooks": {"before": len(spec.hooks.before), "after": len(spec.hooks.after)},
    }


def _validate_text(doc: Dict[str, Any]) -> str:
    lines = [f"job {doc['job']} ({doc['file']}): valid",
             f"  vault      {doc['vault']} (passphrase from {doc['passphrase']})",
             f"  backs up   {' '.join(doc['paths'])} ({doc['mode_today']} today)"]
    if doc["retention"]:
        rules = " ".join(f"{k}={v}" for k, v in doc["retention"]["policy"].items())
        lines.append(f"  retention  {rules}" + ("; then prune" if doc["retention"]["prune"] else ""))
    if doc["check"]:
        lines.append(f"  check      every {doc['check']['every']}")
    if doc["calendar"]:
        lines.append(f"  schedule   {'; '.join(doc['calendar'])}")
    return "\n".join(lines)


@job.command(name="run", epilog=examples(
    "recovault job run /etc/recovault/jobs/web.toml",
    "recovault job run /etc/recovault/jobs/web.toml --json"))
@common_options
@click.argument("file", type=click.Path(dir_okay=False))
@pass_ctx
def job_run(c: Ctx, file: str) -> None:
    """Run a job end to end: before hooks, backup, forget and prune, check when due, after hooks, with the
    run recorded in the history. A job file with problems is refused before anything runs (exit 2); a job
    running already exits 17. The exit status is the run's (as backup's: 3 when files were left out)."""
    from ..jobfile.runner import Job, format_record
    job_ = Job.from_file(file, on_warning=c.warn, cache_dir=c._cache_dir)
    ignored = [o for o, a in (("--vault", "location"), ("--passphrase-file", "passphrase_file"),
                              ("--passphrase-command", "passphrase_command"))
               if getattr(c, a) is not None and a not in c.from_env]
    if ignored:
        c.warn(f"{', '.join(ignored)} not used: the job file names the vault and its passphrase source")
    with c.progress("backing up") as prog:
        job_.progress = prog
        record = job_.run()
    c.out(record.to_json(), format_record(record))
    if record.exit_code:
        raise RunEnded(f"job {record.job} {record.status}: {record.message or 'see the steps above'}",
                       record.exit_code)


# ---- job list (history lane) -------------------------------------------------------------------------------

def next_run(spec: Any, after: Optional[datetime] = None) -> Optional[datetime]:
    """When the job's timer fires next: the earliest `calendar.next_elapse(expr, after)` of its [schedule]
    calendar expressions; None without a calendar."""
    from datetime import timezone
    from ..jobfile import calendar
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
    from ..jobfile.locations import job_name, valid_name
    from ..timefmt import format_time
    name = job_name(path)
    problem: Optional[str] = None
    spec: Any = None
    if not valid_name(name):
        problem = f"{name!r} is no job name (letters, digits, '_', '.' and '-')"
    else:
        from ..jobfile.spec import load_job
        try:
            spec = load_job(path)
        except UsageError as e:  # (JobFileError: every problem with its line)
            problem = str(e)
    last = history.last(name) if valid_name(name) else None
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
    spec = schedule.job_schedule(file)
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
