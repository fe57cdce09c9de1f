"""`check` reports lost data once: one missing pack is one finding naming the recovery points and the paths it
affects (`missing_packs` in --json, one problem line), not a line per tree or chunk; the same for the blobs no
index lists after a lost pack's index entries were rebuilt away (`repair index`)."""
from __future__ import annotations

import json
import os
import random

import pytest

from recovault import api
from recovault.vault import format as fmt
from recovault.vault.check import FILES_NAMED

from test_cli import PASSPHRASE, api_vault, run_main


@pytest.fixture
def vault_with_tree(tmp_path, monkeypatch):
    """Two recovery points of 12 directories of 3 small files (small packs: several data packs)."""
    monkeypatch.setenv("RECOVAULT_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("XDG_CACHE_HOME", os.fspath(tmp_path / "xdg"))
    src = tmp_path / "src"
    rng = random.Random(7)
    for d in range(12):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(3):
            (src / f"d{d}" / f"f{f}.bin").write_bytes(rng.randbytes(40_000))
    vault = api_vault(tmp_path / "vault")
    with api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(tmp_path / "c")) as v:
        first = api.backup(v, [os.fspath(src)])
        (src / "d0" / "new.txt").write_text("new\n")
        second = api.backup(v, [os.fspath(src)])
    return vault, [first.id, second.id], tmp_path


def _files_by_pack(vault, cache):
    """pack id -> the paths of the files (in any point) with a chunk located in it; and the tree packs."""
    out = {}
    with api.open_vault(vault, PASSPHRASE, cache_dir=cache) as v:
        def walk(tree, prefix):
            for n in v.load_nodes(bytes.fromhex(tree)):
                path = prefix + "/" + os.fsdecode(n.name)
                if n.subtree:
                    walk(n.subtree, path)
                for c in n.content or ():
                    out.setdefault(v.locate(bytes.fromhex(c)).pack, set()).add(path)
        for p in v.snapshots():
            walk(p.tree, "")
        trees = {loc.pack for loc in v.locations.values() if loc.type == fmt.BLOB_TREE}
    return out, trees


def _warnings(err):
    return [line for line in err.splitlines() if line.startswith("recovault: warning:")]


def test_one_missing_pack_is_one_finding_naming_points_and_files(vault_with_tree, capsys):
    vault, points, tmp = vault_with_tree
    by_pack, _ = _files_by_pack(vault, os.fspath(tmp / "c"))
    pack, files = max(by_pack.items(), key=lambda kv: len(kv[1]))
    assert len(files) >= 3  # several files lose data to this one pack
    os.unlink(os.path.join(vault, api_pack_name(pack)))

    res = run_main(["check", "--vault", vault, "--json"], capsys)
    assert res.code == 15, res.err
    report = json.loads(res.out)
    [finding] = report["missing_packs"]
    assert finding["pack"] == pack.hex()
    assert sorted(finding["points"]) == sorted(points)
    assert finding["files_total"] == len(files) and finding["files"] == sorted(files)[:FILES_NAMED]
    assert report["problems"] == [report["problems"][0]] and pack.hex() in report["problems"][0]
    assert sorted(report["damaged_points"]) == sorted(points)  # not restorable in full: said so
    [line] = _warnings(res.err)
    assert pack.hex() in line and all(p[:8] in line for p in points) and sorted(files)[0] in line


def test_blobs_no_index_lists_are_one_finding(vault_with_tree, capsys):
    """A pack lost, then the index rebuilt from the packs left: every tree of that pack was once a line of
    its own; now it is one finding (pack unknown: null) naming the points and the directories."""
    vault, points, tmp = vault_with_tree
    _, trees = _files_by_pack(vault, os.fspath(tmp / "c"))
    for pack in trees:
        os.unlink(os.path.join(vault, api_pack_name(pack)))
    assert run_main(["repair", "index", "--vault", vault], capsys).code == 0

    res = run_main(["check", "--vault", vault, "--json"], capsys)
    assert res.code == 15, res.err
    report = json.loads(res.out)
    [finding] = report["missing_packs"]
    assert finding["pack"] is None and sorted(finding["points"]) == sorted(points)
    assert finding["files"] == ["/"]  # the roots' trees are gone: every path of both points
    assert len(report["problems"]) == 1 and len(_warnings(res.err)) == 1


def api_pack_name(pack: bytes) -> str:
    from recovault.vault.blobstore import pack_name
    return pack_name(pack)


def test_verbose_check_names_every_path(vault_with_tree, capsys):
    """The finding names the first FILES_NAMED paths; check --verbose prints every one, one line each."""
    vault, points, tmp = vault_with_tree
    by_pack, _ = _files_by_pack(vault, os.fspath(tmp / "c"))
    pack, files = max(by_pack.items(), key=lambda kv: len(kv[1]))
    assert len(files) > FILES_NAMED  # more than the finding names
    os.unlink(os.path.join(vault, api_pack_name(pack)))
    res = run_main(["check", "--vault", vault, "-v"], capsys)
    assert res.code == 15
    lost = {line.split("lost data: ")[1].split(" (pack ")[0] for line in res.err.splitlines() if "lost data: " in line}
    assert lost == files and len(_warnings(res.err)) == 1
