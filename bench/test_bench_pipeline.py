"""The whole pipeline (chunk, hash, compress, seal) on 64 MiB, half distinct text and half random, with the
library's default chunk sizes (512 KiB / 1 MiB / 8 MiB): workers=1 vs workers=2. Each round uses a fresh
ID set so every chunk is really sealed (no dedup shortcut)."""
import hashlib

import pytest

from recovault import core

KEY = hashlib.sha256(b"bench master").digest()
ID_KEY = hashlib.sha256(b"bench id").digest()
SEED = hashlib.sha256(b"bench seed").digest()


def _run(data, workers):
    p = core.Pipeline(ID_KEY, SEED, core.IdSet(), core.SealSession(KEY), workers=workers)
    total = sealed = 0
    for batch in p.run([data]):
        for kind, _src, _off, length, _cid, payload in batch:
            if kind == core.CHUNK:
                total += length
                if payload is not None:
                    sealed += len(payload)
            elif kind == core.END:
                assert payload is None
    assert total == len(data)
    return sealed


@pytest.mark.parametrize("workers", [1, 2])
def test_pipeline_64mib(benchmark, throughput, mixed64, workers):
    benchmark.group = "pipeline 64MiB (half text, half random)"
    sealed = benchmark.pedantic(_run, args=(mixed64, workers), rounds=4, iterations=1, warmup_rounds=1)
    benchmark.extra_info["sealed_bytes"] = sealed
    benchmark.extra_info["workers"] = workers
    assert len(mixed64) // 2 < sealed < len(mixed64)  # text compressed, random stored
    throughput(len(mixed64), f"workers={workers}", reference=(workers == 1))
