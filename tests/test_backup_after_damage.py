"""docs/usage.md's answer to damage: `repair index`, then back up again. A backup whose base recovery point
lost a tree (the pack that held it is gone) stopped with exit 15 ("blob ... is referenced but no index lists
it"): it now warns, reads what that tree held again, and stores it, so the new point is whole."""
from __future__ import annotations

import json
import os

from test_cli import PASSPHRASE, Cli, api_vault, fails, ok
from e2e_tree import write

from recovault import api


def pack_file_of(vault: str, blob_hex: str) -> str:
    with api.open_vault(vault, PASSPHRASE) as v:
        return os.path.join(vault, v.pack_name(v.locate(bytes.fromhex(blob_hex)).pack))


def test_backup_after_repair_heals_a_base_that_lost_its_trees(tmp_path):
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "vault")
    src = tmp_path / "src"
    for i in range(4):
        write(src / "sub" / f"f{i}", os.urandom(20_000))
    ok(cli("backup", "--vault", vault, src))
    with api.open_vault(vault, PASSPHRASE) as v:
        (point,) = v.snapshots()
    os.unlink(pack_file_of(vault, point.tree))  # the pack of the root tree (and its neighbours)
    fails(cli("check", "--vault", vault), 15)
    ok(cli("repair", "index", "--vault", vault))

    res = ok(cli("backup", "--vault", vault, src))
    assert "previous recovery point's directory / cannot be read" in res.stderr, res.stderr
    ok(cli("restore", "--vault", vault, "latest", "--target", tmp_path / "r"))
    for i in range(4):
        restored = tmp_path / "r" / os.path.relpath(src / "sub" / f"f{i}", "/")
        assert restored.read_bytes() == (src / "sub" / f"f{i}").read_bytes()
    # the next backup compares with the new, whole point: nothing to read
    res = ok(cli("backup", "--vault", vault, src, "--json"))
    assert "cannot be read" not in res.stderr
    stats = json.loads(res.stdout)["stats"]
    assert stats["files_unmodified"] == 4 and stats["bytes_read"] == 0, stats
