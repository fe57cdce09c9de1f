"""Running a job file: `Job.from_file(path).run() -> RunRecord`.

One run, in order: the job's lock (`locks/JOB.lock` in the state directory, `fcntl.flock`: a second start
of a running job raises `Busy`, exit 17, and records nothing), a record in the history (`running`), the
passphrase, the before hooks, the vault opened (with the job's bandwidth limits), the backup (its mode by
the day's rule), forget by the job's retention rules over the job's own points and prune, check when it is
due, the vault closed, the after hooks, the record finished, the report. Everything goes through the
library (api, jobs/, vault/), never by spawning `recovault`. A failure ends the run with its exit code and
one-line message in the record (the record is returned, never raised): `ok` (0), `partial` (3: the backup
left out files it could not read; retention still applies), `failed` (any other code), `interrupted` (130:
Ctrl-C or SIGTERM). Library code: nothing printed; warnings go to `on_warning`.
"""
from __future__ import annotations

import fcntl
import os
import shlex
import socket
import subprocess
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterator, List, Optional

from .. import timefmt
from ..errors import Busy, CorruptData, Partial, RecovaultError, UsageError
from .history import History, RunRecord, RunStep
from .locations import state_dir
from .process import kill_group
from .spec import HookSpec, JobSpec, load_job

Progress = Optional[Callable[[str, Dict[str, Any]], None]]
Warn = Callable[[str], None]

#: a check is due when the last one is older than `every` less this (a weekly check on a nightly timer with a
#: randomized delay does not slip to the next night), at most a tenth of `every`
CHECK_SLACK = 3600.0
#: a hook killed at its timeout: SIGTERM to its process group, then SIGKILL after this
KILL_GRACE = 2.0


class JobFailed(RecovaultError):
    """A hook with on_failure = "abort" failed, or the stdin command did: the run fails (exit 1)."""


@dataclass
class HookResult:
    ok: bool
    detail: Optional[str]
    seconds: float


# -- the lock ------------------------------------------------------------------------------------------------

@contextmanager
def job_lock(name: str, directory: Optional[str] = None) -> Iterator[None]:
    """Hold the job's run lock (`locks/NAME.lock` in the state directory) while the block runs; Busy (exit 17)
    when another process holds it. The file stays (removing it would race a new start); the kernel releases
    the lock when the holder exits, also when it is killed."""
    locks = os.path.join(directory or state_dir(), "locks")
    os.makedirs(locks, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(locks, f"{name}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise Busy(f"job {name} is running already (pid {holder}): nothing was started") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


# -- hooks ---------------------------------------------------------------------------------------------------

def run_hook(hook: HookSpec, env: Dict[str, str]) -> HookResult:
    """Run one hook (its argv, no shell) in its own process group with `env` added to ours; its output is
    captured (the last line names a failure). At its timeout the whole group is killed."""
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(hook.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True)
    except OSError as e:
        return HookResult(False, f"cannot run {hook.argv[0]}: {e.strerror or e}", time.monotonic() - t0)
    try:
        out, _ = proc.communicate(timeout=hook.timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc, KILL_GRACE)
        return HookResult(False, f"killed at its timeout ({hook.timeout:g}s)", time.monotonic() - t0)
    except BaseException:
        kill_group(proc, KILL_GRACE)
        raise
    seconds = time.monotonic() - t0
    if proc.returncode == 0:
        return HookResult(True, None, seconds)
    last = next((line for line in reversed(out.decode("utf-8", "replace").splitlines()) if line.strip()), "")
    why = (f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}")
    return HookResult(False, why + (f": {last.strip()[:200]}" if last else ""), seconds)


# -- the job -------------------------------------------------------------------------------------------------

def _status(exit_code: int) -> str:
    return {0: "ok", Partial.exit_code: "partial", 130: "interrupted"}.get(exit_code, "failed")


class Job:
    """One job file, ready to run: `Job.from_file(path).run()` returns the run's RunRecord (also when the run
    failed: its status, exit_code and message say so). `history`: the journal (default: the state
    directory's); `progress(kind, info)`: the backup's and check's progress events; `on_warning`: what the
    run warns of (a hook that failed with on_failure = "continue", a prune that waited for another)."""

    def __init__(self, spec: JobSpec, *, history: Optional[History] = None, progress: Progress = None,
                 on_warning: Optional[Warn] = None, cache_dir: Optional[str] = None,
                 lock_dir: Optional[str] = None, today: Optional[datetime] = None) -> None:
        self.spec = spec
        self.history = history
        self.progress = progress
        self.warn: Warn = on_warning or (lambda message: None)
        self.cache_dir = spec.vault.cache_dir or cache_dir
        self.lock_dir = lock_dir
        self.today = today  # the day the mode rules look at (default: now, local time)

    @classmethod
    def from_file(cls, path: str, **options: Any) -> "Job":
        """The job of the file at `path`; JobFileError (exit 2, every problem with its line) if it is not
        valid: nothing is run and the vault is not touched."""
        return cls(load_job(path), **options)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def host(self) -> str:
        return self.spec.backup.host or socket.gethostname()

    @property
    def mode(self) -> str:
        """The backup mode of a run now (or on `today`): full on a full_on day, else differential on a
        differential_on day, else incremental."""
        return self.spec.backup.mode_on((self.today or datetime.now().astimezone()).date())

    def run(self) -> RunRecord:
        """Run the job once (see the module's docstring); Busy if it is running already."""
        with job_lock(self.name, self.lock_dir):
            history = self.history if self.history is not None else History()
            record = history.start(self.name, self.spec.path, self.host, self.mode, os.getpid())
            try:
                _Run(self, history, record).execute()
            finally:
                record.end = timefmt.now()
                history.finish(record)
            self._send_report(record, history)
            return record

    def _send_report(self, record: RunRecord, history: History) -> None:
        """Send the finished record where the job's [report] says (jobfile/report.py: a failing destination is
        a warning, never the run's failure), then record the step. The job's passphrase variable is kept from
        a report command's environment."""
        spec = self.spec.report
        if spec is None or not spec.destinations or not spec.wants(record.to_json()):
            return
        from .report import send
        failures: List[str] = []

        def warn(message: str) -> None:
            failures.append(message)
            self.warn(message)
        source = self.spec.vault.passphrase
        t0 = time.monotonic()
        send(spec, record.to_json(), warn, hide_env=[source.value] if source.kind == "env" else [])
        record.steps.append(RunStep("report", "failed" if failures else "ok", round(time.monotonic() - t0, 3),
                                    "; ".join(failures) or ", ".join(spec.destinations)))
        history.finish(record)


class _Run:
    """One run's steps, filling `record`."""

    def __init__(self, job: Job, history: History, record: RunRecord) -> None:
        self.job = job
        self.spec = job.spec
        self.history = history
        self.record = record

    # the steps of the record

    def step(self, name: str, status: str, t0: float, detail: Optional[str] = None) -> None:
        self.record.steps.append(RunStep(name, status, round(time.monotonic() - t0, 3), detail))

    def end(self, exit_code: int, message: Optional[str]) -> None:
        if self.record.exit_code not in (None, 0, Partial.exit_code) and exit_code != 130:
            return  # the first failure is the run's
        self.record.exit_code = exit_code
        self.record.status = _status(exit_code)
        if message is not None:
            self.record.message = message

    def execute(self) -> None:
        before_ok = False
        try:
            passphrase = self.passphrase()
            before_ok = self.hooks("before")
            if before_ok:
                self.in_vault(passphrase)
                self.end(Partial.exit_code if self.record.errors else 0, self.record.message)
        except KeyboardInterrupt:
            self.end(130, "interrupted")
        except RecovaultError as e:
            self.end(e.exit_code, str(e).splitlines()[0] if str(e) else type(e).__name__)
        except Exception as e:  # noqa: BLE001 - the record must say how the run ended, whatever happened
            self.end(1, f"internal error: {type(e).__name__}: {e}")
        if before_ok:
            self.hooks("after")

    # the passphrase and the hooks

    def passphrase(self) -> str:
        from ..vault.keys import read_passphrase
        src = self.spec.vault.passphrase
        if src.kind == "file":
            return read_passphrase(src.value, prompt=False)
        if src.kind == "command":
            return read_passphrase(None, prompt=False, command=src.value)
        if src.kind == "credential":
            creds = os.environ.get("CREDENTIALS_DIRECTORY")
            if not creds:
                raise UsageError(f"passphrase_credential {src.value!r}: CREDENTIALS_DIRECTORY is not set (run "
                                 "the job from a systemd unit with LoadCredential=)")
            return read_passphrase(os.path.join(creds, src.value), prompt=False)
        value = os.environ.get(src.value)
        if not value:
            raise UsageError(f"passphrase_env: the variable {src.value} is not set (or empty)")
        return value

    def hooks(self, when: str) -> bool:
        """Run the before or after hooks in order; False when one with on_failure = "abort" failed (the run
        fails; after a before hook, nothing else runs)."""
        env = {"RECOVAULT_JOB": self.spec.name, "RECOVAULT_JOB_FILE": self.spec.path}
        if when == "after":
            env["RECOVAULT_JOB_STATUS"] = self.record.status
        for hook in getattr(self.spec.hooks, when):
            result = run_hook(hook, env)
            detail = f"{hook.command}: {result.detail}" if result.detail else hook.command
            self.record.steps.append(RunStep(f"hook-{when}", "ok" if result.ok else "failed",
                                             round(result.seconds, 3), detail))
            if result.ok:
                continue
            if hook.on_failure == "continue":
                self.job.warn(f"{when} hook {hook.command!r} failed ({result.detail}); continuing")
                continue
            self.end(JobFailed.exit_code, f"{when} hook {hook.command!r} failed: {result.detail}"
                     + ("; the job did not run" if when == "before" else ""))
            return False
        return True

    # what happens in the vault

    def in_vault(self, passphrase: str) -> None:
        from .. import api
        with ExitStack() as stack:
            stack.enter_context(self.limits())
            vault = stack.enter_context(api.open_vault(
                self.spec.vault.url, passphrase, cache_dir=self.job.cache_dir, write=True,
                connections=self.spec.limits.connections, on_event=self.vault_event,
                key_file=self.spec.vault.key_file))
            self.backup(vault)
            if self.spec.retention is not None:
                self.forget(vault)
                if self.spec.retention.prune:
                    self.prune(vault)
            if self.spec.check is not None:
                self.check(vault)

    def vault_event(self, kind: str, info: Dict[str, Any]) -> None:
        if kind in ("problem", "notice"):
            self.job.warn(info.get("message", ""))

    @contextmanager
    def limits(self) -> Iterator[None]:
        """The job's [limits] on every storage opened meanwhile (the process's own ones put back after)."""
        if not self.spec.limits.limited and self.spec.limits.work_hours is None:
            yield
            return
        from ..storage import wrappers
        limits, metrics = wrappers.process_config()
        wrappers.configure_process(limits=self.spec.limits.transfer_limits, metrics=metrics)
        try:
            yield
        finally:
            wrappers.configure_process(limits=limits, metrics=metrics)

    def backup(self, vault: Any) -> None:
        from .. import api
        b, t0 = self.spec.backup, time.monotonic()
        with ExitStack() as stack:
            stdin = stack.enter_context(_stdin_command(b.stdin_command)) if b.stdin_command else None
            try:
                point = api.backup(
                    vault, b.paths, mode=self.record.mode, excludes=b.exclude, exclude_files=b.exclude_file,
                    exclude_caches=b.exclude_caches, one_file_system=b.one_file_system, tags=b.tags,
                    host=self.job.host, images=b.images, stdin_name=b.stdin_name if stdin else None,
                    stdin_fd=stdin.stdout.fileno() if stdin else 0, progress=self.job.progress)
            except RecovaultError as e:
                partial = getattr(e, "point", None)
                if partial is not None:
                    self.record.snapshot = partial.id
                self.step("backup", "failed", t0, str(e).splitlines()[0])
                raise
            self.record.snapshot = point.id
            st = point.stats
            self.record.bytes_read, self.record.bytes_added = st.get("bytes_read", 0), st.get("bytes_added", 0)
            self.record.files = sum(st.get(k, 0) for k in ("files_new", "files_changed", "files_unmodified"))
            self.record.errors = len(point.errors)
            if stdin is not None:
                try:
                    _stdin_finished(stdin, b.stdin_command or "", point.short_id)
                except JobFailed as e:
                    self.step("backup", "failed", t0, str(e))
                    raise
        self.record.mode = point.mode  # the first backup of a source is full, whatever the rule said
        if point.errors:
            self.record.message = f"{len(point.errors)} file(s) could not be read and are not in the recovery point"
        self.step("backup", "partial" if point.errors else "ok", t0, f"recovery point {point.short_id} ({point.mode})")

    def forget(self, vault: Any) -> None:
        from ..selection import PointFilter
        ret, b, t0 = self.spec.retention, self.spec.backup, time.monotonic()
        assert ret is not None
        where = PointFilter((self.job.host,), tuple(b.point_paths()), (",".join(b.tags),) if b.tags else ())
        try:
            groups = vault.forget(ret.policy, where=where)
        except RecovaultError as e:
            self.step("forget", "failed", t0, str(e))
            raise
        removed = sum(len(g.remove) for g in groups)
        kept = sum(len(g.keep) for g in groups)
        self.step("forget", "ok", t0, f"{removed} removed, {kept} kept")

    def prune(self, vault: Any) -> None:
        from ..jobs.prune import PruneOptions, run_prune
        ret, t0 = self.spec.retention, time.monotonic()
        assert ret is not None
        given = {"max_unused": ret.prune_max_unused, "repack_small": ret.prune_repack_small,
                 "margin": ret.prune_margin}
        options = PruneOptions(**{k: v for k, v in given.items() if v is not None})  # else prune's defaults
        try:
            result = run_prune(vault, options, self.job.progress)
        except Busy as e:  # another prune is at work: this one's turn comes with the next run
            self.step("prune", "skipped", t0, str(e))
            self.job.warn(f"prune skipped: {e}")
            return
        except RecovaultError as e:
            self.step("prune", "failed", t0, str(e))
            raise
        deleted = sum(p.packs_deleted for p in result.plans if p.done)
        self.step("prune", "ok", t0, f"{deleted} pack(s) deleted" + (", a plan written" if result.new_plan else ""))

    def check_due(self) -> bool:
        """Whether the job's check is due: no check by this job in the history, or the last one (a run with an
        `ok` check step) started more than `every` (less the slack) ago."""
        check = self.spec.check
        assert check is not None
        for rec in self.history.runs(self.spec.name):
            if rec.id != self.record.id and any(s.step == "check" and s.status == "ok"
                                                for s in rec.steps):
                age = (datetime.now(timezone.utc) - timefmt.parse_time(rec.start)).total_seconds()
                return age >= check.every - min(CHECK_SLACK, check.every / 10)
        return True

    def check(self, vault: Any) -> None:
        from ..vault.check import Checker
        check, t0 = self.spec.check, time.monotonic()
        assert check is not None
        if not self.check_due():
            self.step("check", "skipped", t0, f"not due (every {check.every_text})")
            return
        res = Checker(vault, self.job.progress).run(read_data=check.read_data, subset=check.read_data_subset)
        if not res["ok"]:
            self.step("check", "failed", t0, f"{len(res['problems'])} problem(s); first: {res['problems'][0]}")
            raise CorruptData(f"check found {len(res['problems'])} problem(s); first: {res['problems'][0]}")
        self.step("check", "ok", t0, "read data " + (check.read_data_subset or "all") if
                  (check.read_data or check.read_data_subset) else "structure")


@contextmanager
def _stdin_command(command: str) -> Iterator["subprocess.Popen[bytes]"]:
    """The stdin command running, its output the backup's stream (killed if the backup stops first)."""
    try:
        proc = subprocess.Popen(shlex.split(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                start_new_session=True)
    except OSError as e:
        raise JobFailed(f"stdin_command: cannot run {shlex.split(command)[0]}: {e.strerror or e}") from None
    try:
        yield proc
    finally:
        if proc.poll() is None:
            kill_group(proc, KILL_GRACE)
        if proc.stdout:
            proc.stdout.close()


def _stdin_finished(proc: "subprocess.Popen[bytes]", command: str, point: str) -> None:
    """A stdin command that failed made a stream that may be cut short: the run fails (and retention is not
    applied, so no older point is forgotten for it)."""
    code = proc.wait()
    if code != 0:
        why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        raise JobFailed(f"stdin_command {shlex.split(command)[0]} failed ({why}): recovery point {point} holds "
                        "what it wrote, which may be incomplete")


def format_record(record: RunRecord) -> str:
    """The run in a few lines for people (the CLI prints it)."""
    lines = [f"job {record.job}: {record.status}" + (f" (exit {record.exit_code})" if record.exit_code else "")
             + (f": {record.message}" if record.message else "")]
    for s in record.steps:
        lines.append(f"  {s.step:<12} {s.status:<8} {s.seconds:7.1f}s" + (f"  {s.detail}" if s.detail else ""))
    return "\n".join(lines)
