"""Retention on 10,000 recovery points (Azure Backup allows 9999 per protected item): the time of
apply_policy (recovault.retention) for a typical policy, and of group_points, on points made every ~50
minutes over about a year. The later `forget` adds the vault's reads and writes to this."""
import random
from datetime import datetime, timezone

import pytest

from recovault import timefmt
from recovault.retention import Policy, apply_policy, group_points
from recovault.vault.records import RecoveryPoint

N = 10_000


@pytest.fixture(scope="module")
def points():
    rng = random.Random(1)
    t, out = 1_700_000_000.0, []
    for i in range(N):
        t += rng.uniform(600, 5400)
        out.append(RecoveryPoint(time=timefmt.format_time(datetime.fromtimestamp(t, timezone.utc)),
                                 host="h", paths=["/data"], tree="", id=f"{i:064x}"))
    return out


@pytest.mark.parametrize("spec", [
    {"keep_daily": 7, "keep_weekly": 5, "keep_monthly": 12, "keep_yearly": 10},
    {"keep_within": "30d", "keep_within_daily": "1y", "keep_hourly": 48, "keep_last": -1}])
def test_apply_policy_10000(benchmark, points, spec):
    benchmark.group = f"retention {N} points"
    out = benchmark(apply_policy, points, Policy.from_json(spec))
    assert len(out.keep) + len(out.remove) == N


def test_group_points_10000(benchmark, points):
    benchmark.group = f"retention {N} points"
    groups = benchmark(group_points, points)
    assert len(groups) == 1
