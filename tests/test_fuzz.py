"""The fuzzing suite's short form: every harness of fuzz/harnesses.py under atheris for a fixed number of
executions, each in its own process (fuzz/run.py), from the seeds of a real small vault. A run that meets an
unexpected exception, a hang or a crash exits non-zero with the input and its traceback. The long form is
bench/fuzz.py (1,000,000 executions per harness; figures in docs/reliability.md). The defects the fuzzing
found each have their own regression test (tests/test_fuzz_findings.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "fuzz", "run.py")
sys.path.insert(0, os.path.join(ROOT, "fuzz"))

from harnesses import HARNESSES  # noqa: E402

RUNS = 2000


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_harness_runs_clean(name, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    proc = subprocess.run([sys.executable, RUN, name, f"-runs={RUNS}", "-timeout=30", "-rss_limit_mb=2048",
                           f"-artifact_prefix={tmp_path}/", "-seed=1", str(corpus)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"Done {RUNS} runs" in proc.stderr
    assert os.listdir(corpus)  # seeded from the fixture vault, then grown


def test_a_finding_stops_the_run_with_its_traceback(tmp_path):
    """The harness wrapper lets only the expected errors pass: an input that makes the reader raise anything
    else is reported (here a harness whose parser is replaced by one that raises KeyError)."""
    script = tmp_path / "bad.py"
    script.write_text(
        "import runpy, sys\n"
        f"sys.path.insert(0, {os.path.join(ROOT, 'fuzz')!r})\n"
        "import harnesses\n"
        "def broken(fx, data):\n"
        "    if data[:1] == b'{': raise KeyError('found')\n"
        "harnesses.HARNESSES['job'] = harnesses.Harness('job', 'x', lambda fx: [b'{'], broken, ())\n"
        f"sys.argv = [{RUN!r}, 'job', '-runs=50', {str(tmp_path / 'corpus')!r}]\n"
        f"runpy.run_path({RUN!r}, run_name='__main__')\n")
    (tmp_path / "corpus").mkdir()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr  # atheris prints the traceback on stdout, libFuzzer its report on stderr
    assert "Uncaught Python exception" in output and "KeyError: 'found'" in output
