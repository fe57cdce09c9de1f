"""The lifecycle commands: forget (its --json shape, --dry-run, filters, grouping, ids), policy set/show,
undelete, snapshots --deleted, init --soft-delete-days, and their bad input (one message, a distinct exit
code, the vault unchanged). Real vaults in tmp dirs; points at chosen times with backup --time."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List

import pytest

from recovault import api

from test_cli import FAST_KDF, PASSPHRASE, Cli, api_vault, fails, json_out, ok, run_main


class Run:
    """`recovault ... --vault V` in this process (fast), with this test's passphrase and cache."""

    def __init__(self, vault: str, capsys) -> None:
        self.vault, self.capsys = vault, capsys

    def __call__(self, *argv: Any):
        return run_main(list(argv) + ["--vault", self.vault], self.capsys)

    def json(self, *argv: Any) -> Any:
        import json
        res = self(*argv, "--json")
        assert res.code == 0, res.err
        return json.loads(res.out)

    def fails(self, code: int, *argv: Any) -> str:
        res = self(*argv)
        assert res.code == code, (res.code, res.out, res.err)
        lines = [ln for ln in res.err.splitlines() if ln.startswith("recovault: error: ")]
        assert len(lines) == 1, res.err
        return lines[0]


@pytest.fixture
def env(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("RECOVAULT_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("XDG_CACHE_HOME", os.fspath(tmp_path / "cache"))
    monkeypatch.setenv("TZ", "UTC")
    vault = api_vault(tmp_path / "vault")
    run = Run(vault, capsys)
    srcs = {}
    for name in ("a", "b"):
        srcs[name] = tmp_path / name
        srcs[name].mkdir()

    def backup(src: str, when: str, host: str = "web1", tags: List[str] = ()) -> str:
        (srcs[src] / "f").write_text(when)
        args = ["backup", srcs[src], "--time", when, "--host", host] + [x for t in tags for x in ("--tag", t)]
        return run.json(*args)["id"]
    return run, backup, srcs


def vault_files(vault: str) -> List[str]:
    return sorted(os.path.relpath(os.path.join(d, f), vault) for d, _, fs in os.walk(vault) for f in fs)


def test_forget_json_shape_and_dry_run(env) -> None:
    run, backup, srcs = env
    ids = [backup("a", f"2025-01-{d:02d} 10:00:00") for d in (1, 2, 3, 4)]
    other = backup("b", "2025-01-02 10:00:00", host="web2")
    before = vault_files(run.vault)
    doc = run.json("forget", "--keep-last", "2", "--dry-run")
    assert vault_files(run.vault) == before  # --dry-run changes nothing
    assert isinstance(doc, list) and len(doc) == 2
    by_host = {g["host"]: g for g in doc}
    g = by_host["web1"]
    assert set(g) == {"host", "paths", "tags", "keep", "remove", "reasons"}
    assert g["paths"] == [str(srcs["a"])] and g["tags"] == []
    assert [p["id"] for p in g["keep"]] == [ids[3], ids[2]] and [p["id"] for p in g["remove"]] == [ids[1], ids[0]]
    live = {p["id"]: p for p in run.json("snapshots")}
    assert g["keep"][0] == live[ids[3]] and g["remove"][0] == live[ids[1]]  # the form of snapshots --json
    assert g["reasons"] == [{"snapshot": live[ids[3]], "matches": ["last snapshot"], "counters": {"last": 1}},
                            {"snapshot": live[ids[2]], "matches": ["last snapshot"], "counters": {}}]
    assert [p["id"] for p in by_host["web2"]["keep"]] == [other] and by_host["web2"]["remove"] == []
    # for real: the same groups, the removed points soft-deleted
    assert [[p["id"] for p in g["remove"]] for g in run.json("forget", "--keep-last", "2")] == [[ids[1], ids[0]], []]
    assert sorted(p["id"] for p in run.json("snapshots")) == sorted([ids[2], ids[3], other])
    gone = run.json("snapshots", "--deleted")
    assert sorted(p["id"] for p in gone) == sorted(ids[:2])
    assert all(p["expires"] > p["removed"] and p["removed_by"] for p in gone)


def test_forget_filters_grouping_and_ids(env) -> None:
    run, backup, _ = env
    a1 = backup("a", "2025-01-01 10:00:00", tags=["x"])
    a2 = backup("a", "2025-01-02 10:00:00")
    b1 = backup("b", "2025-01-01 10:00:00", host="web2")
    b2 = backup("b", "2025-01-02 11:00:00", host="web2")
    # --host: only web2's group is touched
    doc = run.json("forget", "--keep-last", "1", "--host", "web2", "--dry-run")
    assert [(g["host"], [p["id"] for p in g["remove"]]) for g in doc] == [("web2", [b1])]
    # --keep-tag keeps a1 whatever else; --group-by '' makes one group of everything
    doc = run.json("forget", "--keep-last", "1", "--keep-tag", "x", "--group-by", "", "--dry-run")
    assert len(doc) == 1 and doc[0]["host"] == "" and doc[0]["paths"] == []
    assert {p["id"] for p in doc[0]["keep"]} == {b2, a1} and {p["id"] for p in doc[0]["remove"]} == {a2, b1}
    # --tag selects points
    assert run.json("forget", "--keep-last", "1", "--tag", "nope", "--dry-run") == []
    # by id (unique prefixes): removed, grouped by host and paths
    doc = run.json("forget", a1[:12], b1[:12])
    assert sorted((g["host"], [p["id"] for p in g["remove"]], g["keep"]) for g in doc) == \
        [("web1", [a1], []), ("web2", [b1], [])]
    assert {p["id"] for p in run.json("snapshots")} == {a2, b2}


def test_policy_set_show_and_forget_with_the_stored_policy(env) -> None:
    run, backup, _ = env
    ids = [backup("a", f"2025-01-{d:02d} 10:00:00") for d in (1, 2, 3)]
    assert run.json("policy", "show") == {"retention": None, "soft_delete_days": 14,
                                          "in_force": {"soft_delete_days": 14, "until": None}}
    doc = run.json("policy", "set", "--keep-daily", "2", "--keep-within", "1y", "--soft-delete-days", "30")
    assert doc["retention"] == {"keep_daily": 2, "keep_within": "1y"} and doc["soft_delete_days"] == 30
    assert doc["in_force"] == {"soft_delete_days": 30, "until": None}  # lengthening: at once
    doc = run.json("policy", "set", "--soft-delete-days", "0")  # retention unchanged; shortening waits
    assert doc["retention"] == {"keep_daily": 2, "keep_within": "1y"} and doc["soft_delete_days"] == 0
    assert doc["in_force"]["soft_delete_days"] == 30 and doc["in_force"]["until"]
    text = run("policy", "show").out
    assert "keep 2 daily snapshots" in text and "30 day(s) stay in force until" in text
    run.json("policy", "set", "--keep-last", "1")
    [g] = run.json("forget")  # the stored policy
    assert [p["id"] for p in g["remove"]] == [ids[1], ids[0]]
    gone = run.json("snapshots", "--deleted")
    assert len(gone) == 2  # soft-deleted under the 30 days still in force, though 0 is set


def test_undelete_and_snapshots_deleted(env) -> None:
    run, backup, _ = env
    ids = [backup("a", f"2025-01-{d:02d} 10:00:00") for d in (1, 2)]
    run.json("forget", ids[0][:10])
    text = run("snapshots", "--deleted").out
    assert ids[0][:8] in text and "expires" in text
    assert run.json("undelete", ids[0][:10])["id"] == ids[0]
    assert [p["id"] for p in run.json("snapshots")] == ids and run.json("snapshots", "--deleted") == []


def test_init_soft_delete_days_zero_purges_at_once(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("RECOVAULT_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("XDG_CACHE_HOME", os.fspath(tmp_path / "cache"))
    vault = os.fspath(tmp_path / "vault")
    run = Run(vault, capsys)
    assert run.fails(2, "init", "--soft-delete-days", "-1").startswith("recovault: error: --soft-delete-days -1")
    assert not os.path.exists(vault)
    with api.init_vault(vault, PASSPHRASE, kdf=FAST_KDF, cache_dir=os.fspath(tmp_path / "c"), soft_delete_days=0) as v:
        src = tmp_path / "src"
        src.mkdir()
        ids = [api.backup(v, [str(src)], time=f"2025-01-0{d} 10:00:00").id for d in (1, 2)]
    assert run.json("policy", "show")["in_force"] == {"soft_delete_days": 0, "until": None}
    run.json("forget", ids[0])
    assert run.json("snapshots", "--deleted") == []
    assert not os.path.exists(os.path.join(vault, "snapshots", ids[0]))
    assert "no problems" in run("check").out


def test_bad_input_one_message_distinct_code_vault_unchanged(env) -> None:
    run, backup, _ = env
    ids = [backup("a", f"2025-01-{d:02d} 10:00:00") for d in (1, 2)]
    before = vault_files(run.vault)
    assert "no policy stored" in run.fails(2, "forget")
    assert "-2" in run.fails(2, "forget", "--keep-daily", "-2")
    assert "invalid duration" in run.fails(2, "forget", "--keep-within", "3x")
    assert "invalid duration" in run.fails(2, "policy", "set", "--keep-within-daily", "-1d")
    assert "grouping" in run.fails(2, "forget", "--keep-last", "1", "--group-by", "colour")
    unknown = "ffffffffffff" if not any(i.startswith("ffffffffffff") for i in ids) else "000000000000"
    assert "no recovery point matches" in run.fails(16, "forget", unknown)
    assert "give more characters" in run.fails(2, "forget", "")
    assert "IDs or --keep" in run.fails(2, "forget", ids[0], "--keep-last", "1")
    assert "every recovery point of host web1" in run.fails(2, "forget", *ids)
    assert "nothing to set" in run.fails(2, "policy", "set")
    assert "no rule" in run.fails(2, "policy", "set", "--keep-last", "0")
    assert "no soft-deleted recovery point" in run.fails(16, "undelete", unknown)
    assert "is not deleted" in run.fails(2, "undelete", ids[0][:8])
    assert vault_files(run.vault) == before
    # --allow-empty does what it says
    run.json("forget", *ids, "--allow-empty")
    assert run.json("snapshots") == []


def test_forget_end_to_end_as_a_subprocess(tmp_path) -> None:
    """The installed entry point: backup --time, forget --json, undelete (no traceback, exit codes)."""
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "vault")
    src = tmp_path / "src"
    src.mkdir()
    ids = []
    for day in (1, 2, 3):
        (src / "f").write_text(str(day))
        ids.append(json_out(cli("backup", "--vault", vault, src, "--time", f"2025-02-0{day} 08:00:00", "--json"))["id"])
    [group] = json_out(cli("forget", "--vault", vault, "--keep-last", "1", "--json"))
    assert [p["id"] for p in group["remove"]] == [ids[1], ids[0]]
    ok(cli("undelete", "--vault", vault, ids[0][:8]))
    fails(cli("undelete", "--vault", vault, ids[0][:8]), 2, "is not deleted")
    assert [p["id"] for p in json_out(cli("snapshots", "--vault", vault, "--json"))] == [ids[0], ids[2]]


# Runs the CLI with a kill -9 of itself at the Nth journal entry written ($RV_KILL_AT "put:N") or the Nth
# recovery point deleted ("delete:N"): a real process dying at a chosen step of forget.
KILL_BOOT = r"""
import os, signal
from recovault.vault import journal, points
kind, n = os.environ["RV_KILL_AT"].split(":")
count = [0]
def _dying(orig, what):
    def wrapper(*args, **kwargs):
        if what == kind:
            count[0] += 1
            if count[0] == int(n):
                os.kill(os.getpid(), signal.SIGKILL)
        return orig(*args, **kwargs)
    return wrapper
journal.Journal._put = _dying(journal.Journal._put, "put")
points.PointStore.delete = _dying(points.PointStore.delete, "delete")
from recovault.cli import main
main()
"""


@pytest.mark.parametrize("kill_at", ["put:2", "put:6", "delete:2"])
def test_forget_killed_at_any_step_leaves_a_valid_vault_and_the_next_run_finishes(tmp_path, kill_at) -> None:
    """Soft delete off, forget of 4 points: 4 remove entries, 4 purge entries, 4 deletions. kill -9 at any
    step: check finds no problem, nothing live is lost, and forget + prune's purge_expired finish the job."""
    from recovault.vault.check import Checker
    cli = Cli(tmp_path / "home")
    vault = os.fspath(tmp_path / "vault")
    cache = os.fspath(tmp_path / "cache")
    with api.init_vault(vault, PASSPHRASE, kdf=FAST_KDF, cache_dir=cache, soft_delete_days=0) as v:
        src = tmp_path / "src"
        src.mkdir()
        ids = []
        for day in range(1, 6):
            (src / "f").write_text(str(day))
            ids.append(api.backup(v, [str(src)], time=f"2025-03-0{day} 08:00:00").id)
    res = cli("forget", "--vault", vault, "--keep-last", "1", boot=KILL_BOOT, env={"RV_KILL_AT": kill_at})
    assert res.returncode == -9, (res.returncode, res.stderr)
    with api.open_vault(vault, PASSPHRASE, cache_dir=cache) as v:
        report = Checker(v).run()
        assert report["ok"], report["problems"]
        assert ids[-1] in [p.id for p in v.snapshots()]
        ok(cli("forget", "--vault", vault, "--keep-last", "1"))
        v.purge_expired()
        assert [p.id for p in v.snapshots()] == [ids[-1]] and v.deleted_snapshots() == []
        assert sorted(v.points.ids()) == [ids[-1]]
        report = Checker(v).run()
        assert report["ok"] and report["warnings"] == [], report


def test_undelete_of_an_expired_point_is_refused(tmp_path, monkeypatch, capsys) -> None:
    """Soft delete off and the purge not done yet (a forget stopped after its remove entries): the point is
    soft-deleted and already expired; undelete refuses it (exit 16) and writes nothing."""
    from recovault.vault import lifecycle
    monkeypatch.setenv("RECOVAULT_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("XDG_CACHE_HOME", os.fspath(tmp_path / "cache"))
    vault = os.fspath(tmp_path / "vault")
    with api.init_vault(vault, PASSPHRASE, kdf=FAST_KDF, cache_dir=os.fspath(tmp_path / "c"), soft_delete_days=0) as v:
        src = tmp_path / "src"
        src.mkdir()
        ids = [api.backup(v, [str(src)], time=f"2025-01-0{d} 10:00:00").id for d in (1, 2)]
        with monkeypatch.context() as m:
            m.setattr(lifecycle, "_purge", lambda *a: None)
            v.forget(ids=[ids[0]])
    run = Run(vault, capsys)
    [gone] = run.json("snapshots", "--deleted")
    assert gone["id"] == ids[0] and gone["expires"] == gone["removed"]
    assert "(expired" in run("snapshots", "--deleted").out
    before = vault_files(vault)
    msg = run.fails(16, "undelete", ids[0][:8])
    assert "expired at" in msg and "can no longer be undeleted" in msg
    assert vault_files(vault) == before


def test_forget_prune_runs_prune_with_its_defaults(env) -> None:
    """forget --prune forgets, then runs prune as 'recovault prune' would (margin 2h: a plan condemns the
    forgotten point's data, deleted by a later prune), and says what prune did."""
    run, backup, srcs = env
    assert run("policy", "set", "--soft-delete-days", "0").code == 0  # no period in force yet: off at once
    (srcs["a"] / "big").write_bytes(os.urandom(300_000))
    old = backup("a", "2025-01-01 10:00:00")
    (srcs["a"] / "big").write_bytes(os.urandom(300_000))
    new = backup("a", "2025-01-02 10:00:00")
    res = run("forget", "--keep-last", "1", "--prune")
    assert res.code == 0, res.err
    assert "plan" in res.out or "will delete" in res.out, res.out
    assert [p["id"] for p in run.json("snapshots")] == [new]
    status = run.json("status")
    assert len(status["plans"]) == 1 and status["plans"][0]["packs"] >= 1  # the old point's data, condemned
    assert old not in {p["id"] for p in run.json("snapshots", "--deleted")}  # purged: soft delete is off


def test_a_soft_deleted_point_is_named_as_such(env, tmp_path) -> None:
    """Restore, ls and forget of a soft-deleted point fail with exit 16 and say that it is soft-deleted and
    how to bring it back (as Azure Backup: undelete before restore), not that no point matches."""
    run, backup, srcs = env
    old = backup("a", "2025-01-01 10:00:00")
    backup("a", "2025-01-02 10:00:00")
    assert run("forget", old).code == 0
    for argv in (("restore", old[:8], "--target", str(tmp_path / "r")), ("ls", old[:8]), ("forget", old[:8])):
        msg = run.fails(16, *argv)
        assert "is soft-deleted" in msg and f"recovault undelete {old[:8]}" in msg, msg
    assert not (tmp_path / "r").exists()
    assert run("undelete", old[:8]).code == 0
    assert run("restore", old[:8], "--target", str(tmp_path / "r")).code == 0
