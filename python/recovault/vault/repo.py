"""The vault: configuration and keys, composing the blob store (packs, index, cache: blobstore.py) and the
recovery-point store (points.py), with trees on top of blobs.

Write order guarantees an interrupted job leaves the vault valid: a pack is stored (atomically) before an
index names it, an index before a recovery point depends on it. Packs no index names are garbage that a
later prune removes; nothing ever points at a half-written object.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from .. import core, timefmt
from ..errors import CorruptData, ObjectMissing, UsageError, VaultExists, VaultNotFound
from ..paths import split_path
from ..storage import Storage
from . import envelope
from . import format as fmt
from .blobstore import BlobStore, EventSink, Location, Locations, no_events, pack_name
from .journal import Journal
from .keys import KdfParams, KeyStore, MasterKeys
from .points import OnCorrupt, PointStore
from .records import Node, RecoveryPoint
from .sealing import Sealer
from .tree import decode_tree, encode_tree, node_map

__all__ = ["DEFAULT_PACK_SIZE", "Location", "Locations", "Settings", "Vault"]

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

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Settings":
        c = d["chunker"]
        if c.get("algorithm") != "fastcdc-gear-keyed" or d["id"] not in ("blake3", "hmac-sha256"):
            raise CorruptData("vault config names an algorithm this recovault does not know")
        return cls(c["min"], c["avg"], c["max"], c["normalization"], d["id"], d["compression"]["level"],
                   d["pack_size"])




class Vault:
    """An unlocked vault. Create with :meth:`create` or :meth:`open`; close (or use as a context manager)
    to flush pending packs and indexes.

    `blobs` (BlobStore) holds packs and the index, `points` (PointStore) the recovery points; the methods
    below are the vault's public face over both. `on_event(kind, info)` hears what the vault notices on the
    way (kind "problem": a damaged index skipped, a damaged recovery point left out of a search); library
    code never prints. Opening reads the config and the key only: the index is loaded by the first use of a
    blob (see BlobStore), so listing recovery points or managing keys never reads index/."""

    def __init__(self, storage: Storage, master: MasterKeys, keyid: str, vault_id: str, settings: Settings,
                 cache_dir: Optional[str] = None, on_event: EventSink = no_events) -> None:
        self.storage = storage
        self.master = master
        self.keyid = keyid
        self.id = vault_id
        self.settings = settings
        self.on_event = on_event
        self.keys = KeyStore(storage)
        self.sealer = Sealer(master, settings.level)
        self._session = self.sealer.session
        self.blobs = BlobStore(storage, self.sealer, pack_size=settings.pack_size, cache_dir=cache_dir,
                               vault_id=vault_id, on_event=on_event)
        self.points = PointStore(storage, self.sealer)
        self.journal = Journal(storage, self.sealer, cache_dir, vault_id)
        # Only for chunk_id, which never consults a known-ID set: an empty one keeps the index unloaded.
        self._id_pipeline = self.pipeline(workers=1, known=core.IdSet())

    # ---- creation and unlocking ----------------------------------------------------------------
    @classmethod
    def create(cls, storage: Storage, passphrase: str, *, settings: Optional[Settings] = None,
               kdf: Optional[KdfParams] = None, cache_dir: Optional[str] = None,
               on_event: EventSink = no_events) -> "Vault":
        if storage.exists(fmt.CONFIG):
            raise VaultExists(f"a vault already exists at {storage.url}")
        settings = settings or Settings()
        # Settings are fixed for the vault's life: refuse bad ones before anything is written (a config the
        # chunker rejects would make the vault impossible to open).
        try:
            core.Chunker(bytes(32), settings.min_size, settings.avg_size, settings.max_size, settings.normalization)
        except (ValueError, TypeError) as e:
            raise UsageError(f"invalid vault settings: {e}") from None
        if not 0 < settings.pack_size <= fmt.MAX_PACK_SIZE // 2:
            raise UsageError(f"invalid vault settings: pack size {settings.pack_size} is out of range")
        master = MasterKeys.generate()
        keys = KeyStore(storage)
        keyid = keys.add(passphrase, master, kdf=kdf)
        vault_id = secrets.token_hex(16)
        doc = {"recovault": fmt.FORMAT_VERSION, "id": vault_id, "created": timefmt.now()}
        sealed = core.SealSession(master.enc_key).seal(fmt.AAD_CONFIG + vault_id.encode(),
                                                      json.dumps(envelope.bind(settings.to_dict(), doc)).encode())
        doc["settings"] = sealed.hex()
        storage.put(fmt.CONFIG, json.dumps(doc, indent=1).encode() + b"\n")
        return cls(storage, master, keyid, vault_id, settings, cache_dir, on_event)

    @classmethod
    def open(cls, storage: Storage, passphrase: str, *, cache_dir: Optional[str] = None,
             on_event: EventSink = no_events) -> "Vault":
        try:
            raw = storage.get(fmt.CONFIG)
        except ObjectMissing:
            raise VaultNotFound(f"no vault at {storage.url} (no config object; run 'recovault init' first)") from None
        try:
            doc = json.loads(raw)
            version, vault_id, sealed = doc["recovault"], doc["id"], bytes.fromhex(doc["settings"])
        except (ValueError, KeyError, TypeError):
            raise CorruptData(f"the vault config at {storage.url} is corrupt") from None
        if version != fmt.FORMAT_VERSION:
            raise UsageError(f"vault format version {version} is not supported by this recovault (it reads v1)")
        master, keyid = KeyStore(storage).unlock(passphrase)
        try:
            settings = Settings.from_dict(envelope.verify(json.loads(core.open_blob(
                master.enc_key, fmt.AAD_CONFIG + vault_id.encode(), sealed)), doc, storage.url).settings)
        except (core.AuthenticationError, core.DecompressError, ValueError, KeyError):
            raise CorruptData(f"the vault config at {storage.url} is corrupt or was tampered with") from None
        return cls(storage, master, keyid, vault_id, settings, cache_dir, on_event)

    def __enter__(self) -> "Vault":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(flush=exc[0] is None)

    def close(self, flush: bool = True) -> None:
        """Flush and stop. Without flush (after an error or Ctrl-C), queued blobs are dropped, but packs
        already stored still get an index, so the next backup reuses them."""
        self.blobs.close(flush)
        self.storage.close()

    # ---- sealing --------------------------------------------------------------------------------
    def pipeline(self, *, workers: int = 0, fixed_block: int = 0, level: Optional[int] = None,
                 compress: str = "auto", known: Optional["core.IdSet"] = None) -> "core.Pipeline":
        """A pipeline with this vault's keys and chunker; `known` replaces the vault's set of stored IDs
        (restore's verification passes its own, so that re-reading files stores nothing)."""
        s = self.settings
        return core.Pipeline(self.master.id_key, self.master.chunker_seed,
                             self.known if known is None else known, self._session,
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
            self.add_sealed(blob_type, blob_id, self._session.seal(blob_id, data, self.settings.level), len(data))
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
    def save_snapshot(self, point: RecoveryPoint) -> str:
        """Store `point` (its id is set) and log it in the journal; returns the id."""
        sid = point.id = self.points.save(point)
        self.journal.append("add", sid, point.time, point.host)  # after the point: see journal.py
        return sid

    def load_snapshot(self, sid: str) -> RecoveryPoint:
        return self.points.load(sid)

    def snapshots(self, on_corrupt: Optional[OnCorrupt] = None) -> List[RecoveryPoint]:
        """All recovery points, oldest first. A recovery point that is corrupt or unreadable is passed to
        `on_corrupt(message)` and left out (one damaged object must not stop every later backup); without
        `on_corrupt`, it raises."""
        return self.points.list(on_corrupt)

    def find_snapshot(self, ref: str, snaps: Optional[List[RecoveryPoint]] = None,
                      on_corrupt: Optional[OnCorrupt] = None) -> RecoveryPoint:
        """A recovery point by full id, unique prefix, or 'latest'. Damaged recovery points are left out of
        the search and passed to `on_corrupt(message)`, by default reported as a "problem" event."""
        if on_corrupt is None:
            on_corrupt = lambda msg: self.on_event("problem", {"message": msg})  # noqa: E731
        return self.points.find(ref, snaps, on_corrupt)

    # ---- maintenance ----------------------------------------------------------------------------------
    def prune(self, options=None, progress=None):
        """Reclaim the space of unreferenced blobs, beside running backups (jobs/prune.py: run_prune);
        `options` a jobs.prune.PruneOptions. Returns a jobs.prune.PruneResult; errors.Busy if another
        prune holds the lease."""
        from ..jobs.prune import run_prune  # the job sits above the vault; imported only when used
        return run_prune(self, options, progress)

    def delete_snapshot(self, sid: str) -> None:
        self.journal.append("remove", sid, timefmt.now())  # before the deletion: see journal.py
        self.points.delete(sid)
