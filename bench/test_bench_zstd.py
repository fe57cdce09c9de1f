"""zstd on real text (up to 8 MiB from /usr/share/doc and /usr/include): recovault's core (system libzstd)
vs the `zstandard` package (its bundled libzstd), same level, single thread, content size recorded."""
import pytest
import zstandard

from recovault import core


def _ref_compressor(level):
    return zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False, threads=0)


@pytest.mark.parametrize("level", [1, 3])
def test_zstd_compress_core(benchmark, throughput, text8, level):
    benchmark.group = f"zstd compress level {level} ({len(text8) >> 20} MiB text)"
    frame = benchmark(core.zstd_compress, text8, level)
    assert zstandard.ZstdDecompressor().decompress(frame) == text8
    benchmark.extra_info["ratio"] = round(len(text8) / len(frame), 3)
    throughput(len(text8), "recovault core")


@pytest.mark.parametrize("level", [1, 3])
def test_zstd_compress_zstandard(benchmark, throughput, text8, level):
    benchmark.group = f"zstd compress level {level} ({len(text8) >> 20} MiB text)"
    c = _ref_compressor(level)
    frame = benchmark(c.compress, text8)
    assert core.zstd_decompress(frame) == text8
    benchmark.extra_info["ratio"] = round(len(text8) / len(frame), 3)
    throughput(len(text8), "zstandard", reference=True)


def test_zstd_decompress_core(benchmark, throughput, text8):
    benchmark.group = "zstd decompress (level 3 frame)"
    frame = core.zstd_compress(text8, 3)
    assert benchmark(core.zstd_decompress, frame) == text8
    throughput(len(text8), "recovault core")


def test_zstd_decompress_zstandard(benchmark, throughput, text8):
    benchmark.group = "zstd decompress (level 3 frame)"
    frame = core.zstd_compress(text8, 3)
    d = zstandard.ZstdDecompressor()
    assert benchmark(d.decompress, frame) == text8
    throughput(len(text8), "zstandard", reference=True)
