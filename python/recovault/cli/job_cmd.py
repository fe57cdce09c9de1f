"""recovault job validate | run (| list | schedule): job files, one TOML file per backup job.

Each lane of issue 12 keeps its subcommands in its own block below (validate and run; list; schedule): the
group is one module.
"""
from __future__ import annotations

from typing import Any, Dict

import click

from ..errors import RecovaultError
from .context import Ctx, common_options, examples, pass_ctx


@click.group(epilog=examples(
    "recovault job validate /etc/recovault/jobs/web.toml", "recovault job run /etc/recovault/jobs/web.toml",
    "recovault job run /etc/recovault/jobs/web.toml --json"))
@common_options
def job() -> None:
    """Job files: one TOML file per backup job (vault, sources, modes, retention, limits, check, hooks,
    schedule, reports); see the README's "Scheduled jobs". The job file names its vault and passphrase
    source: --vault and the passphrase options are not used by job commands."""


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
    import os
    from ..jobfile.spec import JobFileError, load_job
    try:
        spec = load_job(file)
    except JobFileError as e:
        path = os.path.abspath(file)
        c.out({"file": path, "job": os.path.splitext(os.path.basename(path))[0], "valid": False,
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


# -- history lane: list ----------------------------------------------------------------------------------------


# -- schedule lane: schedule -----------------------------------------------------------------------------------


command = job
