"""The journal of recovery points: a deleted or rolled-back recovery point is reported by `check`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import List

import pytest

from recovault import api, timefmt
from recovault.vault import format as fmt
from recovault.vault.check import Checker
from recovault.vault.journal import Journal, JournalEntry
from recovault.vault.keys import KdfParams
from recovault.vault.repo import Settings

from test_cli import PASSPHRASE, Cli, fails, json_out

FAST = KdfParams(memory_kib=8, iterations=1, lanes=1)
SMALL = Settings(min_size=16 << 10, avg_size=64 << 10, max_size=256 << 10, pack_size=1 << 20)


@pytest.fixture
def env(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data " * 100)
    vault = str(tmp_path / "vault")
    api.init_vault(vault, PASSPHRASE, settings=SMALL, kdf=FAST, cache_dir=str(tmp_path / "cache-a")).close()
    return tmp_path, vault, src


def backup(vault: str, src: Path, cache: Path, n: int = 1, host: str = "web1") -> List[str]:
    ids = []
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(cache)) as v:
        for i in range(n):
            (src / "f").write_bytes(b"data %d " % i * 100)
            ids.append(api.backup(v, [str(src)], host=host).id)
    return ids


def check(vault: str, cache: Path):
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(cache)) as v:
        return Checker(v).run()


def journal_names(vault: str) -> List[str]:
    return sorted(p.name for p in (Path(vault) / "journal").iterdir())


def entries(vault: str, cache: Path) -> List[JournalEntry]:
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(cache)) as v:
        v.journal.refresh()
        return list(v.journal.entries.values())


def test_backup_logs_each_point_and_check_is_clean(env) -> None:
    tmp, vault, src = env
    ids = backup(vault, src, tmp / "cache-a", n=3)
    es = entries(vault, tmp / "cache-a")
    assert sorted(e.snapshot for e in es) == sorted(ids) and {e.op for e in es} == {"add"}
    assert {e.host for e in es} == {"web1"}
    # a chain: each entry names the previous head
    by_snap = {e.snapshot: e for e in es}
    assert by_snap[ids[0]].prev == ()
    assert by_snap[ids[1]].prev == (by_snap[ids[0]].name,) and by_snap[ids[2]].prev == (by_snap[ids[1]].name,)
    res = check(vault, tmp / "cache-a")
    assert res["ok"] and res["warnings"] == [] and res["stats"]["journal_entries"] == 3
    # entries are sealed, content-addressed, and cached privately
    for name in journal_names(vault):
        raw = (Path(vault) / "journal" / name).read_bytes()
        assert b"web1" not in raw and b"add" not in raw
    cached = [p for p in (tmp / "cache-a").rglob("journal/*")]
    assert sorted(p.name for p in cached) == journal_names(vault)


@pytest.mark.parametrize("cache_name", ["cache-a", "cache-fresh"])
def test_deleted_recovery_point_is_reported(env, cache_name: str) -> None:
    tmp, vault, src = env
    ids = backup(vault, src, tmp / "cache-a", n=3)
    (Path(vault) / "snapshots" / ids[1]).unlink()
    res = check(vault, tmp / cache_name)  # with this host's cache or without any (a new host)
    assert not res["ok"]
    assert any(f"recovery point {ids[1][:8]} of host web1 at " in p and "is missing: deleted outside recovault"
               in p for p in res["problems"]), res["problems"]


def test_cut_journal_is_reported_even_without_cache(env) -> None:
    tmp, vault, src = env
    ids = backup(vault, src, tmp / "cache-a", n=3)
    es = {e.snapshot: e for e in entries(vault, tmp / "cache-a")}
    # delete the middle point and its entry: the newest entry still references it
    (Path(vault) / "snapshots" / ids[1]).unlink()
    (Path(vault) / "journal" / es[ids[1]].name).unlink()
    res = check(vault, tmp / "cache-fresh")
    assert any(f"journal entry {es[ids[1]].name[:16]} is missing" in p and "the journal was cut" in p
               for p in res["problems"]), res["problems"]


def test_rollback_of_newest_points_is_seen_by_a_host_that_saw_them(env) -> None:
    tmp, vault, src = env
    backup(vault, src, tmp / "cache-a", n=1)
    saved = tmp / "saved"
    shutil.copytree(vault, saved)  # the vault as it was
    backup(vault, src, tmp / "cache-a", n=2)
    shutil.rmtree(vault)
    shutil.copytree(saved, vault)  # rolled back: the two newest points and their entries are gone
    res = check(vault, tmp / "cache-a")
    gone = [p for p in res["problems"] if "seen before by this host, is gone from the vault" in p]
    assert len(gone) >= 1, res["problems"]
    # A host with no cache cannot tell (documented): the rolled-back vault is consistent in itself.
    assert check(vault, tmp / "cache-fresh")["ok"]
    # and the report stays until the vault is repaired (a later backup does not forget the evidence)
    backup(vault, src, tmp / "cache-a", n=1)
    assert any("is gone from the vault" in p for p in check(vault, tmp / "cache-a")["problems"])


def test_delete_snapshot_logs_a_removal_first(env) -> None:
    tmp, vault, src = env
    ids = backup(vault, src, tmp / "cache-a", n=2)
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp / "cache-a")) as v:
        v.delete_snapshot(ids[0])
    es = entries(vault, tmp / "cache-a")
    removal = [e for e in es if e.op == "remove"]
    assert [e.snapshot for e in removal] == [ids[0]]
    res = check(vault, tmp / "cache-fresh")
    assert res["ok"] and res["warnings"] == [], res


def test_interrupted_removal_is_a_warning_not_a_problem(env, monkeypatch: pytest.MonkeyPatch) -> None:
    """With soft delete off, removal purges at once: stopped between the purge entry and the deletion, the
    object is still stored, and check warns (the next prune finishes it)."""
    tmp, vault, src = env
    shutil.rmtree(vault)
    api.init_vault(vault, PASSPHRASE, settings=SMALL, kdf=FAST, cache_dir=str(tmp / "cache-a"),
                   soft_delete_days=0).close()
    ids = backup(vault, src, tmp / "cache-a", n=2)
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp / "cache-a")) as v:
        monkeypatch.setattr(v.storage, "delete", lambda name: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            v.delete_snapshot(ids[0])
    monkeypatch.undo()
    res = check(vault, tmp / "cache-a")
    assert res["ok"], res["problems"]
    assert any(f"recovery point {ids[0][:8]} was removed" in w for w in res["warnings"])


def test_point_stored_but_not_logged_is_a_warning(env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash between storing a point and logging it (or a point from an older recovault) loses nothing:
    it is reported as unlogged, never as damage."""
    tmp, vault, src = env
    backup(vault, src, tmp / "cache-a", n=1)
    monkeypatch.setattr(Journal, "append", lambda self, *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        backup(vault, src, tmp / "cache-a", n=1)
    monkeypatch.undo()
    res = check(vault, tmp / "cache-fresh")
    assert res["ok"], res["problems"]
    assert any("1 recovery point(s) have no journal entry" in w for w in res["warnings"])


def test_damaged_entry_is_reported(env) -> None:
    tmp, vault, src = env
    backup(vault, src, tmp / "cache-a", n=2)
    name = journal_names(vault)[0]
    p = Path(vault) / "journal" / name
    raw = bytearray(p.read_bytes())
    raw[40] ^= 1
    p.write_bytes(bytes(raw))
    res = check(vault, tmp / "cache-a")  # the cache holds a good copy: the stored one is still checked
    assert any(f"journal entry {name[:16]}" in x and "does not match its name" in x for x in res["problems"])


def test_concurrent_heads_merge(env) -> None:
    """Two hosts append from the same heads (the log forks); the next entry names both heads."""
    tmp, vault, src = env
    backup(vault, src, tmp / "cache-a", n=1)
    va = api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp / "cache-a"))
    vb = api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp / "cache-b"))
    va.journal.refresh()
    vb.journal.refresh()
    heads = va.journal.heads()
    vb.journal.refresh = lambda: None  # b has not seen a's entry yet
    a = va.journal.append("add", "a" * 64, "2026-01-01T00:00:00Z", "ha")
    b = vb.journal.append("add", "b" * 64, "2026-01-01T00:00:01Z", "hb")
    assert va.journal.entries[a].prev == vb.journal.entries[b].prev == tuple(heads)
    c = va.journal.append("remove", "a" * 64, "2026-01-01T00:00:02Z")
    assert va.journal.entries[c].prev == tuple(sorted([a, b]))
    states = va.journal.states()
    assert not states["a" * 64].live and states["b" * 64].live
    va.close()
    vb.close()


def test_cli_check_reports_deleted_point(env) -> None:
    tmp, vault, src = env
    ids = backup(vault, src, tmp / "cache-a", n=2)
    (Path(vault) / "snapshots" / ids[0]).unlink()
    cli = Cli(tmp / "home")
    fails(cli("check", "--vault", vault), 15, f"recovery point {ids[0][:8]} of host web1", "is missing")
    assert len(json_out(cli("snapshots", "--vault", vault, "--json"))) == 1


def test_entry_format(env) -> None:
    tmp, vault, src = env
    before = timefmt.now()
    [sid] = backup(vault, src, tmp / "cache-a", n=1)
    after = timefmt.now()
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp / "cache-fresh")) as v:
        [name] = journal_names(vault)
        raw = (Path(vault) / "journal" / name).read_bytes()
        plain = v.unseal(fmt.AAD_JOURNAL, raw, "entry")
        doc = json.loads(plain)
        snap = v.load_snapshot(sid)
    # logged: when the entry was written (the point's own time may be anything backup --time gave)
    assert before <= doc.get("logged", "") <= after
    assert doc == {"v": 2, "op": "add", "snapshot": sid, "time": snap.time, "host": "web1", "prev": [],
                   "logged": doc["logged"]}
    assert plain == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def test_hosts_backing_up_at_once_keep_a_consistent_journal(env) -> None:
    """Two writers append concurrently (threads with their own caches): every point is logged once, the
    log has no dangling prev, and check is clean."""
    import threading
    tmp, vault, _ = env
    ids: List[str] = []
    errors: List[BaseException] = []

    def run(i: int) -> None:
        src = tmp / f"src{i}"
        src.mkdir()
        try:
            ids.extend(backup(vault, src, tmp / f"cache-{i}", n=3, host=f"host{i}"))
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    es = entries(vault, tmp / "cache-check")
    assert sorted(e.snapshot for e in es) == sorted(ids) and len(es) == 6
    names = {e.name for e in es}
    assert all(p in names for e in es for p in e.prev)
    res = check(vault, tmp / "cache-0")
    assert res["ok"] and res["warnings"] == [], res


def test_adopting_points_of_a_vault_older_than_the_journal(env) -> None:
    tmp, vault, src = env
    ids = backup(vault, src, tmp / "cache-a", n=2)
    shutil.rmtree(Path(vault) / "journal")  # as a recovault before the journal left it
    res = check(vault, tmp / "cache-fresh")
    assert res["ok"] and any("2 recovery point(s) have no journal entry" in w for w in res["warnings"])
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp / "cache-fresh")) as v:
        snaps = v.snapshots()
        new = v.journal.adopt(snaps)
        assert len(new) == 2 and v.journal.adopt(snaps) == []
    res = check(vault, tmp / "cache-fresh")
    assert res["ok"] and res["warnings"] == [], res
    (Path(vault) / "snapshots" / ids[0]).unlink()
    assert any(f"recovery point {ids[0][:8]}" in p for p in check(vault, tmp / "cache-other")["problems"])
