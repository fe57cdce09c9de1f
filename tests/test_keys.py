"""Tests of master keys, passphrase-protected key files and passphrase input."""
from __future__ import annotations

import base64
import io
import json
import re
from datetime import datetime
from pathlib import Path

import pytest

from recovault.errors import CorruptData, NotFound, UsageError, WeakPassphrase, WrongPassphrase
from recovault.storage import LocalStorage
from recovault.vault import keys as keys_mod
from recovault.vault.keys import (
    DEFAULT_KDF,
    KdfParams,
    KeyInfo,
    KeyStore,
    MasterKeys,
    check_passphrase,
    read_passphrase,
)

FAST = KdfParams(memory_kib=8, iterations=1, lanes=1)
PW1 = "correct horse battery staple"
PW2 = "another long passphrase #2"
PW3 = "yet another one, long enough"


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "vault", create=True)


@pytest.fixture
def ks(storage: LocalStorage) -> KeyStore:
    return KeyStore(storage)


@pytest.fixture
def master() -> MasterKeys:
    return MasterKeys.generate()


def read_doc(storage: LocalStorage, keyid: str) -> dict:
    return json.loads(storage.get(f"keys/{keyid}").decode("utf-8"))


def write_doc(storage: LocalStorage, keyid: str, doc: dict) -> None:
    storage.put(f"keys/{keyid}", json.dumps(doc).encode("utf-8"))


def write_v1_key(storage: LocalStorage, passphrase: str, master: MasterKeys, keyid: str = "ab" * 16) -> str:
    """A version 1 key file as recovault wrote it before key files authenticated their fields (§3)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    salt, nonce = bytes(range(16)), bytes(range(12))
    kek = FAST.derive(passphrase, salt)
    data = AESGCM(kek).encrypt(nonce, master.to_bytes(), b"recovault/v1/key/" + keyid.encode())
    write_doc(storage, keyid, {
        "version": 1, "kdf": "argon2id", "cipher": "aes-256-gcm",
        "kdf_params": {"salt": base64.b64encode(salt).decode(), "iterations": 1, "lanes": 1, "memory_kib": 8},
        "nonce": base64.b64encode(nonce).decode(), "data": base64.b64encode(data).decode(),
        "created": "2026-11-01T10:00:00Z", "hostname": "old-host", "username": "root"})
    return keyid


# -- MasterKeys ----------------------------------------------------------------------------


def test_master_keys_generate_and_serialize(master: MasterKeys) -> None:
    for k in (master.enc_key, master.id_key, master.chunker_seed, master.mac_key):
        assert isinstance(k, bytes) and len(k) == 32
    assert len({master.enc_key, master.id_key, master.chunker_seed, master.mac_key}) == 4
    assert MasterKeys.generate() != master
    blob = master.to_bytes()
    assert len(blob) == 133
    assert MasterKeys.from_bytes(blob) == master


@pytest.mark.parametrize("blob", [b"", b"RVMK\x01" + b"\0" * 127, b"XXXX\x01" + b"\0" * 128, b"RVMK\x02" + b"\0" * 128])
def test_master_keys_from_bad_bytes(blob: bytes) -> None:
    with pytest.raises(CorruptData):
        MasterKeys.from_bytes(blob)


def test_master_keys_require_32_bytes() -> None:
    with pytest.raises(ValueError):
        MasterKeys(b"\0" * 31, b"\0" * 32, b"\0" * 32, b"\0" * 32)
    with pytest.raises(ValueError):
        MasterKeys("x" * 32, b"\0" * 32, b"\0" * 32, b"\0" * 32)  # type: ignore[arg-type]


def test_repr_hides_secrets(master: MasterKeys) -> None:
    shown = " ".join([repr(master), str(master), f"{master}", repr([master]), repr({"m": master})])
    for k in (master.enc_key, master.id_key, master.chunker_seed, master.mac_key):
        assert k.hex() not in shown
        assert repr(k) not in shown
        assert k.hex()[:8] not in shown
        assert base64.b64encode(k).decode() not in shown


# -- KDF parameters and passphrase policy --------------------------------------------------


def test_default_kdf_params() -> None:
    assert (DEFAULT_KDF.memory_kib, DEFAULT_KDF.iterations, DEFAULT_KDF.lanes) == (65536, 3, 4)


@pytest.mark.parametrize("kw", [dict(memory_kib=31, lanes=4), dict(iterations=0), dict(lanes=0), dict(memory_kib=True)])
def test_invalid_kdf_params(kw: dict) -> None:
    with pytest.raises(ValueError):
        KdfParams(**kw)


def test_add_without_kdf_uses_defaults(ks: KeyStore, storage: LocalStorage, master: MasterKeys) -> None:
    keyid = ks.add(PW1, master)
    p = read_doc(storage, keyid)["kdf_params"]
    assert (p["memory_kib"], p["iterations"], p["lanes"]) == (65536, 3, 4)
    assert ks.unlock(PW1) == (master, keyid)


def test_short_passphrase_rejected(ks: KeyStore, storage: LocalStorage, master: MasterKeys) -> None:
    with pytest.raises(WeakPassphrase) as info:
        ks.add("x" * 15, master, kdf=FAST)
    assert str(info.value) == "passphrase must be at least 16 characters"
    assert list(storage.list()) == []
    check_passphrase("x" * 16)
    ks.add("x" * 16, master, kdf=FAST)


# -- add / unlock --------------------------------------------------------------------------


def test_roundtrip_and_key_file_format(ks: KeyStore, storage: LocalStorage, master: MasterKeys) -> None:
    keyid = ks.add(PW1, master, kdf=FAST, label="laptop")
    assert re.fullmatch(r"[0-9a-f]{32}", keyid)
    assert list(storage.list()) == [f"keys/{keyid}"]
    assert ks.unlock(PW1) == (master, keyid)

    raw = storage.get(f"keys/{keyid}")
    doc = json.loads(raw.decode("utf-8"))
    assert doc["version"] == 2 and doc["kdf"] == "argon2id" and doc["cipher"] == "aes-256-gcm"
    assert re.fullmatch(r"[0-9a-f]{64}", doc["digest"])
    p = doc["kdf_params"]
    assert len(base64.b64decode(p["salt"])) == 16
    assert (p["memory_kib"], p["iterations"], p["lanes"]) == (8, 1, 1)
    assert len(base64.b64decode(doc["nonce"])) == 12
    assert len(base64.b64decode(doc["data"])) == 133 + 16  # serialized master + GCM tag
    assert datetime.strptime(doc["created"], "%Y-%m-%dT%H:%M:%S.%fZ")  # timefmt: the one stored form
    assert isinstance(doc["hostname"], str) and isinstance(doc["username"], str)
    assert doc["label"] == "laptop"
    for k in (master.enc_key, master.id_key, master.chunker_seed, master.mac_key):
        assert k not in raw and base64.b64encode(k) not in raw and k.hex().encode() not in raw


def test_salts_and_nonces_are_fresh(ks: KeyStore, storage: LocalStorage, master: MasterKeys) -> None:
    a, b = ks.add(PW1, master, kdf=FAST), ks.add(PW1, master, kdf=FAST)
    da, db = read_doc(storage, a), read_doc(storage, b)
    assert a != b
    assert da["kdf_params"]["salt"] != db["kdf_params"]["salt"]
    assert da["nonce"] != db["nonce"] and da["data"] != db["data"]


def test_wrong_passphrase(ks: KeyStore, master: MasterKeys) -> None:
    ks.add(PW1, master, kdf=FAST)
    with pytest.raises(WrongPassphrase) as info:
        ks.unlock(PW2)
    assert str(info.value) == "wrong passphrase: no key in this vault opens with it"


def test_several_passphrases_open_the_same_master(ks: KeyStore, master: MasterKeys) -> None:
    ids = {pw: ks.add(pw, master, kdf=FAST) for pw in (PW1, PW2, PW3)}
    for pw, keyid in ids.items():
        assert ks.unlock(pw) == (master, keyid)
    assert sorted(k.keyid for k in ks.list()) == sorted(ids.values())


def test_vault_without_keys(ks: KeyStore) -> None:
    with pytest.raises(CorruptData, match="no key files"):
        ks.unlock(PW1)


def test_foreign_names_under_keys_are_ignored(ks: KeyStore, storage: LocalStorage, master: MasterKeys) -> None:
    keyid = ks.add(PW1, master, kdf=FAST)
    storage.put("keys/README", b"not a key")
    storage.put("keys/" + "A" * 32, b"not a key either")
    assert ks.keyids() == [keyid]
    assert ks.unlock(PW1) == (master, keyid)


# -- tampering -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_flipped_ciphertext_byte_does_not_open(ks: KeyStore, storage: LocalStorage, master: MasterKeys,
                                               version: int) -> None:
    keyid = ks.add(PW1, master, kdf=FAST) if version == 2 else write_v1_key(storage, PW1, master)
    doc = read_doc(storage, keyid)
    data = bytearray(base64.b64decode(doc["data"]))
    data[10] ^= 0x01
    doc["data"] = base64.b64encode(bytes(data)).decode()
    write_doc(storage, keyid, doc)
    if version == 1:
        # GCM cannot tell a flipped bit from a wrong passphrase: it is reported as WrongPassphrase.
        with pytest.raises(WrongPassphrase):
            ks.unlock(PW1)
    else:  # version 2: the key file's digest tells an edit from a wrong passphrase
        for pw in (PW1, PW2):
            with pytest.raises(CorruptData, match=f"key file keys/{keyid} .*changed after it was written"):
                ks.unlock(pw)


@pytest.mark.parametrize("version", [1, 2])
def test_tampered_kdf_params_do_not_open(ks: KeyStore, storage: LocalStorage, master: MasterKeys,
                                         version: int) -> None:
    keyid = ks.add(PW1, master, kdf=FAST) if version == 2 else write_v1_key(storage, PW1, master)
    doc = read_doc(storage, keyid)
    doc["kdf_params"]["iterations"] = 2
    write_doc(storage, keyid, doc)
    with pytest.raises(WrongPassphrase if version == 1 else CorruptData):
        ks.unlock(PW1)


def test_key_file_under_another_keyid_fails(ks: KeyStore, storage: LocalStorage, master: MasterKeys) -> None:
    keyid = ks.add(PW1, master, kdf=FAST)
    other = ("0" if keyid[0] != "0" else "1") + keyid[1:]
    storage.put(f"keys/{other}", storage.get(f"keys/{keyid}"))
    storage.delete(f"keys/{keyid}")
    assert ks.keyids() == [other]
    with pytest.raises(WrongPassphrase):  # AAD binds the ciphertext to its keyid
        ks.unlock(PW1)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: "{ not json",
        lambda d: [1, 2],
        lambda d: {**d, "version": 3},
        lambda d: {**d, "version": True},
        lambda d: {**d, "kdf": "scrypt"},
        lambda d: {**d, "cipher": "chacha20"},
        lambda d: {k: v for k, v in d.items() if k != "nonce"},
        lambda d: {**d, "nonce": base64.b64encode(b"short").decode()},
        lambda d: {**d, "data": "!!not base64!!"},
        lambda d: {**d, "kdf_params": {**d["kdf_params"], "memory_kib": 1 << 40}},  # would exhaust memory
        lambda d: {**d, "kdf_params": {**d["kdf_params"], "iterations": "3"}},
    ],
)
def test_corrupt_key_file(ks: KeyStore, storage: LocalStorage, master: MasterKeys, mangle) -> None:
    bad = ks.add(PW1, master, kdf=FAST)
    good = ks.add(PW2, master, kdf=FAST)
    new = mangle(read_doc(storage, bad))
    storage.put(f"keys/{bad}", (new if isinstance(new, str) else json.dumps(new)).encode())

    # Other keys still open despite the corrupt one.
    assert ks.unlock(PW2) == (master, good)
    # If nothing opens, the corrupt file is reported (naming it), not just "wrong passphrase".
    with pytest.raises(CorruptData) as info:
        ks.unlock(PW1)
    assert f"keys/{bad}" in str(info.value)
    assert "no key in this vault opens with this passphrase" in str(info.value)
    listed = {k.keyid: k for k in ks.list()}
    assert listed[bad].problem is not None and f"keys/{bad}" in listed[bad].problem
    assert listed[good].problem is None


def test_corrupt_non_utf8_key_file(ks: KeyStore, storage: LocalStorage, master: MasterKeys) -> None:
    bad = ks.add(PW1, master, kdf=FAST)
    storage.put(f"keys/{bad}", b"\xff\xfe\x00garbage")
    with pytest.raises(CorruptData, match=f"keys/{bad}"):
        ks.unlock(PW1)


# -- list / remove / passwd ----------------------------------------------------------------


def test_list_shows_metadata_not_secrets(ks: KeyStore, master: MasterKeys) -> None:
    keyid = ks.add(PW1, master, kdf=FAST, label="backup server")
    (info,) = ks.list()
    assert isinstance(info, KeyInfo)
    assert info.keyid == keyid and info.label == "backup server" and info.problem is None
    assert datetime.strptime(info.created, "%Y-%m-%dT%H:%M:%S.%fZ")
    assert info.hostname and info.username
    assert master.enc_key.hex() not in repr(info) and PW1 not in repr(info)


def test_remove_other_key(ks: KeyStore, master: MasterKeys) -> None:
    k1 = ks.add(PW1, master, kdf=FAST)
    k2 = ks.add(PW2, master, kdf=FAST)
    assert ks.remove(k2[:8].upper(), current_keyid=k1) == k2  # unique prefix, any case
    assert ks.keyids() == [k1]
    with pytest.raises(WrongPassphrase):
        ks.unlock(PW2)
    assert ks.unlock(PW1) == (master, k1)


def test_remove_refuses_current_and_last(ks: KeyStore, master: MasterKeys) -> None:
    k1 = ks.add(PW1, master, kdf=FAST)
    with pytest.raises(UsageError, match="unlocked"):
        ks.remove(k1, current_keyid=k1)
    with pytest.raises(UsageError, match="last key"):
        ks.remove(k1, current_keyid="f" * 32 if k1 != "f" * 32 else "e" * 32)
    k2 = ks.add(PW2, master, kdf=FAST)
    with pytest.raises(UsageError, match="unlocked"):
        ks.remove(k2, current_keyid=k2)
    assert sorted(ks.keyids()) == sorted([k1, k2])


def test_remove_refuses_when_current_key_vanished(ks: KeyStore, storage: LocalStorage, master: MasterKeys) -> None:
    k1 = ks.add(PW1, master, kdf=FAST)
    k2 = ks.add(PW2, master, kdf=FAST)
    k3 = ks.add(PW3, master, kdf=FAST)
    storage.delete(f"keys/{k1}")  # e.g. removed by another session
    with pytest.raises(UsageError, match="no longer exists"):
        ks.remove(k2, current_keyid=k1)
    assert sorted(ks.keyids()) == sorted([k2, k3])


def test_prefix_resolution(ks: KeyStore, master: MasterKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = iter(["abc1" + "0" * 28, "abc2" + "0" * 28, "def0" + "0" * 28])
    real_token_hex = keys_mod.secrets.token_hex
    monkeypatch.setattr(keys_mod.secrets, "token_hex", lambda n: next(ids) if n == 16 else real_token_hex(n))
    a1, a2, d = (ks.add(pw, master, kdf=FAST) for pw in (PW1, PW2, PW3))
    monkeypatch.undo()
    assert ks.resolve("abc1") == a1 and ks.resolve("D") == d
    with pytest.raises(UsageError, match="ambiguous"):
        ks.resolve("abc")
    with pytest.raises(UsageError, match="ambiguous"):
        ks.remove("abc", current_keyid=d)
    with pytest.raises(NotFound):
        ks.remove("0123", current_keyid=d)
    with pytest.raises(UsageError):
        ks.resolve("")
    assert sorted(ks.keyids()) == sorted([a1, a2, d])


def test_passwd(ks: KeyStore, storage: LocalStorage, master: MasterKeys) -> None:
    old = ks.add(PW1, master, kdf=FAST, label="ops")
    other = ks.add(PW3, master, kdf=FAST)
    new = ks.passwd(old, master, PW2, kdf=FAST)
    assert new != old
    assert sorted(ks.keyids()) == sorted([new, other])
    assert ks.unlock(PW2) == (master, new)
    with pytest.raises(WrongPassphrase):
        ks.unlock(PW1)
    assert read_doc(storage, new)["label"] == "ops"


def test_passwd_rejects_weak_passphrase_without_changes(ks: KeyStore, master: MasterKeys) -> None:
    old = ks.add(PW1, master, kdf=FAST)
    with pytest.raises(WeakPassphrase):
        ks.passwd(old, master, "short", kdf=FAST)
    assert ks.keyids() == [old]


def test_passwd_adds_before_removing(ks: KeyStore, storage: LocalStorage, master: MasterKeys, monkeypatch) -> None:
    old = ks.add(PW1, master, kdf=FAST)

    def crash(name: str) -> None:
        raise RuntimeError("crash before the old key is deleted")

    monkeypatch.setattr(storage, "delete", crash)
    with pytest.raises(RuntimeError):
        ks.passwd(old, master, PW2, kdf=FAST)
    monkeypatch.undo()
    assert len(ks.keyids()) == 2  # both passphrases still work: never zero keys
    assert ks.unlock(PW1)[0] == master and ks.unlock(PW2)[0] == master


# -- read_passphrase -----------------------------------------------------------------------


class FakeStdin(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_passphrase_file_strips_one_newline(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_bytes(b"file passphrase  \n\n")
    env = {"RECOVAULT_PASSPHRASE": "from env"}
    assert read_passphrase(str(f), env) == "file passphrase  \n"  # file beats env
    f.write_bytes(b"windows line\r\n")
    assert read_passphrase(str(f), env) == "windows line"
    f.write_bytes("unicod\u00e9 no newline".encode())
    assert read_passphrase(str(f), {}) == "unicod\u00e9 no newline"


def test_passphrase_file_problems(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read passphrase file"):
        read_passphrase(str(tmp_path / "missing"), {})
    (tmp_path / "empty").write_bytes(b"\n")
    with pytest.raises(UsageError, match="empty"):
        read_passphrase(str(tmp_path / "empty"), {})


def test_passphrase_from_env_beats_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_mod.getpass, "getpass", lambda prompt="": pytest.fail("prompted"))
    assert read_passphrase(None, {"RECOVAULT_PASSPHRASE": "env pass"}, stdin=FakeStdin(True)) == "env pass"
    monkeypatch.setenv("RECOVAULT_PASSPHRASE", "real environ")
    assert read_passphrase(stdin=FakeStdin(True)) == "real environ"


def test_passphrase_prompt_on_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["typed passphrase 123", "typed passphrase 123"])
    prompts = []
    monkeypatch.setattr(keys_mod.getpass, "getpass", lambda prompt="": prompts.append(prompt) or next(answers))
    assert read_passphrase(None, {"RECOVAULT_PASSPHRASE": ""}, confirm=True, stdin=FakeStdin(True)) == "typed passphrase 123"
    assert len(prompts) == 2


def test_passphrase_prompt_confirm_mismatch_and_weak(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["typed passphrase 123", "typo passphrase 123"])
    monkeypatch.setattr(keys_mod.getpass, "getpass", lambda prompt="": next(answers))
    with pytest.raises(UsageError, match="do not match"):
        read_passphrase(None, {}, confirm=True, stdin=FakeStdin(True))
    monkeypatch.setattr(keys_mod.getpass, "getpass", lambda prompt="": "short")
    with pytest.raises(WeakPassphrase):
        read_passphrase(None, {}, confirm=True, stdin=FakeStdin(True))
    assert read_passphrase(None, {}, confirm=False, stdin=FakeStdin(True)) == "short"  # unlocking: no policy


def test_no_passphrase_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_mod.getpass, "getpass", lambda prompt="": pytest.fail("prompted"))
    msg = "no passphrase: set RECOVAULT_PASSPHRASE, use --passphrase-file, or run on a terminal"
    with pytest.raises(UsageError) as info:
        read_passphrase(None, {}, stdin=FakeStdin(False))
    assert str(info.value) == msg
    with pytest.raises(UsageError):
        read_passphrase(None, {}, prompt=False, stdin=FakeStdin(True))


# -- authenticated fields (key file version 2) ----------------------------------------------


def _edit(text: str, field_name: str) -> str:
    """A text-editor-like change of one field's value in the pretty-printed key file."""
    m = re.search(r'("%s": )("[^"]*"|\d+)' % re.escape(field_name), text)
    assert m, field_name
    value = m.group(2)
    if value.startswith('"'):
        inner = value[1:-1]
        new = '"' + (inner[:-1] + ("A" if inner[-1:] != "A" else "B") if inner else "x") + '"'
    else:
        new = str(int(value) + 1)
    return text[:m.start(2)] + new + text[m.end(2):]


@pytest.mark.parametrize("field_name", ["created", "hostname", "username", "label", "iterations", "lanes",
                                        "memory_kib", "salt", "nonce", "data", "digest", "kdf", "cipher"])
def test_each_edited_field_is_reported_as_corrupt(ks: KeyStore, storage: LocalStorage, master: MasterKeys,
                                                  field_name: str) -> None:
    keyid = ks.add(PW1, master, kdf=KdfParams(memory_kib=16, iterations=1, lanes=2), label="laptop")
    text = storage.get(f"keys/{keyid}").decode()
    storage.put(f"keys/{keyid}", _edit(text, field_name).encode())
    if field_name == "digest":
        # the digest only diagnoses; everything it covers is still authenticated by the AAD, so it opens
        assert ks.unlock(PW1) == (master, keyid)
        assert ks.list()[0].problem is not None
        return
    with pytest.raises(CorruptData, match=f"keys/{keyid}"):
        ks.unlock(PW1)
    (info,) = ks.list()
    assert info.problem is not None and f"keys/{keyid}" in info.problem and not info.authenticated


@pytest.mark.parametrize("field_name", ["created", "hostname", "username", "label"])
def test_edited_metadata_with_recomputed_digest_never_opens(ks: KeyStore, storage: LocalStorage,
                                                             master: MasterKeys, field_name: str) -> None:
    """An attacker can recompute the unkeyed digest, but not the AAD: the forged metadata is never accepted."""
    keyid = ks.add(PW1, master, kdf=FAST, label="laptop")
    doc = read_doc(storage, keyid)
    doc[field_name] = "forged"
    doc["digest"] = keys_mod._digest(doc)
    write_doc(storage, keyid, doc)
    with pytest.raises(WrongPassphrase):
        ks.unlock(PW1)


def test_added_field_is_reported(ks: KeyStore, storage: LocalStorage, master: MasterKeys) -> None:
    keyid = ks.add(PW1, master, kdf=FAST)
    doc = read_doc(storage, keyid)
    doc["role"] = "admin"
    write_doc(storage, keyid, doc)
    with pytest.raises(CorruptData, match=f"keys/{keyid}"):
        ks.unlock(PW1)


def test_version_1_key_files_still_open_and_are_listed_unauthenticated(ks: KeyStore, storage: LocalStorage,
                                                                       master: MasterKeys) -> None:
    old = write_v1_key(storage, PW1, master)
    assert ks.unlock(PW1) == (master, old)
    (info,) = ks.list()
    assert info.keyid == old and not info.authenticated and info.problem is None
    assert (info.created, info.hostname) == ("2026-11-01T10:00:00Z", "old-host")
    new = ks.passwd(old, master, PW2, kdf=FAST)  # passwd writes the new form
    assert read_doc(storage, new)["version"] == 2
    assert [(k.keyid, k.authenticated) for k in ks.list()] == [(new, True)]
    assert ks.unlock(PW2) == (master, new)
