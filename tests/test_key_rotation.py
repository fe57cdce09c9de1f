"""Key rotation and host key revocation (issue 14, docs/vault-format.md §3.1): `key rotate` makes a new X25519
generation that admin and host sessions seal to (hosts keep their key files); `key rotate --rewrite` re-seals
every stored blob under session keys of the new generation (the packs inspected: no blob or pack header under
an older key) and every point restores byte for byte, resumable after a kill -9; `key revoke` refuses a host
key's later sessions on check and restore, and the host itself at open."""
from __future__ import annotations

import json
import os
from typing import Dict, Set

import pytest

from recovault import api
from recovault.errors import HostKeyRevoked, RefusedSession
from recovault.vault import format as fmt
from recovault.vault.check import Checker
from recovault.vault.hostkeys import AdminKeys, HostKeyFile, read_keyring

from test_cli import FAST_KDF, PASSPHRASE, Cli, fails, ok
from test_host_keys import HOST_PASSPHRASE, _host, fleet  # noqa: F401  (the fixture)


def _admin(fleet, cache: str = "admin"):
    return api.open_vault(fleet["vault"], PASSPHRASE, cache_dir=str(fleet["tmp"] / cache))


def _ring(v):
    return read_keyring(v.storage, AdminKeys.derive(v.master).signing_public, v.id)


def _session_gens(vault: str) -> Dict[str, int]:
    """salt (hex) -> the generation its session key object names."""
    d = os.path.join(vault, "sessionkeys")
    return {n: json.loads(open(os.path.join(d, n), "rb").read())["gen"] for n in os.listdir(d)}


def _pack_salts(v) -> Set[str]:
    """The session salt of every blob and every pack header in every pack on storage."""
    salts = set()
    for info in v.storage.list_info(fmt.DATA):
        data = v.storage.get(info.name)
        start, hlen = fmt.split_pack(len(data), data[-fmt.PACK_TRAILER.size:])
        salts.add(data[start + 2:start + 18].hex())
        for e in v.read_pack_header(info.name):
            salts.add(data[e.offset + 2:e.offset + 18].hex())
    return salts


def _restores(v, fleet, point, tmp) -> None:
    target = tmp / f"r-{point.id[:8]}"
    api.restore(v, point.id, str(target))
    for rel, data in fleet["files"].items():
        with open(os.path.join(str(target) + str(fleet["src"]), rel), "rb") as f:
            assert f.read() == data, rel


def test_rotate_makes_a_generation_admin_and_host_sessions_seal_to(fleet):
    tmp = fleet["tmp"]
    with _admin(fleet) as v:
        rot = api.rotate_key(v)
        ring = _ring(v)
    assert rot.gen == 2 and sorted(ring.box) == [1, 2] and ring.seq == rot.seq and not ring.rewriting
    assert os.listdir(os.path.join(fleet["vault"], "keygen")) == [ring.box[2].hex()]
    with _admin(fleet) as v:  # a host key made after the rotation names the new generation
        api.add_host_key(v, "web3", HOST_PASSPHRASE, str(tmp / "web3.key"), kdf=FAST_KDF)
    material = HostKeyFile.open((tmp / "web3.key").read_bytes(), HOST_PASSPHRASE, "web3.key")
    assert (material.gen, material.box_public) == (2, ring.box[2])
    before = set(_session_gens(fleet["vault"]))
    with _host(fleet, "web1") as h:  # its key file names generation 1: it seals to the keyring's newest
        hp = api.backup(h, [str(fleet["src"])], host="web1")
    with _admin(fleet, "admin2") as v:
        (tmp / "src2").mkdir()
        (tmp / "src2" / "x").write_bytes(b"new data after the rotation" * 1000)
        api.backup(v, [str(tmp / "src2")])
    new = {s: g for s, g in _session_gens(fleet["vault"]).items() if s not in before}
    assert len(new) >= 2 and set(new.values()) == {2}
    with _admin(fleet, "admin3") as v:
        _restores(v, fleet, hp, tmp)
        _restores(v, fleet, fleet["admin_point"], tmp)
        report = Checker(v).run(read_data=True)
        assert report["ok"], report["problems"]


def test_rotate_rewrite_leaves_no_blob_under_an_old_key_and_every_point_restores(fleet):
    tmp = fleet["tmp"]
    with _host(fleet, "web1") as h:
        hp = api.backup(h, [str(fleet["src"])], host="web1")
    with _admin(fleet) as v:
        old_salts = _pack_salts(v)
        res = api.rotate_key(v, rewrite=True, margin=0)
    assert res.rotated and res.done and res.packs_rewritten > 0 and res.packs_deleted == res.packs_rewritten
    gens = _session_gens(fleet["vault"])
    with _admin(fleet, "admin2") as v:
        salts = _pack_salts(v)
        assert salts and not salts & old_salts
        assert all(gens.get(s) == res.gen for s in salts), {s: gens.get(s) for s in salts}  # no enc_key blob either
        assert not _ring(v).rewriting and sorted(_ring(v).box) == [1, 2]
        for point in (fleet["admin_point"], hp):
            _restores(v, fleet, point, tmp)
        report = Checker(v).run(read_data=True)
        assert report["ok"], report["problems"]


def test_a_rewrite_waiting_for_its_margin_is_finished_by_the_next_run_without_rotating_again(fleet):
    with _admin(fleet) as v:
        first = api.rotate_key(v, rewrite=True)  # prune's 2h margin: the old packs wait
        assert not first.done and first.waiting and _ring(v).rewriting == first.gen
        second = api.rotate_key(v, rewrite=True, margin=0)
    assert not second.rotated and second.gen == first.gen and second.done
    assert second.plans_done == 1 and second.packs_deleted == first.packs_rewritten
    with _admin(fleet, "admin2") as v:
        gens = _session_gens(fleet["vault"])
        assert all(gens.get(s) == first.gen for s in _pack_salts(v))
        assert Checker(v).run(read_data=True)["ok"]


@pytest.mark.parametrize("step", ["rotated", "resealed", "planned", "pack-deleted"])
def test_a_rewrite_killed_at_a_step_leaves_a_valid_vault_and_the_next_run_finishes_it(fleet, step):
    tmp = fleet["tmp"]
    cli = Cli(tmp / "home")
    res = cli("key", "rotate", "--rewrite", "--margin", "0", "--vault", fleet["vault"],
              env={"RECOVAULT_TEST_PRUNE_KILL": step})
    assert res.returncode == -9, res.stderr
    with _admin(fleet, "after-kill") as v:
        assert Checker(v).run(read_data=True)["ok"]
        _restores(v, fleet, fleet["admin_point"], tmp / "k")
    out = json.loads(ok(cli("key", "rotate", "--rewrite", "--margin", "0", "--json", "--vault",
                            fleet["vault"])).stdout)
    assert out["rewrite"]["done"] and out["gen"] == 2 and not out["rewrite"]["rotated"]
    with _admin(fleet, "after-run") as v:
        gens = _session_gens(fleet["vault"])
        assert all(gens.get(s) == 2 for s in _pack_salts(v))
        assert Checker(v).run(read_data=True)["ok"]
        _restores(v, fleet, fleet["admin_point"], tmp / "n")


def test_a_revoked_host_key_is_refused_at_open_and_its_later_sessions_on_check_and_restore(fleet):
    tmp = fleet["tmp"]
    with _host(fleet, "web1") as h:
        before = api.backup(h, [str(fleet["src"])], host="web1")
    late = _host(fleet, "web1", cache="late")  # opened before the revocation, backs up after it
    with _admin(fleet) as v:
        keyid = fleet["keys"]["web1"]
        entry, changed = api.revoke_host_key(v, keyid[:8])
        assert changed and entry.keyid == keyid and entry.revoked and len(entry.accepted) == 1
        assert api.revoke_host_key(v, keyid)[1] is False  # again: nothing changes
    with late:
        after = api.backup(late, [str(fleet["src"])], host="web1")
    with pytest.raises(HostKeyRevoked, match="this host key was revoked"):
        _host(fleet, "web1", cache="again")
    with _host(fleet, "web2") as h2:  # another host is unaffected
        api.backup(h2, [str(fleet["src"])], host="web2")
    with _admin(fleet, "admin2") as v:
        _restores(v, fleet, before, tmp)
        with pytest.raises(RefusedSession, match="refused.*revocation") as e:
            api.restore(v, after.id, str(tmp / "r-after"))
        assert e.value.exit_code == 15
        listed = {p.id for p in api.snapshots(v)}  # the refused point is not the vault's: left out, not fatal
        assert before.id in listed and after.id not in listed
        api.prune(v)  # nor does it stop prune (its blobs are garbage)
        report = Checker(v).run()
        assert not report["ok"] and any("revocation" in p and keyid[:12] in p for p in report["problems"])
    cli = Cli(tmp / "home", passphrase=HOST_PASSPHRASE)
    fails(cli("backup", "--vault", fleet["vault"], "--key-file", tmp / "web1.key", fleet["src"]), 23,
          "this host key was revoked")
    rows = json.loads(ok(Cli(tmp / "admin-home")("key", "list", "--json", "--vault", fleet["vault"])).stdout)
    states = {r["hostname"]: r["state"] for r in rows if r["role"] == "host"}
    assert states == {"web1": "revoked", "web2": "active"}
    assert "host key for web1  REVOKED" in ok(Cli(tmp / "admin-home")("key", "list", "--vault", fleet["vault"])).stdout


def test_revoke_refuses_the_admin_and_unknown_keys(fleet):
    cli = Cli(fleet["tmp"] / "home")
    vault = fleet["vault"]
    fails(cli("key", "revoke", "admin", "--vault", vault), 2, "only host keys are revoked")
    admin_keyid = os.listdir(os.path.join(vault, "keys"))[0]
    fails(cli("key", "revoke", admin_keyid[:10], "--vault", vault), 2, "is an admin key")
    fails(cli("key", "revoke", "0123abcd", "--vault", vault), 16, "no host key matches")
    fails(cli("key", "rotate", "--margin", "0", "--vault", vault), 2, "--margin goes with --rewrite")
