"""A job on the system's scheduler: a systemd service + timer pair (`recovault-job-NAME.service`, `.timer`),
written and enabled where systemd runs (PID 1), else a cron file (`/etc/cron.d/recovault-NAME`) where cron
exists. `plan` decides what to write (nothing is touched); `install` writes it (each file atomically: a
temporary file renamed over the old one, so a rerun is idempotent) and enables the timer.

The service runs `recovault job run FILE` (Type=oneshot, at idle I/O priority); it holds no passphrase: the
job file says where the passphrase is, and a systemd credential it names is loaded with `LoadCredential=`
from `/etc/credstore/NAME`. The timer has an `OnCalendar=` per expression of the job's `[schedule]`,
`Persistent=true` (a run missed while the host was off starts at boot) and `RandomizedDelaySec=` (hosts
with the same schedule spread their load). Cron has neither: its file says so.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from ..errors import RecovaultError, UsageError
from . import calendar

SYSTEM_UNIT_DIR = "/etc/systemd/system"
CRON_DIR = "/etc/cron.d"
CREDSTORE = "/etc/credstore"


@dataclass(frozen=True)
class JobSchedule:
    """What scheduling needs from a job file: its name, absolute path and [schedule] (ScheduleSpec's fields),
    and the systemd credential its passphrase comes from (if any)."""
    name: str
    path: str
    calendar: List[str]
    randomized_delay: str = "30min"
    persistent: bool = True
    credential: Optional[str] = None


def job_schedule(path: str) -> JobSchedule:
    """What scheduling needs of the job file at `path` (spec.load_job: a file with problems is refused with
    every one and its line); UsageError when the job has no [schedule] calendar."""
    from .spec import load_job
    spec = load_job(path)
    if not spec.schedule.calendar:
        raise UsageError(f"{spec.path}: the job has no [schedule] calendar = [\"...\"]: nothing to schedule")
    source = spec.vault.passphrase
    return JobSchedule(spec.name, spec.path, list(spec.schedule.calendar), spec.schedule.randomized_delay,
                       spec.schedule.persistent, source.value if source.kind == "credential" else None)


@dataclass(frozen=True)
class UnitFile:
    """A file to write: where, and what."""
    path: str
    text: str


@dataclass
class Plan:
    """What `install` would do: the files for the scheduler found (`scheduler`: systemd, cron, or none)."""
    job: JobSchedule
    scheduler: str
    user: bool
    units: List[UnitFile]
    cron: Optional[UnitFile]
    no_cron: List[str]  # expressions cron cannot say
    enable: bool  # systemctl daemon-reload + enable --now (systemd runs and the units go where it reads them)
    timer: str = ""
    done: List[str] = field(default_factory=list)  # what install did, one line each


def recovault_command() -> List[str]:
    """The absolute command that runs recovault: the `recovault` beside this Python (a virtualenv's), else the
    one on PATH, else this Python with -m recovault."""
    beside = Path(sys.executable).parent / "recovault"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("recovault")
    if found:
        return [os.path.abspath(found)]
    return [sys.executable, "-m", "recovault"]


def _unit_quote(arg: str) -> str:
    """One argument of ExecStart=, quoted as systemd reads it (and '%' doubled: specifiers)."""
    arg = arg.replace("%", "%%")
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_running() -> bool:
    """Whether systemd is the service manager here (sd_booted(3): /run/systemd/system exists)."""
    return os.path.isdir("/run/systemd/system")


def cron_available() -> bool:
    """Whether a cron daemon is installed (Debian's cron, cronie's crond)."""
    return any(shutil.which(c, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") for c in ("cron", "crond"))


def user_unit_dir() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "systemd", "user")


def service_text(job: JobSchedule, command: Sequence[str], user: bool) -> str:
    lines = ["# Written by 'recovault job schedule': rerun it after changing the job file, rather than editing this.",
             "[Unit]", f"Description=recovault job {job.name} ({job.path})"]
    if not user:
        lines += ["Wants=network-online.target", "After=network-online.target"]
    lines += ["", "[Service]", "Type=oneshot",
              "ExecStart=" + " ".join(_unit_quote(a) for a in [*command, "job", "run", job.path]),
              "Nice=10", "IOSchedulingClass=idle"]
    if job.credential:
        lines.append(f"LoadCredential={job.credential}:{CREDSTORE}/{job.credential}")
    return "\n".join(lines) + "\n"


def timer_text(job: JobSchedule) -> str:
    lines = ["# Written by 'recovault job schedule': rerun it after changing the job file, rather than editing this.",
             "[Unit]", f"Description=schedule of recovault job {job.name}", "", "[Timer]"]
    lines += [f"OnCalendar={expr}" for expr in job.calendar]
    lines += [f"Persistent={'true' if job.persistent else 'false'}", f"RandomizedDelaySec={job.randomized_delay}",
              "", "[Install]", "WantedBy=timers.target"]
    return "\n".join(lines) + "\n"


def cron_text(job: JobSchedule, command: Sequence[str]) -> str:
    run = " ".join(shlex.quote(a) for a in [*command, "job", "run", job.path]).replace("%", "\\%")
    lines = [f"# recovault job {job.name}: written by 'recovault job schedule' (rerun it after changing the job file).",
             "# cron neither catches up on a run missed while the host was off nor spreads the start (systemd's",
             "# Persistent= and RandomizedDelaySec= do).",
             "SHELL=/bin/sh", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    for expr in job.calendar:
        fields = calendar.to_cron(expr)
        lines.append(f"{fields} root {run}" if fields else f"# {expr!r} has no cron equivalent")
    return "\n".join(lines) + "\n"


def plan(job: JobSchedule, user: bool = False, unit_dir: Optional[str] = None, cron_dir: Optional[str] = None,
         command: Optional[Sequence[str]] = None, scheduler: Optional[str] = None) -> Plan:
    """What scheduling `job` writes. `scheduler` None: systemd where it runs (or when `unit_dir` is given),
    else cron where it exists, else "none" (then `install` refuses). `job` comes from `job_schedule`: its
    name, calendar, delay and credential were checked with the job file (spec.load_job)."""
    cmd = list(command or recovault_command())
    running = systemd_running()
    if scheduler is None:
        scheduler = ("systemd" if running or unit_dir else "cron" if cron_available() and not user else "none")
    default_dir = user_unit_dir() if user else SYSTEM_UNIT_DIR
    udir = os.path.abspath(unit_dir or default_dir)
    base = f"recovault-job-{job.name}"
    units = [UnitFile(os.path.join(udir, base + ".service"), service_text(job, cmd, user)),
             UnitFile(os.path.join(udir, base + ".timer"), timer_text(job))]
    no_cron = [e for e in job.calendar if calendar.to_cron(e) is None]
    cron = None
    if not user:  # cron.d ignores file names with a dot
        cron = UnitFile(os.path.join(cron_dir or CRON_DIR, "recovault-" + job.name.replace(".", "_")),
                        cron_text(job, cmd))
    enable = scheduler == "systemd" and running and udir == os.path.abspath(default_dir)
    return Plan(job, scheduler, user, units, cron, no_cron, enable, timer=base + ".timer")


def _write(f: UnitFile) -> None:
    os.makedirs(os.path.dirname(f.path), exist_ok=True)
    tmp = f"{f.path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(f.text)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, f.path)


Runner = Callable[[List[str]], "subprocess.CompletedProcess[str]"]


def _systemctl(argv: List[str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)


def install(p: Plan, run: Optional[Runner] = None) -> Plan:
    """Write the plan's files and enable the timer (systemd) or write the cron file (cron); `p.done` says what
    was done. RecovaultError when there is no scheduler, cron cannot say an expression, or systemctl fails."""
    if p.scheduler == "none" and p.user:
        raise RecovaultError("--user needs systemd as the service manager (a user's timers): nothing scheduled; "
                             "without it, schedule the job as root (cron), or write the units with --unit-dir")
    if p.scheduler == "none":
        raise RecovaultError("neither systemd (as the service manager) nor cron found here: nothing scheduled; "
                             f"have your scheduler run '{' '.join(recovault_command())} job run {p.job.path}', or "
                             "write the units elsewhere with --unit-dir (--dry-run shows them)")
    if p.scheduler == "cron":
        assert p.cron is not None  # plan() gives cron only without --user
        if p.no_cron:
            raise UsageError("cron cannot say " + ", ".join(repr(e) for e in p.no_cron)
                             + " (seconds, years, '~', a time zone, or weekdays with days of the month): "
                               "write them another way, or schedule on a host with systemd")
        _write(p.cron)
        p.done.append(f"wrote {p.cron.path}")
        return p
    for unit in p.units:
        _write(unit)
        p.done.append(f"wrote {unit.path}")
    if p.enable:
        ctl = ["systemctl"] + (["--user"] if p.user else [])
        for argv in (ctl + ["daemon-reload"], ctl + ["enable", "--now", p.timer]):
            res = (run or _systemctl)(argv)
            if res.returncode != 0:
                why = (res.stderr or res.stdout or "").strip().splitlines()
                raise RecovaultError(f"{' '.join(argv)} failed: {why[-1] if why else f'exit {res.returncode}'}")
            p.done.append(" ".join(argv))
    return p
