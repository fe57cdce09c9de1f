"""The agent cache's bundles of recovery points and journal entries (vault/cache.py ObjectBundle): a listing
reads from the vault only what the cache has not seen, a damaged or planted bundle is ignored, and what the
cache holds stays sealed."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, List

import pytest

from recovault import api
from recovault.vault import format as fmt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from points_bench import PASSPHRASE, fast_vault, make_points  # noqa: E402


@pytest.fixture
def vault(tmp_path: Path):
    """A vault with 30 recovery points (each logged in the journal); returns (path, cache dir, ids)."""
    path, cache = str(tmp_path / "v"), str(tmp_path / "cache")
    with fast_vault(path, cache) as v:
        ids = make_points(v, 30)
    return path, cache, ids


def counting_gets(v, prefix: str) -> List[str]:
    """Record the names of every object of `prefix` the vault's storage reads from now on."""
    got: List[str] = []
    get: Callable = v.storage.get

    def wrapper(name, *a, **kw):
        if name.startswith(prefix):
            got.append(name)
        return get(name, *a, **kw)
    v.storage.get = wrapper
    return got


def test_listing_reads_only_new_points(vault) -> None:
    path, cache, ids = vault
    with api.open_vault(path, PASSPHRASE, cache_dir=cache) as v:
        got = counting_gets(v, fmt.SNAPSHOTS)
        assert [p.id for p in v.snapshots()] == ids
        assert len(got) == 30  # cold: every point read once
    with api.open_vault(path, PASSPHRASE, cache_dir=cache) as v:
        got = counting_gets(v, fmt.SNAPSHOTS)
        assert [p.id for p in v.snapshots()] == ids and got == []  # warm: none
        new = make_points(v, 2, start="2030-01-01T00:00:00Z")
        assert [p.id for p in v.snapshots()] == ids + new
        assert sorted(got) == sorted(fmt.SNAPSHOTS + i for i in new)  # only the new ones
        v.points.delete(ids[0])
        assert [p.id for p in v.snapshots()] == ids[1:] + new
        assert v.find_snapshot("latest").id == new[-1] and len(got) == 2
    bundled = (Path(cache) / v.id / "points.bundle").read_bytes()
    assert b"web1" not in bundled and bytes.fromhex(ids[0]) not in bundled  # sealed; the deleted one dropped


def test_damaged_or_planted_bundle_is_ignored(vault, tmp_path: Path) -> None:
    path, cache, ids = vault
    with api.open_vault(path, PASSPHRASE, cache_dir=cache) as v:
        v.snapshots()
        bundle = Path(cache) / v.id / "points.bundle"
    raw = bytearray(bundle.read_bytes())
    raw[len(raw) // 2] ^= 0x40  # one object damaged: it alone is read again
    bundle.write_bytes(bytes(raw))
    with api.open_vault(path, PASSPHRASE, cache_dir=cache) as v:
        got = counting_gets(v, fmt.SNAPSHOTS)
        assert [p.id for p in v.snapshots()] == ids and len(got) == 1
    # a bundle of another vault's points (another key) planted under this vault's id: all read again
    other, other_cache = str(tmp_path / "other"), str(tmp_path / "other-cache")
    with fast_vault(other, other_cache) as o:
        make_points(o, 3, journal=False)
        o.snapshots()
        planted = (Path(other_cache) / o.id / "points.bundle").read_bytes()
    bundle.write_bytes(planted)
    with api.open_vault(path, PASSPHRASE, cache_dir=cache) as v:
        got = counting_gets(v, fmt.SNAPSHOTS)
        assert [p.id for p in v.snapshots()] == ids and len(got) == 30
    bundle.write_bytes(b"garbage")
    with api.open_vault(path, PASSPHRASE, cache_dir=cache) as v:
        assert [p.id for p in v.snapshots()] == ids


def test_journal_refresh_reads_the_bundle_and_rewrites_nothing(vault) -> None:
    path, cache, ids = vault
    with api.open_vault(path, PASSPHRASE, cache_dir=cache) as v:
        v.journal.refresh()  # cold: from the vault; cached per entry and in the bundle
        vid = v.id
    entry_files = sorted((Path(cache) / vid / "journal").iterdir())
    assert len(entry_files) == 30
    inodes = [p.stat().st_ino for p in entry_files]
    with api.open_vault(path, PASSPHRASE, cache_dir=cache) as v:
        got = counting_gets(v, fmt.JOURNAL)
        v.journal.cache.get = lambda name: pytest.fail("the bundle holds every entry")
        v.journal.refresh()
        assert got == [] and sorted(e.snapshot for e in v.journal.entries.values()) == sorted(ids)
    (Path(cache) / vid / "journal.bundle").unlink()
    with api.open_vault(path, PASSPHRASE, cache_dir=cache) as v:  # from the per-entry files, not rewritten
        got = counting_gets(v, fmt.JOURNAL)
        v.journal.refresh()
        assert got == [] and len(v.journal.entries) == 30
    assert [p.stat().st_ino for p in entry_files] == inodes
    assert (Path(cache) / vid / "journal.bundle").exists()
