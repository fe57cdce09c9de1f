"""Reed-Solomon erasure coding of a 16 MiB object, 4+2 and 10+4: recovault's core (core.ErasureCode: copies
the object into k fresh shards, allocates the parity, calls ISA-L) vs ISA-L's ec_encode_data called straight
through ctypes on shards already in place (the kernel alone, as ISA-L's own erasure_code_perf times it).
Decode loses m data shards (the worst case: every lost shard is rebuilt). Figures are object bytes per second;
ISA-L's erasure_code_perf counts data + parity bytes, (k+m)/k times more (docs/performance.md)."""
import ctypes
import ctypes.util

import numpy as np
import pytest

from recovault import core

SIZE = 16 << 20
CODES = [(4, 2), (10, 4)]


@pytest.fixture(scope="module")
def obj16():
    return np.random.default_rng(13).integers(0, 256, SIZE, dtype=np.uint8).tobytes()


@pytest.fixture(scope="module")
def isal():
    name = ctypes.util.find_library("isal") or "libisal.so.2"
    lib = ctypes.CDLL(name)
    lib.gf_mul.restype = ctypes.c_ubyte
    return lib


class RawIsal:
    """ec_encode_data over k source buffers into `rows` outputs with precomputed tables: the timed call."""

    def __init__(self, lib, k, coeffs, sources):
        rows = len(coeffs) // k
        self.lib, self.k, self.rows = lib, k, rows
        a = (ctypes.c_ubyte * len(coeffs))(*coeffs)
        self.tables = (ctypes.c_ubyte * (32 * k * rows))()
        lib.ec_init_tables(k, rows, a, self.tables)
        self.size = len(sources[0])
        self.src = [np.frombuffer(s, np.uint8).copy() for s in sources]
        self.dst = [np.empty(self.size, np.uint8) for _ in range(rows)]
        self.src_ptrs = (ctypes.c_void_p * k)(*[s.ctypes.data for s in self.src])
        self.dst_ptrs = (ctypes.c_void_p * rows)(*[d.ctypes.data for d in self.dst])

    def __call__(self):
        self.lib.ec_encode_data(self.size, self.k, self.rows, self.tables, self.src_ptrs, self.dst_ptrs)
        return self.dst


def decode_coeffs(lib, ec, used, lost):
    """The rows of the inverse of the used shards' generator rows that give the lost data shards."""
    k, g = ec.k, ec.matrix
    rows = (ctypes.c_ubyte * (k * k))(*[g[i * k + c] for i in used for c in range(k)])
    inv = (ctypes.c_ubyte * (k * k))()
    assert lib.gf_invert_matrix(rows, inv, k) == 0
    return [inv[i * k + c] for i in lost for c in range(k)]


@pytest.mark.parametrize("k,m", CODES)
def test_erasure_encode_core(benchmark, throughput, obj16, k, m):
    benchmark.group = f"erasure encode {k}+{m} (16 MiB)"
    ec = core.ErasureCode(k, m)
    shards = benchmark(ec.encode, obj16)
    assert ec.decode([None] * m + shards[m:], SIZE) == obj16
    throughput(SIZE, "recovault core")


@pytest.mark.parametrize("k,m", CODES)
def test_erasure_encode_parity_core(benchmark, throughput, obj16, k, m):
    """What a storage layer can do instead: the data shards are slices of the object (16 MiB is a multiple
    of k=4; for 10 the caller pads the last shard), only the parity is computed and allocated."""
    benchmark.group = f"erasure encode {k}+{m} (16 MiB)"
    ec = core.ErasureCode(k, m)
    size = ec.shard_size(SIZE)
    padded = obj16 if size * k == SIZE else obj16 + bytes(size * k - SIZE)
    view = memoryview(padded)
    data = [view[i * size:(i + 1) * size] for i in range(k)]
    parity = benchmark(ec.encode_parity, data)
    assert parity == ec.encode(obj16)[k:]
    throughput(SIZE, "recovault core, parity only")


@pytest.mark.parametrize("k,m", CODES)
def test_erasure_encode_isal(benchmark, throughput, obj16, isal, k, m):
    benchmark.group = f"erasure encode {k}+{m} (16 MiB)"
    ec = core.ErasureCode(k, m)
    shards = ec.encode(obj16)
    raw = RawIsal(isal, k, list(ec.matrix[k * k:]), shards[:k])
    parity = benchmark(raw)
    assert [p.tobytes() for p in parity] == shards[k:]
    throughput(SIZE, "ISA-L ec_encode_data", reference=True)


@pytest.mark.parametrize("k,m", CODES)
def test_erasure_decode_core(benchmark, throughput, obj16, k, m):
    benchmark.group = f"erasure decode {k}+{m}, {m} data shards lost"
    ec = core.ErasureCode(k, m)
    given = [None] * m + ec.encode(obj16)[m:]
    assert benchmark(ec.decode, given, SIZE) == obj16
    throughput(SIZE, "recovault core")


@pytest.mark.parametrize("k,m", CODES)
def test_erasure_decode_isal(benchmark, throughput, obj16, isal, k, m):
    benchmark.group = f"erasure decode {k}+{m}, {m} data shards lost"
    ec = core.ErasureCode(k, m)
    shards = ec.encode(obj16)
    used, lost = list(range(m, k + m)), list(range(m))
    raw = RawIsal(isal, k, decode_coeffs(isal, ec, used, lost), [shards[i] for i in used])
    rebuilt = benchmark(raw)
    assert [r.tobytes() for r in rebuilt] == shards[:m]
    throughput(SIZE, "ISA-L ec_encode_data", reference=True)
