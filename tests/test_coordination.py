"""Sessions, the lease and plans (vault/coordination.py): liveness, heartbeats, lapses, tie-breaks, damage."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from recovault import api
from recovault.errors import Busy, StorageError
from recovault.storage import LocalStorage, ObjectInfo
from recovault.jobs.prune import PruneOptions, run_prune
from recovault.vault import format as fmt
from recovault.vault.coordination import (PID_SPACE, SESSION_TIMEOUT, Coordinator, LeaseHolder, Plan, Session,
                                          WriterSession)
from test_backup_restore import new_vault


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def vault(tmp_path):
    with new_vault(tmp_path) as v:
        yield v


def test_session_liveness():
    now = time.time()
    fresh, stale = now - 10, now - SESSION_TIMEOUT - 1
    assert Session("a", "elsewhere", 1, "", None, fresh).live(now, "here")
    assert not Session("a", "elsewhere", os.getpid(), "", None, stale).live(now, "here")
    assert Session("a", "here", os.getpid(), "", None, stale, PID_SPACE).live(now, "here")  # its process lives here
    assert not Session("a", "here", dead_pid(), "", None, stale, PID_SPACE).live(now, "here")
    # Same host name, another pid namespace or boot (a container): its pid means nothing here.
    assert not Session("a", "here", os.getpid(), "", None, stale, "other:1").live(now, "here")
    s = Session("a", "here", 1, "", ["p1"], fresh)
    assert s.has_seen("p1") and not s.has_seen("p2") and not Session("a", "h", 1, "", None, fresh).has_seen("p1")


def test_writer_session_registers_heartbeats_and_ends(vault):
    coord = Coordinator(vault.storage, vault.sealer)
    plan = Plan("2026-01-01T00:00:00.000000Z", "h", [os.urandom(32)], os.urandom(64))
    coord.put_plan(plan)
    w = WriterSession(coord, heartbeat=0.05)
    assert [p.name for p in w.open()] == [plan.name]
    (s,) = coord.sessions()
    assert s.name == w.name and s.plans == [plan.name] and s.pid == os.getpid()
    first = vault.storage.stat(fmt.SESSIONS + w.name).mtime
    time.sleep(0.3)
    assert vault.storage.stat(fmt.SESSIONS + w.name).mtime > first  # the heartbeat re-put it
    w.block_plans()
    assert coord.sessions()[0].plans is None
    w.close()
    assert coord.sessions() == []


def test_a_lapsed_heartbeat_is_noticed_even_after_it_resumes(vault):
    coord = Coordinator(vault.storage, vault.sealer)
    w = WriterSession(coord, heartbeat=3600, lapse=0.2)
    w.open()
    assert not w.lapsed
    time.sleep(0.3)  # as if the process had been stopped
    assert w.lapsed
    w.put()  # the heartbeat resumes: the lapse stays known
    assert w.lapsed
    w.close()


def test_lease_refuses_and_breaks_ties_by_start(vault, monkeypatch):
    coord = Coordinator(vault.storage, vault.sealer)
    a = LeaseHolder(coord)
    with a:
        with pytest.raises(Busy):
            LeaseHolder(coord).acquire()
    # Two acquiring at once: both see no lease, both put theirs; the later (started, name) backs off.
    early, late = LeaseHolder(coord), LeaseHolder(coord)
    early.started = "2026-01-01T00:00:00.000000Z"
    orig = coord.put_lease

    def racing_put(name, started, op="prune", **kw):
        orig(name, started, op, **kw)
        if name == late.name:
            orig(early.name, early.started)  # the other one's put lands between our put and our listing
    monkeypatch.setattr(coord, "put_lease", racing_put)
    with pytest.raises(Busy):
        late.acquire()
    assert [lease.name for lease in coord.leases()] == [early.name]  # ours was withdrawn


def test_storage_clock_skew_is_measured_from_the_lease(vault):
    """Ages read off mtimes use the storage's clock: with a storage whose clock runs an hour behind this
    host's, a session that just beat must not look an hour old."""
    class Behind(LocalStorage):
        def stat(self, name):
            info = super().stat(name)
            return ObjectInfo(info.name, info.size, info.mtime - 3600)

        def list_info(self, prefix=""):
            return (ObjectInfo(i.name, i.size, i.mtime - 3600) for i in super().list_info(prefix))
    storage = Behind(vault.storage.root)
    coord = Coordinator(storage, vault.sealer)
    WriterSession(Coordinator(storage, vault.sealer, host="elsewhere")).put()
    (s,) = coord.sessions()
    assert not s.live(coord.storage_now(), coord.host)  # unmeasured: an hour old, taken for dead
    with LeaseHolder(coord):
        assert abs(coord.storage_now() - (time.time() - 3600)) < 60
    assert s.live(coord.storage_now(), coord.host)


def test_expired_or_dead_leases_are_not_held_and_are_cleared(vault):
    coord = Coordinator(vault.storage, vault.sealer)
    elsewhere = Coordinator(vault.storage, vault.sealer, host="other-host", clock=lambda: time.time() - 3600)
    elsewhere.put_lease("a" * 32, "2026-01-01T00:00:00.000000Z")  # expired 50 minutes ago
    vault.storage.put(fmt.LOCKS + "b" * 32, vault.sealer.seal(fmt.AAD_LEASE, json.dumps(
        {"v": 1, "op": "prune", "host": coord.host, "pid": dead_pid(), "pid_space": PID_SPACE,
         "started": "2026-01-01T00:00:00.000000Z", "expires": "2999-01-01T00:00:00.000000Z"}).encode()))
    assert coord.held_leases() == []  # one expired elsewhere, one of a dead process here
    run_prune(vault, PruneOptions(margin=0))
    assert list(vault.storage.list(fmt.LOCKS)) == []


def test_a_damaged_plan_deletes_nothing_and_prune_removes_it(tmp_path, vault):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(50_000))
    api.backup(vault, [str(src)])
    vault.storage.put(fmt.PLANS + "0" * 64, b"not a plan")
    coord = Coordinator(vault.storage, vault.sealer)
    assert coord.plans() == [] and coord.damaged_plans[0][0] == "0" * 64
    api.backup(vault, [str(src)])  # writers go on
    events = []
    run_prune(vault, PruneOptions(), progress=lambda kind, info: events.append((kind, info)))
    assert any(k == "problem" and "plan" in i["message"] for k, i in events)
    assert list(vault.storage.list(fmt.PLANS)) == []


def test_plan_round_trip():
    plan = Plan("2026-01-01T00:00:00.000000Z", "h", [b"\x01" * 32, b"\x02" * 32], b"\x03" * 32 * 3, ["ab"], "n", 5.0)
    back = Plan.decode(plan.encode(), "n", 5.0)
    assert back == plan and back.garbage_ids() == [b"\x03" * 32] * 3


def test_a_prune_that_may_have_lost_its_lease_deletes_nothing_more(vault, monkeypatch):
    """A prune stopped (or unable to renew) for about a lease term stops before its next deleting step, even
    if a renewal succeeded after it resumed."""
    from recovault.vault import coordination
    lease = LeaseHolder(Coordinator(vault.storage, vault.sealer))
    lease.acquire()
    lease.ensure()
    clock = [coordination._elapsed()]
    monkeypatch.setattr(coordination, "_elapsed", lambda: clock[0])
    clock[0] += coordination.LEASE_TERM  # stopped for a lease term
    lease._put()  # its renewal thread runs first on resuming
    with pytest.raises(StorageError, match="lease could not be renewed"):
        lease.ensure()
    lease.release()
