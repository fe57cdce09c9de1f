"""The Reed-Solomon kernel (core.ErasureCode, C++ on ISA-L) against an independent model written here from first
principles: GF(2^8) modulo x^8+x^4+x^3+x^2+1 (0x11d) by log/exp tables, the systematic Cauchy generator matrix
[I ; 1/((k+r) XOR c)] of docs/vault-format.md §12, and encoding as the matrix product, byte by byte.

The kernel's encoding must equal the model's byte for byte (the shards are a storage format), and every
pattern of up to m lost shards must decode to the original bytes and rebuild the lost shards exactly:
exhaustively for 4+2, 3+3 and 6+3. Detecting a corrupt shard is not the kernel's job (a shard given is
believed): the storage layer checksums each shard and passes a corrupt one as missing.
"""
from __future__ import annotations

import itertools
import random
import threading
from functools import reduce
from typing import List, Optional, Sequence

import pytest

from recovault import core

# --- the model: GF(2^8) from first principles --------------------------------------------------
POLY = 0x11D
EXP = [0] * 512
LOG = [0] * 256
_x = 1
for _i in range(255):
    EXP[_i] = _x
    LOG[_x] = _i
    _x <<= 1
    if _x & 0x100:
        _x ^= POLY
for _i in range(255, 512):
    EXP[_i] = EXP[_i - 255]


def gf_mul(a: int, b: int) -> int:
    return 0 if a == 0 or b == 0 else EXP[LOG[a] + LOG[b]]


def gf_inv(a: int) -> int:
    assert a != 0
    return EXP[255 - LOG[a]]


# MUL[c] is the 256-byte table of x -> c*x, so a whole shard is multiplied by c with bytes.translate.
MUL = [bytes(gf_mul(c, x) for x in range(256)) for c in range(256)]


def model_matrix(k: int, m: int) -> List[List[int]]:
    identity = [[int(r == c) for c in range(k)] for r in range(k)]
    return identity + [[gf_inv((k + r) ^ c) for c in range(k)] for r in range(m)]


def xor_all(parts: Sequence[bytes], size: int) -> bytes:
    if size == 0:
        return b""
    return reduce(lambda a, b: a ^ b, (int.from_bytes(p, "little") for p in parts)).to_bytes(size, "little")


def combine(row: Sequence[int], shards: Sequence[bytes], size: int) -> bytes:
    """sum over j of row[j] * shards[j], in GF(2^8), byte by byte."""
    return xor_all([s.translate(MUL[c]) for c, s in zip(row, shards)], size)


def model_encode(data: bytes, k: int, m: int) -> List[bytes]:
    size = -(-len(data) // k)
    padded = data.ljust(size * k, b"\0")
    shards = [padded[i * size:(i + 1) * size] for i in range(k)]
    return shards + [combine(row, shards, size) for row in model_matrix(k, m)[k:]]


# --- helpers -----------------------------------------------------------------------------------
def rand_bytes(rng: random.Random, n: int) -> bytes:
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n else b""


def drop(shards: Sequence[bytes], lost: Sequence[int]) -> List[Optional[bytes]]:
    return [None if i in lost else s for i, s in enumerate(shards)]


# --- the generator matrix and encoding ----------------------------------------------------------
@pytest.mark.parametrize("k,m", [(1, 0), (1, 1), (4, 2), (3, 3), (6, 3), (10, 4), (17, 5), (200, 55)])
def test_matrix_is_the_documented_cauchy_matrix(k, m):
    ec = core.ErasureCode(k, m)
    assert (ec.k, ec.m, ec.n) == (k, m, k + m)
    assert ec.matrix == bytes(itertools.chain.from_iterable(model_matrix(k, m)))


@pytest.mark.parametrize("k,m", [(1, 2), (4, 2), (3, 3), (6, 3), (10, 4), (16, 16)])
@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 31, 33, 1000, 4097, 65536 + 7])
def test_encode_equals_the_model(k, m, size):
    rng = random.Random(f"{k}+{m}/{size}")
    data = rand_bytes(rng, size)
    ec = core.ErasureCode(k, m)
    shards = ec.encode(data)
    assert len(shards) == k + m
    assert all(len(s) == ec.shard_size(size) == -(-size // k) for s in shards)
    assert shards == model_encode(data, k, m)
    assert ec.encode_parity(shards[:k]) == shards[k:]
    assert ec.decode(shards, size) == data


def test_encode_large_object_equals_the_model():
    rng = random.Random(13)
    data = rand_bytes(rng, 3 * (1 << 20) + 12345)  # not a multiple of k; long enough for every SIMD loop
    ec = core.ErasureCode(10, 4)
    shards = ec.encode(data)
    assert shards == model_encode(data, 10, 4)
    lost = [0, 3, 9, 12]
    assert ec.decode(drop(shards, lost), len(data)) == data
    assert ec.reconstruct(drop(shards, lost), lost) == [shards[i] for i in lost]


# --- every pattern of loss ----------------------------------------------------------------------
@pytest.mark.parametrize("k,m", [(4, 2), (3, 3), (6, 3)])
@pytest.mark.parametrize("size", [0, 1, 7, 257, 5000])
def test_every_loss_of_up_to_m_shards_decodes_and_rebuilds(k, m, size):
    rng = random.Random(f"loss {k}+{m}/{size}")
    data = rand_bytes(rng, size)
    ec = core.ErasureCode(k, m)
    expected = model_encode(data, k, m)
    shards = ec.encode(data)
    assert shards == expected
    patterns = 0
    for lost_count in range(m + 1):
        for lost in itertools.combinations(range(k + m), lost_count):
            given = drop(shards, lost)
            assert ec.decode(given, size) == data, lost
            assert ec.reconstruct(given, list(lost)) == [expected[i] for i in lost], lost
            patterns += 1
    assert patterns == sum(len(list(itertools.combinations(range(k + m), c))) for c in range(m + 1))


def test_reconstruct_any_wanted_shards_in_any_order():
    rng = random.Random(5)
    data = rand_bytes(rng, 9999)
    ec = core.ErasureCode(5, 3)
    shards = ec.encode(data)
    given = drop(shards, [1, 6])
    wanted = [6, 1, 0, 7, 6]  # lost and present, data and parity, repeated
    assert ec.reconstruct(given, wanted) == [shards[i] for i in wanted]
    assert ec.reconstruct(given, []) == []


def test_random_losses_at_the_limit_of_255_shards():
    rng = random.Random(255)
    k, m = 200, 55
    data = rand_bytes(rng, 200 * 37 + 3)
    ec = core.ErasureCode(k, m)
    shards = ec.encode(data)
    assert shards == model_encode(data, k, m)
    for _ in range(3):
        lost = rng.sample(range(k + m), m)
        assert ec.decode(drop(shards, lost), len(data)) == data


def test_columns_are_independent_so_a_slice_rebuilds_a_slice():
    """A ranged read of a lost data shard reads the same byte range of k other shards."""
    rng = random.Random(7)
    data = rand_bytes(rng, 4 * 10000)
    ec = core.ErasureCode(4, 2)
    shards = ec.encode(data)
    a, b = 1234, 5678
    sliced = [None, None] + [s[a:b] for s in shards[2:]]
    assert ec.reconstruct(sliced, [0, 1]) == [shards[0][a:b], shards[1][a:b]]


def test_without_parity_every_shard_is_needed():
    ec = core.ErasureCode(3, 0)
    data = b"abcdefgh"
    shards = ec.encode(data)
    assert shards == [b"abc", b"def", b"gh\0"]
    assert ec.decode(shards, 8) == data
    with pytest.raises(core.NotEnoughShards, match="2 shards present, 3 needed"):
        ec.decode([b"abc", None, b"gh\0"], 8)


def test_buffers_of_any_kind_are_accepted():
    ec = core.ErasureCode(2, 2)
    data = bytearray(b"0123456789")
    shards = ec.encode(memoryview(data))
    assert shards == ec.encode(bytes(data))
    given = [None, bytearray(shards[1]), None, memoryview(shards[3])]
    assert ec.decode(given, 10) == bytes(data)


def test_threads_sharing_one_code_get_their_own_results():
    rng = random.Random(3)
    blobs = [rand_bytes(rng, 200_000 + i) for i in range(4)]
    ec = core.ErasureCode(4, 2)
    results: List[Optional[bytes]] = [None] * len(blobs)

    def work(i: int) -> None:
        for _ in range(5):
            results[i] = ec.decode(drop(ec.encode(blobs[i]), [0, 5]), len(blobs[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(blobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == blobs


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("k,m,message", [
    (0, 2, "k .data shards. must be at least 1, got 0"),
    (4, -1, "m .parity shards. must be at least 0, got -1"),
    (200, 56, "k \\+ m must be at most 255, got 256"),
])
def test_out_of_range_parameters_are_refused(k, m, message):
    with pytest.raises(ValueError, match=message):
        core.ErasureCode(k, m)


def test_too_few_shards_names_how_many_are_present_and_needed():
    ec = core.ErasureCode(4, 2)
    shards = ec.encode(b"x" * 100)
    given = drop(shards, [0, 2, 5])
    with pytest.raises(core.NotEnoughShards, match="^3 shards present, 4 needed$") as e:
        ec.decode(given, 100)
    assert isinstance(e.value, ValueError)
    assert (e.value.present, e.value.needed) == (3, 4)
    with pytest.raises(core.NotEnoughShards, match="^1 shard present, 4 needed$"):
        ec.reconstruct([None] * 5 + [shards[5]], [0])
    with pytest.raises(core.NotEnoughShards, match="^0 shards present, 4 needed$"):
        ec.decode([None] * 6, 0)


def test_malformed_shard_lists_are_refused():
    ec = core.ErasureCode(4, 2)
    shards = ec.encode(b"y" * 100)
    with pytest.raises(ValueError, match="expected 6 shards .None for a missing one., got 5"):
        ec.decode(shards[:5], 100)
    with pytest.raises(ValueError, match="shards differ in size: shard 3 is 24 bytes, the ones before it 25"):
        ec.decode(shards[:3] + [shards[3][:-1]] + shards[4:], 100)
    with pytest.raises(ValueError, match="shards of 25 bytes cannot hold 101 bytes in 4 data shards"):
        ec.decode(shards, 101)
    with pytest.raises(ValueError, match="shard index 6 out of range 0..5"):
        ec.reconstruct(shards, [6])
    with pytest.raises(ValueError, match="shard index -1 out of range 0..5"):
        ec.reconstruct(shards, [-1])
    with pytest.raises(ValueError, match="expected 4 data shards, got 3"):
        ec.encode_parity(shards[:3])
    with pytest.raises(TypeError, match="expected a C-contiguous bytes-like object, got str"):
        ec.encode("text")
