"""Key rotation and host key revocation, the admin's side (docs/vault-format.md §3.1).

- `rotate`: a new X25519 generation (a random key pair) that every session seals its data key to from then
  on. Its private key is stored in `keygen/<public key hex>`, sealed under a key every admin key file's
  master derives (HKDF of `mac_key`), so no key file is rewritten; then a keyring with `seq + 1` lists it.
  Hosts take the newest generation from the keyring they verify, so they need no new key file.
- `revoke_host`: a keyring marking a host key revoked, with the time and the sessions of that key stored
  before it (accepted); the admin refuses that key's later sessions, and a host opening with it is refused.

Both write the keyring under the prune lease (one admin change at a time), each step idempotent: a kill -9
between the `keygen/` object and the keyring leaves an unused object and the keyring as it was.
Library code: nothing here prints.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Collection, List, NamedTuple, Optional, Tuple

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .. import jsondoc, timefmt
from ..errors import CorruptData, NotFound, ObjectMissing, RefusedSession, UsageError
from ..storage.base import put_or_withdraw
from . import format as fmt
from .blobstore import pack_id_of
from .coordination import Coordinator, LeaseHolder
from .hostkeys import (ADMIN_KEYID, KEYGEN, SESSION_KEYS, AdminKeys, HostEntry, Keyring, _raw_public,
                       generation_name, read_keyring, seal_generation, session_salt, store_keyring,
                       verify_signature)
from .hostvault import upgrade_to_v3
from .repo import Vault

__all__ = ["Rotation", "current_ring", "refusal_since", "refused_packs", "retire_generations", "revoke_host",
           "rotate"]

#: Storage clocks and the admin's differ: a pack of a session refused by a revocation may carry an mtime up to
#: this long before the revocation's time.
REVOCATION_SLACK = 3600.0


class Rotation(NamedTuple):
    """A rotation done: the new generation, and the keyring (name, seq) that lists it."""

    gen: int
    keyring: str
    seq: int


def current_ring(vault: Vault, admin: AdminKeys) -> Keyring:
    ring = read_keyring(vault.storage, admin.signing_public, vault.id)
    if ring is None:
        raise CorruptData(f"the keyring of the vault at {vault.storage.url} is missing or does not verify")
    return ring


def _changed(vault: Vault) -> None:
    """This process reads the keyring again (it just changed)."""
    if vault.sealer.resolver is not None:
        vault.sealer.resolver.forget()


def rotate(vault: Vault, rewriting: bool = False) -> Rotation:
    """Make a new X25519 generation the one sessions seal to (upgrading the vault to format 3 first).
    `rewriting`: the keyring also names it as the generation a `key rotate --rewrite` moves everything to."""
    vault.require_admin()
    upgrade_to_v3(vault)
    admin = AdminKeys.derive(vault.master)  # type: ignore[arg-type]
    with LeaseHolder(Coordinator(vault.storage, vault.sealer)):
        ring = current_ring(vault, admin)
        private = X25519PrivateKey.generate()
        name, raw = seal_generation(vault.master.mac_key, private)  # type: ignore[union-attr]
        put_or_withdraw(vault.storage, name, raw)
        gen = ring.newest + 1
        new = ring.next(box={**ring.box, gen: _raw_public(private)}, rewriting=gen if rewriting else 0)
        stored = store_keyring(vault.storage, new, admin.signing)
    _changed(vault)
    return Rotation(gen, stored, new.seq)


def _host(vault: Vault, ring: Keyring, ref: str) -> HostEntry:
    """The host key `ref` (its id or a unique prefix) names; UsageError for the admin, NotFound for none."""
    if ref == ADMIN_KEYID or any(k == ref or (len(ref) >= 4 and k.startswith(ref)) for k in vault.keys.keyids()):
        raise UsageError(f"{ref} is an admin key: only host keys are revoked (remove an admin key file with "
                         "'recovault key remove', and make the data key new with 'recovault key rotate')")
    hits = [h for h in ring.hosts if ref and h.keyid.startswith(ref)]
    if not hits:
        raise NotFound(f"no host key matches '{ref}' ('recovault key list' shows them)")
    if len(hits) > 1:
        raise UsageError(f"'{ref}' matches {len(hits)} host keys; give more characters")
    return hits[0]


def accepted_sessions(vault: Vault, entry: HostEntry) -> Tuple[str, ...]:
    """The sessions (salts, hex) host key `entry` has stored a session key object for, signed by it. Each
    object is read from the agent cache when the admin's resolver cached it (the signature is checked all
    the same), so a revocation reads from the vault only the session keys this machine has not seen."""
    cache = vault.sealer.resolver.cache if vault.sealer.resolver is not None else None
    out = []
    for name in vault.storage.list(SESSION_KEYS):
        try:
            raw = cache.get(name) if cache is not None else None
            doc = jsondoc.parse(raw if raw is not None else vault.storage.get(name))
        except (ObjectMissing, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("keyid") == entry.keyid and verify_signature(entry.public, doc):
            out.append(name[len(SESSION_KEYS):])
    return tuple(sorted(out))


def revoke_host(vault: Vault, ref: str) -> Tuple[HostEntry, bool]:
    """Revoke host key `ref`: a new keyring marks it revoked now, with the sessions it stored until now.
    Returns (its entry, whether this call revoked it: False if it was already)."""
    vault.require_admin()
    admin = AdminKeys.derive(vault.master)  # type: ignore[arg-type]
    if vault.format_version < 3:
        _host(vault, Keyring(0, vault.id, admin.box_public(), admin.signing_public), ref)  # says why
    with LeaseHolder(Coordinator(vault.storage, vault.sealer)):
        ring = current_ring(vault, admin)
        entry = _host(vault, ring, ref)
        if entry.revoked:
            return entry, False
        entry = replace(entry, revoked=timefmt.now(), accepted=accepted_sessions(vault, entry))
        hosts = tuple(entry if h.keyid == entry.keyid else h for h in ring.hosts)
        store_keyring(vault.storage, ring.next(hosts=hosts), admin.signing)
    _changed(vault)
    return entry, True


def retire_generations(vault: Vault, admin: AdminKeys, gen: int,
                       between: Callable[[], None] = lambda: None) -> Tuple[int, int]:
    """The last step of `key rotate --rewrite`, once nothing stored is sealed under a session of another
    generation than `gen` (the caller holds the prune lease and has made sure): delete every session key
    object of another generation (a refused one, a revoked host's, stays: it is why its data is refused),
    then the `keygen/` objects of the other generations, then store a keyring that lists `gen` alone and no
    rewrite. Each step idempotent: a kill -9 between them is finished by the next run (the keyring still
    names the rewrite). `between` runs after the session keys are gone (the kill -9 tests). Returns (session
    key objects deleted, generations retired)."""
    resolver = vault.sealer.resolver
    assert resolver is not None  # an admin's v3 sealer
    resolver.forget()  # list session keys afresh
    deleted = 0
    for name in vault.storage.list(SESSION_KEYS):
        salt = session_salt(name)
        opened = resolver.opened(salt) if salt is not None else None
        if opened is not None and opened.gen != gen:
            vault.storage.delete(name)
            deleted += 1
    between()
    ring = current_ring(vault, admin)
    for name in vault.storage.list(KEYGEN):
        if name != generation_name(ring.box[gen]):
            vault.storage.delete(name)
    retired = len(ring.box) - 1
    if retired or ring.rewriting:
        store_keyring(vault.storage, ring.next(box={gen: ring.box[gen]}, rewriting=0), admin.signing)
    _changed(vault)
    return deleted, retired


def refusal_since(vault: Vault) -> Optional[float]:
    """When a revoked host key has stored a session after its revocation (a session key object stored since
    the earliest revocation, less REVOCATION_SLACK, is refused): that time (the storage's clock), from which
    on its packs are to be looked for; else None. Costs nothing while no host key is revoked; then it opens
    only the session key objects stored since (the agent cache keeps them)."""
    resolver = vault.sealer.resolver
    if resolver is None or vault.host_key is not None or vault.format_version < fmt.HOST_KEY_FORMAT:
        return None
    revoked = [timefmt.parse_time(h.revoked).timestamp() for h in resolver.ring().hosts if h.revoked]
    if not revoked:
        return None
    since = min(revoked) - REVOCATION_SLACK
    salts = (session_salt(info.name) for info in vault.storage.list_info(SESSION_KEYS) if info.mtime >= since)
    refused = any(s is not None and resolver.opened(s) is None and s in resolver.refusals for s in salts)
    return since if refused else None


def refused_packs(vault: Vault, indexed: Collection[bytes], since: float) -> List[bytes]:
    """The packs of `indexed` stored since `since` (refusal_since) whose header a refused session sealed:
    a revoked host key's, not the vault's, yet other hosts deduplicate against what the index says they
    hold."""
    out = []
    for info in vault.storage.list_info(fmt.DATA):
        pack = pack_id_of(info.name)
        if pack is None or pack not in indexed or info.mtime < since:
            continue
        try:
            vault.blobs.read_pack_header(info.name, info.size)
        except RefusedSession:
            out.append(pack)
        except (CorruptData, ObjectMissing):
            continue  # damaged or gone: check's business, not a refusal
    return out
