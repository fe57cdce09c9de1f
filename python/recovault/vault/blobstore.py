"""The blob store: packs, the pack writer, index files, where each blob is, and the agent cache of indexes.

Write order guarantees an interrupted job leaves the vault valid: a pack is stored (atomically) before an
index names it. Packs no index names are garbage that a later prune removes; nothing ever points at a
half-written object.

Index files are an accelerator (packs describe themselves): an index file that is damaged is reported
through `on_event` and skipped, and the blobs it may have covered are found by reading the headers
of the packs no good index lists (docs/vault-format.md §7). A backup also stores an index file for those
recovered packs before its recovery point (Vault.flush), so the point never depends on packs no index lists,
and the next run with a cold cache no longer reads their headers. Nothing here deletes an object.

The index is loaded lazily, once: by the first use of what it holds (`known`, `locations`, `indexed_packs`,
`damaged_indexes`, ... are attributes that load it; so do `has_blob`, `locate`, `read_blob`, `add_sealed`,
`store_index`). A command that never touches a blob (listing recovery points, managing keys) never lists
or reads index/, and never hears of a damaged index file.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from collections import deque
from typing import (Any, Callable, Deque, Dict, Generic, Iterable, Iterator, List, NamedTuple, Optional, Set, Tuple,
                    TypeVar, Union)

from .. import core
from ..errors import CorruptData, ObjectMissing, RecovaultError, StorageError
from ..storage import Storage
from ..storage.base import has_local_files, put_or_withdraw
from . import format as fmt
from .cache import ObjectCache
from .sealing import Sealer

#: `(kind, info)`, the progress-callback convention: kind "problem" (info["message"]) is shown as a warning.
EventSink = Callable[[str, Dict[str, Any]], None]
T = TypeVar("T")


def no_events(kind: str, info: Dict[str, Any]) -> None:
    return None


class Location(NamedTuple):
    """Where a blob is: its pack's ID, its type, and its place and sealed length in the pack."""
    pack: bytes
    type: int
    offset: int
    length: int
    raw_length: int


def default_connections(storage: Storage) -> int:
    """Pack uploads in flight by default: 2 on a local file system (more only seek), 5 on an object store
    (restic's defaults for its local and S3/Azure back ends: enough to fill a link whose latency dominates)."""
    return 2 if has_local_files(storage) else 5


class DamagedIndex(NamedTuple):
    """An index file that could not be used: its name and why."""
    name: str
    reason: str


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


def pack_name(pack_id: bytes) -> str:
    return fmt.object_name(fmt.DATA, pack_id.hex())


def pack_id_of(name: str) -> Optional[bytes]:
    """The pack ID a data/ object name carries, or None for a name that is not a pack's."""
    hexid = fmt.name_to_id(name)
    if len(hexid) != 64:
        return None
    try:
        return bytes.fromhex(hexid)
    except ValueError:
        return None


class _IndexLoaded(Generic[T]):
    """A BlobStore attribute that loads the index on its first use: `known` reads `_known` after
    `_ensure_index()`. Read-only: the store's own code changes the private fields."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.field = "_" + name

    def __get__(self, store: Optional["BlobStore"], owner: type) -> T:
        if store is None:  # read on the class (help(), introspection): the descriptor itself
            return self  # type: ignore[return-value]
        store._ensure_index()
        return getattr(store, self.field)

    def __set__(self, store: "BlobStore", value: T) -> None:
        raise AttributeError(f"{self.field[1:]} is what the index holds: it cannot be replaced")


class BlobStore:
    """Blobs in packs, and the index of where each is. `known` holds every stored blob ID (dedup);
    `locations` where each is; `indexed_packs` the packs some index file this store read or wrote lists
    (a blob stored twice, by two backups running at once, has one location but both packs are indexed).
    Each of these (and `damaged_indexes`, `recovered_packs`, `unreadable_packs`) is an attribute that loads
    the index on first use, exactly once even from several threads; the methods here use the private
    fields only after `_ensure_index` (or from within the load)."""

    def __init__(self, storage: Storage, sealer: Sealer, *, pack_size: int, cache_dir: Optional[str] = None,
                 vault_id: str = "", on_event: EventSink = no_events, connections: int = 0) -> None:
        self.storage = storage
        self.connections = connections if connections > 0 else default_connections(storage)
        self.sealer = sealer
        self.pack_size = pack_size
        self.on_event = on_event
        self.cache = ObjectCache(cache_dir, vault_id, "index") if cache_dir else None
        # Tree blobs too, where reading one costs a request (an object store): an unchanged backup, ls, mount
        # and a restore's walk then read the trees they met before from here. A local vault needs no copy.
        self.tree_cache = (ObjectCache(cache_dir, vault_id, "trees", by_hash=False)
                           if cache_dir and not has_local_files(storage) else None)
        self._known = core.IdSet()
        self._locations = Locations()
        self._indexed_packs: Set[bytes] = set()
        self._damaged_indexes: List[DamagedIndex] = []
        self._recovered_packs: Set[bytes] = set()  # packs whose blobs were read from their own headers
        self._unreadable_packs: List[str] = []  # packs no good index lists whose header could not be read
        self._index_loaded = False
        self._index_lock = threading.RLock()  # one load at a time
        self._loading_in: Optional[int] = None  # the thread loading it (an event sink it calls may look back)
        self._loaded_indexes: Set[str] = set()
        self._recovered: Dict[bytes, List[fmt.BlobEntry]] = {}  # recovered packs no index file lists yet
        self._writers = {t: _PackWriter(self, t) for t in (fmt.BLOB_DATA, fmt.BLOB_TREE)}
        self._uploads = ThreadPoolExecutor(max_workers=self.connections, thread_name_prefix="recovault-upload")
        self._pending: Set[Future] = set()
        self._queued = 0  # blobs queued so far: blob k (from 0) is the k-th queued (see `queued`)
        self._lost: List[Tuple[int, bytes]] = []  # per pack whose upload failed: its first blob's number, its IDs
        self._upload_error: Optional[BaseException] = None  # the first upload that failed
        self._unindexed: Dict[bytes, List[fmt.BlobEntry]] = {}
        self._lock = threading.Lock()
        self._last_index = time.monotonic()
        self._excluded = core.IdSet()  # pending plans' garbage: never "known" (see exclude)

    def problem(self, message: str) -> None:
        self.on_event("problem", {"message": message})

    # ---- the index -----------------------------------------------------------------------------
    def _ensure_index(self) -> None:
        """Load the index if no one has yet (the first use of what it holds; thread-safe, once)."""
        if not self._index_loaded and self._loading_in != threading.get_ident():
            with self._index_lock:
                if not self._index_loaded:
                    self.load_index()

    # What the index holds: each reads its private field ("_known", ...) after loading the index.
    known = _IndexLoaded[core.IdSet]()
    locations = _IndexLoaded[Locations]()
    indexed_packs = _IndexLoaded[Set[bytes]]()
    damaged_indexes = _IndexLoaded[List[DamagedIndex]]()
    recovered_packs = _IndexLoaded[Set[bytes]]()
    unreadable_packs = _IndexLoaded[List[str]]()

    @property
    def index_loaded(self) -> bool:
        """Whether the index has been loaded (by a use of it or by `load_index`)."""
        return self._index_loaded

    def load_index(self) -> int:
        """Load every index file not loaded yet (from the agent cache when it has it). Returns how many. A
        damaged one is reported and skipped, and the packs no good index lists are read instead. One that
        vanishes between the listing and the read was replaced (a repair or prune stores the replacements
        before it deletes): the listing is read again, to find them."""
        with self._index_lock:
            self._loading_in = threading.get_ident()
            try:
                loaded = self._load_index()
            finally:
                self._loading_in = None
            self._known.difference_update(self._excluded.dump())
            self._index_loaded = True
        return loaded

    def exclude(self, ids: bytes) -> None:
        """Never count these blob IDs (concatenated) as stored, now or after a later load: a pending prune
        plan may delete them (docs/vault-format.md §10), so this writer stores them again if it needs them.
        Their locations stay readable while their packs exist."""
        self._excluded.update(ids)
        if self._index_loaded:
            self._known.difference_update(ids)

    def reload_index(self) -> int:
        """Forget the loaded index and load it afresh (a writer that was stopped revalidates on what the
        index files say now). Blobs queued but not yet stored are dropped from the view: flush first."""
        with self._index_lock:
            self._known.clear()  # the same object: pipelines hold it
            self._locations = Locations()
            self._indexed_packs = set()
            self._loaded_indexes = set()
            self._damaged_indexes = []
            self._recovered_packs = set()
            self._index_loaded = False
            return self.load_index()

    def _load_index(self) -> int:
        loaded, damaged = 0, []
        for _ in range(3):
            skip = self._loaded_indexes | {d.name for d in self._damaged_indexes + damaged}
            names = [n for n in self.storage.list(fmt.INDEX) if n not in skip]
            vanished = False
            for name in names:
                try:
                    self._load_index_file(name)
                    loaded += 1
                except ObjectMissing:
                    vanished = True
                except CorruptData as e:
                    damaged.append(DamagedIndex(name, str(e)))
                    self.problem(f"{e}; skipped: the blobs it lists are looked up in the packs' own headers "
                                 "(run 'recovault repair index')")
            if not vanished:
                break
        if damaged:
            self._damaged_indexes += damaged
            self._recover_from_packs()
        if self.cache:
            self.cache.prune(self._loaded_indexes)
        return loaded

    def open_index_file(self, name: str, raw: bytes, *, name_checked: bool = False) -> bytes:
        """The plaintext of index file `name`, whose stored bytes are `raw`: CorruptData unless they match
        its name (unless the caller checked that already, as the agent cache does) and open as an index."""
        if name_checked:
            return self.sealer.unseal(fmt.AAD_INDEX, raw, f"index file {name}")
        return self.sealer.open_named(fmt.AAD_INDEX, raw, fmt.name_to_id(name), f"index file {name}")

    def read_index_file(self, name: str) -> Dict[bytes, fmt.PackEntries]:
        """Index file `name` as stored (never from the agent cache, which may hide damage): its entries by
        pack. CorruptData if it is damaged, ObjectMissing if it is gone."""
        plain = self.open_index_file(name, self.get(name))
        try:
            return fmt.decode_index(plain)
        except ValueError as e:
            raise CorruptData(f"index file {name} is corrupt: {e}") from None

    def _load_index_file(self, name: str) -> None:
        raw = self.cache.get(name) if self.cache else None  # the cache checks an entry against its name
        from_cache = raw is not None
        if raw is None:
            raw = self.get(name)
        plain = self.open_index_file(name, raw, name_checked=from_cache)
        try:
            packs = fmt.index_pack_ids(plain)  # checks the layout before anything is added
            self._locations.add_index(plain, self._known)
        except ValueError as e:
            raise CorruptData(f"index file {name} is corrupt: {e}") from None
        self._indexed_packs.update(packs)
        self._loaded_indexes.add(name)
        if self.cache and not from_cache:
            self.cache.put(name, raw)

    def _recover_from_packs(self) -> None:
        """Read the header of every pack that no loaded index lists, and add its blobs (those no index
        has) to the locations and the known IDs. Packs whose header cannot be read are reported."""
        before = len(self._recovered_packs)
        for name in self.storage.list(fmt.DATA):
            pack = pack_id_of(name)
            if pack is None or pack in self._indexed_packs or pack in self._recovered_packs:
                continue
            try:
                entries = self._locate_pack(pack, name)
            except (CorruptData, ObjectMissing) as e:
                if name not in self._unreadable_packs:
                    self._unreadable_packs.append(name)
                    self.problem(f"{e}; no good index lists it either: its blobs cannot be located")
                continue
            self._recovered_packs.add(pack)
            with self._lock:
                self._recovered[pack] = entries
        if len(self._recovered_packs) > before:
            self.problem(f"the blobs of {len(self._recovered_packs) - before} pack(s) that no good index lists "
                         "were read from the packs' own headers")

    def locate_pack(self, pack: bytes, name: str) -> List[fmt.BlobEntry]:
        """Read pack `name`'s own header and locate (and know) those of its blobs no index located; its
        entries. CorruptData or ObjectMissing if the header cannot be read."""
        self._ensure_index()
        return self._locate_pack(pack, name)

    def _locate_pack(self, pack: bytes, name: str) -> List[fmt.BlobEntry]:
        entries = self.read_pack_header(name)
        for e in entries:
            if e.id not in self._locations:
                self._locations.add(e.id, Location(pack, e.type, e.offset, e.length, e.raw_length))
                self._known.add(e.id)
        return entries

    def has_blob(self, blob_id: bytes) -> bool:
        return blob_id in self.known

    def stored(self, blob_id: bytes) -> bool:
        """Whether the blob is in a stored pack and may be named (known: not in a pending plan's garbage). A
        blob queued but not yet stored is not; nor, after `salvage`, one whose pack failed to upload."""
        return blob_id in self.known and blob_id in self.locations

    # ---- writing --------------------------------------------------------------------------------
    def add_sealed(self, blob_type: int, blob_id: bytes, sealed: bytes, raw_length: int) -> None:
        """Queue a sealed blob (from the pipeline) for the current pack of its type."""
        self._ensure_index()  # its pack's locations join the index's (normally loaded already, for dedup)
        self._writers[blob_type].add(blob_id, sealed, raw_length, self._queued)
        self._queued += 1
        if blob_type == fmt.BLOB_TREE and self.tree_cache is not None:
            self.tree_cache.put(blob_id.hex(), sealed)  # the next backup walks this tree: no request for it

    @property
    def queued(self) -> int:
        """How many blobs this store has queued so far. Something finished when `queued` was n depends only
        on blobs numbered below n (and on blobs stored before): the backup stamps what it finishes with it,
        and an interrupted backup keeps what `lost_from` says is stored."""
        return self._queued

    def _pack_written(self, pack_id: bytes, entries: List[fmt.BlobEntry]) -> None:
        with self._lock:
            self._unindexed[pack_id] = entries
            for e in entries:
                self._locations.add(e.id, Location(pack_id, e.type, e.offset, e.length, e.raw_length))
            # Index often enough that an interrupted job loses little: every 4 packs or every minute.
            full = len(self._unindexed) >= 4 or time.monotonic() - self._last_index > 60
        if full:
            self.write_index()

    def _submit_upload(self, name: str, data: bytes, after: Callable[[], None], first: int, ids: bytes) -> None:
        """Upload a pack on the pool; `first` is its first blob's number, `ids` its blob IDs (concatenated).
        At most `connections` uploads are under way: this waits for one to end first (memory: about
        connections + 1 packs, whatever the link)."""
        def job() -> None:
            try:
                self._put(name, data, "pack")
            except BaseException as e:
                with self._lock:
                    self._lost.append((first, ids))
                    if self._upload_error is None:
                        self._upload_error = e
                raise
            after()
        self._pending.add(self._uploads.submit(job))
        self._wait_uploads(keep=self.connections)

    def _wait_uploads(self, keep: int = 0) -> None:
        """Wait until at most `keep` uploads are under way; re-raises a failed one's error (as soon as it is
        seen: the sooner a failure stops the backup, the more of what it finished its partial point holds)."""
        while True:
            done = {f for f in self._pending if f.done()}
            if not done and len(self._pending) > keep:
                done, _ = wait(self._pending, return_when=FIRST_COMPLETED)
            if not done:
                return
            self._pending -= done
            for f in done:
                f.result()  # re-raises the upload's error (StorageError for a full disk, ...)

    def _put(self, name: str, data: bytes, what: str) -> None:
        """Store one object; a failure becomes one error naming the object, the operation and the store, of the
        storage error's own class (so its exit code: a store that cannot be reached stays StoreUnavailable)."""
        try:
            put_or_withdraw(self.storage, name, data)  # named by its own hash: a failed write is taken back
        except StorageError as e:
            raise type(e)(f"storing {what} {name} in {self.storage.url} failed: {e}") from None

    def salvage(self) -> Optional[int]:
        """After an interruption: wait for every upload under way (their errors are not raised: the first is
        `upload_error`), forget the blobs of packs that failed to upload (they are no longer known, so what
        is stored next stores them again), and return the number of the first blob that may be lost (None:
        every blob queued so far is stored or still queued). Something stamped with `queued` <= that number
        is fully stored once the queued packs are flushed."""
        while self._pending:
            done, _ = wait(self._pending, return_when=FIRST_COMPLETED)
            self._pending -= done
        with self._lock:
            lost, self._lost = self._lost, []
        for _first, ids in lost:
            self.known.difference_update(ids)
        if not lost:
            return None
        return min(first for first, _ids in lost)

    @property
    def upload_error(self) -> Optional[BaseException]:
        return self._upload_error

    def write_index(self) -> None:
        """Store an index file for the packs stored since the last one (they are all stored already)."""
        with self._lock:
            packs, self._unindexed = self._unindexed, {}
            self._last_index = time.monotonic()
        if not packs:
            return
        try:
            self.store_index(packs)
        except BaseException:
            with self._lock:  # not lost: the next index file (or the one written on close) lists them
                self._unindexed.update(packs)
            raise

    def store_index(self, packs: Dict[bytes, List[fmt.BlobEntry]]) -> str:
        """Seal and store one index file listing `packs` (which must be stored already); returns its name."""
        self._ensure_index()  # else a later load would skip this file as loaded, without its entries
        sealed = self.sealer.seal(fmt.AAD_INDEX, fmt.encode_index(packs))
        name = fmt.INDEX + core.blake3(sealed).hex()
        self._put(name, sealed, "index file")
        self._loaded_indexes.add(name)
        self._indexed_packs.update(packs)
        if self.cache:
            self.cache.put(name, sealed)
        return name

    def flush(self, index_recovered: bool = False) -> None:
        """Write out partly filled packs, wait for uploads, then index them; with `index_recovered`, the
        packs whose blobs were read from their headers too (a recovery point about to be saved may use
        those blobs: it must not depend on packs that no index lists, which a prune would take for garbage)."""
        for w in self._writers.values():
            w.finish()
        self._wait_uploads()
        if index_recovered:
            with self._lock:
                self._unindexed.update(self._recovered)
                self._recovered = {}
        self.write_index()

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

    # ---- reading --------------------------------------------------------------------------------
    def get(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        try:
            return self.storage.get(name, offset, length)
        except ObjectMissing:
            raise ObjectMissing(f"object {name} is missing from the vault at {self.storage.url}") from None

    def get_many(self, names: Iterable[str]) -> Iterator[Tuple[str, Union[bytes, RecovaultError]]]:
        """Each object of `names` whole, in order, fetched `connections` at a time ahead of the caller (memory:
        about connections + 1 objects), with the error in its place if it could not be read."""
        def fetch(name: str) -> Union[bytes, RecovaultError]:
            try:
                return self.get(name)
            except RecovaultError as e:
                return e
        todo = iter(names)
        with ThreadPoolExecutor(max_workers=self.connections, thread_name_prefix="recovault-read") as pool:
            ahead: Deque[Tuple[str, "Future[Union[bytes, RecovaultError]]"]] = deque()
            for name in todo:
                ahead.append((name, pool.submit(fetch, name)))
                if len(ahead) >= self.connections:
                    break
            while ahead:
                name, fut = ahead.popleft()
                nxt = next(todo, None)
                if nxt is not None:
                    ahead.append((nxt, pool.submit(fetch, nxt)))
                yield name, fut.result()

    def locate(self, blob_id: bytes) -> Location:
        loc = self.locations.get(blob_id)
        if loc is None:
            raise CorruptData(f"blob {blob_id.hex()[:16]} is referenced but no index lists it "
                              "(the vault is damaged; run 'recovault check')")
        return loc

    def read_blob(self, blob_id: bytes) -> bytes:
        loc = self.locate(blob_id)
        cached = self._cached_tree(blob_id, loc)
        if cached is not None:
            return cached
        name = pack_name(loc.pack)
        try:
            raw = self.get(name, loc.offset, loc.length)
        except ObjectMissing:
            # A prune repacked it and deleted the old pack after this index was loaded: the index files
            # written since (loaded now) say where it is. Once; a blob still not found is missing.
            self.load_index()
            loc = self.locate(blob_id)
            name = pack_name(loc.pack)
            raw = self.get(name, loc.offset, loc.length)
        if len(raw) != loc.length:
            raise CorruptData(f"pack {name} is truncated (blob {blob_id.hex()[:16]} cut short)")
        data = self.open_sealed(blob_id, raw, name, loc.raw_length)
        if loc.type == fmt.BLOB_TREE and self.tree_cache is not None:
            self.tree_cache.put(blob_id.hex(), raw)
        return data

    def _cached_tree(self, blob_id: bytes, loc: Location) -> Optional[bytes]:
        """A tree blob from the agent cache, opened (which authenticates it), or None."""
        if loc.type != fmt.BLOB_TREE or self.tree_cache is None:
            return None
        raw = self.tree_cache.get(blob_id.hex())
        if raw is None:
            return None
        try:
            return self.open_sealed(blob_id, raw, "the agent cache", loc.raw_length)
        except CorruptData:
            return None  # damaged or planted: read from the vault (and cached again)

    def open_sealed(self, blob_id: bytes, raw: bytes, pack: str, raw_length: int) -> bytes:
        data = self.sealer.unseal(blob_id, raw, f"blob {blob_id.hex()[:16]} in pack {pack}", max(raw_length, 1))
        if len(data) != raw_length:
            raise CorruptData(f"blob {blob_id.hex()[:16]} in pack {pack} has the wrong length")
        return data

    def read_pack_header(self, name: str, size: Optional[int] = None, data: Optional[bytes] = None) -> List[fmt.BlobEntry]:
        """Decrypt a pack's own header (check, index recovery and repair use it), read from storage, or from
        `data` (the whole pack, already read). CorruptData for a pack too small to hold a trailer, a wrong
        magic, or a header that fails authentication or does not parse."""
        def part(offset: int, length: int) -> bytes:
            return data[offset:offset + length] if data is not None else self.get(name, offset, length)
        if data is not None:
            size = len(data)
        elif size is None:
            size = self.storage.stat(name).size
        try:
            if size < fmt.PACK_TRAILER.size:
                raise ValueError(f"{size} bytes is shorter than its trailer")
            start, hlen = fmt.split_pack(size, part(size - fmt.PACK_TRAILER.size, fmt.PACK_TRAILER.size))
            sealed = part(start, hlen)
            entries = fmt.decode_pack_header(self.sealer.unseal(fmt.AAD_PACK_HEADER, sealed, f"header of pack {name}"))
        except ValueError as e:
            raise CorruptData(f"pack {name} is corrupt: {e}") from None
        if entries and entries[-1].offset + entries[-1].length > start:
            raise CorruptData(f"pack {name} is corrupt: its header lists more bytes than the pack holds")
        return entries


class _PackWriter:
    """Gathers sealed blobs of one type into a pack of about pack_size bytes; on flush, shuffles their
    order (so storage can't read chunk sizes off positions), appends the sealed header and the trailer,
    names the pack by the BLAKE3 of its bytes, and uploads it in the background."""

    def __init__(self, store: BlobStore, blob_type: int) -> None:
        self.store = store
        self.type = blob_type
        self.blobs: List[Tuple[bytes, bytes, int]] = []
        self.size = 0
        self.first = 0  # the number of its first blob (BlobStore.queued)

    def add(self, blob_id: bytes, sealed: bytes, raw_length: int, number: int) -> None:
        if not self.blobs:
            self.first = number
        self.blobs.append((blob_id, sealed, raw_length))
        self.size += len(sealed)
        if self.size >= self.store.pack_size:
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
        header = self.store.sealer.seal(fmt.AAD_PACK_HEADER, fmt.encode_pack_header(entries))
        parts.append(header)
        parts.append(fmt.PACK_TRAILER.pack(len(header), fmt.PACK_MAGIC))
        data = b"".join(parts)
        del parts, blobs  # the sealed blobs now live only in `data`
        pack_id = core.blake3(data)
        store = self.store
        ids = b"".join(e.id for e in entries)
        store._submit_upload(pack_name(pack_id), data, lambda: store._pack_written(pack_id, entries), self.first, ids)
