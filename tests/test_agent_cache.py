"""Agent cache hygiene (issue 11): a size cap with least-recently-used eviction that never evicts the journal's
evidence, directories of vaults unused for 30 days removed, `recovault cache [--cleanup] [--json]` (its JSON
validated against docs/schemas/cache.json), and --cache-max on every command."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jsonschema
import pytest

from test_cli import Cli, api_vault, fails, json_out, ok
from e2e_tree import write

from recovault.vault.cache import ObjectCache
from recovault.vault.cache_hygiene import DEFAULT_CACHE_MAX, parse_size, survey, tidy, tidy_if_due

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "docs" / "schemas" / "cache.json").read_text())
DAY = 86400.0


def plant(root: Path, rel: str, size: int, age: float, now: float) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (now - age, now - age))
    return path


def test_tidy_evicts_least_recently_used_keeps_journal_and_removes_unused_vaults(tmp_path):
    now = time.time()
    a, b, c = "a" * 32, "b" * 32, "c" * 32
    files = {
        "journal": plant(tmp_path, f"{a}/journal/" + "1" * 64, 100, 500, now),  # oldest, but evidence: kept
        "heads": plant(tmp_path, f"{a}/journal-heads", 10, 500, now),
        "index_old": plant(tmp_path, f"{a}/index/" + "2" * 64, 100, 300, now),
        "tree": plant(tmp_path, f"{a}/trees/" + "3" * 64, 100, 200, now),
        "bundle": plant(tmp_path, f"{b}/points.bundle", 100, 100, now),
        "index_new": plant(tmp_path, f"{b}/index/" + "4" * 64, 100, 10, now),
        "tmp_old": plant(tmp_path, f"{a}/index/.tmp-1-ab-x", 50, 2 * DAY, now),
        "tmp_new": plant(tmp_path, f"{a}/index/.tmp-2-cd-y", 50, 60, now),
        "stale": plant(tmp_path, f"{c}/index/" + "5" * 64, 100, 31 * DAY, now),
        "not_a_vault": plant(tmp_path, "notes/old.txt", 100, 90 * DAY, now),
    }
    # live after the stale vault and the old temporary file go: 100+10+100+100+100+100+50 = 560; cap 400:
    # the two least recently used evictable files go (index_old, then tree), the journal stays
    r = tidy(str(tmp_path), 400, now=now)
    gone = {k for k, p in files.items() if not p.exists()}
    assert gone == {"stale", "tmp_old", "index_old", "tree"}
    assert [v.id for v in r.removed] == [c] and not (tmp_path / c).exists()
    assert r.evicted_files == 3 and r.evicted_bytes == 250 and r.bytes_after == 360
    # the cap below what the journal holds: everything else goes, the evidence stays
    tidy(str(tmp_path), 0, now=now)
    assert {k for k, p in files.items() if p.exists()} == {"journal", "heads", "not_a_vault"}
    assert tidy(str(tmp_path), None, now=now).evicted_files == 0  # unlimited: nothing to do


def test_a_cache_hit_counts_as_use(tmp_path):
    """LRU orders by last use, not by when a file was written: a hit touches the file."""
    now = time.time()
    vid = "d" * 32
    cache = ObjectCache(str(tmp_path), vid, "index")
    from recovault import core
    old, new = b"read again later", b"written later, never read"
    cache.put(core.blake3(old).hex(), old)
    cache.put(core.blake3(new).hex(), new)
    os.utime(cache.dir / core.blake3(old).hex(), (now - 100, now - 100))
    os.utime(cache.dir / core.blake3(new).hex(), (now - 50, now - 50))
    assert cache.get(core.blake3(old).hex()) == old
    tidy(str(tmp_path), len(old) + 5, now=now + 1)
    assert cache.names() == [core.blake3(old).hex()]


def test_parse_size():
    assert parse_size("500M", "--cache-max") == 500 << 20
    assert parse_size("2GiB", "--cache-max") == 2 << 30
    assert parse_size("0", "--cache-max") == 0
    assert parse_size("unlimited", "--cache-max") is None
    assert DEFAULT_CACHE_MAX == 512 << 20
    with pytest.raises(Exception, match="--cache-max '5 apples'"):
        parse_size("5 apples", "--cache-max")


@pytest.fixture
def backed_up(tmp_path):
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "vault")
    src = tmp_path / "src"
    for i in range(5):
        write(src / f"f{i}", os.urandom(50_000))
    return cli, vault, src


def vault_dirs(cli: Cli):
    return {v.id: (v, files) for v, files in survey(cli.cache_dir)}


def test_cache_max_on_a_real_run_and_the_cache_command(backed_up, tmp_path):
    cli, vault, src = backed_up
    ok(cli("backup", "--vault", vault, src))
    (v, files), = vault_dirs(cli).values()
    assert v.url and v.url.startswith("file://") and v.kinds.get("index", 0) > 0  # default cap: all kept

    doc = json_out(cli("cache", "--json"))
    jsonschema.validate(doc, SCHEMA)
    assert doc["max_bytes"] == DEFAULT_CACHE_MAX and doc["cleanup"] is None and doc["bytes"] == v.bytes
    (shown,) = doc["vaults"]
    assert (shown["id"], shown["location"], shown["old"]) == (v.id, v.url, False)
    text = ok(cli("cache")).stdout
    assert v.id[:8] in text and v.url in text

    # a cap of 0: after the next run only what the cap never evicts is left (journal evidence, vault.json)
    write(src / "new", os.urandom(10_000))
    ok(cli("backup", "--vault", vault, src, "--cache-max", "0"))
    (v, files), = vault_dirs(cli).values()
    kept = {os.path.relpath(f.path, v.path).split(os.sep)[0] for f in files}
    assert kept <= {"journal", "journal-heads", "vault.json"} and "journal" in kept
    # the vault still works, from a cold cache
    ok(cli("restore", "--vault", vault, "latest", "--target", tmp_path / "r"))

    doc = json_out(cli("cache", "--json", "--cache-max", "unlimited"))
    jsonschema.validate(doc, SCHEMA)
    assert doc["max_bytes"] is None
    fails(cli("snapshots", "--vault", vault, "--cache-max", "lots"), 2, "--cache-max")
    fails(cli("snapshots", "--vault", vault, env={"RECOVAULT_CACHE_MAX": "lots"}), 2, "cache-max")


def test_vaults_unused_for_30_days_are_removed(backed_up):
    cli, vault, src = backed_up
    ok(cli("backup", "--vault", vault, src))
    old = Path(cli.cache_dir) / ("e" * 32)
    month_ago = time.time() - 31 * DAY
    plant(old, "index/" + "6" * 64, 1000, 31 * DAY, time.time())
    write(old / "vault.json", b'{"url": "file:///gone", "v": 1}')
    for p in (old / "vault.json", old / "index", old):
        os.utime(p, (month_ago, month_ago))

    doc = json_out(cli("cache", "--json"))
    jsonschema.validate(doc, SCHEMA)
    assert [(v["id"], v["old"], v["location"]) for v in doc["vaults"]][-1] == ("e" * 32, True, "file:///gone")
    assert old.exists()  # listing removes nothing

    # a run that writes into the cache removes it, at most hourly (surveying a large cache takes time)
    ok(cli("backup", "--vault", vault, src))
    assert old.exists()  # the first backup tidied the cache a moment ago
    state = Path(cli.cache_dir) / "tidy.json"
    doc = json.loads(state.read_text())
    state.write_text(json.dumps(dict(doc, time=doc["time"] - 3601)))
    ok(cli("backup", "--vault", vault, src))
    assert not old.exists()

    # and cache --cleanup does, on demand (--max-age 0: every vault not used this very second)
    plant(old, "index/" + "6" * 64, 1000, 31 * DAY, time.time())
    os.utime(old, (month_ago, month_ago))
    doc = json_out(cli("cache", "--json", "--cleanup"))
    jsonschema.validate(doc, SCHEMA)
    assert [v["id"] for v in doc["cleanup"]["removed"]] == ["e" * 32] and not old.exists()
    assert [v["id"] for v in doc["vaults"]] != [] and "e" * 32 not in [v["id"] for v in doc["vaults"]]
    doc = json_out(cli("cache", "--json", "--cleanup", "--max-age", "0"))
    jsonschema.validate(doc, SCHEMA)
    assert len(doc["cleanup"]["removed"]) == 1 and doc["vaults"] == [] and doc["bytes"] == 0


def test_tidy_is_due_hourly_or_when_the_cap_may_be_passed(tmp_path):
    now = time.time()
    vid = "f" * 32
    plant(tmp_path, f"{vid}/index/" + "7" * 64, 100, 50, now)
    assert tidy_if_due(str(tmp_path), 1000, 100, now=now) is not None  # never tidied: due
    old = plant(tmp_path, f"{vid}/index/" + "8" * 64, 100, 60, now)  # the least recently used
    assert tidy_if_due(str(tmp_path), 1000, 100, now=now + 60) is None  # 300 of 1000 by the books
    assert old.exists()
    r = tidy_if_due(str(tmp_path), 150, 100, now=now + 120)  # 400 would pass the cap: at once
    assert r is not None and r.evicted_files == 1 and not old.exists()
    plant(tmp_path, f"{vid}/index/" + "9" * 64, 100, 40, now)
    assert tidy_if_due(str(tmp_path), 1000, 1, now=now + 120 + 3599) is None
    assert tidy_if_due(str(tmp_path), 1000, 1, now=now + 120 + 3600) is not None  # an hour on: due again
