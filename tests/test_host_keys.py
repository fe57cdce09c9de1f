"""Host keys (issue 14, docs/vault-format.md §3): a host key backs up and deduplicates against other hosts'
data, and fails every read and delete (CLI and API) with one message and exit 22; the admin restores the
hosts' points byte for byte; format 3's objects (session keys, keyring, version 3 journal entries) hold."""
from __future__ import annotations

import json
import os
import shutil
from typing import Dict

import pytest

from recovault import api, core
from recovault.errors import CorruptData, HostKeyOnly, UsageError
from recovault.vault import format as fmt
from recovault.vault.check import Checker
from recovault.vault.hostkeys import (AdminKeys, HostKeyFile, Writer, seal_session_key, session_key_name)
from recovault.vault.hostvault import HOST_KEY_ONLY, HostVault

from test_cli import FAST_KDF, PASSPHRASE, Cli, api_vault, fails, ok

HOST_PASSPHRASE = "host passphrase of web1!"


def _tree(root, seed: int, big: int = 3 << 20) -> Dict[str, bytes]:
    """A small source tree: one big file (several chunks: restored by the C++ engine), a few small ones."""
    rnd = __import__("random").Random(seed)
    files = {"big.bin": rnd.randbytes(big), "a.txt": b"alpha\n" * 500, "sub/b.txt": b"beta\n" * 300}
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return files


def _objects(vault: str) -> Dict[str, bytes]:
    out = {}
    for dirpath, _dirs, names in os.walk(vault):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, vault)] = f.read()
    return out


@pytest.fixture
def fleet(tmp_path):
    """An admin vault with one admin backup of `data`, and two host keys (web1, web2) exported."""
    vault = api_vault(tmp_path / "v")
    src = tmp_path / "data"
    files = _tree(src, 1)
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "admin-cache")) as v:
        admin_point = api.backup(v, [str(src)])
        keys = {h: api.add_host_key(v, h, HOST_PASSPHRASE, str(tmp_path / f"{h}.key"), kdf=FAST_KDF)
                for h in ("web1", "web2")}
    return dict(vault=vault, src=src, files=files, admin_point=admin_point, keys=keys, tmp=tmp_path)


def _host(fleet, name: str, cache: str = "") -> HostVault:
    tmp = fleet["tmp"]
    return api.open_vault(fleet["vault"], HOST_PASSPHRASE, key_file=str(tmp / f"{name}.key"),
                          cache_dir=str(tmp / (cache or f"{name}-cache")))


def test_a_host_key_backs_up_deduplicating_against_another_hosts_data_and_the_admin_restores_it(fleet):
    tmp = fleet["tmp"]
    copy = tmp / "copy"  # the same files on another host
    shutil.copytree(fleet["src"], copy)
    with _host(fleet, "web1") as h1:
        p1 = api.backup(h1, [str(copy)], host="web1")
    with _host(fleet, "web2") as h2:
        p2 = api.backup(h2, [str(copy)], host="web2")
    # every data chunk was stored by the admin already: nothing but the small trees is added
    assert p1.stats["bytes_added"] == 0 and p2.stats["bytes_added"] == 0
    assert p1.stats["bytes_read"] == sum(map(len, fleet["files"].values()))
    with api.open_vault(fleet["vault"], PASSPHRASE, cache_dir=str(tmp / "admin2")) as v:
        assert {p.id for p in api.snapshots(v)} == {fleet["admin_point"].id, p1.id, p2.id}
        for point in (p1, p2):
            target = tmp / f"restore-{point.host}"
            api.restore(v, point.id, str(target))
            for rel, data in fleet["files"].items():
                with open(os.path.join(str(target) + str(copy), rel), "rb") as f:
                    assert f.read() == data, rel
        report = Checker(v).run(read_data=True)
        assert report["ok"], report["problems"]
        v.journal.refresh()
        assert len(v.journal.heads()) == 1  # the hosts' entries chained onto the admin's


def test_a_host_key_fails_every_read_and_delete_through_the_api(fleet):
    before = _objects(fleet["vault"])
    with _host(fleet, "web1") as h:
        point = fleet["admin_point"].id
        calls = [lambda: api.snapshots(h), lambda: api.restore(h, point, str(fleet["tmp"] / "r")),
                 lambda: api.forget(h, ids=[point]), lambda: api.prune(h), lambda: api.undelete(h, point),
                 lambda: api.set_policy(h, soft_delete_days=0), lambda: api.migrate(h),
                 lambda: h.load_snapshot(point), lambda: h.find_snapshot("latest"), lambda: h.delete_snapshot(point),
                 lambda: h.policy, lambda: h.deleted_snapshots(), lambda: h.purge_expired(),
                 lambda: h.read_blob(bytes(32)), lambda: api.add_host_key(h, "x", HOST_PASSPHRASE, "/nonexistent"),
                 lambda: Checker(h), lambda: api.copy(h, h), lambda: api.rotate_key(h),
                 lambda: api.rotate_key(h, rewrite=True, margin=0), lambda: api.revoke_host_key(h, "ab"),
                 lambda: api.host_key_list(h)]
        for call in calls:
            with pytest.raises(HostKeyOnly) as e:
                call()
            assert str(e.value) == HOST_KEY_ONLY and e.value.exit_code == 22
    assert _objects(fleet["vault"]) == before  # nothing read into being, nothing deleted


def test_a_host_cannot_open_what_it_wrote_itself(fleet):
    """Its recovery point, journal entry and data are sealed under its session's key, which it forgets: a
    later session of the same host key opens none of them."""
    with _host(fleet, "web1") as h:
        point = api.backup(h, [str(fleet["src"])], host="web1")
    raw = open(os.path.join(fleet["vault"], fmt.SNAPSHOTS + point.id), "rb").read()
    with _host(fleet, "web1") as h:
        with pytest.raises(CorruptData):
            h.sealer.unseal(fmt.AAD_SNAPSHOT, raw, "the point")
        with pytest.raises(CorruptData):
            h.points._decode(point.id, raw)


CLI_REFUSED = [
    ["snapshots"], ["ls", "latest"], ["restore", "latest", "--target", "{tmp}/r"], ["dump", "latest", "/x"],
    ["diff", "latest", "latest"], ["find", "x"], ["forget", "latest"], ["undelete", "latest"], ["prune"],
    ["check"], ["check", "--read-data"], ["stats"], ["status"], ["migrate"], ["repair", "index"],
    ["policy", "show"], ["policy", "set", "--soft-delete-days", "0"], ["key", "list"], ["key", "add"],
    ["key", "add", "--role", "host", "--host", "x", "--export", "{tmp}/x.key"], ["key", "remove", "abc"],
    ["key", "passwd"], ["key", "rotate"], ["key", "rotate", "--rewrite"], ["key", "revoke", "abc"],
    ["copy", "--from", "{vault}"], ["mount", "{tmp}/mnt"],
]


def test_a_host_key_fails_every_read_and_delete_on_the_cli(fleet):
    tmp = fleet["tmp"]
    cli = Cli(tmp / "home", passphrase=HOST_PASSPHRASE)
    before = _objects(fleet["vault"])
    env = {"RECOVAULT_KEY_FILE": str(tmp / "web1.key")}
    for argv in CLI_REFUSED:
        args = [a.format(tmp=tmp, vault=fleet["vault"]) for a in argv]
        fails(cli(*args, "--vault", fleet["vault"], env=env), 22, HOST_KEY_ONLY)
    fails(cli("snapshots", "--vault", fleet["vault"], "--key-file", tmp / "web1.key"), 22, HOST_KEY_ONLY)
    assert _objects(fleet["vault"]) == before
    # and backs up
    out = json.loads(ok(cli("backup", "--vault", fleet["vault"], "--key-file", tmp / "web1.key", "--json",
                            fleet["src"])).stdout)
    assert out["stats"]["bytes_added"] == 0


def test_key_add_role_host_on_the_cli_upgrades_a_v2_vault_and_the_host_backs_up(tmp_path):
    vault = api_vault(tmp_path / "v")
    cli = Cli(tmp_path / "home")
    src = tmp_path / "src"
    files = _tree(src, 2, big=200 << 10)
    ok(cli("backup", "--vault", vault, src))
    assert json.loads(open(os.path.join(vault, "config")).read())["recovault"] == 2
    (tmp_path / "h.pass").write_text(HOST_PASSPHRASE + "\n")
    res = ok(cli("key", "add", "--vault", vault, "--role", "host", "--host", "web1", "--export",
                 tmp_path / "web1.key", "--new-passphrase-file", tmp_path / "h.pass", "--json"))
    doc = json.loads(res.stdout)
    assert doc["role"] == "host" and doc["host"] == "web1" and "format version 2 to 3" in res.stderr
    assert json.loads(open(os.path.join(vault, "config")).read())["recovault"] == 3
    assert oct(os.stat(tmp_path / "web1.key").st_mode & 0o777) == "0o600"
    key = json.loads((tmp_path / "web1.key").read_text())
    assert key["role"] == "host" and key["host"] == "web1" and not any(
        n.endswith(key["keyid"]) for n in os.listdir(os.path.join(vault, "keys")))  # never stored in the vault
    rows = json.loads(ok(cli("key", "list", "--vault", vault, "--json")).stdout)
    assert [(r["role"], r["hostname"], r["keyid"]) for r in rows if r["role"] == "host"] == [
        ("host", "web1", doc["keyid"])]
    assert "host key for web1" in ok(cli("key", "list", "--vault", vault)).stdout
    host = Cli(tmp_path / "host-home", passphrase=None)
    ok(host("backup", "--vault", vault, "--key-file", tmp_path / "web1.key", "--passphrase-file",
            tmp_path / "h.pass", src))
    fails(cli("key", "add", "--vault", vault, "--role", "host", "--host", "web1", "--export",
              tmp_path / "web1.key", "--new-passphrase-file", tmp_path / "h.pass"), 2, "exists already")
    fails(cli("key", "add", "--vault", vault, "--role", "host", "--export", tmp_path / "w.key"), 2, "--host")
    restored = tmp_path / "r"
    ok(cli("restore", "--vault", vault, "latest", "--target", restored))
    for rel, data in files.items():
        assert (restored / str(src).lstrip("/") / rel).read_bytes() == data


def test_a_key_file_of_another_vault_is_refused(fleet, tmp_path):
    other = api_vault(tmp_path / "other")
    with api.open_vault(other, PASSPHRASE, cache_dir=str(tmp_path / "oc")) as v:
        api.add_host_key(v, "web1", HOST_PASSPHRASE, str(tmp_path / "other.key"), kdf=FAST_KDF)
    before = _objects(fleet["vault"])
    with pytest.raises(UsageError, match="is for another vault"):
        api.open_vault(fleet["vault"], HOST_PASSPHRASE, key_file=str(tmp_path / "other.key"))
    cli = Cli(tmp_path / "home", passphrase=HOST_PASSPHRASE)
    fails(cli("backup", "--vault", fleet["vault"], "--key-file", tmp_path / "other.key", fleet["src"]), 2,
          "is for another vault")
    assert _objects(fleet["vault"]) == before
    with pytest.raises(UsageError, match="not a recovault host key file"):
        api.open_vault(fleet["vault"], HOST_PASSPHRASE, key_file=os.path.join(fleet["vault"], "config"))


def test_an_edited_host_key_file_is_refused(fleet):
    path = fleet["tmp"] / "web1.key"
    doc = json.loads(path.read_text())
    doc["host"] = "db1"  # authenticated: the material does not open
    path.write_text(json.dumps(doc))
    with pytest.raises(CorruptData, match="changed after it was written"):
        _host(fleet, "web1")


def test_a_v2_vault_is_unchanged_by_the_new_code_until_a_host_key_is_added(tmp_path):
    vault = api_vault(tmp_path / "v")
    src = tmp_path / "src"
    _tree(src, 3, big=100 << 10)
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        api.backup(v, [str(src)])
        api.forget(v, ids=[api.snapshots(v)[0].id], allow_empty=True)
        api.prune(v)
    names = _objects(vault)
    assert json.loads(names["config"])["recovault"] == 2
    assert not any(n.startswith(("keyring", "sessionkeys")) for n in names)
    for n, raw in names.items():
        if n.startswith("journal/"):
            assert not raw.startswith(b"RVJ3")
    # the master's enc_key opens every sealed index file and point: nothing under a session key
    master = v.master
    for n, raw in names.items():
        if n.startswith("index/"):
            core.open_blob(master.enc_key, fmt.AAD_INDEX, raw)


def test_the_host_backs_up_incrementally_from_its_own_cache_and_fully_without_it(fleet):
    src = fleet["src"]
    with _host(fleet, "web1") as h:
        first = api.backup(h, [str(src)], host="web1")
    (src / "a.txt").write_bytes(b"changed\n" * 10)
    with _host(fleet, "web1") as h:
        second = api.backup(h, [str(src)], host="web1")
    assert second.mode == "incremental" and second.parent == first.id
    assert second.stats["bytes_read"] == 80 and second.stats["files_unmodified"] == 2
    with _host(fleet, "web1", cache="fresh-cache") as h:  # the cache lost: a full read, deduplicated by ID
        third = api.backup(h, [str(src)], host="web1")
    assert third.mode == "full" and third.stats["bytes_read"] > 3 << 20 and third.stats["bytes_added"] == 0
    # the host's cache is sealed: no plaintext of its trees in it
    for dirpath, _d, names in os.walk(fleet["tmp"] / "web1-cache"):
        for n in names:
            assert b"big.bin" not in open(os.path.join(dirpath, n), "rb").read()


def test_a_planted_session_key_never_makes_admin_data_unreadable(fleet):
    """A host (or anyone who can write) stores a session key object for the salt of the admin's blobs: the
    admin's reads fall back to the master key (Python and the C++ engine), and the data restores."""
    tmp = fleet["tmp"]
    vault = fleet["vault"]
    with _host(fleet, "web1") as h:
        writer = h.host_key.writer()
    salts = set()
    for n, raw in _objects(vault).items():
        if n.startswith("data/"):
            salts.add(raw[2:18])
    for salt in salts:
        path = os.path.join(vault, session_key_name(salt))
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(seal_session_key(salt, os.urandom(32), writer))
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp / "admin3")) as v:
        assert all(v.sealer.session_key(salt) is not None for salt in salts)  # the planted keys are believed
        api.restore(v, fleet["admin_point"].id, str(tmp / "r"))
        for rel, data in fleet["files"].items():
            assert (tmp / "r" / str(fleet["src"]).lstrip("/") / rel).read_bytes() == data


def test_a_session_key_signed_by_a_key_not_in_the_keyring_is_ignored(fleet):
    tmp = fleet["tmp"]
    with _host(fleet, "web1") as h:
        point = api.backup(h, [str(fleet["src"])], host="web1")
        salt = h.sealer.id_session.salt
    path = os.path.join(fleet["vault"], session_key_name(salt))
    honest = open(path, "rb").read()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    doc = json.loads(honest)
    forger = Writer(doc["keyid"], Ed25519PrivateKey.generate(), doc["gen"], AdminKeys.derive(
        api.open_vault(fleet["vault"], PASSPHRASE, cache_dir=str(tmp / "a4")).master).box_public()[1])
    with open(path, "wb") as f:
        f.write(seal_session_key(salt, os.urandom(32), forger))
    with api.open_vault(fleet["vault"], PASSPHRASE, cache_dir=str(tmp / "admin5")) as v:
        assert v.sealer.resolver.known(salt) is None
        with pytest.raises(CorruptData):
            v.load_snapshot(point.id)
        report = Checker(v).run()
        assert any(f"sessionkeys/{salt.hex()}" in w and "not signed by a key of the keyring" in w
                   for w in report["warnings"]), report["warnings"]
        assert not report["ok"]  # the point it sealed does not open: a problem
    with open(path, "wb") as f:
        f.write(honest)
    with api.open_vault(fleet["vault"], PASSPHRASE, cache_dir=str(tmp / "admin6")) as v:
        assert v.load_snapshot(point.id).host == "web1"


def test_host_key_file_material_holds_no_admin_secret(fleet):
    raw = (fleet["tmp"] / "web1.key").read_bytes()
    material = HostKeyFile.open(raw, HOST_PASSPHRASE, "web1.key")
    with api.open_vault(fleet["vault"], PASSPHRASE, cache_dir=str(fleet["tmp"] / "a7")) as v:
        master = v.master
    secrets_held = {material.id_key, material.chunker_seed, material.index_key, material.signing}
    assert master.enc_key not in secrets_held and master.mac_key not in secrets_held
    assert material.index_key == AdminKeys.derive(master).index_key


def test_a_job_file_with_a_host_key_backs_up_and_may_not_forget_or_check(fleet, monkeypatch):
    from recovault.jobfile.runner import Job
    from recovault.jobfile.spec import JobFileError, load_job
    tmp = fleet["tmp"]
    for k in [k for k in os.environ if k.startswith("RECOVAULT_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("RECOVAULT_STATE_DIR", str(tmp / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp / "xdg"))
    (tmp / "h.pass").write_text(HOST_PASSPHRASE + "\n")
    (tmp / "h.pass").chmod(0o600)
    head = (f'[vault]\nurl = "{fleet["vault"]}"\npassphrase_file = "{tmp / "h.pass"}"\n'
            f'key_file = "{tmp / "web1.key"}"\n[backup]\npaths = ["{fleet["src"]}"]\nhost = "web1"\n')
    bad = tmp / "bad.toml"
    bad.write_text(head + "[retention]\nkeep_last = 3\n[check]\nevery = \"7d\"\n")
    with pytest.raises(JobFileError) as e:
        load_job(str(bad))
    assert "a host key can add backups only" in str(e.value) and "[retention] or [check]" in str(e.value)
    good = tmp / "web.toml"
    good.write_text(head)
    record = Job.from_file(str(good)).run()
    assert record.exit_code == 0, record
    with api.open_vault(fleet["vault"], PASSPHRASE, cache_dir=str(tmp / "a8")) as v:
        assert [p.host for p in api.snapshots(v)].count("web1") == 1


def test_the_admin_reading_a_format_3_vault_writes_nothing(fleet):
    """A restore (with --verify: it hashes through a pipeline), ls and check store no session key object:
    only a session that stores what it seals needs one."""
    tmp = fleet["tmp"]
    with _host(fleet, "web1") as h:
        api.backup(h, [str(fleet["src"])], host="web1")
    before = _objects(fleet["vault"])
    with api.open_vault(fleet["vault"], PASSPHRASE, cache_dir=str(tmp / "a9")) as v:
        for point in api.snapshots(v):
            api.restore(v, point.id, str(tmp / f"r-{point.id[:8]}"), verify=True)
        assert Checker(v).run(read_data=True)["ok"]
    after = _objects(fleet["vault"])
    assert sorted(set(after) - set(before)) == [] and after == before


def test_a_v2_config_relabelled_3_is_refused_as_tampered_with(tmp_path):
    vault = api_vault(tmp_path / "v")
    path = os.path.join(vault, "config")
    doc = json.loads(open(path).read())
    doc["recovault"] = 3
    with open(path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(CorruptData, match="changed after it was written"):
        api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c"))


@pytest.mark.parametrize("stop", ["compacted", "anchored"])
def test_an_upgrade_to_format_3_stopped_before_its_config_leaves_a_vault_that_reads_and_upgrades_again(
        tmp_path, monkeypatch, stop):
    """Stopped after the index was rewritten under index_key (and the heads' entry written), before the
    config's put: the vault is still format 2, everything reads with no damage reported, and the next
    `key add --role host` finishes the upgrade."""
    from recovault.vault.repo import Vault
    vault = api_vault(tmp_path / "v")
    src = tmp_path / "src"
    files = _tree(src, 4, big=300 << 10)
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        point = api.backup(v, [str(src)])

    def killed(*_a, **_k):
        raise KeyboardInterrupt("kill -9")
    if stop == "compacted":  # the journal is read right after the compaction, to write the heads' entry
        monkeypatch.setattr("recovault.vault.journal.Journal.refresh", killed)
    else:
        monkeypatch.setattr(Vault, "_write_config", killed)
    v = api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c2"))
    with pytest.raises(KeyboardInterrupt):
        api.add_host_key(v, "web1", HOST_PASSPHRASE, str(tmp_path / "web1.key"), kdf=FAST_KDF)
    monkeypatch.undo()
    assert json.loads(open(os.path.join(vault, "config")).read())["recovault"] == 2
    events = []
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c3"), on_event=lambda k, i: events.append(i)) as v:
        assert v.format_version == 2
        api.restore(v, point.id, str(tmp_path / "r"))
        report = Checker(v).run(read_data=True)
        assert report["ok"] and not report["damaged_indexes"], report
        api.add_host_key(v, "web1", HOST_PASSPHRASE, str(tmp_path / "web1.key"), kdf=FAST_KDF)
        assert v.format_version == 3
    assert not [e for e in events if "damaged" in str(e) or "corrupt" in str(e)], events
    for rel, data in files.items():
        assert (tmp_path / "r" / str(src).lstrip("/") / rel).read_bytes() == data
    with _host({"vault": vault, "tmp": tmp_path}, "web1") as h:
        assert api.backup(h, [str(src)], host="web1").stats["bytes_added"] == 0


def test_a_host_honours_prune_plans_and_prune_reads_the_hosts_session(tmp_path):
    """Plans are sealed under index_key: a host's backup reads them and stores again the chunks a pending plan
    will delete; the admin's prune reads the host's session (sealed under its session key) and what it has
    seen; after the plan is carried out, the host's point restores byte for byte."""
    from recovault.vault.coordination import Coordinator, WriterSession
    from recovault.vault.repo import Settings
    vault = str(tmp_path / "v")
    src = tmp_path / "src"
    files = _tree(src, 5, big=400 << 10)
    settings = Settings(min_size=16 << 10, avg_size=64 << 10, max_size=256 << 10, pack_size=1 << 20)
    with api.init_vault(vault, PASSPHRASE, settings=settings, kdf=FAST_KDF, cache_dir=str(tmp_path / "a"),
                        soft_delete_days=0) as v:
        admin_point = api.backup(v, [str(src)])
        api.add_host_key(v, "web1", HOST_PASSPHRASE, str(tmp_path / "web1.key"), kdf=FAST_KDF)
        api.forget(v, ids=[admin_point.id], allow_empty=True)
        plan = api.prune(v, margin=3600).new_plan
    assert plan
    fleet = {"vault": vault, "tmp": tmp_path}
    with _host(fleet, "web1") as h:
        session = WriterSession(Coordinator(h.storage, h.sealer))
        assert [p.name for p in session.open()] == [plan]
        with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "a2")) as v:
            seen = [s.plans for s in Coordinator(v.storage, v.sealer).sessions()]
        session.close()
        assert seen == [[plan]]
        point = api.backup(h, [str(src)], host="web1")
    assert point.stats["bytes_added"] >= len(files["big.bin"])  # the plan's garbage stored again
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "a3")) as v:
        result = api.prune(v, margin=0)
        assert [p.done for p in result.plans if p.plan == plan] == [True]
        api.restore(v, point.id, str(tmp_path / "r"))
        assert Checker(v).run(read_data=True)["ok"]
    for rel, data in files.items():
        assert (tmp_path / "r" / str(src).lstrip("/") / rel).read_bytes() == data


def test_an_admin_process_reads_a_host_key_registered_after_it_read_the_keyring(fleet):
    """The keyring is read again when a listed session key object does not open under the one read before:
    a host key added meanwhile (by another admin process) is then known."""
    tmp = fleet["tmp"]
    with api.open_vault(fleet["vault"], PASSPHRASE, cache_dir=str(tmp / "a10")) as v:
        assert {h.host for h in v.sealer.resolver.ring().hosts} == {"web1", "web2"}
        with api.open_vault(fleet["vault"], PASSPHRASE, cache_dir=str(tmp / "a11")) as other:
            api.add_host_key(other, "web3", HOST_PASSPHRASE, str(tmp / "web3.key"), kdf=FAST_KDF)
        with _host(fleet, "web3") as h:
            point = api.backup(h, [str(fleet["src"])], host="web3")
        assert v.load_snapshot(point.id).host == "web3"
