"""Vault key management: the master keys and the passphrase-protected key files that hold them.

A vault has one set of :class:`MasterKeys`. Each passphrase gets its own key file
``keys/<keyid>`` (JSON) holding the serialized master keys encrypted with AES-256-GCM
under a key-encryption key derived from the passphrase with Argon2id. The AAD binds the
ciphertext to its keyid and (version 2) to every other field of the file, so neither the file's
name nor its metadata (created, hostname, KDF parameters...) can be changed unnoticed. An unkeyed
digest of the file tells such an edit apart from a wrong passphrase.
"""
from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import json
import os
import re
import secrets
import socket
import stat
import sys
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, TextIO, Tuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from .. import jsondoc, timefmt
from ..errors import (
    CorruptData,
    NotFound,
    ObjectMissing,
    UsageError,
    WeakPassphrase,
    WrongPassphrase,
)
from ..storage.base import Storage

__all__ = [
    "DEFAULT_KDF",
    "KEYS_PREFIX",
    "MIN_PASSPHRASE_LENGTH",
    "PASSPHRASE_ENV",
    "KdfParams",
    "KeyInfo",
    "KeyStore",
    "MasterKeys",
    "check_passphrase",
    "read_passphrase",
]

KEYS_PREFIX = "keys/"
KEY_FILE_VERSION = 2  # written; version 1 files (no authenticated metadata) are still read
MIN_PASSPHRASE_LENGTH = 16
PASSPHRASE_ENV = "RECOVAULT_PASSPHRASE"
KEY_SIZE = 32
SALT_SIZE = 16
NONCE_SIZE = 12
AAD_PREFIX = b"recovault/v1/key/"  # version 1 key files
AAD_PREFIX_V2 = b"recovault/v2/key/"

_KEYID_RE = re.compile(r"[0-9a-f]{32}")
_MASTER_MAGIC = b"RVMK"
_MASTER_VERSION = 1
_MASTER_LEN = len(_MASTER_MAGIC) + 1 + 4 * KEY_SIZE

# Upper bounds accepted when *reading* a key file, so a tampered file cannot make
# unlock allocate absurd memory or spin for hours before failing.
_MAX_MEMORY_KIB = 4 * 1024 * 1024  # 4 GiB
_MAX_ITERATIONS = 1000
_MAX_LANES = 255


# ---------------------------------------------------------------------------------------
# master keys


@dataclass(frozen=True, repr=False)
class MasterKeys:
    """The vault's secret keys (32 bytes each). ``repr`` never shows them."""

    enc_key: bytes  # AES-256-GCM data key
    id_key: bytes  # keyed-BLAKE3 key for chunk IDs
    chunker_seed: bytes  # content-defined chunker seed
    mac_key: bytes  # reserved: authenticated listings

    def __post_init__(self) -> None:
        for name in ("enc_key", "id_key", "chunker_seed", "mac_key"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != KEY_SIZE:
                raise ValueError(f"MasterKeys.{name} must be {KEY_SIZE} bytes")

    @classmethod
    def generate(cls) -> "MasterKeys":
        """New random master keys from the OS CSPRNG."""
        return cls(*(secrets.token_bytes(KEY_SIZE) for _ in range(4)))

    def to_bytes(self) -> bytes:
        """Compact binary form: b"RVMK", version byte 1, then the four keys (133 bytes)."""
        return (
            _MASTER_MAGIC
            + bytes([_MASTER_VERSION])
            + self.enc_key
            + self.id_key
            + self.chunker_seed
            + self.mac_key
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> "MasterKeys":
        """Parse :meth:`to_bytes` output; ``CorruptData`` if it is not that format."""
        data = bytes(data)
        if len(data) != _MASTER_LEN or not data.startswith(_MASTER_MAGIC):
            raise CorruptData("master key blob has the wrong size or magic")
        if data[4] != _MASTER_VERSION:
            raise CorruptData(f"master key blob has unsupported version {data[4]}")
        k = [data[5 + i * KEY_SIZE : 5 + (i + 1) * KEY_SIZE] for i in range(4)]
        return cls(*k)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MasterKeys):
            return NotImplemented
        return secrets.compare_digest(self.to_bytes(), other.to_bytes())

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    def __repr__(self) -> str:
        return "MasterKeys(<secret>)"

    __str__ = __repr__


# ---------------------------------------------------------------------------------------
# KDF parameters and passphrases


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost parameters. Defaults: 64 MiB, 3 iterations, 4 lanes.

    Tests may use tiny ones, e.g. ``KdfParams(memory_kib=8, iterations=1, lanes=1)``
    (Argon2id requires ``memory_kib >= 8 * lanes``).
    """

    memory_kib: int = 65536
    iterations: int = 3
    lanes: int = 4

    def __post_init__(self) -> None:
        for name in ("memory_kib", "iterations", "lanes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"KdfParams.{name} must be a positive integer")
        if self.memory_kib < 8 * self.lanes:
            raise ValueError("KdfParams.memory_kib must be at least 8 * lanes")

    def derive(self, passphrase: str, salt: bytes) -> bytes:
        """The 32-byte key-encryption key for ``passphrase`` (UTF-8) and ``salt``."""
        early = _take_early(self, bytes(salt), passphrase)
        if early is not None:
            return early
        return self._derive(passphrase, salt)

    def _derive(self, passphrase: str, salt: bytes) -> bytes:
        kdf = Argon2id(
            salt=salt,
            length=KEY_SIZE,
            iterations=self.iterations,
            lanes=self.lanes,
            memory_cost=self.memory_kib,
        )
        return kdf.derive(passphrase.encode("utf-8"))


DEFAULT_KDF = KdfParams()


# ---------------------------------------------------------------------------------------
# Early derivation: the `recovault` command starts deriving the key of the vault it was given while the
# rest of the program is still being imported (Argon2id releases the GIL), and the unlock then takes the
# result. Only an optimization: a guess that does not match (another key file, another passphrase) or
# that failed is never used, and the unlock derives as usual.

_early: Dict[Tuple[KdfParams, bytes, str], Tuple[threading.Event, Dict[str, bytes]]] = {}
_early_lock = threading.Lock()


def derive_early(storage: Storage, passphrase: str) -> bool:
    """Start deriving, in a daemon thread, the key-encryption key of the first key file of the vault in
    ``storage`` (the one :meth:`KeyStore.unlock` tries first). Returns whether a derivation started."""
    store = KeyStore(storage)
    ids = store.keyids()
    if not ids:
        return False
    keyfile = store._load(ids[0])
    done, out = threading.Event(), {}

    def run() -> None:
        try:
            out["kek"] = keyfile.kdf._derive(passphrase, keyfile.salt)
        except Exception:  # noqa: BLE001 - the unlock derives again and reports any real problem
            pass
        finally:
            done.set()

    with _early_lock:
        _early[(keyfile.kdf, keyfile.salt, passphrase)] = (done, out)
    threading.Thread(target=run, name="recovault-early-kdf", daemon=True).start()
    return True


def _take_early(params: KdfParams, salt: bytes, passphrase: str) -> Optional[bytes]:
    with _early_lock:
        entry = _early.pop((params, salt, passphrase), None)
    if entry is None:
        return None
    done, out = entry
    done.wait()
    return out.get("kek")


def check_passphrase(passphrase: str) -> None:
    """Raise ``WeakPassphrase`` unless ``passphrase`` has at least 16 characters."""
    if not isinstance(passphrase, str) or len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise WeakPassphrase(f"passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters")


def read_passphrase(
    passphrase_file: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    *,
    prompt: bool = True,
    confirm: bool = False,
    stdin: Optional[TextIO] = None,
    on_warning: Optional[Callable[[str], None]] = None,
    env_var: str = PASSPHRASE_ENV,
    option: str = "--passphrase-file",
    what: str = "",
    command: Optional[str] = None,
) -> str:
    """Find the passphrase: a file (``-``: standard input) or a command > ``$RECOVAULT_PASSPHRASE`` >
    terminal prompt. Another vault's passphrase (copy's source) comes from another variable (`env_var`) and
    option (`option`, named in the message), and `what` names that vault in the prompt and the message ("the
    source vault").

    The file's (or the command's) output is used with one trailing newline removed. `command` is run as
    restic runs its password-command: split like a shell would (no shell), its standard output is the
    passphrase, its standard error goes where ours does, and a non-zero exit is an error (naming the program
    and its exit status, never its output). An empty environment variable counts as unset. The prompt is used
    only when ``prompt`` is true and stdin is a TTY; with ``confirm`` (new vaults/keys) the passphrase is
    checked for strength and asked twice. Otherwise raises ``UsageError``. A passphrase file that group or
    others may read is used, and reported to ``on_warning`` (the CLI prints it).
    """
    env = os.environ if env is None else env
    stream = sys.stdin if stdin is None else stdin
    if passphrase_file is not None and command is not None:
        raise UsageError(f"give {option} or --passphrase-command, not both")
    if command is not None:
        return _passphrase_from_command(command, stream)
    if passphrase_file == "-":
        return _passphrase_from_stdin(stream, option)
    if passphrase_file is not None:
        return _passphrase_from_file(passphrase_file, on_warning)
    value = env.get(env_var)
    if value:
        return value
    if prompt and stream is not None and stream.isatty():
        return _prompt_passphrase(confirm, what)
    raise UsageError(f"no passphrase{' for ' + what if what else ''}: set {env_var}, use {option}, or run on a "
                     "terminal")


def _one_line(text: str) -> str:
    """The passphrase in a file or a command's output: one trailing newline (LF or CRLF) is not part of it."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def _passphrase_from_file(path: str, on_warning: Optional[Callable[[str], None]]) -> str:
    try:
        with open(path, "r", encoding="utf-8", newline="") as f:
            mode = os.fstat(f.fileno()).st_mode
            text = _one_line(f.read())
    except OSError as exc:
        raise UsageError(f"cannot read passphrase file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"passphrase file {path} is not valid UTF-8") from exc
    if not text:
        raise UsageError(f"passphrase file {path} is empty")
    if mode & (stat.S_IRGRP | stat.S_IROTH) and on_warning is not None:
        on_warning(f"passphrase file {path} can be read by other users (mode "
                   f"{stat.S_IMODE(mode):04o}): whoever reads it can open the vault; chmod 600 it")
    return text


def _passphrase_from_stdin(stream: Optional[TextIO], option: str) -> str:
    """``--passphrase-file -``: the passphrase piped in (``pass show backup | recovault ...``)."""
    if stream is None:
        raise UsageError(f"{option} -: there is no standard input")
    if stream.isatty():
        raise UsageError(f"{option} -: standard input is a terminal, not a pipe; leave the option out to be "
                         "asked for the passphrase")
    try:
        text = _one_line(stream.read())
    except UnicodeDecodeError as exc:
        raise UsageError(f"{option} -: the passphrase on standard input is not valid UTF-8") from exc
    if not text:
        raise UsageError(f"{option} -: standard input held no passphrase")
    return text


def _passphrase_from_command(command: str, stream: Optional[TextIO]) -> str:
    """The standard output of `command` (restic's --password-command). Its standard input is ours on a
    terminal (a command may ask there), else empty: data piped to recovault is never the command's."""
    import shlex
    import subprocess
    try:
        args = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"--passphrase-command: cannot split it into arguments: {exc}") from exc
    if not args:
        raise UsageError("--passphrase-command is empty")
    program = args[0]
    on_terminal = stream is not None and stream.isatty()
    try:
        res = subprocess.run(args, stdin=None if on_terminal else subprocess.DEVNULL, stdout=subprocess.PIPE,
                             check=False)
    except OSError as exc:
        raise UsageError(f"passphrase command {program}: cannot run it: {exc.strerror or exc}") from exc
    if res.returncode != 0:
        how = f"killed by signal {-res.returncode}" if res.returncode < 0 else f"exit {res.returncode}"
        raise UsageError(f"passphrase command {program} failed ({how})")
    try:
        text = _one_line(res.stdout.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"passphrase command {program} printed something that is not valid UTF-8") from exc
    if not text:
        raise UsageError(f"passphrase command {program} printed no passphrase")
    return text


def _prompt_passphrase(confirm: bool, what: str) -> str:
    try:
        first = getpass.getpass(f"Passphrase{' of ' + what if what else ''}: ")
        if confirm:
            check_passphrase(first)
            second = getpass.getpass("Repeat passphrase: ")
            if second != first:
                raise UsageError("passphrases do not match")
    except EOFError as exc:
        raise UsageError("no passphrase entered") from exc
    return first


# ---------------------------------------------------------------------------------------
# key files


@dataclass(frozen=True)
class KeyInfo:
    """Public metadata of one key file (never secrets). ``problem`` is set if it is unreadable."""

    keyid: str
    created: str  # RFC 3339 UTC, as stored
    hostname: str
    username: str
    label: Optional[str] = None
    problem: Optional[str] = field(default=None, compare=False)
    # False for version 1 key files, whose metadata (created, hostname, ...) is not authenticated
    authenticated: bool = field(default=True, compare=False)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"{what} is not valid base64") from exc


def _int_field(obj: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    v = obj.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError(f"kdf_params.{key} must be an integer in [{lo}, {hi}]")
    return v


def _str_field(obj: Mapping[str, Any], key: str, optional: bool = False) -> Optional[str]:
    v = obj.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise ValueError(f"field {key!r} must be a string")
    return v


def _canonical(doc: Mapping[str, Any], without: Tuple[str, ...]) -> bytes:
    """The canonical JSON of ``doc`` minus the fields ``without``: sorted keys, no spaces, UTF-8."""
    rest = {k: v for k, v in doc.items() if k not in without}
    return json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _aad(keyid: str, doc: Optional[Mapping[str, Any]] = None) -> bytes:
    """Version 1: the keyid. Version 2 (``doc`` given): the keyid, a newline, and every field but data/digest."""
    if doc is None:
        return AAD_PREFIX + keyid.encode("ascii")
    return AAD_PREFIX_V2 + keyid.encode("ascii") + b"\n" + _canonical(doc, ("data", "digest"))


def _digest(doc: Mapping[str, Any]) -> str:
    """Unkeyed SHA-256 of every field but the digest: detects an edited file (not an attacker, who can
    recompute it: the AAD stops that), so an edit is reported as such rather than as a wrong passphrase."""
    return hashlib.sha256(_canonical(doc, ("digest",))).hexdigest()


def _username() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no $USER and no passwd entry (containers)
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


@dataclass(frozen=True)
class _KeyFile:
    """A parsed, validated key file (not yet decrypted)."""

    info: KeyInfo
    kdf: KdfParams
    salt: bytes
    nonce: bytes
    data: bytes
    aad: bytes
    intact: bool  # the digest matches (version 2); a version 1 file has no digest: True

    @classmethod
    def parse(cls, keyid: str, raw: bytes) -> "_KeyFile":
        """Parse and validate; ``ValueError`` describing the first problem otherwise."""
        try:
            doc = jsondoc.parse(raw.decode("utf-8"))
        except ValueError as exc:  # bad UTF-8, bad JSON, JSON nested too deeply
            raise ValueError("not valid UTF-8 JSON") from exc
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        version = doc.get("version")
        if version not in (1, KEY_FILE_VERSION) or isinstance(version, bool):
            raise ValueError(f"unsupported version {version!r}")
        if doc.get("kdf") != "argon2id":
            raise ValueError(f"unsupported kdf {doc.get('kdf')!r}")
        if doc.get("cipher") != "aes-256-gcm":
            raise ValueError(f"unsupported cipher {doc.get('cipher')!r}")
        params = doc.get("kdf_params")
        if not isinstance(params, dict):
            raise ValueError("kdf_params is not an object")
        lanes = _int_field(params, "lanes", 1, _MAX_LANES)
        kdf = KdfParams(
            memory_kib=_int_field(params, "memory_kib", 8 * lanes, _MAX_MEMORY_KIB),
            iterations=_int_field(params, "iterations", 1, _MAX_ITERATIONS),
            lanes=lanes,
        )
        salt = _unb64(params.get("salt"), "kdf_params.salt")
        if not 8 <= len(salt) <= 64:
            raise ValueError("kdf_params.salt has a bad length")
        nonce = _unb64(doc.get("nonce"), "nonce")
        if len(nonce) != NONCE_SIZE:
            raise ValueError("nonce is not 12 bytes")
        data = _unb64(doc.get("data"), "data")
        if len(data) < 16:
            raise ValueError("data is too short")
        info = KeyInfo(
            keyid=keyid,
            created=_str_field(doc, "created") or "",
            hostname=_str_field(doc, "hostname") or "",
            username=_str_field(doc, "username") or "",
            label=_str_field(doc, "label", optional=True),
            authenticated=version != 1,
        )
        if version == 1:
            return cls(info, kdf, salt, nonce, data, _aad(keyid), intact=True)
        return cls(info, kdf, salt, nonce, data, _aad(keyid, doc), intact=doc.get("digest") == _digest(doc))

    def problem(self, name: str) -> str:
        return (f"key file {name} was changed after it was written (its fields do not match its digest): "
                "restore it from a copy, or open the vault with another key")

    def open(self, passphrase: str, name: str) -> Optional[MasterKeys]:
        """The master keys, or None if the passphrase does not open them. ``CorruptData`` naming the file if
        it does not open and its digest shows it was edited (the AAD alone cannot tell that from a wrong
        passphrase). A file whose only damage is its digest still opens: the AAD proves the rest."""
        kek = self.kdf.derive(passphrase, self.salt)
        try:
            plain = AESGCM(kek).decrypt(self.nonce, self.data, self.aad)
        except InvalidTag:
            if not self.intact:
                raise CorruptData(self.problem(name)) from None
            return None
        return MasterKeys.from_bytes(plain)


class KeyStore:
    """The key files of one vault, under ``keys/<keyid>`` in ``storage``."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @staticmethod
    def _name(keyid: str) -> str:
        return KEYS_PREFIX + keyid

    def keyids(self) -> List[str]:
        """The ids of all key files, in storage list order (names that aren't key ids are ignored)."""
        ids = []
        for name in self.storage.list(KEYS_PREFIX):
            keyid = name[len(KEYS_PREFIX) :]
            if _KEYID_RE.fullmatch(keyid):
                ids.append(keyid)
        return ids

    def _load(self, keyid: str) -> _KeyFile:
        """Read and parse one key file; ``CorruptData`` naming it if it does not parse."""
        name = self._name(keyid)
        raw = self.storage.get(name)
        try:
            return _KeyFile.parse(keyid, raw)
        except ValueError as exc:
            raise CorruptData(f"key file {name} in {self.storage} is corrupt: {exc}") from exc

    def add(
        self,
        passphrase: str,
        master: MasterKeys,
        *,
        kdf: Optional[KdfParams] = None,
        label: Optional[str] = None,
    ) -> str:
        """Write a new key file opening ``master`` with ``passphrase``; return its keyid."""
        check_passphrase(passphrase)
        if label is not None and not isinstance(label, str):
            raise UsageError("key label must be a string")
        kdf = DEFAULT_KDF if kdf is None else kdf
        while True:
            keyid = secrets.token_hex(16)
            if not self.storage.exists(self._name(keyid)):
                break
        salt = secrets.token_bytes(SALT_SIZE)
        nonce = secrets.token_bytes(NONCE_SIZE)
        doc: Dict[str, Any] = {
            "version": KEY_FILE_VERSION,
            "kdf": "argon2id",
            "kdf_params": {
                "salt": _b64(salt),
                "iterations": kdf.iterations,
                "lanes": kdf.lanes,
                "memory_kib": kdf.memory_kib,
            },
            "cipher": "aes-256-gcm",
            "nonce": _b64(nonce),
            "created": timefmt.now(),
            "hostname": socket.gethostname(),
            "username": _username(),
        }
        if label is not None:
            doc["label"] = label
        kek = kdf.derive(passphrase, salt)
        doc["data"] = _b64(AESGCM(kek).encrypt(nonce, master.to_bytes(), _aad(keyid, doc)))
        doc["digest"] = _digest(doc)
        self.storage.put(self._name(keyid), json.dumps(doc, indent=1).encode("utf-8") + b"\n")
        return keyid

    def unlock(self, passphrase: str) -> Tuple[MasterKeys, str]:
        """Try every key file in list order; return ``(master, keyid)`` of the first that opens.

        Raises ``WrongPassphrase`` if none opens, or ``CorruptData`` if none opens and some
        key files could not be parsed (the message names them and mentions both causes).
        A key file whose ciphertext was altered is indistinguishable from a wrong passphrase.
        """
        ids = self.keyids()
        if not ids:
            raise CorruptData(f"no key files under {KEYS_PREFIX} in {self.storage}: the vault cannot be opened")
        corrupt: List[str] = []
        for keyid in ids:
            try:
                keyfile = self._load(keyid)
                master = keyfile.open(passphrase, f"{self._name(keyid)} in {self.storage}")
            except ObjectMissing:
                continue  # removed since listing
            except CorruptData as exc:
                corrupt.append(str(exc))
                continue
            if master is not None:
                return master, keyid
        if corrupt:
            raise CorruptData(
                "no key in this vault opens with this passphrase, and "
                + ("; ".join(corrupt) if len(corrupt) <= 3 else "; ".join(corrupt[:3]) + f" (and {len(corrupt) - 3} more)")
            )
        raise WrongPassphrase("wrong passphrase: no key in this vault opens with it")

    def list(self) -> List[KeyInfo]:
        """Metadata of every key file; unreadable ones are listed with ``problem`` set."""
        out: List[KeyInfo] = []
        for keyid in self.keyids():
            try:
                keyfile = self._load(keyid)
            except ObjectMissing:
                continue
            except CorruptData as exc:
                out.append(KeyInfo(keyid=keyid, created="", hostname="", username="", problem=str(exc),
                                   authenticated=False))
                continue
            if keyfile.intact:
                out.append(keyfile.info)
            else:
                problem = keyfile.problem(f"{self._name(keyid)} in {self.storage}")
                out.append(replace(keyfile.info, problem=problem, authenticated=False))
        return out

    def resolve(self, keyid_or_prefix: str) -> str:
        """The unique keyid starting with ``keyid_or_prefix`` (case-insensitive).

        ``NotFound`` if none matches, ``UsageError`` if it is empty or ambiguous.
        """
        prefix = keyid_or_prefix.strip().lower()
        if not prefix:
            raise UsageError("no key id given")
        matches = [k for k in self.keyids() if k.startswith(prefix)]
        if not matches:
            raise NotFound(f"no key {keyid_or_prefix!r} in this vault")
        if len(matches) > 1:
            shown = ", ".join(m[:12] for m in matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise UsageError(f"key id {keyid_or_prefix!r} is ambiguous: it matches {shown}")
        return matches[0]

    def remove(self, keyid_or_prefix: str, *, current_keyid: str) -> str:
        """Delete a key file; return its full keyid.

        Refuses (``UsageError``) to remove ``current_keyid`` (the key this session unlocked
        with), the last key, or anything when ``current_keyid`` itself no longer exists.
        """
        keyid = self.resolve(keyid_or_prefix)
        if keyid == current_keyid:
            raise UsageError(
                f"refusing to remove key {keyid}: it is the key you unlocked the vault with "
                "(unlock with another passphrase, or use passwd to replace it)"
            )
        ids = self.keyids()
        if len(ids) <= 1:
            raise UsageError(f"refusing to remove key {keyid}: it is the last key of this vault")
        if current_keyid not in ids:
            raise UsageError(
                f"refusing to remove key {keyid}: the key you unlocked with ({current_keyid}) no longer exists"
            )
        self.storage.delete(self._name(keyid))
        return keyid

    def passwd(
        self,
        current_keyid: str,
        master: MasterKeys,
        new_passphrase: str,
        kdf: Optional[KdfParams] = None,
        *,
        label: Optional[str] = None,
    ) -> str:
        """Replace key ``current_keyid`` by a new key file for ``new_passphrase``; return the new keyid.

        The new key file is written before the old one is deleted, so a crash leaves both,
        never neither. ``label`` defaults to the old key's label.
        """
        if not _KEYID_RE.fullmatch(current_keyid or ""):
            raise UsageError(f"invalid key id {current_keyid!r}")
        check_passphrase(new_passphrase)
        if label is None:
            try:
                label = self._load(current_keyid).info.label
            except (ObjectMissing, CorruptData):
                label = None
        new_keyid = self.add(new_passphrase, master, kdf=kdf, label=label)
        self.storage.delete(self._name(current_keyid))
        return new_keyid
