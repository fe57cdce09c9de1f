"""The vault: configuration, keys, packs, the chunk index, trees and recovery points.

Write order guarantees an interrupted job leaves the vault valid: a pack is stored (atomically) before an
index names it, an index before a recovery point depends on it. Packs no index names are garbage that a
later prune removes; nothing ever points at a half-written object.
"""
from __future__ import annotations

import json
import os
import secrets
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Tuple

from .. import core, timefmt
from ..errors import CorruptData, NotFound, ObjectMissing, UsageError, VaultExists, VaultNotFound
from ..storage import Storage
from . import envelope
from . import format as fmt
from .cache import ObjectCache
from .journal import Journal
from .keys import KdfParams, KeyStore, MasterKeys

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


class Location(NamedTuple):
    """Where a blob is: its pack's ID, its type, and its place and sealed length in the pack."""
    pack: bytes
    type: int
    offset: int
    length: int
    raw_length: int


class Locations:
    """Where each blob is (blob ID -> Location), held in C++ (core.LocationIndex, 75-110 bytes a blob instead of
    ~270 for a dict of Python objects: a multi-TB disk image has millions of blocks). Reads like a dict."""

    def __init__(self) -> None:
        self._ix = core.LocationIndex()

    def add(self, blob_id: bytes, loc: Location) -> None:
        self._ix.add(blob_id, loc.pack, loc.type, loc.offset, loc.length, loc.raw_length)

    __setitem__ = add

    def add_index(self, plain: bytes, known: Optional["core.IdSet"] = None) -> int:
        """Add every entry of an index file's plaintext (and its IDs to `known`); ValueError if malformed."""
        return self._ix.add_index(plain, known)

    def get(self, blob_id: bytes, default: Optional[Location] = None) -> Optional[Location]:
        t = self._ix.get(blob_id)
        return default if t is None else Location._make(t)

    def __getitem__(self, blob_id: bytes) -> Location:
        loc = self.get(blob_id)
        if loc is None:
            raise KeyError(blob_id)
        return loc

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self._ix

    def __len__(self) -> int:
        return len(self._ix)

    def items(self) -> Iterable[Tuple[bytes, Location]]:
        for t in self._ix.items():
            yield t[0], Location._make(t[1:])

    def values(self) -> Iterable[Location]:
        for _, loc in self.items():
            yield loc


class Vault:
    """An unlocked vault. Create with :meth:`create` or :meth:`open`; close (or use as a context manager)
    to flush pending packs and indexes."""

    def __init__(self, storage: Storage, master: MasterKeys, keyid: str, vault_id: str, settings: Settings,
                 cache_dir: Optional[str] = None) -> None:
        self.storage = storage
        self.master = master
        self.keyid = keyid
        self.id = vault_id
        self.settings = settings
        self.keys = KeyStore(storage)
        self.cache = ObjectCache(cache_dir, vault_id, "index") if cache_dir else None
        self.journal = Journal(storage, self.seal, self.unseal, cache_dir, vault_id)
        self.known = core.IdSet()
        self.locations = Locations()
        self._loaded_indexes: set = set()
        self._session = core.SealSession(master.enc_key)
        self._id_pipeline = self.pipeline(workers=1)
        self._writers = {fmt.BLOB_DATA: _PackWriter(self, fmt.BLOB_DATA), fmt.BLOB_TREE: _PackWriter(self, fmt.BLOB_TREE)}
        self._uploads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="recovault-upload")
        self._pending: List[Future] = []
        self._unindexed: Dict[bytes, List[fmt.BlobEntry]] = {}
        self._lock = threading.Lock()
        self._last_index = time.monotonic()
        self.load_index()

    # ---- creation and unlocking ----------------------------------------------------------------
    @classmethod
    def create(cls, storage: Storage, passphrase: str, *, settings: Optional[Settings] = None,
               kdf: Optional[KdfParams] = None, cache_dir: Optional[str] = None) -> "Vault":
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
        return cls(storage, master, keyid, vault_id, settings, cache_dir)

    @classmethod
    def open(cls, storage: Storage, passphrase: str, *, cache_dir: Optional[str] = None) -> "Vault":
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
        return cls(storage, master, keyid, vault_id, settings, cache_dir)

    def __enter__(self) -> "Vault":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(flush=exc[0] is None)

    def close(self, flush: bool = True) -> None:
        """Flush and stop. Without flush (after an error or Ctrl-C), queued blobs are dropped, but packs
        already stored still get an index, so the next backup reuses them."""
        if flush:
            self.flush()
        self._uploads.shutdown(wait=True)
        if not flush:
            try:
                self.write_index()
            except Exception:  # noqa: BLE001 - best effort on the way out; the vault stays valid either way
                pass
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
        return self._session.seal(aad, data, self.settings.level)

    def unseal(self, aad: bytes, blob: bytes, what: str, max_size: int = 1 << 30) -> bytes:
        try:
            return core.open_blob(self.master.enc_key, aad, blob, max_size)
        except (core.AuthenticationError, core.DecompressError, ValueError) as e:
            raise CorruptData(f"{what} is corrupt or was tampered with ({e})") from None

    # ---- the index -----------------------------------------------------------------------------
    def load_index(self) -> int:
        """Load every index file not loaded yet (from the agent cache when it has it). Returns how many."""
        names = [n for n in self.storage.list(fmt.INDEX) if n not in self._loaded_indexes]
        for name in names:
            raw = self.cache.get(name) if self.cache else None
            if raw is None:
                raw = self._get(name)
                if self.cache:
                    self.cache.put(name, raw)
            try:
                self.locations.add_index(self.unseal(fmt.AAD_INDEX, raw, f"index file {name}"), self.known)
            except ValueError as e:
                raise CorruptData(f"index file {name} is corrupt: {e}") from None
            self._loaded_indexes.add(name)
        if self.cache:
            self.cache.prune(self._loaded_indexes)
        return len(names)

    def has_blob(self, blob_id: bytes) -> bool:
        return blob_id in self.known

    # ---- writing --------------------------------------------------------------------------------
    def add_sealed(self, blob_type: int, blob_id: bytes, sealed: bytes, raw_length: int) -> None:
        """Queue a sealed blob (from the pipeline) for the current pack of its type."""
        self._writers[blob_type].add(blob_id, sealed, raw_length)

    def save_blob(self, blob_type: int, data: bytes) -> bytes:
        """Store plaintext `data` as a blob (deduplicated) and return its id."""
        blob_id = self.chunk_id(data)
        if self.known.add(blob_id):
            self.add_sealed(blob_type, blob_id, self._session.seal(blob_id, data, self.settings.level), len(data))
        return blob_id

    def _pack_written(self, pack_id: bytes, entries: List[fmt.BlobEntry]) -> None:
        with self._lock:
            self._unindexed[pack_id] = entries
            for e in entries:
                self.locations.add(e.id, Location(pack_id, e.type, e.offset, e.length, e.raw_length))
            # Index often enough that an interrupted job loses little: every 4 packs or every minute.
            full = len(self._unindexed) >= 4 or time.monotonic() - self._last_index > 60
        if full:
            self.write_index()

    def _submit_upload(self, name: str, data: bytes, after) -> None:
        def job():
            self.storage.put(name, data)
            after()
        self._pending.append(self._uploads.submit(job))
        if len(self._pending) > 1:  # bounds memory: one pack uploading while the next one fills
            self._wait_uploads(keep=1)

    def _wait_uploads(self, keep: int = 0) -> None:
        while len(self._pending) > keep:
            f = self._pending.pop(0)
            f.result()  # re-raises the upload's error (StorageError for a full disk, ...)

    def write_index(self) -> None:
        with self._lock:
            packs, self._unindexed = self._unindexed, {}
            self._last_index = time.monotonic()
        if not packs:
            return
        sealed = self.seal(fmt.AAD_INDEX, fmt.encode_index(packs))
        name = fmt.INDEX + core.blake3(sealed).hex()
        self.storage.put(name, sealed)
        self._loaded_indexes.add(name)
        if self.cache:
            self.cache.put(name, sealed)

    def flush(self) -> None:
        """Write out partly filled packs, wait for uploads, then index them."""
        for w in self._writers.values():
            w.finish()
        self._wait_uploads()
        self.write_index()

    # ---- reading --------------------------------------------------------------------------------
    def _get(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        try:
            return self.storage.get(name, offset, length)
        except ObjectMissing:
            raise ObjectMissing(f"object {name} is missing from the vault at {self.storage.url}") from None

    def locate(self, blob_id: bytes) -> Location:
        loc = self.locations.get(blob_id)
        if loc is None:
            raise CorruptData(f"blob {blob_id.hex()[:16]} is referenced but no index lists it "
                              "(the vault is damaged; run 'recovault check')")
        return loc

    def pack_name(self, pack_id: bytes) -> str:
        return fmt.object_name(fmt.DATA, pack_id.hex())

    def read_blob(self, blob_id: bytes) -> bytes:
        loc = self.locate(blob_id)
        name = self.pack_name(loc.pack)
        raw = self._get(name, loc.offset, loc.length)
        if len(raw) != loc.length:
            raise CorruptData(f"pack {name} is truncated (blob {blob_id.hex()[:16]} cut short)")
        return self.open_sealed(blob_id, raw, name, loc.raw_length)

    def open_sealed(self, blob_id: bytes, raw: bytes, pack_name: str, raw_length: int) -> bytes:
        data = self.unseal(blob_id, raw, f"blob {blob_id.hex()[:16]} in pack {pack_name}", max(raw_length, 1))
        if len(data) != raw_length:
            raise CorruptData(f"blob {blob_id.hex()[:16]} in pack {pack_name} has the wrong length")
        return data

    def read_pack_header(self, pack_name: str) -> List[fmt.BlobEntry]:
        """Decrypt a pack's own header (used by check and to rebuild indexes)."""
        size = self.storage.stat(pack_name).size
        trailer = self._get(pack_name, size - fmt.PACK_TRAILER.size, fmt.PACK_TRAILER.size)
        try:
            start, hlen = fmt.split_pack(size, trailer)
            sealed = self._get(pack_name, start, hlen)
            return fmt.decode_pack_header(self.unseal(fmt.AAD_PACK_HEADER, sealed, f"header of pack {pack_name}"))
        except ValueError as e:
            raise CorruptData(f"pack {pack_name} is corrupt: {e}") from None

    # ---- trees and recovery points ------------------------------------------------------------
    def save_tree(self, tree: Dict[str, Any]) -> bytes:
        data = json.dumps(tree, separators=(",", ":"), sort_keys=True).encode()
        return self.save_blob(fmt.BLOB_TREE, data)

    def load_tree(self, tree_id: bytes) -> Dict[str, Any]:
        try:
            return json.loads(self.read_blob(tree_id))
        except ValueError:
            raise CorruptData(f"tree {tree_id.hex()[:16]} does not parse") from None

    def find_node(self, snap: Dict[str, Any], path: str) -> Optional[Dict[str, Any]]:
        """The tree node at absolute `path` in a recovery point ("/" gives a node for the root), or None."""
        from .tree import node_map
        node: Dict[str, Any] = {"name": "", "meta": {"t": "d", "m": 0o755}, "subtree": snap["tree"]}
        for part in (p for p in os.fsencode(path).split(b"/") if p):
            if "subtree" not in node:
                return None
            node = node_map(self.load_tree(bytes.fromhex(node["subtree"]))).get(part)
            if node is None:
                return None
        return node

    def save_snapshot(self, snap: Dict[str, Any]) -> str:
        sealed = self.seal(fmt.AAD_SNAPSHOT, json.dumps(snap, sort_keys=True).encode())
        sid = core.blake3(sealed).hex()
        self.storage.put(fmt.SNAPSHOTS + sid, sealed)
        self.journal.append("add", sid, snap["time"], snap["host"])  # after the point: see journal.py
        return sid

    def load_snapshot(self, sid: str) -> Dict[str, Any]:
        name = fmt.SNAPSHOTS + sid
        raw = self._get(name)
        if core.blake3(raw).hex() != sid:
            raise CorruptData(f"recovery point {sid[:8]}: its content does not match its name (corrupt)")
        snap = json.loads(self.unseal(fmt.AAD_SNAPSHOT, raw, f"recovery point {sid[:8]}"))
        snap["id"] = sid
        return snap

    def snapshots(self, on_corrupt: Optional[Any] = None) -> List[Dict[str, Any]]:
        """All recovery points, oldest first. A recovery point that is corrupt or unreadable is passed to
        `on_corrupt(message)` and left out (one damaged object must not stop every later backup); without
        `on_corrupt`, it raises."""
        snaps = []
        for n in self.storage.list(fmt.SNAPSHOTS):
            try:
                snaps.append(self.load_snapshot(fmt.name_to_id(n)))
            except (CorruptData, ObjectMissing) as e:
                if on_corrupt is None:
                    raise
                on_corrupt(str(e))
        snaps.sort(key=lambda s: (s["time"], s["id"]))
        return snaps

    def find_snapshot(self, ref: str, snaps: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
        """A recovery point by full id, unique prefix, or 'latest' (damaged recovery points are reported on
        stderr and left out of the search: a good one can still be restored)."""
        damaged: List[str] = []
        if snaps is None:
            snaps = self.snapshots(on_corrupt=damaged.append)
        for msg in damaged:
            print(f"recovault: warning: {msg}", file=sys.stderr)
        if damaged and (ref == "latest" or not any(s["id"].startswith(ref) for s in snaps)):
            # never hand out an older point as "latest" when a newer one may be the damaged one
            raise CorruptData(f"{damaged[0]}; name another recovery point by its id")
        if ref == "latest":
            if not snaps:
                raise NotFound("the vault has no recovery points yet")
            return snaps[-1]
        hits = [s for s in snaps if s["id"].startswith(ref)]
        if not hits:
            raise NotFound(f"no recovery point matches '{ref}'")
        if len(hits) > 1:
            raise UsageError(f"'{ref}' matches {len(hits)} recovery points; give more characters")
        return hits[0]

    def delete_snapshot(self, sid: str) -> None:
        self.journal.append("remove", sid, timefmt.now())  # before the deletion: see journal.py
        self.storage.delete(fmt.SNAPSHOTS + sid)


class _PackWriter:
    """Gathers sealed blobs of one type into a pack of about settings.pack_size bytes; on flush, shuffles
    their order (so storage can't read chunk sizes off positions), appends the sealed header and the
    trailer, names the pack by the BLAKE3 of its bytes, and uploads it in the background."""

    def __init__(self, vault: Vault, blob_type: int) -> None:
        self.vault = vault
        self.type = blob_type
        self.blobs: List[Tuple[bytes, bytes, int]] = []
        self.size = 0

    def add(self, blob_id: bytes, sealed: bytes, raw_length: int) -> None:
        self.blobs.append((blob_id, sealed, raw_length))
        self.size += len(sealed)
        if self.size >= self.vault.settings.pack_size:
            self.finish()

    def finish(self) -> None:
        if not self.blobs:
            return
        blobs, self.blobs, self.size = self.blobs, [], 0
        # A secret random order: sort by a keyed hash under a fresh random key (one syscall per pack,
        # not one per blob as SystemRandom.shuffle would make).
        order_key = os.urandom(32)
        blobs.sort(key=lambda b: core.blake3(b[0], order_key))
        entries, parts, offset = [], [], 0
        for blob_id, sealed, raw_length in blobs:
            entries.append(fmt.BlobEntry(self.type, blob_id, offset, len(sealed), raw_length))
            parts.append(sealed)
            offset += len(sealed)
        header = self.vault.seal(fmt.AAD_PACK_HEADER, fmt.encode_pack_header(entries))
        parts.append(header)
        parts.append(fmt.PACK_TRAILER.pack(len(header), fmt.PACK_MAGIC))
        data = b"".join(parts)
        del parts, blobs  # the sealed blobs now live only in `data`
        pack_id = core.blake3(data)
        vault = self.vault
        vault._submit_upload(vault.pack_name(pack_id), data, lambda: vault._pack_written(pack_id, entries))
