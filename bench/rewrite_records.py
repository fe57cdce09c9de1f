#!/usr/bin/env python3
"""`key rotate --rewrite` re-seals every recovery point and journal entry in place: a get and a put each, a
round trip each on an object store. This measures that step, one worker against `jobs.rotate.RESEAL_WORKERS`
workers, in one run, on two stores:

- moto's S3 server on loopback (started here, as the tests start it): a real S3 protocol, but a Python server
  on this machine's two cores, so it serves few requests at once;
- tests/memstore.py's in-memory store with LATENCY seconds slept per request (default 0.02, a cloud store's
  round trip from a host in its region; requests overlap, as on a network).

    .venv/bin/python bench/rewrite_records.py [POINTS] [LATENCY]

On each, one vault of POINTS (default 200) small backups; a first rewrite with one worker, then a second
rewrite (a new generation: every record is stale again) with the default workers. Printed: the records
re-sealed, the seconds of the records step alone (jobs.rotate._reseal_records, timed) and the speed-up.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from memstore import STORES, MemoryStorage  # noqa: E402
from servers import free_port, run_moto, unique_name  # noqa: E402

from recovault import api  # noqa: E402
from recovault.jobs import rotate  # noqa: E402
from recovault.vault.keys import KdfParams  # noqa: E402

PASSPHRASE = "rewrite records benchmark passphrase"
KDF = KdfParams(memory_kib=8, iterations=1, lanes=1)


def _timed_records():
    """Wrap the records step to time it; returns the list its durations are appended to."""
    spent = []
    inner = rotate._reseal_records

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - t0)
    rotate._reseal_records = timed
    return spent


def _rewrite(url: str, cache: str, workers: int, spent: list) -> tuple:
    rotate.RESEAL_WORKERS = workers
    t0 = time.perf_counter()
    with api.open_vault(url, PASSPHRASE, cache_dir=cache) as v:
        res = api.rotate_key(v, rewrite=True, margin=0)
    assert res.done, res.unfinished
    return res.points_resealed + res.entries_resealed, spent[-1], time.perf_counter() - t0


def _build(url: str, cache: str, points: int, src: Path) -> None:
    src.mkdir()
    with api.init_vault(url, PASSPHRASE, kdf=KDF, cache_dir=cache) as v:
        for _ in range(points):
            (src / "f").write_bytes(os.urandom(1000))
            api.backup(v, [str(src)])


def _compare(url: str, cache: str, spent: list) -> tuple:
    """A rewrite with one worker, then one with the default workers (every record is stale again)."""
    workers = rotate.RESEAL_WORKERS
    try:
        return _rewrite(url, cache, 1, spent), _rewrite(url, cache, workers, spent)
    finally:
        rotate.RESEAL_WORKERS = workers


def _report(title: str, one: tuple, many: tuple, workers: int) -> None:
    print(title)
    for label, (records, step, whole) in (("1 worker", one), (f"{workers} workers", many)):
        print(f"  {label:10} {records} records re-sealed in {step:.2f} s ({records / step:.0f}/s); "
              f"the whole rewrite {whole:.2f} s")
    print(f"  records step speed-up: {one[1] / many[1]:.2f}x")


def main(points: int, latency: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="recovault-rewrite-bench-"))
    workers = rotate.RESEAL_WORKERS
    spent = _timed_records()
    with run_moto(work, free_port()) as server:
        os.environ.update(server.env)
        url = f"s3://{unique_name()}/v"
        _build(url, str(work / "cache-s3"), points, work / "src-s3")
        _report(f"moto S3 on loopback, {points} points:", *_compare(url, str(work / "cache-s3"), spent), workers)
    STORES["bench"] = MemoryStorage("bench")
    _build("mem://bench", str(work / "cache-mem"), points, work / "src-mem")
    STORES["bench"].latency = latency  # the vault is built at full speed; the rewrites pay the round trips
    _report(f"in-memory store, {latency * 1000:.0f} ms a request, {points} points:",
            *_compare("mem://bench", str(work / "cache-mem"), spent), workers)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200, float(sys.argv[2]) if len(sys.argv) > 2 else 0.02)
