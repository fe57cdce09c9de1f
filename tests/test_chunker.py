"""The keyed FastCDC chunker of the C++ core (core.Chunker, core.chunk_lengths) and core.is_all_zero.

Cut points are part of the vault format (a change moves every boundary and defeats dedup against existing
backups), so besides the properties (bounds, streaming invariance, locality of an edit, keying) the core is
checked against a slow pure-Python model of the definition in cpp/src/chunker.cpp, with the gear table
derived by the `cryptography` package's HKDF rather than by the core.
"""
import hashlib
import random
import struct
from collections import Counter

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from recovault import core

SEED = bytes(range(32))
SMALL = dict(min_size=2048, avg_size=8192, max_size=65536)  # many chunks from little data
TINY = dict(min_size=64, avg_size=256, max_size=1024)


def rand(n, seed=1):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# ---- a pure-Python model of the definition ---------------------------------------------------------------

def model_gear(seed):
    okm = HKDF(algorithm=hashes.SHA256(), length=2048, salt=None, info=b"recovault/v1/gear").derive(seed)
    return struct.unpack("<256Q", okm)


def model_mask(bits):
    return sum(1 << (62 - 2 * i) for i in range(bits))


def model_chunk_lengths(data, seed, min_size, avg_size, max_size, normalization=2):
    """Gear hash H(j) over the 64 bytes ending at byte j; a chunk starting at s may end after byte j (length
    L = j - s + 1) if min <= L < avg and H & mask_s == 0, or avg <= L < max and H & mask_l == 0; L == max
    always ends it. mask_s / mask_l: the first log2(avg) +/- normalization bits of 62, 60, 58, ..."""
    gear = model_gear(seed)
    bits = avg_size.bit_length() - 1
    mask_s, mask_l = model_mask(bits + normalization), model_mask(bits - normalization)
    m64 = (1 << 64) - 1
    out, s, n = [], 0, len(data)
    while s < n:
        end = min(n, s + max_size)
        cut = end
        h = 0
        # 64 bytes of window before the first tested byte (s + min - 1): start at s + min - 64.
        for j in range(s + min_size - 64, end):
            h = ((h << 1) + gear[data[j]]) & m64
            L = j - s + 1
            if L < min_size or L == max_size:
                continue
            if not h & (mask_s if L < avg_size else mask_l):
                cut = j + 1
                break
        out.append(cut - s)
        s = cut
    return out


@pytest.mark.parametrize("params", [
    dict(min_size=64, avg_size=256, max_size=1024, normalization=2),
    dict(min_size=64, avg_size=256, max_size=1024, normalization=0),
    dict(min_size=200, avg_size=256, max_size=1000, normalization=3),
    dict(min_size=64, avg_size=64, max_size=200, normalization=1),
    dict(min_size=100, avg_size=128, max_size=128, normalization=2),
    dict(min_size=64, avg_size=64, max_size=64, normalization=0),
])
def test_matches_the_definition(params):
    low_entropy = bytes(b & 3 for b in rand(20000, 5))
    text = (b"the quick brown fox jumps over the lazy dog; " * 500)[:20000]
    for data in (rand(40000, 4), low_entropy, text, rand(63, 6), rand(64, 6), rand(65, 6), b"\x07"):
        assert core.chunk_lengths(data, SEED, **params) == model_chunk_lengths(data, SEED, **params)


# ---- properties ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params,size", [
    (SMALL, 4 << 20),
    (dict(min_size=64 << 10, avg_size=256 << 10, max_size=1 << 20), 16 << 20),
    ({}, 24 << 20),  # the defaults: 256 KiB / 512 KiB / 2 MiB
])
def test_lengths_cover_the_data_within_bounds(params, size):
    data = rand(size, 2)
    lens = core.chunk_lengths(data, SEED, **params)
    mn = params.get("min_size", 256 << 10)
    mx = params.get("max_size", 2 << 20)
    assert sum(lens) == size
    assert all(mn <= n <= mx for n in lens[:-1])
    assert 1 <= lens[-1] <= mx
    assert len(lens) > 1
    # random data: nearly no chunk is forced at max_size, and the mean is in the neighbourhood of avg
    avg = params.get("avg_size", 512 << 10)
    assert avg / 2 < size / len(lens) < 2 * avg


def test_edge_lengths():
    assert core.chunk_lengths(b"", SEED, **TINY) == []
    assert core.chunk_lengths(b"x", SEED, **TINY) == [1]
    assert core.chunk_lengths(bytes(63), SEED, **TINY) == [63]
    # all zeros: the hash is constant, so (for this seed) no cut point: max-size chunks
    lens = core.chunk_lengths(bytes(10000), SEED, **TINY)
    assert lens == [1024] * 9 + [784]
    c = core.Chunker(SEED, **TINY)
    assert c.finish() == 0
    assert c.cuts(b"") == []
    assert c.finish() == 0


def _stream(data, sizes, params, kind="bytes"):
    """Feed `data` in pieces of the given sizes (cycled); return every chunk length, tail included."""
    c = core.Chunker(SEED, **params)
    mv = memoryview(data)
    arr = np.frombuffer(data, dtype=np.uint8)
    out, pos, k = [], 0, 0
    while pos < len(data):
        n = sizes[k % len(sizes)]
        k += 1
        if kind == "bytes":
            piece = data[pos:pos + n]
        elif kind == "bytearray":
            piece = bytearray(data[pos:pos + n])
        elif kind == "memoryview":
            piece = mv[pos:pos + n]
        else:
            piece = arr[pos:pos + n]
        out += c.cuts(piece)
        pos += n
    tail = c.finish()
    if tail:
        out.append(tail)
    return out


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "numpy"])
def test_streaming_split_invariance(kind):
    data = rand(3 << 20, 7)
    whole = core.chunk_lengths(data, SEED, **SMALL)
    rng = random.Random(kind)
    for sizes in ([1 << 20], [65536], [rng.randint(1, 100000) for _ in range(64)],
                  [rng.randint(1, 3000) for _ in range(64)], [rng.choice([1, 2, 5, 4095, 70000]) for _ in range(64)]):
        assert _stream(data, sizes, SMALL, kind) == whole
    # many tiny buffers
    head = data[:200000]
    assert _stream(head, [3], SMALL, kind) == core.chunk_lengths(head, SEED, **SMALL)


def test_streaming_one_byte_feeds():
    data = rand(40000, 8)
    whole = core.chunk_lengths(data, SEED, **TINY)
    assert _stream(data, [1], TINY) == whole
    assert _stream(data, [1, 1, 2, 63, 1, 64, 65], TINY) == whole


def test_cuts_reports_chunks_ending_in_each_buffer():
    data = rand(1 << 20, 9)
    whole = core.chunk_lengths(data, SEED, **SMALL)
    c = core.Chunker(SEED, **SMALL)
    step = 100000
    got, end = [], 0
    for off in range(0, len(data), step):
        for n in c.cuts(data[off:off + step]):
            end += n
            assert off < end <= off + step  # each reported chunk ends inside this buffer
            got.append(n)
    tail = c.finish()
    assert end + tail == len(data)
    assert got + ([tail] if tail else []) == whole
    # finish() reset the chunker: the same data chunks the same again
    assert c.cuts(data) + [c.finish()] == whole


def test_mixed_buffer_types_in_one_stream():
    data = rand(600000, 10)
    whole = core.chunk_lengths(data, SEED, **SMALL)
    c = core.Chunker(SEED, **SMALL)
    pieces = [data[:1000], bytearray(data[1000:70001]), memoryview(data)[70001:300000],
              np.frombuffer(data[300000:], dtype=np.uint8)]
    out = []
    for p in pieces:
        out += c.cuts(p)
    out.append(c.finish())
    assert out == whole


def _chunks(data, lens):
    out, pos = [], 0
    for n in lens:
        out.append(hashlib.sha256(data[pos:pos + n]).digest())
        pos += n
    return out


@pytest.mark.parametrize("params", [SMALL, dict(min_size=256 << 10, avg_size=512 << 10, max_size=2 << 20)])
def test_insert_changes_only_nearby_chunks(params):
    data = rand(32 << 20, 11)
    base = _chunks(data, core.chunk_lengths(data, SEED, **params))
    rng = random.Random(3)
    for at in (0, 1, len(data) // 2 + 12345, rng.randrange(len(data)), len(data) - 5):
        edited = data[:at] + b"\x5a" + data[at:]
        new = _chunks(edited, core.chunk_lengths(edited, SEED, **params))
        lost = Counter(base) - Counter(new)
        added = Counter(new) - Counter(base)
        assert sum(lost.values()) <= 2 and sum(added.values()) <= 2, (at, len(lost), len(added))
    # deleting a byte: the same
    edited = data[:1000000] + data[1000001:]
    new = _chunks(edited, core.chunk_lengths(edited, SEED, **params))
    assert sum((Counter(base) - Counter(new)).values()) <= 2


def test_seed_changes_the_cut_points():
    data = rand(4 << 20, 12)
    a = core.chunk_lengths(data, SEED, **SMALL)
    b = core.chunk_lengths(data, bytes(32), **SMALL)
    c = core.chunk_lengths(data, SEED[:-1] + b"\xff", **SMALL)
    ends = [set(np.cumsum(x)[:-1].tolist()) for x in (a, b, c)]
    for i in range(3):
        for j in range(i + 1, 3):
            # independent keys: only a few boundaries coincide (by chance or at max_size)
            assert len(ends[i] & ends[j]) < 0.1 * min(len(ends[i]), len(ends[j]))
    # the seed is accepted from any buffer type
    assert core.chunk_lengths(data, bytearray(SEED), **SMALL) == a
    assert core.chunk_lengths(data, np.frombuffer(SEED, np.uint8), **SMALL) == a


def test_normalization_level_matters():
    data = rand(8 << 20, 13)
    spread = {}
    for nc in range(4):
        lens = np.array(core.chunk_lengths(data, SEED, normalization=nc, **SMALL)[:-1])
        assert lens.min() >= SMALL["min_size"] and lens.max() <= SMALL["max_size"]
        spread[nc] = lens.std()
    # a higher level pulls the chunk sizes towards avg_size
    assert spread[0] > spread[1] > spread[2] > spread[3]


@pytest.mark.parametrize("kw", [
    dict(min_size=63, avg_size=256, max_size=1024),
    dict(min_size=0, avg_size=256, max_size=1024),
    dict(min_size=512, avg_size=256, max_size=1024),
    dict(min_size=64, avg_size=2048, max_size=1024),
    dict(min_size=64, avg_size=300, max_size=1024),
    dict(min_size=64, avg_size=0, max_size=1024),
    dict(min_size=64, avg_size=256, max_size=(64 << 20) + 1),
    dict(min_size=64, avg_size=256, max_size=1024, normalization=4),
    dict(min_size=64, avg_size=256, max_size=1024, normalization=-1),
])
def test_bad_params_raise_value_error(kw):
    with pytest.raises(ValueError):
        core.Chunker(SEED, **kw)
    with pytest.raises(ValueError):
        core.chunk_lengths(b"abc", SEED, **kw)


def test_bad_seed_raises_value_error():
    for seed in (b"", bytes(31), bytes(33)):
        with pytest.raises(ValueError):
            core.Chunker(seed, **TINY)
        with pytest.raises(ValueError):
            core.chunk_lengths(b"abc", seed, **TINY)


def test_largest_allowed_params():
    core.Chunker(SEED, min_size=64, avg_size=64, max_size=64, normalization=3)
    core.Chunker(SEED, min_size=64 << 20, avg_size=64 << 20, max_size=64 << 20, normalization=0)
    data = rand(1 << 20, 14)
    # min == max: fixed-size chunks
    assert core.chunk_lengths(data, SEED, min_size=4096, avg_size=4096, max_size=4096) == [4096] * 256


# ---- is_all_zero ----------------------------------------------------------------------------------------

SIZES = list(range(0, 70)) + [127, 128, 129, 255, 256, 257, 511, 512, 1000, 4095, 4096, 4097, 65536 + 7]


@pytest.mark.parametrize("offset", range(0, 16))
def test_is_all_zero_any_alignment(offset):
    buf = bytearray(70000 + 32)
    mv = memoryview(buf)
    for n in SIZES:
        view = mv[offset:offset + n]
        assert core.is_all_zero(view)
        positions = range(n) if n <= 300 else sorted({0, 1, 7, 8, 31, 32, 255, 256, n // 2, n - 9, n - 8, n - 2, n - 1})
        for i in positions:
            for v in (1, 0x80, 0xFF):
                buf[offset + i] = v
                assert not core.is_all_zero(view), (offset, n, i, v)
            buf[offset + i] = 0
        # bytes just outside the view do not count
        buf[offset + n] = 1
        if offset:
            buf[offset - 1] = 1
        assert core.is_all_zero(view)
        buf[offset + n] = 0
        if offset:
            buf[offset - 1] = 0


def test_is_all_zero_buffer_types():
    assert core.is_all_zero(b"")
    assert core.is_all_zero(bytes(1 << 20))
    assert not core.is_all_zero(bytes(1 << 20) + b"\x01")
    assert core.is_all_zero(bytearray(12345))
    a = np.zeros(1 << 20, dtype=np.uint8)
    assert core.is_all_zero(a)
    a[777777] = 4
    assert not core.is_all_zero(a)
    assert core.is_all_zero(a[:777777])
    assert core.is_all_zero(np.zeros(1000, dtype=np.uint64))
    w = np.zeros(1000, dtype=np.uint64)
    w[999] = 1 << 63
    assert not core.is_all_zero(w)
    assert not core.is_all_zero(rand(1 << 16, 15))
