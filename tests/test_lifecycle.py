"""Soft delete, undelete, expiry and the stored policy (vault/lifecycle.py, journal.py's time rules): the pure
time rules first, then real vaults through the API with an injected `now` (no sleeping)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List

import pytest

from recovault import api, timefmt
from recovault.errors import NotFound, UsageError
from recovault.retention import Policy
from recovault.vault.check import Checker
from recovault.vault.journal import (DAWN, JournalEntry, PeriodChange, VaultPolicy, effective_times, expiry,
                                     longer_period_until, period_changes, soft_delete_days_at)
from recovault.vault.lifecycle import Expired

from test_cli import PASSPHRASE
from test_journal import FAST, SMALL

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def entry(name: str, op: str, time: datetime, prev=(), days=None) -> JournalEntry:
    return JournalEntry(op, "" if op == "policy" else "a" * 64, timefmt.format_time(time), "h", tuple(prev),
                        name, VaultPolicy(None, days) if op == "policy" else None)


def names(*entries: JournalEntry):
    return {e.name: e for e in entries}


# ---- the pure rules ----------------------------------------------------------------------------------

def test_effective_time_cannot_go_before_what_an_entry_follows() -> None:
    a = entry("a", "add", T0)
    b = entry("b", "remove", T0 - 30 * DAY, prev=["a"])  # backdated
    c = entry("c", "add", T0 + DAY, prev=["b"])
    eff = effective_times(names(a, b, c))
    assert eff == {"a": T0, "b": T0, "c": T0 + DAY}


def test_default_period_is_14_days_and_lengthening_is_at_once() -> None:
    assert soft_delete_days_at(period_changes([]), T0) == 14
    p = entry("p", "policy", T0, prev=["x"], days=30)
    changes = period_changes([(p, T0)])
    assert soft_delete_days_at(changes, T0 - DAY) == 14
    assert soft_delete_days_at(changes, T0) == 30


def test_shortening_waits_for_the_old_period() -> None:
    p = entry("p", "policy", T0, prev=["x"], days=0)
    changes = period_changes([(p, T0)])
    assert [soft_delete_days_at(changes, T0 + d * DAY) for d in (0, 13)] == [14, 14]
    assert soft_delete_days_at(changes, T0 + 14 * DAY) == 0
    assert longer_period_until(changes, T0 + DAY) == T0 + 14 * DAY
    assert longer_period_until(changes, T0 + 15 * DAY) is None


def test_a_chain_of_changes_keeps_each_longer_period_for_its_own_length() -> None:
    changes = [PeriodChange(DAWN, 14), PeriodChange(T0, 30), PeriodChange(T0 + DAY, 0)]
    assert soft_delete_days_at(changes, T0 + 20 * DAY) == 30  # 30 was replaced at T0+1d: in force 30 days
    assert soft_delete_days_at(changes, T0 + 31 * DAY) == 0
    # starts never go back in time: a later entry from a host whose clock is behind starts with the one before
    late = [(entry("p", "policy", T0, prev=["x"], days=30), T0), (entry("q", "policy", T0, prev=["p"], days=7),
                                                                 T0 - 5 * DAY)]
    assert [c.start for c in period_changes(late)] == [DAWN, T0, T0]


def test_the_first_entry_of_a_vault_replaces_no_default() -> None:
    """init --soft-delete-days 0 writes the journal's first entry (no prev): soft delete is off at once."""
    first = entry("p", "policy", T0, days=0)
    assert soft_delete_days_at(period_changes([(first, T0)]), T0) == 0
    # the same period set later (with prev) waits for the default's 14 days
    later = entry("p", "policy", T0, prev=["x"], days=0)
    assert soft_delete_days_at(period_changes([(later, T0)]), T0) == 14


def test_expiry_is_the_longer_of_the_period_then_and_now() -> None:
    longer = period_changes([(entry("p", "policy", T0 + 2 * DAY, prev=["x"], days=60), T0 + 2 * DAY)])
    assert expiry(T0, longer, T0 + DAY) == T0 + 14 * DAY  # removed under 14, the 60 not yet set
    assert expiry(T0, longer, T0 + 3 * DAY) == T0 + 60 * DAY  # lengthening applies to deleted points
    shorter = period_changes([(entry("p", "policy", T0, prev=["x"], days=0), T0)])
    assert expiry(T0, shorter, T0) == T0 + 14 * DAY
    assert expiry(T0 + 20 * DAY, shorter, T0 + 20 * DAY) == T0 + 20 * DAY  # off: expires at removal


# ---- real vaults ----------------------------------------------------------------------------------------

@pytest.fixture
def vault(tmp_path: Path):
    def make(soft_delete_days: int = 14, n: int = 3) -> tuple:
        path = str(tmp_path / f"vault{soft_delete_days}")
        api.init_vault(path, PASSPHRASE, settings=SMALL, kdf=FAST, cache_dir=str(tmp_path / "cache"),
                       soft_delete_days=soft_delete_days).close()
        src = tmp_path / "src"
        src.mkdir(exist_ok=True)
        v = api.open_vault(path, PASSPHRASE, cache_dir=str(tmp_path / "cache"))
        ids = []
        for i in range(n):
            (src / "f").write_bytes(b"version %d " % i * 1000)
            ids.append(api.backup(v, [str(src)], time=f"2025-01-0{i + 1} 10:00:00").id)
        return v, ids
    made: List = []
    yield lambda *a, **k: made.append(make(*a, **k)) or made[-1]
    for v, _ in made:
        v.close()


def stored(v) -> set:
    return set(v.points.ids())


def now() -> datetime:
    return datetime.now(timezone.utc)


def test_forget_soft_deletes_then_expiry_purges(vault) -> None:
    v, ids = vault()
    t = now()
    [group] = api.forget(v, ids=[ids[0][:10]])
    assert [p.id for p in group.remove] == [ids[0]]
    assert [p.id for p in v.snapshots()] == ids[1:]
    assert ids[0] in stored(v)  # the object stays
    [d] = v.deleted_snapshots()
    assert d.point.id == ids[0] and d.host
    removed = timefmt.parse_time(d.removed)
    assert t <= removed <= now() and timefmt.parse_time(d.expires) == removed + 14 * DAY
    assert [p.id for p in v.retained_snapshots()] == ids  # prune must keep its data
    assert v.purge_expired(now=removed + 14 * DAY - timedelta(seconds=1)) == []
    assert Checker(v).run()["warnings"] == []  # soft-deleted with its object: normal
    assert [p.id for p in v.retained_snapshots(now=removed + 14 * DAY)] == ids[1:]
    assert v.purge_expired(now=removed + 14 * DAY) == [ids[0]]
    assert ids[0] not in stored(v) and v.deleted_snapshots() == []
    res = Checker(v).run()
    assert res["ok"] and res["warnings"] == [], res


def test_undelete_before_expiry_not_after(vault) -> None:
    v, ids = vault()
    v.forget(ids=[ids[1]])
    point = v.undelete(ids[1][:8])
    assert point.id == ids[1] and [p.id for p in v.snapshots()] == ids
    with pytest.raises(UsageError, match="is not deleted"):
        v.undelete(ids[1][:8])
    v.forget(ids=[ids[1]])
    [d] = v.deleted_snapshots()
    late = timefmt.parse_time(d.expires) + timedelta(seconds=1)
    before = len(v.journal.entries)
    with pytest.raises(Expired, match="can no longer be undeleted"):
        v.undelete(ids[1], now=late)
    with pytest.raises(NotFound, match="no soft-deleted recovery point"):
        v.undelete("ffff" if not ids[1].startswith("ffff") else "0000")
    v.journal.refresh()
    assert len(v.journal.entries) == before  # refused: nothing written


def test_thief_cannot_shorten_and_forget_at_once(vault) -> None:
    """With the passphrase: set the period to 0 (even backdated a month), then forget everything. Nothing
    expires before the old 14 days have passed since the change."""
    v, ids = vault()
    t = now()
    v.set_policy(VaultPolicy(None, 0), now=t - 30 * DAY)  # a backdated entry does not help
    assert v.policy.soft_delete_days == 0
    api.forget(v, ids=ids, allow_empty=True)
    assert stored(v) == set(ids)  # nothing purged at once
    assert v.purge_expired(now=t + 13 * DAY) == []
    assert {p.id for p in v.retained_snapshots(now=t + 13 * DAY)} == set(ids)
    assert sorted(v.purge_expired(now=now() + 14 * DAY)) == sorted(ids)
    assert stored(v) == set()


def test_period_zero_from_init_purges_at_once(vault) -> None:
    v, ids = vault(soft_delete_days=0)
    v.forget(ids=[ids[0]])
    assert ids[0] not in stored(v) and v.deleted_snapshots() == []
    ops = sorted(e.op for e in v.journal.entries.values() if e.snapshot == ids[0])
    assert ops == ["add", "purge", "remove"]
    assert Checker(v).run()["warnings"] == []


def test_lengthening_applies_to_points_already_deleted(vault) -> None:
    v, ids = vault()
    v.forget(ids=[ids[0]])
    [d] = v.deleted_snapshots()
    v.set_policy(VaultPolicy(None, 60))
    [d2] = v.deleted_snapshots()
    assert timefmt.parse_time(d2.expires) == timefmt.parse_time(d.removed) + 60 * DAY


def test_status_counts_live_and_soft_deleted_points_as_the_listings_do(vault) -> None:
    from recovault.jobs.prune import vault_status
    v, ids = vault(n=4)
    api.forget(v, ids=[ids[0], ids[2]])
    v.purge_expired(now=now() + 15 * DAY)  # one of them expired and purged: counted by neither
    api.forget(v, ids=[ids[1]])
    st = vault_status(v)
    assert (st.points, st.soft_deleted) == (len(v.snapshots()), len(v.deleted_snapshots())) == (1, 1)


def test_check_reports_a_soft_deleted_unexpired_point_whose_object_is_gone(vault) -> None:
    v, ids = vault()
    v.forget(ids=[ids[0]])
    v.points.delete(ids[0])  # outside recovault
    res = Checker(v).run()
    assert any(f"soft-deleted recovery point {ids[0][:8]}" in p and "is missing" in p for p in res["problems"])


def test_forget_by_policy_groups_and_dry_run(vault) -> None:
    v, ids = vault(n=4)
    groups = api.forget(v, Policy(keep_last=2), dry_run=True)
    assert [[k.point.id for k in g.keep] for g in groups] == [[ids[3], ids[2]]]
    assert [[p.id for p in g.remove] for g in groups] == [[ids[1], ids[0]]]
    assert [p.id for p in v.snapshots()] == ids  # dry run: unchanged
    api.forget(v, Policy(keep_last=2))
    assert [p.id for p in v.snapshots()] == ids[2:]
    assert {d.point.id for d in v.deleted_snapshots()} == set(ids[:2])


def test_stored_policy_is_applied_and_bad_input_changes_nothing(vault) -> None:
    v, ids = vault(n=3)
    with pytest.raises(UsageError, match="no policy stored"):
        v.forget()
    with pytest.raises(UsageError, match="no rule"):
        v.set_policy(VaultPolicy(Policy(), 14))
    with pytest.raises(UsageError, match="soft-delete-days"):
        v.set_policy(VaultPolicy(None, -1))
    with pytest.raises(UsageError, match="every recovery point of host"):
        v.forget(ids=ids)  # the last live point of its host and paths
    with pytest.raises(UsageError, match="matches 3 recovery points|give more"):
        v.forget(ids=[""])
    v.journal.refresh()
    assert all(e.op == "add" for e in v.journal.entries.values())
    api.set_policy(v, Policy(keep_last=1))
    assert v.policy == VaultPolicy(Policy(keep_last=1), 14)
    v.forget()
    assert [p.id for p in v.snapshots()] == ids[2:]


def test_policy_entry_format(vault) -> None:
    """The stored bytes of a policy entry (docs/vault-format.md §11): no snapshot key, the policy object."""
    import json
    from recovault.vault import format as fmt
    v, _ = vault(n=1)
    v.set_policy(VaultPolicy(Policy(keep_daily=7, keep_within="1y"), 30))
    [e] = [e for e in v.journal.entries.values() if e.op == "policy"]
    raw = v.storage.get(fmt.JOURNAL + e.name)
    plain = v.unseal(fmt.AAD_JOURNAL, raw, "entry")
    doc = json.loads(plain)
    assert doc == {"v": 2, "op": "policy", "time": e.time, "host": e.host, "prev": list(e.prev),
                   "policy": {"retention": {"keep_daily": 7, "keep_within": "1y"}, "soft_delete_days": 30}}
    assert plain == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert len(e.prev) == 1  # it follows the backup's add
    # a policy entry that breaks the rules does not parse (check reports it as damaged)
    for bad in ({"retention": {}, "soft_delete_days": 3}, {"retention": None, "soft_delete_days": -1},
                {"retention": None}, {"retention": {"keep_daily": "7"}, "soft_delete_days": 1}):
        with pytest.raises(ValueError):
            JournalEntry.from_json("n", json.dumps(dict(doc, policy=bad)).encode())


def test_forget_stopped_between_remove_and_purge_is_finished_by_purge_expired(vault, monkeypatch) -> None:
    """Soft delete off: a kill between the remove entries and the purge leaves soft-deleted, expired points
    (intact, check clean); purge_expired finishes."""
    from recovault.vault import lifecycle
    v, ids = vault(soft_delete_days=0)
    monkeypatch.setattr(lifecycle, "_purge", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        v.forget(ids=[ids[0]])
    monkeypatch.undo()
    assert ids[0] in stored(v) and [d.point.id for d in v.deleted_snapshots()] == [ids[0]]
    res = Checker(v).run()
    assert res["ok"] and res["warnings"] == [], res
    assert v.purge_expired() == [ids[0]]
    assert ids[0] not in stored(v)


def test_version_1_removal_reads_as_deleted_for_good(vault) -> None:
    """A format-1 journal's "remove" (v 1) was written just before the object was deleted: it reads as a
    purge (the point is gone, check is clean), not as a soft-deleted point whose object is missing."""
    v, ids = vault(n=2)
    v.journal.refresh()
    v.journal._put(JournalEntry("remove", ids[0], timefmt.now(), "old", tuple(v.journal.heads()), version=1))
    v.points.delete(ids[0])
    assert v.journal.states()[ids[0]].state == "purged"
    assert [p.id for p in v.snapshots()] == ids[1:] and v.deleted_snapshots() == []
    res = Checker(v).run()
    assert res["ok"] and res["warnings"] == [], res


def test_check_reports_a_purge_that_bypassed_soft_delete(vault) -> None:
    """Entries written by a recovault that ignores soft delete (or by hand): a purge before expiry, or with
    no removal before it, is a problem."""
    v, ids = vault(n=3)
    v.forget(ids=[ids[0]])
    v.journal.append("purge", ids[0], timefmt.now())  # 14 days too early
    v.points.delete(ids[0])
    v.journal.append("purge", ids[1], timefmt.now())  # never removed
    v.points.delete(ids[1])
    problems = Checker(v).run()["problems"]
    assert any(f"recovery point {ids[0][:8]} was purged at" in p and "before its soft-delete period ended" in p
               for p in problems), problems
    assert any(f"recovery point {ids[1][:8]} was purged" in p and "without being removed first" in p
               for p in problems), problems
    assert len(problems) == 2
