"""Key rotation and host key revocation (issue 14, docs/vault-format.md §3.1): `key rotate` makes a new X25519
generation that admin and host sessions seal to (hosts keep their key files); `key rotate --rewrite` re-seals
every stored blob under session keys of the new generation (the packs inspected: no blob or pack header under
an older key) and every point restores byte for byte, resumable after a kill -9; `key revoke` refuses a host
key's later sessions on check and restore, and the host itself at open."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Set, Tuple

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from recovault import api, core
from recovault.errors import CorruptData, HostKeyRevoked, RefusedSession
from recovault.vault import format as fmt
from recovault.vault import lifecycle
from recovault.vault.check import Checker
from recovault.vault.hostkeys import AdminKeys, HostKeyFile, open_session_key, read_keyring
from recovault.vault.journal import entry_layout
from recovault.vault.sealing import resealed_aad

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
        assert not _ring(v).rewriting and sorted(_ring(v).box) == [2]
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


@pytest.mark.parametrize("step", ["rotated", "resealed", "planned", "pack-deleted", "record-resealed",
                                  "keys-retired"])
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


def _sealed_objects(v) -> List[Tuple[str, bytes, bytes]]:
    """Every sealed thing stored in the vault, as (where, label it is sealed under, sealed bytes): every
    recovery point and journal entry (re-sealed or not), every pack header and blob, index file, plan,
    session and lease object."""
    out = []
    for name in [*v.storage.list(fmt.SNAPSHOTS), *v.storage.list(fmt.JOURNAL)]:
        raw, oid = v.storage.get(name), fmt.name_to_id(name)
        if name.startswith(fmt.JOURNAL):
            aad, _, sealed = entry_layout(raw, name)
        else:
            aad, sealed = fmt.AAD_SNAPSHOT, raw[len(fmt.RESEALED):] if raw.startswith(fmt.RESEALED) else raw
        out.append((name, resealed_aad(aad, oid) if raw.startswith(fmt.RESEALED) else aad, sealed))
    for info in v.storage.list_info(fmt.DATA):
        data = v.storage.get(info.name)
        start, hlen = fmt.split_pack(len(data), data[-fmt.PACK_TRAILER.size:])
        out.append((info.name, fmt.AAD_PACK_HEADER, data[start:start + hlen]))
        out += [(info.name, e.id, data[e.offset:e.offset + e.length]) for e in v.read_pack_header(info.name)]
    for prefix, aad in ((fmt.INDEX, fmt.AAD_INDEX), (fmt.PLANS, fmt.AAD_PLAN), (fmt.SESSIONS, fmt.AAD_SESSION),
                        (fmt.LOCKS, fmt.AAD_LEASE)):
        out += [(name, aad, v.storage.get(name)) for name in v.storage.list(prefix)]
    return out


def _old_keys(v) -> Tuple[List[bytes], Dict[int, X25519PrivateKey]]:
    """What a thief of the vault's keys before a rotation would hold: every session's data key, and the
    private key of every X25519 generation."""
    ring = _ring(v)
    box = AdminKeys.derive(v.master).with_generations(v.storage, ring, v.master.mac_key).box
    assert sorted(box) == sorted(ring.box)
    salts = [bytes.fromhex(n[len(fmt.SESSION_KEYS):]) for n in v.storage.list(fmt.SESSION_KEYS)]
    dks = [v.sealer.resolver.known(s) for s in salts]
    assert all(dks)
    return dks + [v.master.enc_key], box


def test_a_finished_rewrite_leaves_nothing_an_old_key_opens_and_keeps_every_name(fleet):
    """The issue's "a leaked old key opens nothing": every session data key and every generation's private key
    of before the rewrite, tried on every sealed thing stored after it, opens nothing; no byte of the vault
    holds an old session's salt; points and journal entries keep their names (re-sealed in place), so an
    admin's agent cache from before reads the vault as it was, and every point restores byte for byte."""
    tmp = fleet["tmp"]
    with _host(fleet, "web1") as h:
        hp = api.backup(h, [str(fleet["src"])], host="web1")
    with _admin(fleet) as v:
        api.rotate_key(v)  # a second generation in use before the rewrite
    with _host(fleet, "web2") as h:
        hp2 = api.backup(h, [str(fleet["src"])], host="web2")
    with _admin(fleet) as v:
        (tmp / "more").mkdir()
        (tmp / "more" / "f").write_bytes(os.urandom(300_000))
        extra = api.backup(v, [str(tmp / "more")])
        api.forget(v, ids=[extra.id], allow_empty=True)  # soft-deleted: its point and entries are kept, and re-sealed too
        dks, box = _old_keys(v)
        before = _sealed_objects(v)
        old_salts = {bytes(s[2:18]) for _, _, s in before} | {bytes.fromhex(n[len(fmt.SESSION_KEYS):])
                                                              for n in v.storage.list(fmt.SESSION_KEYS)}
        names = set(v.storage.list(fmt.SNAPSHOTS)) | set(v.storage.list(fmt.JOURNAL))
        assert sorted(box) == [1, 2] and len(dks) >= 5
        res = api.rotate_key(v, rewrite=True, margin=0)
    assert res.done and not res.unfinished and res.points_resealed == 4 and res.entries_resealed >= 6
    assert res.generations_retired == 2 and res.session_keys_deleted == len(dks) - 1
    with _admin(fleet, "after") as v:
        ring = _ring(v)
        assert sorted(ring.box) == [3] and not ring.rewriting
        assert os.listdir(os.path.join(fleet["vault"], "keygen")) == [ring.box[3].hex()]
        after = _sealed_objects(v)
        assert set(v.storage.list(fmt.SNAPSHOTS)) | set(v.storage.list(fmt.JOURNAL)) == names
        gens = _session_gens(fleet["vault"])
        index_salts = {bytes(s[2:18]) for w, _, s in after if w.startswith((fmt.INDEX, fmt.PLANS))}
        assert all(gens.get(s[2:18].hex()) == 3 for w, _, s in after if not w.startswith((fmt.INDEX, fmt.PLANS)))
        for dk in dks:
            for where, aad, sealed in after:
                with pytest.raises(core.AuthenticationError):
                    core.open_blob(dk, aad, sealed, 1 << 30)
        for name in v.storage.list(fmt.SESSION_KEYS):
            raw, salt = v.storage.get(name), bytes.fromhex(name[len(fmt.SESSION_KEYS):])
            claimed = json.loads(raw)["gen"]
            for key in box.values():  # an old private key, tried as the generation the object names
                with pytest.raises(ValueError, match="does not open"):
                    open_session_key(raw, salt, {claimed: key}, ring)
        stale = old_salts - index_salts
        for root, _, files in os.walk(fleet["vault"]):
            for f in files:
                data = open(os.path.join(root, f), "rb").read()
                assert not any(s in data for s in stale), os.path.join(root, f)
        for point in (fleet["admin_point"], hp, hp2):
            _restores(v, fleet, point, tmp / "r")
        assert Checker(v).run(read_data=True)["ok"]
    with _admin(fleet) as v:  # the agent cache of before: its cached copies no longer open, and are read again
        assert {p.id for p in api.snapshots(v)} == {fleet["admin_point"].id, hp.id, hp2.id}
        assert [d.point.id for d in lifecycle.deleted(v)] == [extra.id]
        report = Checker(v).run()
        assert report["ok"], report["problems"]
    with _host(fleet, "web1") as h:  # the hosts keep their key files: they seal to the new generation
        later = api.backup(h, [str(fleet["src"])], host="web1")
    with _admin(fleet, "last") as v:
        _restores(v, fleet, later, tmp / "l")
        assert sorted(set(_session_gens(fleet["vault"]).values())) == [3]


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
        res = api.rotate_key(v, rewrite=True, margin=0)  # nor a rewrite: the refused session is left as it is
        assert res.done and not res.unfinished, res.unfinished
    with _admin(fleet, "admin3") as v:
        _restores(v, fleet, before, tmp / "after-rewrite")
        with pytest.raises(RefusedSession, match="refused.*revocation"):
            api.restore(v, after.id, str(tmp / "r-after2"))
        report = Checker(v).run(read_data=True)
        assert [p for p in report["problems"] if "revocation" not in p] == []
    cli = Cli(tmp / "home", passphrase=HOST_PASSPHRASE)
    fails(cli("backup", "--vault", fleet["vault"], "--key-file", tmp / "web1.key", fleet["src"]), 23,
          "this host key was revoked")
    rows = json.loads(ok(Cli(tmp / "admin-home")("key", "list", "--json", "--vault", fleet["vault"])).stdout)
    states = {r["hostname"]: r["state"] for r in rows if r["role"] == "host"}
    assert states == {"web1": "revoked", "web2": "active"}
    assert "host key for web1  REVOKED" in ok(Cli(tmp / "admin-home")("key", "list", "--vault", fleet["vault"])).stdout


def test_a_revoked_hosts_later_packs_leave_the_index_so_the_data_is_stored_again(fleet):
    """A host still running after its key's revocation stores new chunks in packs the admin refuses; another
    host backing up the same data deduplicates against them (the index says they are there), so its point
    names refused blobs. Prune takes those packs out of the index (and deletes nothing while a point misses
    them), check names the point, the other host's next backup stores the chunks again, and the earlier
    point is whole again: it restores byte for byte."""
    tmp = fleet["tmp"]
    late = _host(fleet, "web1", cache="late")  # opened before the revocation
    with _admin(fleet) as v:
        api.revoke_host_key(v, fleet["keys"]["web1"])
    new = tmp / "new"
    new.mkdir()
    (new / "f").write_bytes(os.urandom(400_000))
    with late:
        api.backup(late, [str(new)], host="web1")  # a refused session: its packs hold the new chunks
    with _host(fleet, "web2") as h2:
        poisoned = api.backup(h2, [str(new)], host="web2")
    assert poisoned.stats["bytes_added"] < 10_000  # it deduplicated the 400 kB against the refused packs
    with _admin(fleet, "a1") as v:
        with pytest.raises(RefusedSession):
            api.restore(v, poisoned.id, str(tmp / "r0"))
        with pytest.raises(CorruptData, match="no index lists it"):  # nothing deleted while a point misses blobs
            api.prune(v, margin=0)
        report = Checker(v).run()
        assert any("in no index" in p and poisoned.id[:8] in p for p in report["problems"]), report["problems"]
    with _host(fleet, "web2") as h2:  # the chunks are not in the index any more: stored again
        healed = api.backup(h2, [str(new)], host="web2")
    assert healed.stats["bytes_added"] >= 400_000
    with _admin(fleet, "a2") as v:
        for point in (poisoned, healed):
            target = tmp / f"r-{point.id[:8]}"
            api.restore(v, point.id, str(target))
            assert (target / str(new).lstrip("/") / "f").read_bytes() == (new / "f").read_bytes()
        result = api.prune(v, margin=0)
        assert result.refused_packs == [] and sum(p.packs_deleted for p in result.plans) >= 1
        report = Checker(v).run(read_data=True)
        assert [p for p in report["problems"] if "revocation" not in p] == [], report["problems"]


def test_objects_planted_under_odd_names_stop_neither_a_rewrite_nor_a_prune(fleet):
    """Anyone with storage write access (a host) can put objects under any name: a `sessionkeys/` or `data/`
    name that is not a salt or a pack ID is not the vault's and is passed over (check names the session key
    one), never a traceback in the rewrite's retirement or in prune's search for a revoked host's packs."""
    late = _host(fleet, "web1", cache="late")
    with _admin(fleet) as v:
        api.revoke_host_key(v, fleet["keys"]["web1"])
    with late:
        api.backup(late, [str(fleet["src"])], host="web1")  # a refused session: prune looks for its packs
    for name in ("sessionkeys/not-a-salt", "data/zz/not-a-pack"):
        os.makedirs(os.path.dirname(os.path.join(fleet["vault"], name)), exist_ok=True)
        with open(os.path.join(fleet["vault"], name), "wb") as f:
            f.write(b"planted")
    with _admin(fleet) as v:
        api.prune(v, margin=0)
        assert api.rotate_key(v, rewrite=True, margin=0).done
    with _admin(fleet, "after") as v:
        _restores(v, fleet, fleet["admin_point"], fleet["tmp"] / "r")
        report = Checker(v).run()
        assert any("not-a-salt" in w for w in report["warnings"]), report["warnings"]


def test_revoke_refuses_the_admin_and_unknown_keys(fleet):
    cli = Cli(fleet["tmp"] / "home")
    vault = fleet["vault"]
    fails(cli("key", "revoke", "admin", "--vault", vault), 2, "only host keys are revoked")
    admin_keyid = os.listdir(os.path.join(vault, "keys"))[0]
    fails(cli("key", "revoke", admin_keyid[:10], "--vault", vault), 2, "is an admin key")
    fails(cli("key", "revoke", "0123abcd", "--vault", vault), 16, "no host key matches")
    fails(cli("key", "rotate", "--margin", "0", "--vault", vault), 2, "--margin goes with --rewrite")


def test_a_backup_begun_before_the_rotation_holds_the_retirement_back_until_it_ends(fleet):
    """A host's backup that read the keyring before the rotation seals to the old generation while it runs:
    the rewrite re-seals what is stored but keeps the old keys ("unfinished" names the session), and the
    next run after the backup ends re-seals what it stored meanwhile and retires them."""
    from recovault.vault.coordination import Coordinator, WriterSession
    tmp = fleet["tmp"]
    h = _host(fleet, "web1")
    running = WriterSession(Coordinator(h.storage, h.sealer))
    running.open()  # its session object, sealed under its data key, sealed to generation 1
    try:
        with _admin(fleet) as v:
            first = api.rotate_key(v, rewrite=True, margin=0)
            assert not first.done and len(first.unfinished) == 1, first.unfinished
            assert "began before the rotation and is running" in first.unfinished[0]
            assert sorted(_ring(v).box) == [1, 2] and _ring(v).rewriting == 2  # the old keys kept
        late = api.backup(h, [str(fleet["src"])], host="web1")  # the running host stores more, under gen 1
    finally:
        running.close()
        h.close()
    assert 1 in _session_gens(fleet["vault"]).values()
    out = json.loads(ok(Cli(tmp / "home")("key", "rotate", "--rewrite", "--margin", "0", "--json", "--vault",
                                           fleet["vault"])).stdout)["rewrite"]
    assert out["done"] and not out["rotated"] and out["points_resealed"] == 1 and out["generations_retired"] == 1
    with _admin(fleet, "after") as v:
        assert sorted(_ring(v).box) == [2] and set(_session_gens(fleet["vault"]).values()) == {2}
        _restores(v, fleet, late, tmp / "late")
        assert Checker(v).run(read_data=True)["ok"]


def test_a_resealed_record_is_believed_only_from_an_admin_session_under_its_own_name(fleet):
    """A re-sealed point or entry no longer hashes to its name: its tag must bind it instead. A flipped byte
    anywhere, a re-sealed object copied under another name, or one a host's session sealed (a host can seal
    anything it likes under its own data key), is corrupt to the admin, never believed."""
    tmp = fleet["tmp"]
    with _host(fleet, "web1") as h:
        hp = api.backup(h, [str(fleet["src"])], host="web1")
    with _admin(fleet) as v:
        assert api.rotate_key(v, rewrite=True, margin=0).done
        plain = json.dumps(v.points.load(hp.id).to_json(with_id=False), sort_keys=True).encode()
    vault = fleet["vault"]
    point_path = os.path.join(vault, "snapshots", hp.id)
    entry = next(n for n in os.listdir(os.path.join(vault, "journal"))
                 if open(os.path.join(vault, "journal", n), "rb").read().startswith(fmt.RESEALED + b"RVJ3"))
    entry_path = os.path.join(vault, "journal", entry)
    good_point, good_entry = open(point_path, "rb").read(), open(entry_path, "rb").read()
    assert good_point.startswith(fmt.RESEALED)

    def refused(path: str, raw: bytes, cache: str) -> None:
        with open(path, "wb") as f:
            f.write(raw)
        with _admin(fleet, cache) as v:
            report = Checker(v).run()
            assert not report["ok"], path
    for i in range(0, len(good_point), max(1, len(good_point) // 40)):
        flipped = bytearray(good_point)
        flipped[i] ^= 0x20
        with open(point_path, "wb") as f:
            f.write(bytes(flipped))
        with _admin(fleet, f"p{i}") as v, pytest.raises(CorruptData):
            v.points.load(hp.id)
    for i in range(0, len(good_entry), max(1, len(good_entry) // 40)):
        flipped = bytearray(good_entry)
        flipped[i] ^= 0x20
        with _admin(fleet, f"e{i}") as v, pytest.raises((CorruptData, ValueError)):
            v.journal.open_entry(entry, bytes(flipped))
    with open(point_path, "wb") as f:
        f.write(good_point)
    other = fleet["admin_point"].id  # the same bytes under another point's name
    with _admin(fleet, "moved") as v, pytest.raises(CorruptData, match="re-sealed"):
        v.points._decode(other, good_point)
    with _host(fleet, "web2") as h:  # a host forges point hp, sealed by its own session
        forged = fmt.RESEALED + h.sealer.reseal(fmt.AAD_SNAPSHOT, plain, hp.id)
    refused(point_path, forged, "forged")
    with _admin(fleet, "forged2") as v, pytest.raises(CorruptData, match="no admin session"):
        v.points.load(hp.id)
    with open(point_path, "wb") as f:
        f.write(good_point)
    with _admin(fleet, "whole") as v:
        _restores(v, fleet, hp, tmp / "w")
        assert Checker(v).run(read_data=True)["ok"]
