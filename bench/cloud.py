#!/usr/bin/env python3
"""Backup and restore against Azurite and moto on loopback, as ratios to a local vault in the same run.

For each store (a local directory, Azurite's blob service, moto's S3 server; the servers started here on
free ports, as the tests start them): init, a first backup, an unchanged re-run, and a restore (checked
byte for byte with `diff -r`; restores go to a tmpfs where one can be mounted: see restore_area), each timed (the re-run's storage requests and bytes from
$RECOVAULT_STORAGE_METRICS) as its own `recovault` process. Two corpora: `tree` (a copy of
/usr/include: many small files) and `big` (4 files of 64 MiB of random bytes: whole packs). The figure the
issue sets: restore from each server at least half the local vault's speed (ratio >= 0.5).

With --transfer, against each server and the `big` corpus: the backup's upload speed-up from 1 to 8
connections (`--connections`), and resume: a backup interrupted with SIGINT half way (after half a full
backup's time), then run again: the bytes the second run uploads as a fraction of a full upload.

For `big` it also measures each server's own serving rate (whole 16 MiB gets on 5 connections, nothing
else done with the bytes): the ceiling of any restore from it here, as a ratio to the local restore.

Usage: .venv/bin/python bench/cloud.py [--corpora tree,big] [--transfer] [--json out.json]
Needs `bash .ci/setup` (it installs Azurite and moto's server).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from peers import RECOVAULT, du, make_tree  # noqa: E402
from servers import free_port, run_azurite, run_moto, unique_name  # noqa: E402

WORK = Path("/var/tmp/recovault-cloud")
PASS = "cloud benchmark passphrase 0123456789"


def timed(argv, env):
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if p.returncode:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
    return time.perf_counter() - t0


def make_big(work: Path) -> Path:
    src = work / "big"
    if not src.exists():
        src.mkdir(parents=True)
        for i in range(4):
            (src / f"f{i}.bin").write_bytes(os.urandom(64 << 20))
    return src


@contextmanager
def restore_area(size: str = "2g"):
    """Where restores go: a tmpfs mounted for the run when this process may mount one (root), else a directory
    on WORK's disk. On this project's machines (ext4 with discard) creating many files where many were just
    deleted costs more system time each round (tar -x of /usr/include: 0.3, 3.2, 5.1 s of system time in three
    rounds), so restores on the disk, one store after another, would be slower the later their store comes."""
    area = WORK / "restores"
    area.mkdir(exist_ok=True)
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(area)],
                                                   capture_output=True).returncode == 0
    try:
        yield area, mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(area)], capture_output=True)


AREA = WORK / "restores"


def run_store(name: str, url: str, env: dict, src: Path) -> dict:
    env = dict(env, RECOVAULT_PASSPHRASE=PASS, XDG_CACHE_HOME=str(WORK / f"cache-{name}-{src.name}"))
    shutil.rmtree(env["XDG_CACHE_HOME"], ignore_errors=True)
    rv = lambda *a: timed(RECOVAULT + [a[0], "--vault", url] + list(a[1:]), env)  # noqa: E731
    out = {"init_s": rv("init")}
    out["backup_s"] = rv("backup", str(src))
    metrics = WORK / f"metrics-{name}-{src.name}.json"
    out["rerun_s"] = timed(RECOVAULT + ["backup", "--vault", url, str(src)],
                           dict(env, RECOVAULT_STORAGE_METRICS=str(metrics)))
    ops = json.loads(metrics.read_text())  # the unchanged re-run's requests and bytes, per operation
    out["rerun_requests"] = sum(op.get("requests", 0) for op in ops.values())
    out["rerun_bytes_down"] = ops.get("get", {}).get("bytes", 0)
    out["rerun_bytes_up"] = sum(ops.get(k, {}).get("bytes", 0) for k in ("put", "put_if_absent", "put_stream"))
    target = AREA / f"restore-{name}-{src.name}"
    shutil.rmtree(target, ignore_errors=True)
    out["restore_s"] = rv("restore", "latest", "--target", str(target))
    same = subprocess.run(["diff", "-rq", "--no-dereference", str(src), str(target / str(src).lstrip("/"))],
                          stdout=subprocess.DEVNULL).returncode == 0
    if not same:
        raise RuntimeError(f"{name}: the restore differs from the source")
    shutil.rmtree(target)
    return out


def raw_get_rate(url: str, env: dict, connections: int = 5, objects: int = 16, size: int = 16 << 20) -> float:
    """The store's own serving rate: bytes a second of whole-object gets of `objects` objects of `size` bytes
    (a big file's packs) on `connections` threads, through recovault's back end and nothing else (no
    decryption, no writing): the ceiling of any restore from it on this machine."""
    code = f"""
import os, sys, time
from concurrent.futures import ThreadPoolExecutor
from recovault.storage import open_storage
s = open_storage(sys.argv[1], create=True)
data = os.urandom({size})
names = [f"data/{{i:02x}}/raw{{i}}" for i in range({objects})]
for n in names:
    s.put(n, data)
t0 = time.perf_counter()
with ThreadPoolExecutor({connections}) as pool:
    got = sum(len(b) for b in pool.map(s.get, names))
print(got / (time.perf_counter() - t0))
"""
    p = subprocess.run([sys.executable, "-c", code, url], env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"raw gets from {url} failed: {p.stderr[-2000:]}")
    return float(p.stdout.strip())


def uploaded(metrics: Path) -> int:
    ops = json.loads(metrics.read_text())
    return sum(ops.get(k, {}).get("bytes", 0) for k in ("put", "put_if_absent", "put_stream"))


def run_transfer(name: str, url: str, env: dict, src: Path) -> dict:
    """Upload speed-up from 1 to 8 connections, and the resume fraction, against one store."""
    env = dict(env, RECOVAULT_PASSPHRASE=PASS)
    out: dict = {}
    for n in (1, 8):
        u = f"{url}-c{n}"
        e = dict(env, XDG_CACHE_HOME=str(WORK / f"cache-{name}-c{n}"))
        shutil.rmtree(e["XDG_CACHE_HOME"], ignore_errors=True)
        timed(RECOVAULT + ["init", "--vault", u], e)
        out[f"backup_{n}_connections_s"] = timed(RECOVAULT + ["backup", "--vault", u, "--connections", str(n),
                                                             str(src)], e)
    out["speedup_1_to_8"] = out["backup_1_connections_s"] / out["backup_8_connections_s"]
    full = WORK / f"metrics-{name}-full.json"
    e = dict(env, XDG_CACHE_HOME=str(WORK / f"cache-{name}-full"), RECOVAULT_STORAGE_METRICS=str(full))
    shutil.rmtree(e["XDG_CACHE_HOME"], ignore_errors=True)
    timed(RECOVAULT + ["init", "--vault", f"{url}-full"], e)
    full_s = timed(RECOVAULT + ["backup", "--vault", f"{url}-full", str(src)], e)
    total = uploaded(full)
    u = f"{url}-resume"
    e = dict(env, XDG_CACHE_HOME=str(WORK / f"cache-{name}-resume"))
    shutil.rmtree(e["XDG_CACHE_HOME"], ignore_errors=True)
    timed(RECOVAULT + ["init", "--vault", u], e)
    first = WORK / f"metrics-{name}-first.json"
    first.unlink(missing_ok=True)
    proc = subprocess.Popen(RECOVAULT + ["backup", "--vault", u, str(src)],
                            env=dict(e, RECOVAULT_STORAGE_METRICS=str(first)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(full_s / 2)  # SIGINT half way through (by a full backup's time)
    proc.send_signal(signal.SIGINT)
    proc.communicate()
    out["interrupted_exit"] = proc.returncode
    out["interrupted_upload_bytes"] = uploaded(first) if first.exists() else None
    second = WORK / f"metrics-{name}-second.json"
    timed(RECOVAULT + ["backup", "--vault", u, str(src)], dict(e, RECOVAULT_STORAGE_METRICS=str(second)))
    out["full_upload_bytes"] = total
    out["resumed_upload_bytes"] = uploaded(second)
    out["resume_fraction"] = out["resumed_upload_bytes"] / total
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", default="tree,big")
    ap.add_argument("--transfer", action="store_true", help="also measure 1->8 connections and resume")
    ap.add_argument("--json")
    a = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    corpora = {"tree": lambda: make_tree(WORK, ("/usr/include",)), "big": lambda: make_big(WORK)}
    results = {}
    with ExitStack() as stack:
        _area, on_tmpfs = stack.enter_context(restore_area())
        results["restore_target"] = "tmpfs" if on_tmpfs else "disk"
        az = stack.enter_context(run_azurite(WORK / "azurite", free_port()))
        (WORK / "moto").mkdir(exist_ok=True)
        s3 = stack.enter_context(run_moto(WORK / "moto", free_port()))
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AWS_"))}
        for corpus in filter(None, a.corpora.split(",")):
            src = corpora[corpus]()
            local = WORK / f"vault-{corpus}"
            shutil.rmtree(local, ignore_errors=True)
            stores = {"local": (str(local), base),
                      "azurite": (f"azure://{unique_name()}/v", dict(base, **az.env)),
                      "moto": (f"s3://{unique_name()}/v", dict(base, **s3.env))}
            res = {name: run_store(name, url, env, src) for name, (url, env) in stores.items()}
            size = sum(f.stat().st_size for f in src.rglob("*") if f.is_file())
            for name, r in res.items():
                r["backup_MBps"] = size / r["backup_s"] / 1e6
                r["restore_MBps"] = size / r["restore_s"] / 1e6
                r["backup_ratio_to_local"] = res["local"]["backup_s"] / r["backup_s"]
                r["restore_ratio_to_local"] = res["local"]["restore_s"] / r["restore_s"]
            res["bytes"] = size
            res["local_vault_bytes"] = du(local)
            if corpus == "big":  # what the servers can serve at all: the ceiling of a restore's ratio
                for name, (url, env) in stores.items():
                    if name != "local":
                        rate = raw_get_rate(f"{url}-raw", env)
                        res[name]["raw_get_MBps"] = rate / 1e6
                        res[name]["ceiling_ratio"] = rate / (size / res["local"]["restore_s"])
            results[corpus] = res
            print(json.dumps({corpus: res}, indent=1), flush=True)
        if a.transfer:
            src = make_big(WORK)
            results["transfer"] = {name: run_transfer(name, url, env, src)
                                   for name, (url, env) in (("azurite", (f"azure://{unique_name()}/t", dict(base, **az.env))),
                                                            ("moto", (f"s3://{unique_name()}/t", dict(base, **s3.env))))}
            print(json.dumps({"transfer": results["transfer"]}, indent=1), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
