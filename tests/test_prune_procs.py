"""prune with real processes: the CLI forms (--json, --dry-run, status), the lease's exit code, and kill -9 at
every step (the concurrent backups: test_prune_concurrency.py)."""
from __future__ import annotations

import os

import pytest

from recovault import api
from recovault.vault.coordination import Coordinator, LeaseHolder
from recovault.vault.journal import VaultPolicy
from test_cli import PASSPHRASE, Cli, api_vault, fails, json_out, ok


def _vault_with_garbage(tmp_path):
    """A vault with two points, the first deleted: a file of it is garbage, and packs are partly used."""
    vault = api_vault(tmp_path / "v")
    src = tmp_path / "src"
    src.mkdir()
    keep = {f"k{i}": os.urandom(30_000) for i in range(6)}
    for name, data in keep.items():
        (src / name).write_bytes(data)
    (src / "gone").write_bytes(os.urandom(400_000))
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        v.set_policy(VaultPolicy(None, 0))  # soft delete off: the deleted point's data is prune's
        first = api.backup(v, [str(src)])
        (src / "gone").unlink()
        (src / "k0").unlink()
        del keep["k0"]
        second = api.backup(v, [str(src)])
        v.delete_snapshot(first.id)
    return vault, src, keep, second.id


def _restores(cli, vault, sid, src, expected, target):
    ok(cli("restore", sid, "--target", target, "--vault", vault))
    inner = target / str(src).lstrip("/")
    assert {p.name: p.read_bytes() for p in inner.iterdir()} == expected


def test_prune_json_dry_run_and_status(tmp_path):
    cli = Cli(tmp_path / "home")
    vault, src, keep, sid = _vault_with_garbage(tmp_path)
    dry = json_out(cli("prune", "--dry-run", "--margin", "0", "--json", "--vault", vault))
    assert dry["dry_run"] and dry["new_plan"] is None and dry["decision"]["bytes_freed"] > 350_000
    st = json_out(cli("status", "--json", "--vault", vault))
    assert st["points"] == 1 and st["lease"] is None and st["sessions"] == [] and st["plans"] == []
    prunable = json_out(cli("stats", "--json", "--vault", vault))["prunable"]
    assert prunable["bytes"] == dry["decision"]["bytes_freed"] and prunable["pending_plans"] == 0
    garbage = json_out(cli("check", "--json", "--vault", vault))  # garbage is no problem
    assert garbage["ok"] and garbage["garbage"]["unreferenced_bytes"] > 400_000
    assert garbage["garbage"]["unreferenced_packs"] >= 1 and garbage["garbage"]["condemned_packs"] == 0
    planned = json_out(cli("prune", "--json", "--vault", vault))  # the default margin: a plan, nothing deleted
    assert planned["new_plan"] and planned["plans"] == [] and planned["bytes_deleted"] == 0
    st = json_out(cli("status", "--json", "--vault", vault))
    assert [p["name"] for p in st["plans"]] == [planned["new_plan"]]
    waiting = json_out(cli("check", "--read-data", "--json", "--vault", vault))
    assert waiting["ok"] and waiting["garbage"]["pending_plans"] == 1 and waiting["garbage"]["condemned_packs"] >= 1
    assert json_out(cli("stats", "--json", "--vault", vault))["prunable"]["bytes_pending"] > 400_000
    waits = json_out(cli("prune", "--json", "--vault", vault))
    assert [(p["plan"], p["done"], p["reason"]) for p in waits["plans"]] == [(planned["new_plan"], False, "margin")]
    done = json_out(cli("prune", "--margin", "0", "--json", "--vault", vault))
    assert done["plans"][0]["done"] and done["bytes_deleted"] > 350_000
    assert json_out(cli("status", "--json", "--vault", vault))["plans"] == []
    g = json_out(cli("check", "--json", "--vault", vault))["garbage"]
    assert g["condemned_packs"] == g["unindexed_packs"] == g["unreferenced_packs"] == 0, g
    _restores(cli, vault, sid, src, keep, tmp_path / "r")
    ok(cli("check", "--read-data", "--vault", vault))
    fails(cli("prune", "--margin", "2x", "--vault", vault), 2, "--margin")
    fails(cli("prune", "--max-unused", "200%", "--vault", vault), 2, "--max-unused")


def test_prune_while_another_holds_the_lease_exits_17(tmp_path):
    cli = Cli(tmp_path / "home")
    vault, *_ = _vault_with_garbage(tmp_path)
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        with LeaseHolder(Coordinator(v.storage, v.sealer)):
            before = sorted(os.listdir(os.path.join(vault, "data")))
            fails(cli("prune", "--margin", "0", "--vault", vault), 17, "holds the vault's lease", "nothing was changed")
            assert json_out(cli("status", "--json", "--vault", vault))["lease"]["pid"] == os.getpid()
            assert sorted(os.listdir(os.path.join(vault, "data"))) == before
    ok(cli("prune", "--margin", "0", "--vault", vault))


@pytest.mark.parametrize("step", ["repacked", "planned", "rescued", "compacted", "index-deleted", "pack-deleted"])
def test_kill_9_at_every_step_leaves_a_valid_vault_and_the_next_prune_finishes(tmp_path, step):
    cli = Cli(tmp_path / "home")
    vault, src, keep, sid = _vault_with_garbage(tmp_path)
    killed = cli("prune", "--margin", "0", "--max-unused", "0%", "--vault", vault,
                 env={"RECOVAULT_TEST_PRUNE_KILL": step})
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    ok(cli("check", "--read-data", "--vault", vault))
    _restores(cli, vault, sid, src, keep, tmp_path / "r1")
    ok(cli("prune", "--margin", "0", "--max-unused", "0%", "--vault", vault))
    assert os.listdir(os.path.join(vault, "plans")) == [] and os.listdir(os.path.join(vault, "locks")) == []
    res = json_out(cli("check", "--read-data", "--json", "--vault", vault))
    assert res["ok"] and res["warnings"] == []  # no garbage left
    _restores(cli, vault, sid, src, keep, tmp_path / "r2")
