"""zstd compression of recovault's C++ core against the independent `zstandard` package, the error paths of
core.zstd_decompress, and the core.looks_incompressible estimator on real files of this system."""
import glob
import os

import numpy as np
import pytest
import zstandard

from recovault import core


def _text_corpus(limit):
    parts, total = [], 0
    for pattern in ("/usr/include/*.h", "/usr/include/*/*.h", "/usr/share/doc/*/copyright"):
        for f in sorted(glob.glob(pattern)):
            try:
                with open(f, "rb") as fh:
                    b = fh.read()
            except OSError:
                continue
            parts.append(b)
            total += len(b)
            if total >= limit:
                return b"".join(parts)[:limit]
    if total < limit // 4:
        pytest.skip("not enough text files on this system")
    return b"".join(parts)


@pytest.fixture(scope="module")
def text():
    return _text_corpus(256 * 1024)


def _ref_decompress(frame):
    return zstandard.ZstdDecompressor().decompress(frame)


LEVELS = [1, 3, 9, 19, -1, -5, -50]


@pytest.mark.parametrize("level", LEVELS)
def test_core_frames_decompress_with_zstandard(text, level):
    data = text[: 96 * 1024] if level == 19 else text
    frame = core.zstd_compress(data, level)
    assert isinstance(frame, bytes)
    params = zstandard.get_frame_parameters(frame)
    assert params.content_size == len(data)  # content size always recorded
    assert not params.has_checksum  # documented: GCM authenticates the bytes, no xxhash
    assert _ref_decompress(frame) == data
    assert core.zstd_decompress(frame) == data
    if level >= 1:
        assert len(frame) < len(data) // 2  # text really compresses


def test_levels_order_and_match_reference_ratio(text):
    sizes = {lvl: len(core.zstd_compress(text[: 96 * 1024], lvl)) for lvl in (-5, 1, 3, 19)}
    assert sizes[-5] > sizes[1] >= sizes[3] > sizes[19]
    for lvl in (1, 3):
        ref = len(zstandard.ZstdCompressor(level=lvl).compress(text))
        ours = len(core.zstd_compress(text, lvl))
        assert abs(ours - ref) <= ref * 0.02 + 64  # same library family, same level: near-identical size


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 1023, 1024, 1025, 65535, 65536, 65537, 2 * 1024 * 1024 + 3])
def test_roundtrip_sizes_both_directions(n):
    rng = np.random.default_rng(n)
    # half random, half repetitive: exercises literals and matches
    data = (rng.integers(0, 256, n // 2, dtype=np.uint8).tobytes() + b"abcdefgh" * (n // 16 + 1))[:n]
    frame = core.zstd_compress(data, 3)
    assert _ref_decompress(frame) == data
    assert zstandard.frame_content_size(frame) == n
    theirs = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(data)
    assert core.zstd_decompress(theirs) == data
    theirs_ck = zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=True).compress(data)
    assert core.zstd_decompress(theirs_ck) == data


@pytest.mark.parametrize("level", [1, 3, 9, 19, -1, -5])
def test_zstandard_frames_decompress_with_core(text, level):
    data = text[: 64 * 1024]
    theirs = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data)
    assert core.zstd_decompress(theirs) == data


def test_zstd_default_level_and_bounds():
    data = b"hello hello hello hello " * 100
    assert core.zstd_compress(data) == core.zstd_compress(data, 3)
    assert core.zstd_decompress(core.zstd_compress(data, 0)) == data  # 0 = zstd's default
    assert core.zstd_decompress(core.zstd_compress(data, core.ZSTD_MAX_LEVEL)) == data
    assert core.ZSTD_MAX_LEVEL == zstandard.MAX_COMPRESSION_LEVEL
    for bad in (core.ZSTD_MAX_LEVEL + 1, 100, -(1 << 20)):
        with pytest.raises(ValueError, match="zstd level must be between"):
            core.zstd_compress(data, bad)


def test_zstd_buffer_kinds(text):
    data = text[:10000]
    frame = core.zstd_compress(data)
    for src in (bytearray(data), memoryview(data), np.frombuffer(data, np.uint8),
                memoryview(b"xx" + data + b"yy")[2:-2]):
        assert core.zstd_compress(src) == frame
    for src in (bytearray(frame), memoryview(frame), np.frombuffer(frame, np.uint8)):
        assert core.zstd_decompress(src) == data
    with pytest.raises(TypeError):
        core.zstd_compress(memoryview(bytearray(data))[::2])
    with pytest.raises(TypeError):
        core.zstd_decompress(np.frombuffer(frame, np.uint8)[::2])
    with pytest.raises(TypeError):
        core.zstd_compress("text")


def test_compression_is_deterministic(text):
    assert core.zstd_compress(text, 3) == core.zstd_compress(text, 3)


# ---- decompression errors ------------------------------------------------------------------------------

def test_decompress_garbage_and_empty():
    for bad in (b"", b"\x28", b"\x28\xb5\x2f", b"not a zstd frame at all", os.urandom(1000)):
        with pytest.raises(core.DecompressError):
            core.zstd_decompress(bad)
    with pytest.raises(ValueError):  # a ValueError subclass
        core.zstd_decompress(b"garbage garbage")


def test_decompress_truncated(text):
    frame = core.zstd_compress(text[:50000], 3)
    for cut in sorted({1, 4, 5, 6, 8, 12, 20, 100, len(frame) // 2, len(frame) - 3, len(frame) - 1}):
        with pytest.raises(core.DecompressError):
            core.zstd_decompress(frame[:cut])


def test_decompress_trailing_garbage_and_concatenated_frames(text):
    frame = core.zstd_compress(text[:5000], 3)
    with pytest.raises(core.DecompressError):
        core.zstd_decompress(frame + b"junk")
    with pytest.raises(core.DecompressError):
        core.zstd_decompress(frame + frame)  # only single frames are accepted


def test_decompress_never_returns_wrong_data_on_bit_flips(text):
    data = text[:3000]
    # with a checksum every corruption is caught, or the flipped bit is one the decoder ignores
    frame = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)
    raised = 0
    for bit in range(len(frame) * 8):
        bad = bytearray(frame)
        bad[bit // 8] ^= 1 << (bit % 8)
        try:
            out = core.zstd_decompress(bytes(bad))
        except core.DecompressError:
            raised += 1
            continue
        assert out == data, f"bit {bit}: wrong data returned without an error"
    assert raised >= len(frame) * 8 - 16


def test_decompress_checksum_mismatch():
    data = b"0123456789" * 500
    frame = bytearray(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data))
    frame[-1] ^= 0x55
    with pytest.raises(core.DecompressError, match="corrupt"):
        core.zstd_decompress(bytes(frame))


def test_decompress_requires_content_size(text):
    data = text[:20000]
    no_size = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(data)
    assert zstandard.frame_content_size(no_size) == -1
    with pytest.raises(core.DecompressError, match="content size"):
        core.zstd_decompress(no_size)
    streamed = zstandard.ZstdCompressor(level=3).compressobj()
    frame = streamed.compress(data) + streamed.flush()
    assert zstandard.frame_content_size(frame) == -1
    with pytest.raises(core.DecompressError):
        core.zstd_decompress(frame)


def test_decompress_max_size():
    data = b"z" * 100000
    frame = core.zstd_compress(data)
    assert core.zstd_decompress(frame, max_size=100000) == data
    assert core.zstd_decompress(frame, 100000) == data
    with pytest.raises(core.DecompressError, match="more than the limit"):
        core.zstd_decompress(frame, max_size=99999)
    with pytest.raises(core.DecompressError):
        core.zstd_decompress(frame, max_size=0)
    empty = core.zstd_compress(b"")
    assert core.zstd_decompress(empty, max_size=0) == b""


def test_decompress_lying_header_is_rejected_before_allocating():
    # a frame header claiming 1 TiB of content (single segment, 8-byte content size), no blocks
    header = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + (1 << 40).to_bytes(8, "little")
    assert zstandard.frame_content_size(header) == 1 << 40
    with pytest.raises(core.DecompressError, match="more than the limit"):
        core.zstd_decompress(header)  # default limit 1 GiB
    # claims 64 KiB but the block data is missing
    small = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + (65536).to_bytes(8, "little")
    with pytest.raises(core.DecompressError):
        core.zstd_decompress(small)


# ---- looks_incompressible ------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [4096, 8192, 65536, 1 << 20, 4 << 20])
def test_random_looks_incompressible(n):
    assert core.looks_incompressible(os.urandom(n))


def test_small_inputs_are_never_flagged():
    # below 1 KiB it is cheaper to just try compressing
    for n in (0, 1, 100, 1023):
        assert not core.looks_incompressible(os.urandom(n))


def test_zstd_frames_look_incompressible(text):
    flagged = 0
    for size in (16 * 1024, 64 * 1024, 256 * 1024):
        for level in (1, 3, 19 if size <= 64 * 1024 else 9):
            frame = core.zstd_compress(text[:size], level)
            assert len(frame) >= 3000
            assert core.looks_incompressible(frame), (size, level, len(frame))
            flagged += 1
    assert flagged == 9


def test_compressed_frame_from_zstandard_looks_incompressible(text):
    frame = zstandard.ZstdCompressor(level=6).compress(text)
    assert len(frame) > 8192
    assert core.looks_incompressible(frame)


def test_text_and_zeros_look_compressible(text):
    assert not core.looks_incompressible(text)
    assert not core.looks_incompressible(text[:4096])
    for n in (1024, 4096, 1 << 20):
        assert not core.looks_incompressible(bytes(n))
        assert not core.looks_incompressible(b"\xff" * n)
    assert not core.looks_incompressible(np.arange(1 << 16, dtype=np.uint32).tobytes())


def _repetitive_high_entropy():
    rng = np.random.default_rng(7)
    block = rng.integers(0, 256, 32768, dtype=np.uint8).tobytes()
    small = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    return {"random-32KiB-block-x8": block * 8, "byte-cycle-0..255": bytes(range(256)) * 1024,
            "random-4KiB-block-x64": small * 64}


@pytest.mark.parametrize("name", sorted(_repetitive_high_entropy()))
def test_high_entropy_but_repetitive_data_is_really_compressible(name):
    data = _repetitive_high_entropy()[name]
    assert len(zstandard.ZstdCompressor(level=1).compress(data)) < len(data) // 4


@pytest.mark.parametrize("name", sorted(_repetitive_high_entropy()))
def test_high_entropy_but_repetitive_data_is_not_flagged(name):
    # Byte-wise random-looking data that repeats: the entropy stage passes it, the trial compression
    # (compress.cpp, stage 2) must see the repeats, so SealSession(compress="auto") compresses it.
    data = _repetitive_high_entropy()[name]
    assert not core.looks_incompressible(data)
    key = os.urandom(32)
    blob = core.SealSession(key).seal(b"id", data)
    assert blob[1] == 1 and len(blob) < len(data) // 4
    assert core.open_blob(key, b"id", blob) == data


def test_long_distance_repeat_is_not_flagged():
    block = np.random.default_rng(8).integers(0, 256, 256 * 1024, dtype=np.uint8).tobytes()
    data = block * 2
    assert len(zstandard.ZstdCompressor(level=1).compress(data)) < 0.6 * len(data)
    assert not core.looks_incompressible(data)


def _system_binaries():
    names = ["bash", "ls", "cp", "grep", "tar", "python3", "cmake", "gcc", "g++", "openssl", "perl", "git"]
    found = []
    for n in names:
        p = os.path.realpath(os.path.join("/usr/bin", n))
        if os.path.isfile(p) and os.path.getsize(p) >= 16384 and p not in found:
            found.append(p)
    return found


@pytest.mark.parametrize("path", _system_binaries() or ["/usr/bin/ls"])
def test_system_binaries_look_compressible(path):
    if not os.path.isfile(path):
        pytest.skip(f"{path} missing")
    with open(path, "rb") as f:
        data = f.read()
    assert not core.looks_incompressible(data), path
    # ...and they really are compressible, so the estimator is right to say so
    assert len(zstandard.ZstdCompressor(level=1).compress(data)) < 0.9 * len(data)


def test_flagged_binary_chunks_really_are_incompressible():
    # Over real binaries cut in 64 KiB pieces: whatever the estimator flags, zstd can't shrink much.
    bins = _system_binaries()
    if not bins:
        pytest.skip("no binaries found")
    checked = 0
    for p in bins[:6]:
        with open(p, "rb") as f:
            data = f.read()
        for i in range(0, len(data) - 65536 + 1, 65536):
            piece = data[i:i + 65536]
            checked += 1
            if core.looks_incompressible(piece):
                assert len(zstandard.ZstdCompressor(level=3).compress(piece)) > 0.9 * len(piece)
    assert checked > 0


def test_looks_incompressible_buffer_kinds():
    r = os.urandom(8192)
    for src in (bytearray(r), memoryview(r), np.frombuffer(r, np.uint8)):
        assert core.looks_incompressible(src)
    with pytest.raises(TypeError):
        core.looks_incompressible(memoryview(bytearray(r))[::2])
