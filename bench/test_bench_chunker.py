"""The keyed FastCDC chunker (core.chunk_lengths) on 64 MiB of random bytes, with the library defaults
(512 KiB / 1 MiB / 8 MiB) and with small chunks (2 KiB / 8 KiB / 64 KiB, nearly every byte hashed: the raw
speed of the gear-hash loop); and core.is_all_zero on 64 MiB of zeros against a memcmp (bytes ==).

With the defaults, cut-point skipping leaves the first min_size bytes of every chunk unread, so the
whole-stream rate is well above the hashing rate."""
import hashlib

import numpy as np
import pytest

from recovault import core

SEED = hashlib.sha256(b"bench seed").digest()
SIZE = 64 << 20

PARAMS = {
    "512K/1M/8M (defaults)": dict(min_size=512 << 10, avg_size=1 << 20, max_size=8 << 20),
    "256K/512K/2M": dict(min_size=256 << 10, avg_size=512 << 10, max_size=2 << 20),
    "2K/8K/64K (raw loop)": dict(min_size=2 << 10, avg_size=8 << 10, max_size=64 << 10),
}


@pytest.fixture(scope="module")
def random64():
    return np.random.default_rng(1).integers(0, 256, SIZE, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("name", list(PARAMS))
def test_chunk_lengths_64mib(benchmark, throughput, random64, name):
    benchmark.group = "chunker 64MiB random"
    params = PARAMS[name]
    lens = benchmark.pedantic(core.chunk_lengths, args=(random64, SEED), kwargs=params, rounds=8, iterations=1,
                              warmup_rounds=1)
    assert sum(lens) == SIZE
    benchmark.extra_info["chunks"] = len(lens)
    benchmark.extra_info["mean_chunk"] = round(SIZE / len(lens))
    throughput(SIZE, name)
    if benchmark.stats is not None:
        benchmark.extra_info["bytes_per_s"] = round(SIZE / benchmark.stats.stats.median)


def _written_zeros():
    # np.full writes every page: bytes(SIZE) or np.zeros would map the shared zero page (calloc), which
    # reads from cache and flatters any scan of it.
    return np.full(SIZE, 0, dtype=np.uint8)


@pytest.fixture(scope="module")
def zeros64():
    return _written_zeros()


def test_is_all_zero_core(benchmark, throughput, zeros64):
    benchmark.group = "is_all_zero 64MiB"
    assert benchmark(core.is_all_zero, zeros64)
    throughput(SIZE, "recovault core")


def test_is_all_zero_memcmp(benchmark, throughput, zeros64):
    benchmark.group = "is_all_zero 64MiB"
    a, b = zeros64.tobytes(), _written_zeros().tobytes()
    assert benchmark(lambda: a == b)
    throughput(SIZE, "bytes == (memcmp)", reference=True)
