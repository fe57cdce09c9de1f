"""Many recovery points, fast: a vault with N points (default 10,000), and the time to list them.

    .venv/bin/python bench/points_bench.py [N] [--dir DIR] [--keep]

`make_points(vault, n)` stores N recovery points of one tiny tree directly (PointStore.save, plus a chained
"add" journal entry each, as a backup logs them), hours apart, over a few hosts and paths; it takes ~1 ms a
point instead of a backup's ~100 ms. Reuse it for anything measured on many points (forget on 10,000 points):

    from points_bench import make_points, fast_vault
    with fast_vault(path, cache_dir) as v:
        ids = make_points(v, 10_000)

The measurement: `recovault snapshots` and a backup's base search (Vault.snapshots) with an empty agent cache
(cold: every point and journal entry is read from the vault) and again (warm: the cache holds them), and the
journal's refresh (Journal.refresh) cold and warm. Numbers go to stdout as one JSON document.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Sequence

from recovault import api, core
from recovault.storage import local
from recovault.vault import format as fmt
from recovault.vault.journal import JournalEntry
from recovault.vault.keys import KdfParams
from recovault.vault.records import RecoveryPoint
from recovault.vault.repo import Settings, Vault

PASSPHRASE = "points bench passphrase"
FAST_KDF = KdfParams(memory_kib=8, iterations=1, lanes=1)
ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def no_fsync() -> Iterator[None]:
    """Skip the local storage's fsyncs while making points (test data only: a crash loses nothing that
    matters); 20,000 objects otherwise cost 40,000 fsyncs."""
    saved = local.os.fsync, local._fsync_dir
    local.os.fsync, local._fsync_dir = (lambda fd: None), (lambda path: None)
    try:
        yield
    finally:
        local.os.fsync, local._fsync_dir = saved


def fast_vault(path: str, cache_dir: str) -> Vault:
    """A new vault with a cheap KDF, small chunks and packs."""
    return api.init_vault(path, PASSPHRASE, kdf=FAST_KDF, cache_dir=cache_dir,
                          settings=Settings(min_size=16 << 10, avg_size=64 << 10, max_size=256 << 10,
                                            pack_size=1 << 20))


def make_points(vault: Vault, n: int, *, hosts: Sequence[str] = ("web1", "web2", "db1"),
                paths: Sequence[str] = ("/srv", "/etc"), start: str = "2020-01-01T00:00:00Z",
                step: dt.timedelta = dt.timedelta(hours=1), journal: bool = True) -> List[str]:
    """Store `n` recovery points of one tiny tree, `step` apart from `start`, cycling through `hosts` and
    `paths`; with `journal`, log each with an "add" entry chained to the previous one. Returns their ids,
    oldest first."""
    tree = vault.save_tree([]).hex()
    vault.flush()
    t0 = dt.datetime.strptime(start, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    vault.journal.refresh()
    heads = vault.journal.heads()
    ids = []
    with no_fsync():
        for i in range(n):
            when = (t0 + i * step).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            host = hosts[i % len(hosts)]
            point = RecoveryPoint(when, host, [paths[i % len(paths)]], tree, username="root", mode="incremental",
                                  program="recovault bench", stats={"files_new": i % 7, "files_changed": 3,
                                  "files_unmodified": 1000 + i, "dirs": 40, "others": 0, "bytes_total": 1 << 30,
                                  "bytes_read": i * 1000, "chunks_new": i % 11, "bytes_added": i * 100,
                                  "errors": 0, "duration": 1.5})
            ids.append(vault.points.save(point))
            if journal:
                heads = [_log_add(vault, ids[-1], when, host, heads)]
    return ids


def _log_add(vault: Vault, sid: str, when: str, host: str, prev: List[str]) -> str:
    """What Journal.append stores, without its refresh (a listing of the whole journal per entry)."""
    sealed = vault.sealer.seal(fmt.AAD_JOURNAL, JournalEntry("add", sid, when, host, tuple(prev)).to_json())
    name = core.blake3(sealed).hex()
    vault.storage.put(fmt.JOURNAL + name, sealed)
    return name


def timed(f: Callable[[], object]) -> float:
    t = time.perf_counter()
    f()
    return round(time.perf_counter() - t, 3)


def measure(vault_dir: str, cache: str) -> Dict[str, float]:
    """Seconds: the CLI's `snapshots --json` and the API's listing and journal refresh, cold then warm."""
    env = {**os.environ, "RECOVAULT_PASSPHRASE": PASSPHRASE}
    cli = [str(ROOT / ".venv/bin/recovault"), "snapshots", "--json", "--vault", vault_dir, "--cache-dir", cache]
    out: Dict[str, float] = {}
    for state in ("cold", "warm"):
        if state == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        out[f"cli_snapshots_{state}"] = timed(lambda: subprocess.run(cli, env=env, check=True, capture_output=True))
    for state in ("cold", "warm"):
        if state == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        with api.open_vault(vault_dir, PASSPHRASE, cache_dir=cache) as v:
            out[f"list_points_{state}"] = timed(v.snapshots)
            out[f"journal_refresh_{state}"] = timed(v.journal.refresh)
    return out


def main(argv: Sequence[str] = ()) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", type=int, nargs="?", default=10_000)
    ap.add_argument("--dir", help="work directory (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the vault (reuse it with --dir)")
    a = ap.parse_args(argv or None)
    work = Path(a.dir or tempfile.mkdtemp(prefix="points-bench-"))
    vault, cache = str(work / "vault"), str(work / "cache")
    try:
        made = 0.0
        if not (work / "vault").exists():
            with fast_vault(vault, cache) as v:
                made = timed(lambda: make_points(v, a.n))
        result = {"points": a.n, "make_points_s": made, **measure(vault, cache)}
        print(json.dumps(result, indent=1))
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
