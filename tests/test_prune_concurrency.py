"""Backups running in a loop (real processes) while prune runs again and again with a short margin: afterwards
every remaining recovery point restores byte for byte and check --read-data passes. (A longer soak:
bench/soak_prune.py.)"""
from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time

from recovault import api
from test_cli import PASSPHRASE, Cli, api_vault, json_out, ok

SECONDS = float(os.environ.get("RECOVAULT_SOAK_SECONDS", "10"))


def _backup_loop(cli, vault, src, deadline, points, errors):
    """Back up `src` again and again, changing it each time; record each point's expected content."""
    rng = random.Random(str(src))
    common = os.urandom(80_000)
    i = 0
    while time.time() < deadline:
        (src / "common").write_bytes(common)
        (src / f"f{i}").write_bytes(rng.randbytes(60_000))
        if (src / f"f{i - 2}").exists():
            (src / f"f{i - 2}").unlink()
        expected = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()}
        res = cli("backup", src, "--json", "--vault", vault)
        if res.returncode != 0:
            errors.append(res.stderr)
            return
        points.append((json.loads(res.stdout)["id"], src, expected))
        i += 1


def test_backups_in_a_loop_while_prune_runs_again_and_again(tmp_path):
    """Two backup loops (real processes, one at a time each) and a prune loop with a 1 s margin that also
    deletes older points; afterwards every remaining point restores byte for byte and check --read-data
    passes."""
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "v")
    ok(cli("policy", "set", "--soft-delete-days", "0", "--vault", vault))  # forgotten points are prune's at once
    srcs = [tmp_path / f"src{k}" for k in range(2)]
    for s in srcs:
        s.mkdir()
    deadline = time.time() + SECONDS
    points, errors = [], []
    loops = [threading.Thread(target=_backup_loop, args=(cli, vault, s, deadline, points, errors)) for s in srcs]
    for t in loops:
        t.start()
    deleted, runs = set(), []
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        while time.time() < deadline:
            old = [p for p in points[:-4] if p[0] not in deleted]
            if old:
                v.delete_snapshot(old[0][0])
                deleted.add(old[0][0])
            res = cli("prune", "--margin", "1s", "--max-unused", "0%", "--json", "--vault", vault)
            runs.append(json_out(res))
            time.sleep(0.3)
    for t in loops:
        t.join()
    assert not errors, errors
    assert sum(p["packs_deleted"] for r in runs for p in r["plans"] if p["done"]) > 0, runs  # it did delete
    ok(cli("prune", "--margin", "0", "--vault", vault))
    ok(cli("check", "--read-data", "--vault", vault))
    kept = [p for p in points if p[0] not in deleted]
    assert len(kept) >= 4
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c2")) as v:
        for n, (sid, src, expected) in enumerate(kept):
            target = tmp_path / f"r{n}"
            assert api.restore(v, sid, str(target))["errors"] == []
            inner = target / str(src).lstrip("/")
            assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in inner.iterdir()} == expected
