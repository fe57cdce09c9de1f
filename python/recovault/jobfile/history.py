"""The journal of job runs (SQLite, in the state directory): `History` and `RunRecord`.

MINIMAL STAND-IN written on the run lane's branch (h/jobrun) so that `job run` runs: the history lane
(h/history) writes the real module to the same seam (DESIGN12.md), and the integrator takes theirs. Only the
seam's API is here: `History(path=None)`, `start`, `finish`, `runs`, `last`, `last_success`; `RunRecord`
with `to_json()`.
"""
from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

from .. import timefmt

STATUSES = ("running", "ok", "partial", "failed", "interrupted")


def state_dir() -> str:
    """$RECOVAULT_STATE_DIR, else $XDG_STATE_HOME/recovault, else ~/.local/state/recovault (root:
    /var/lib/recovault)."""
    given = os.environ.get("RECOVAULT_STATE_DIR")
    if given:
        return given
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg:
        return os.path.join(xdg, "recovault")
    if os.geteuid() == 0:
        return "/var/lib/recovault"
    return os.path.join(os.path.expanduser("~"), ".local", "state", "recovault")


@dataclass
class RunRecord:
    id: int
    job: str
    file: str
    host: str
    start: str
    end: Optional[str] = None
    status: str = "running"
    exit_code: Optional[int] = None
    mode: str = "incremental"
    snapshot: Optional[str] = None
    bytes_read: int = 0
    bytes_added: int = 0
    files: int = 0
    errors: int = 0
    message: Optional[str] = None
    steps: List[Dict[str, Any]] = field(default_factory=list)
    pid: int = 0

    def to_json(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_COLUMNS = [f.name for f in fields(RunRecord) if f.name != "id"]


class History:
    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path or os.path.join(state_dir(), "history.sqlite")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT)")
        self._db.execute("PRAGMA user_version=1")

    def start(self, job: str, file: str, host: str, mode: str, pid: int) -> RunRecord:
        record = RunRecord(0, job, file, host, timefmt.now(), mode=mode, pid=pid)
        cur = self._db.execute("INSERT INTO runs (doc) VALUES (?)", (json.dumps(record.to_json()),))
        record.id = int(cur.lastrowid or 0)
        return record

    def finish(self, record: RunRecord) -> None:
        self._db.execute("UPDATE runs SET doc = ? WHERE id = ?", (json.dumps(record.to_json()), record.id))

    def runs(self, job: Optional[str] = None, limit: Optional[int] = None) -> List[RunRecord]:
        rows = self._db.execute("SELECT id, doc FROM runs ORDER BY id DESC").fetchall()
        out = []
        for rid, doc in rows:
            d = json.loads(doc)
            d["id"] = rid
            rec = RunRecord(**{k: d[k] for k in ["id"] + _COLUMNS if k in d})
            if job is None or rec.job == job:
                out.append(rec)
        return out[:limit] if limit else out

    def last(self, job: str) -> Optional[RunRecord]:
        runs = self.runs(job, 1)
        return runs[0] if runs else None

    def last_success(self, job: str) -> Optional[RunRecord]:
        return next((r for r in self.runs(job) if r.status == "ok"), None)

    def close(self) -> None:
        self._db.close()
