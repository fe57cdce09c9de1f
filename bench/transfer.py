"""Transfer figures on the in-memory test double of an object store (tests/memstore.py), in one run:

- resume: bytes uploaded by the backup after an interrupted one, as a fraction of a full upload (Ctrl-C
  half way; a pack upload failing once half way; the store down for good half way);
- upload: backup time with 1 and 8 connections to a store with a fixed latency per request;
- restore: restore time from the double (latency per request) beside the local vault, same data.

The double has no bandwidth limit, only a latency per request: the figures show what the request pattern
costs (round trips, parallelism), not a link's throughput. Run: .venv/bin/python bench/transfer.py [MiB]
"""
from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from memstore import MemoryStorage  # noqa: E402
from recovault.errors import Interrupted, StorageError  # noqa: E402
from recovault.jobs.backup import BackupJob, BackupOptions  # noqa: E402
from recovault.restore import RestoreJob  # noqa: E402
from recovault.storage import LocalStorage  # noqa: E402
from recovault.vault import format as fmt  # noqa: E402
from recovault.vault.keys import KdfParams  # noqa: E402
from recovault.vault.repo import Settings, Vault  # noqa: E402

PASS = "correct horse battery staple"
KDF = KdfParams(memory_kib=8, iterations=1, lanes=1)
SETTINGS = Settings(pack_size=1 << 20)  # default chunker (512 KiB-8 MiB); 1 MiB packs: many packs for a small tree


def make_source(root: Path, mib: int) -> Path:
    rnd = random.Random(5)
    src = root / "src"
    for i in range(mib):
        d = src / f"d{i // 16}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:03}").write_bytes(rnd.randbytes(1 << 20))
    return src


def new_vault(root: Path, store, name: str) -> Vault:
    cache = str(root / f"cache-{name}")
    Vault.create(store, PASS, settings=SETTINGS, kdf=KDF, cache_dir=cache).close()
    return cache


def run_backup(store, cache, src, progress=None, connections=0):
    with Vault.open(store, PASS, cache_dir=cache, connections=connections) as v:
        return BackupJob(v, BackupOptions(paths=[str(src)]), progress).run()


def put_bytes(store: MemoryStorage) -> int:
    return store.bytes["put"]


def resume(root: Path, src: Path, files: int) -> None:
    full = MemoryStorage("full")
    cache = new_vault(root, full, "full")
    full.reset_counts()
    run_backup(full, cache, src)
    total = put_bytes(full)
    print(f"full upload: {total / 2**20:.1f} MiB")

    def ctrl_c(kind, info, seen=[0]):
        if kind == "file":
            seen[0] += 1
            if seen[0] == files // 2:
                raise KeyboardInterrupt

    half_packs = total // SETTINGS.pack_size // 2
    cases = {
        "Ctrl-C half way": (None, ctrl_c),
        "one pack upload fails half way": (lambda: FailOnce(half_packs), None),
        "store down for good half way": (lambda: DownAfter(half_packs), None),
    }
    for label, (rule, progress) in cases.items():
        store = MemoryStorage(label)
        cache = new_vault(root, store, label.replace(" ", "-"))
        store.fail_when = rule() if rule else None
        try:
            run_backup(store, cache, src, progress)
        except (Interrupted, StorageError) as e:
            saved = "partial point saved" if hasattr(e, "point") else "no point saved"
        first = put_bytes(store)
        store.fail_when = None
        store.reset_counts()
        run_backup(store, cache, src)
        print(f"resume, {label}: first run stored {first / 2**20:.1f} MiB ({saved}); the next run uploaded "
              f"{put_bytes(store) / 2**20:.1f} MiB = {put_bytes(store) / total:.2f} of a full upload")


class FailOnce:
    def __init__(self, after: int) -> None:
        self.after, self.n = after, 0

    def __call__(self, op, name, size):
        if op == "put" and name.startswith(fmt.DATA) and size > 64 << 10:
            self.n += 1
            return self.n == self.after + 1
        return False


class DownAfter(FailOnce):
    def __call__(self, op, name, size):
        if op == "put":
            self.n += name.startswith(fmt.DATA)
            return self.n > self.after
        return False


def upload(root: Path, src: Path, latency: float) -> None:
    times = {}
    for n in (1, 8):
        store = MemoryStorage(f"up{n}", latency=latency)
        cache = new_vault(root, store, f"up{n}")
        t0 = time.perf_counter()
        run_backup(store, cache, src, connections=n)
        times[n] = time.perf_counter() - t0
    print(f"upload, {latency * 1000:.0f} ms a request: 1 connection {times[1]:.2f} s, 8 connections "
          f"{times[8]:.2f} s: x{times[1] / times[8]:.1f}")


def restore(root: Path, src: Path, latency: float) -> None:
    local_dir = root / "local-vault"
    local = LocalStorage(str(local_dir), create=True)
    mem = MemoryStorage("restore")
    times = {}
    for name, store in (("local", local), ("double", mem)):
        cache = new_vault(root, store, f"r-{name}")
        point = run_backup(store, cache, src)
        mem.latency = latency
        target = root / f"out-{name}"
        with Vault.open(store, PASS, cache_dir=cache) as v:
            t0 = time.perf_counter()
            RestoreJob(v, point, str(target)).run()
            times[name] = time.perf_counter() - t0
        shutil.rmtree(target)
    print(f"restore, {latency * 1000:.0f} ms a request: local {times['local']:.2f} s, double {times['double']:.2f} s "
          f"(speed {times['local'] / times['double']:.2f} of the local vault's)")


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    root = Path(tempfile.mkdtemp(prefix="rv-transfer-"))
    try:
        src = make_source(root, mib)
        resume(root, src, mib)
        upload(root, src, 0.02)
        restore(root, src, 0.005)
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
