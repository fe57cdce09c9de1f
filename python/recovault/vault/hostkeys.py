"""Format v3's asymmetric keys (docs/vault-format.md §3): the admin's keys derived from the master, the
signed keyring, per-session data keys sealed to the vault's X25519 public key, and host key files.

- The admin keys (`AdminKeys`) are derived from the master's `mac_key` (HKDF-SHA256, one info string each),
  so every existing key file of a vault opens them: `index_key` (index files and prune plans, shared with
  hosts), the X25519 key pair of generation 1 (session keys are sealed to its public half) and the admin's
  Ed25519 signing key (it signs the keyring and its own session keys).
- The keyring (`keyring/<64 hex>`, content-addressed, signed by the admin; the newest valid `seq` wins) lists
  the vault's X25519 public keys by generation, the admin's signing public key and every host key.
- A session key object (`sessionkeys/<32 hex session salt>`) carries one writing session's data key DK,
  sealed with X25519 + HKDF + AES-256-GCM to the vault's public key and signed by the writer.
- A host key file (`HostKeyFile`): a passphrase-sealed file (Argon2id + AES-256-GCM, every field
  authenticated, like a v2 key file) holding what a host needs to add backups and nothing that reads them.

Crypto only through `cryptography`. Library code: nothing here prints.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .. import core, jsondoc, timefmt
from ..errors import CorruptData, ObjectMissing, UsageError, WrongPassphrase
from ..storage import Storage
from ..storage.base import put_or_withdraw
from . import format as fmt
from .keys import DEFAULT_KDF, KdfParams, MasterKeys, _b64, _canonical, _digest, _int_field, _unb64, check_passphrase

__all__ = ["ADMIN_KEYID", "KEYRING", "SESSION_KEYS", "AdminKeys", "HostEntry", "HostKeyFile", "HostMaterial",
           "Keyring", "SessionKeys", "Writer", "read_keyring", "seal_session_key", "store_keyring"]

KEYRING = fmt.KEYRING
SESSION_KEYS = fmt.SESSION_KEYS
KEYGEN = fmt.KEYGEN
ADMIN_KEYID = "admin"  # the keyid of the admin's signing key in session key objects
FIRST_GEN = 1
INFO_INDEX = b"recovault/v3/index-key"
INFO_BOX = b"recovault/v3/x25519/"
INFO_SIGN = b"recovault/v3/admin-sign"
INFO_SESSION = b"recovault/v3/session-key"
INFO_HOST_CACHE = b"recovault/v3/host-cache"
INFO_KEYGEN = b"recovault/v3/keygen"
AAD_HOST_KEY = b"recovault/v3/host-key/"
HOST_KEY_FILE_VERSION = 1
_ZERO_NONCE = bytes(12)


def hkdf(ikm: bytes, info: bytes, salt: Optional[bytes] = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _raw_public(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _raw_private(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def canonical(doc: Mapping[str, Any], without: Tuple[str, ...] = ()) -> bytes:
    return _canonical(doc, without)


def verify_signature(public: bytes, doc: Mapping[str, Any]) -> bool:
    """Whether doc["sig"] is an Ed25519 signature by `public` of the canonical JSON of doc without sig."""
    try:
        sig = _unb64(doc.get("sig"), "sig")
        Ed25519PublicKey.from_public_bytes(public).verify(sig, canonical(doc, ("sig",)))
        return True
    except (ValueError, InvalidSignature):
        return False


def sign(key: Ed25519PrivateKey, doc: Dict[str, Any]) -> Dict[str, Any]:
    return {**doc, "sig": _b64(key.sign(canonical(doc, ("sig",))))}


# ---- the admin's keys --------------------------------------------------------------------------------

@dataclass(frozen=True, repr=False)
class AdminKeys:
    """What the master's holder derives (docs/vault-format.md §3): never stored."""

    index_key: bytes
    box: Dict[int, X25519PrivateKey]  # generation -> X25519 private key
    signing: Ed25519PrivateKey

    @classmethod
    def derive(cls, master: MasterKeys) -> "AdminKeys":
        box = X25519PrivateKey.from_private_bytes(hkdf(master.mac_key, INFO_BOX + str(FIRST_GEN).encode()))
        return cls(hkdf(master.mac_key, INFO_INDEX), {FIRST_GEN: box},
                   Ed25519PrivateKey.from_private_bytes(hkdf(master.mac_key, INFO_SIGN)))

    @property
    def signing_public(self) -> bytes:
        return _raw_public(self.signing)

    def box_public(self) -> Dict[int, bytes]:
        return {gen: _raw_public(k) for gen, k in self.box.items()}

    def with_generations(self, storage: Storage, ring: "Keyring", mac_key: bytes) -> "AdminKeys":
        """These keys with the private keys of every generation `ring` lists (generation 1 derived, later
        ones from their `keygen/` objects); a generation whose object is missing or does not open is left
        out (its sessions' keys do not open: check reports them)."""
        box: Dict[int, X25519PrivateKey] = {}
        for gen, public in ring.box.items():
            if gen == FIRST_GEN and FIRST_GEN in self.box:
                box[gen] = self.box[FIRST_GEN]
                continue
            try:
                box[gen] = open_generation(mac_key, storage.get(generation_name(public)), public)
            except (ObjectMissing, ValueError):
                continue
        return AdminKeys(self.index_key, box or dict(self.box), self.signing)

    def writer(self) -> "Writer":
        gen = max(self.box)
        return Writer(ADMIN_KEYID, self.signing, gen, _raw_public(self.box[gen]))

    def __repr__(self) -> str:
        return "AdminKeys(<secret>)"


# ---- rotated generations ---------------------------------------------------------------------------

def generation_name(public: bytes) -> str:
    """`keygen/<64 hex X25519 public key>`: the object holding that generation's private key."""
    return KEYGEN + public.hex()


def _generation_key(mac_key: bytes) -> bytes:
    return hkdf(mac_key, INFO_KEYGEN)


def seal_generation(mac_key: bytes, private: X25519PrivateKey) -> Tuple[str, bytes]:
    """(name, bytes) of the `keygen/` object of a new generation: nonce(12) || AES-256-GCM(HKDF(mac_key,
    "recovault/v3/keygen"), nonce, private key (32), AAD = name)."""
    name = generation_name(_raw_public(private))
    nonce = secrets.token_bytes(12)
    return name, nonce + AESGCM(_generation_key(mac_key)).encrypt(nonce, _raw_private(private), name.encode())


def open_generation(mac_key: bytes, raw: bytes, public: bytes) -> X25519PrivateKey:
    """The private key of generation `public` from its `keygen/` object; ValueError if it does not open or
    does not match."""
    name = generation_name(public)
    try:
        private = AESGCM(_generation_key(mac_key)).decrypt(raw[:12], raw[12:], name.encode())
    except InvalidTag:
        raise ValueError(f"{name} does not open") from None
    key = X25519PrivateKey.from_private_bytes(private)
    if _raw_public(key) != public:
        raise ValueError(f"{name} holds another key")
    return key


# ---- the keyring -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HostEntry:
    """One host key the admin registered: its id, the host it was made for, its Ed25519 public key; once
    revoked, when, and the sessions (salts, hex) of that key accepted before it."""

    keyid: str
    host: str
    public: bytes
    created: str
    revoked: str = ""
    accepted: Tuple[str, ...] = ()

    @property
    def state(self) -> str:
        return "revoked" if self.revoked else "active"

    def to_json(self) -> Dict[str, Any]:
        out = {"keyid": self.keyid, "host": self.host, "public": _b64(self.public), "created": self.created}
        if self.revoked:
            out.update(revoked=self.revoked, accepted=sorted(self.accepted))
        return out

    @classmethod
    def from_json(cls, d: Any) -> "HostEntry":
        if not isinstance(d, dict) or not all(isinstance(d.get(k), str) for k in ("keyid", "host", "created")):
            raise ValueError("a host entry is not an object with keyid, host, public and created")
        public = _unb64(d.get("public"), "public")
        if len(public) != 32:
            raise ValueError("a host's public key is not 32 bytes")
        revoked, accepted = d.get("revoked", ""), d.get("accepted", [])
        if not isinstance(revoked, str) or not isinstance(accepted, list) or not all(
                isinstance(a, str) for a in accepted):
            raise ValueError("a host entry's revocation is not a time and a list of sessions")
        return cls(d["keyid"], d["host"], public, d["created"], revoked, tuple(accepted))

    def refuses(self, salt: bytes) -> bool:
        """Whether a session `salt` of this key is refused: the key was revoked and did not write it before."""
        return bool(self.revoked) and salt.hex() not in self.accepted


@dataclass(frozen=True)
class Keyring:
    """The signed keyring: the vault's X25519 public keys by generation (sessions seal to the newest), the
    admin's signing public key, the host keys (revoked ones with the sessions accepted before), and while a
    `key rotate --rewrite` is under way, the generation it rewrites to (`rewriting`)."""

    seq: int
    vault_id: str
    box: Dict[int, bytes]
    admin: bytes
    hosts: Tuple[HostEntry, ...] = ()
    name: str = field(default="", compare=False)
    rewriting: int = 0
    lock_days: int = 0  # the vault's lock period the admin published for hosts (immutability.py); 0: none

    @property
    def newest(self) -> int:
        return max(self.box)

    def to_json(self) -> Dict[str, Any]:
        out = {"v": 1, "seq": self.seq, "vault": self.vault_id, "admin": _b64(self.admin),
               "box": [{"gen": g, "public": _b64(p)} for g, p in sorted(self.box.items())],
               "hosts": [h.to_json() for h in self.hosts]}
        if self.rewriting:
            out["rewriting"] = self.rewriting
        if self.lock_days:
            out["lock_days"] = self.lock_days
        return out

    @classmethod
    def parse(cls, raw: bytes, admin: bytes, vault_id: str, name: str = "") -> "Keyring":
        """A keyring signed by `admin` for vault `vault_id`; ValueError otherwise."""
        doc = jsondoc.parse(raw)
        if not isinstance(doc, dict) or doc.get("v") != 1:
            raise ValueError("not a version 1 keyring")
        if not verify_signature(admin, doc) or _unb64(doc.get("admin"), "admin") != admin:
            raise ValueError("its signature does not verify against the admin's key")
        if doc.get("vault") != vault_id or type(doc.get("seq")) is not int:
            raise ValueError("it belongs to another vault or has no sequence number")
        box = {}
        for b in doc.get("box") or []:
            if not isinstance(b, dict) or type(b.get("gen")) is not int:
                raise ValueError("a box key has no generation")
            box[b["gen"]] = _unb64(b.get("public"), "box public key")
        if not box:
            raise ValueError("it names no X25519 public key")
        hosts = tuple(HostEntry.from_json(h) for h in doc.get("hosts") or [])
        rewriting = doc.get("rewriting", 0)
        if type(rewriting) is not int:
            raise ValueError("its rewriting generation is not a number")
        lock = doc.get("lock_days", 0)
        if type(lock) is not int or lock < 0:
            raise ValueError("its lock period is not a number of days")
        return cls(doc["seq"], vault_id, box, admin, hosts, name, rewriting, lock)

    def signer(self, keyid: str) -> Optional[bytes]:
        """The Ed25519 public key registered under `keyid` ("admin", or a host key's id), or None."""
        if keyid == ADMIN_KEYID:
            return self.admin
        return next((h.public for h in self.hosts if h.keyid == keyid), None)

    def host(self, keyid: str) -> Optional[HostEntry]:
        return next((h for h in self.hosts if h.keyid == keyid), None)

    def with_host(self, entry: HostEntry) -> "Keyring":
        return self.next(hosts=self.hosts + (entry,))

    def next(self, **changes: Any) -> "Keyring":
        """The keyring that follows this one (seq + 1) with `changes` (dataclass fields)."""
        return replace(self, seq=self.seq + 1, name="", **changes)


def read_keyring(storage: Storage, admin: bytes, vault_id: str) -> Optional[Keyring]:
    """The newest keyring (highest seq) signed by `admin` for this vault, or None. Objects that do not
    verify are skipped (anyone with write access can plant one; only the admin's signature counts)."""
    best: Optional[Keyring] = None
    for name in storage.list(KEYRING):
        try:
            raw = storage.get(name)
            if core.blake3(raw).hex() != name[len(KEYRING):]:
                continue
            ring = Keyring.parse(raw, admin, vault_id, name)
        except (ObjectMissing, ValueError, TypeError, KeyError):
            continue
        if best is None or ring.seq > best.seq:
            best = ring
    return best


def store_keyring(storage: Storage, ring: Keyring, signing: Ed25519PrivateKey) -> str:
    raw = json.dumps(sign(signing, ring.to_json()), sort_keys=True, indent=1).encode() + b"\n"
    name = KEYRING + core.blake3(raw).hex()
    put_or_withdraw(storage, name, raw)
    return name


# ---- session keys ------------------------------------------------------------------------------------

@dataclass(frozen=True, repr=False)
class Writer:
    """Who writes a session: the keyid its session keys name, its signing key, and the vault's public key
    (generation `gen`) its data keys are sealed to."""

    keyid: str
    signing: Ed25519PrivateKey
    gen: int
    box_public: bytes

    def __repr__(self) -> str:
        return f"Writer({self.keyid})"


def _sealing_key(shared: bytes, salt: bytes) -> bytes:
    return hkdf(shared, INFO_SESSION, salt=salt)


def _session_aad(name: str, keyid: str, gen: int) -> bytes:
    return name.encode() + keyid.encode() + str(gen).encode()


def session_key_name(salt: bytes) -> str:
    return SESSION_KEYS + salt.hex()


def session_salt(name: str) -> Optional[bytes]:
    """The session salt a `sessionkeys/<32 hex>` name carries, or None (a name planted there is not one)."""
    hexid = fmt.name_to_id(name)
    try:
        return bytes.fromhex(hexid) if len(hexid) == 32 else None
    except ValueError:
        return None


def seal_session_key(salt: bytes, dk: bytes, writer: Writer) -> bytes:
    """The `sessionkeys/<salt>` object sealing `dk` to the vault's public key, signed by the writer."""
    eph = X25519PrivateKey.generate()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(writer.box_public))
    name = session_key_name(salt)
    sealed = AESGCM(_sealing_key(shared, salt)).encrypt(_ZERO_NONCE, dk, _session_aad(name, writer.keyid, writer.gen))
    doc = {"v": 1, "keyid": writer.keyid, "gen": writer.gen, "eph": _b64(_raw_public(eph)), "sealed": _b64(sealed)}
    return json.dumps(sign(writer.signing, doc), sort_keys=True).encode() + b"\n"


class OpenedSession(NamedTuple):
    """A session key object opened: the session's data key, the generation it was sealed to, its writer."""

    dk: bytes
    gen: int
    keyid: str


class Refused(ValueError):
    """A session key object that is authentic but refused: its writer's host key was revoked before it."""


def open_session_key(raw: bytes, salt: bytes, box: Mapping[int, X25519PrivateKey], ring: Keyring) -> OpenedSession:
    """The data key in session key object `raw` (for session `salt`): ValueError unless its writer is in
    the keyring, its signature verifies and it opens; Refused if its writer was revoked before it."""
    doc = jsondoc.parse(raw)
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise ValueError("not a version 1 session key")
    keyid, gen = doc.get("keyid"), doc.get("gen")
    public = ring.signer(keyid) if isinstance(keyid, str) else None
    if public is None:
        raise ValueError(f"its writer {keyid!r} is not in the keyring")
    if not verify_signature(public, doc):
        raise ValueError("its signature does not verify")
    entry = ring.host(keyid)
    if entry is not None and entry.refuses(salt):
        raise Refused(f"written by host key {keyid[:12]} (host {entry.host}) after its revocation on "
                      f"{entry.revoked}")
    if type(gen) is not int or gen not in box:
        raise ValueError(f"it is sealed to an unknown key generation {gen!r}")
    eph = X25519PublicKey.from_public_bytes(_unb64(doc.get("eph"), "eph"))
    key = _sealing_key(box[gen].exchange(eph), salt)
    try:
        dk = AESGCM(key).decrypt(_ZERO_NONCE, _unb64(doc.get("sealed"), "sealed"),
                                 _session_aad(session_key_name(salt), keyid, gen))
    except InvalidTag:
        raise ValueError("it does not open") from None
    if len(dk) != 32:
        raise ValueError("its data key is not 32 bytes")
    return OpenedSession(dk, gen, keyid)


class SessionKeys:
    """The admin's resolver of session salts to data keys: lists `sessionkeys/` once (again for a salt the
    listing did not have, once per salt), opens each object it is asked for (through the agent cache,
    where the objects are kept as stored: sealed), and remembers the keys, the generation each was sealed
    to, and why one was refused (a revoked writer). The keyring, and with it the rotated generations' private
    keys (`mac_key` opens them), is read on first use. Thread-safe."""

    def __init__(self, storage: Storage, admin: AdminKeys, vault_id: str, cache_root: Optional[str] = None,
                 mac_key: Optional[bytes] = None) -> None:
        from .cache import ObjectCache
        self.storage = storage
        self.admin = admin
        self.vault_id = vault_id
        self.mac_key = mac_key
        self.cache = ObjectCache(cache_root, vault_id, "sessionkeys", by_hash=False) if cache_root else None
        self._listed: Optional[set] = None
        self._relisted: set = set()
        self._keys: Dict[bytes, Optional[OpenedSession]] = {}
        self.refusals: Dict[bytes, str] = {}
        self._ring: Optional[Keyring] = None
        self._box: Dict[int, X25519PrivateKey] = dict(admin.box)
        self._lock = threading.RLock()

    def ring(self) -> Keyring:
        with self._lock:
            if self._ring is None:
                self._ring = read_keyring(self.storage, self.admin.signing_public, self.vault_id) or Keyring(
                    0, self.vault_id, self.admin.box_public(), self.admin.signing_public)
                if self.mac_key is not None:
                    self._box = self.admin.with_generations(self.storage, self._ring, self.mac_key).box
            return self._ring

    def writer(self) -> Writer:
        """The admin's writer, sealing to the keyring's newest generation."""
        with self._lock:
            ring = self.ring()
            gen = ring.newest if ring.newest in self._box else max(self._box)
            return Writer(ADMIN_KEYID, self.admin.signing, gen, _raw_public(self._box[gen]))

    def forget(self) -> None:
        """Read the keyring and the listing again on next use (a rotation or revocation changed them)."""
        with self._lock:
            self._ring, self._listed = None, None
            self._keys.clear()
            self.refusals.clear()

    def _list(self) -> set:
        return {n[len(SESSION_KEYS):] for n in self.storage.list(SESSION_KEYS)}

    def known(self, salt: bytes) -> Optional[bytes]:
        """The data key of session `salt`, or None (no such object, or one that does not open, verify, or
        whose writer was revoked before it: `refusals` says so)."""
        opened = self.opened(salt)
        return opened.dk if opened is not None else None

    def opened(self, salt: bytes) -> Optional[OpenedSession]:
        """Session `salt`'s key object opened, or None (see `known`)."""
        with self._lock:
            if salt in self._keys:
                return self._keys[salt]
            if self._listed is None:
                self._listed = self._list()
            if salt.hex() not in self._listed:
                return None
            opened = self._open(salt)
            self._keys[salt] = opened
            return opened

    def relist(self, salt: bytes) -> bool:
        """Once per salt whose blob no key opened: list again and read the keyring again (a session, or a host
        key, newer than what this process read); whether the salt's session key object is there now."""
        with self._lock:
            if salt in self._relisted:
                return False
            self._relisted.add(salt)
            self._listed = self._list()
            self._keys.pop(salt, None)
            self._ring = None  # a host added since may have written it
            return salt.hex() in self._listed

    def _open(self, salt: bytes) -> Optional[OpenedSession]:
        name = session_key_name(salt)
        raw = self.cache.get(name) if self.cache else None
        ring = self.ring()
        for attempt in ((raw,) if raw is not None else ()) + (None,):
            try:
                data = attempt if attempt is not None else self.storage.get(name)
                opened = open_session_key(data, salt, self._box, ring)
            except Refused as e:
                self.refusals[salt] = str(e)
                return None
            except (ObjectMissing, ValueError, TypeError, KeyError):
                continue
            if self.cache and attempt is None:
                self.cache.put(name, data)
            return opened
        return None


# ---- host key files ----------------------------------------------------------------------------------

@dataclass(frozen=True, repr=False)
class HostMaterial:
    """What a host key file seals: enough to add backups to one vault and deduplicate, nothing that reads."""

    vault_id: str
    keyid: str
    host: str
    id_key: bytes
    chunker_seed: bytes
    index_key: bytes
    gen: int
    box_public: bytes
    admin_public: bytes
    signing: bytes  # the host's Ed25519 private key (raw 32 bytes)
    settings: Dict[str, Any]

    def to_json(self) -> bytes:
        return canonical({
            "vault": self.vault_id, "keyid": self.keyid, "host": self.host, "id_key": _b64(self.id_key),
            "chunker_seed": _b64(self.chunker_seed), "index_key": _b64(self.index_key), "gen": self.gen,
            "box_public": _b64(self.box_public), "admin_public": _b64(self.admin_public),
            "signing": _b64(self.signing), "settings": self.settings})

    @classmethod
    def from_json(cls, raw: bytes) -> "HostMaterial":
        d = jsondoc.parse(raw)
        b = {k: _unb64(d[k], k) for k in ("id_key", "chunker_seed", "index_key", "box_public", "admin_public",
                                          "signing")}
        if any(len(v) != 32 for v in b.values()):
            raise ValueError("a key is not 32 bytes")
        return cls(str(d["vault"]), str(d["keyid"]), str(d["host"]), b["id_key"], b["chunker_seed"],
                   b["index_key"], int(d["gen"]), b["box_public"], b["admin_public"], b["signing"],
                   dict(d["settings"]))

    def writer(self) -> Writer:
        return Writer(self.keyid, Ed25519PrivateKey.from_private_bytes(self.signing), self.gen, self.box_public)

    @property
    def cache_key(self) -> bytes:
        """The key of this host's own agent cache entries (its last trees): derived from its signing key."""
        return hkdf(self.signing, INFO_HOST_CACHE)

    def __repr__(self) -> str:
        return f"HostMaterial({self.host}, {self.keyid})"


def new_host_material(vault_id: str, host: str, master: MasterKeys, admin: AdminKeys,
                      settings: Dict[str, Any]) -> Tuple[HostMaterial, HostEntry]:
    signing = Ed25519PrivateKey.generate()
    gen = max(admin.box)
    material = HostMaterial(vault_id, secrets.token_hex(16), host, master.id_key, master.chunker_seed,
                            admin.index_key, gen, admin.box_public()[gen], admin.signing_public,
                            _raw_private(signing), settings)
    return material, HostEntry(material.keyid, host, _raw_public(signing), timefmt.now())


class HostKeyFile:
    """A host key file (docs/vault-format.md §3): JSON, every field authenticated as the AAD of the sealed
    material, and an unkeyed digest that tells an edited file from a wrong passphrase."""

    @staticmethod
    def _aad(doc: Mapping[str, Any]) -> bytes:
        return AAD_HOST_KEY + str(doc.get("keyid")).encode() + b"\n" + canonical(doc, ("data", "digest"))

    @classmethod
    def encode(cls, material: HostMaterial, passphrase: str, kdf: Optional[KdfParams] = None) -> bytes:
        check_passphrase(passphrase)
        kdf = kdf or DEFAULT_KDF
        salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
        doc: Dict[str, Any] = {
            "format": "recovault-host-key", "version": HOST_KEY_FILE_VERSION, "role": "host",
            "host": material.host, "vault": material.vault_id, "keyid": material.keyid, "kdf": "argon2id",
            "kdf_params": {"salt": _b64(salt), "iterations": kdf.iterations, "lanes": kdf.lanes,
                           "memory_kib": kdf.memory_kib},
            "cipher": "aes-256-gcm", "nonce": _b64(nonce), "created": timefmt.now(),
            "hostname": socket.gethostname()}
        doc["data"] = _b64(AESGCM(kdf.derive(passphrase, salt)).encrypt(nonce, material.to_json(), cls._aad(doc)))
        doc["digest"] = _digest(doc)
        return json.dumps(doc, indent=1).encode() + b"\n"

    @staticmethod
    def is_host_key(raw: bytes) -> bool:
        try:
            doc = jsondoc.parse(raw)
        except ValueError:
            return False
        return isinstance(doc, dict) and doc.get("format") == "recovault-host-key"

    @classmethod
    def read(cls, path: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise UsageError(f"cannot read key file {path}: {e.strerror or e}") from None

    @classmethod
    def open(cls, raw: bytes, passphrase: str, where: str) -> HostMaterial:
        """The material of a host key file; UsageError if it is not one, WrongPassphrase if the passphrase
        does not open it, CorruptData if it was edited."""
        try:
            doc = jsondoc.parse(raw)
            if not cls.is_host_key(raw) or doc.get("version") != HOST_KEY_FILE_VERSION:
                raise ValueError
            params = doc["kdf_params"]
            lanes = _int_field(params, "lanes", 1, 255)
            kdf = KdfParams(memory_kib=_int_field(params, "memory_kib", 8 * lanes, 4 << 20),
                            iterations=_int_field(params, "iterations", 1, 1000), lanes=lanes)
            salt, nonce, data = (_unb64(params["salt"], "salt"), _unb64(doc["nonce"], "nonce"),
                                 _unb64(doc["data"], "data"))
        except (ValueError, KeyError, TypeError, AttributeError):  # AttributeError: kdf_params not an object
            raise UsageError(f"{where} is not a recovault host key file") from None
        try:
            aad, digest_ok = cls._aad(doc), doc.get("digest") == _digest(doc)
        except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800"): no file recovault writes holds one
            raise CorruptData(f"key file {where} was changed after it was written") from None
        try:
            plain = AESGCM(kdf.derive(passphrase, salt)).decrypt(nonce, data, aad)
        except (InvalidTag, ValueError):
            if not digest_ok:
                raise CorruptData(f"key file {where} was changed after it was written") from None
            raise WrongPassphrase(f"wrong passphrase: key file {where} does not open with it") from None
        try:
            material = HostMaterial.from_json(plain)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CorruptData(f"key file {where} holds material this recovault cannot read") from None
        if material.vault_id != doc.get("vault") or material.keyid != doc.get("keyid"):
            raise CorruptData(f"key file {where} was changed after it was written")
        return material


def write_key_file(path: str, data: bytes) -> None:
    """Write a new key file, mode 0600, refusing to replace an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists already: choose another file for the key") from None
    except OSError as e:
        raise UsageError(f"cannot write key file {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def registered(ring: Optional[Keyring], keyid: str) -> bool:
    return ring is not None and ring.signer(keyid) is not None

