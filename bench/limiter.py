#!/usr/bin/env python3
"""The bandwidth limiter's accuracy, on a local vault directory: the achieved rate against the limit.

  upload     THREADS threads (the connections of one process) put 16 MiB objects (packs) through one
             LimitedStorage for SECONDS; achieved = bytes stored / time until the last put returned.
  download   the same threads get 16 MiB objects for SECONDS.
  boundary   uploads while the clock crosses the end of work hours (the wall clock the schedule reads is
             shifted to 17:59:45 on a Monday minus half the run): the work rate before, twice it after.
  cli        `recovault backup --limit-upload RATE` of random files: bytes the vault gained / wall time
             (start-up, chunking and the index included: a little under the limit).

Each part also gives the steadiest and the least steady second (bytes the limiter let through in each
whole second, first and last left out) as a ratio to the limit. One run; the machine may be shared.

Usage: .venv/bin/python bench/limiter.py [--rate 8MiB] [--seconds 30] [--threads 4] [--parts upload,download,
       boundary,cli] [--dir /var/tmp/recovault-limiter] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Dict, List

from recovault.storage import LocalStorage
from recovault.storage.limits import DEFAULT_WORK_HOURS, Schedule, TransferLimiter, TransferLimits, parse_rate
from recovault.storage.wrappers import LimitedStorage, MetricsStorage, StorageMetrics

OBJECT = 16 << 20  # bytes per put or get: a default pack
MiB = 1 << 20


class Granted:
    """Counts what a bucket lets through, per whole second since the start."""

    def __init__(self, bucket, start: float) -> None:
        self.per_second: Dict[int, int] = {}
        self.lock = threading.Lock()
        acquire = bucket.acquire

        def counted(n: int) -> None:
            acquire(n)
            with self.lock:
                second = int(time.monotonic() - start)
                self.per_second[second] = self.per_second.get(second, 0) + n
        bucket.acquire = counted

    def steadiness(self, rate_at: Callable[[int], float]) -> List[float]:
        inner = sorted(self.per_second)[1:-1]
        ratios = [self.per_second[s] / rate_at(s) for s in inner]
        return [round(min(ratios), 3), round(max(ratios), 3)] if ratios else []


def run_threads(threads: int, seconds: float, work: Callable[[int, int], None]) -> float:
    start = time.monotonic()

    def loop(t: int) -> None:
        i = 0
        while time.monotonic() - start < seconds:
            work(t, i)
            i += 1
    pool = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for p in pool:
        p.start()
    for p in pool:
        p.join()
    return time.monotonic() - start


def transfer(root: Path, args, direction: str, limiter: TransferLimiter, rate_at: Callable[[int], float]) -> dict:
    local = LocalStorage(root / direction, create=True)
    metrics = StorageMetrics()
    store = LimitedStorage(MetricsStorage(local, metrics), limiter)
    payload = os.urandom(OBJECT)
    if direction == "download":
        for t in range(args.threads):
            local.put(f"data/{t}", payload)
    bucket = limiter.upload if direction != "download" else limiter.download
    granted = Granted(bucket, time.monotonic())

    def work(t: int, i: int) -> None:
        if direction == "download":
            assert len(store.get(f"data/{t}")) == OBJECT
        else:
            store.put(f"data/{t}-{i}", payload)
            local.delete(f"data/{t}-{i}")
    elapsed = run_threads(args.threads, args.seconds, work)
    op = "get" if direction == "download" else "put"
    moved = metrics.snapshot()[op].bytes
    shutil.rmtree(root / direction)
    return {"bytes": moved, "seconds": round(elapsed, 2), "achieved_MiB_s": round(moved / elapsed / MiB, 3),
            "requests": metrics.snapshot()[op].requests, "seconds_min_max": granted.steadiness(rate_at),
            "per_second": granted.per_second}


def part_transfer(root: Path, args, direction: str) -> dict:
    rate = args.rate.bytes_per_second
    schedule = Schedule(rate, rate)
    limits = TransferLimits(upload=schedule) if direction == "upload" else TransferLimits(download=schedule)
    out = transfer(root, args, direction, TransferLimiter(limits), lambda s: rate)
    del out["per_second"]
    out["limit_MiB_s"] = round(rate / MiB, 3)
    out["ratio"] = round(out["achieved_MiB_s"] / out["limit_MiB_s"], 4)
    return out


def part_boundary(root: Path, args) -> dict:
    rate = args.rate.bytes_per_second
    half = args.seconds / 2
    shift = datetime(2026, 11, 23, 18, 0, 0).timestamp() - half - time.time()  # 18:00 local at the middle
    limiter = TransferLimiter(TransferLimits(upload=Schedule(rate, 2 * rate, DEFAULT_WORK_HOURS)),
                              wall=lambda: time.time() + shift)
    out = transfer(root, args, "boundary", limiter, lambda s: rate if s < half else 2 * rate)
    per_second = out.pop("per_second")
    before = sum(n for s, n in per_second.items() if s < half) / half
    after = sum(n for s, n in per_second.items() if s >= half) / (out["seconds"] - half)
    out.update(limit_MiB_s=[round(rate / MiB, 3), round(2 * rate / MiB, 3)],
               achieved_MiB_s=[round(before / MiB, 3), round(after / MiB, 3)],
               ratio=[round(before / rate, 4), round(after / rate / 2, 4)])
    return out


def part_cli(root: Path, args) -> dict:
    env = dict(os.environ, RECOVAULT_PASSPHRASE="limiter bench passphrase", HOME=str(root / "home"))
    vault, src = root / "vault", root / "src"
    src.mkdir(parents=True)
    size = int(args.rate.bytes_per_second * args.seconds)
    for i in range(max(1, size // (8 * MiB))):
        (src / f"f{i}").write_bytes(os.urandom(min(8 * MiB, size)))
    exe = [sys.executable, "-m", "recovault"]
    subprocess.run(exe + ["init", "--vault", str(vault)], env=env, check=True, capture_output=True)
    before = sum(f.stat().st_size for f in vault.rglob("*") if f.is_file())
    t = time.monotonic()
    subprocess.run(exe + ["backup", "--vault", str(vault), "--limit-upload", args.rate.text, str(src)], env=env,
                   check=True, capture_output=True)
    elapsed = time.monotonic() - t
    stored = sum(f.stat().st_size for f in vault.rglob("*") if f.is_file()) - before
    shutil.rmtree(vault)
    shutil.rmtree(src)
    achieved = stored / elapsed / MiB
    return {"bytes": stored, "seconds": round(elapsed, 2), "achieved_MiB_s": round(achieved, 3),
            "limit_MiB_s": round(args.rate.bytes_per_second / MiB, 3),
            "ratio": round(achieved * MiB / args.rate.bytes_per_second, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", default="8MiB", type=parse_rate)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--parts", default="upload,download,boundary,cli")
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/recovault-limiter"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    results = {}
    for part in args.parts.split(","):
        if part in ("upload", "download"):
            results[part] = part_transfer(args.dir, args, part)
        elif part == "boundary":
            results[part] = part_boundary(args.dir, args)
        elif part == "cli":
            results[part] = part_cli(args.dir, args)
        else:
            ap.error(f"unknown part {part!r}")
        print(part, json.dumps(results[part]), flush=True)
    shutil.rmtree(args.dir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
