"""Sealing for one writing session: every object a vault stores encrypted goes through a Sealer (a random
per-session subkey salt and a nonce counter, see docs/vault-format.md §2). Shared by the blob store and the
recovery-point store, so one process never runs two sessions under one key by accident.

Format v3 (§3): the session seals under its own random data key, stored (sealed to the vault's public key)
as `sessionkeys/<salt>` before the session's first sealed object (`register`); index files and prune plans
are sealed under `index_key` (hosts read them). A reader finds a blob's key by the blob's salt: its own
session's, then one the resolver (the admin's `SessionKeys`) opens, then the master's `enc_key` (v1/v2
blobs, and the fallback, so a planted session key object cannot make admin data unreadable).

A re-sealed object (`key rotate --rewrite`, §3.1): a recovery point or journal entry keeps its name (the
BLAKE3 of the bytes first stored under it), and its bytes become `fmt.RESEALED` followed by the object sealed again
by an admin session, under a label made of its own and its name (`resealed_aad`): the tag binds it to its
name as the hash did, and only the admin's sessions are believed (a host's session key could seal anything)."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional

from .. import core
from ..errors import CorruptData, RefusedSession
from . import format as fmt
from .hostkeys import ADMIN_KEYID
from .keys import MasterKeys

if TYPE_CHECKING:
    from .hostkeys import SessionKeys

#: objects sealed under index_key in a v3 vault (hosts read them)
SHARED_AADS = (fmt.AAD_INDEX, fmt.AAD_PLAN)


def resealed_body(raw: bytes) -> bytes:
    """A stored object's bytes after fmt.RESEALED when it is re-sealed, else the bytes themselves."""
    return raw[len(fmt.RESEALED):] if raw.startswith(fmt.RESEALED) else raw


def resealed_aad(aad: bytes, name: str) -> bytes:
    """The label a re-sealed object named `name` is sealed under: AAD_RESEALED and the BLAKE3 of its own
    label, "@" and its name's 32 bytes (a label is at most 64 bytes)."""
    return fmt.AAD_RESEALED + core.blake3(aad + b"@" + bytes.fromhex(name))


class Sealer:
    def __init__(self, master: Optional[MasterKeys], level: int, *, data_key: Optional[bytes] = None,
                 index_key: Optional[bytes] = None, resolver: Optional["SessionKeys"] = None,
                 register: Optional[Callable[[bytes, bytes], None]] = None, v3: bool = True) -> None:
        """`v3`: seal index files and plans under `index_key`, and look a blob's session key up before the
        master's. A format 2 vault's Sealer (v3 False) seals under `enc_key` and reads `index_key` and session
        keys only where `enc_key` fails (an upgrade to format 3 interrupted after its first steps)."""
        self.master = master
        self.level = level
        self.data_key = data_key if data_key is not None else master.enc_key  # type: ignore[union-attr]
        self._session = core.SealSession(self.data_key)
        self.index_key = index_key
        self._shared = core.SealSession(index_key) if index_key is not None and v3 else None
        self.resolver = resolver
        self.v3 = v3
        self._register = register
        self._lock = threading.Lock()

    @property
    def session(self) -> "core.SealSession":
        """The session, for sealing: in a v3 vault its data key is stored first (once)."""
        if self._register is not None:
            with self._lock:
                if self._register is not None:
                    self._register(self._session.salt, self.data_key)
                    self._register = None
        return self._session

    @property
    def id_session(self) -> "core.SealSession":
        """The session, for computing chunk IDs only (nothing sealed: nothing stored)."""
        return self._session

    def seal(self, aad: bytes, data: bytes) -> bytes:
        if self._shared is not None and aad in SHARED_AADS:
            return self._shared.seal(aad, data, self.level)
        return self.session.seal(aad, data, self.level)

    def session_key(self, salt: bytes) -> Optional[bytes]:
        """The data key of session `salt` when it is not the master's: this session's, or the resolver's (a
        format 2 vault: None, the C++ engine then uses the master's)."""
        if salt == self._session.salt and (self.master is None or self.data_key != self.master.enc_key):
            return self.data_key
        return self.resolver.known(salt) if self.resolver is not None and self.v3 else None

    def _keys(self, aad: bytes, salt: bytes) -> Iterator[bytes]:
        """The keys to try, in order, each once; those that cost a lookup only when the ones before failed."""
        def every() -> Iterator[Optional[bytes]]:
            if aad in SHARED_AADS:
                yield self.index_key
            yield self.session_key(salt)
            yield self.master.enc_key if self.master is not None else None
            if not self.v3 and self.resolver is not None:
                yield self.resolver.known(salt)
        tried: List[bytes] = []
        for key in every():
            if key is not None and key not in tried:
                tried.append(key)
                yield key

    def unseal(self, aad: bytes, blob: bytes, what: str, max_size: int = 1 << 30) -> bytes:
        """The plaintext of a sealed object; CorruptData (naming `what`) if it fails authentication."""
        salt = bytes(blob[2:18])
        error: object = "no key of this session opens it"
        for _ in range(2):
            for key in self._keys(aad, salt):
                try:
                    return core.open_blob(key, aad, blob, max_size)
                except core.AuthenticationError as e:
                    error = e
                except (core.DecompressError, ValueError) as e:
                    raise CorruptData(f"{what} is corrupt or was tampered with ({e})") from None
            if self.resolver is None or len(blob) < 18 or not self.resolver.relist(salt):
                break
        refused = self.refusal(salt)
        if refused:
            raise RefusedSession(f"{what} is refused: its session was {refused}")
        raise CorruptData(f"{what} is corrupt or was tampered with ({error})")

    def refusal(self, salt: bytes) -> str:
        """Why session `salt`'s key was refused (its writer's host key revoked before it), or ""."""
        return self.resolver.refusals.get(salt, "") if self.resolver is not None else ""

    def open_named(self, aad: bytes, raw: bytes, name: str, what: str) -> bytes:
        """The plaintext of a content-addressed sealed object (an index file, a recovery point, a journal
        entry: its name is the BLAKE3 of its bytes, or it is re-sealed): CorruptData naming `what` unless
        `raw` matches `name` and opens."""
        if raw.startswith(fmt.RESEALED):
            return self.open_resealed(aad, resealed_body(raw), name, what)
        if core.blake3(raw).hex() != name:
            raise CorruptData(f"{what}: its content does not match its name (corrupt or tampered with)")
        return self.unseal(aad, raw, what)

    def reseal(self, aad: bytes, plain: bytes, name: str) -> bytes:
        """Object `name` (whose plaintext is `plain`, sealed under `aad`) re-sealed by this session, without
        the fmt.RESEALED magic (a journal entry puts its prefix between)."""
        return self.seal(resealed_aad(aad, name), plain)

    def open_resealed(self, aad: bytes, sealed: bytes, name: str, what: str) -> bytes:
        """The plaintext of re-sealed object `name` (its bytes after fmt.RESEALED and any prefix): CorruptData
        unless an admin session's key opens it under its name (a host's session key is never tried)."""
        salt = bytes(sealed[2:18])
        for _ in range(2):
            key = self._admin_key(salt)
            if key is not None:
                try:
                    return core.open_blob(key, resealed_aad(aad, name), sealed, 1 << 30)
                except core.AuthenticationError:
                    break
                except (core.DecompressError, ValueError) as e:
                    raise CorruptData(f"{what} is corrupt or was tampered with ({e})") from None
            if self.resolver is None or len(sealed) < 18 or not self.resolver.relist(salt):
                break
        raise CorruptData(f"{what} is corrupt or was tampered with (re-sealed, but no admin session's key "
                          "opens it under its name)")

    def _admin_key(self, salt: bytes) -> Optional[bytes]:
        """The data key of session `salt` if it is an admin's session (this one, when this is the admin)."""
        if salt == self._session.salt and self.master is not None:
            return self.data_key
        opened = self.resolver.opened(salt) if self.resolver is not None else None
        return opened.dk if opened is not None and opened.keyid == ADMIN_KEYID else None
