"""The journal of job runs: one SQLite database (stdlib sqlite3), `history.sqlite` in the state directory
(locations.state_dir), one row per run of any job.

A run is inserted as `running` when it starts (`History.start`) and updated from its record when it ends
(`History.finish`). A process killed mid-run (kill -9, a crash, the machine stopping) never gets there: the
next reader finds its row `running` while its process is gone and stores it as `interrupted` (its `end`
stays null: when it stopped is not known). "Gone" is decided from the pid and the process's start time
(field 22 of /proc/PID/stat, clock ticks after boot) and the boot id stored with the row: a pid that a later
process (or a process after a reboot) reuses is not taken for the run's.

Several processes write at once (runs of different jobs, readers such as `recovault history`): the database
is in WAL mode (readers never block the writer), every write is one short transaction, and a writer waits
for the lock up to `busy_timeout` seconds (SQLite's busy handler) instead of failing. The schema is
versioned with `PRAGMA user_version` (SCHEMA_VERSION; MIGRATIONS bring an older file up to it, under the
write lock; a newer file is refused, never altered). The file and its directory are private (0600, 0700).
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .. import timefmt
from ..errors import HistoryUnreadable
from .locations import state_dir

SCHEMA_VERSION = 1
STATUSES = ("running", "ok", "partial", "failed", "interrupted")
MODES = ("incremental", "differential", "full")
STEPS = ("hook-before", "backup", "forget", "prune", "check", "hook-after", "report")
FILENAME = "history.sqlite"
BUSY_TIMEOUT = 30.0

# MIGRATIONS[v]: the statements that bring a database of schema version v to v + 1.
MIGRATIONS: Tuple[Tuple[str, ...], ...] = (
    ("""CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job TEXT NOT NULL,
            file TEXT NOT NULL,
            host TEXT NOT NULL,
            start_time TEXT NOT NULL,
            end_time TEXT,
            status TEXT NOT NULL,
            exit_code INTEGER,
            mode TEXT NOT NULL,
            snapshot TEXT,
            bytes_read INTEGER NOT NULL DEFAULT 0,
            bytes_added INTEGER NOT NULL DEFAULT 0,
            files INTEGER NOT NULL DEFAULT 0,
            errors INTEGER NOT NULL DEFAULT 0,
            message TEXT,
            steps TEXT NOT NULL DEFAULT '[]',
            pid INTEGER NOT NULL,
            proc_start INTEGER,
            boot_id TEXT)""",
     "CREATE INDEX runs_by_job ON runs (job, id)",
     "CREATE INDEX runs_by_status ON runs (status)"),
)
assert len(MIGRATIONS) == SCHEMA_VERSION

_COLUMNS = ("id", "job", "file", "host", "start_time", "end_time", "status", "exit_code", "mode", "snapshot",
            "bytes_read", "bytes_added", "files", "errors", "message", "steps", "pid")


@dataclass
class RunStep:
    """One step of a run: `step` (STEPS), its `status`, how long it took, and a detail line (or None)."""

    step: str
    status: str
    seconds: float
    detail: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        return {"step": self.step, "status": self.status, "seconds": self.seconds, "detail": self.detail}


@dataclass
class RunRecord:
    """One run of a job, as the journal holds it. `to_json()` is `job run --json`'s document and one element
    of `history --json`'s list (docs/schemas/history.json, $defs/record). `end` is None while running (and
    for an interrupted run); `exit_code` is None until the run ends."""

    id: int
    job: str
    file: str
    host: str
    start: str
    end: Optional[str]
    status: str
    exit_code: Optional[int]
    mode: str
    snapshot: Optional[str] = None
    bytes_read: int = 0
    bytes_added: int = 0
    files: int = 0
    errors: int = 0
    message: Optional[str] = None
    steps: List[RunStep] = field(default_factory=list)
    pid: int = 0

    def to_json(self) -> Dict[str, Any]:
        return {"id": self.id, "job": self.job, "file": self.file, "host": self.host, "start": self.start,
                "end": self.end, "status": self.status, "exit_code": self.exit_code, "mode": self.mode,
                "snapshot": self.snapshot, "bytes_read": self.bytes_read, "bytes_added": self.bytes_added,
                "files": self.files, "errors": self.errors, "message": self.message,
                "steps": [_step_json(s) for s in self.steps], "pid": self.pid}

    @property
    def seconds(self) -> Optional[float]:
        """How long the run took (None while running, or when it was interrupted)."""
        if self.end is None:
            return None
        return (timefmt.parse_time(self.end) - timefmt.parse_time(self.start)).total_seconds()


def _step_json(step: Union[RunStep, Dict[str, Any]]) -> Dict[str, Any]:
    """A step as stored and printed (a RunStep, or a mapping of the same keys)."""
    if isinstance(step, RunStep):
        return step.to_json()
    return RunStep(step["step"], step["status"], float(step["seconds"]), step.get("detail")).to_json()


@dataclass(frozen=True)
class ProcessStamp:
    """What identifies a process beyond its pid: its start time in clock ticks after boot, and the boot."""

    start: Optional[int]
    boot: Optional[str]


def _boot_id() -> Optional[str]:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _proc_stat(pid: int) -> Optional[Tuple[str, int]]:
    """(state, start time in ticks) of process `pid` from /proc, or None if /proc has no such process. The
    command name (field 2) may hold spaces and parentheses: the fields counted are those after its last ')'."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[19])


def process_stamp(pid: int) -> ProcessStamp:
    """The stamp of the living process `pid` (its parts None where /proc does not say)."""
    stat = _proc_stat(pid) if os.path.isdir("/proc/self") else None
    return ProcessStamp(stat[1] if stat else None, _boot_id())


def process_alive(pid: int, stamp: ProcessStamp) -> bool:
    """Whether the process that had `stamp` as `pid` is still running: False when the machine has rebooted
    since, when no process has that pid (or only a zombie: killed, not yet reaped), or when the process with
    that pid started at another time (the pid was reused)."""
    if stamp.boot is not None and _boot_id() not in (None, stamp.boot):
        return False
    if os.path.isdir("/proc/self"):
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        return stamp.start is None or stat[1] == stamp.start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def interrupted_message(pid: int) -> str:
    return (f"the run's process (pid {pid}) ended without recording a result (killed, or the "
            "machine stopped)")


@dataclass(frozen=True)
class JobHealth:
    """What `history --stale` says of one job: its newest finished run, its newest successful one, and the
    problems (none: the job is healthy)."""

    job: str
    last: Optional[RunRecord]
    last_success: Optional[RunRecord]
    problems: Tuple[str, ...]

    @property
    def stale(self) -> bool:
        return bool(self.problems)

    def to_json(self) -> Dict[str, Any]:
        return {"job": self.job, "stale": self.stale, "problems": list(self.problems),
                "last": self.last.to_json() if self.last else None,
                "last_success": self.last_success.to_json() if self.last_success else None}


class History:
    """The journal of job runs at `path` (default: history.sqlite in the state directory). Each call opens the
    database, does its work in one transaction and closes it: an object may be shared by threads and kept
    across a fork. Failures to open, read or write it are HistoryUnreadable (exit 1), naming the file."""

    def __init__(self, path: Optional[str] = None, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = path or os.path.join(state_dir(), FILENAME)
        self.busy_timeout = busy_timeout

    # -- writing

    def start(self, job: str, file: str, host: str, mode: str, pid: int) -> RunRecord:
        """Record that a run of `job` (job file `file`) starts now in process `pid`: a `running` row; returns
        its record (with its id)."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is none of {', '.join(MODES)}")
        record = RunRecord(0, job, os.path.abspath(file), host, timefmt.now(), None, "running", None, mode, pid=pid)
        stamp = process_stamp(pid)
        with self._db(create=True) as db:
            assert db is not None
            cur = self._write(db, "INSERT INTO runs (job, file, host, start_time, status, mode, pid, proc_start, "
                                  "boot_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              (job, record.file, host, record.start, "running", mode, pid, stamp.start, stamp.boot))
            record.id = int(cur.lastrowid or 0)
        return record

    def finish(self, record: RunRecord) -> None:
        """Store the run's result: every field of `record` but its id, job, file, host, start and pid, which
        the row keeps. A record without an `end` gets the current time (set in `record` too)."""
        if record.status not in STATUSES or record.status == "running":
            raise ValueError(f"a finished run's status is one of {', '.join(STATUSES[1:])}, not {record.status!r}")
        if record.mode not in MODES:
            raise ValueError(f"mode {record.mode!r} is none of {', '.join(MODES)}")
        if record.end is None:
            record.end = timefmt.now()
        steps = json.dumps([_step_json(s) for s in record.steps], sort_keys=True)
        with self._db(create=True) as db:
            assert db is not None
            cur = self._write(db, "UPDATE runs SET end_time = ?, status = ?, exit_code = ?, mode = ?, snapshot = ?, "
                                  "bytes_read = ?, bytes_added = ?, files = ?, errors = ?, message = ?, steps = ? "
                                  "WHERE id = ?",
                              (record.end, record.status, record.exit_code, record.mode, record.snapshot,
                               record.bytes_read, record.bytes_added, record.files, record.errors, record.message,
                               steps, record.id))
            if cur.rowcount != 1:
                raise HistoryUnreadable(f"the job history {self.path} has no run {record.id} to finish")

    # -- reading

    def runs(self, job: Optional[str] = None, limit: Optional[int] = None) -> List[RunRecord]:
        """The runs of `job` (every job's if None), newest first, at most `limit`. A `running` row whose
        process is gone is returned, and stored, as `interrupted`."""
        return self._select("" if job is None else "job = ?", () if job is None else (job,), limit, job)

    def last(self, job: str, finished: bool = False) -> Optional[RunRecord]:
        """The newest run of `job` (with `finished`: the newest that is not running), or None."""
        where = "job = ? AND status != 'running'" if finished else "job = ?"
        found = self._select(where, (job,), 1, job)
        return found[0] if found else None

    def last_success(self, job: str) -> Optional[RunRecord]:
        """The newest run of `job` that ended `ok`, or None."""
        found = self._select("job = ? AND status = 'ok'", (job,), 1, job, reconcile=False)
        return found[0] if found else None

    def jobs(self) -> List[str]:
        """The names of the jobs with runs in the journal, sorted."""
        with self._db(create=False) as db:
            if db is None:
                return []
            return [r[0] for r in self._read(db, "SELECT DISTINCT job FROM runs ORDER BY job", ())]

    def health(self, job: str, within: float, now: Optional[datetime] = None) -> JobHealth:
        """Whether `job` is stale: no run ended `ok` within `within` seconds before `now`, or its newest
        finished run did not end `ok` (failed, partial, interrupted)."""
        now = now or datetime.now(timezone.utc)
        last, success = self.last(job, finished=True), self.last_success(job)
        problems: List[str] = []
        if last is None:
            problems.append("no finished run recorded")
        elif success is None:
            problems.append("no successful run recorded")
        elif success.end is not None and (now - timefmt.parse_time(success.end)).total_seconds() > within:
            age = (now - timefmt.parse_time(success.end)).total_seconds()
            ended = timefmt.shown(success.end)
            problems.append(f"no successful run for {age_text(age)} (the last ended {ended})")
        if last is not None and last.status != "ok":
            when = timefmt.shown(last.start)
            why = f": {last.message}" if last.message and last.status != "interrupted" else ""
            code = f" (exit {last.exit_code})" if last.exit_code is not None else ""
            problems.append(f"the last run ({when}) {_status_words(last.status)}{code}{why}")
        return JobHealth(job, last, success, tuple(problems))

    # -- the database

    def _select(self, where: str, args: Sequence[Any], limit: Optional[int], job: Optional[str],
                reconcile: bool = True) -> List[RunRecord]:
        """The rows `where` selects, newest first; first, with `reconcile`, the running rows of `job` (all if
        None) whose process is gone are stored as interrupted."""
        with self._db(create=False) as db:
            if db is None:
                return []
            gone = self._reconcile(db, job) if reconcile else {}
            sql = f"SELECT {', '.join(_COLUMNS)} FROM runs {'WHERE ' + where if where else ''} ORDER BY id DESC"
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
            records = [_record(row) for row in self._read(db, sql, args)]
        for r in records:
            if r.status == "running" and r.id in gone:  # found gone, but the file could not be written
                r.status, r.message = "interrupted", gone[r.id]
        return records

    def _reconcile(self, db: sqlite3.Connection, job: Optional[str]) -> Dict[int, str]:
        """Store as `interrupted` the running rows (of `job`, or all) whose process is gone; returns them."""
        rows = self._read(db, "SELECT id, pid, proc_start, boot_id FROM runs WHERE status = 'running'"
                          + (" AND job = ?" if job is not None else ""), () if job is None else (job,))
        gone = {rid: interrupted_message(pid) for rid, pid, start, boot in rows
                if not process_alive(pid, ProcessStamp(start, boot))}
        for rid, message in gone.items():
            try:
                self._write(db, "UPDATE runs SET status = 'interrupted', message = ? WHERE id = ? "
                                "AND status = 'running'", (message, rid))
            except HistoryUnreadable:
                if os.access(self.path, os.W_OK):
                    raise
                # read-only (another user's journal): reported as interrupted, stored by its owner's next read
        return gone

    @contextlib.contextmanager
    def _db(self, create: bool) -> Iterator[Optional[sqlite3.Connection]]:
        """A connection, the schema up to date; None when reading a journal that does not exist yet."""
        if not create and not os.path.exists(self.path):
            yield None
            return
        db = self._open(create)
        try:
            yield db
        finally:
            db.close()

    def _open(self, create: bool) -> sqlite3.Connection:
        try:
            if create:
                os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
                os.close(os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600))
            db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise HistoryUnreadable(f"cannot open the job history {self.path}: {_reason(e)}") from None
        try:
            if create:  # WAL is a property of the file: set by its writers (a reader may have no write access)
                self._wal(db)
            self._migrate(db)
        except sqlite3.Error as e:
            db.close()
            damaged = "" if isinstance(e, sqlite3.OperationalError) else " (move it aside: a new one is started)"
            raise HistoryUnreadable(f"cannot read the job history {self.path}: {_reason(e)}{damaged}") from None
        except HistoryUnreadable:
            db.close()
            raise
        return db

    def _wal(self, db: sqlite3.Connection) -> None:
        """Put the file in WAL mode, once. Switching needs the file to itself, and SQLite answers "database is
        locked" at once (no busy handler) while another connection has it open: tried again until
        busy_timeout, as the busy handler would (two first runs at the same moment met it)."""
        deadline = time.monotonic() + self.busy_timeout
        while db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
                continue
            if mode != "wal":
                raise sqlite3.OperationalError(f"journal mode {mode}, not WAL")

    def _migrate(self, db: sqlite3.Connection) -> None:
        if self._version(db) == SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")  # one migrator at a time; the version is read again under the lock
        try:
            version = self._version(db)
            for v in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[v]:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _version(self, db: sqlite3.Connection) -> int:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise HistoryUnreadable(f"the job history {self.path} has schema version {version}, newer than this "
                                    f"recovault's ({SCHEMA_VERSION}): use a newer recovault to read it")
        return version

    def _read(self, db: sqlite3.Connection, sql: str, args: Sequence[Any]) -> List[Tuple[Any, ...]]:
        try:
            return db.execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as e:
            raise HistoryUnreadable(f"cannot read the job history {self.path}: {_reason(e)}") from None

    def _write(self, db: sqlite3.Connection, sql: str, args: Sequence[Any]) -> sqlite3.Cursor:
        """One statement in autocommit mode: its own transaction, waiting for the lock up to busy_timeout."""
        try:
            return db.execute(sql, tuple(args))
        except sqlite3.Error as e:
            raise HistoryUnreadable(f"cannot write the job history {self.path}: {_reason(e)}") from None


def _record(row: Tuple[Any, ...]) -> RunRecord:
    d = dict(zip(_COLUMNS, row))
    try:
        steps = [_step_json(s) for s in json.loads(d["steps"] or "[]")]
    except (ValueError, KeyError, TypeError):
        steps = []
    return RunRecord(d["id"], d["job"], d["file"], d["host"], d["start_time"], d["end_time"], d["status"],
                     d["exit_code"], d["mode"], d["snapshot"], d["bytes_read"], d["bytes_added"], d["files"],
                     d["errors"], d["message"], [RunStep(**s) for s in steps], d["pid"])


def _reason(e: BaseException) -> str:
    return (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or type(e).__name__


def _status_words(status: str) -> str:
    return {"failed": "failed", "partial": "completed with files left out", "interrupted": "was interrupted",
            "running": "is running"}.get(status, status)


def age_text(seconds: float) -> str:
    """A duration for people: "3 days 4 hours", "5 hours 12 minutes", "40 minutes"."""
    minutes = int(seconds // 60)
    days, hours, mins = minutes // 1440, minutes // 60 % 24, minutes % 60
    if days:
        return f"{days} day{'s' * (days != 1)}" + (f" {hours} hour{'s' * (hours != 1)}" if hours else "")
    if hours:
        return f"{hours} hour{'s' * (hours != 1)}" + (f" {mins} minute{'s' * (mins != 1)}" if mins else "")
    return f"{mins} minute{'s' * (mins != 1)}"
