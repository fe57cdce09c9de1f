"""Backups with a host key against the admin key (issue 14), and dedup across hosts.

    TMPDIR=/dev/shm .venv/bin/python bench/hostkey.py [MIB] [ROUNDS]

(on a tmpfs: on a disk the write-back swings each round by more than the difference measured)

A local format 3 vault (a fast KDF, so the key derivation does not hide the rest) and a source of MIB MiB
(default 256) of random files. Measured alternately, ROUNDS times each (default 3), each a full backup of the
same data into a fresh vault (so both store every byte), the median printed:
- the admin key (`api.open_vault`) against a host key (`api.open_vault(..., key_file=...)`): their throughput
  (source bytes a second) and the ratio host / admin (issue 14's target: at least 0.95);
- then, in the last vault, a second host backing up the same files from another directory: the bytes it
  adds (data and trees, the vault's size before and after), which dedup across hosts keeps near zero;
- then `key rotate --rewrite --margin 0` of that vault (every pack, point and journal entry re-sealed, the old
  keys retired): its rate in stored pack bytes a second, and as a ratio to the admin's backup rate;
- last, the same rewrite of a vault holding RECORDS (default 500) small recovery points: points and journal
  entries re-sealed a second (each one get and one put).

    TMPDIR=/dev/shm .venv/bin/python bench/hostkey.py [MIB] [ROUNDS] [RECORDS]
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time

from recovault import api
from recovault.vault.keys import KdfParams

PASSPHRASE = "correct horse battery staple"
KDF = KdfParams(memory_kib=8, iterations=1, lanes=1)


def _source(root: str, mib: int) -> int:
    os.makedirs(root)
    for i in range(mib // 4):
        with open(os.path.join(root, f"f{i}"), "wb") as f:
            f.write(os.urandom(4 << 20))
    return (mib // 4) * (4 << 20)


def _size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, n)) for d, _s, names in os.walk(path) for n in names)


def _vault(tmp: str, n: int) -> str:
    vault = os.path.join(tmp, f"vault{n}")
    with api.init_vault(vault, PASSPHRASE, kdf=KDF, cache_dir=os.path.join(tmp, "admin-cache")) as v:
        for host in ("web1", "web2"):
            api.add_host_key(v, host, PASSPHRASE, os.path.join(vault + f"-{host}.key"), kdf=KDF)
    return vault


def _backup(vault: str, src: str, cache: str, key_file: str = "") -> float:
    t0 = time.monotonic()
    with api.open_vault(vault, PASSPHRASE, cache_dir=cache, key_file=key_file or None) as v:
        api.backup(v, [src], host=os.path.basename(key_file) or "admin")
    return time.monotonic() - t0


def _rewrite(vault: str, cache: str, admin_rate: float) -> None:
    t0 = time.monotonic()
    with api.open_vault(vault, PASSPHRASE, cache_dir=cache) as v:
        res = api.rotate_key(v, rewrite=True, margin=0)
    took = time.monotonic() - t0
    assert res.done, res.unfinished
    rate = res.bytes_resealed / took
    print(f"key rotate --rewrite: {res.bytes_resealed / 2**20:.1f} MiB in {res.packs_rewritten} packs, "
          f"{res.points_resealed} points and {res.entries_resealed} journal entries re-sealed, "
          f"{res.generations_retired} generation(s) retired in {took:.2f} s: {rate / 2**20:.1f} MiB/s, "
          f"{rate / admin_rate:.2f} x the admin's backup rate")


def _records(tmp: str, n: int) -> None:
    vault, cache = os.path.join(tmp, "records"), os.path.join(tmp, "cache-records")
    src = os.path.join(tmp, "small")
    os.makedirs(src)
    with api.init_vault(vault, PASSPHRASE, kdf=KDF, cache_dir=cache) as v:
        api.add_host_key(v, "web1", PASSPHRASE, vault + "-web1.key", kdf=KDF)
        for i in range(n):
            with open(os.path.join(src, "f"), "wb") as f:
                f.write(os.urandom(1000))
            api.backup(v, [src])
    t0 = time.monotonic()
    with api.open_vault(vault, PASSPHRASE, cache_dir=cache) as v:
        res = api.rotate_key(v, rewrite=True, margin=0)
    took = time.monotonic() - t0
    records = res.points_resealed + res.entries_resealed
    print(f"key rotate --rewrite of {n} small points: {res.points_resealed} points and {res.entries_resealed} "
          f"journal entries re-sealed ({res.packs_rewritten} packs) in {took:.2f} s: {records / took:.0f} "
          "records/s, all steps included")


def main(mib: int = 256, rounds: int = 3, records: int = 500) -> None:
    tmp = tempfile.mkdtemp(prefix="recovault-hostkey-bench-")
    try:
        src = os.path.join(tmp, "src")
        total = _source(src, mib)
        rates = {"admin": [], "host": []}
        kept = ""  # the last host's vault: the second host backs up into it
        for r in range(rounds):
            for who in ("admin", "host") if r % 2 == 0 else ("host", "admin"):
                vault = _vault(tmp, len(rates["admin"]) + len(rates["host"]))
                key = vault + "-web1.key" if who == "host" else ""
                rates[who].append(total / _backup(vault, src, os.path.join(tmp, f"cache-{who}-{r}"), key))
                if who == "host" and r == rounds - 1:
                    kept = vault
                else:
                    shutil.rmtree(vault)
        admin, host = statistics.median(rates["admin"]), statistics.median(rates["host"])
        print(f"source {total / 2**20:.0f} MiB, {rounds} round(s), median full backup into a fresh vault:")
        print(f"  admin key {admin / 2**20:7.1f} MiB/s")
        print(f"  host key  {host / 2**20:7.1f} MiB/s   ratio host/admin {host / admin:.3f}")
        other = os.path.join(tmp, "other-host")
        shutil.copytree(src, other)
        before = _size(kept)
        _backup(kept, other, os.path.join(tmp, "cache-web2"), kept + "-web2.key")
        print(f"second host backing up the same {total / 2**20:.0f} MiB: {_size(kept) - before} bytes added "
              f"(vault {before / 2**20:.1f} MiB before)")
        _rewrite(kept, os.path.join(tmp, "cache-admin-rewrite"), admin)
        _records(tmp, records)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
