"""The parallel pipeline (core.Pipeline) and core.IdSet.

References: chunk boundaries from core.chunk_lengths (the chunker itself is tested elsewhere); chunk IDs
from the independent `blake3` package (keyed mode) and Python's hmac; sealed payloads opened with
core.open_blob and, for the codec/level checks, decrypted independently with `cryptography`."""
import gc
import hashlib
import hmac
import io
import os
import pathlib
import struct
import threading
import time

import blake3 as blake3_ref
import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from recovault import core

SMALL = dict(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)
KEY = bytes(range(32))  # master key for sealing
ID_KEY = hashlib.sha256(b"id key").digest()
SEED = hashlib.sha256(b"gear seed").digest()
SALT = bytes(range(100, 116))


def mixed(n, seed=0):
    """Deterministic data: runs of text-like bytes, random bytes and zeros."""
    rng = np.random.default_rng(seed)
    words = [b"alpha ", b"beta ", b"gamma\n", b"delta ", b"epsilon ", b"zeta\t", b"eta, ", b"theta; "]
    parts, total = [], 0
    while total < n:
        kind, size = rng.integers(0, 3), int(rng.integers(1000, 200000))
        if kind == 0:
            idx = rng.integers(0, len(words), size // 6 + 1)
            part = b"".join(words[i] for i in idx)[:size]
        elif kind == 1:
            part = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        else:
            part = bytes(size)
        parts.append(part)
        total += len(part)
    return b"".join(parts)[:n]


def rand(n, seed=0):
    return np.random.default_rng(seed + 17).integers(0, 256, n, dtype=np.uint8).tobytes()


def pipeline(known=None, session=None, **kw):
    args = dict(SMALL)
    args.update(kw)
    args.setdefault("workers", 2)
    return core.Pipeline(ID_KEY, SEED, known if known is not None else core.IdSet(),
                         session if session is not None else core.SealSession(KEY), **args)


def events(run):
    out = []
    for batch in run:
        assert isinstance(batch, list) and batch
        out.extend(batch)
    return out


def by_source(evs, nsources):
    """Checks the global order (source by source, END last) and splits the events per source."""
    per = [[] for _ in range(nsources)]
    current = 0
    for ev in evs:
        kind, src = ev[0], ev[1]
        assert src == current, f"event for source {src} while source {current} is open"
        per[src].append(ev)
        if kind == core.END:
            current += 1
    assert current == nsources
    return per


def ref_ids(data, lengths, algo="blake3"):
    ids, pos = [], 0
    for n in lengths:
        chunk = data[pos:pos + n]
        if algo == "blake3":
            ids.append(blake3_ref.blake3(chunk, key=ID_KEY).digest())
        else:
            ids.append(hmac.new(ID_KEY, chunk, hashlib.sha256).digest())
        pos += n
    return ids


def check_source(evs, data, seen, key=KEY, params=SMALL, algo="blake3"):
    """evs: one source's events. seen: set of ids already delivered (updated). Returns #new chunks."""
    assert all(type(e) is core.PipelineEvent for e in evs)  # named fields, made so by the C++ side
    *chunks, end = evs
    assert end.kind == core.END and end.offset == 0 and end.id is None
    assert end.payload is None, f"unexpected error: {end.payload}"
    assert end.length == len(data)
    lengths = core.chunk_lengths(data, SEED, **params)
    assert [e.length for e in chunks] == lengths
    assert [e.id for e in chunks] == ref_ids(data, lengths, algo)
    pos, new = 0, 0
    for kind, _, off, n, cid, payload in chunks:
        assert kind == core.CHUNK
        assert off == pos
        piece = data[pos:pos + n]
        if payload is None:
            assert cid in seen, "a chunk came out as duplicate but its id was never delivered"
        else:
            assert cid not in seen, "the same id was delivered as new twice"
            assert isinstance(payload, bytes)
            assert core.open_blob(key, cid, payload) == piece
            seen.add(cid)
            new += 1
        pos += n
    assert pos == len(data)
    return new


def nonce_counter(blob):
    assert blob[18:22] == bytes(4)
    return struct.unpack(">Q", blob[22:30])[0]


def ref_payload(key, cid, blob):
    """Independent decryption: returns (codec, raw payload)."""
    sub = HKDF(algorithm=hashes.SHA256(), length=32, salt=blob[2:18], info=b"recovault/v1/blob").derive(key)
    return blob[1], AESGCM(sub).decrypt(blob[18:30], blob[30:], cid + blob[:30])


@pytest.fixture(scope="module")
def data_mixed():
    return mixed(3 * 1024 * 1024 + 12345, seed=1)


# ---- basic correctness ---------------------------------------------------------------------------------

def test_kind_constants():
    assert (core.CHUNK, core.ZERO, core.END) == (0, 1, 2)


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_buffer_roundtrip_ids_and_boundaries(data_mixed, workers):
    evs = events(pipeline(workers=workers).run([data_mixed]))
    (per,) = by_source(evs, 1)
    seen = set()
    new = check_source(per, data_mixed, seen)
    assert new == len(seen) and new >= 1
    for ev in evs:
        assert len(ev) == 6 and isinstance(ev[2], int) and isinstance(ev[3], int)


def test_chunk_id_method():
    for algo, ref in (("blake3", lambda d: blake3_ref.blake3(d, key=ID_KEY).digest()),
                      ("hmac-sha256", lambda d: hmac.new(ID_KEY, d, hashlib.sha256).digest())):
        p = pipeline(id_algo=algo)
        for d in (b"", b"x", rand(100000)):
            assert p.chunk_id(d) == ref(d)
            assert p.chunk_id(bytearray(d)) == ref(d)
    assert pipeline().chunk_id(b"abc") == core.blake3(b"abc", key=ID_KEY)


def test_hmac_ids(data_mixed):
    evs = events(pipeline(id_algo="hmac-sha256").run([data_mixed[:1 << 20]]))
    (per,) = by_source(evs, 1)
    check_source(per, data_mixed[:1 << 20], set(), algo="hmac-sha256")


@pytest.mark.parametrize("norm", [0, 1, 3])
def test_normalization_and_other_sizes(norm):
    data = mixed(1 << 20, seed=5)
    params = dict(min_size=4096, avg_size=16384, max_size=65536, normalization=norm)
    evs = events(pipeline(**params).run([data]))
    (per,) = by_source(evs, 1)
    check_source(per, data, set(), params=params)


def test_output_identical_for_any_worker_count(tmp_path, data_mixed):
    f = tmp_path / "f.bin"
    f.write_bytes(data_mixed[::-1])
    srcs = lambda: [data_mixed, str(f), b"", data_mixed[:500000], io.BytesIO(rand(700000, 3)), data_mixed]
    results = []
    for workers in (1, 2, 4):
        p = pipeline(session=core.SealSession(KEY, salt=SALT), workers=workers)
        results.append(events(p.run(srcs())))
    assert results[0] == results[1] == results[2]  # ids, lengths, new-pattern, sealed bytes
    per = by_source(results[0], 6)
    seen = set()
    check_source(per[0], data_mixed, seen)
    check_source(per[1], data_mixed[::-1], seen)
    assert check_source(per[3], data_mixed[:500000], seen) <= 1  # a prefix: only the cut tail is new
    assert check_source(per[5], data_mixed, seen) == 0  # same data again: nothing new


def test_output_identical_with_random_salt_apart_from_sealed_bytes(data_mixed):
    a = events(pipeline(workers=1).run([data_mixed]))
    b = events(pipeline(workers=4).run([data_mixed]))
    strip = lambda evs: [(k, s, o, n, i, p is None) for k, s, o, n, i, p in evs]
    assert strip(a) == strip(b)
    for x, y in zip(a, b):
        if x[5] is not None:
            assert x[5][2:18] != y[5][2:18]  # different session salts
            assert core.open_blob(KEY, x[4], x[5]) == core.open_blob(KEY, y[4], y[5])


def test_small_batches_same_events(data_mixed):
    p1 = pipeline(session=core.SealSession(KEY, salt=SALT))
    p2 = pipeline(session=core.SealSession(KEY, salt=SALT))
    full = events(p1.run([data_mixed, b"tail"]))
    run = p2.run([data_mixed, b"tail"])
    one_by_one = []
    while True:
        try:
            batch = run.next_batch(1)
        except StopIteration:
            break
        assert len(batch) == 1
        one_by_one.extend(batch)
    assert one_by_one == full


# ---- source kinds --------------------------------------------------------------------------------------

class ShortReader:
    """readinto returns short, irregular counts (like a pipe or a socket)."""

    def __init__(self, data):
        self.data, self.pos, self.calls = data, 0, 0

    def readinto(self, buf):
        self.calls += 1
        n = min(len(buf), 1 + (self.calls * 7919) % 20000, len(self.data) - self.pos)
        buf[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def test_every_source_kind(tmp_path):
    datas = [mixed(300000 + 1000 * i, seed=10 + i) for i in range(13)]
    paths = []
    for i, d in enumerate(datas[:5]):
        p = tmp_path / f"src{i}"
        p.write_bytes(d)
        paths.append(p)
    fd = os.open(paths[2], os.O_RDONLY)
    fh = open(paths[3], "rb")
    raw = open(paths[4], "rb", buffering=0)
    try:
        sources = [
            str(paths[0]),                     # str path
            paths[1],                          # pathlib path
            fd,                                # int descriptor
            fh,                                # buffered file object
            raw,                               # unbuffered FileIO
            io.BytesIO(datas[5]),              # BytesIO
            ShortReader(datas[6]),             # custom reader with short reads
            datas[7],                          # bytes
            bytearray(datas[8]),               # bytearray
            memoryview(datas[9]),              # memoryview
            np.frombuffer(datas[10], np.uint8),  # numpy
            memoryview(b"??" + datas[11] + b"!!")[2:-2],  # contiguous slice
            np.frombuffer(datas[12], np.uint8).reshape(-1, 100) if len(datas[12]) % 100 == 0
            else np.frombuffer(datas[12], np.uint8),
        ]
        evs = events(pipeline().run(sources))
        per = by_source(evs, len(sources))
        seen = set()
        for i, d in enumerate(datas):
            check_source(per[i], d, seen)
        # descriptors and file objects are read, not closed
        assert os.fstat(fd).st_size == len(datas[2])
        assert os.lseek(fd, 0, os.SEEK_CUR) == len(datas[2])
        assert not fh.closed and fh.tell() == len(datas[3])
        assert not raw.closed
    finally:
        os.close(fd)
        fh.close()
        raw.close()


def test_fd_reads_from_current_offset(tmp_path):
    data = mixed(400000, seed=4)
    p = tmp_path / "f"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    try:
        os.lseek(fd, 100000, os.SEEK_SET)
        (per,) = by_source(events(pipeline().run([fd])), 1)
        check_source(per, data[100000:], set())
    finally:
        os.close(fd)


def test_pipe_fd():
    data = rand(2 * 1024 * 1024 + 77, 9)
    r, w = os.pipe()

    def writer():
        with os.fdopen(w, "wb") as f:
            for i in range(0, len(data), 65000):
                f.write(data[i:i + 65000])

    t = threading.Thread(target=writer)
    t.start()
    try:
        (per,) = by_source(events(pipeline().run([r])), 1)
    finally:
        t.join()
        os.close(r)
    check_source(per, data, set())


def test_large_streams_cross_the_read_window(tmp_path):
    # > read_size (8 MiB) + max_chunk: the stream window is moved and chunks straddle reads.
    data = mixed(19 * 1024 * 1024 + 4321, seed=2)
    p = tmp_path / "big"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    try:
        with open(p, "rb") as fh:
            srcs = [data, str(p), fd, fh, io.BytesIO(data)]
            per = by_source(events(pipeline(workers=2).run(srcs)), len(srcs))
    finally:
        os.close(fd)
    seen = set()
    assert check_source(per[0], data, seen) > 0
    first = [(e[3], e[4]) for e in per[0]]
    for other in per[1:]:
        assert [(e[3], e[4]) for e in other] == first  # identical chunks, ids and END
        assert check_source(other, data, seen) == 0


def test_short_reads_cross_the_read_window():
    data = rand(9 * 1024 * 1024, 5)
    (per,) = by_source(events(pipeline().run([ShortReader(data)])), 1)
    check_source(per, data, set())


def test_custom_pathlike(tmp_path):
    data = mixed(100000, seed=6)
    p = tmp_path / "custom"
    p.write_bytes(data)

    class StrPath:
        def __fspath__(self):
            return str(p)

    class BytesPath:
        def __fspath__(self):
            return os.fsencode(str(p))

    per = by_source(events(pipeline().run([StrPath(), BytesPath()])), 2)
    seen = set()
    check_source(per[0], data, seen)
    assert check_source(per[1], data, seen) == 0


def test_sources_from_a_generator():
    datas = [mixed(50000, seed=i) for i in range(20)]
    per = by_source(events(pipeline().run(d for d in datas)), 20)
    seen = set()
    for d, evs in zip(datas, per):
        check_source(evs, d, seen)


def test_many_small_sources(tmp_path):
    datas = [rand(i * 37 % 5000, i) for i in range(300)]
    paths = []
    for i, d in enumerate(datas[:100]):
        p = tmp_path / f"s{i}"
        p.write_bytes(d)
        paths.append(str(p))
    srcs = paths + datas[100:]
    for workers in (1, 3):
        per = by_source(events(pipeline(workers=workers).run(srcs)), 300)
        seen = set()
        for d, evs in zip(datas, per):
            check_source(evs, d, seen)


# ---- ranged sources: (path or fd, start, length), read with pread ------------------------------------------

@pytest.fixture(scope="module")
def ranged_file(tmp_path_factory):
    data = mixed(1536 * 1024 + 999, seed=80)
    p = tmp_path_factory.mktemp("ranged") / "img"
    p.write_bytes(data)
    return p, data


RANGES = [(0, 100000), (1, 300000), (65536, 65536), (12345, 1 << 20), (1 << 20, 10 << 20), (0, 0), (5, 0),
          (10 << 20, 100)]


@pytest.mark.parametrize("as_fd", [False, True])
def test_ranged_sources(ranged_file, as_fd):
    path, data = ranged_file
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 777, os.SEEK_SET)  # pread: the descriptor's offset is irrelevant
        head = fd if as_fd else str(path)
        srcs = [(head, a, n) for a, n in RANGES] + [(path, 3, -1)]
        per = by_source(events(pipeline().run(srcs)), len(srcs))
        assert os.lseek(fd, 0, os.SEEK_CUR) == 777  # and is left alone
    finally:
        os.close(fd)
    seen = set()
    for (a, n), evs in zip(RANGES + [(3, len(data))], per):
        check_source(evs, data[a:a + n], seen)  # offsets relative to start, END = bytes in range


def test_ranged_sources_fixed_blocks_like_image_backup(ranged_file):
    path, data = ranged_file
    bs = 65536
    ranges = [(0, 2 * bs), (5 * bs, 3 * bs), (20 * bs, len(data) - 20 * bs)]
    fd = os.open(path, os.O_RDONLY)
    try:
        per = by_source(events(pipeline(fixed_block=bs).run([(fd, a, n) for a, n in ranges])), len(ranges))
    finally:
        os.close(fd)
    for (a, n), evs in zip(ranges, per):
        *chunks, end = evs
        assert end == (core.END, evs[0][1], 0, n, None, None)
        for e in chunks:
            block = data[a + e[2]:a + e[2] + e[3]]
            assert e[2] % bs == 0 and e[3] == len(block)
            if e[0] == core.CHUNK:
                assert e[4] == blake3_ref.blake3(block, key=ID_KEY).digest()
            else:
                assert e[0] == core.ZERO and not any(block)


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_fixed_ranged_read_jobs_past_eof_and_errors(ranged_file, tmp_path, workers):
    """Fixed blocks of ranged sources are read by the workers in read jobs: blocks are cut at the right
    offsets across job boundaries, a range past the end of the file gives the bytes that exist (END says
    how many), and open/read errors end only their own source."""
    path, data = ranged_file
    bs = 4096 * 3  # not a divisor of the 1 MiB read job: blocks straddle job boundaries
    d = tmp_path / "dir"
    d.mkdir()
    dfd = os.open(d, os.O_RDONLY)
    try:
        srcs = [(str(path), 7, len(data)), (str(path) + ".missing", 0, bs), (dfd, 0, bs), (str(path), 3 * bs, 5 * bs)]
        per = by_source(events(pipeline(fixed_block=bs, workers=workers).run(srcs)), len(srcs))
    finally:
        os.close(dfd)
    want = data[7:]
    *chunks, end = per[0]
    assert end[0] == core.END and end[3] == len(want) and end[5] is None
    assert [e[2] for e in chunks] == list(range(0, len(want), bs))
    for e in chunks:
        block = want[e[2]:e[2] + bs]
        assert e[3] == len(block)
        if e[0] == core.ZERO:
            assert not any(block)
        else:
            assert e[0] == core.CHUNK and e[4] == blake3_ref.blake3(block, key=ID_KEY).digest()
    assert any(e[0] == core.ZERO for e in chunks) and any(e[0] == core.CHUNK for e in chunks)
    assert per[1][0][0] == core.END and "No such file" in per[1][0][5]
    assert per[2][-1][0] == core.END and "Is a directory" in per[2][-1][5]
    *chunks, end = per[3]
    assert end[3] == 5 * bs and [(e[2], e[3]) for e in chunks] == [(i * bs, bs) for i in range(5)]


def test_ranged_fd_from_zero_to_end_reads_from_zero(ranged_file):
    path, data = ranged_file
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 100, os.SEEK_SET)
        (per,) = by_source(events(pipeline().run([(fd, 0, -1)])), 1)
    finally:
        os.close(fd)
    assert per[-1][3] == len(data)


def test_ranged_source_errors(ranged_file):
    path, data = ranged_file
    per = by_source(events(pipeline().run([(str(path) + ".missing", 0, 10), (path, 0, 10)])), 2)
    assert per[0][0][0] == core.END and "No such file" in per[0][0][5]
    check_source(per[1], data[:10], set())
    with pytest.raises(ValueError, match="ranged source"):
        pipeline().run([(str(path), 0)])
    with pytest.raises(ValueError, match="ranged source"):
        pipeline().run([(str(path), 0, 1, 2)])
    for bad in ((b"bytes are data, not a path", 0, 5), (io.BytesIO(data), 0, 5), (None, 0, 5)):
        with pytest.raises(TypeError, match="path or a file descriptor"):
            pipeline().run([bad])
    # a negative or non-integer start is refused (pybind11 reports it as a RuntimeError "Unable to cast")
    for bad in ((str(path), -1, 5), (str(path), "x", 5), (str(path), 0, 1 << 64)):
        with pytest.raises((TypeError, ValueError, RuntimeError)):
            pipeline().run([bad])


# ---- empty sources, errors -----------------------------------------------------------------------------

def test_empty_sources(tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    fd = os.open(p, os.O_RDONLY)
    try:
        srcs = [str(p), fd, io.BytesIO(b""), b"", bytearray(), memoryview(b""), np.zeros(0, np.uint8)]
        evs = events(pipeline().run(srcs))
    finally:
        os.close(fd)
    assert evs == [(core.END, i, 0, 0, None, None) for i in range(len(srcs))]
    assert events(pipeline().run([])) == []


def test_missing_path_and_directory_continue_with_next_source(tmp_path):
    data = mixed(200000, seed=7)
    srcs = [str(tmp_path / "does-not-exist"), data, str(tmp_path), b"after", tmp_path / "nope"]
    per = by_source(events(pipeline().run(srcs)), len(srcs))
    assert per[0] == [(core.END, 0, 0, 0, None, per[0][0][5])]
    assert isinstance(per[0][0][5], str) and "No such file" in per[0][0][5]
    assert len(per[2]) == 1 and per[2][0][0] == core.END and "directory" in per[2][0][5].lower()
    assert per[4][0][0] == core.END and "No such file" in per[4][0][5]
    seen = set()
    check_source(per[1], data, seen)
    check_source(per[3], b"after", seen)


def test_bad_descriptor():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    (per,) = by_source(events(pipeline().run([r])), 1)
    assert per[0][0] == core.END and "Bad file descriptor" in per[0][5]


class RaisingReader:
    def __init__(self, good=b"", exc=OSError("simulated disk failure")):
        self.good, self.exc, self.pos = good, exc, 0

    def readinto(self, buf):
        if self.pos < len(self.good):
            n = min(len(buf), len(self.good) - self.pos, 50000)
            buf[:n] = self.good[self.pos:self.pos + n]
            self.pos += n
            return n
        raise self.exc


def test_reader_errors_end_the_source_only():
    good = mixed(600000, seed=8)

    class ReturnsNone:
        def readinto(self, buf):
            return None

    class BadCount:
        def readinto(self, buf):
            return len(buf) + 1

    class Negative:
        def readinto(self, buf):
            return -1

    class NotInt:
        def readinto(self, buf):
            return "many"

    srcs = [RaisingReader(), b"x" * 100, RaisingReader(good), ReturnsNone(), BadCount(), Negative(), NotInt(),
            good]
    per = by_source(events(pipeline().run(srcs)), len(srcs))
    assert per[0] == [(core.END, 0, 0, 0, None, per[0][0][5])]
    assert "simulated disk failure" in per[0][0][5] and "OSError" in per[0][0][5]
    seen = set()
    check_source(per[1], b"x" * 100, seen)
    # the failing source after some data: whatever chunks came out are a correct prefix, and END's
    # length is what those chunks cover
    *chunks, end = per[2]
    assert end[0] == core.END and "simulated disk failure" in end[5]
    assert sum(e[3] for e in chunks) == end[3] <= len(good)
    for e in chunks:
        assert e[4] == blake3_ref.blake3(good[e[2]:e[2] + e[3]], key=ID_KEY).digest()
        if e[5] is not None:
            assert core.open_blob(KEY, e[4], e[5]) == good[e[2]:e[2] + e[3]]
            seen.add(e[4])
    for i in (3, 4, 5, 6):
        assert len(per[i]) == 1 and per[i][0][0] == core.END and isinstance(per[i][0][5], str) and per[i][0][5]
    assert "no data" in per[3][0][5]
    assert "bad count" in per[4][0][5] and "bad count" in per[5][0][5]
    check_source(per[7], good, seen)


def test_invalid_sources_raise_type_error():
    for bad in (None, 3.5, object(), memoryview(bytearray(100))[::2], np.zeros((10, 10), np.uint8)[:, :5]):
        with pytest.raises(TypeError):
            pipeline().run([b"ok", bad])


# ---- dedup ---------------------------------------------------------------------------------------------

def test_dedup_across_sources_and_runs(tmp_path, data_mixed):
    known = core.IdSet()
    session = core.SealSession(KEY)
    p = pipeline(known=known, session=session)
    f = tmp_path / "copy"
    f.write_bytes(data_mixed)
    per = by_source(events(p.run([data_mixed, str(f), io.BytesIO(data_mixed)])), 3)
    seen = set()
    n_new = check_source(per[0], data_mixed, seen)
    assert n_new == len(set(e[4] for e in per[0][:-1]))
    for evs in per[1:]:
        assert all(e[5] is None for e in evs)
        check_source(evs, data_mixed, seen)
    assert len(known) == len(seen)
    assert set(known.dump()[i:i + 32] for i in range(0, len(known.dump()), 32)) == seen
    # a second run with the same known set: nothing new
    evs = events(pipeline(known=known, session=session).run([data_mixed]))
    assert all(e[5] is None for e in evs)


def test_repeated_content_within_one_source():
    block = rand(1024 * 1024, 11)
    data = block * 4
    (per,) = by_source(events(pipeline(workers=4).run([data])), 1)
    seen = set()
    check_source(per, data, seen)
    ids = [e[4] for e in per[:-1]]
    assert len(set(ids)) < len(ids) * 0.4  # CDC resynchronises: most chunks of copies 2..4 are dups


def test_zeros_in_cdc_mode_dedup():
    data = bytes(3 * 1024 * 1024)
    (per,) = by_source(events(pipeline().run([data])), 1)
    check_source(per, data, set())
    chunks = per[:-1]
    assert all(e[3] == SMALL["max_size"] for e in chunks[:-1])
    assert sum(e[5] is not None for e in chunks) <= 2


def test_preloaded_known_ids(data_mixed):
    lengths = core.chunk_lengths(data_mixed, SEED, **SMALL)
    ids = ref_ids(data_mixed, lengths)
    preload = set(ids[::2])
    known = core.IdSet()
    assert known.update(b"".join(preload)) == len(preload)
    (per,) = by_source(events(pipeline(known=known).run([data_mixed])), 1)
    seen = set(preload)
    check_source(per, data_mixed, seen)
    for e in per[:-1]:
        if e[4] in preload:
            assert e[5] is None
    assert len(known) == len(set(ids))


def test_idset_discard_and_difference_update():
    """Removing IDs from the open-addressing table keeps every other member findable (backward shift, no
    tombstones), including runs that wrap around the table and collide on their first 8 bytes."""
    import random
    rng = random.Random(7)
    ids = [rng.randbytes(32) for _ in range(5000)]
    # Colliding home slots: same first 8 bytes, different tails (long probe runs).
    ids += [b"\xff" * 8 + rng.randbytes(24) for _ in range(50)] + [bytes(32)]
    known = core.IdSet()
    known.update(b"".join(ids))
    gone = set(rng.sample(ids, 2500)) | {bytes(32), ids[-2]}
    first = next(iter(gone))
    assert known.discard(first) and not known.discard(first)
    assert known.difference_update(b"".join(g for g in gone if g != first)) == len(gone) - 1
    assert len(known) == len(ids) - len(gone)
    assert all((i in known) == (i not in gone) for i in ids)
    assert known.difference_update(b"".join(gone)) == 0
    assert not known.discard(b"short")
    with pytest.raises(ValueError):
        known.difference_update(b"x" * 33)
    assert known.update(b"".join(gone)) == len(gone) and all(i in known for i in ids)


def test_known_set_cleared_during_run_is_a_loud_error(data_mixed):
    # Workers see every id as known and skip sealing; the caller then clears the set. The emitter cannot
    # deliver those chunks as "new" without their blobs, and must never deliver them as duplicates (the
    # caller would then store nothing): the run fails with an error naming the cause.
    first = events(pipeline().run([data_mixed]))
    known = core.IdSet()
    known.update(b"".join(e[4] for e in first if e[0] == core.CHUNK))
    run = pipeline(known=known, workers=2).run([data_mixed])
    head = run.next_batch(1)
    assert head[0][5] is None
    time.sleep(0.1)  # let the workers get through the rest
    known.clear()
    with pytest.raises(RuntimeError, match="known-ID set lost IDs"):
        events(run)


def test_interleaved_runs_sharing_session_and_known():
    known, session = core.IdSet(), core.SealSession(KEY)
    a_data, b_data = mixed(2 << 20, seed=20), mixed(2 << 20, seed=20)[:1 << 20] + rand(1 << 20, 21)
    ra = pipeline(known=known, session=session).run([a_data])
    rb = pipeline(known=known, session=session).run([b_data])
    ea, eb = [], []
    live = [(ra, ea), (rb, eb)]
    while live:
        for item in list(live):
            r, out = item
            try:
                out.extend(r.next_batch(3))
            except StopIteration:
                live.remove(item)
    blobs = [e for e in ea + eb if e[0] == core.CHUNK and e[5] is not None]
    assert len(set(e[4] for e in blobs)) == len(blobs)  # each id delivered as new exactly once overall
    assert len(set(nonce_counter(e[5]) for e in blobs)) == len(blobs)  # no nonce reuse
    for e in blobs:
        src = a_data if e in ea else b_data
        assert core.open_blob(KEY, e[4], e[5]) == src[e[2]:e[2] + e[3]]
    assert len(known) == len(set(e[4] for e in ea + eb if e[0] == core.CHUNK))


def test_nonces_unique_and_session_continues(data_mixed):
    session = core.SealSession(KEY)
    evs = events(pipeline(session=session, workers=4).run([data_mixed, rand(1 << 20, 30)]))
    counters = [nonce_counter(e[5]) for e in evs if e[0] == core.CHUNK and e[5] is not None]
    assert counters == sorted(counters) and len(set(counters)) == len(counters)
    after = nonce_counter(session.seal(b"id", b"later"))
    assert after > max(counters)
    evs2 = events(pipeline(session=session).run([rand(1 << 20, 31)]))
    counters2 = [nonce_counter(e[5]) for e in evs2 if e[5] is not None and e[0] == core.CHUNK]
    assert min(counters2) > after


# ---- compression settings ------------------------------------------------------------------------------

@pytest.mark.parametrize("compress,level", [("auto", 3), ("auto", 1), ("always", 9), ("never", 3)])
def test_compress_and_level_pass_through(compress, level):
    text = mixed(1 << 20, seed=40)
    (per,) = by_source(events(pipeline(compress=compress, level=level).run([text])), 1)
    check_source(per, text, set())
    codecs = set()
    for e in per[:-1]:
        if e[5] is None:
            continue
        codec, payload = ref_payload(KEY, e[4], e[5])
        chunk = text[e[2]:e[2] + e[3]]
        codecs.add(codec)
        if compress == "never":
            assert codec == 0 and payload == chunk
        elif compress == "always":
            assert codec == 1
        if codec == 1:
            assert payload == core.zstd_compress(chunk, level)
        if compress == "auto" and core.looks_incompressible(chunk):
            assert codec == 0
    if compress != "never":
        assert 1 in codecs


def test_random_chunks_stored_text_chunks_compressed():
    data = rand(1 << 20, 50) + b"lorem ipsum dolor sit amet " * 40000
    (per,) = by_source(events(pipeline().run([data])), 1)
    check_source(per, data, set())
    for e in per[:-1]:
        if e[5] is None:
            continue
        end = e[2] + e[3]
        if end <= 1 << 20 and e[3] >= 4096:
            assert e[5][1] == 0
        if e[2] >= (1 << 20):
            assert e[5][1] == 1


# ---- fixed blocks --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["buffer", "path", "reader"])
def test_fixed_block_mode(tmp_path, kind):
    bs = 65536
    blocks = []
    for i in range(40):
        if i % 3 == 0:
            blocks.append(bytes(bs))
        elif i % 7 == 1:
            blocks.append(bytes(bs - 1) + b"\x01")  # almost zero is not zero
        else:
            blocks.append(rand(bs, 100 + i))
    blocks.append(bytes(1000))  # partial all-zero tail
    data = b"".join(blocks)
    if kind == "path":
        src = tmp_path / "img"
        src.write_bytes(data)
    elif kind == "reader":
        src = ShortReader(data)
    else:
        src = data
    (per,) = by_source(events(pipeline(fixed_block=bs).run([src])), 1)
    *evs, end = per
    assert end == (core.END, 0, 0, len(data), None, None)
    assert len(evs) == len(blocks)
    seen = set()
    for i, (b, e) in enumerate(zip(blocks, evs)):
        kind_, _, off, n, cid, payload = e
        assert off == i * bs and n == len(b)
        if not any(b):
            assert kind_ == core.ZERO and cid is None and payload is None
        else:
            assert kind_ == core.CHUNK
            assert cid == blake3_ref.blake3(b, key=ID_KEY).digest()
            if payload is None:
                assert cid in seen
            else:
                assert core.open_blob(KEY, cid, payload) == b
                seen.add(cid)
    # the repeated almost-zero block is stored once
    assert sum(1 for e in evs if e[4] == blake3_ref.blake3(bytes(bs - 1) + b"\x01", key=ID_KEY).digest()
               and e[5] is not None) == 1


def test_fixed_block_sizes_unaligned_tail():
    data = rand(100000, 60)
    (per,) = by_source(events(pipeline(fixed_block=4096).run([data])), 1)
    lengths = [e[3] for e in per[:-1]]
    assert lengths == [4096] * (100000 // 4096) + [100000 % 4096]
    assert all(e[0] == core.CHUNK for e in per[:-1])


def test_fixed_blocks_straddling_the_read_window(tmp_path):
    # 12 KiB blocks don't divide the 8 MiB read size: blocks straddle reads and the window moves
    bs = 12288
    data = bytearray(rand(10 * 1024 * 1024 + 5000, 61))
    for i in range(0, len(data), 7 * bs):
        data[i:i + bs] = bytes(len(data[i:i + bs]))  # some zero blocks
    data = bytes(data)
    p = tmp_path / "img"
    p.write_bytes(data)
    per = by_source(events(pipeline(fixed_block=bs).run([str(p), ShortReader(data), data])), 3)
    shape = lambda evs: [(e[0], e[2], e[3], e[4]) for e in evs]
    assert shape(per[0]) == shape(per[1]) == shape(per[2])
    for evs in per:
        *blocks, end = evs
        assert end[3] == len(data) and end[5] is None
        assert [e[2] for e in blocks] == list(range(0, len(data), bs))
        for e in blocks[::5]:
            b = data[e[2]:e[2] + e[3]]
            if any(b):
                assert e[0] == core.CHUNK and e[4] == blake3_ref.blake3(b, key=ID_KEY).digest()
            else:
                assert e[0] == core.ZERO
        assert sum(e[0] == core.ZERO for e in blocks) == len(range(0, len(data), 7 * bs))


def test_fixed_block_identical_for_worker_counts():
    data = b"".join(bytes(8192) if i % 2 else rand(8192, i) for i in range(64))
    outs = [events(pipeline(fixed_block=8192, workers=w, session=core.SealSession(KEY, SALT)).run([data]))
            for w in (1, 2, 4)]
    assert outs[0] == outs[1] == outs[2]
    assert sum(e[0] == core.ZERO for e in outs[0]) == 32


# ---- parameters ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [
    dict(min_size=32),  # below the 64-byte window
    dict(min_size=128 * 1024, avg_size=64 * 1024),
    dict(max_size=32 * 1024),
    dict(avg_size=60000),
    dict(max_size=128 << 20),
    dict(normalization=4),
    dict(normalization=-1),
    dict(id_algo="sha1"),
    dict(level=100),
    dict(level=-(1 << 20)),
    dict(compress="sometimes"),
])
def test_bad_parameters_raise_value_error(kw):
    with pytest.raises(ValueError):
        pipeline(**kw)


@pytest.mark.parametrize("fb", [1, 4095, (64 << 20) + 1])
def test_bad_fixed_block_raises_value_error_by_run(fb):
    # validated when the run starts (the constructor accepts it)
    with pytest.raises(ValueError, match="fixed block size"):
        pipeline(fixed_block=fb).run([b"x"])


def test_bad_keys_and_missing_objects():
    with pytest.raises(ValueError, match="chunk-ID key must be 32 bytes"):
        core.Pipeline(b"k" * 31, SEED, core.IdSet(), core.SealSession(KEY))
    with pytest.raises(ValueError, match="chunker seed must be 32 bytes"):
        core.Pipeline(ID_KEY, b"s" * 33, core.IdSet(), core.SealSession(KEY))
    with pytest.raises((ValueError, TypeError)):
        core.Pipeline(ID_KEY, SEED, None, core.SealSession(KEY))
    with pytest.raises((ValueError, TypeError)):
        core.Pipeline(ID_KEY, SEED, core.IdSet(), None)
    with pytest.raises(TypeError):
        core.Pipeline(ID_KEY, SEED, core.IdSet(), core.SealSession(KEY), workers=-1)


def test_defaults_and_tiny_max_in_flight(data_mixed):
    # workers=0 (one per CPU) and a tiny in-flight limit (raised internally to a workable minimum)
    p = core.Pipeline(ID_KEY, SEED, core.IdSet(), core.SealSession(KEY), workers=0, max_in_flight=1,
                      **SMALL)
    (per,) = by_source(events(p.run([data_mixed])), 1)
    check_source(per, data_mixed, set())
    # library defaults (512K/1M/8M)
    p = core.Pipeline(ID_KEY, SEED, core.IdSet(), core.SealSession(KEY))
    (per,) = by_source(events(p.run([data_mixed])), 1)
    check_source(per, data_mixed, set(), params={})


# ---- run lifetime --------------------------------------------------------------------------------------

def test_buffer_sources_stay_exported_until_the_run_ends(data_mixed):
    ba = bytearray(data_mixed[:500000])
    run = pipeline().run([ba])
    with pytest.raises(BufferError):
        ba.extend(b"x")  # the pipeline reads it without copying: it must not move
    evs = events(run)
    ba.extend(b"x")  # released once the run is complete
    (per,) = by_source(evs, 1)
    check_source(per, bytes(ba[:-1]), set())


def test_abandoned_and_closed_runs_do_not_hang():
    big = rand(24 << 20, 70)
    for workers in (1, 4):
        run = pipeline(workers=workers).run([big, io.BytesIO(big), ShortReader(big)])
        run.next_batch(2)
        del run
        gc.collect()
    run = pipeline().run([io.BytesIO(big), big])
    with run:
        assert run.next_batch(1)
    with pytest.raises(StopIteration):
        run.next_batch()
    run = pipeline().run([big])
    run.close()
    run.close()
    with pytest.raises(StopIteration):
        next(run)
    # a finished run keeps raising StopIteration
    run = pipeline().run([b"abc"])
    assert len(events(run)) == 2
    with pytest.raises(StopIteration):
        next(run)


def test_many_runs_in_threads(data_mixed):
    # independent runs from several Python threads at once (GIL released while waiting)
    results = {}

    def work(i):
        d = data_mixed[i * 100000:]
        results[i] = (d, events(pipeline(workers=2).run([d, io.BytesIO(d[:300000])])))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (d, evs) in results.items():
        per = by_source(evs, 2)
        seen = set()
        check_source(per[0], d, seen)
        check_source(per[1], d[:300000], seen)


# ---- IdSet ---------------------------------------------------------------------------------------------

def test_idset_basics():
    s = core.IdSet()
    assert len(s) == 0 and s.dump() == b""
    a, b = os.urandom(32), os.urandom(32)
    assert s.add(a) is True and s.add(a) is False
    assert a in s and b not in s and len(s) == 1
    assert bytearray(a) in s and memoryview(a) in s and np.frombuffer(a, np.uint8) in s
    assert a[:31] not in s and (a + b"\0") not in s and b"" not in s
    with pytest.raises(ValueError, match="chunk ID must be 32 bytes, got 31"):
        s.add(a[:31])
    with pytest.raises(ValueError, match="multiple of 32"):
        s.update(a + b"x")
    with pytest.raises(TypeError):
        "a string" in s
    s.clear()
    assert len(s) == 0 and a not in s and s.dump() == b""


def test_idset_all_zero_id_and_zero_prefix_ids():
    s = core.IdSet()
    zero = bytes(32)
    assert zero not in s
    assert s.add(zero) is True and s.add(zero) is False
    assert zero in s and len(s) == 1 and s.dump() == zero
    # ids whose first 8 bytes (the slot hash) are zero, or equal to each other, but are not the zero id
    tricky = [bytes(31) + b"\x01", bytes(8) + os.urandom(24)] + [b"\xab" * 8 + os.urandom(24) for _ in range(300)]
    assert s.update(b"".join(tricky)) == len(tricky)
    assert len(s) == len(tricky) + 1
    for t in tricky:
        assert t in s
    assert (bytes(31) + b"\x02") not in s
    dumped = s.dump()
    assert len(dumped) == 32 * len(s)
    assert sorted(dumped[i:i + 32] for i in range(0, len(dumped), 32)) == sorted(tricky + [zero])
    s2 = core.IdSet()
    assert s2.update(dumped) == len(s)
    assert s2.dump() and sorted(s2.dump()[i:i + 32] for i in range(0, len(dumped), 32)) == sorted(tricky + [zero])
    s.clear()
    assert zero not in s and len(s) == 0


def test_idset_growth_update_dump_roundtrip():
    ids = [os.urandom(32) for _ in range(50000)]
    s = core.IdSet()
    for i in ids[:1000]:
        assert s.add(i)
    assert s.update(b"".join(ids)) == len(ids) - 1000
    assert s.update(b"".join(ids[:5000])) == 0
    assert s.update(b"") == 0
    assert len(s) == len(ids)
    assert all(i in s for i in ids[::7])
    assert not any(os.urandom(32) in s for _ in range(2000))
    d = s.dump()
    assert sorted(d[i:i + 32] for i in range(0, len(d), 32)) == sorted(ids)
    s2 = core.IdSet()
    s2.update(np.frombuffer(d, np.uint8))
    assert len(s2) == len(s) and all(i in s2 for i in ids[::11])


def test_idset_concurrent_adds():
    s = core.IdSet()
    chunks = [[os.urandom(32) for _ in range(5000)] for _ in range(4)]
    shared = [os.urandom(32) for _ in range(1000)]
    wins = []
    lock = threading.Lock()

    def work(mine):
        n = s.update(b"".join(mine))
        w = sum(s.add(x) for x in shared)
        with lock:
            wins.append((n, w))

    threads = [threading.Thread(target=work, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(n == 5000 for n, _ in wins)
    assert sum(w for _, w in wins) == 1000  # every shared id added exactly once
    assert len(s) == 21000


def test_small_files_read_by_workers_match_the_stream_path(tmp_path):
    # With size hints, files below min_size are read whole by the workers (in parallel). The events must be
    # exactly those of the producer's stream path, including for a file that grew past min_size since the
    # caller saw it (it is then chunked by the worker) and for a file that vanished.
    rng = np.random.default_rng(11)
    paths, sizes = [], []
    for i, n in enumerate([0, 1, 100, SMALL["min_size"] - 1, 5000, 3 * SMALL["max_size"] + 17]):
        p = tmp_path / f"f{i}"
        p.write_bytes(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        paths.append(str(p))
        sizes.append(n if i != 5 else 10)  # the last one "grew" after the caller looked
    paths.append(str(tmp_path / "missing"))
    sizes.append(10)
    for workers in (1, 2):
        hinted = events(pipeline(workers=workers).run(paths, sizes))
        plain = events(pipeline(workers=workers).run(paths))
        strip = lambda evs: [(e[0], e[1], e[2], e[3], e[4], e[5] is None) if e[0] != core.END else
                             (e[0], e[1], e[3], e[5] is None) for e in evs]
        assert strip(hinted) == strip(plain)
        for e in hinted:
            if e[0] == core.CHUNK and e[5] is not None:
                with open(paths[e[1]], "rb") as f:
                    f.seek(e[2])
                    assert core.open_blob(KEY, e[4], e[5]) == f.read(e[3])
        end = [e for e in hinted if e[0] == core.END]
        assert end[-1][5] and "No such file" in end[-1][5]
    with pytest.raises(ValueError, match="one size per source"):
        pipeline().run(paths, sizes[:-1])


# ---- sparse files: holes are chunked as zeros without being read ---------------------------------------

def _write_sparse(path, layout):
    """layout: ("hole", n) | ("zeros", n) (written zeros, not a hole) | ("data", n, seed). Returns the bytes."""
    parts = []
    with open(path, "wb") as f:
        for kind, n, *seed in layout:
            if kind == "hole":
                f.seek(n, os.SEEK_CUR)
                part = bytes(n)
            else:
                part = bytes(n) if kind == "zeros" else rand(n, seed[0])
                f.write(part)
            parts.append(part)
        f.truncate(f.tell())
    data = b"".join(parts)
    st = os.stat(path)
    if st.st_blocks * 512 >= st.st_size:
        pytest.skip("this file system does not keep holes")
    return data


def _gear_seed_cutting_zeros_at(params):
    """A gear seed for which a window of zeros passes the cut mask (normalization 0: one mask), so runs of
    zeros are cut at min_size, not only at max_size: next_zeros' other branch."""
    bits = (params["avg_size"] - 1).bit_length()
    mask = sum(1 << (62 - 2 * i) for i in range(bits))
    for i in range(1 << 20):
        seed = hashlib.sha256(b"zero-cutting seed %d" % i).digest()
        gear = HKDF(hashes.SHA256(), 2048, None, b"recovault/v1/gear").derive(seed)
        g0 = struct.unpack("<Q", gear[:8])[0]
        if (-g0) & mask & (2 ** 64 - 1) == 0:
            return seed
    raise AssertionError("no seed found")


SPARSE_LAYOUT = [("hole", 1 << 20), ("data", 100_000, 1), ("hole", 4096), ("data", 8192, 2), ("hole", 3 << 20),
                 ("zeros", 300 << 10), ("data", 50_000, 3), ("hole", 40_960), ("data", 4096, 4), ("hole", 2 << 20)]
ZERO_CUTS = dict(min_size=4096, avg_size=8192, max_size=65536, normalization=0)


@pytest.mark.parametrize("params", [SMALL, dict(SMALL, normalization=3), ZERO_CUTS], ids=["small", "norm3", "cuts"])
def test_sparse_file_chunks_exactly_as_its_bytes(tmp_path, params):
    # The holes of a sparse file are never read; their zeros are chunked without I/O. The events (cut points,
    # ids, sealed blobs) must be exactly those of the same bytes given as a buffer, read byte by byte.
    seed = _gear_seed_cutting_zeros_at(params) if params is ZERO_CUTS else SEED
    data = _write_sparse(tmp_path / "sparse.img", SPARSE_LAYOUT)
    kw = dict(params, workers=2)

    def run(source):
        p = core.Pipeline(ID_KEY, seed, core.IdSet(), core.SealSession(KEY, SALT), **kw)
        return events(p.run([source]))

    from_file, from_bytes = run(str(tmp_path / "sparse.img")), run(data)
    assert [e[:5] for e in from_file] == [e[:5] for e in from_bytes]
    lengths = core.chunk_lengths(data, seed, **params)
    chunks = [e for e in from_file if e[0] == core.CHUNK]
    assert [e[3] for e in chunks] == lengths
    assert [e[4] for e in chunks] == ref_ids(data, lengths)
    for e in chunks:
        if e[5] is not None:
            assert core.open_blob(KEY, e[4], e[5]) == data[e[2]:e[2] + e[3]]
    assert from_file[-1][:4] == (core.END, 0, 0, len(data)) and from_file[-1][5] is None
    if params is ZERO_CUTS:  # the seed really cuts runs of zeros at min_size
        assert ZERO_CUTS["min_size"] in lengths[:-1]


@pytest.mark.parametrize("seed", range(6))
def test_sparse_file_with_tiny_chunks_chunks_exactly_as_its_bytes(tmp_path, seed):
    # Chunks far smaller than a hole: every region of the chunker (skipped, warm-up, tested below and above
    # avg, forced) starts and ends inside holes and at their edges, after data that itself ends in zeros.
    rng = np.random.default_rng(seed)
    params = dict(min_size=64, avg_size=256, max_size=1024, normalization=int(rng.integers(0, 4)))
    layout = []
    for i in range(12):
        kind = ["hole", "data", "zeros"][int(rng.integers(0, 3))] if i else "data"
        n = 4096 * int(rng.integers(1, 4))
        layout.append((kind, n, seed * 100 + i))
        if kind == "data" and rng.integers(0, 2):  # data that ends in a few zeros before what follows
            layout.append(("zeros", int(rng.integers(1, 100)), 0))
    if all(k != "hole" for k, *_ in layout):
        layout.append(("hole", 8192, 0))
    gear = SEED if seed % 2 else hashlib.sha256(b"tiny %d" % seed).digest()
    data = _write_sparse(tmp_path / "tiny.img", layout)

    def run(source):
        p = core.Pipeline(ID_KEY, gear, core.IdSet(), core.SealSession(KEY, SALT), workers=2, **params)
        return [e[:5] for e in events(p.run([source]))]

    from_file = run(str(tmp_path / "tiny.img"))
    assert from_file == run(data)
    lengths = core.chunk_lengths(data, gear, **params)
    assert [e[3] for e in from_file[:-1]] == lengths
    assert [e[4] for e in from_file[:-1]] == ref_ids(data, lengths)


def _rchar():
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs /proc/self/io")
def test_holes_are_not_read(tmp_path):
    data = _write_sparse(tmp_path / "big.img", [("data", 70_000, 5), ("hole", 256 << 20), ("data", 5000, 6),
                                                ("hole", 64 << 20)])
    p = pipeline(max_size=2 << 20, avg_size=512 << 10, min_size=256 << 10)
    before = _rchar()
    evs = events(p.run([str(tmp_path / "big.img")]))
    read = _rchar() - before
    assert read < 16 << 20, f"{read} bytes read for {len(data)} bytes of which 75000 are data"
    assert evs[-1][3] == len(data) and evs[-1][5] is None
    zero_chunks = [e for e in evs if e[0] == core.CHUNK and e[2] >= 70_000 and e[2] + e[3] <= 70_000 + (256 << 20)]
    assert len(zero_chunks) > 100 and len({e[4] for e in zero_chunks}) == 1
    assert zero_chunks[0][4] == blake3_ref.blake3(bytes(2 << 20), key=ID_KEY).digest()
    assert sum(e[5] is not None for e in zero_chunks) == 1  # the zero chunk is sealed once


# ---- a file that changes while it is read ----------------------------------------------------------------

def _changing(tmp_path, size, change):
    """A file of `size` random bytes; change(path) runs after the pipeline's first read of it."""
    path = tmp_path / f"changing-{size}"
    path.write_bytes(rand(size, 9))
    calls = []

    def hook(p, done):
        if not calls:
            change(path)
        calls.append((p, done))

    return str(path), hook, calls


def _truncate_to(n):
    return lambda path: os.truncate(path, n)


def _append(n):
    def f(path):
        with open(path, "ab") as out:
            out.write(rand(n, 10))
    return f


def _rewrite_same_size(path):
    with open(path, "r+b") as out:
        out.write(b"x" * 100)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


@pytest.mark.parametrize("size, change", [
    (10 << 20, _truncate_to(4 << 20)),  # the stream path: the first read is 8 MiB, then the file shrinks
    (10 << 20, _append(1 << 20)),       # ... or grows
    (10 << 20, _rewrite_same_size),     # ... or is rewritten in place at the same size
    (5000, _append(3000)),              # a small file read whole by a worker, then grown
    (5000, _truncate_to(0)),            # ... or emptied
], ids=["stream-shrinks", "stream-grows", "stream-rewritten", "small-grows", "small-emptied"])
def test_a_file_changed_while_read_is_flagged(tmp_path, size, change):
    path, hook, calls = _changing(tmp_path, size, change)
    p = pipeline(workers=2)
    p._set_after_read(hook)
    evs = events(p.run([path], [size]))
    end = evs[-1]
    assert calls and calls[0][0] == os.fsencode(path)
    assert end[0] == core.END and end[5] is None
    assert end[2] & core.END_CHANGED
    assert end[3] == sum(e[3] for e in evs[:-1])  # what was read, and what the chunks hold


def test_an_unchanged_file_is_not_flagged(tmp_path):
    for size in (10 << 20, 5000):
        path, hook, calls = _changing(tmp_path, size, lambda path: None)
        p = pipeline(workers=2)
        p._set_after_read(hook)
        end = events(p.run([path], [size]))[-1]
        assert calls and end[2] == 0 and end[3] == size and end[5] is None


def test_a_failing_read_hook_fails_the_source_not_the_run(tmp_path):
    path, _, _ = _changing(tmp_path, 5000, lambda path: None)
    p = pipeline(workers=1)

    def hook(p, done):
        raise RuntimeError("boom")

    p._set_after_read(hook)
    evs = events(p.run([path, b"a buffer"]))
    assert evs[0][0] == core.END and "boom" in evs[0][5]
    assert evs[-1][0] == core.END and evs[-1][5] is None
    p._set_after_read(None)
    assert events(p.run([path]))[-1][5] is None


def test_events_are_named_tuples_and_only_a_named_tuple_can_be_their_class():
    """core.py registers PipelineEvent as the class of events; the binding refuses classes it cannot fill
    as it fills a tuple (instances with attributes), and None goes back to plain tuples."""
    ev = core.PipelineEvent(core.END, 0, 0, 0, None, None)
    assert ev == (core.END, 0, 0, 0, None, None) and ev.kind == core.END

    class WithAttributes(tuple):
        pass

    for bad in (dict, WithAttributes, 3):
        with pytest.raises(TypeError):
            core._set_event_type(bad)
    pipe = core.Pipeline(ID_KEY, SEED, core.IdSet(), core.SealSession(KEY), **SMALL)
    try:
        core._set_event_type(None)
        assert [type(e) for b in pipe.run([b"abc"]) for e in b] == [tuple, tuple]
    finally:
        core._set_event_type(core.PipelineEvent)
    assert [type(e) for b in pipe.run([b"abc"]) for e in b] == [core.PipelineEvent] * 2
