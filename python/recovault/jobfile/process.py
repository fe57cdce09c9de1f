"""The commands a job runs (hooks, the stdin command, the report command) each lead a session of their own
(`start_new_session=True`), so that one stopped at its timeout is stopped with every process it started."""
from __future__ import annotations

import os
import signal
import subprocess


def kill_group(proc: "subprocess.Popen[bytes]", grace: float = 0.0) -> None:
    """Stop `proc`'s process group and reap `proc`: SIGTERM and up to `grace` seconds to end (none: at once),
    then SIGKILL. A descendant that left the group and still holds an output pipe does not keep us waiting:
    the pipes are closed."""
    steps = ((signal.SIGTERM, grace),) if grace > 0 else ()
    for sig, wait in steps + ((signal.SIGKILL, 5.0),):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.communicate(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()
