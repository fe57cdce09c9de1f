"""Every byte tampered (issue 13), the CI form: a seeded sample of positions in every kind of object of a small
vault (config, key files, packs: data and tree blobs, the sealed header, the trailer; index files, recovery
points, journal entries, a prune plan), and of every shard on an erasure-coded set. Each flip must be
reported by `check --read-data` or by a restore with a clear error, or be proven harmless, and no restore
may write a wrong byte silently (tamper_sweep.py says how). The long form is bench/tamper.py."""
from __future__ import annotations

import json
import os
import shutil

import pytest

import tamper_sweep as sweep
from recovault import api
from recovault.errors import StorageError
from recovault.vault.check import Checker
from test_cli import run_main

SEED = 2613
PER_KIND = 150  # positions per kind of object on the plain vault (1,130 flips, ~15 ms each)
PER_KIND_EC = 30  # per kind of object on the ec:2+1 set (each shard of each location)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    root = sweep.scratch(str(tmp_path_factory.mktemp("tamper")))
    try:
        yield sweep.make_scene(root, seed=SEED), root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def ec_set(tmp_path_factory):
    root = sweep.scratch(str(tmp_path_factory.mktemp("tamper-ec")))
    try:
        yield sweep.make_scene(root, seed=SEED, ec=(2, 1)), root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _key_files(scene):
    return sorted(p for p in scene.regions if "/keys/" in p)


def _flip_in_field(scene, path: str, field: str, mask: int = 0x01) -> sweep.Position:
    region = next(r for r in scene.regions[path] if r.what == f"field {field}")
    first = region.start + len(json.dumps(field)) + len(': "')  # the first character of its (string) value
    return sweep.Position(path, first + 1, mask, region)


# ---- defects the sweep found (each failed before its fix) ------------------------------------------------------


def test_check_reports_a_damaged_key_file_the_vault_did_not_open_with(plain, tmp_path, monkeypatch, capsys):
    """A flip in a key file other than the one the passphrase opens (here: the second key's host name) left
    the vault opening as before, and check said nothing: the damage showed only to whoever needed that key."""
    scene, _ = plain
    with sweep.open_fresh(scene) as v:
        used = v.keyid
    other = next(p for p in _key_files(scene) if not p.endswith(used))
    with sweep.flipped(_flip_in_field(scene, other, "hostname")):
        with sweep.open_fresh(scene) as v:
            res = Checker(v).run()
        assert not res["ok"]
        assert any(os.path.basename(other) in p and "digest" in p for p in res["problems"]), res["problems"]
        monkeypatch.setenv("RECOVAULT_PASSPHRASE", sweep.PASSPHRASE)
        monkeypatch.setenv("XDG_CACHE_HOME", os.fspath(tmp_path / "xdg"))
        run = run_main(["check", "--vault", scene.url, "--json"], capsys)
    out = json.loads(run.out)
    assert run.code == 15 and not out["ok"] and out["stats"]["keys"] == 2


def test_check_reports_a_damaged_digest_of_the_key_in_use(plain):
    """The key file the vault opens with, damaged in its digest alone, still opens (the AAD vouches for the
    rest): check says so rather than pass."""
    scene, _ = plain
    with sweep.open_fresh(scene) as v:
        used = next(p for p in _key_files(scene) if p.endswith(v.keyid))
    with sweep.flipped(_flip_in_field(scene, used, "digest", 0x02)):  # '0'..'9' <-> another digit or letter
        with sweep.open_fresh(scene) as v:
            res = Checker(v).run()
    assert not res["ok"] and any("digest" in p for p in res["problems"])


@pytest.mark.parametrize("kind, holds", [("session", "every prune plan waits"), ("lease", "holding the lease")])
def test_check_warns_of_a_session_or_lease_that_does_not_open(plain, kind, holds):
    """A backup session or a prune lease left by a killed process, then damaged, was read by nobody but prune
    (which takes it, safely, for a live backup or a held lease): check said nothing of an object that holds
    prune back. Now it warns, naming it and for how long it holds prune back (no data is at stake: ok)."""
    scene, _ = plain
    path, region = next((p, r) for p, rs in sorted(scene.regions.items()) for r in rs
                        if r.kind == kind and r.what == "ciphertext")
    with sweep.flipped(sweep.Position(path, region.start, 0x01, region)):
        with sweep.open_fresh(scene) as v:
            res = Checker(v).run()
    assert res["ok"], res["problems"]
    said = [w for w in res["warnings"] if w.startswith(f"{kind} {os.path.basename(path)} does not open")]
    assert said and holds in said[0] and "the next prune deletes it" in said[0], res["warnings"]


@pytest.mark.parametrize("field", ["set", "index"])
def test_a_rotten_descriptor_leaves_its_location_out_instead_of_refusing_the_set(ec_set, field):
    """One flipped digit in one location's descriptor (its set id, or its index) made the set refuse to open
    ("belongs to another erasure-coded set", "is location 4 of an ec:2+1 set"), though the other locations
    held every object: rot there looked like another set's disk. Now the descriptor's check tells rot from
    another set: the location is left out (reads go around it, writes name it), as an unreadable one is."""
    scene, root = ec_set
    path = os.path.join(scene.roots[2], sweep.erasure.DESCRIPTOR)
    region = next(r for r in scene.regions[path] if r.what == f"field {field}")
    with open(path, "rb") as f:
        raw = f.read()
    at = raw.index(b'"%s": ' % field.encode(), region.start) + len(f'"{field}": ') + (field == "set")
    pos = sweep.Position(path, at, 0x01 if raw[at:at + 1].isdigit() else 0x07, region)  # still a hex digit
    with sweep.flipped(pos):
        with sweep.open_fresh(scene) as v:
            assert Checker(v).run(read_data=True)["ok"]
            pid = next(iter(scene.points))
            api.restore(v, pid, os.path.join(root, "rotten-" + field))
            with pytest.raises(StorageError, match="location 3 .*descriptor is damaged"):
                v.storage.put("sessions/" + "0" * 32, b"x")
    assert sweep.fingerprint(os.path.join(root, "rotten-" + field)) == scene.points[pid]


# ---- the sweep ---------------------------------------------------------------------------------------------


def test_the_sweep_catches_a_restore_that_writes_a_wrong_byte(plain, monkeypatch):
    """The harness itself: a restore that silently writes a wrong byte is a finding (so a green sweep means
    something)."""
    scene, root = plain
    real = api.restore

    def bad_restore(vault, point, target, *a, **kw):
        res = real(vault, point, target, *a, **kw)
        for dp, _dn, fns in os.walk(target):
            for f in fns:
                p = os.path.join(dp, f)
                if os.path.getsize(p) and not os.path.islink(p):
                    with open(p, "r+b") as fh:
                        b = fh.read(1)
                        fh.seek(0)
                        fh.write(bytes([b[0] ^ 1]))
                    return res
        return res

    monkeypatch.setattr(sweep.api, "restore", bad_restore)
    pos = next(p for p in sweep.positions(scene, 1, SEED) if p.region.kind == "plan")  # restores go on
    with pytest.raises(sweep.Finding, match="differs from the recovery point"):
        sweep.probe(scene, pos, os.path.join(root, "work-bad"))


def test_every_flip_in_a_plain_vault_is_reported_and_no_restore_writes_a_wrong_byte(plain):
    scene, root = plain
    sample = sweep.positions(scene, PER_KIND, SEED)
    outcomes = sweep.sweep(scene, sample, os.path.join(root, "work"))  # a Finding fails the test, naming the byte
    kinds = {o.position.region.kind for o in outcomes}
    assert kinds == set(sweep.KINDS)
    regions = {(o.position.region.kind, o.position.region.what) for o in outcomes}
    assert {("pack", "data blob"), ("pack", "tree blob"), ("pack", "header tag"), ("pack", "trailer")} <= regions
    for o in outcomes:
        if o.how.startswith("harmless"):  # only a JSON object's bytes can change without changing its meaning
            assert o.position.region.kind in ("config", "key") and "same JSON document" in o.how, o
        if o.how == "check warning":  # a damaged plan deletes nothing, a session or lease holds prune back
            assert o.position.region.kind in ("plan", "session", "lease"), o


def test_every_flipped_shard_of_an_ec_set_is_read_around_or_reported(ec_set):
    """On ec:2+1 a flip in one shard is read around (the layer's own check rejects the shard, proven for
    each flip): every restore is right, and check's shard scan reports it. A flip in a location's descriptor
    leaves that location out, and check names it."""
    scene, root = ec_set
    sample = sweep.positions(scene, PER_KIND_EC, SEED)
    outcomes = sweep.sweep(scene, sample, os.path.join(root, "work"))
    kinds = {o.position.region.kind for o in outcomes}
    assert kinds == set(sweep.KINDS) | {"ec descriptor"}
    for o in outcomes:
        if o.position.region.kind == "ec descriptor":
            assert o.how.startswith(("check", "harmless: same descriptor")), o
        else:
            assert o.how.startswith("check"), o
