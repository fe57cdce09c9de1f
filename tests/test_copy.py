"""recovault copy and init --copy-keys-from, through the command line (real subprocesses): recovery points
with their blobs from one local vault into another, moved sealed (shared keys) or re-encoded (other keys),
never twice; resumed after kill -9; the target's session and journal; bad input leaving the target as it
was. The copy uses only the Storage interface, so the same runs hold on any back end."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time

import pytest

from recovault import api
from recovault.vault.journal import VaultPolicy
from test_cli import FAST_KDF, PASSPHRASE, Cli, api_vault, fails, json_out, ok
from e2e_tree import assert_same, build_tree, restored_root, state, write

OTHER = "another passphrase, long enough"


def _cli(tmp_path) -> Cli:
    cli = Cli(tmp_path / "home")
    cli.env["RECOVAULT_FROM_PASSPHRASE"] = PASSPHRASE
    return cli


def _source(tmp_path, files: int = 6, size: int = 300_000, soft_delete: bool = True):
    """A source vault with two recovery points of `src` (the second adds files); their ids."""
    vault = api_vault(tmp_path / "src-vault")
    src = tmp_path / "data"
    for i in range(files):
        write(src / f"f{i}", os.urandom(size))
    write(src / "sub" / "deep" / "small.txt", b"small\n" * 100)
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        if not soft_delete:
            v.set_policy(VaultPolicy(None, 0))  # the journal's first entry: in force at once
        first = api.backup(v, [str(src)])
        for i in range(files):
            write(src / f"g{i}", os.urandom(size))
        second = api.backup(v, [str(src)])
    return vault, src, [first.id, second.id]


def _tree_digest(root) -> dict:
    root = os.fsdecode(root)
    out = {}
    for dp, _dn, fns in os.walk(root):
        for f in fns:
            p = os.path.join(dp, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def _files(vault) -> dict:
    """Every stored object of a vault with its content digest: 'unchanged' means this is equal."""
    return _tree_digest(vault)


def _restores_same(cli, vault, sid, src, target) -> None:
    ok(cli("restore", sid, "--target", target, "--vault", vault))
    assert _tree_digest(restored_root(target, src)) == _tree_digest(src)


def test_copy_with_shared_keys_moves_sealed_blobs_and_keeps_ids(tmp_path):
    """init --copy-keys-from, then copy: the points keep their ids, blobs are moved as they are, a second
    copy copies nothing, and a backup into the target afterwards is incremental against the copied points
    (the offline-seeding workflow)."""
    cli = _cli(tmp_path)
    source, src, ids = _source(tmp_path)
    cloud = tmp_path / "cloud"
    made = json_out(cli("init", "--vault", cloud, "--copy-keys-from", source, "--json",
                        env={"RECOVAULT_PASSPHRASE": OTHER}))
    with api.open_vault(source, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        assert made["keys_from"] == v.id and made["id"] != v.id
    cli.env["RECOVAULT_PASSPHRASE"] = OTHER  # the target has its own key file, under its own passphrase
    res = json_out(cli("copy", "--from", source, "--to", cloud, "--json"))
    assert res["mode"] == "sealed" and [p["source_id"] for p in res["copied"]] == ids
    assert [p["id"] for p in res["copied"]] == ids and res["present"] == []
    assert res["blobs_copied"] > 0 and res["bytes_copied"] == res["bytes_read"]
    # every blob of the source's packs arrived byte for byte (same sealed bytes: same total)
    src_data = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(os.path.join(source, "data"))
                   for f in fs)
    assert res["bytes_copied"] < src_data
    report = json_out(cli("check", "--read-data", "--json", "--vault", cloud))
    assert report["ok"] and report["warnings"] == [] and report["stats"]["snapshots"] == 2
    assert report["stats"]["journal_entries"] == 2
    assert [p["id"] for p in json_out(cli("snapshots", "--json", "--vault", cloud))] == ids
    _restores_same(cli, cloud, ids[1], src, tmp_path / "r")

    again = json_out(cli("copy", "--from", source, "--to", cloud, "--json"))
    assert again["copied"] == [] and [p["id"] for p in again["present"]] == ids
    assert again["blobs_copied"] == again["bytes_read"] == 0

    back = json_out(cli("backup", "--vault", cloud, "--json", src))  # later backups: incremental, nothing new
    assert back["mode"] == "incremental" and back["parent"] == ids[1]
    assert back["stats"]["bytes_read"] == 0 and back["stats"]["bytes_added"] == 0
    write(src / "new", os.urandom(200_000))
    before = res["bytes_copied"]
    back = json_out(cli("backup", "--vault", cloud, "--json", src))
    assert back["stats"]["bytes_read"] == 200_000 and 200_000 <= back["stats"]["bytes_added"] < before


def test_copy_with_other_keys_reencodes_and_recognizes_its_copies(tmp_path):
    """A target with its own keys: blobs re-sealed under new IDs, trees (and an image's block map) rewritten;
    the copied point records its origin, so no later copy (either way, or through a third vault) copies it
    twice."""
    cli = _cli(tmp_path)
    source, src, ids = _source(tmp_path, files=3)
    image = tmp_path / "img" / "disk.img"
    image.parent.mkdir()
    with open(image, "wb") as f:
        f.truncate(3 << 20)
        f.seek(1 << 20)
        f.write(os.urandom(300_000))
    with api.open_vault(source, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        ids.append(api.backup(v, [], images=[str(image)]).id)
    target = api_vault(tmp_path / "target")
    res = json_out(cli("copy", "--from", source, "--vault", target, "--json"))
    assert res["mode"] == "re-encoded" and [p["source_id"] for p in res["copied"]] == ids
    new_ids = [p["id"] for p in res["copied"]]
    assert not set(new_ids) & set(ids)
    points = json_out(cli("snapshots", "--json", "--vault", target))
    assert [p["original"] for p in points] == ids and [p["id"] for p in points] == new_ids
    assert points[1]["parent"] == new_ids[0]  # the parent names the target's copy
    with api.open_vault(source, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        assert points[0]["tree"] != v.load_snapshot(ids[0]).tree  # new chunk IDs: a new tree
    assert json_out(cli("check", "--read-data", "--json", "--vault", target))["warnings"] == []
    _restores_same(cli, target, new_ids[1], src, tmp_path / "r")
    ok(cli("restore", new_ids[2], "--target", tmp_path / "ri", "--vault", target))
    assert (tmp_path / "ri" / str(image).lstrip("/")).read_bytes() == image.read_bytes()

    assert json_out(cli("copy", "--from", source, "--to", target, "--json"))["copied"] == []
    # the other way: the target's points are the source's own
    back = json_out(cli("copy", "--from", target, "--to", source, "--json"))
    assert back["copied"] == [] and [p["id"] for p in back["present"]] == ids
    # through a third vault: copied from the target first, the source's points are present there
    third = api_vault(tmp_path / "third")
    assert len(json_out(cli("copy", "--from", target, "--to", third, "--json"))["copied"]) == 3
    via = json_out(cli("copy", "--from", source, "--to", third, "--json"))
    assert via["copied"] == [] and len(via["present"]) == 3
    # named points only
    fourth = api_vault(tmp_path / "fourth")
    one = json_out(cli("copy", "--from", source, "--to", fourth, ids[1][:10], "--json"))
    assert [p["source_id"] for p in one["copied"]] == [ids[1]]


# Runs the CLI with a kill -9 of its own process at a named step of the copy ($RV_TEST_KILL_AT): "index"
# (the first index file stored in the target once a recovery point was copied: mid-way through the
# second point) or "journal" (the second point stored, not yet logged in the journal).
KILL_BOOT = r"""
import os, signal
from recovault.vault.blobstore import BlobStore
from recovault.vault.journal import Journal
at, target = os.environ["RV_TEST_KILL_AT"], os.environ["RV_TEST_TARGET"]
def copied_one():
    d = os.path.join(target, "snapshots")
    return os.path.isdir(d) and len([n for n in os.listdir(d) if not n.startswith(".tmp-")]) >= 1
orig_index, orig_append = BlobStore.store_index, Journal.append
def store_index(self, packs):
    name = orig_index(self, packs)
    if at == "index" and copied_one():
        os.kill(os.getpid(), signal.SIGKILL)
    return name
def append(self, op, *a, **kw):
    if at == "journal" and op == "add" and copied_one() and len(os.listdir(os.path.join(target, "snapshots"))) >= 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return orig_append(self, op, *a, **kw)
BlobStore.store_index, Journal.append = store_index, append
from recovault.cli import main
main()
"""


@pytest.mark.parametrize("shared", [True, False], ids=["sealed", "re-encoded"])
@pytest.mark.parametrize("step", ["index", "journal"])
def test_copy_killed_then_run_again_copies_only_what_is_missing(tmp_path, shared, step):
    cli = _cli(tmp_path)
    source, src, ids = _source(tmp_path, files=8, size=500_000)
    full, target = tmp_path / "full", tmp_path / "target"  # full: an uninterrupted copy, for comparison
    for t in (full, target):
        if shared:
            ok(cli("init", "--vault", t, "--copy-keys-from", source))
        else:
            api_vault(t)
    whole = json_out(cli("copy", "--from", source, "--to", full, "--json"))
    killed = cli("copy", "--from", source, "--to", target, boot=KILL_BOOT,
                 env={"RV_TEST_KILL_AT": step, "RV_TEST_TARGET": os.fspath(target)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    report = json_out(cli("check", "--read-data", "--json", "--vault", target))
    assert report["ok"] and report["problems"] == []

    again = json_out(cli("copy", "--from", source, "--to", target, "--json"))
    assert [p["source_id"] for p in again["present"]] == ids[:len(again["present"])]
    if step == "index":
        assert [p["source_id"] for p in again["copied"]] == ids[1:]
        assert 0 < again["bytes_copied"] < whole["bytes_copied"] // 2  # most of the second point arrived before
    else:  # stored but not logged: recognized (and logged now), nothing copied again
        assert again["copied"] == [] and again["blobs_copied"] == 0 and len(again["present"]) == 2
    report = json_out(cli("check", "--read-data", "--json", "--vault", target))
    assert report["ok"] and report["stats"]["snapshots"] == 2 and report["stats"]["journal_entries"] == 2
    assert not [w for w in report["warnings"] if "journal" in w], report["warnings"]
    points = json_out(cli("snapshots", "--json", "--vault", target))
    assert [p.get("original", p["id"]) for p in points] == ids
    if shared:
        assert [p["id"] for p in points] == ids
    _restores_same(cli, target, points[1]["id"], src, tmp_path / "r")
    assert json_out(cli("copy", "--from", source, "--to", target, "--json"))["copied"] == []


def test_copy_stores_again_what_a_pending_prune_plan_may_delete(tmp_path):
    """The copy is a writer (§10.1): a blob the target holds only in a pending plan's garbage is not reused
    but stored again, so a prune carrying out the plan while the copy runs (here: just before the copied
    point is saved; the plan older than the margin, and seen by the copy's session) loses nothing."""
    source, src, ids = _source(tmp_path, files=2)
    target = os.fspath(tmp_path / "target")
    cache = str(tmp_path / "c")
    with api.open_vault(source, PASSPHRASE, cache_dir=cache) as s:
        api.init_vault(target, PASSPHRASE, kdf=FAST_KDF, cache_dir=cache, keys_from=s).close()
        with api.open_vault(target, PASSPHRASE, cache_dir=cache) as t:
            t.set_policy(VaultPolicy(None, 0))
            api.copy(s, t, [ids[0]])
            t.forget(ids=[ids[0]], allow_empty=True)  # purged at once: its blobs are garbage
            assert api.prune(t).new_plan  # the default margin: a pending plan
        time.sleep(1.1)  # older than the margin of the prune below
        with api.open_vault(target, PASSPHRASE, cache_dir=cache) as t:
            save = t.save_snapshot

            def prune_first(point, *a, **kw):
                with api.open_vault(target, PASSPHRASE, cache_dir=cache) as other:
                    assert api.prune(other, margin=1).plans[0].done
                return save(point, *a, **kw)
            t.save_snapshot = prune_first
            assert [p.source_id for p in api.copy(s, t, [ids[0]]).copied] == [ids[0]]
    cli = _cli(tmp_path)
    assert json_out(cli("check", "--read-data", "--json", "--vault", target))["ok"]
    ok(cli("restore", ids[0], "--target", tmp_path / "r", "--vault", target))
    first = {k: v for k, v in _tree_digest(src).items() if not k.startswith("g")}  # the g* came later
    assert _tree_digest(restored_root(tmp_path / "r", src)) == first


def test_copy_bad_input_one_message_and_the_target_unchanged(tmp_path):
    cli = _cli(tmp_path)
    source, src, ids = _source(tmp_path, files=1)
    target = api_vault(tmp_path / "target")
    with api.open_vault(target, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        api.backup(v, [str(src)])
    before = _files(target)
    fails(cli("copy", "--from", source, "--to", source), 2, "same vault")
    clone = tmp_path / "clone"
    shutil.copytree(source, clone)
    fails(cli("copy", "--from", clone, "--to", source), 2, "same vault")
    fails(cli("copy", "--from", source, "--to", target, "0123abcd"), 16, "source vault",
          "no recovery point matches '0123abcd'")
    fails(cli("copy", "--from", source, "--to", target, env={"RECOVAULT_FROM_PASSPHRASE": OTHER}), 12,
          "source vault", "wrong passphrase")
    fails(cli("copy", "--from", source, "--to", target, env={"RECOVAULT_PASSPHRASE": OTHER}), 12,
          "target vault", "wrong passphrase")
    fails(cli("copy", "--from", source, "--to", target, env={"RECOVAULT_FROM_PASSPHRASE": None}), 2,
          "RECOVAULT_FROM_PASSPHRASE", "--from-passphrase-file")
    fails(cli("copy", "--from", tmp_path / "nothing", "--to", target), 10, "source vault")
    fails(cli("copy", "--from", source, "--to", tmp_path / "nothing"), 10, "target vault", "--copy-keys-from")
    fails(cli("copy", "--from", source), 2, "no vault given")
    assert _files(target) == before
    pf = tmp_path / "pf"
    pf.write_text(PASSPHRASE + "\n")
    os.chmod(pf, 0o600)
    res = json_out(cli("copy", "--from", source, "--to", target, "--from-passphrase-file", pf, "--json",
                       env={"RECOVAULT_FROM_PASSPHRASE": None}))
    assert len(res["copied"]) == 2

    new = tmp_path / "new"
    fails(cli("init", "--vault", new, "--copy-keys-from", source, "--chunk-min", "65536"), 2, "--copy-keys-from")
    fails(cli("init", "--vault", new, "--copy-keys-from", source, env={"RECOVAULT_FROM_PASSPHRASE": OTHER}), 12,
          "source vault")
    fails(cli("init", "--vault", target, "--copy-keys-from", source), 11, "already exists")
    assert not os.path.exists(new / "config")



def test_reencoded_copy_keeps_every_kind_of_entry(tmp_path):
    """The rich test tree (hard links, symlinks, sparse files, xattrs, special files, non-UTF-8 names)
    re-encoded into a vault with other keys restores with the same contents and metadata:
    rewriting a tree changes only the IDs it names."""
    src = tmp_path / "data"
    build_tree(src, big=False, doc=False)
    source, target = api_vault(tmp_path / "src-vault"), api_vault(tmp_path / "target")
    cache = str(tmp_path / "c")
    events = []
    with api.open_vault(source, PASSPHRASE, cache_dir=cache) as s, \
            api.open_vault(target, PASSPHRASE, cache_dir=cache) as t:
        api.backup(s, [str(src)])
        res = api.copy(s, t, progress=lambda kind, info: events.append((kind, info)))
        assert res.mode == "re-encoded" and len(res.copied) == 1
        assert api.restore(t, res.copied[0].id, str(tmp_path / "r"))["errors"] == []
    # progress: the points to copy, then bytes announced ("more") and read ("bytes"), then each point
    assert events[0] == ("plan", {"files": 1, "bytes": 0}) and events[-1] == ("file", {"path": res.copied[0].source_id,
                                                                                     "bytes": 0})
    announced, read = (sum(i["bytes"] for k, i in events if k == kind) for kind in ("more", "bytes"))
    assert announced == read > 0 and res.bytes_read >= read
    assert_same(state(src), restored_root(tmp_path / "r", src))


def test_copy_follows_blobs_a_prune_on_the_source_moved(tmp_path):
    """The source is only read, and a prune may run there meanwhile: blobs it repacked (their old packs
    deleted after the copy loaded the source's index) are found by loading the index again."""
    source, src, ids = _source(tmp_path, files=6, soft_delete=False)
    cache = str(tmp_path / "c")
    with api.open_vault(source, PASSPHRASE, cache_dir=cache) as v:
        for i in range(3):
            os.unlink(src / f"f{i}")
        third = api.backup(v, [str(src)]).id  # without f0..f2: the packs holding f0..f5 become partly used
    target = api_vault(tmp_path / "target")
    with api.open_vault(source, PASSPHRASE, cache_dir=cache) as s, \
            api.open_vault(target, PASSPHRASE, cache_dir=cache) as t:
        s.load_index()  # the copy's view of the source, from before the prune
        with api.open_vault(source, PASSPHRASE, cache_dir=str(tmp_path / "c2")) as other:
            other.forget(ids=ids, allow_empty=True)
            done = api.prune(other, margin=0)
            assert done.bytes_deleted > 0 and done.decision.repack
        reloads = []
        load = s.load_index
        s.load_index = lambda: reloads.append(1) or load()
        res = api.copy(s, t)
        assert [p.source_id for p in res.copied] == [third] and reloads  # the copy met a pack that was gone
    cli = _cli(tmp_path)
    assert json_out(cli("check", "--read-data", "--json", "--vault", target))["ok"]
    _restores_same(cli, target, res.copied[0].id, src, tmp_path / "r")


@pytest.mark.parametrize("shared", [True, False], ids=["sealed", "re-encoded"])
def test_copy_whose_heartbeat_lapsed_revalidates_before_each_point(tmp_path, monkeypatch, shared):
    """A copy stopped long enough that a prune may have taken it for dead revalidates, as a backup does
    (docs/vault-format.md §10.4), before storing each point, and the points it stores are whole."""
    from recovault.jobs import copy as copy_job
    from recovault.vault.coordination import WriterSession
    source, src, ids = _source(tmp_path, files=2)
    target = os.fspath(tmp_path / "target")
    cache = str(tmp_path / "c")
    calls = []
    real = copy_job.revalidate
    monkeypatch.setattr(WriterSession, "lapsed", property(lambda self: True))
    monkeypatch.setattr(copy_job, "revalidate", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    with api.open_vault(source, PASSPHRASE, cache_dir=cache) as s:
        if shared:
            api.init_vault(target, PASSPHRASE, kdf=FAST_KDF, cache_dir=cache, keys_from=s).close()
        else:
            api_vault(target)
        with api.open_vault(target, PASSPHRASE, cache_dir=cache) as t:
            assert len(api.copy(s, t).copied) == 2
    assert calls == [{}, {"rescue": False}] * 2  # before and after storing each point
    cli = _cli(tmp_path)
    assert json_out(cli("check", "--read-data", "--json", "--vault", target))["ok"]
