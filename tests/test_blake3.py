"""BLAKE3 in recovault's C++ core (core.blake3, core.Blake3, core.blake3_derive_key) against the independent
`blake3` package (the Rust implementation) and the published test vectors, at every SIMD level this CPU
has (core.blake3_set_simd): tree shapes around chunk and subtree boundaries, any split of the input over
update() calls, keyed and derive_key modes, extendable output with seek, and the buffer types accepted."""
import random
import threading

import blake3 as ref
import numpy as np
import pytest

from recovault import core

LEVELS = ["portable", "avx2", "avx512"]

# Published test vectors (BLAKE3-team/BLAKE3, test_vectors/test_vectors.json): input byte i is i % 251.
TV_KEY = b"whats the Elvish word for friend"
TV_CONTEXT = "BLAKE3 2019-12-27 16:29:52 test vectors context"
TV_LENGTHS = [0, 1, 1023, 1024, 1025, 2048, 2049, 3072, 3073, 4096, 4097, 5120, 5121, 6144, 6145, 7168, 7169,
              8192, 8193, 16384, 31744, 102400]
# The first cases of the file, verbatim (131-byte extended outputs), so that the core is checked against
# the specification's own numbers and not only against another implementation.
TV_CASES = {
    0: ("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262e00f03e7b69af26b7faaf09fcd333050338ddf"
        "e085b8cc869ca98b206c08243a26f5487789e8f660afe6c99ef9e0c52b92e7393024a80459cf91f476f9ffdbda7001c22e159b40"
        "2631f277ca96f2defdf1078282314e763699a31c5363165421cce14d",
        "92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26b18171a2f22a4b94822c701f107153dba24918"
        "c4bae4d2945c20ece13387627d3b73cbf97b797d5e59948c7ef788f54372df45e45e4293c7dc18c1d41144a9758be58960856be1"
        "eabbe22c2653190de560ca3b2ac4aa692a9210694254c371e851bc8f",
        "2cc39783c223154fea8dfb7c1b1660f2ac2dcbd1c1de8277b0b0dd39b7e50d7d905630c8be290dfcf3e6842f13bddd573c098c"
        "3f17361f1f206b8cad9d088aa4a3f746752c6b0ce6a83b0da81d59649257cdf8eb3e9f7d4998e41021fac119deefb896224ac99f"
        "860011f73609e6e0e4540f93b273e56547dfd3aa1a035ba6689d89a0"),
    1: ("2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213c3a6cb8bf623e20cdb535f8d1a5ffb86342d9c"
        "0b64aca3bce1d31f60adfa137b358ad4d79f97b47c3d5e79f179df87a3b9776ef8325f8329886ba42f07fb138bb502f4081cbcec"
        "3195c5871e6c23e2cc97d3c69a613eba131e5f1351f3f1da786545e5",
        "6d7878dfff2f485635d39013278ae14f1454b8c0a3a2d34bc1ab38228a80c95b6568c0490609413006fbd428eb3fd14e7756d9"
        "0f73a4725fad147f7bf70fd61c4e0cf7074885e92b0e3f125978b4154986d4fb202a3f331a3fb6cf349a3a70e49990f98fe42897"
        "61c8602c4e6ab1138d31d3b62218078b2f3ba9a88e1d08d0dd4cea11",
        "b3e2e340a117a499c6cf2398a19ee0d29cca2bb7404c73063382693bf66cb06c5827b91bf889b6b97c5477f535361caefca0b5"
        "d8c4746441c57617111933158950670f9aa8a05d791daae10ac683cbef8faf897c84e6114a59d2173c3f417023a35d6983f2c7df"
        "a57e7fc559ad751dbfb9ffab39c2ef8c4aafebc9ae973a64f0c76551"),
    1024: ("42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af71cf8107265ecdaf8505b95d8fcec83a98a6a"
           "96ea5109d2c179c47a387ffbb404756f6eeae7883b446b70ebb144527c2075ab8ab204c0086bb22b7c93d465efc57f8d917f0b"
           "385c6df265e77003b85102967486ed57db5c5ca170ba441427ed9afa684e",
           "75c46f6f3d9eb4f55ecaaee480db732e6c2105546f1e675003687c31719c7ba4a78bc838c72852d4f49c864acb7adafe2478e8"
           "24afe51c8919d06168414c265f298a8094b1ad813a9b8614acabac321f24ce61c5a5346eb519520d38ecc43e89b5000236df05"
           "97243e4d2493fd626730e2ba17ac4d8824d09d1a4a8f57b8227778e2de",
           "7356cd7720d5b66b6d0697eb3177d9f8d73a4a5c5e968896eb6a6896843027066c23b601d3ddfb391e90d5c8eccdef4ae2a264"
           "bce9e612ba15e2bc9d654af1481b2e75dbabe615974f1070bba84d56853265a34330b4766f8e75edd1f4a1650476c10802f22b"
           "64bd3919d246ba20a17558bc51c199efdec67e80a227251808d8ce5bad"),
    1025: ("d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444f4c4a22b4b399155358a994e52bf255de600"
           "35742ec71bd08ac275a1b51cc6bfe332b0ef84b409108cda080e6269ed4b3e2c3f7d722aa4cdc98d16deb554e5627be8f955c9"
           "8e1d5f9565a9194cad0c4285f93700062d9595adb992ae68ff12800ab67a",
           "357dc55de0c7e382c900fd6e320acc04146be01db6a8ce7210b7189bd664ea69362396b77fdc0d2634a552970843722066c3c1"
           "5902ae5097e00ff53f1e116f1cd5352720113a837ab2452cafbde4d54085d9cf5d21ca613071551b25d52e69d6c81123872b6f"
           "19cd3bc1333edf0c52b94de23ba772cf82636cff4542540a7738d5b930",
           "effaa245f065fbf82ac186839a249707c3bddf6d3fdda22d1b95a3c970379bcb5d31013a167509e9066273ab6e2123bc835b40"
           "8b067d88f96addb550d96b6852dad38e320b9d940f86db74d398c770f462118b35d2724efa13da97194491d96dd37c3c09cbef"
           "665953f2ee85ec83d88b88d11547a6f911c8217cca46defa2751e7f3ad"),
}

# Around every boundary of the tree: blocks (64), chunks (1 KiB), 2..8 chunks, 8/16 chunks (one SIMD group),
# subtrees and batches (64 and 256 KiB), and a few MiB (many batches, deep stack).
SIZES = [0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 2049, 3072, 3073, 4096, 4097, 5120, 5121, 6144, 6145, 7168,
         7169, 8192, 8193, 9216, 15360, 16384, 16385, 17408, 31744, 32768, 32769, 65535, 65536, 65537, 102400,
         262143, 262144, 262145, 263168, 1 << 20, (1 << 20) + 1]
BIG_SIZES = [3 * (1 << 20) + 12345, 8 << 20]

_RNG = np.random.default_rng(20240527)
RANDOM = _RNG.integers(0, 256, (8 << 20) + 4096, dtype=np.uint8).tobytes()
PATTERN = (bytes(range(251)) * ((len(RANDOM) // 251) + 1))[:len(RANDOM)]
KEY = bytes(range(100, 132))


@pytest.fixture(params=LEVELS)
def simd(request):
    """Runs the test with the core restricted to one SIMD level; skipped where the CPU lacks it."""
    level = request.param
    got = core.blake3_set_simd(level)
    try:
        if got != level:
            pytest.skip(f"this CPU has no {level} (the core falls back to {got})")
        assert core.blake3_simd() == level
        yield level
    finally:
        core.blake3_set_simd("auto")


def _ref(data, mode, length=32, seek=0):
    if mode == "hash":
        h = ref.blake3(data)
    elif mode == "keyed":
        h = ref.blake3(data, key=KEY)
    else:
        h = ref.blake3(data, derive_key_context=TV_CONTEXT)
    return h.digest(length=length, seek=seek)


def _new(mode):
    if mode == "hash":
        return core.Blake3()
    if mode == "keyed":
        return core.Blake3(key=KEY)
    return None  # derive_key has no incremental object in the API


def _core_oneshot(data, mode):
    if mode == "hash":
        return core.blake3(data)
    if mode == "keyed":
        return core.blake3(data, key=KEY)
    return core.blake3_derive_key(TV_CONTEXT, data)


# ---- dispatch ------------------------------------------------------------------------------------------

def test_set_simd_levels():
    try:
        best = core.blake3_set_simd("auto")
        assert best in LEVELS
        assert core.blake3_simd() == best
        assert core.blake3_set_simd("portable") == "portable"
        assert core.blake3_simd() == "portable"
        # A level the CPU lacks falls back to the best one it has, never above it.
        for level in LEVELS:
            got = core.blake3_set_simd(level)
            assert got in LEVELS
            assert LEVELS.index(got) <= LEVELS.index(level)
            assert LEVELS.index(got) <= LEVELS.index(best)
        with pytest.raises(ValueError):
            core.blake3_set_simd("sse9")
    finally:
        core.blake3_set_simd("auto")


# ---- published test vectors ------------------------------------------------------------------------------

@pytest.mark.parametrize("n", sorted(TV_CASES))
def test_published_vectors_verbatim(simd, n):
    data = PATTERN[:n]
    want_hash, want_keyed, want_derive = (bytes.fromhex(x) for x in TV_CASES[n])
    assert core.blake3(data) == want_hash[:32]
    assert core.blake3(data, key=TV_KEY) == want_keyed[:32]
    assert core.blake3_derive_key(TV_CONTEXT, data) == want_derive[:32]
    h = core.Blake3()
    h.update(data)
    assert h.digest(length=131) == want_hash
    k = core.Blake3(key=TV_KEY)
    k.update(data)
    assert k.digest(length=131) == want_keyed


@pytest.mark.parametrize("n", TV_LENGTHS)
def test_published_vector_lengths(simd, n):
    data = PATTERN[:n]
    assert core.blake3(data) == ref.blake3(data).digest()
    assert core.blake3(data, key=TV_KEY) == ref.blake3(data, key=TV_KEY).digest()
    assert core.blake3_derive_key(TV_CONTEXT, data) == ref.blake3(data, derive_key_context=TV_CONTEXT).digest()
    h = core.Blake3()
    h.update(data)
    assert h.digest(length=131) == ref.blake3(data).digest(length=131)
    k = core.Blake3(key=TV_KEY)
    k.update(data)
    assert k.digest(length=131) == ref.blake3(data, key=TV_KEY).digest(length=131)


# ---- one-shot and incremental against the blake3 package -------------------------------------------------

@pytest.mark.parametrize("mode", ["hash", "keyed", "derive"])
def test_sizes(simd, mode):
    for n in SIZES:
        for src in (RANDOM, PATTERN):
            data = src[:n]
            assert _core_oneshot(data, mode) == _ref(data, mode), (mode, n)
            h = _new(mode)
            if h is not None:
                h.update(data)
                assert h.digest() == _ref(data, mode), (mode, n)


@pytest.mark.parametrize("n", BIG_SIZES)
def test_big_inputs(simd, n):
    data = RANDOM[:n]
    assert core.blake3(data) == ref.blake3(data).digest()
    assert core.blake3(data, key=KEY) == ref.blake3(data, key=KEY).digest()
    assert core.blake3_derive_key(TV_CONTEXT, data) == _ref(data, "derive")
    h = core.Blake3()
    for i in range(0, n, 1 << 20):  # 1 MiB updates: whole batches plus a buffered last chunk each
        h.update(data[i:i + (1 << 20)])
    assert h.digest(length=100, seek=12345) == ref.blake3(data).digest(length=100, seek=12345)


def _random_splits(rng, n):
    out, left = [], n
    while left > 0:
        r = rng.random()
        if r < 0.3:
            s = rng.randint(1, 64)
        elif r < 0.55:
            s = rng.randint(1, 3000)
        elif r < 0.8:
            s = rng.choice([1023, 1024, 1025, 4096, 8192, 65536])
        else:
            s = rng.randint(1, max(1, n // 3))
        s = min(s, left)
        out.append(s)
        left -= s
    return out


@pytest.mark.parametrize("mode", ["hash", "keyed"])
@pytest.mark.parametrize("seed", range(6))
def test_random_update_splits(simd, mode, seed):
    rng = random.Random(seed * 7919 + len(mode))
    for n in [0, 1, 1024, 1025, 5000, 8193, 70000, 262145, 600000, rng.randint(1, 1 << 20)]:
        data = RANDOM[seed:seed + n]
        h = _new(mode)
        pos = 0
        for s in _random_splits(rng, n):
            h.update(data[pos:pos + s])
            pos += s
        assert pos == n
        assert h.digest() == _ref(data, mode), (mode, n)


def test_update_at_chunk_boundaries(simd):
    # Updates ending exactly on chunk boundaries: the last whole chunk of each update must stay buffered
    # (it may be the root) and be hashed with the next update.
    data = RANDOM[:300 * 1024]
    for step in [1024, 2048, 3 * 1024, 8 * 1024, 64 * 1024, 256 * 1024]:
        h = core.Blake3()
        for i in range(0, len(data), step):
            h.update(data[i:i + step])
        assert h.digest() == ref.blake3(data).digest(), step
    for k in [1, 2, 7, 8, 9, 16, 64, 255, 256, 257]:
        h = core.Blake3()
        h.update(data[:k * 1024])
        h.update(data[k * 1024:])
        assert h.digest() == ref.blake3(data).digest(), k


def test_digest_keeps_state(simd):
    h = core.Blake3(key=KEY)
    h.update(RANDOM[:5000])
    first = h.digest()
    assert h.digest() == first
    assert h.digest(length=64)[:32] == first
    h.update(RANDOM[5000:70000])
    assert h.digest() == ref.blake3(RANDOM[:70000], key=KEY).digest()


# ---- extendable output -----------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 100, 1024, 5000, 70000])
def test_xof_lengths(simd, n):
    data = PATTERN[:n]
    h = core.Blake3()
    h.update(data)
    r = ref.blake3(data)
    for length in range(1, 132):
        assert h.digest(length=length) == r.digest(length=length), length


@pytest.mark.parametrize("mode", ["hash", "keyed"])
def test_xof_seek(simd, mode):
    for n in [0, 63, 1025, 9000]:
        data = RANDOM[:n]
        h = _new(mode)
        h.update(data)
        for seek in [0, 1, 31, 63, 64, 65, 127, 128, 1000, 2 ** 32 - 1, 2 ** 32 + 64, 2 ** 40 + 7,
                     2 ** 64 - 200]:
            for length in [1, 32, 64, 65, 131]:
                assert h.digest(length=length, seek=seek) == _ref(data, mode, length, seek), (n, seek, length)
    # Consecutive windows of the stream line up.
    h = core.Blake3()
    h.update(RANDOM[:3000])
    stream = h.digest(length=1000)
    assert b"".join(h.digest(length=100, seek=s) for s in range(0, 1000, 100)) == stream


# ---- derive_key ------------------------------------------------------------------------------------------

def test_derive_key_contexts(simd):
    for context in ["", "a", "recovault 2024 test context", "x" * 1023, "y" * 1024, "z" * 5000, "é€🔑 context"]:
        for material in [b"", b"key material", RANDOM[:2048], RANDOM[:70000]]:
            want = ref.blake3(material, derive_key_context=context).digest()
            assert core.blake3_derive_key(context, material) == want, (len(context), len(material))


# ---- buffer types ----------------------------------------------------------------------------------------

def test_buffer_types(simd):
    data = RANDOM[:100000]
    want = ref.blake3(data).digest()
    want_keyed = ref.blake3(data, key=KEY).digest()
    arr = np.frombuffer(data, dtype=np.uint8).copy()
    for buf in [data, bytearray(data), memoryview(data), memoryview(bytearray(data)), arr, memoryview(arr)]:
        assert core.blake3(buf) == want, type(buf)
        assert core.blake3(buf, key=KEY) == want_keyed, type(buf)
        assert core.blake3_derive_key(TV_CONTEXT, buf) == _ref(data, "derive"), type(buf)
        h = core.Blake3()
        h.update(buf)
        assert h.digest() == want, type(buf)
    # keys and material as other buffer types
    assert core.blake3(data, key=bytearray(KEY)) == want_keyed
    assert core.blake3(data, key=memoryview(KEY)) == want_keyed
    h = core.Blake3(key=bytearray(KEY))
    h.update(memoryview(data)[:50000])
    h.update(bytearray(data[50000:]))
    assert h.digest() == want_keyed
    # slices of a memoryview and of a numpy array (contiguous, non-zero offset)
    assert core.blake3(memoryview(data)[1000:70000]) == ref.blake3(data[1000:70000]).digest()
    assert core.blake3(arr[1000:70000]) == ref.blake3(data[1000:70000]).digest()
    assert core.blake3(b"") == ref.blake3(b"").digest()
    assert core.blake3(np.zeros(0, dtype=np.uint8)) == ref.blake3(b"").digest()


def test_non_contiguous_buffers(simd):
    """A strided buffer is either refused with TypeError (or BufferError, what CPython raises when a
    C-contiguous buffer is requested) or hashed as its logical bytes: never hashed as the raw memory."""
    data = RANDOM[:20000]
    for buf in [memoryview(data)[::2], np.frombuffer(data, dtype=np.uint8)[::3]]:
        logical = bytes(buf) if isinstance(buf, memoryview) else buf.tobytes()
        try:
            got = core.blake3(buf)
        except (TypeError, BufferError):
            continue
        assert got == ref.blake3(logical).digest()


def test_bad_keys():
    for bad in [b"", b"short", bytes(31), bytes(33)]:
        with pytest.raises((ValueError, TypeError)):
            core.blake3(b"abc", key=bad)
        with pytest.raises((ValueError, TypeError)):
            core.Blake3(key=bad)


# ---- concurrency -----------------------------------------------------------------------------------------

def test_independent_hashers_in_threads():
    errors = []

    def work(t):
        try:
            rng = random.Random(t)
            for _ in range(5):
                n = rng.randint(0, 300000)
                data = RANDOM[t * 1000:t * 1000 + n]
                h = core.Blake3(key=KEY) if t % 2 else core.Blake3()
                pos = 0
                for s in _random_splits(rng, n):
                    h.update(data[pos:pos + s])
                    pos += s
                want = ref.blake3(data, key=KEY) if t % 2 else ref.blake3(data)
                assert h.digest() == want.digest()
                assert core.blake3(data) == ref.blake3(data).digest()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
