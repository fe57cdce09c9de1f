"""Sealing for one writing session: every object a vault stores encrypted goes through a Sealer (a random
per-session subkey salt and a nonce counter, see docs/vault-format.md §2). Shared by the blob store and the
recovery-point store, so one process never runs two sessions under one key by accident."""
from __future__ import annotations

from .. import core
from ..errors import CorruptData
from .keys import MasterKeys


class Sealer:
    def __init__(self, master: MasterKeys, level: int) -> None:
        self.master = master
        self.level = level
        self.session = core.SealSession(master.enc_key)

    def seal(self, aad: bytes, data: bytes) -> bytes:
        return self.session.seal(aad, data, self.level)

    def unseal(self, aad: bytes, blob: bytes, what: str, max_size: int = 1 << 30) -> bytes:
        """The plaintext of a sealed object; CorruptData (naming `what`) if it fails authentication."""
        try:
            return core.open_blob(self.master.enc_key, aad, blob, max_size)
        except (core.AuthenticationError, core.DecompressError, ValueError) as e:
            raise CorruptData(f"{what} is corrupt or was tampered with ({e})") from None

    def open_named(self, aad: bytes, raw: bytes, name: str, what: str) -> bytes:
        """The plaintext of a content-addressed sealed object (an index file, a recovery point, a journal
        entry: its name is the BLAKE3 of its bytes): CorruptData naming `what` unless `raw` matches `name`
        and opens."""
        if core.blake3(raw).hex() != name:
            raise CorruptData(f"{what}: its content does not match its name (corrupt or tampered with)")
        return self.unseal(aad, raw, what)
