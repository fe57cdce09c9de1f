"""AES-256-GCM, HKDF-SHA256, HMAC-SHA256 and the CSPRNG of recovault's C++ core, checked against independent
references: the `cryptography` package (its own OpenSSL build), Python's hmac/hashlib, and published test
vectors (McGrew & Viega GCM spec / NIST, RFC 5869, RFC 4231)."""
import hashlib
import hmac
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from recovault import core

SIZES = [0, 1, 15, 16, 17, 63, 64, 65, 1023, 1024, 1025, 65535, 65536, 65537, 3 * 1024 * 1024 + 5]
H = bytes.fromhex


def _rand(n, seed=0):
    # deterministic pseudo-random bytes (fast even for MiBs)
    return np.random.default_rng(seed + n).integers(0, 256, n, dtype=np.uint8).tobytes()


def _flip(b, bit):
    out = bytearray(b)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# ---- AES-256-GCM ---------------------------------------------------------------------------------------

def test_exception_hierarchy():
    assert issubclass(core.AuthenticationError, ValueError)
    assert issubclass(core.DecompressError, ValueError)
    assert core.AuthenticationError is not core.DecompressError


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("aad", [b"", b"header-bytes", bytes(range(256)) * 5])
def test_aes_gcm_matches_cryptography_both_ways(n, aad):
    key, nonce = os.urandom(32), os.urandom(12)
    pt = _rand(n)
    ours = core.aes_gcm_encrypt(key, nonce, pt, aad)
    assert isinstance(ours, bytes)
    assert len(ours) == n + 16
    ref = AESGCM(key).encrypt(nonce, pt, aad or None)
    assert ours == ref
    # ours -> theirs, theirs -> ours
    assert AESGCM(key).decrypt(nonce, ours, aad or None) == pt
    assert core.aes_gcm_decrypt(key, nonce, ref, aad) == pt


def test_aes_gcm_aad_keyword_and_default():
    key, nonce, pt = os.urandom(32), os.urandom(12), b"payload"
    assert core.aes_gcm_encrypt(key, nonce, pt) == AESGCM(key).encrypt(nonce, pt, None)
    ct = core.aes_gcm_encrypt(key=key, nonce=nonce, plaintext=pt, aad=b"x")
    assert core.aes_gcm_decrypt(key=key, nonce=nonce, ciphertext=ct, aad=b"x") == pt
    with pytest.raises(core.AuthenticationError):
        core.aes_gcm_decrypt(key, nonce, ct)  # AAD omitted


# Test cases 13, 14 and 16 of McGrew & Viega, "The Galois/Counter Mode of Operation" (AES-256).
GCM_VECTORS = [
    (H("00" * 32), H("00" * 12), b"", b"", b"", H("530f8afbc74536b9a963b4f1c4cb738b")),
    (H("00" * 32), H("00" * 12), H("00" * 16), b"", H("cea7403d4d606b6e074ec5d3baf39d18"),
     H("d0d1c8a799996bf0265b98b5d48ab919")),
    (H("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"), H("cafebabefacedbaddecaf888"),
     H("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525"
       "b16aedf5aa0de657ba637b39"),
     H("feedfacedeadbeeffeedfacedeadbeefabaddad2"),
     H("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838"
       "c5f61e6393ba7a0abcc9f662"),
     H("76fc6ece0f4e1768cddf8853bb2d551b")),
]


@pytest.mark.parametrize("key,nonce,pt,aad,ct,tag", GCM_VECTORS)
def test_aes_gcm_known_vectors(key, nonce, pt, aad, ct, tag):
    assert AESGCM(key).encrypt(nonce, pt, aad or None) == ct + tag  # the vector itself is right
    assert core.aes_gcm_encrypt(key, nonce, pt, aad) == ct + tag
    assert core.aes_gcm_decrypt(key, nonce, ct + tag, aad) == pt


def test_aes_gcm_every_bit_flip_is_detected():
    key, nonce, aad = os.urandom(32), os.urandom(12), os.urandom(24)
    pt = os.urandom(48)
    ct = core.aes_gcm_encrypt(key, nonce, pt, aad)
    assert core.aes_gcm_decrypt(key, nonce, ct, aad) == pt
    for bit in range(len(ct) * 8):  # ciphertext and tag
        with pytest.raises(core.AuthenticationError):
            core.aes_gcm_decrypt(key, nonce, _flip(ct, bit), aad)
    for bit in range(12 * 8):
        with pytest.raises(core.AuthenticationError):
            core.aes_gcm_decrypt(key, _flip(nonce, bit), ct, aad)
    for bit in range(len(aad) * 8):
        with pytest.raises(core.AuthenticationError):
            core.aes_gcm_decrypt(key, nonce, ct, _flip(aad, bit))
    for bit in range(32 * 8):
        with pytest.raises(core.AuthenticationError):
            core.aes_gcm_decrypt(_flip(key, bit), nonce, ct, aad)
    # and the reference agrees that the flipped ones are invalid (sanity of the harness)
    with pytest.raises(InvalidTag):
        AESGCM(key).decrypt(nonce, _flip(ct, 3), aad)


def test_aes_gcm_bit_flip_large_message_and_empty_plaintext():
    key, nonce = os.urandom(32), os.urandom(12)
    pt = _rand(65537)
    ct = core.aes_gcm_encrypt(key, nonce, pt)
    for bit in (0, 7, 8 * 4096 + 3, 8 * 65536, 8 * 65537 - 1, 8 * 65537, 8 * len(ct) - 1):
        with pytest.raises(core.AuthenticationError):
            core.aes_gcm_decrypt(key, nonce, _flip(ct, bit))
    tag_only = core.aes_gcm_encrypt(key, nonce, b"", b"aad")
    assert len(tag_only) == 16
    assert core.aes_gcm_decrypt(key, nonce, tag_only, b"aad") == b""
    for bit in range(128):
        with pytest.raises(core.AuthenticationError):
            core.aes_gcm_decrypt(key, nonce, _flip(tag_only, bit), b"aad")


def test_aes_gcm_truncation_and_extension():
    key, nonce = os.urandom(32), os.urandom(12)
    ct = core.aes_gcm_encrypt(key, nonce, os.urandom(100))
    for cut in (0, 1, 15, 16, 17, 50, len(ct) - 1):
        with pytest.raises(core.AuthenticationError):
            core.aes_gcm_decrypt(key, nonce, ct[:cut])
    with pytest.raises(core.AuthenticationError):
        core.aes_gcm_decrypt(key, nonce, ct + b"\0")
    with pytest.raises(core.AuthenticationError, match="16-byte tag"):
        core.aes_gcm_decrypt(key, nonce, b"short")


def test_aes_gcm_authentication_error_message_and_type():
    key, nonce = os.urandom(32), os.urandom(12)
    ct = core.aes_gcm_encrypt(key, nonce, b"secret")
    with pytest.raises(ValueError) as ei:  # catchable as a plain ValueError too
        core.aes_gcm_decrypt(os.urandom(32), nonce, ct)
    assert type(ei.value) is core.AuthenticationError
    assert "authentication failed" in str(ei.value)


@pytest.mark.parametrize("klen", [0, 1, 16, 24, 31, 33, 64])
def test_aes_gcm_wrong_key_length(klen):
    for fn, arg in ((core.aes_gcm_encrypt, b"x"), (core.aes_gcm_decrypt, b"x" * 32)):
        with pytest.raises(ValueError, match=rf"AES-256-GCM key must be 32 bytes, got {klen}"):
            fn(b"k" * klen, b"n" * 12, arg)


@pytest.mark.parametrize("nlen", [0, 1, 8, 11, 13, 16, 32])
def test_aes_gcm_wrong_nonce_length(nlen):
    for fn, arg in ((core.aes_gcm_encrypt, b"x"), (core.aes_gcm_decrypt, b"x" * 32)):
        with pytest.raises(ValueError, match=rf"nonce must be 12 bytes, got {nlen}") as ei:
            fn(b"k" * 32, b"n" * nlen, arg)
        assert not isinstance(ei.value, core.AuthenticationError)


def _buffer_kinds(b):
    big = bytearray(b"\xaa" * 7 + b + b"\xbb" * 5)
    return [
        bytes(b),
        bytearray(b),
        memoryview(b),
        memoryview(bytearray(b)),
        memoryview(big)[7:7 + len(b)],  # contiguous slice at an odd offset
        np.frombuffer(b, dtype=np.uint8),
        np.frombuffer(b, dtype=np.uint8).copy(),
        np.frombuffer(bytes(big), dtype=np.uint8)[7:7 + len(b)],
    ]


def test_aes_gcm_accepts_all_buffer_kinds():
    key, nonce, aad, pt = os.urandom(32), os.urandom(12), os.urandom(20), os.urandom(1000)
    ref = AESGCM(key).encrypt(nonce, pt, aad)
    for k in _buffer_kinds(key):
        for n in _buffer_kinds(nonce)[:3] + _buffer_kinds(nonce)[5:6]:
            assert core.aes_gcm_encrypt(k, n, pt, aad) == ref
    for p in _buffer_kinds(pt):
        assert core.aes_gcm_encrypt(key, nonce, p, aad) == ref
    for a in _buffer_kinds(aad):
        assert core.aes_gcm_encrypt(key, nonce, pt, a) == ref
    for c in _buffer_kinds(ref):
        assert core.aes_gcm_decrypt(key, nonce, c, aad) == pt
    # a 2-D C-contiguous numpy array is one flat buffer
    assert core.aes_gcm_encrypt(key, nonce, np.frombuffer(pt, np.uint8).reshape(10, 100), aad) == ref


def test_aes_gcm_rejects_non_contiguous_and_non_buffers():
    key, nonce = os.urandom(32), os.urandom(12)
    data = bytearray(os.urandom(64))
    for bad in (memoryview(data)[::2], np.frombuffer(bytes(data), np.uint8)[::2],
                np.zeros((8, 8), np.uint8)[:, :4]):
        with pytest.raises(TypeError, match="C-contiguous"):
            core.aes_gcm_encrypt(key, nonce, bad)
        with pytest.raises(TypeError):
            core.aes_gcm_decrypt(key, nonce, bad)
    with pytest.raises(TypeError):
        core.aes_gcm_encrypt(memoryview(bytearray(64))[::2], nonce, b"x")
    for bad in ("a string", 12345, None, [1, 2, 3]):
        with pytest.raises(TypeError):
            core.aes_gcm_encrypt(key, nonce, bad)


def test_aes_gcm_does_not_modify_inputs_and_returns_fresh_bytes():
    key, nonce = bytearray(os.urandom(32)), bytearray(os.urandom(12))
    pt = bytearray(os.urandom(333))
    snapshot = (bytes(key), bytes(nonce), bytes(pt))
    ct = core.aes_gcm_encrypt(key, nonce, pt)
    assert (bytes(key), bytes(nonce), bytes(pt)) == snapshot
    out = core.aes_gcm_decrypt(key, nonce, bytearray(ct))
    assert out == pt and isinstance(out, bytes)


def test_aes_gcm_thread_safety_matches_reference():
    # per-thread OpenSSL contexts: many threads at once, each result must match the reference
    jobs = [(os.urandom(32), os.urandom(12), os.urandom(1 + 997 * i), os.urandom(i % 40)) for i in range(64)]

    def run(j):
        k, n, p, a = j
        ct = core.aes_gcm_encrypt(k, n, p, a)
        return ct, core.aes_gcm_decrypt(k, n, ct, a)

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(run, jobs))
    for (k, n, p, a), (ct, back) in zip(jobs, results):
        assert ct == AESGCM(k).encrypt(n, p, a or None)
        assert back == p


def test_aes_gcm_failed_decrypt_does_not_poison_the_thread_context():
    key, nonce = os.urandom(32), os.urandom(12)
    ct = core.aes_gcm_encrypt(key, nonce, b"abc" * 100)
    with pytest.raises(core.AuthenticationError):
        core.aes_gcm_decrypt(key, nonce, _flip(ct, 5))
    assert core.aes_gcm_decrypt(key, nonce, ct) == b"abc" * 100
    assert core.aes_gcm_encrypt(key, nonce, b"z") == AESGCM(key).encrypt(nonce, b"z", None)


# ---- HKDF-SHA256 ---------------------------------------------------------------------------------------

def _hkdf_ref(ikm, salt, info, length):
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None, info=info).derive(ikm)


@pytest.mark.parametrize("length", [1, 16, 31, 32, 33, 42, 64, 100, 255, 1000, 8160])
@pytest.mark.parametrize("salt", [b"", b"s", os.urandom(16), os.urandom(100)])
@pytest.mark.parametrize("info", [b"", b"recovault/v1/blob", os.urandom(300)])
def test_hkdf_matches_cryptography(length, salt, info):
    ikm = os.urandom(32)
    assert core.hkdf_sha256(ikm, salt, info, length) == _hkdf_ref(ikm, salt, info, length)


@pytest.mark.parametrize("ikm", [b"", b"\x01", os.urandom(16), os.urandom(200)])
def test_hkdf_ikm_lengths(ikm):
    assert core.hkdf_sha256(ikm, b"salt", b"info", 48) == _hkdf_ref(ikm, b"salt", b"info", 48)


def test_hkdf_rfc5869_vectors():
    # test case 1
    ikm, salt, info = H("0b" * 22), H("000102030405060708090a0b0c"), H("f0f1f2f3f4f5f6f7f8f9")
    okm = H("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
    assert core.hkdf_sha256(ikm, salt, info, 42) == okm
    assert core.hkdf_sha256(ikm=ikm, salt=salt, info=info, length=42) == okm
    # test case 3: empty salt and info
    okm3 = H("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")
    assert core.hkdf_sha256(H("0b" * 22), b"", b"", 42) == okm3
    # empty salt means HashLen zero bytes (RFC 5869 2.2)
    assert core.hkdf_sha256(H("0b" * 22), bytes(32), b"", 42) == okm3


def test_hkdf_defaults_and_prefix_property():
    ikm = os.urandom(32)
    assert core.hkdf_sha256(ikm) == _hkdf_ref(ikm, b"", b"", 32)
    long = core.hkdf_sha256(ikm, b"s", b"i", 200)
    assert core.hkdf_sha256(ikm, b"s", b"i", 77) == long[:77]


@pytest.mark.parametrize("length", [0, 8161, 100000])
def test_hkdf_bad_length(length):
    with pytest.raises(ValueError, match="1..8160"):
        core.hkdf_sha256(b"k", b"", b"", length)


def test_hkdf_buffer_kinds():
    ikm, salt, info = os.urandom(32), os.urandom(16), b"ctx"
    ref = _hkdf_ref(ikm, salt, info, 32)
    for i in _buffer_kinds(ikm):
        assert core.hkdf_sha256(i, salt, info) == ref
    for s in _buffer_kinds(salt):
        assert core.hkdf_sha256(ikm, s, info) == ref
    with pytest.raises(TypeError):
        core.hkdf_sha256(memoryview(bytearray(ikm))[::2], salt, info)


# ---- HMAC-SHA256 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("klen", [0, 1, 32, 63, 64, 65, 200])
@pytest.mark.parametrize("n", [0, 1, 55, 56, 63, 64, 65, 1000, 1 << 20])
def test_hmac_matches_python(klen, n):
    key, data = os.urandom(klen), _rand(n)
    assert core.hmac_sha256(key, data) == hmac.new(key, data, hashlib.sha256).digest()


def test_hmac_rfc4231_and_buffer_kinds():
    assert core.hmac_sha256(b"Jefe", b"what do ya want for nothing?") == H(
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    assert core.hmac_sha256(H("0b" * 20), b"Hi There") == H(
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
    key, data = os.urandom(32), os.urandom(5000)
    ref = hmac.new(key, data, hashlib.sha256).digest()
    for k in _buffer_kinds(key):
        assert core.hmac_sha256(k, data) == ref
    for d in _buffer_kinds(data):
        assert core.hmac_sha256(key, d) == ref
    with pytest.raises(TypeError):
        core.hmac_sha256(key, memoryview(bytearray(data))[::3])


# ---- CSPRNG --------------------------------------------------------------------------------------------

def test_random_bytes():
    assert core.random_bytes(0) == b""
    outs = [core.random_bytes(32) for _ in range(200)]
    assert all(len(o) == 32 for o in outs)
    assert len(set(outs)) == 200
    big = core.random_bytes(1 << 20)
    assert len(big) == 1 << 20
    counts = np.bincount(np.frombuffer(big, np.uint8), minlength=256)
    # 4096 expected per value; 6 sigma is ~384
    assert counts.min() > 3600 and counts.max() < 4600
    # a random buffer is, per the core's own estimator, incompressible
    assert core.looks_incompressible(big)


def test_random_bytes_from_threads_are_distinct():
    out, lock = [], threading.Lock()

    def f():
        r = [core.random_bytes(16) for _ in range(100)]
        with lock:
            out.extend(r)

    ts = [threading.Thread(target=f) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(set(out)) == 400
