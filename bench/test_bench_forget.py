"""forget on 10,000 recovery points (Azure Backup allows 9999 per protected item), through a real local vault:
listing and reading the points, the journal's states, the policy, and writing one remove entry per forgotten
point (soft delete: no object is deleted). RECOVAULT_BENCH_POINTS sets another count (the run is one round:
the vault changes)."""
import os
import random
from datetime import datetime, timezone

import pytest

from recovault import api, timefmt
from recovault.retention import Policy
from recovault.vault.keys import KdfParams
from recovault.vault.records import RecoveryPoint

N = int(os.environ.get("RECOVAULT_BENCH_POINTS", "10000"))


@pytest.fixture
def vault(tmp_path):
    v = api.init_vault(str(tmp_path / "vault"), "bench passphrase, long enough",
                       kdf=KdfParams(memory_kib=8, iterations=1, lanes=1), cache_dir=str(tmp_path / "cache"))
    rng = random.Random(1)
    t, ops = 1_700_000_000.0, []
    for _ in range(N):  # points every 10-90 minutes over about a year; forget never reads their trees
        t += rng.uniform(600, 5400)
        p = RecoveryPoint(time=timefmt.format_time(datetime.fromtimestamp(t, timezone.utc)), host="h",
                          paths=["/data"], tree="00" * 32)
        ops.append(("add", v.points.save(p), p.time))
    v.journal.append_many(ops, host="h")
    yield v
    v.close()


def test_forget_10000(benchmark, vault):
    benchmark.group = f"forget {N} points"
    policy = Policy(keep_daily=7, keep_weekly=5, keep_monthly=12, keep_yearly=10)
    groups = benchmark.pedantic(vault.forget, args=(policy,), rounds=1, iterations=1)
    removed = sum(len(g.remove) for g in groups)
    assert removed > N // 2 and len(vault.snapshots()) == N - removed
