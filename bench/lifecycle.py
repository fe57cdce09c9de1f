#!/usr/bin/env python3
"""The vault's lifecycle, measured: forget on 10,000 recovery points, prune beside restic's on the same
versions of a real tree, and prune's peak memory per million blobs. One run; ratios are what matter.

  forget   10,000 recovery points made through the API (one small tree, times an hour apart), then
           `snapshots`, `forget --dry-run --json` and `forget` with a daily/weekly/monthly/yearly policy,
           each timed as a separate process (cold agent cache for the first `snapshots`).
  prune    30 versions of a real tree (/usr/include + /usr/share/doc, ~250 MB; each version appends to 200
           files and replaces a 4 MiB random file), backed up by recovault and by restic with the same
           --time; then every other version is forgotten by id and each tool prunes (restic: forget, then
           `prune --max-unused 5%`; recovault: `forget` with soft delete off, then
           `prune --max-unused 5% --margin 0`). Reports times and vault sizes, and the size ratio.
  memory   a vault of N blobs (default 1,000,000 small ones, in two recovery points of N/2 each); the first
           point is forgotten and `prune --margin 0` runs; its peak RSS (wait4) per million blobs.

Usage: .venv/bin/python bench/lifecycle.py [--parts forget,prune,memory] [--blobs 1000000] [--json out.json]
Needs restic (apt-get install restic) for the prune part.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import PASS, RECOVAULT, du, make_tree as peers_make_tree  # noqa: E402

WORK = Path("/var/tmp/recovault-lifecycle")
ENV = {"RECOVAULT_PASSPHRASE": PASS}


def timed(cmd, env=None, capture=False):
    """Run `cmd`; (seconds, max RSS MiB, stdout). Raises on failure."""
    e = dict(os.environ, **(env or {}))
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    out = p.stdout.read() if capture else b""
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({code}): {err.decode(errors='replace')[-2000:]}")
    return dt, ru.ru_maxrss / 1024, out


def rv(*args, vault: Path, capture=False, cache: Path = None, env=ENV):
    extra = ["--cache-dir", str(cache)] if cache else []
    return timed(RECOVAULT + [args[0], "--vault", str(vault)] + extra + list(args[1:]), env, capture)


# ---- forget on 10,000 points --------------------------------------------------------------------
def make_points(vault_dir: Path, n: int) -> float:
    """A vault with `n` recovery points an hour apart over 3 hosts and 2 paths (points_bench.make_points)."""
    from points_bench import fast_vault, make_points as store_points

    shutil.rmtree(vault_dir, ignore_errors=True)
    t0 = time.perf_counter()
    with fast_vault(str(vault_dir), str(WORK / "cache-make")) as v:
        store_points(v, n)
    return time.perf_counter() - t0


def bench_forget(n: int) -> dict:
    vault = WORK / "forget-vault"
    cache = WORK / "forget-cache"
    shutil.rmtree(cache, ignore_errors=True)
    made = make_points(vault, n)
    from points_bench import PASSPHRASE
    rv = functools.partial(globals()["rv"], env={"RECOVAULT_PASSPHRASE": PASSPHRASE})
    policy = ["--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "12", "--keep-yearly", "10"]
    res = {"points": n, "make_s": made}
    res["snapshots_cold_s"] = rv("snapshots", "--json", vault=vault, cache=cache, capture=True)[0]
    res["snapshots_warm_s"] = rv("snapshots", "--json", vault=vault, cache=cache, capture=True)[0]
    dt, _, out = rv("forget", *policy, "--dry-run", "--json", vault=vault, cache=cache, capture=True)
    groups = json.loads(out)
    res["forget_dry_run_s"] = dt
    res["kept"] = sum(len(g["keep"]) for g in groups)
    res["forget_s"] = rv("forget", *policy, vault=vault, cache=cache)[0]
    res["snapshots_after_s"] = rv("snapshots", "--json", vault=vault, cache=cache, capture=True)[0]
    return res


# ---- prune beside restic ----------------------------------------------------------------------
def make_tree() -> Path:
    return peers_make_tree(WORK, ("/usr/include", "/usr/share/doc"))


def change_tree(src: Path, rng: random.Random) -> None:
    files = sorted(p for p in src.rglob("*") if p.is_file() and not p.is_symlink() and p.name != "version.bin")
    for p in rng.sample(files, min(200, len(files))):
        with open(p, "ab") as f:
            f.write(b"recovault lifecycle change %d\n" % rng.randrange(1 << 30))
    (src / "version.bin").write_bytes(rng.randbytes(4 << 20))


def bench_prune(versions: int = 30) -> dict:
    src = make_tree()
    rv_vault, restic_repo = WORK / "prune-recovault", WORK / "prune-restic"
    for p in (rv_vault, restic_repo):
        shutil.rmtree(p, ignore_errors=True)
    renv = {"RESTIC_PASSWORD": PASS, "RESTIC_CACHE_DIR": str(WORK / "restic-cache")}
    rv("init", "--soft-delete-days", "0", vault=rv_vault)
    timed(["restic", "init", "--repo", str(restic_repo)], renv)
    rng = random.Random(9)
    start = datetime(2026, 1, 1, 2, 0, 0)
    res = {"versions": versions, "backup_s": {"recovault": 0.0, "restic": 0.0}}
    for i in range(versions):
        change_tree(src, rng)
        when = (start + timedelta(days=i)).strftime("%Y-%m-%d %H:%M:%S")
        res["backup_s"]["recovault"] += rv("backup", "--time", when, str(src), vault=rv_vault)[0]
        res["backup_s"]["restic"] += timed(["restic", "backup", "--repo", str(restic_repo), "--time", when,
                                            str(src)], renv)[0]
    res["size_before"] = {"recovault": du(rv_vault), "restic": du(restic_repo)}
    ours = [p["id"] for p in json.loads(rv("snapshots", "--json", vault=rv_vault, capture=True)[2])]
    theirs = [p["id"] for p in json.loads(timed(["restic", "snapshots", "--repo", str(restic_repo), "--json"],
                                                renv, True)[2])]
    res["forget_s"] = {"recovault": rv("forget", *ours[::2], vault=rv_vault)[0],
                       "restic": timed(["restic", "forget", "--repo", str(restic_repo)] + theirs[::2], renv)[0]}
    dt, rss, _ = rv("prune", "--max-unused", "5%", "--margin", "0", vault=rv_vault)
    rdt, rrss, _ = timed(["restic", "prune", "--repo", str(restic_repo), "--max-unused", "5%"], renv)
    res["prune_s"] = {"recovault": dt, "restic": rdt}
    res["prune_rss_mib"] = {"recovault": rss, "restic": rrss}
    res["size_after"] = {"recovault": du(rv_vault), "restic": du(restic_repo)}
    res["size_ratio_recovault_to_restic"] = res["size_after"]["recovault"] / res["size_after"]["restic"]
    res["check_s"] = rv("check", "--read-data", vault=rv_vault)[0]
    return res


# ---- prune memory per million blobs -------------------------------------------------------------
def make_blobs(vault_dir: Path, n: int) -> float:
    from recovault import api
    from recovault.vault.journal import VaultPolicy
    from recovault.vault.keys import KdfParams
    from recovault.vault.records import Node, RecoveryPoint

    shutil.rmtree(vault_dir, ignore_errors=True)
    t0 = time.perf_counter()
    with api.init_vault(str(vault_dir), PASS, kdf=KdfParams(iterations=1, lanes=1, memory_kib=8),
                        cache_dir=str(WORK / "cache-make")) as v:
        v.set_policy(VaultPolicy(None, 0))
        per_file, per_dir = 1000, 10  # trees of ~660 KB: 10 files of 1,000 chunk IDs each
        for half in range(2):
            dirs = []
            for d in range(n // 2 // (per_file * per_dir)):
                files = []
                for f in range(per_dir):
                    ids = [v.save_blob(0, os.urandom(48)).hex() for _ in range(per_file)]
                    files.append(Node(b"f%02d" % f, {"t": "f", "m": 0o644}, size=48 * per_file, content=ids))
                dirs.append(Node.directory(b"d%05d" % d, {"t": "d", "m": 0o755}, v.save_tree(files).hex()))
            tree = v.save_tree(dirs).hex()
            v.flush()
            v.save_snapshot(RecoveryPoint(time=f"2026-01-0{half + 1}T00:00:00.000000Z", host="bench",
                                          paths=["/data"], tree=tree))
    return time.perf_counter() - t0


def bench_memory(n: int) -> dict:
    vault = WORK / "memory-vault"
    # In a process of its own: a child forked from a large parent reports the parent's pages in its max RSS.
    made = timed([sys.executable, __file__, "--make-blobs", str(vault), str(n)])[0]
    first = json.loads(rv("snapshots", "--json", vault=vault, capture=True)[2])[0]["id"]
    rv("forget", first, vault=vault)
    _, base_rss, _ = rv("snapshots", vault=vault)
    dt, rss, _ = rv("prune", "--margin", "0", vault=vault)
    return {"blobs": n, "make_s": made, "prune_s": dt, "prune_peak_rss_mib": rss,
            "baseline_rss_mib": base_rss,
            "mib_per_million_blobs": (rss - base_rss) / (n / 1e6)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="forget,prune,memory")
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--versions", type=int, default=30)
    ap.add_argument("--blobs", type=int, default=1_000_000)
    ap.add_argument("--json")
    ap.add_argument("--make-blobs", nargs=2, metavar=("VAULT", "N"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.make_blobs:
        make_blobs(Path(a.make_blobs[0]), int(a.make_blobs[1]))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    out = {}
    for part in a.parts.split(","):
        if part == "forget":
            out[part] = bench_forget(a.points)
        elif part == "prune":
            out[part] = bench_prune(a.versions)
        elif part == "memory":
            out[part] = bench_memory(a.blobs)
        else:
            sys.exit(f"unknown part {part!r}")
        print(json.dumps({part: out[part]}, indent=1), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
