"""The vault: configuration and keys, composing the blob store (packs, index, cache: blobstore.py) and the
recovery-point store (points.py), with trees on top of blobs.

Write order guarantees an interrupted job leaves the vault valid: a pack is stored (atomically) before an
index names it, an index before a recovery point depends on it. Packs no index names are garbage that a
later prune removes; nothing ever points at a half-written object.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Sequence

from .. import core, jsondoc, timefmt
from ..errors import AccessDenied, CorruptData, ObjectMissing, UsageError, VaultExists, VaultNotFound
from ..paths import split_path
from ..storage import Storage
from . import envelope
from . import format as fmt
from .blobstore import BlobStore, EventSink, Location, Locations, no_events, pack_name
from .cache_hygiene import mark_seen
from . import immutability, lifecycle
from .journal import DEFAULT_SOFT_DELETE_DAYS, Journal, VaultPolicy
from ..selection import PointFilter
from .lifecycle import DeletedPoint, ForgetGroup
from .keys import KdfParams, KeyStore, MasterKeys
from .hostkeys import AdminKeys, HostMaterial, SessionKeys, seal_session_key, session_key_name
from .journal import ENTRY_VERSION_V3, HostJournal
from ..storage.base import put_or_withdraw
from .points import OnCorrupt, PointStore
from .records import Node, RecoveryPoint
from ..retention import Policy
from .sealing import Sealer
from .tree import decode_tree, encode_tree, node_map

__all__ = ["DEFAULT_PACK_SIZE", "ConfigEnvelope", "Location", "Locations", "Settings", "UpgradeReport", "Vault"]

DEFAULT_PACK_SIZE = 16 << 20  # 1 PUT per 16 MiB for object stores; ~3 packs in memory at most
MAX_BLOB = 64 << 20


@dataclass
class Settings:
    """Vault-wide parameters, fixed at creation and stored sealed in the config object."""

    # 256K/512K/2M: measured on real data (docs/performance.md): each edit re-stores ~1.2 x avg, so half
    # of restic's 1 MiB average halves what an edit costs, for ~5% less compression and 2x the chunk count.
    min_size: int = 256 << 10
    avg_size: int = 512 << 10
    max_size: int = 2 << 20
    normalization: int = 2
    id_algo: str = "blake3"
    level: int = 3
    pack_size: int = DEFAULT_PACK_SIZE

    def to_dict(self) -> Dict[str, Any]:
        return {
            "chunker": {"algorithm": "fastcdc-gear-keyed", "min": self.min_size, "avg": self.avg_size,
                        "max": self.max_size, "normalization": self.normalization},
            "id": self.id_algo,
            "compression": {"codec": "zstd", "level": self.level},
            "pack_size": self.pack_size,
        }

    def problem(self) -> str:
        """What makes these settings unusable (not integers, sizes the chunker refuses, a pack size out of
        range), or "". Checked at init (bad input) and at open (a config that says so is corrupt)."""
        numbers = (self.min_size, self.avg_size, self.max_size, self.normalization, self.level, self.pack_size)
        if not all(type(v) is int for v in numbers):
            return "a size or level is not an integer"
        if not -(1 << 31) <= self.level < 1 << 31:  # zstd takes an int (and clamps it to its own range)
            return f"compression level {self.level} is out of range"
        try:
            core.Chunker(bytes(32), self.min_size, self.avg_size, self.max_size, self.normalization)
        except (ValueError, TypeError, OverflowError) as e:
            return str(e)
        if not 0 < self.pack_size <= fmt.MAX_PACK_SIZE // 2:
            return f"pack size {self.pack_size} is out of range"
        return ""

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Settings":
        c = d["chunker"]
        if c.get("algorithm") != "fastcdc-gear-keyed" or d["id"] not in ("blake3", "hmac-sha256"):
            raise CorruptData("vault config names an algorithm this recovault does not know")
        return cls(c["min"], c["avg"], c["max"], c["normalization"], d["id"], d["compression"]["level"],
                   d["pack_size"])


@dataclass(frozen=True)
class ConfigEnvelope:
    """The config object's plaintext fields (docs/vault-format.md §4): the vault format version, the vault
    id, when it was created, and the sealed settings (bound to the other fields: envelope.py)."""

    version: int
    vault_id: str
    created: str
    sealed: bytes = b""
    doc: Dict[str, Any] = field(default_factory=dict, compare=False)  # the object's JSON as read (every field)

    @classmethod
    def read(cls, storage: Storage) -> "ConfigEnvelope":
        """The config of the vault at `storage`: VaultNotFound without one, CorruptData if it does not parse,
        UsageError if its format version is not one this recovault reads (a newer recovault wrote it)."""
        try:
            raw = storage.get(fmt.CONFIG)
        except ObjectMissing:
            raise VaultNotFound(f"no vault at {storage.url} (no config object; run 'recovault init' first)") from None
        try:
            doc = jsondoc.parse(raw)
            version, vault_id, sealed = doc["recovault"], doc["id"], bytes.fromhex(doc["settings"])
            created = doc.get("created", "")
            if type(version) is not int or not isinstance(vault_id, str) or not isinstance(created, str):
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CorruptData(f"the vault config at {storage.url} is corrupt") from None
        if version not in fmt.READABLE_VAULT_FORMATS:
            readable = " and ".join(map(str, fmt.READABLE_VAULT_FORMATS))
            newer = "; it was written by a newer recovault: upgrade recovault" if version > fmt.VAULT_FORMAT else ""
            raise UsageError(f"the vault at {storage.url} has format version {version}, which this recovault "
                             f"does not support (it reads versions {readable}){newer}")
        return cls(version, vault_id, created, sealed, doc)

    def _doc(self) -> Dict[str, Any]:
        return {"recovault": self.version, "id": self.vault_id, "created": self.created}

    def settings(self, master: MasterKeys, where: str) -> Settings:
        """Unseal and check the settings (CorruptData if they fail, or if the plaintext fields were edited)."""
        try:
            opened = envelope.verify(jsondoc.parse(core.open_blob(
                master.enc_key, fmt.AAD_CONFIG + self.vault_id.encode(), self.sealed)), self.doc, where)
            settings = Settings.from_dict(opened.settings)
        except (core.AuthenticationError, core.DecompressError, ValueError, KeyError, TypeError, AttributeError):
            raise CorruptData(f"the vault config at {where} is corrupt or was tampered with") from None
        problem = settings.problem()
        if problem:
            raise CorruptData(f"the vault config at {where} is corrupt: its settings are unusable ({problem})")
        if self.version >= 2 and not opened.authenticated:
            # every v2 config binds its envelope: one without is an old (v1) config given a new version
            raise CorruptData(f"the vault config at {where} claims format version {self.version} but does not "
                              "authenticate it (tampered with or damaged)")
        return settings

    def encode(self, master: MasterKeys, settings: Settings) -> bytes:
        """The config object's bytes: these fields, with `settings` sealed and bound to them."""
        doc = self._doc()
        sealed = core.SealSession(master.enc_key).seal(fmt.AAD_CONFIG + self.vault_id.encode(),
                                                      json.dumps(envelope.bind(settings.to_dict(), doc)).encode())
        return json.dumps({**doc, "settings": sealed.hex()}, indent=1).encode() + b"\n"


@dataclass
class UpgradeReport:
    """What `Vault.upgrade` did: the format versions before and after, the recovery points it logged in the
    journal (ids), and whether it rewrote the config (False: the vault was at the current version already)."""

    from_version: int
    to_version: int
    adopted: List[str] = field(default_factory=list)
    config_rewritten: bool = False

    def describe(self) -> str:
        if not self.config_rewritten:
            return f"the vault is at format version {self.to_version} already: nothing to do"
        return (f"upgraded the vault from format version {self.from_version} to {self.to_version}: logged "
                f"{len(self.adopted)} recovery point(s) with no journal entry, rewrote the config; recovault "
                f"versions that read only format {self.from_version} can no longer open it")



def _create_config(storage: Storage, data: bytes) -> bool:
    """Store a new vault's config only if none is there (two inits of one location at once: one wins, the
    other is told); a storage without conditional creates gets a plain put after the existence check."""
    try:
        return storage.put_if_absent(fmt.CONFIG, data)
    except NotImplementedError:
        storage.put(fmt.CONFIG, data)
        return True

class Vault:
    """An unlocked vault. Create with :meth:`create` or :meth:`open`; close (or use as a context manager)
    to flush pending packs and indexes.

    `blobs` (BlobStore) holds packs and the index, `points` (PointStore) the recovery points; the methods
    below are the vault's public face over both. `on_event(kind, info)` hears what the vault notices on the
    way (kind "problem": a damaged index skipped, a damaged recovery point left out of a search); library
    code never prints. Opening reads the config and the key only: the index is loaded by the first use of a
    blob (see BlobStore), so listing recovery points or managing keys never reads index/."""

    def __init__(self, storage: Storage, master: Optional[MasterKeys], keyid: str, vault_id: str,
                 settings: Settings, cache_dir: Optional[str] = None, on_event: EventSink = no_events,
                 config: Optional["ConfigEnvelope"] = None, connections: int = 0,
                 host: Optional[HostMaterial] = None) -> None:
        self.storage = storage
        self.config = config or ConfigEnvelope(fmt.VAULT_FORMAT, vault_id, timefmt.now())
        self.master = master
        self.host_key = host  # a host key's material (HostVault), None for the admin
        self.keyid = keyid
        self.id = vault_id
        self.settings = settings
        self.on_event = on_event
        self.cache_dir = cache_dir
        self.keys = KeyStore(storage)
        keys = host if host is not None else master
        self.id_key, self.chunker_seed = keys.id_key, keys.chunker_seed  # type: ignore[union-attr]
        self.sealer = self._make_sealer()
        self.blobs = BlobStore(storage, self.sealer, pack_size=settings.pack_size, cache_dir=cache_dir,
                               vault_id=vault_id, on_event=on_event, connections=connections)
        self.points = PointStore(storage, self.sealer, cache_dir, vault_id)
        self.journal = (HostJournal if host is not None else Journal)(storage, self.sealer, cache_dir, vault_id)
        if self.format_version >= fmt.HOST_KEY_FORMAT:
            self.journal.entry_version = ENTRY_VERSION_V3
        if cache_dir:  # the cache's record of this vault's location and last use (cache_hygiene)
            mark_seen(cache_dir, vault_id, storage.url)
        # Only for chunk_id, which never consults a known-ID set: an empty one keeps the index unloaded.
        self._id_pipeline = self._pipeline(self.sealer.id_session, workers=1, known=core.IdSet())
        self.lock_days: Optional[int] = None  # what this process puts is locked this long (immutability.py)

    def _make_sealer(self) -> Sealer:
        """Format 1-2: everything under the master's enc_key. Format 3: this session's own random data key,
        stored sealed to the vault's public key before its first sealed object; index files and plans under
        index_key; the admin resolves other sessions' keys by salt (docs/vault-format.md §3)."""
        resolver = None
        if self.host_key is not None:
            writer, index_key = self.host_key.writer(), self.host_key.index_key
        else:
            admin = AdminKeys.derive(self.master)  # type: ignore[arg-type]
            index_key = admin.index_key
            resolver = SessionKeys(self.storage, admin, self.id, self.cache_dir, self.master.mac_key)  # type: ignore[union-attr]
            if self.format_version < fmt.HOST_KEY_FORMAT:  # seals as format 2 does; reads what an upgrade wrote
                return Sealer(self.master, self.settings.level, index_key=index_key, resolver=resolver, v3=False)

        def register(salt: bytes, data_key: bytes) -> None:  # the admin seals to the keyring's newest generation
            who = writer if resolver is None else resolver.writer()
            put_or_withdraw(self.storage, session_key_name(salt), seal_session_key(salt, data_key, who))
        return Sealer(self.master, self.settings.level, data_key=secrets.token_bytes(32), index_key=index_key,
                      resolver=resolver, register=register)

    def _use_sealer(self, sealer: Sealer) -> None:
        """Seal with `sealer` from now on (the vault was just upgraded to format 3)."""
        self.sealer = self.blobs.sealer = self.points.sealer = self.journal.sealer = sealer

    # ---- creation and unlocking ----------------------------------------------------------------
    @classmethod
    def create(cls, storage: Storage, passphrase: str, *, settings: Optional[Settings] = None,
               kdf: Optional[KdfParams] = None, cache_dir: Optional[str] = None,
               on_event: EventSink = no_events, soft_delete_days: int = DEFAULT_SOFT_DELETE_DAYS,
               master: Optional[MasterKeys] = None) -> "Vault":
        """A new vault. A soft-delete period other than the default is stored as the journal's first entry
        (a policy entry with no prev: it replaces no earlier period, so 0 turns soft delete off at once).
        `master`: another vault's master keys (init --copy-keys-from: the two vaults then share chunk IDs and
        sealed blobs, so a copy between them moves blobs as they are); by default new random ones."""
        initial = VaultPolicy(None, soft_delete_days)  # a bad period fails before anything is written
        if storage.exists(fmt.CONFIG):
            raise VaultExists(f"a vault already exists at {storage.url}")
        settings = settings or Settings()
        # Settings are fixed for the vault's life: refuse bad ones before anything is written (a config the
        # chunker rejects would make the vault impossible to open).
        problem = settings.problem()
        if problem:
            raise UsageError(f"invalid vault settings: {problem}")
        master = master or MasterKeys.generate()
        keys = KeyStore(storage)
        keyid = keys.add(passphrase, master, kdf=kdf)
        config = ConfigEnvelope(fmt.VAULT_FORMAT, secrets.token_hex(16), timefmt.now())
        if not _create_config(storage, config.encode(master, settings)):
            storage.delete(fmt.KEYS + keyid)  # our key opens a master no config uses
            raise VaultExists(f"a vault already exists at {storage.url}")
        vault = cls(storage, master, keyid, config.vault_id, settings, cache_dir, on_event, config)
        if soft_delete_days != DEFAULT_SOFT_DELETE_DAYS:
            vault.set_policy(initial)
        return vault

    @classmethod
    def open(cls, storage: Storage, passphrase: str, *, cache_dir: Optional[str] = None,
             on_event: EventSink = no_events, write: bool = False, connections: int = 0) -> "Vault":
        """Unlock the vault at `storage`. A vault of an older format (v1) opens for reading; with `write`
        (a command that is about to write) it is upgraded first (`prepare_write`). `connections`: requests
        to the storage at once for pack uploads and restore reads (0: blobstore.default_connections)."""
        config = ConfigEnvelope.read(storage)  # before the key: a vault too new is refused without a passphrase
        master, keyid = KeyStore(storage).unlock(passphrase)
        vault = cls(storage, master, keyid, config.vault_id, config.settings(master, storage.url), cache_dir,
                    on_event, config, connections)
        if write:
            vault.prepare_write()
        return vault

    def __enter__(self) -> "Vault":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(flush=exc[0] is None)

    def close(self, flush: bool = True) -> None:
        """Flush and stop. Without flush (after an error or Ctrl-C), queued blobs are dropped, but packs
        already stored still get an index, so the next backup reuses them."""
        self.blobs.close(flush)
        self.storage.close()

    def require_admin(self) -> None:
        """Nothing for the admin; a host key's vault (HostVault) raises HostKeyOnly."""

    def backup_bases(self, host: str, paths: List[str], on_corrupt: Optional[OnCorrupt] = None) -> List[RecoveryPoint]:
        """The recovery points a backup of (host, paths) may compare with, oldest first: every live one (a
        host key's vault: the ones its own cache holds)."""
        return self.snapshots(on_corrupt=on_corrupt)

    # ---- the format version -------------------------------------------------------------------------
    @property
    def format_version(self) -> int:
        """The vault's format version (the config's "recovault" field): 1 or 2 (fmt.VAULT_FORMAT)."""
        return self.config.version

    def upgrade(self) -> UpgradeReport:
        """Upgrade a v1 vault to the current format (docs/vault-format.md §4); nothing if it is current.
        Idempotent, and safe to interrupt: (1) log an "add" journal entry for every recovery point that has
        none (written before the journal), then (2), last, rewrite the config with the new version (one
        atomic put). Stopped before (2), the vault is still v1 and complete; the next upgrade finds those
        points logged and does (2)."""
        old = self.format_version
        if old >= fmt.VAULT_FORMAT:
            return UpgradeReport(old, old)
        damaged: List[str] = []
        names = self.journal.adopt(self.points.list(on_corrupt=damaged.append))
        for msg in damaged:  # unreadable: it cannot be logged (nor restored); check reports it
            self.on_event("problem", {"message": msg})
        adopted = [self.journal.entries[n].snapshot for n in names]
        self._write_config(ConfigEnvelope(fmt.VAULT_FORMAT, self.id, self.config.created or timefmt.now()))
        return UpgradeReport(old, fmt.VAULT_FORMAT, adopted, True)

    def _write_config(self, config: "ConfigEnvelope") -> None:
        """Replace the config object (one atomic put) and use `config` from now on."""
        self.storage.put(fmt.CONFIG, config.encode(self.master, self.settings))
        self.config = config

    def prepare_write(self) -> Optional[UpgradeReport]:
        """Call before writing to the vault: upgrades a vault of an older format first (a v1 writer knows
        nothing of what v2 readers rely on) and says so with a "notice" event ({"message", "upgrade"}).
        Returns the report, or None when the vault was current. On a store that can lock objects, what this
        process puts from then on is locked for the vault's lock period (immutability.py)."""
        self.lock_days = immutability.lock_new_objects(self)  # the policy now in force (it may have changed)
        if self.format_version >= fmt.VAULT_FORMAT:
            return None
        report = self.upgrade()
        self.on_event("notice", {"message": report.describe(), "upgrade": report})
        return report

    # ---- sealing --------------------------------------------------------------------------------
    def pipeline(self, *, workers: int = 0, fixed_block: int = 0, level: Optional[int] = None,
                 compress: str = "auto", known: Optional["core.IdSet"] = None,
                 hashing_only: bool = False) -> "core.Pipeline":
        """A pipeline with this vault's keys and chunker; `known` replaces the vault's set of stored IDs
        (restore's verification passes its own, so that re-reading files stores nothing). `hashing_only`: what
        it seals is never stored (a verification), so a format 3 session key need not be stored for it."""
        session = self.sealer.id_session if hashing_only else self.sealer.session
        return self._pipeline(session, workers=workers, fixed_block=fixed_block, level=level,
                              compress=compress, known=known)

    def _pipeline(self, session: "core.SealSession", *, workers: int = 0, fixed_block: int = 0,
                  level: Optional[int] = None, compress: str = "auto",
                  known: Optional["core.IdSet"] = None) -> "core.Pipeline":
        s = self.settings
        return core.Pipeline(self.id_key, self.chunker_seed,
                             self.known if known is None else known, session,
                             min_size=s.min_size, avg_size=s.avg_size, max_size=s.max_size,
                             normalization=s.normalization, fixed_block=fixed_block, id_algo=s.id_algo,
                             level=s.level if level is None else level, compress=compress, workers=workers,
                             max_in_flight=16 << 20)

    def chunk_id(self, data: bytes) -> bytes:
        return self._id_pipeline.chunk_id(data)

    def seal(self, aad: bytes, data: bytes) -> bytes:
        return self.sealer.seal(aad, data)

    def unseal(self, aad: bytes, blob: bytes, what: str, max_size: int = 1 << 30) -> bytes:
        return self.sealer.unseal(aad, blob, what, max_size)

    # ---- blobs: the blob store's face ------------------------------------------------------------
    @property
    def known(self) -> "core.IdSet":
        return self.blobs.known

    @property
    def locations(self) -> Locations:
        return self.blobs.locations

    @property
    def cache(self):  # the agent cache of index files, or None
        return self.blobs.cache

    def load_index(self) -> int:
        """Load every index file not loaded yet (from the agent cache when it has it). Returns how many."""
        return self.blobs.load_index()

    def has_blob(self, blob_id: bytes) -> bool:
        return self.blobs.has_blob(blob_id)

    def add_sealed(self, blob_type: int, blob_id: bytes, sealed: bytes, raw_length: int) -> None:
        """Queue a sealed blob (from the pipeline) for the current pack of its type."""
        self.blobs.add_sealed(blob_type, blob_id, sealed, raw_length)

    def save_blob(self, blob_type: int, data: bytes) -> bytes:
        """Store plaintext `data` as a blob (deduplicated) and return its id."""
        blob_id = self.chunk_id(data)
        if self.known.add(blob_id):
            self.add_sealed(blob_type, blob_id, self.sealer.session.seal(blob_id, data, self.settings.level),
                            len(data))
        return blob_id

    def write_index(self) -> None:
        self.blobs.write_index()

    def flush(self) -> None:
        """Write out partly filled packs, wait for uploads, then index them (and the packs recovered from
        their headers: a backup flushes before it saves the recovery point that may use their blobs)."""
        self.blobs.flush(index_recovered=True)

    def locate(self, blob_id: bytes) -> Location:
        return self.blobs.locate(blob_id)

    def pack_name(self, pack_id: bytes) -> str:
        return pack_name(pack_id)

    def read_blob(self, blob_id: bytes) -> bytes:
        return self.blobs.read_blob(blob_id)

    def open_sealed(self, blob_id: bytes, raw: bytes, pack: str, raw_length: int) -> bytes:
        return self.blobs.open_sealed(blob_id, raw, pack, raw_length)

    def read_pack_header(self, pack: str) -> List[fmt.BlobEntry]:
        """Decrypt a pack's own header (used by check and to rebuild indexes)."""
        return self.blobs.read_pack_header(pack)

    # ---- trees ------------------------------------------------------------------------------------
    def save_tree(self, nodes: List[Node]) -> bytes:
        """Store the tree holding `nodes` (sorted in place) and return its id."""
        return self.save_blob(fmt.BLOB_TREE, encode_tree(nodes))

    def load_nodes(self, tree_id: bytes) -> List[Node]:
        """The nodes of a tree, in stored order (by raw name)."""
        return decode_tree(self.read_blob(tree_id), f"tree {tree_id.hex()[:16]}")

    def find_node(self, point: RecoveryPoint, path: str) -> Optional[Node]:
        """The tree node at absolute `path` in a recovery point ("/" gives a node for the root), or None."""
        node: Optional[Node] = Node.directory(b"", None, point.tree)
        for part in split_path(path):
            if node is None or node.subtree is None:
                return None
            node = node_map(self.load_nodes(bytes.fromhex(node.subtree))).get(part)
        return node

    # ---- recovery points: the point store's face ------------------------------------------------
    def save_snapshot(self, point: RecoveryPoint, check_stored: Optional[Callable[[], None]] = None,
                      sealed: Optional[bytes] = None) -> str:
        """Store `point` (its id is set) and log it in the journal; returns the id. `check_stored`, if given,
        runs between the two: if it raises, the point's object is deleted (it was never logged, so nothing
        else knows it) and the error goes on. `sealed`: the point's object as a vault with the same keys
        stores it (copy): stored unchanged, under the same id."""
        self.prepare_write()
        sid = point.id = self.points.save(point, sealed)
        if check_stored is not None:
            try:
                check_stored()
            except BaseException:
                try:
                    self.points.delete(sid)
                except AccessDenied:
                    pass  # storage that refuses deletion: it stays, unlogged (docs/vault-format.md §10.4)
                raise
        self.journal.append("add", sid, point.time, point.host)  # after the point: see journal.py
        return sid

    def load_snapshot(self, sid: str) -> RecoveryPoint:
        return self.points.load(sid)

    def snapshots(self, on_corrupt: Optional[OnCorrupt] = None) -> List[RecoveryPoint]:
        """The live recovery points, oldest first (not the soft-deleted ones: see deleted_snapshots). A
        recovery point that is corrupt or unreadable is passed to `on_corrupt(message)` and left out (one
        damaged object must not stop every later backup); without `on_corrupt`, it raises."""
        return lifecycle.live(self, on_corrupt)

    def find_snapshot(self, ref: str, snaps: Optional[List[RecoveryPoint]] = None,
                      on_corrupt: Optional[OnCorrupt] = None) -> RecoveryPoint:
        """A live recovery point by full id, unique prefix, or 'latest'. Damaged recovery points are left out
        of the search and passed to `on_corrupt(message)`, by default reported as a "problem" event."""
        if on_corrupt is None:
            on_corrupt = lambda msg: self.on_event("problem", {"message": msg})  # noqa: E731
        damaged: List[str] = []
        if snaps is None:
            snaps = self.snapshots(on_corrupt=damaged.append)
        for msg in damaged:
            on_corrupt(msg)
        if damaged and (ref == "latest" or not any(s.id.startswith(ref) for s in snaps)):
            # never hand out an older point as "latest" when a newer one may be the damaged one
            raise CorruptData(f"{damaged[0]}; name another recovery point by its id")
        return lifecycle.find_live(self, ref, snaps)

    # ---- maintenance ----------------------------------------------------------------------------------
    def prune(self, options=None, progress=None):
        """Reclaim the space of unreferenced blobs, beside running backups (jobs/prune.py: run_prune);
        `options` a jobs.prune.PruneOptions. Returns a jobs.prune.PruneResult; errors.Busy if another
        prune holds the lease."""
        from ..jobs.prune import run_prune  # the job sits above the vault; imported only when used
        return run_prune(self, options, progress)

    def delete_snapshot(self, sid: str) -> None:
        """Forget one recovery point by full id: soft-deleted (purged at once if the period in force is 0)."""
        self.forget(ids=[sid], allow_empty=True)

    # ---- the lifecycle: lifecycle.py's face ---------------------------------------------------------
    def deleted_snapshots(self, now: Optional[datetime] = None,
                          on_corrupt: Optional[OnCorrupt] = None) -> List[DeletedPoint]:
        """The soft-deleted recovery points still stored, with when each expires."""
        return lifecycle.deleted(self, now, on_corrupt)

    def retained_snapshots(self, now: Optional[datetime] = None,
                           on_corrupt: Optional[OnCorrupt] = None) -> List[RecoveryPoint]:
        """Live and soft-deleted unexpired recovery points: everything prune must keep the data of."""
        return lifecycle.retained(self, now, on_corrupt)

    def purge_expired(self, now: Optional[datetime] = None, locked: immutability.LockedSink = None) -> List[str]:
        """Purge expired soft-deleted points (and finish interrupted purges); their ids. Objects still locked
        by the store go to `locked`, if given, instead of raising (lifecycle._delete_objects)."""
        return lifecycle.purge_expired(self, now, locked)

    def forget(self, policy: Optional[Policy] = None, ids: Sequence[str] = (), *, group_by: Any = ("host", "paths"),
               where: PointFilter = PointFilter(), dry_run: bool = False, allow_empty: bool = False,
               now: Optional[datetime] = None) -> List[ForgetGroup]:
        """Forget the points `ids` names, or those `policy` (default: the stored one) removes; see
        lifecycle.forget."""
        return lifecycle.forget(self, policy, ids, group_by=group_by, where=where, dry_run=dry_run,
                                allow_empty=allow_empty, now=now)

    def undelete(self, ref: str, now: Optional[datetime] = None) -> RecoveryPoint:
        return lifecycle.undelete(self, ref, now)

    @property
    def policy(self) -> VaultPolicy:
        """The stored policy (retention rules and soft-delete period); the default if none was stored."""
        self.journal.refresh()
        return self.journal.policy()

    def set_policy(self, policy: VaultPolicy, now: Optional[datetime] = None) -> VaultPolicy:
        return lifecycle.set_policy(self, policy, now)
