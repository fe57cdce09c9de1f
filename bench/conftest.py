"""Shared helpers for the recovault C++ core benchmarks (pytest-benchmark).

Every benchmark records its throughput in ``extra_info`` (``bytes``, ``MB_per_s``) and, through the
``throughput`` fixture, in a table printed at the end of the run with the ratio of our core to the
reference implementation of the same kernel. Ratios are what matter: absolute numbers move with the
machine and with whatever else runs on it.
"""
import glob
import os
from collections import defaultdict

import numpy as np
import pytest

_RESULTS = defaultdict(dict)  # group -> {name: MB/s}
_REFERENCE = {}  # group -> name of the reference implementation


def _median_seconds(benchmark):
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: nothing measured
        return None
    return stats.stats.median


@pytest.fixture
def throughput(benchmark):
    """Call as throughput(nbytes, name, reference=False) after benchmark(...) ran."""

    def record(nbytes, name, reference=False):
        benchmark.extra_info["bytes"] = nbytes
        sec = _median_seconds(benchmark)
        if sec:
            mbps = nbytes / sec / 1e6
            benchmark.extra_info["MB_per_s"] = round(mbps, 1)
            _RESULTS[benchmark.group][name] = mbps
            if reference:
                _REFERENCE[benchmark.group] = name

    return record


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.section("recovault core throughput (median, MB/s; ratios are what matter)")
    for group in sorted(_RESULTS):
        res = _RESULTS[group]
        ref = _REFERENCE.get(group)
        for name, mbps in sorted(res.items(), key=lambda kv: kv[0]):
            line = f"{group:32s} {name:34s} {mbps:9.1f} MB/s"
            if ref and name != ref and res.get(ref):
                line += f"   {mbps / res[ref]:5.2f}x {ref}"
            tr.write_line(line)


# ---- data -------------------------------------------------------------------------------------------

def text_corpus(limit=8 << 20):
    """Real text: files from /usr/share/doc and /usr/include, concatenated up to `limit` bytes."""
    parts, total = [], 0
    patterns = ("/usr/share/doc/*/*.txt", "/usr/share/doc/*/README*", "/usr/share/doc/*/copyright",
                "/usr/include/*.h", "/usr/include/*/*.h", "/usr/include/*/*/*.h", "/usr/include/*/*/*/*.h")
    seen = set()
    for pat in patterns:
        for f in sorted(glob.glob(pat)):
            if f in seen or not os.path.isfile(f) or f.endswith(".gz"):
                continue
            seen.add(f)
            try:
                with open(f, "rb") as fh:
                    b = fh.read()
            except OSError:
                continue
            parts.append(b)
            total += len(b)
            if total >= limit:
                return b"".join(parts)[:limit]
    if total < 1 << 20:
        pytest.skip("not enough text on this system for the benchmark")
    return b"".join(parts)


def distinct_text(n, base):
    """n bytes of text built from copies of `base`, each copy perturbed every 4 KiB (one byte) so that no
    chunk repeats (dedup would otherwise skip the work) while it stays as compressible as the original."""
    out = np.empty(n, np.uint8)
    src = np.frombuffer(base, np.uint8)
    pos, k = 0, 0
    while pos < n:
        m = min(len(src), n - pos)
        out[pos:pos + m] = src[:m]
        out[pos + k % 4096:pos + m:4096] ^= 0x20 if k else 0
        pos += m
        k += 1
    return out.tobytes()


@pytest.fixture(scope="session")
def text8():
    return text_corpus(8 << 20)


@pytest.fixture(scope="session")
def mixed64(text8):
    """64 MiB: half distinct text, half random."""
    half = 32 << 20
    rnd = np.random.default_rng(1).integers(0, 256, half, dtype=np.uint8).tobytes()
    return distinct_text(half, text8) + rnd
