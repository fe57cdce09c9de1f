"""An erasure-coded set of storages: ``ec:K+M:LOC1,...,LOCn`` (n = K+M), under the ``Storage`` interface.

Each object is cut by ``core.ErasureCode(K, M)`` into K data shards and M parity shards; shard i is stored at
location i under the object's own name, in the shard format of docs/vault-format.md §13: a header bound to the
object's name (magic, version, K, M, index, length, shard size, the object's BLAKE3), then the payload in
64 KiB blocks, each followed by its own BLAKE3 tag keyed by the header's. A ranged read fetches and verifies
only the blocks it needs, from the data shards that hold them; a missing, rotten or misplaced shard (or block)
is treated as missing and rebuilt from any K. Each location holds a descriptor object (``ecset.json``) naming
the set, K, M and the location's index, written at ``init`` and checked at every open.

A put writes every shard (each location's own atomic put); a location that fails fails the put: a set with a
location down is read-only until it is back or replaced (``repair --replace``; no degraded writes, §13). An
object exists, for ``list``, when at least K of its shards do. ``ec_scan`` reports every shard, ``ec_repair``
rebuilds them.
"""
from __future__ import annotations

import heapq
import itertools
import json
import os
import secrets
import struct
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple, TypeVar, Union

from .. import core, jsondoc
from ..errors import CorruptData, ObjectMissing, StorageError, UsageError, VaultNotFound
from .base import ObjectInfo, Storage, validate_name, validate_prefix

__all__ = ["BLOCK", "DESCRIPTOR", "ErasureStorage", "HEADER_SIZE", "ShardHeader", "open_erasure", "parse_location",
           "shard_object"]

MAGIC = b"RVEC"
VERSION = 1
BLOCK = 64 << 10  # payload bytes per checksummed block
TAG = 32  # BLAKE3 tag bytes (header tag, block tags)
_FIELDS = struct.Struct("<4sBBBBQQI4x32s")  # magic, version, K, M, index, length, shard size, block, digest
HEADER_SIZE = _FIELDS.size + TAG  # 96
NAME_CONTEXT = "recovault ec shard v1"
#: Each location's descriptor of the set; never listed, never a vault object's name.
DESCRIPTOR = "ecset.json"
DESCRIPTOR_FORMAT = "recovault-ec-set"
#: Why a shard that is intact is of no use: fewer than K shards of its version (an interrupted put).
INCOMPLETE = "incomplete (a version of the object fewer than K locations hold)"
_CACHE_MAX = 4096  # shard headers remembered per storage (ranged reads of packs then cost one request each)

Data = Union[bytes, bytearray, memoryview]
T = TypeVar("T")


class ShardHeader(NamedTuple):
    """The verified header of one shard (docs/vault-format.md §13)."""

    k: int
    m: int
    index: int
    length: int  # the object's
    shard_size: int  # S = ceil(length / k): payload bytes of every shard
    digest: bytes  # BLAKE3-256 of the whole object: every shard of one put carries the same
    tag: bytes  # keyed BLAKE3 of the fields: keys the block tags

    def blocks(self) -> int:
        return -(-self.shard_size // BLOCK)

    def file_size(self) -> int:
        return HEADER_SIZE + self.shard_size + TAG * self.blocks()

    def for_index(self, name: str, index: int) -> "ShardHeader":
        """The header shard ``index`` of the same put carries."""
        return _header(name, self.k, self.m, index, self.length, self.digest)


class Location(NamedTuple):
    label: str  # as the user wrote it
    storage: Optional[Storage]  # None: not reachable at open
    problem: str  # why not ("" when reachable)


def _name_key(name: str) -> bytes:
    return core.blake3_derive_key(NAME_CONTEXT, name.encode())


def _header(name: str, k: int, m: int, index: int, length: int, digest: bytes) -> ShardHeader:
    s = -(-length // k)
    fields = _FIELDS.pack(MAGIC, VERSION, k, m, index, length, s, BLOCK, digest)
    return ShardHeader(k, m, index, length, s, digest, core.blake3(fields, _name_key(name)))


def _header_bytes(h: ShardHeader) -> bytes:
    return _FIELDS.pack(MAGIC, VERSION, h.k, h.m, h.index, h.length, h.shard_size, BLOCK, h.digest) + h.tag


def parse_header(name: str, raw: bytes) -> Optional[ShardHeader]:
    """The header at the start of ``raw`` if it is a valid one of object ``name``, else None."""
    if len(raw) < HEADER_SIZE:
        return None
    magic, version, k, m, index, length, s, block, digest = _FIELDS.unpack_from(raw)
    if magic != MAGIC or version != VERSION or block != BLOCK or k < 1 or s != -(-length // k):
        return None
    fields = raw[:_FIELDS.size]
    if core.blake3(fields, _name_key(name)) != raw[_FIELDS.size:HEADER_SIZE]:
        return None
    return ShardHeader(k, m, index, length, s, digest, bytes(raw[_FIELDS.size:HEADER_SIZE]))


def versions_of(heads: Sequence[Optional[ShardHeader]]) -> List[List[ShardHeader]]:
    """The valid headers of one object grouped by version (digest and length), most shards first."""
    groups: Dict[bytes, List[ShardHeader]] = {}
    for h in heads:
        if h is not None:
            groups.setdefault(h.digest + struct.pack("<Q", h.length), []).append(h)
    return sorted(groups.values(), key=len, reverse=True)


def _block_tag(h: ShardHeader, j: int, block: Data) -> bytes:
    return core.blake3(block, core.blake3(h.tag + struct.pack("<Q", j)))


def shard_object(h: ShardHeader, payload: Data) -> bytes:
    """The bytes stored for one shard: header, then each block of ``payload`` followed by its tag."""
    view = memoryview(payload)
    parts = [_header_bytes(h)]
    for j in range(h.blocks()):
        block = view[j * BLOCK:(j + 1) * BLOCK]
        parts += [block, _block_tag(h, j, block)]
    return b"".join(parts)


def _block_span(h: ShardHeader, j0: int, j1: int) -> Tuple[int, int]:
    """(offset, length) in a shard object of blocks [j0, j1) with their tags."""
    start = HEADER_SIZE + j0 * (BLOCK + TAG)
    end = HEADER_SIZE + min(j1 * (BLOCK + TAG), h.shard_size + TAG * h.blocks())
    return start, end - start


def block_payloads(h: ShardHeader, j0: int, j1: int, raw: bytes) -> List[Optional[bytes]]:
    """Each block of [j0, j1) in ``raw`` (read at ``_block_span``): its payload if intact, else None."""
    view, pos, out = memoryview(raw), 0, []
    for j in range(j0, j1):
        size = min(BLOCK, h.shard_size - j * BLOCK)
        block, tag = view[pos:pos + size], view[pos + size:pos + size + TAG]
        out.append(bytes(block) if len(tag) == TAG and _block_tag(h, j, block) == tag else None)
        pos += size + TAG
    return out


def verify_blocks(h: ShardHeader, j0: int, j1: int, raw: bytes) -> Optional[bytes]:
    """The payload of blocks [j0, j1) if ``raw`` (read at ``_block_span``) holds them all intact, else None."""
    if len(raw) != _block_span(h, j0, j1)[1]:  # first: a header may claim any length (a forged one, §13)
        return None
    blocks = block_payloads(h, j0, j1, raw)
    if any(b is None for b in blocks):
        return None
    return b"".join(blocks)  # type: ignore[arg-type]


def _blocks_held(raw: bytes) -> int:
    """How many blocks (with their tags) `raw`, read from a block boundary, can hold at most."""
    return -(-len(raw) // (BLOCK + TAG))


# -- the location string --------------------------------------------------------------------------------


class EcLocation(NamedTuple):
    k: int
    m: int
    locations: List[str]


def parse_location(location: str) -> EcLocation:
    """``ec:K+M:LOC1,...,LOCn`` checked: 1 <= K, 1 <= M, K+M <= 255, n = K+M, no location twice, none itself
    an ec set. ``UsageError`` otherwise."""
    form = "ec:K+M:LOC1,...,LOCn (e.g. ec:4+2:/mnt/d1,/mnt/d2,/mnt/d3,/mnt/d4,/mnt/d5,/mnt/d6)"
    _, _, rest = location.partition(":")
    code, sep, locs = rest.partition(":")
    k_text, plus, m_text = code.partition("+")
    if not sep or not plus or not k_text.isdigit() or not m_text.isdigit():
        raise UsageError(f"invalid erasure-coded vault location {location!r}: write {form}")
    k, m = int(k_text), int(m_text)
    if k < 1 or m < 1 or k + m > 255:
        raise UsageError(f"invalid erasure-coded vault location {location!r}: K must be at least 1, M at least 1 "
                         f"and K+M at most 255 (got {k}+{m})")
    names = locs.split(",") if locs else []
    for name in names:
        if name.lower().startswith("ec:"):
            raise UsageError(f"invalid erasure-coded vault location {location!r}: a location cannot itself be "
                             f"an erasure-coded set ({name})")
    if len(names) != k + m or "" in names:
        raise UsageError(f"invalid erasure-coded vault location {location!r}: {k}+{m} needs {k + m} locations, "
                         f"got {len([n for n in names if n])}{' (an empty one)' if '' in names else ''}")
    return EcLocation(k, m, names)


def _validate(name: str) -> str:
    """``validate_name``, and not the descriptor's name (reserved in every location)."""
    if validate_name(name) == DESCRIPTOR:
        raise ValueError(f"invalid object name {name!r}: reserved for the erasure-coded set's descriptor")
    return name


def _identity(storage: Storage) -> str:
    root = getattr(storage, "root", None)
    return os.path.realpath(root) if root is not None else storage.url.rstrip("/")


# -- the storage ----------------------------------------------------------------------------------------


class ErasureStorage(Storage):
    """K data + M parity shards of every object across K+M storages (``locations[i]`` holds shard i).

    ``set_id`` is the set's identity, from the descriptors (open_erasure checks them). A location that is
    None was not reachable at open: reads rebuild around it, writes fail naming it."""

    def __init__(self, k: int, m: int, locations: Sequence[Location], set_id: str = "") -> None:
        if len(locations) != k + m:
            raise ValueError(f"{k}+{m} needs {k + m} locations, got {len(locations)}")
        self.k, self.m, self.n = k, m, k + m
        self.code = core.ErasureCode(k, m)
        self.locations = list(locations)
        self.set_id = set_id
        self._pool = ThreadPoolExecutor(max_workers=self.n, thread_name_prefix="ec")
        self._headers: "OrderedDict[str, ShardHeader]" = OrderedDict()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"ec:{self.k}+{self.m}:" + ",".join(loc.label for loc in self.locations)

    def _where(self, i: int) -> str:
        return f"location {i + 1} ({self.locations[i].label})"

    # -- writes -------------------------------------------------------------------------------------

    def _shards(self, name: str, data: Data) -> List[bytes]:
        _validate(name)
        head = _header(name, self.k, self.m, 0, len(data), core.blake3(data))
        payloads = self.code.encode(data) if len(data) else [b""] * self.n
        return [shard_object(head.for_index(name, i), p) for i, p in enumerate(payloads)]

    def _reachable(self, name: str) -> List[Storage]:
        down = [f"{self._where(i)} not reachable ({loc.problem})" for i, loc in enumerate(self.locations)
                if loc.storage is None]
        if down:
            first = next(loc.label for loc in self.locations if loc.storage is None)
            raise StorageError(f"cannot write {name} to the ec:{self.k}+{self.m} set: {'; '.join(down)} (writes "
                               "need every location: the vault is read-only until the location is back, or replaced "
                               f"with 'recovault repair --replace {first}=NEW')")
        return [loc.storage for loc in self.locations]  # type: ignore[misc]

    def _write(self, i: int, call: str, name: str, shard: bytes):
        storage = self.locations[i].storage
        try:
            return getattr(storage, call)(name, shard)
        except StorageError as exc:
            raise type(exc)(f"cannot write {name} to {self._where(i)} of the ec:{self.k}+{self.m} set: {exc}") \
                from exc

    def put(self, name: str, data: Data) -> None:
        shards = self._shards(name, data)
        self._reachable(name)
        self._forget(name)
        list(self._pool.map(lambda i: self._write(i, "put", name, shards[i]), range(self.n)))

    def put_if_absent(self, name: str, data: Data) -> bool:
        """Race-free: the conditional create of shard 0 decides (of two writers, one wins there); the winner
        then writes the other shards."""
        shards = self._shards(name, data)
        self._reachable(name)
        if not self._write(0, "put_if_absent", name, shards[0]):
            return False
        self._forget(name)
        list(self._pool.map(lambda i: self._write(i, "put", name, shards[i]), range(1, self.n)))
        return True

    def delete(self, name: str) -> None:
        _validate(name)
        self._forget(name)
        for i, loc in enumerate(self.locations):
            if loc.storage is not None:
                try:
                    loc.storage.delete(name)
                except StorageError as exc:
                    raise type(exc)(f"cannot delete {name} from {self._where(i)}: {exc}") from exc

    # -- Object Lock ----------------------------------------------------------------------------------

    def can_lock_objects(self) -> bool:
        """Every location can lock (S3 Object Lock), and every one is reachable: a location that could not
        would leave its shards deletable, and with M+1 of them an object gone before its time."""
        return all(loc.storage is not None and loc.storage.can_lock_objects() for loc in self.locations)

    def lock_new_objects(self, days: int, prefixes: Tuple[str, ...]) -> bool:
        """Each location locks the shards put from now on, for the same period: a delete refused as locked
        is refused by the first location, before any shard is deleted (shards put a moment apart unlock a
        moment apart: a delete at that very moment may leave the last shards, which the next prune deletes)."""
        if not self.can_lock_objects():
            return False
        return all([loc.storage.lock_new_objects(days, prefixes) for loc in self.locations])  # type: ignore[union-attr]

    # -- headers --------------------------------------------------------------------------------------

    def _forget(self, name: str) -> None:
        with self._lock:
            self._headers.pop(name, None)

    def _remember(self, name: str, h: ShardHeader) -> ShardHeader:
        with self._lock:
            self._headers[name] = h
            self._headers.move_to_end(name)
            while len(self._headers) > _CACHE_MAX:
                self._headers.popitem(last=False)
        return h

    def _map(self, fn: Callable[[int], T], shards: List[int]) -> List[T]:
        """``fn`` of each shard index, at once on the pool (one alone in this thread: most ranged reads)."""
        return [fn(shards[0])] if len(shards) == 1 else list(self._pool.map(fn, shards))

    def _read(self, i: int, name: str, offset: int, length: Optional[int]) -> Tuple[Optional[bytes], str]:
        """(bytes, "") from shard i, or (None, why not: "missing", "unreachable", an error)."""
        storage = self.locations[i].storage
        if storage is None:
            return None, "unreachable"
        try:
            return storage.get(name, offset, length), ""
        except ObjectMissing:
            return None, "missing"
        except StorageError as exc:
            return None, str(exc)

    def _all_headers(self, name: str) -> Tuple[List[Optional[ShardHeader]], Dict[int, str]]:
        """The headers of ``name`` (None where missing, invalid or not read) and why each read one is absent:
        the first K locations' (one read each, at once), and the others' only when those do not agree."""
        heads: List[Optional[ShardHeader]] = [None] * self.n
        why: Dict[int, str] = {}
        for batch in (range(self.k), range(self.k, self.n)):
            reads = self._map(lambda i: self._read(i, name, 0, HEADER_SIZE), list(batch))
            for i, (raw, problem) in zip(batch, reads):
                h = parse_header(name, raw) if raw is not None else None
                if h is not None and (h.k, h.m, h.index) == (self.k, self.m, i):
                    heads[i] = h
                else:
                    why[i] = problem or "corrupt"
            if not why and len({h.digest + struct.pack("<Q", h.length) for h in heads if h}) == 1:
                break  # K headers of one version: the object is there
        return heads, why

    def _versions(self, name: str) -> Tuple[List[ShardHeader], Dict[int, str]]:
        """The versions of ``name`` that at least K locations may hold (one header each), most shards first.
        A shard whose header is rotten may be of any version (its blocks are checked against the header the
        others carry: only the index differs), so it counts towards each."""
        heads, why = self._all_headers(name)
        ordered = versions_of(heads)
        rotten = sum(1 for w in why.values() if w == "corrupt")
        for g in ordered:
            if len(g) + rotten < self.k:  # too few to read: an interrupted put, or rot that happens to parse
                why.update({h.index: INCOMPLETE for h in g})
        return [g[0].for_index(name, 0) for g in ordered if len(g) + rotten >= self.k], why

    def _failure(self, name: str, why: Dict[int, str]) -> StorageError:
        """ObjectMissing when the shards are missing (or too few of one version: an interrupted put), else
        CorruptData; the message names each location and what is wrong there."""
        if all(w in ("missing", "unreachable") for w in why.values()) and len(why) == self.n:
            return ObjectMissing(f"object {name} is missing from {self.url}")
        parts = [f"{self._where(i)}: {w}" for i, w in sorted(why.items())]
        cls = ObjectMissing if all(w in ("missing", "unreachable", INCOMPLETE) for w in why.values()) else CorruptData
        return cls(f"object {name} cannot be read from the ec:{self.k}+{self.m} set: fewer than {self.k} of its "
                   f"{self.n} shards are intact ({'; '.join(parts)})")

    # -- reads ----------------------------------------------------------------------------------------

    def get(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        """The bytes [offset, offset+length) of ``name`` from the blocks of the data shards that hold them;
        a shard (or block) missing or corrupt is rebuilt from any K on the same blocks."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if length is not None and length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        _validate(name)
        with self._lock:
            cached = self._headers.get(name)
        if cached is not None:
            got, _ = self._get_version(name, cached, offset, length)
            if got is not None:
                return got
            self._forget(name)
        versions, why = self._versions(name)
        for h in versions:
            got, problems = self._get_version(name, h, offset, length)
            if got is not None:
                self._remember(name, h)
                return got
            why.update(problems)
        raise self._failure(name, why)

    def _get_version(self, name: str, h: ShardHeader, offset: int,
                     length: Optional[int]) -> Tuple[Optional[bytes], Dict[int, str]]:
        """The range from version ``h``: each data shard it spans read on its own blocks; if one fails, the
        union of those blocks is read from any K shards and the lost ones rebuilt. (None, why) if fewer than
        K are intact."""
        end = h.length if length is None else min(h.length, offset + length)
        if offset >= end:
            return b"", {}
        s = h.shard_size
        want = {i: (max(offset - i * s, 0), min(end - i * s, s)) for i in range(offset // s, (end - 1) // s + 1)}
        spans = {i: (a // BLOCK, -(-b // BLOCK)) for i, (a, b) in want.items()}
        reads = self._map(lambda i: self._read(i, name, *_block_span(h, *spans[i])), list(want))
        got: Dict[int, Optional[bytes]] = {}
        why: Dict[int, str] = {}
        for i, (raw, problem) in zip(want, reads):
            got[i] = verify_blocks(h.for_index(name, i), *spans[i], raw) if raw is not None else None
            if got[i] is None:
                why[i] = problem or "corrupt"
        if why:
            j0, j1 = min(a for a, _ in spans.values()), max(b for _, b in spans.values())
            rebuilt, more = self._rebuild(name, h, list(want), set(why), j0, j1)
            why.update(more)
            if rebuilt is None:
                return None, why
            got, spans = rebuilt, {i: (j0, j1) for i in want}
        out = b"".join(got[i][a - spans[i][0] * BLOCK:b - spans[i][0] * BLOCK]  # type: ignore[index]
                       for i, (a, b) in sorted(want.items()))
        if offset == 0 and end == h.length and core.blake3(out) != h.digest:
            return None, {i: "corrupt" for i in want}
        return out, why

    def _rebuild(self, name: str, h: ShardHeader, want: List[int], bad: Set[int], j0: int,
                 j1: int) -> Tuple[Optional[Dict[int, bytes]], Dict[int, str]]:
        """Blocks [j0, j1) of the shards ``want``, each block rebuilt from any K intact blocks of its column
        (so rot in more than M shards is read around while no column has more than M bad blocks): K shards
        read first, those not known ``bad`` first, the others only if some column still lacks K."""
        order = [i for i in want if i not in bad] + [i for i in range(self.n) if i not in want] + sorted(bad)
        start, size = _block_span(h, j0, j1)
        blocks: Dict[int, List[Optional[bytes]]] = {}
        why: Dict[int, str] = {}
        for batch in (order[:self.k], order[self.k:]):
            reads = self._map(lambda i: self._read(i, name, start, size), batch)
            if max((_blocks_held(raw) for raw, _ in reads if raw is not None), default=0) < j1 - j0:
                # no shard holds the last blocks: a header that claims more than was stored (no column
                # past them can be rebuilt; never walk or allocate blocks that are not there)
                why.update({i: problem or "corrupt" for i, (_, problem) in zip(batch, reads)})
                continue
            for i, (raw, problem) in zip(batch, reads):
                blocks[i] = block_payloads(h.for_index(name, i), j0, j1, raw) if raw is not None else \
                    [None] * (j1 - j0)
                if raw is None or None in blocks[i]:
                    why[i] = problem or "corrupt"
            if all(sum(blocks[i][c] is not None for i in blocks) >= self.k for c in range(j1 - j0)):
                break
        out: Dict[int, List[bytes]] = {i: [] for i in want}
        for c in range(j1 - j0):
            present = [blocks[i][c] if i in blocks else None for i in range(self.n)]
            if sum(p is not None for p in present) < self.k:
                return None, why
            lost = [i for i in want if present[i] is None]
            fixed = dict(zip(lost, self.code.reconstruct(present, lost))) if lost else {}
            for i in want:
                out[i].append(present[i] if present[i] is not None else fixed[i])  # type: ignore[arg-type]
        return {i: b"".join(parts) for i, parts in out.items()}, why

    # -- for check and repair (ec_scan, ec_repair) ------------------------------------------------------

    def read_shards(self, name: str, indexes: List[int], whole: bool) -> Dict[int, Optional[bytes]]:
        """Each shard of ``name`` at ``indexes`` as stored (``whole``, else its first HEADER_SIZE bytes), at
        once; None where it cannot be read."""
        reads = self._map(lambda i: self._read(i, name, 0, None if whole else HEADER_SIZE)[0], indexes)
        return dict(zip(indexes, reads))

    def read_version(self, name: str, h: ShardHeader) -> bytes:
        """The whole object of version ``h`` (from any K shards, checked against its digest); ObjectMissing or
        CorruptData as ``get`` says them. Forgets the header remembered for ``name`` (repair rewrites it)."""
        self._forget(name)
        data, why = self._get_version(name, h, 0, None)
        if data is None:
            raise self._failure(name, why)
        return data

    def forget(self, name: str) -> None:
        """Drop the header remembered for ``name`` (its shards were rewritten or deleted behind the set)."""
        self._forget(name)

    # -- listings -------------------------------------------------------------------------------------

    def _header_of(self, name: str) -> ShardHeader:
        """A valid header of ``name``: cached, or the version most locations hold."""
        with self._lock:
            cached = self._headers.get(name)
        if cached is not None:
            return cached
        versions, why = self._versions(name)
        if not versions:
            raise self._failure(name, why)
        return self._remember(name, versions[0])

    def stat(self, name: str) -> ObjectInfo:
        """The object's length from a shard header (cached, else the headers of K locations: _all_headers)
        and the mtime of the first location holding a shard (as in list_info)."""
        _validate(name)
        h = self._header_of(name)
        for loc in self.locations:
            if loc.storage is not None:
                try:
                    return ObjectInfo(name=name, size=h.length, mtime=loc.storage.stat(name).mtime)
                except ObjectMissing:
                    continue
        self._forget(name)
        raise ObjectMissing(f"object {name} is missing from {self.url}")

    def _merged(self, prefix: str) -> Iterator[List[ObjectInfo]]:
        """The listings of every reachable location merged: per name, the shards' infos."""
        validate_prefix(prefix)
        streams = [loc.storage.list_info(prefix) for loc in self.locations if loc.storage is not None]
        merged = heapq.merge(*streams, key=lambda info: info.name)
        for name, group in itertools.groupby(merged, key=lambda info: info.name):
            infos = list(group)
            if len(infos) >= self.k and name != DESCRIPTOR:
                yield infos

    def list(self, prefix: str = "") -> Iterator[str]:
        """Names with at least K shards, from one listing of every location (names only: no reads)."""
        for infos in self._merged(prefix):
            yield infos[0].name

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """:meth:`list` with each object's length from a shard header (cached, else one ranged read of
        ``HEADER_SIZE`` bytes at K locations per object) and the mtime of the first location holding a shard."""
        for infos in self._merged(prefix):
            name = infos[0].name
            try:
                h = self._header_of(name)
            except (ObjectMissing, CorruptData):
                continue  # deleted meanwhile, or too damaged to read: as a stat would say
            yield ObjectInfo(name=name, size=h.length, mtime=infos[0].mtime)

    def close(self) -> None:
        """Close the locations and stop the pool's threads; like a local directory, the set can still be used
        afterwards (a new pool starts its threads when needed)."""
        pool, self._pool = self._pool, ThreadPoolExecutor(max_workers=self.n, thread_name_prefix="ec")
        pool.shutdown(wait=True)
        for loc in self.locations:
            if loc.storage is not None:
                loc.storage.close()


# -- opening and the descriptors --------------------------------------------------------------------------


class Descriptor(NamedTuple):
    set_id: str
    k: int
    m: int
    index: int

    def encode(self) -> bytes:
        fields = {"format": DESCRIPTOR_FORMAT, "version": 1, "set": self.set_id, "k": self.k, "m": self.m,
                  "index": self.index}
        return json.dumps(dict(fields, check=_descriptor_check(fields)), sort_keys=True).encode() + b"\n"

    @staticmethod
    def decode(raw: bytes) -> "Descriptor":
        """The descriptor in ``raw``; ``CorruptData`` if it does not parse, or if its ``check`` (absent from
        descriptors written before it) does not match its other fields: a rotten byte, not another set."""
        try:
            doc = jsondoc.parse(raw)
            if doc.get("format") != DESCRIPTOR_FORMAT or doc.get("version") != 1:
                raise ValueError("not a descriptor of version 1")
            if "check" in doc and doc["check"] != _descriptor_check({k: v for k, v in doc.items() if k != "check"}):
                raise ValueError("its check does not match its fields (a damaged byte)")
            fields = doc["set"], doc["k"], doc["m"], doc["index"]
            if type(fields[0]) is not str or any(type(v) is not int for v in fields[1:]):
                raise ValueError("set is not a string, or k, m or index not an integer")
            return Descriptor(*fields)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptData(f"the erasure-coded set's descriptor is damaged: {exc}") from None


def _descriptor_check(fields: Dict[str, object]) -> str:
    """BLAKE3-256 (hex) of a descriptor's other fields as JSON with sorted keys (docs/vault-format.md §13)."""
    return core.blake3(json.dumps(fields, sort_keys=True).encode()).hex()


def _open_one(label: str, create: bool) -> Location:
    from . import _open_backend, faults
    plan = faults.from_environment()
    try:
        storage = _open_backend(label, create)
        if plan is not None:  # kill -9 points (and tallies) count each location's calls too: repair makes them
            storage = faults.FaultStorage(storage, faults.FaultPlan(kill=plan.kill))  # directly (no other fault)
        return Location(label, storage, "")
    except UsageError:
        raise
    except (VaultNotFound, StorageError) as exc:
        return Location(label, None, str(exc))


def _descriptor(loc: Location) -> Tuple[Optional[Descriptor], str]:
    assert loc.storage is not None
    try:
        return Descriptor.decode(loc.storage.get(DESCRIPTOR)), ""
    except ObjectMissing:
        return None, "no erasure-coded set there"
    except (StorageError, CorruptData) as exc:
        return None, str(exc)


def open_erasure(location: str, create: bool) -> ErasureStorage:
    """Open (``create``: for init, set up) the set at ``location``; see the module's docstring."""
    spec = parse_location(location)
    new_dirs = [d for d in map(_local_dir, spec.locations) if d and not os.path.lexists(d)] if create else []
    locs = [_open_one(label, create) for label in spec.locations]
    try:
        return _check_set(location, spec, locs, create)
    except BaseException:
        for loc in locs:
            if loc.storage is not None:
                loc.storage.close()
        for d in new_dirs:  # a refused init leaves no directory it made (their parents, if it made any, stay)
            try:
                os.rmdir(d)
            except OSError:
                pass
        raise


def _local_dir(label: str) -> Optional[str]:
    """The directory a location that is a local path names (None for a URL)."""
    from . import find_scheme
    return None if find_scheme(label) is not None else os.path.abspath(os.path.expanduser(label))


def _check_set(location: str, spec: EcLocation, locs: List[Location], create: bool) -> ErasureStorage:
    seen: Dict[str, int] = {}
    for i, loc in enumerate(locs):
        if loc.storage is not None:
            ident = _identity(loc.storage)
            if ident in seen:
                raise UsageError(f"{location}: location {i + 1} ({loc.label}) is location {seen[ident] + 1} "
                                 f"({locs[seen[ident]].label}) again: each shard needs its own location")
            seen[ident] = i
    if create:
        down = [f"{loc.label} ({loc.problem})" for loc in locs if loc.storage is None]
        if down:
            raise StorageError(f"cannot create {location}: not reachable: {'; '.join(down)}")
        return _create_set(location, spec, locs)
    descs = [_descriptor(loc) if loc.storage is not None else (None, loc.problem) for loc in locs]
    found = [(i, d) for i, (d, _) in enumerate(descs) if d is not None]
    if not found:
        raise VaultNotFound(f"no erasure-coded vault at {location} (no location holds its descriptor; "
                            "run 'recovault init' first)")
    set_id = found[0][1].set_id
    for i, d in found:
        if d.set_id != set_id:
            raise UsageError(f"{location}: location {i + 1} ({locs[i].label}) belongs to another erasure-coded "
                             f"set than location {found[0][0] + 1} ({locs[found[0][0]].label})")
        if (d.k, d.m, d.index) != (spec.k, spec.m, i):
            raise UsageError(f"{location}: location {i + 1} ({locs[i].label}) is location {d.index + 1} of an "
                             f"ec:{d.k}+{d.m} set: give the set's locations in their order")
    if len(found) < spec.k:
        missing = [f"{locs[i].label} ({why})" for i, (d, why) in enumerate(descs) if d is None]
        raise StorageError(f"cannot open {location}: only {len(found)} of its {len(locs)} locations are "
                           f"reachable, {spec.k} needed; missing: {'; '.join(missing)}")
    usable = [loc if descs[i][0] is not None else Location(loc.label, None, descs[i][1])
              for i, loc in enumerate(locs)]
    for i, loc in enumerate(locs):
        if loc.storage is not None and usable[i].storage is None:
            loc.storage.close()
    return ErasureStorage(spec.k, spec.m, usable, set_id)


def _create_set(location: str, spec: EcLocation, locs: List[Location]) -> ErasureStorage:
    """Write a new set's descriptors: refused (nothing written) if a location holds another set's or a vault;
    the same set's descriptors already in place are kept (init then finds its config)."""
    descs = [_descriptor(loc) for loc in locs]
    existing = {d.set_id for d, _ in descs if d is not None}
    for i, (d, why) in enumerate(descs):
        if d is None and why != "no erasure-coded set there":
            raise StorageError(f"cannot create {location}: location {i + 1} ({locs[i].label}): {why}")
        if d is None and locs[i].storage.exists("config"):  # type: ignore[union-attr]
            raise UsageError(f"{location}: location {i + 1} ({locs[i].label}) already holds a vault: choose an "
                             "empty location for each shard")
        whole = len(existing) == 1 and all(e is not None for e, _ in descs)  # this very set again
        if d is not None and (not whole or (d.k, d.m, d.index) != (spec.k, spec.m, i)):
            raise UsageError(f"{location}: location {i + 1} ({locs[i].label}) already belongs to another "
                             f"erasure-coded set (ec:{d.k}+{d.m}, location {d.index + 1})")
    set_id = existing.pop() if existing else secrets.token_hex(16)
    if all(d is not None for d, _ in descs):
        return ErasureStorage(spec.k, spec.m, locs, set_id)
    for i, loc in enumerate(locs):
        assert loc.storage is not None
        loc.storage.put_if_absent(DESCRIPTOR, Descriptor(set_id, spec.k, spec.m, i).encode())
    return ErasureStorage(spec.k, spec.m, locs, set_id)
