"""prune in-process: reclaiming, repacking byte for byte, --dry-run, the two-phase protocol with a backup that
started before the plan, revalidation after a lapsed heartbeat, the lease, index compaction, readers."""
from __future__ import annotations

import os
import time

import pytest

from recovault import api, core
from recovault.errors import Busy, StorageError, UsageError
from recovault.jobs.backup import BackupJob, BackupOptions
from recovault.jobs.prune import MaxUnused, PruneOptions, parse_margin, run_prune, vault_status
from recovault.vault import format as fmt
from recovault.vault.check import Checker
from recovault.vault.coordination import Coordinator, LeaseHolder, WriterSession
from recovault.vault.journal import VaultPolicy
from test_backup_restore import new_vault as _new_vault, open_vault


def new_vault(tmp_path):
    """A vault whose forgotten points are purged at once (soft delete off), so prune may reclaim them."""
    v = _new_vault(tmp_path)
    v.set_policy(VaultPolicy(None, 0))
    return v


LATER = 3 * 3600  # past the default margin


def files(root, spec):
    """Write {name: bytes} under root (made fresh) and return the mapping."""
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        old.unlink()
    for name, data in spec.items():
        (root / name).write_bytes(data)
    return dict(spec)


def restored(v, point, target):
    api.restore(v, point.id, str(target))
    inner = target / str(point.paths[0]).lstrip("/")
    return {p.name: p.read_bytes() for p in inner.iterdir()}


def objects(vault_dir):
    out = {}
    for dirpath, _, names in os.walk(vault_dir):
        for n in names:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, vault_dir)] = open(p, "rb").read()
    return out


def check_ok(v):
    res = Checker(v).run(read_data=True)
    assert res["ok"], res["problems"]
    return res


def test_parse_margin_and_max_unused():
    assert parse_margin("0") == 0 and parse_margin("30s") == 30 and parse_margin("1h30m") == 5400
    assert parse_margin("1d") == 86400 and parse_margin("15m") == 900
    # the job file's grammar (systemd's time spans), so `prune_margin` and --margin read alike
    assert parse_margin("1.5h") == 5400 and parse_margin("2h 3") == 7203 and parse_margin("1h 30min") == 5400
    assert parse_margin("2H") == 7200 and parse_margin("0s") == 0  # as before: lower-cased, zero allowed
    for bad in ("", "2x", "h", "-1h", "2 parsecs"):
        with pytest.raises(UsageError):
            parse_margin(bad)
    assert MaxUnused.parse("5%").allowed(950) == pytest.approx(50)  # restic: 5% of the size after prune
    assert MaxUnused.parse("10M").allowed(1) == 10 << 20 and MaxUnused.parse("unlimited").allowed(5) == float("inf")
    for bad in ("100%", "x", "5%%", "-3"):
        with pytest.raises(UsageError):
            MaxUnused.parse(bad)


def _three_points(tmp_path, v):
    src = tmp_path / "src"
    a = files(src, {"keep": os.urandom(300_000), "gone": os.urandom(600_000)})
    p1 = api.backup(v, [str(src)])
    b = files(src, {"keep": a["keep"], "new": os.urandom(200_000)})
    p2 = api.backup(v, [str(src)])
    return src, (p1, a), (p2, b)


def test_margin_0_reclaims_everything_and_every_point_restores(tmp_path):
    v = new_vault(tmp_path)
    src, (p1, a), (p2, b) = _three_points(tmp_path, v)
    gone_chunks = [bytes.fromhex(c) for c in v.find_node(p1, str(src / "gone")).content]
    v.delete_snapshot(p1.id)
    before = sum(len(x) for k, x in objects(tmp_path / "vault").items() if k.startswith("data"))
    res = run_prune(v, PruneOptions(margin=0))
    assert res.new_plan and [p.done for p in res.plans] == [True] and res.plans[0].packs_deleted >= 1
    v.close()
    after = sum(len(x) for k, x in objects(tmp_path / "vault").items() if k.startswith("data"))
    assert after < before - 550_000  # "gone" (600 KB of random data) is reclaimed
    assert not os.listdir(tmp_path / "vault" / "plans") and not os.listdir(tmp_path / "vault" / "locks")
    v = open_vault(tmp_path / "vault", tmp_path / "cache2")  # a cold cache: what storage says
    assert not any(c in v.locations for c in gone_chunks)
    assert restored(v, v.find_snapshot(p2.id), tmp_path / "r") == b
    check_ok(v)
    again = run_prune(v, PruneOptions(margin=0))
    assert again.new_plan is None and again.plans == []


def _sealed_bytes(v, ids):
    out = {}
    for i in ids:
        loc = v.locate(i)
        out[i] = (loc.pack, v.blobs.get(v.pack_name(loc.pack), loc.offset, loc.length))
    return out


@pytest.mark.parametrize("recompress", [False, True])
def test_repack_copies_live_blobs_byte_for_byte(tmp_path, recompress):
    v = new_vault(tmp_path)
    src = tmp_path / "src"
    data = {f"f{i}": os.urandom(40_000) for i in range(12)}  # many small blobs share a pack
    files(src, data)
    api.backup(v, [str(src)])
    half = {k: x for k, x in data.items() if int(k[1:]) % 2}
    files(src, half)
    p2 = api.backup(v, [str(src)])
    v.delete_snapshot(v.snapshots()[0].id)
    live = [bytes.fromhex(v.find_node(p2, str(src / k)).content[0]) for k in half]
    before = _sealed_bytes(v, live)
    res = run_prune(v, PruneOptions(margin=0, max_unused="0%", recompress=recompress))
    assert len(res.decision.repack) >= 1 and len(res.decision.copy) >= len(live)
    after = _sealed_bytes(v, live)
    assert all(after[i][0] != before[i][0] for i in live)  # moved to new packs
    if recompress:  # opened and sealed again: other bytes, same content
        assert all(after[i][1] != before[i][1] for i in live)
    else:
        assert after == {i: (after[i][0], before[i][1]) for i in live}
    assert restored(v, p2, tmp_path / "r") == half
    check_ok(v)


def test_dry_run_changes_nothing(tmp_path):
    v = new_vault(tmp_path)
    _three_points(tmp_path, v)
    v.delete_snapshot(v.snapshots()[0].id)
    v.close()
    v = open_vault(tmp_path / "vault", tmp_path / "cache")
    before = objects(tmp_path / "vault")
    res = run_prune(v, PruneOptions(dry_run=True, margin=0))
    assert len(res.decision.delete) + len(res.decision.repack) >= 1 and res.decision.bytes_freed > 500_000
    assert res.new_plan is None and objects(tmp_path / "vault") == before


class _Hooked(BackupJob):
    """A backup that runs `hook()` once, after its session is open and before it reads any file."""

    def __init__(self, v, paths, hook):
        super().__init__(v, BackupOptions(paths=paths), self._progress)
        self.hook = hook

    def _progress(self, kind, info):
        if kind == "plan" and self.hook:
            hook, self.hook = self.hook, None
            hook()


def test_backup_started_before_the_plan_and_finished_after_it_is_rescued(tmp_path):
    """B starts (its session has seen no plan), a prune writes a plan condemning every pack (the only point
    was deleted), B then reuses those very blobs (same content) and finishes. While B runs, the plan waits
    for it even past the margin; after B, phase 2 sees B's point and rescues what it references."""
    v = new_vault(tmp_path)
    src = tmp_path / "src"
    content = files(src, {"x": os.urandom(500_000), "y": os.urandom(100_000)})
    p1 = api.backup(v, [str(src)])
    v.delete_snapshot(p1.id)
    pruner = open_vault(tmp_path / "vault", tmp_path / "cache-p")
    seen = {}

    def phase1_then_try_phase2():
        seen["first"] = run_prune(pruner, PruneOptions())
        seen["early"] = run_prune(pruner, PruneOptions(), clock=lambda: time.time() + LATER)
        seen["status"] = vault_status(pruner)

    job = _Hooked(v, [str(src)], phase1_then_try_phase2)
    point = job.run()
    assert seen["first"].new_plan and len(seen["first"].decision.delete) >= 1
    assert [(p.done, p.reason) for p in seen["early"].plans] == [(False, "session")]
    st = seen["status"]  # what `recovault status` shows meanwhile: B running, the plan waiting for it
    assert [s["plans"] for s in st.sessions] == [[]] and st.lease is None
    assert [(p["name"], p["waiting_for"]) for p in st.plans] == [(seen["first"].new_plan, [st.sessions[0]["name"]])]
    assert job.stats.chunks_new == 0  # B reused the condemned blobs
    res = run_prune(pruner, PruneOptions(), clock=lambda: time.time() + LATER)
    assert [p.done for p in res.plans] == [True] and res.plans[0].blobs_rescued >= 3
    v2 = open_vault(tmp_path / "vault", tmp_path / "cache-r")
    assert restored(v2, v2.find_snapshot(point.id), tmp_path / "r") == content
    check_ok(v2)


def test_backup_that_saw_the_plan_stores_its_garbage_again(tmp_path):
    v = new_vault(tmp_path)
    src = tmp_path / "src"
    content = files(src, {"x": os.urandom(300_000)})
    v.delete_snapshot(api.backup(v, [str(src)]).id)
    pruner = open_vault(tmp_path / "vault", tmp_path / "cache-p")
    plan = run_prune(pruner, PruneOptions()).new_plan
    sessions = []
    job = _Hooked(v, [str(src)], lambda: sessions.extend(Coordinator(v.storage, v.sealer).sessions()))
    point = job.run()
    assert [s.plans for s in sessions] == [[plan]]
    assert job.stats.chunks_new >= 1  # the garbage was not "known": stored again
    assert not os.listdir(tmp_path / "vault" / "sessions")  # deleted at the end
    res = run_prune(pruner, PruneOptions(), clock=lambda: time.time() + LATER)
    assert res.plans[0].done and res.plans[0].blobs_rescued == 0
    assert restored(v, point, tmp_path / "r") == content
    check_ok(v)


@pytest.mark.parametrize("deleted", [False, True])
def test_lapsed_backup_revalidates(tmp_path, monkeypatch, deleted):
    """A backup whose heartbeat lapsed (stopped, taken for dead): its blobs in a pending plan's garbage are
    copied before its point is saved; if a prune already deleted them, no point is saved."""
    monkeypatch.setattr(WriterSession, "lapsed", property(lambda self: True))
    v = new_vault(tmp_path)
    src = tmp_path / "src"
    content = files(src, {"x": os.urandom(300_000)})
    v.delete_snapshot(api.backup(v, [str(src)]).id)
    pruner = open_vault(tmp_path / "vault", tmp_path / "cache-p")
    job = _Hooked(v, [str(src)], lambda: run_prune(pruner, PruneOptions(margin=0 if deleted else 3600)))
    if deleted:
        with pytest.raises(StorageError, match="no recovery point was saved"):
            job.run()
        assert v.snapshots() == []
        return
    point = job.run()
    res = run_prune(pruner, PruneOptions(), clock=lambda: time.time() + LATER)
    assert res.plans[0].done and res.plans[0].blobs_rescued == 0  # the writer copied them itself
    v2 = open_vault(tmp_path / "vault", tmp_path / "cache-r")
    assert restored(v2, v2.find_snapshot(point.id), tmp_path / "r") == content
    check_ok(v2)


def test_second_prune_is_refused_while_the_lease_is_held(tmp_path):
    v = new_vault(tmp_path)
    _three_points(tmp_path, v)
    v.delete_snapshot(v.snapshots()[0].id)
    with LeaseHolder(Coordinator(v.storage, v.sealer)):
        before = objects(tmp_path / "vault")
        with pytest.raises(Busy, match="holds the vault's lease"):
            run_prune(v, PruneOptions(margin=0))
        assert objects(tmp_path / "vault") == before
    assert run_prune(v, PruneOptions(margin=0)).plans[0].done  # released: the next one runs


def test_unindexed_pack_is_condemned_only_past_the_margin(tmp_path):
    v = new_vault(tmp_path)
    src = tmp_path / "src"
    content = files(src, {"x": os.urandom(100_000)})
    point = api.backup(v, [str(src)])
    w = open_vault(tmp_path / "vault", tmp_path / "cache-w")  # an interrupted backup: a pack, no index
    w.save_blob(fmt.BLOB_DATA, os.urandom(50_000))
    w.blobs._writers[fmt.BLOB_DATA].finish()
    w.blobs._wait_uploads()
    w.blobs._unindexed.clear()
    w.close(flush=False)
    packs = lambda: sorted(n for n in v.storage.list(fmt.DATA))  # noqa: E731
    n = len(packs())
    young = run_prune(v, PruneOptions())
    assert young.decision.unindexed == [] and young.new_plan is None and len(packs()) == n
    res = run_prune(v, PruneOptions(margin=0))
    assert len(res.decision.unindexed) == 1 and len(packs()) == n - 1
    assert restored(v, point, tmp_path / "r") == content
    check_ok(v)


def test_many_index_files_are_compacted(tmp_path):
    v = new_vault(tmp_path)
    src = tmp_path / "src"
    content = files(src, {"x": os.urandom(100_000)})
    point = api.backup(v, [str(src)])
    packs = {loc.pack: [] for loc in v.locations.values()}
    for blob_id, loc in v.locations.items():
        packs[loc.pack].append(fmt.BlobEntry(loc.type, blob_id, loc.offset, loc.length, loc.raw_length))
    for entries in packs.values():
        entries.sort(key=lambda e: e.offset)
    for _ in range(40):  # duplicates are harmless; 40 files are too many
        v.blobs.store_index(packs)
    res = run_prune(v, PruneOptions(margin=0))
    assert res.new_plan is None and res.index_files_written == 1 and res.index_files_deleted >= 41
    assert len(list(v.storage.list(fmt.INDEX))) == 1
    v2 = open_vault(tmp_path / "vault", tmp_path / "cache-r")
    assert restored(v2, point, tmp_path / "r") == content


def test_reader_with_an_old_index_finds_repacked_blobs(tmp_path):
    """A reader that loaded the index before a prune repacked its blobs: the restore engine (a file of many
    chunks) and read_blob each load the index files written since, once, and carry on."""
    v = new_vault(tmp_path)
    src = tmp_path / "src"
    a = files(src, {"big": os.urandom(1_500_000), "gone": os.urandom(600_000)})
    p1 = api.backup(v, [str(src)])
    b = files(src, {"big": a["big"], "new": os.urandom(100_000)})
    p2 = api.backup(v, [str(src)])
    reader = open_vault(tmp_path / "vault", tmp_path / "cache-reader")
    big = [bytes.fromhex(c) for c in reader.find_node(p2, str(src / "big")).content]
    assert len(big) > 4  # written by the restore engine
    old_packs = {reader.locate(c).pack for c in big}
    v.delete_snapshot(p1.id)
    run_prune(v, PruneOptions(margin=0, max_unused="0%"))
    assert not all(v.storage.exists(v.pack_name(p)) for p in old_packs)  # some of the reader's locations are stale
    assert restored(reader, p2, tmp_path / "r") == b
    reader2 = open_vault(tmp_path / "vault", tmp_path / "cache-reader2")
    reader2.known  # loads the index now
    run_prune(v, PruneOptions(margin=0, max_unused="0%", recompress=True))  # moves them again
    assert b"".join(reader2.read_blob(c) for c in big) == a["big"]


def test_a_block_map_is_reused_unread_only_from_a_base_every_pending_plan_walked(tmp_path):
    """An unchanged image reuses its base's block map without reading it only if the base is one of the
    points every pending plan computed its referenced set from: a base made after a plan (by a backup that
    had not seen it) may name that plan's garbage blocks in a page (docs/vault-format.md §10.4)."""
    v = new_vault(tmp_path)
    img = tmp_path / "disk.img"
    img.write_bytes(os.urandom(1 << 20))
    other = tmp_path / "other"
    files(other, {"x": os.urandom(100_000)})
    p1 = api.backup(v, [], images=[str(img)])
    v.delete_snapshot(api.backup(v, [str(other)]).id)  # garbage, so that prune writes a plan
    plan = run_prune(v, PruneOptions()).new_plan
    assert plan and p1.id in run_prune(v, PruneOptions(dry_run=True)).decision.points
    p2 = api.backup(v, [], images=[str(img)])  # base p1: the plan walked it
    assert p2.stats["bytes_read"] == 0 and p2.parent == p1.id
    p3 = api.backup(v, [], images=[str(img)])  # base p2, made after the plan: read again
    assert p3.parent == p2.id and p3.stats["bytes_read"] == 1 << 20 and p3.stats["chunks_new"] == 0
    run_prune(v, PruneOptions(), clock=lambda: time.time() + LATER)  # the plan is carried out
    p4 = api.backup(v, [], images=[str(img)])  # no plan pends: reused unread
    assert p4.stats["bytes_read"] == 0


def test_repack_small_merges_small_packs(tmp_path):
    v = new_vault(tmp_path)
    src = tmp_path / "src"
    content = {}
    for i in range(4):  # each backup ends with a small data pack (and a small tree pack)
        content[f"f{i}"] = os.urandom(50_000)
        files(src, content)
        point = api.backup(v, [str(src)])
    data_packs = lambda: {loc.pack for loc in v.locations.values() if loc.type == fmt.BLOB_DATA}  # noqa: E731
    assert len(data_packs()) == 4
    plain = run_prune(v, PruneOptions(margin=0))
    assert plain.new_plan is None and len(data_packs()) == 4  # nothing unused: nothing to do
    res = run_prune(v, PruneOptions(margin=0, repack_small=True))
    assert len(res.decision.repack) >= 4 and res.decision.bytes_unused == 0
    v.close()
    v = open_vault(tmp_path / "vault", tmp_path / "cache2")
    assert len(data_packs()) == 1
    assert restored(v, point, tmp_path / "r") == content
    check_ok(v)


def test_prune_keeps_what_a_soft_deleted_point_needs(tmp_path):
    """A forgotten point inside its soft-delete period is retained: prune --margin 0 reclaims nothing of
    it, and once undeleted it restores byte for byte; after its period, the next prune reclaims it."""
    from datetime import datetime, timedelta, timezone
    v = _new_vault(tmp_path)  # soft delete: the default 14 days
    src = tmp_path / "src"
    before = files(src, {"gone": os.urandom(400_000), "kept": os.urandom(50_000)})
    first = api.backup(v, [str(src)])
    (src / "gone").unlink()
    api.backup(v, [str(src)])
    v.forget(ids=[first.id])
    assert first.id not in {p.id for p in v.snapshots()}
    res = run_prune(v, PruneOptions(margin=0))
    assert res.new_plan is None and res.purged == []  # nothing of it is garbage
    v.undelete(first.id)
    assert restored(v, v.find_snapshot(first.id), tmp_path / "r1") == before
    v.forget(ids=[first.id])
    later = datetime.now(timezone.utc) + timedelta(days=15)
    assert v.purge_expired(now=later) == [first.id]
    res = run_prune(v, PruneOptions(margin=0))
    assert res.new_plan is not None and res.decision.bytes_freed >= 400_000
    check_ok(v)


def test_a_damaged_unindexed_copy_of_an_indexed_blob_is_not_copied_back(tmp_path):
    """An unindexed pack holding a damaged copy of blobs a kept indexed pack holds (what `repair --from` leaves
    when it takes a damaged pack out of the index) is deleted without copying them: prune once copied every
    live blob of a condemned pack, the damaged copy included, and check then found it in a new pack."""
    v = new_vault(tmp_path)
    src = tmp_path / "src"
    content = files(src, {"x": os.urandom(100_000)})
    point = api.backup(v, [str(src)])
    name = max(v.storage.list(fmt.DATA), key=lambda n: v.storage.stat(n).size)
    data = bytearray(v.storage.get(name))
    data[100] ^= 0xFF  # inside the first blob's ciphertext: its header still reads
    v.storage.put(fmt.object_name(fmt.DATA, core.blake3(bytes(data)).hex()), bytes(data))
    res = run_prune(v, PruneOptions(margin=0))
    assert len(res.decision.unindexed) == 1 and res.decision.copy == []
    check_ok(v)
    assert restored(v, point, tmp_path / "r") == content
