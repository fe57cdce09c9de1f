"""core.LocationIndex (where each blob is, in C++) against the Python reference of the index format
(vault/format.py encode_index/decode_index), and the vault's use of it."""
from __future__ import annotations

import os
import random
import re

import pytest

from recovault import api, core
from recovault.vault import format as fmt
from recovault.vault.keys import KdfParams
from recovault.vault.repo import Location, Locations

FAST_KDF = KdfParams(memory_kib=8, iterations=1, lanes=1)
PASSPHRASE = "correct horse battery staple"


def random_index(rng: random.Random, npacks: int, per_pack: int):
    packs = {}
    for _ in range(npacks):
        entries, off = [], 0
        for _ in range(rng.randrange(0, per_pack + 1)):
            n = rng.randrange(1, 1 << 21)
            entries.append(fmt.BlobEntry(rng.randrange(2), rng.randbytes(32), off, n, rng.randrange(0, 1 << 32)))
            off += n
        packs[rng.randbytes(32)] = entries
    return packs


@pytest.mark.parametrize("seed,npacks,per_pack", [(1, 0, 0), (2, 1, 1), (3, 5, 40), (4, 60, 700)])
def test_parses_like_the_python_reference(seed, npacks, per_pack):
    rng = random.Random(seed)
    packs = random_index(rng, npacks, per_pack)
    plain = fmt.encode_index(packs)
    ix, known = core.LocationIndex(), core.IdSet()
    n = ix.add_index(plain, known)
    want = {e.id: (p, e.type, e.offset, e.length, e.raw_length)
            for p, es in fmt.decode_index(plain).items() for e in es}
    assert n == sum(len(es) for es in packs.values()) == len(ix) == len(known) == len(want)
    for bid, loc in want.items():
        assert ix.get(bid) == loc and bid in ix and bid in known
    assert {t[0]: t[1:] for t in ix.items()} == want
    assert ix.get(rng.randbytes(32)) is None and rng.randbytes(32) not in ix and b"short" not in ix


def test_malformed_indexes_are_refused_and_add_nothing():
    rng = random.Random(9)
    plain = fmt.encode_index(random_index(rng, 3, 10))
    ix = core.LocationIndex()
    for bad, why in [(plain[:3], "too short"), (bytes([2]) + plain[1:], "version 2"), (plain[:-1], "truncated"),
                     (plain + b"\0", "trailing"), (plain[:5] + plain[5:40], "truncated")]:
        with pytest.raises(ValueError, match=why):
            ix.add_index(bad)
        assert len(ix) == 0
    # a pack count that claims more than the bytes hold
    with pytest.raises(ValueError, match="truncated"):
        ix.add_index(bytes([1]) + (1000).to_bytes(4, "little"))


def test_add_replaces_and_grows():
    rng = random.Random(5)
    ix = core.LocationIndex()
    ids = [rng.randbytes(32) for _ in range(50000)]
    packs = [rng.randbytes(32) for _ in range(7)]
    for i, bid in enumerate(ids):
        ix.add(bid, packs[i % 7], i % 2, i, i + 1, i + 2)
    assert len(ix) == len(ids)
    ix.add(ids[10], packs[3], 1, 99, 100, 101)  # stored again elsewhere: the new place wins
    assert len(ix) == len(ids) and ix.get(ids[10]) == (packs[3], 1, 99, 100, 101)
    assert all(ix.get(bid) == (packs[i % 7], i % 2, i, i + 1, i + 2) for i, bid in enumerate(ids) if i != 10)
    zero = bytes(32)  # the all-zero ID is a valid key too
    ix.add(zero, packs[0], 0, 1, 2, 3)
    assert ix.get(zero) == (packs[0], 0, 1, 2, 3)
    with pytest.raises(ValueError):
        ix.add(b"short", packs[0], 0, 0, 0, 0)


def test_locations_mapping():
    rng = random.Random(6)
    locs = Locations()
    a, b, p = rng.randbytes(32), rng.randbytes(32), rng.randbytes(32)
    locs[a] = Location(p, 0, 10, 20, 30)
    locs.add(b, Location(p, 1, 40, 50, 60))
    assert locs[a] == Location(p, 0, 10, 20, 30) and locs.get(b).type == 1 and len(locs) == 2
    assert locs.get(rng.randbytes(32)) is None and rng.randbytes(32) not in locs
    with pytest.raises(KeyError):
        locs[rng.randbytes(32)]
    assert dict(locs.items()) == {a: Location(p, 0, 10, 20, 30), b: Location(p, 1, 40, 50, 60)}
    assert sorted(l.offset for l in locs.values()) == [10, 40]


def test_vault_reopens_with_every_blob_located_and_names_a_malformed_index(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i}").write_bytes(os.urandom(1000 + i * 5000))
    v = api.init_vault(str(tmp_path / "v"), PASSPHRASE, kdf=FAST_KDF, cache_dir=str(tmp_path / "c"))
    api.backup(v, [str(src)])
    before = dict(v.locations.items())
    v.close()
    v = api.open_vault(str(tmp_path / "v"), PASSPHRASE, cache_dir=str(tmp_path / "c"))
    assert dict(v.locations.items()) == before and all(bid in v.known for bid in before)
    # an index file that authenticates but does not parse (written with the vault's key) is named
    sealed = v.seal(fmt.AAD_INDEX, b"\x01\xff\xff\xff\xff")
    name = fmt.INDEX + core.blake3(sealed).hex()
    v.storage.put(name, sealed)
    v.close()
    # ... and skipped: every blob is still located (the good index lists them all)
    with api.open_vault(str(tmp_path / "v"), PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        [damaged] = v.blobs.damaged_indexes
        assert damaged.name == name and re.search("index file .* is corrupt: index truncated", damaged.reason)
        assert dict(v.locations.items()) == before
