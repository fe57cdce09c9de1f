"""Fixtures shared by the test modules."""
from __future__ import annotations

import os
import subprocess

import pytest


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
