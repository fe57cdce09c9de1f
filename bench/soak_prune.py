"""A long soak of prune beside running backups: tests/test_prune_concurrency.py's loop (two backup loops in
real processes, prune again and again with a 1 s margin, older points deleted meanwhile), run for longer,
then every remaining recovery point restored byte for byte and check --read-data.

    .venv/bin/python bench/soak_prune.py [SECONDS]      # default 600; CI runs the same test for 10 s
"""
from __future__ import annotations

import os
import sys

import pytest

if __name__ == "__main__":
    os.environ["RECOVAULT_SOAK_SECONDS"] = sys.argv[1] if len(sys.argv) > 1 else "600"
    tests = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", os.path.join(tests, "test_prune_concurrency.py")]))
