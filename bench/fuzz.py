"""The long form of the fuzzing suite: every harness of fuzz/harnesses.py for N executions under atheris.

    .venv/bin/python bench/fuzz.py --runs 1000000 [--harness tree --harness pack ...] [--out DIR]
        [--max-time SECONDS] [--timeout 10] [--rss-limit-mb 2048] [--json]

Each harness runs in its own process (fuzz/run.py), one after the other, with its corpus in DIR/corpus/NAME
(seeded from the fixture vault when empty, and kept: a second run goes on from what the first found) and
what it finds in DIR/findings/NAME/ (libFuzzer's crash-*, timeout-*, oom-* inputs: replay one with
``python fuzz/run.py NAME FILE``). libFuzzer stops a harness at its first finding; this runner reports it
and goes on with the next harness. ``--max-time`` caps each harness's seconds (the table says how many
executions it got). Prints one table row per harness: executions, seconds, executions per second, corpus
inputs, findings (figures for docs/reliability.md).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, os.pardir, "fuzz", "run.py")


@dataclass
class Result:
    harness: str
    runs: int  # executions done
    seconds: float
    exec_per_s: float
    corpus: int  # inputs in the corpus after the run
    findings: List[str]  # artifact files (crash-*, timeout-*, oom-*, leak-*)
    exit_code: int


def harness_names() -> List[str]:
    out = subprocess.run([sys.executable, RUN, "--list"], check=True, capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _executions(log: str) -> int:
    """Executions done, from libFuzzer's final stats, its 'Done N runs' line, or its last status line."""
    for pattern in (r"stat::number_of_executed_units:\s*(\d+)", r"Done (\d+) runs", r"^#(\d+)\s"):
        hits = re.findall(pattern, log, re.M)
        if hits:
            return int(hits[-1])
    return 0


def run_one(name: str, runs: int, out: str, timeout: int, rss_limit_mb: int,
            max_time: Optional[int]) -> Result:
    corpus = os.path.join(out, "corpus", name)
    findings = os.path.join(out, "findings", name)
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(findings, exist_ok=True)
    before = set(os.listdir(findings))
    cmd = [sys.executable, RUN, name, f"-runs={runs}", f"-timeout={timeout}", f"-rss_limit_mb={rss_limit_mb}",
           f"-artifact_prefix={findings}/", "-print_final_stats=1", corpus]
    if max_time:
        cmd.insert(3, f"-max_total_time={max_time}")
    log_path = os.path.join(out, f"{name}.log")
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    with open(log_path, errors="replace") as f:
        log_text = f.read()
    done = _executions(log_text)
    new = sorted(set(os.listdir(findings)) - before)
    return Result(name, done, round(seconds, 1), round(done / seconds, 1) if seconds else 0.0,
                  len(os.listdir(corpus)), [os.path.join(findings, f) for f in new], proc.returncode)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1_000_000, help="executions per harness (default 1,000,000)")
    ap.add_argument("--harness", action="append", help="only this harness (repeatable; default: all)")
    ap.add_argument("--out", default="/tmp/recovault-fuzz", help="corpora, findings and logs (default %(default)s)")
    ap.add_argument("--max-time", type=int, default=None, help="seconds per harness at most")
    ap.add_argument("--timeout", type=int, default=10, help="seconds one input may take before it is a hang")
    ap.add_argument("--rss-limit-mb", type=int, default=2048, help="memory one harness process may use")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    names = args.harness or harness_names()
    os.makedirs(args.out, exist_ok=True)
    results = []
    if not args.json:
        print("| harness | executions | seconds | exec/s | corpus | findings |")
        print("|---|---|---|---|---|---|")
    for name in names:
        r = run_one(name, args.runs, args.out, args.timeout, args.rss_limit_mb, args.max_time)
        results.append(r)
        if not args.json:
            found = ", ".join(os.path.basename(f) for f in r.findings) or ("none" if r.exit_code == 0 else
                                                                          f"exit {r.exit_code}: see {name}.log")
            print(f"| {name} | {r.runs:,} | {r.seconds} | {r.exec_per_s:,.0f} | {r.corpus} | {found} |", flush=True)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=1))
    return 1 if any(r.findings or r.exit_code for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
