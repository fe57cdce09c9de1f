"""Where job files and the agent's state live, and what a job may be called.

The state directory holds the journal of job runs (`history.sqlite`) and the run locks (`locks/JOB.lock`):
`$RECOVAULT_STATE_DIR`, else `$XDG_STATE_HOME/recovault`, else `/var/lib/recovault` for root and
`~/.local/state/recovault` for anyone else. Job files are `NAME.toml` in the jobs directory:
`$RECOVAULT_JOBS_DIR`, else `/etc/recovault/jobs`; a job's name is its file's stem.
"""
from __future__ import annotations

import os
import re
from typing import Optional

DEFAULT_JOBS_DIR = "/etc/recovault/jobs"
NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")


def state_dir() -> str:
    """The agent's state directory (not created here)."""
    explicit = os.environ.get("RECOVAULT_STATE_DIR")
    if explicit:
        return explicit
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg:
        return os.path.join(xdg, "recovault")
    if os.geteuid() == 0:
        return "/var/lib/recovault"
    return os.path.join(os.path.expanduser("~"), ".local", "state", "recovault")


def jobs_dir(given: Optional[str] = None) -> str:
    """The jobs directory: `given` (--jobs-dir), else $RECOVAULT_JOBS_DIR, else /etc/recovault/jobs."""
    return given or os.environ.get("RECOVAULT_JOBS_DIR") or DEFAULT_JOBS_DIR


def job_name(path: str) -> str:
    """The job's name: its file's stem (`/etc/recovault/jobs/web.toml` -> `web`)."""
    base = os.path.basename(path)
    return base[:-len(".toml")] if base.endswith(".toml") else base


def valid_name(name: str) -> bool:
    """A job's name, or a systemd credential's: one path component of letters, digits, '_', '.' and '-' (not
    '.' or '..': a name becomes a file name, a unit name, a path under $CREDENTIALS_DIRECTORY)."""
    return bool(NAME.match(name)) and name not in (".", "..")
