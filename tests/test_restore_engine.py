"""core.restore_blobs, the C++ restore engine, on its own: blobs sealed with core.SealSession into pack files
by hand, restored by the engine, and compared with plaintexts opened independently (cryptography +
zstandard, following the layout in cpp/include/recovault/blob.hpp). Then every failure it must report:
tampered, wrong id, wrong length, truncated or missing pack, unwritable or full destination, bad items.
"""
from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import List, Tuple

import pytest
import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from recovault import core, fsmeta

KEY = bytes(range(32))
KiB = 1 << 10


def ref_open(key: bytes, blob_id: bytes, blob: bytes) -> bytes:
    """An independent opener: HKDF subkey from the blob's salt, AES-GCM with AAD = id || header, zstd."""
    subkey = HKDF(algorithm=hashes.SHA256(), length=32, salt=blob[2:18], info=b"recovault/v1/blob").derive(key)
    payload = AESGCM(subkey).decrypt(blob[18:30], blob[30:], blob_id + blob[:30])
    return payload if blob[1] == 0 else zstandard.ZstdDecompressor().decompress(payload)


def rand(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def contents(seed: int) -> List[bytes]:
    """Plaintexts of every kind: random (stored), compressible (zstd), zero 4 KiB pages inside data at
    aligned and unaligned places, all zeros, tiny, odd sizes."""
    r = random.Random(seed)
    page = lambda: rand(r.randrange(1 << 30), 4 * KiB)  # noqa: E731
    return [
        rand(seed, 128 * KiB),
        b"compressible text " * 7000,
        page() + bytes(8 * KiB) + page() + bytes(4 * KiB),
        bytes(3000) + rand(seed + 1, 9000) + bytes(12 * KiB) + b"x",
        bytes(64 * KiB),
        b"\x01",
        rand(seed + 2, 4 * KiB + 1),
        bytes(5 * KiB) + rand(seed + 3, 100),
    ]


class Packs:
    """Blobs sealed with core.SealSession into pack files under `root` (with junk around them, so that
    offsets matter), and the items to restore them."""

    def __init__(self, root: Path, npacks: int = 2) -> None:
        self.root = root
        self.paths = [str(root / f"pack{i}") for i in range(npacks)]
        self.raw: List[bytearray] = [bytearray(rand(900 + i, 37)) for i in range(npacks)]
        self.blobs: List[Tuple[int, int, int, bytes, bytes]] = []  # pack, offset, sealed length, id, sealed
        self.session = core.SealSession(KEY)

    def add(self, data: bytes, pack: int) -> int:
        blob_id = core.blake3(data)
        sealed = self.session.seal(blob_id, data)
        raw = self.raw[pack]
        self.blobs.append((pack, len(raw), len(sealed), blob_id, sealed))
        raw += sealed + rand(len(raw), 11)
        return len(self.blobs) - 1

    def write(self) -> None:
        for path, raw in zip(self.paths, self.raw):
            Path(path).write_bytes(bytes(raw))

    def plaintext(self, i: int) -> bytes:
        """Opened independently of the engine and of core.open_blob."""
        _, _, _, blob_id, sealed = self.blobs[i]
        return ref_open(KEY, blob_id, sealed)

    def item(self, i: int, dest: int, skip: int = 0, length: int = -1, plain_len: int = -1) -> core.RestoreItem:
        """The item restoring blob i (a core.RestoreItem: the engine takes it as the 8-tuple it is)."""
        pack, off, slen, blob_id, _ = self.blobs[i]
        n = len(self.plaintext(i))
        return core.RestoreItem(pack, off, slen, blob_id, dest, n if plain_len < 0 else plain_len, skip,
                                n - skip if length < 0 else length)


def restore(path, packs, items, *, sparse, create=True, **kw):
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if create else 0)
    fd = os.open(str(path), flags, 0o600)
    try:
        return core.restore_blobs(KEY, fd, packs.paths, items, sparse=sparse, **kw)
    finally:
        os.close(fd)


def extents(path) -> List[Tuple[int, int]]:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        return fsmeta.data_extents(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


@pytest.fixture
def packs(tmp_path) -> Packs:
    p = Packs(tmp_path)
    for i, data in enumerate(contents(1) + contents(2)):
        p.add(data, i % 2)
    p.write()
    return p


# ---- output --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers,by_pack,run_items", [(1, False, 1), (1, True, 0), (2, False, 3), (4, True, 2),
                                                       (8, True, 0)])
def test_sparse_restore_matches_write_sparse(tmp_path, packs, workers, by_pack, run_items):
    """A fresh file: every byte as the independent plaintexts say, and holes exactly where
    fsmeta.write_sparse leaves them (aligned all-zero 4 KiB blocks), at aligned and unaligned offsets."""
    items, want, ref = [], bytearray(), tmp_path / "ref"
    ref_fd = os.open(str(ref), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    dest = 0
    for i in range(len(packs.blobs)):
        data = packs.plaintext(i)
        dest += 4 * KiB if i % 3 == 0 else 1000 * i  # gaps (holes), unaligned starts
        want += bytes(dest - len(want)) + data
        items.append(packs.item(i, dest))
        fsmeta.write_sparse(ref_fd, dest, data)
        dest += len(data)
    fsmeta.finish_sparse(ref_fd, len(want) + 5000)
    os.close(ref_fd)
    random.Random(workers).shuffle(items)  # the order given must not matter
    out = tmp_path / "out"
    res = restore(out, packs, items, sparse=True, workers=workers, by_pack=by_pack, run_items=run_items)
    os.truncate(out, len(want) + 5000)
    assert out.read_bytes() == bytes(want) + bytes(5000)
    assert res == {"data_bytes": sum(it.length for it in items), "zero_bytes": 0, "items": len(items)}
    assert extents(out) == extents(ref), "holes differ from fsmeta.write_sparse's"
    assert os.stat(out).st_blocks == os.stat(ref).st_blocks


def test_sub_ranges_and_zero_items_overwrite(tmp_path, packs):
    """Over an existing file: plaintext sub-ranges (skip, length) land at their offsets, zero items write
    zeros, and every byte outside the items is left alone; nothing is skipped as a hole."""
    rng = random.Random(5)
    size = 4 << 20
    old = bytearray(b"\xa5" * size)
    out = tmp_path / "out"
    out.write_bytes(bytes(old))
    want = bytearray(old)
    items, dest = [], 100
    for i in range(len(packs.blobs)):
        data = packs.plaintext(i)
        skip = rng.randrange(0, len(data))
        length = rng.randrange(0, len(data) - skip + 1)
        items.append(packs.item(i, dest, skip, length))
        want[dest:dest + length] = data[skip:skip + length]
        dest += length + rng.randrange(0, 5000)
        z = rng.randrange(0, 300 * KiB)  # a zero item (no pack), possibly larger than the engine's buffer
        items.append((-1, 0, 0, b"", dest, 0, 0, z))
        want[dest:dest + z] = bytes(z)
        dest += z + 3
    assert dest < size
    res = restore(out, packs, items, sparse=False, create=False, workers=3)
    assert out.read_bytes() == bytes(want)
    assert res["zero_bytes"] == sum(it[7] for it in items if it[0] == -1)
    assert res["items"] == len(items)


def test_many_items_many_packs_few_descriptors(tmp_path):
    """More packs than... any sane descriptor budget: 300 packs, each opened and closed as needed."""
    p = Packs(tmp_path, npacks=300)
    for i in range(900):
        p.add(rand(i, random.Random(i).randrange(1, 3000)), i % 300)
    p.write()
    items, want = [], bytearray()
    for i in range(900):
        items.append(p.item(i, len(want)))
        want += p.plaintext(i)
    out = tmp_path / "out"
    restore(out, p, items, sparse=False, workers=3, by_pack=False, run_items=1)
    assert out.read_bytes() == bytes(want)


def test_empty_item_list(tmp_path, packs):
    assert restore(tmp_path / "out", packs, [], sparse=True) == {"data_bytes": 0, "zero_bytes": 0, "items": 0}


# ---- failures ------------------------------------------------------------------------------------------
def failure(tmp_path, packs, items, **kw) -> core.RestoreError:
    with pytest.raises(core.RestoreError) as ei:
        restore(tmp_path / "out", packs, items, sparse=kw.pop("sparse", True), **kw)
    return ei.value


def all_items(packs):
    items, dest = [], 0
    for i in range(len(packs.blobs)):
        items.append(packs.item(i, dest))
        dest += items[-1][5]
    return items


@pytest.mark.parametrize("where", ["header", "ciphertext", "tag"])
def test_tampered_blob_names_the_item(tmp_path, packs, where):
    victim = 5
    pack, off, slen, _, _ = packs.blobs[victim]
    at = {"header": off + 20, "ciphertext": off + slen // 2, "tag": off + slen - 1}[where]
    packs.raw[pack][at] ^= 0x01
    packs.write()
    e = failure(tmp_path, packs, all_items(packs), workers=2)
    assert (e.kind, e.index) == ("auth", victim)
    assert KEY.hex() not in str(e) and KEY.hex() not in e.detail


def test_version_byte_and_wrong_id(tmp_path, packs):
    pack, off, _, _, _ = packs.blobs[2]
    packs.raw[pack][off] = 7  # an unknown version
    packs.write()
    e = failure(tmp_path, packs, all_items(packs))
    assert (e.kind, e.index) == ("auth", 2)
    items = [packs.item(3, 0)]
    items[0] = items[0][:3] + (bytes(32),) + items[0][4:]  # the blob is bound to another id
    assert failure(tmp_path, packs, items).kind == "auth"


def test_wrong_plaintext_length(tmp_path, packs):
    items = all_items(packs)
    it = items[1]  # compressible: a zstd frame whose size differs from what the index says
    items[1] = it[:5] + (it[5] + 1,) + it[6:]
    e = failure(tmp_path, packs, items)
    assert (e.kind, e.index) == ("length", 1)
    it = items[0]  # random: stored, one byte longer than the index says
    items = [it[:5] + (it[5] - 1, 0, it[5] - 1)]
    assert failure(tmp_path, packs, items).kind == "length"


def test_truncated_and_missing_pack(tmp_path, packs):
    pack, off, slen, _, _ = packs.blobs[-1]
    Path(packs.paths[pack]).write_bytes(bytes(packs.raw[pack][:off + slen - 10]))
    e = failure(tmp_path, packs, all_items(packs), workers=1)
    assert (e.kind, e.index) == ("truncated", len(packs.blobs) - 1)
    os.unlink(packs.paths[0])
    e = failure(tmp_path, packs, [packs.item(0, 0)])
    assert (e.kind, e.index, e.errno) == ("pack_missing", 0, errno.ENOENT)


def test_first_failure_stops_the_rest(tmp_path, packs):
    """One worker, runs of one item, in the given order: nothing after the failing item is written."""
    items = all_items(packs)
    pack, off, slen, _, _ = packs.blobs[3]
    packs.raw[pack][off + slen // 2] ^= 0x80
    packs.write()
    e = failure(tmp_path, packs, items, workers=1, run_items=1, by_pack=False)
    assert (e.kind, e.index) == ("auth", 3)
    assert e.data_bytes == sum(it[7] for it in items[:3])
    assert os.path.getsize(tmp_path / "out") == items[2][4] + items[2][7]


def test_write_errors_carry_errno(tmp_path, packs):
    items = all_items(packs)
    ro = tmp_path / "ro"
    ro.write_bytes(b"")
    fd = os.open(str(ro), os.O_RDONLY)
    try:
        with pytest.raises(core.RestoreError) as ei:
            core.restore_blobs(KEY, fd, packs.paths, items)
    finally:
        os.close(fd)
    assert (ei.value.kind, ei.value.errno) == ("write", errno.EBADF)
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        for its in (items, [(-1, 0, 0, b"", 0, 0, 0, 10)]):  # data, and zeros
            with pytest.raises(core.RestoreError) as ei:
                core.restore_blobs(KEY, fd, packs.paths, its, sparse=False)
            assert (ei.value.kind, ei.value.errno) == ("write", errno.ENOSPC)
    finally:
        os.close(fd)


def test_bad_items_are_refused_before_anything_is_written(tmp_path, packs):
    good = packs.item(0, 0)
    out = tmp_path / "out"
    for bad in [good[:7],  # too short
                (2,) + good[1:],  # no such pack
                good[:3] + (b"short",) + good[4:],  # id of the wrong length
                good[:6] + (good[5], 1),  # skip + length past the plaintext
                good[:6] + (1, good[5])]:
        with pytest.raises((ValueError, TypeError)):
            restore(out, packs, [packs.item(1, 1 << 20), bad], sparse=True)
        assert out.stat().st_size == 0
    with pytest.raises(ValueError, match="master key"):
        core.restore_blobs(b"short", 1, packs.paths, [])


def test_progress_callback_error_stops_and_propagates(tmp_path):
    """A progress callback that raises (as Ctrl-C does) stops the workers and its exception comes out."""
    p = Packs(tmp_path, npacks=1)
    blob = p.add(rand(1, 1 << 20), 0)
    p.write()
    items = [p.item(blob, i << 20) for i in range(2000)]  # 2 GB of writes: far longer than one tick
    calls = []

    def progress(done):
        calls.append(done)
        raise KeyboardInterrupt

    fd = os.open("/dev/null", os.O_WRONLY)
    try:
        with pytest.raises(KeyboardInterrupt):
            core.restore_blobs(KEY, fd, p.paths, items, workers=1, progress=progress)
    finally:
        os.close(fd)
    assert len(calls) == 1 and calls[0] < 2000 << 20
