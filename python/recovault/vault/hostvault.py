"""Host keys on a vault (docs/vault-format.md §3): the admin's side (`upgrade_to_v3`, `add_host_key`) and
the host's (`open_host`, `HostVault`, `HostCache`).

A `HostVault` is a Vault opened with a host key file: it can add backups (packs, index files, trees, a
recovery point and its journal entry, each under its session's own data key) and deduplicate against the
index (under index_key), and nothing else: every operation that reads or deletes what the vault holds
raises `HostKeyOnly`. Its incremental backups compare with its own last recovery point and trees, kept in
its agent cache sealed under a key derived from its own key material (`HostCache`): a lost cache means a
full read, still deduplicated by chunk ID.
"""
from __future__ import annotations

import json
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Tuple

from .. import core, jsondoc, timefmt
from ..errors import CorruptData, HostKeyOnly, HostKeyRevoked, ObjectMissing, UsageError
from ..storage import Storage
from . import format as fmt
from .blobstore import EventSink, no_events
from .cache import private_dir, read_private, write_private
from .hostkeys import (AdminKeys, HostKeyFile, HostMaterial, Keyring, new_host_material, read_keyring, registered,
                       store_keyring)
from .immutability import vault_lock_days
from .journal import ENTRY_VERSION_V3, POLICY_OP
from .keys import KdfParams
from .records import Node, RecoveryPoint
from .repo import ConfigEnvelope, Settings, Vault
from .tree import decode_tree, encode_tree

__all__ = ["HOST_KEY_ONLY", "HostCache", "HostVault", "add_host_key", "open_host", "upgrade_to_v3"]

HOST_KEY_ONLY = "this is a host key: it can add backups only"
AAD_HOST_CACHE = b"recovault/v3/host-cache"
_LEN = struct.Struct("<I")


# ---- the admin's side --------------------------------------------------------------------------------

def upgrade_to_v3(vault: Vault) -> bool:
    """Make `vault` (opened with an admin key) format 3; False if it is already. Under the prune lease, in
    an order a kill -9 anywhere leaves valid (each step idempotent, the config last): the keyring, the index
    rewritten under index_key (prune's compaction), one version 3 journal entry naming the heads (hosts find
    the heads from version 3 entries alone), then the config with version 3."""
    from ..jobs.prune import compact_index, read_index
    from .coordination import Coordinator, LeaseHolder
    vault.require_admin()
    if vault.format_version >= fmt.HOST_KEY_FORMAT:
        return False
    vault.prepare_write()  # a v1 vault becomes v2 first
    admin = AdminKeys.derive(vault.master)  # type: ignore[arg-type]
    with LeaseHolder(Coordinator(vault.storage, vault.sealer)):
        if read_keyring(vault.storage, admin.signing_public, vault.id) is None:
            store_keyring(vault.storage, Keyring(1, vault.id, admin.box_public(), admin.signing_public),
                          admin.signing)
        config = ConfigEnvelope(fmt.HOST_KEY_FORMAT, vault.id, vault.config.created or timefmt.now())
        vault.config = config  # written last (below); from here on this process seals as format 3 does
        vault._use_sealer(vault._make_sealer())
        vault.journal.entry_version = ENTRY_VERSION_V3
        compact_index(vault, read_index(vault), set())
        vault.journal.refresh()
        if vault.journal.entries or vault.journal.damaged:
            vault.journal.append(POLICY_OP, "", timefmt.now(), policy=vault.journal.policy())
        vault._write_config(config)
    vault.on_event("notice", {"message": "upgraded the vault from format version 2 to 3 (host keys): index files "
                              "rewritten for hosts; recovault versions that read only formats 1 and 2 can no "
                              "longer open it"})
    return True


def add_host_key(vault: Vault, host: str, passphrase: str,
                 kdf: Optional[KdfParams] = None) -> Tuple[HostMaterial, bytes]:
    """Register a new host key for `host` in the keyring (upgrading the vault to format 3 first) and return
    its material and its key file's bytes, sealed under `passphrase` (the caller writes the file)."""
    vault.require_admin()
    if not host or any(ch in host for ch in "\n\r\0"):
        raise UsageError("--host: give the host's name")
    upgrade_to_v3(vault)
    admin = AdminKeys.derive(vault.master)  # type: ignore[arg-type]
    ring = read_keyring(vault.storage, admin.signing_public, vault.id)
    if ring is None:
        raise CorruptData(f"the keyring of the vault at {vault.storage.url} is missing or does not verify")
    admin = admin.with_generations(vault.storage, ring, vault.master.mac_key)  # type: ignore[union-attr]
    material, entry = new_host_material(vault.id, host, vault.master, admin,  # type: ignore[arg-type]
                                        vault.settings.to_dict())
    data = HostKeyFile.encode(material, passphrase, kdf)  # a weak passphrase fails before anything is stored
    ring = ring.with_host(entry)
    if vault.storage.can_lock_objects():  # the lock period hosts follow (immutability.publish_lock_days)
        ring = replace(ring, lock_days=vault_lock_days(vault))
    store_keyring(vault.storage, ring, admin.signing)
    return material, data


def host_keys(vault: Vault) -> Keyring:
    """The keyring as the admin verifies it (the host keys registered)."""
    vault.require_admin()
    admin = AdminKeys.derive(vault.master)  # type: ignore[arg-type]
    return read_keyring(vault.storage, admin.signing_public, vault.id) or Keyring(
        0, vault.id, admin.box_public(), admin.signing_public)


# ---- the host's side ---------------------------------------------------------------------------------

def open_host(storage: Storage, key_file: str, passphrase: str, *, cache_dir: Optional[str] = None,
              on_event: EventSink = no_events, connections: int = 0) -> "HostVault":
    """Open the vault at `storage` with the host key file `key_file`. UsageError for a key file of another
    vault (before the passphrase is used), a vault not of format 3, or a key the keyring does not list."""
    config = ConfigEnvelope.read(storage)
    raw = HostKeyFile.read(key_file)
    claimed = _claimed_vault(raw)
    if claimed is not None and claimed != config.vault_id:
        raise UsageError(f"key file {key_file} is for another vault ({claimed[:8]}), not the vault at "
                         f"{storage.url} ({config.vault_id[:8]})")
    material = HostKeyFile.open(raw, passphrase, key_file)
    if material.vault_id != config.vault_id:
        raise UsageError(f"key file {key_file} is for another vault ({material.vault_id[:8]}), not the vault at "
                         f"{storage.url} ({config.vault_id[:8]})")
    if config.version < fmt.HOST_KEY_FORMAT:
        raise UsageError(f"the vault at {storage.url} has format version {config.version}, which has no host "
                         "keys: was it replaced by an older copy?")
    ring = read_keyring(storage, material.admin_public, config.vault_id)
    if ring is None or not registered(ring, material.keyid):
        raise UsageError(f"host key {material.keyid[:12]} of key file {key_file} is not in the vault's keyring")
    entry = ring.host(material.keyid)
    if entry is not None and entry.revoked:
        raise HostKeyRevoked(f"this host key was revoked (key file {key_file}, host key {material.keyid[:12]}, "
                             f"revoked {entry.revoked}): ask the vault's admin for a new one")
    # Its sessions seal to the newest generation of the keyring it verified (a key rotation since the key
    # file was made needs no new key file).
    material = replace(material, gen=ring.newest, box_public=ring.box[ring.newest])
    return HostVault(storage, None, material.keyid, config.vault_id, Settings.from_dict(material.settings),
                     cache_dir, on_event, config, connections, host=material)


def _claimed_vault(raw: bytes) -> Optional[str]:
    try:
        doc = jsondoc.parse(raw)
    except ValueError:
        return None
    vault = doc.get("vault") if isinstance(doc, dict) else None
    return vault if isinstance(vault, str) else None


class CachedSource(NamedTuple):
    """What a host keeps of one source (host and paths): its last points (the last full one too), and
    every tree they reach."""
    points: List[RecoveryPoint]
    trees: Dict[bytes, bytes]


class HostCache:
    """A host's own record of its last backups, one file per source in `<cache>/<vault id>/host-<keyid>/`
    (the name: a keyed hash of the host and paths), sealed under the host's cache key: `u32 length, JSON
    {"points": [...]}, then per tree its 32-byte id, u32 length and plaintext`, as one sealed blob."""

    def __init__(self, cache_dir: Optional[str], vault_id: str, material: HostMaterial) -> None:
        self.key = material.cache_key
        self.dir = Path(cache_dir) / vault_id / f"host-{material.keyid}" if cache_dir else None
        self.ok = self.dir is not None and all(private_dir(p) for p in (self.dir.parent.parent, self.dir.parent,
                                                                         self.dir))

    def _path(self, host: str, paths: Iterable[str]) -> Optional[Path]:
        if not self.ok:
            return None
        return self.dir / core.blake3(json.dumps([host, sorted(paths)]).encode(), self.key).hex()  # type: ignore

    def load(self, host: str, paths: List[str]) -> CachedSource:
        path = self._path(host, paths)
        raw = read_private(path) if path is not None else None
        if not raw:
            return CachedSource([], {})
        try:
            plain = core.open_blob(self.key, AAD_HOST_CACHE, raw)
            (n,) = _LEN.unpack_from(plain, 0)
            doc = jsondoc.parse(plain[_LEN.size:_LEN.size + n])
            points = [RecoveryPoint.from_json(p, p["id"]) for p in doc["points"]]
            trees, pos = {}, _LEN.size + n
            while pos < len(plain):
                tid = bytes(plain[pos:pos + 32])
                (size,) = _LEN.unpack_from(plain, pos + 32)
                trees[tid] = bytes(plain[pos + 36:pos + 36 + size])
                pos += 36 + size
        except (core.AuthenticationError, core.DecompressError, ValueError, KeyError, TypeError, struct.error):
            return CachedSource([], {})  # damaged or another key's: a full read (still deduplicated by ID)
        return CachedSource(points, trees)

    def save(self, host: str, paths: List[str], source: CachedSource) -> None:
        path = self._path(host, paths)
        if path is None:
            return
        doc = json.dumps({"points": [p.to_json(with_id=True) for p in source.points]}).encode()
        parts = [_LEN.pack(len(doc)), doc]
        for tid, data in source.trees.items():
            parts += [tid, _LEN.pack(len(data)), data]
        write_private(path, core.SealSession(self.key).seal(AAD_HOST_CACHE, b"".join(parts)))


class HostVault(Vault):
    """A vault opened with a host key: backups only (see the module docstring)."""

    host_key: HostMaterial

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.host_cache = HostCache(self.cache_dir, self.id, self.host_key)
        self._trees: Dict[bytes, bytes] = {}  # tree id -> plaintext: this run's and the cached ones

    def require_admin(self) -> None:
        raise HostKeyOnly(HOST_KEY_ONLY)

    # ---- what a backup uses ---------------------------------------------------------------------------
    def backup_bases(self, host: str, paths: List[str], on_corrupt: Any = None) -> List[RecoveryPoint]:
        """The points this host's cache holds for (host, paths), oldest first, their trees made readable."""
        source = self.host_cache.load(host, paths)
        self._trees.update(source.trees)
        return sorted(source.points, key=lambda p: p.sort_key)

    def save_tree(self, nodes: List[Node]) -> bytes:
        tree_id = super().save_tree(nodes)
        self._trees[tree_id] = encode_tree(nodes)
        return tree_id

    def load_nodes(self, tree_id: bytes) -> List[Node]:
        data = self._trees.get(tree_id)
        if data is None:
            raise ObjectMissing(f"tree {tree_id.hex()[:16]} is not in this host's cache (a host key cannot read "
                                "the vault's trees)")
        return decode_tree(data, f"tree {tree_id.hex()[:16]}")

    def save_snapshot(self, point: RecoveryPoint, check_stored: Any = None, sealed: Optional[bytes] = None) -> str:
        sid = super().save_snapshot(point, check_stored, sealed)
        self._remember(point)
        return sid

    def _remember(self, point: RecoveryPoint) -> None:
        """Keep the new point (and the last full one before it) and every tree they reach in the cache."""
        source = self.host_cache.load(point.host, point.paths)
        fulls = [p for p in source.points if p.mode == "full" and not p.partial and p.id != point.id]
        keep = fulls[-1:] + [point]
        trees: Dict[bytes, bytes] = {}
        for p in keep:
            self._reach(bytes.fromhex(p.tree), trees)
        self.host_cache.save(point.host, point.paths, CachedSource(keep, trees))

    def _reach(self, root: bytes, out: Dict[bytes, bytes]) -> None:
        todo = [root]
        while todo:
            tid = todo.pop()
            if tid in out or tid not in self._trees:
                continue
            out[tid] = self._trees[tid]
            todo.extend(bytes.fromhex(n.subtree) for n in decode_tree(out[tid], "tree") if n.subtree)

    # ---- refused: everything that reads or deletes what the vault holds ---------------------------------
    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise HostKeyOnly(HOST_KEY_ONLY)

    snapshots = find_snapshot = load_snapshot = deleted_snapshots = retained_snapshots = _refuse
    purge_expired = forget = undelete = delete_snapshot = prune = set_policy = upgrade = _refuse
    read_blob = open_sealed = read_pack_header = find_node = _refuse

    @property
    def policy(self) -> Any:
        raise HostKeyOnly(HOST_KEY_ONLY)
