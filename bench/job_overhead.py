"""What `recovault job run` costs over the bare `backup` + `forget` + `prune` it wraps (issue 12).

    .venv/bin/python bench/job_overhead.py [ROUNDS]

A local vault (a fast KDF, so the key derivation does not hide the rest), a tree of 400 files (4 MB), one
file changed before each run. Measured alternately, ROUNDS times each (default 5), the median printed:
- CLI: three processes `recovault backup`, `forget --keep-last 3 --host --path --tag`, `prune` against one
  `recovault job run FILE` (the same work: the job's retention is keep_last 3 with prune);
- in process: `api.backup` + `Vault.forget` + `run_prune` against `Job.from_file(FILE).run()` (what the job
  machinery itself adds: parsing the file, the lock, the history's record, the steps).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from recovault import api
from recovault.jobfile.runner import Job
from recovault.jobs.prune import PruneOptions, run_prune
from recovault.selection import PointFilter
from recovault.retention import Policy
from recovault.vault.keys import KdfParams

PASSPHRASE = "correct horse battery staple"


def main(rounds: int) -> None:
    tmp = tempfile.mkdtemp(prefix="recovault-job-bench-")
    src, vault = os.path.join(tmp, "src"), os.path.join(tmp, "vault")
    for i in range(400):
        os.makedirs(os.path.join(src, f"d{i // 40}"), exist_ok=True)
        with open(os.path.join(src, f"d{i // 40}", f"f{i}"), "wb") as f:
            f.write(os.urandom(10_000))
    api.init_vault(vault, PASSPHRASE, kdf=KdfParams(memory_kib=8, iterations=1, lanes=1),
                   cache_dir=os.path.join(tmp, "cache")).close()
    job = os.path.join(tmp, "bench.toml")
    with open(job, "w") as f:
        f.write(f'[vault]\nurl = "{vault}"\npassphrase_env = "RECOVAULT_PASSPHRASE"\n[backup]\npaths = ["{src}"]\n'
                f'host = "bench"\ntags = ["bench"]\n[retention]\nkeep_last = 3\nprune = true\n')
    env = {**os.environ, "RECOVAULT_PASSPHRASE": PASSPHRASE, "RECOVAULT_STATE_DIR": os.path.join(tmp, "state"),
           "XDG_CACHE_HOME": os.path.join(tmp, "xdg"), "RECOVAULT_VAULT": vault}
    os.environ.update({k: env[k] for k in ("RECOVAULT_STATE_DIR", "XDG_CACHE_HOME")})
    rv = [os.path.join(os.path.dirname(sys.executable), "recovault")]
    bare = [rv + ["backup", src, "--host", "bench", "--tag", "bench", "-q"],
            rv + ["forget", "--keep-last", "3", "--host", "bench", "--path", src, "--tag", "bench", "-q"],
            rv + ["prune", "-q"]]
    times = {"cli bare": [], "cli job run": [], "api bare": [], "api Job.run": []}
    n = 0

    def change() -> None:
        nonlocal n
        n += 1
        with open(os.path.join(src, "d0", "f0"), "wb") as f:
            f.write(os.urandom(10_000) + str(n).encode())

    def timed(name: str, fn) -> None:
        change()
        t0 = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - t0)

    def api_bare() -> None:
        with api.open_vault(vault, PASSPHRASE, cache_dir=os.path.join(tmp, "xdg", "recovault"), write=True) as v:
            api.backup(v, [src], host="bench", tags=["bench"])
            v.forget(Policy(keep_last=3), where=PointFilter(("bench",), (src,), ("bench",)))
            run_prune(v, PruneOptions())

    for _ in range(rounds):
        timed("cli bare", lambda: [subprocess.run(argv, env=env, check=True) for argv in bare])
        timed("cli job run", lambda: subprocess.run(rv + ["job", "run", job, "-q"], env=env, check=True))
        os.environ["RECOVAULT_PASSPHRASE"] = PASSPHRASE
        timed("api bare", api_bare)
        timed("api Job.run", lambda: Job.from_file(job).run())
    for name, ts in times.items():
        print(f"{name:12} median {statistics.median(ts):.3f}s  (min {min(ts):.3f}, max {max(ts):.3f}, n={len(ts)})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
