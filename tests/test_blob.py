"""Sealed blobs (SealSession.seal / open_blob) against an independent reference built from `cryptography`
and `zstandard`, following the layout documented in cpp/include/recovault/blob.hpp:

  [0] version = 1, [1] codec (0 stored, 1 zstd), [2..17] session salt, [18..29] nonce = 4 zero bytes +
  64-bit big-endian counter, [30..] AES-256-GCM(subkey, nonce, payload, aad = id || blob[0..29]) || tag,
  subkey = HKDF-SHA256(ikm = master key, salt = session salt, info = "recovault/v1/blob").
"""
import glob
import os
import struct
import threading

import numpy as np
import pytest
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from recovault import core

HEADER = 30
SIZES = [0, 1, 15, 16, 17, 63, 64, 65, 1023, 1024, 1025, 65535, 65536, 65537, 3 * 1024 * 1024 + 5]


# ---- the independent reference -------------------------------------------------------------------------

def ref_subkey(key, salt):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"recovault/v1/blob").derive(key)


class RefError(Exception):
    pass


def ref_parse(blob):
    version, codec = blob[0], blob[1]
    salt, nonce = blob[2:18], blob[18:30]
    return version, codec, salt, nonce


def ref_open(key, id_, blob, max_size=1 << 30):
    if len(blob) < HEADER + 16:
        raise RefError("short")
    version, codec, salt, nonce = ref_parse(blob)
    if version != 1 or codec not in (0, 1):
        raise RefError("header")
    try:
        payload = AESGCM(ref_subkey(key, salt)).decrypt(nonce, bytes(blob[HEADER:]), bytes(id_) + bytes(blob[:HEADER]))
    except InvalidTag:
        raise RefError("auth")
    if codec == 0:
        out = payload
    else:
        assert zstandard.frame_content_size(payload) >= 0  # frames always carry their size
        out = zstandard.ZstdDecompressor().decompress(payload, max_output_size=max_size)
    if len(out) > max_size:
        raise RefError("too big")
    return out


def ref_seal(key, salt, counter, id_, data, codec, level=3):
    payload = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data) if codec else data
    header = bytes([1, codec]) + salt + bytes(4) + struct.pack(">Q", counter)
    return header + AESGCM(ref_subkey(key, salt)).encrypt(header[18:30], payload, bytes(id_) + header)


def nonce_counter(blob):
    assert blob[18:22] == bytes(4)
    return struct.unpack(">Q", blob[22:30])[0]


def _rand(n, seed=1):
    return np.random.default_rng(seed * 1000003 + n).integers(0, 256, n, dtype=np.uint8).tobytes()


_TEXT_BASE = []


def _text(n):
    if not _TEXT_BASE:
        _TEXT_BASE.append(b"".join(open(f, "rb").read() for f in sorted(glob.glob("/usr/include/*.h"))[:60]) or (
            b"the quick brown fox jumps over the lazy dog 0123456789\n" * 100))
    base = _TEXT_BASE[0]
    return (base * (n // len(base) + 1))[:n]


@pytest.fixture
def key():
    return os.urandom(32)


# ---- roundtrips ----------------------------------------------------------------------------------------

def test_overhead_constant():
    assert core.BLOB_OVERHEAD == HEADER + 16 == 46


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", ["random", "text", "zeros"])
def test_roundtrip_and_reference_opener(key, n, kind):
    data = {"random": _rand, "text": _text, "zeros": bytes}[kind](n)
    s = core.SealSession(key)
    bid = os.urandom(32)
    blob = s.seal(bid, data)
    assert isinstance(blob, bytes)
    version, codec, salt, _ = ref_parse(blob)
    assert version == 1 and salt == s.salt
    assert core.open_blob(key, bid, blob) == data
    assert ref_open(key, bid, blob) == data
    if codec == 0:
        assert len(blob) == n + core.BLOB_OVERHEAD
    else:
        assert len(blob) < n + core.BLOB_OVERHEAD  # only stored compressed when it shrinks
    if kind in ("text", "zeros") and n >= 1024:
        assert codec == 1
    if kind == "random" and n >= 4096:
        assert codec == 0


@pytest.mark.parametrize("compress", ["auto", "always", "never", "none"])
@pytest.mark.parametrize("level", [1, 3, 19, -5])
def test_modes_and_levels(key, compress, level):
    s = core.SealSession(key)
    for data in (_text(20000), _rand(20000), b"", b"x"):
        blob = s.seal(b"id", data, level, compress)
        codec = blob[1]
        if compress in ("never", "none"):
            assert codec == 0
        elif compress == "always":
            assert codec == 1
        assert core.open_blob(key, b"id", blob) == data
        assert ref_open(key, b"id", blob) == data


def test_codec_choice_under_auto(key):
    s = core.SealSession(key)
    assert s.seal(b"i", os.urandom(65536))[1] == 0  # incompressible: stored
    assert s.seal(b"i", _text(65536))[1] == 1  # compressible: zstd
    assert s.seal(b"i", bytes(65536))[1] == 1
    assert s.seal(b"i", core.zstd_compress(_text(1 << 20)))[1] == 0  # already compressed
    assert s.seal(b"i", b"abc")[1] == 0  # too small to shrink: stored
    assert s.seal(b"i", b"")[1] == 0
    assert s.seal(b"i", os.urandom(65536), compress="never")[1] == 0
    assert s.seal(b"i", _text(65536), compress="never")[1] == 0
    assert s.seal(b"i", os.urandom(100), compress="always")[1] == 1  # even if it grows


def test_compressed_payload_is_a_zstd_frame_at_the_requested_level(key):
    salt = os.urandom(16)
    data = _text(200000)
    for level in (1, 9):
        s = core.SealSession(key, salt=salt)
        blob = s.seal(b"id", data, level)
        payload = AESGCM(ref_subkey(key, salt)).decrypt(blob[18:30], blob[30:], b"id" + blob[:30])
        assert zstandard.get_frame_parameters(payload).content_size == len(data)
        assert payload == core.zstd_compress(data, level)


def test_exact_bytes_match_reference_sealer(key):
    # With a fixed salt the layout is fully determined: rebuild the same bytes independently.
    salt = os.urandom(16)
    s = core.SealSession(key, salt=salt)
    assert s.salt == salt
    data = _rand(5000)
    bid = os.urandom(32)
    assert s.seal(bid, data, compress="never") == ref_seal(key, salt, 0, bid, data, 0)
    assert s.seal(bid, data, compress="never") == ref_seal(key, salt, 1, bid, data, 0)
    text = _text(30000)
    blob = s.seal(bid, text, 3, "always")
    frame = core.zstd_compress(text, 3)
    header = bytes([1, 1]) + salt + bytes(4) + struct.pack(">Q", 2)
    assert blob == header + AESGCM(ref_subkey(key, salt)).encrypt(header[18:], frame, bid + header)


@pytest.mark.parametrize("codec", [0, 1])
def test_core_opens_reference_blobs(key, codec):
    salt = os.urandom(16)
    for n in (0, 1, 1000, 70000):
        data = _text(n)
        bid = os.urandom(32)
        blob = ref_seal(key, salt, 12345 + n, bid, data, codec)
        assert core.open_blob(key, bid, blob) == data


def test_id_lengths(key):
    s = core.SealSession(key)
    labels = [os.urandom(n) for n in (0, 1, 16, 32, 63, 64)] + [
        b"recovault/v1/pack-header", b"recovault/v1/index", b"recovault/v1/config" + os.urandom(16)]
    for bid in labels:
        blob = s.seal(bid, b"data" * 10)
        assert core.open_blob(key, bid, blob) == b"data" * 10
        assert ref_open(key, bid, blob) == b"data" * 10
    with pytest.raises(ValueError, match="longer than 64"):
        s.seal(os.urandom(65), b"x")
    blob = s.seal(b"ok", b"x")
    with pytest.raises(ValueError, match="longer than 64"):
        core.open_blob(key, os.urandom(65), blob)


def test_buffer_kinds(key):
    data = _text(3000)
    bid = os.urandom(32)
    s = core.SealSession(bytearray(key), salt=memoryview(bytes(16)))
    for d in (bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        for i in (bytearray(bid), memoryview(bid), np.frombuffer(bid, np.uint8)):
            blob = s.seal(i, d)
            for b in (blob, bytearray(blob), memoryview(blob), np.frombuffer(blob, np.uint8)):
                assert core.open_blob(np.frombuffer(key, np.uint8), i, b) == data
    with pytest.raises(TypeError):
        s.seal(bid, memoryview(bytearray(data))[::2])
    with pytest.raises(TypeError):
        core.open_blob(key, bid, memoryview(bytearray(s.seal(bid, data)))[::2])


def test_bad_arguments(key):
    with pytest.raises(ValueError, match="master key must be 32 bytes, got 16"):
        core.SealSession(os.urandom(16))
    with pytest.raises(ValueError, match="session salt must be 16 bytes, got 32"):
        core.SealSession(key, salt=os.urandom(32))
    s = core.SealSession(key)
    with pytest.raises(ValueError, match="compress must be"):
        s.seal(b"i", b"x", 3, "sometimes")
    blob = s.seal(b"i", b"x")
    with pytest.raises(ValueError, match="master key must be 32 bytes"):
        core.open_blob(key[:31], b"i", blob)


# ---- nonces and salts ----------------------------------------------------------------------------------

def test_nonce_counter_increases_from_zero_and_never_repeats(key):
    s = core.SealSession(key)
    counters = [nonce_counter(s.seal(b"i", b"d" * (k % 50), compress=("auto", "never", "always")[k % 3]))
                for k in range(500)]
    assert counters == list(range(500))
    # failed seals (bad id) may consume a counter but never hand out an old one
    with pytest.raises(ValueError):
        s.seal(os.urandom(65), b"x")
    assert nonce_counter(s.seal(b"i", b"x")) > 499


def test_nonce_unique_across_threads(key):
    s = core.SealSession(key)
    out, lock = [], threading.Lock()

    def work(t):
        mine = [s.seal(bytes([t]), _rand(2000 + 10 * k, t)) for k in range(100)]
        with lock:
            out.extend((bytes([t]), blob) for blob in mine)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counters = [nonce_counter(b) for _, b in out]
    assert len(set(counters)) == 600
    assert sorted(counters) == list(range(600))
    for bid, blob in out[::37]:
        assert ref_open(key, bid, blob) is not None


def test_sessions_have_different_salts_and_subkeys(key):
    salts = {core.SealSession(key).salt for _ in range(50)}
    assert len(salts) == 50 and all(len(x) == 16 for x in salts)
    a, b = core.SealSession(key), core.SealSession(key)
    ba, bb = a.seal(b"i", b"same data"), b.seal(b"i", b"same data")
    assert ba[2:18] == a.salt and bb[2:18] == b.salt
    assert nonce_counter(ba) == nonce_counter(bb) == 0  # same counter, different subkey:
    assert ba[30:] != bb[30:]  # so no keystream reuse
    assert core.open_blob(key, b"i", ba) == core.open_blob(key, b"i", bb) == b"same data"


def test_same_data_same_session_gives_different_blobs(key):
    s = core.SealSession(key)
    x, y = s.seal(b"i", b"payload"), s.seal(b"i", b"payload")
    assert x != y and x[18:30] != y[18:30]


def test_fixed_salt_is_reproducible(key):
    salt = bytes(range(16))
    seq = [(os.urandom(32), _text(1000 * k)) for k in range(5)]
    a = core.SealSession(key, salt)
    b = core.SealSession(key, salt)
    assert [a.seal(i, d) for i, d in seq] == [b.seal(i, d) for i, d in seq]


# ---- tampering -----------------------------------------------------------------------------------------

def _flip(b, bit):
    out = bytearray(b)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@pytest.mark.parametrize("compress", ["never", "always"])
def test_every_bit_flip_after_the_version_byte_is_an_authentication_error(key, compress):
    bid = os.urandom(32)
    blob = core.SealSession(key).seal(bid, _text(120), compress=compress)
    for bit in range(8, len(blob) * 8):
        with pytest.raises(core.AuthenticationError):
            core.open_blob(key, bid, _flip(blob, bit))
        if bit % 5 == 0:  # the reference agrees (sampled, it is slower)
            with pytest.raises(RefError):
                ref_open(key, bid, _flip(blob, bit))


def test_version_byte_flip_is_rejected(key):
    bid = os.urandom(32)
    blob = core.SealSession(key).seal(bid, b"data")
    for bit in range(8):
        with pytest.raises(ValueError, match="version"):
            core.open_blob(key, bid, _flip(blob, bit))


def test_version_byte_flip_is_an_authentication_error(key):
    bid = os.urandom(32)
    blob = core.SealSession(key).seal(bid, b"data")
    try:
        core.open_blob(key, bid, _flip(blob, 0))
    except core.AuthenticationError:
        return
    except ValueError:
        raise AssertionError("plain ValueError, not AuthenticationError")


@pytest.mark.parametrize("version, codec", [(2, 0), (2, 1), (1, 2), (255, 7)])
def test_authentic_blob_of_an_unknown_version_or_codec_is_unsupported_not_corrupt(key, version, codec):
    # Sealed like a v1 blob but with another version or codec byte, so the tag verifies: a newer writer's
    # blob. It is refused as unsupported (a ValueError), never reported as corruption.
    bid, salt = os.urandom(32), os.urandom(16)
    header = bytes([version, codec]) + salt + bytes(4) + struct.pack(">Q", 7)
    blob = header + AESGCM(ref_subkey(key, salt)).encrypt(header[18:30], b"payload", bid + header)
    with pytest.raises(ValueError, match="not supported") as e:
        core.open_blob(key, bid, blob)
    assert not isinstance(e.value, core.AuthenticationError)
    with pytest.raises(core.AuthenticationError):  # and the same blob with one more flipped bit is corrupt
        core.open_blob(key, bid, _flip(blob, 8 * 40))


def test_large_blob_bit_flips(key):
    bid = os.urandom(32)
    for data in (_rand(200000), _text(200000)):
        blob = core.SealSession(key).seal(bid, data)
        for bit in (8, 15, 16 * 8, 29 * 8 + 7, 30 * 8, 8 * (len(blob) // 2), 8 * (len(blob) - 17),
                    8 * (len(blob) - 16), 8 * len(blob) - 1):
            with pytest.raises(core.AuthenticationError):
                core.open_blob(key, bid, _flip(blob, bit))


def test_codec_swap_is_detected(key):
    # a stored blob relabelled as zstd (or the reverse) must fail authentication, not be decompressed
    bid = os.urandom(32)
    s = core.SealSession(key)
    for data, mode in ((core.zstd_compress(_text(5000)), "never"), (_text(5000), "always")):
        blob = bytearray(s.seal(bid, data, compress=mode))
        blob[1] ^= 1
        with pytest.raises(core.AuthenticationError):
            core.open_blob(key, bid, bytes(blob))
        for c in (2, 3, 255):
            blob[1] = c
            with pytest.raises(core.AuthenticationError):
                core.open_blob(key, bid, bytes(blob))


def test_wrong_id_wrong_key(key):
    bid = os.urandom(32)
    blob = core.SealSession(key).seal(bid, _text(4000))
    for other in (os.urandom(32), bid[:31], bid + b"\0", b"", _flip(bid, 0), _flip(bid, 255)):
        with pytest.raises(core.AuthenticationError):
            core.open_blob(key, other, blob)
    with pytest.raises(core.AuthenticationError):
        core.open_blob(os.urandom(32), bid, blob)
    with pytest.raises(core.AuthenticationError):
        core.open_blob(_flip(key, 100), bid, blob)


def test_blob_moved_between_ids_is_detected(key):
    s = core.SealSession(key)
    a, b = os.urandom(32), os.urandom(32)
    blob_a = s.seal(a, b"contents of a")
    blob_b = s.seal(b, b"contents of b")
    with pytest.raises(core.AuthenticationError):
        core.open_blob(key, b, blob_a)
    with pytest.raises(core.AuthenticationError):
        core.open_blob(key, a, blob_b)


def test_truncated_or_extended(key):
    bid = os.urandom(32)
    for data in (b"", b"abc", _text(3000), _rand(3000)):
        blob = core.SealSession(key).seal(bid, data)
        for cut in sorted(set(range(0, min(len(blob), 80))) | set(range(80, len(blob), 97)) | {len(blob) - 1}):
            with pytest.raises(core.AuthenticationError):
                core.open_blob(key, bid, blob[:cut])
        with pytest.raises(core.AuthenticationError):
            core.open_blob(key, bid, blob + b"\0")
    with pytest.raises(core.AuthenticationError, match="too short"):
        core.open_blob(key, bid, b"")


# ---- max_size ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["never", "always"])
def test_max_size_enforced(key, mode):
    bid = os.urandom(32)
    data = _text(100000)
    blob = core.SealSession(key).seal(bid, data, compress=mode)
    assert blob[1] == (0 if mode == "never" else 1)
    assert core.open_blob(key, bid, blob, max_size=100000) == data
    assert core.open_blob(key, bid, blob, 100000) == data
    for limit in (99999, 1000, 0):
        with pytest.raises(core.DecompressError):
            core.open_blob(key, bid, blob, max_size=limit)
    empty = core.SealSession(key).seal(bid, b"", compress=mode)
    assert core.open_blob(key, bid, empty, max_size=0) == b""


def test_lying_zstd_frame_inside_a_valid_blob(key):
    # Someone holding the key could seal a frame whose header claims 1 TiB: open_blob must refuse it
    # from the header, under the default 1 GiB limit, without trying to allocate.
    salt, bid = os.urandom(16), os.urandom(32)
    frame = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + (1 << 40).to_bytes(8, "little")
    header = bytes([1, 1]) + salt + bytes(4) + struct.pack(">Q", 9)
    blob = header + AESGCM(ref_subkey(key, salt)).encrypt(header[18:], frame, bid + header)
    with pytest.raises(core.DecompressError):
        core.open_blob(key, bid, blob)
    # and a corrupt frame inside an authentic blob is a DecompressError, not a crash
    blob2 = header + AESGCM(ref_subkey(key, salt)).encrypt(header[18:], b"\x28\xb5\x2f\xfdjunk", bid + header)
    with pytest.raises(core.DecompressError):
        core.open_blob(key, bid, blob2)
