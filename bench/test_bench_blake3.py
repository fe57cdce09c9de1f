"""BLAKE3 of 16 MiB in memory: recovault's core (core.blake3, at the best SIMD level and at each level this
CPU has) against the `blake3` package (the Rust implementation, restricted to one thread), same data.
The target is the core at >= 0.8x the package on one core."""
import blake3
import numpy as np
import pytest

from recovault import core

SIZE = 16 << 20
GROUP = "blake3"


@pytest.fixture(scope="module")
def data16():
    return np.random.default_rng(3).integers(0, 256, SIZE, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("level", ["auto", "portable", "avx2", "avx512"])
def test_blake3_core(benchmark, throughput, data16, level):
    got = core.blake3_set_simd(level)
    try:
        if level != "auto" and got != level:
            pytest.skip(f"this CPU has no {level}")
        benchmark.group = GROUP
        benchmark.extra_info["simd"] = got
        digest = benchmark(core.blake3, data16)
        assert digest == blake3.blake3(data16, max_threads=1).digest()
        throughput(SIZE, f"recovault core ({level}: {got})")
    finally:
        core.blake3_set_simd("auto")


def test_blake3_package(benchmark, throughput, data16):
    benchmark.group = GROUP

    def run():
        return blake3.blake3(data16, max_threads=1).digest()

    digest = benchmark(run)
    assert digest == core.blake3(data16)
    throughput(SIZE, "blake3 package (Rust, 1 thread)", reference=True)
