"""Fixtures shared by the test modules."""
from __future__ import annotations

import os
import subprocess

import pytest

from servers import azure_env, azurite, moto, s3_env  # noqa: F401 - the object-store server fixtures


@pytest.fixture(scope="session", autouse=True)
def private_agent_dirs(tmp_path_factory):
    """The agent cache and state directories of the whole run in its temporary root, not the home of whoever
    runs the suite (a test that needs its own sets its own; subprocesses inherit these)."""
    root = tmp_path_factory.mktemp("agent")
    old = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "RECOVAULT_STATE_DIR")}
    os.environ["XDG_CACHE_HOME"] = str(root / "cache")
    os.environ["RECOVAULT_STATE_DIR"] = str(root / "state")
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (a restore target that fills up); skips unless it can be mounted (root)."""
    target = tmp_path / "small"
    target.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)],
                                          capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], capture_output=True)


@pytest.fixture
def tz(monkeypatch):
    """Sets the process's local time zone for a test (``tz("Europe/Berlin")``): TZ, then time.tzset(); the
    old zone comes back afterwards."""
    import time

    def use(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield use
    monkeypatch.undo()
    time.tzset()
