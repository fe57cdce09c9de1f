"""Pack ranges fetched from a store whose packs are not local files (an object store), held in memory for the
C++ restore engine and for Python, as restic's restorer reads each pack once for every file that needs it.

A :class:`PackCache` fetches the needed ranges of packs (merged when less than ``MERGE_GAP`` apart, long ones
cut into ``FETCH_PART`` pieces, all on the vault's ``connections`` at once) into one anonymous memory file
(memfd) per pack, at their offsets; the engine reads such a pack as the file ``/proc/self/fd/N``. Each
``fetch`` returns a :class:`FetchedPacks` that pins what it asked for until closed; what is held and pinned
by nobody is kept, up to ``keep`` bytes (least recently used dropped first), so the next fetch asks the store
only for what is not held yet: a restore in batches reads each part of a pack once, not once a batch.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Iterable, Iterator, List, Optional, Tuple

from .errors import RecovaultError

if TYPE_CHECKING:
    from .vault.repo import Vault

Span = Tuple[int, int]  # (offset, length)

#: Needed ranges of one pack closer than this are fetched in one request (the bytes between are cheaper
#: than another round trip).
MERGE_GAP = 1 << 20
#: A merged range longer than this is fetched in parts of this size on several connections at once (a
#: default pack, 16 MiB and a last blob, is one request: moto pays per request in proportion to the object, Azurite is as
#: fast with one 16 MiB get as with four of 4 MiB: bench/cloud.py, docs/performance.md).
FETCH_PART = 24 << 20  # (a pack can pass its target size by up to a blob)
#: Fetched bytes a restore keeps when no batch needs them any more (the next batch may).
KEEP = 256 << 20


def merged_spans(ranges: Iterable[Span], gap: int = MERGE_GAP) -> List[Span]:
    """The (offset, length) ranges merged into as few as possible: overlapping, adjacent or less than `gap`
    bytes apart ranges become one."""
    out: List[Span] = []
    for off, length in sorted(ranges):
        if out and off <= out[-1][0] + out[-1][1] + gap:
            start = out[-1][0]
            out[-1] = (start, max(start + out[-1][1], off + length) - start)
        else:
            out.append((off, length))
    return out


def missing_spans(needed: Iterable[Span], held: List[Span]) -> List[Span]:
    """The parts of `needed` that `held` (merged, sorted, no gap) does not cover."""
    out: List[Span] = []
    for off, length in merged_spans(needed, gap=0):
        end = off + length
        for h_off, h_len in held:
            if h_off + h_len <= off or h_off >= end:
                continue
            if h_off > off:
                out.append((off, h_off - off))
            off = max(off, h_off + h_len)
            if off >= end:
                break
        if off < end:
            out.append((off, end - off))
    return out


def split_spans(spans: Iterable[Span], part: int) -> Iterator[Span]:
    """The spans cut into pieces of at most `part` bytes."""
    for off, length in spans:
        for start in range(off, off + length, part):
            yield start, min(part, off + length - start)


@dataclass
class _Held:
    """One pack's fetched bytes: a memory file, the spans it holds, and the fetches that pin it."""
    fd: int
    spans: List[Span] = field(default_factory=list)  # merged, sorted, with no gap
    pins: int = 0

    @property
    def size(self) -> int:
        return sum(n for _o, n in self.spans)


class PackCache:
    """Ranges of packs fetched into memory files, shared by the fetches of one job (see the module doc)."""

    def __init__(self, vault: "Vault", keep: int = KEEP) -> None:
        self.vault = vault
        self.keep = keep
        self._held: "OrderedDict[str, _Held]" = OrderedDict()  # least recently fetched first
        self._lock = threading.Lock()

    def fetch(self, spans: Dict[str, List[Span]]) -> "FetchedPacks":
        """Make the `spans` of each pack held (fetching what is not, in parallel), pinned until the returned
        FetchedPacks is closed. A pack that could not be fetched (pruned since the index was loaded, a store
        error) is not in it: ``error(name)`` says why."""
        parts: List[Tuple[str, int, int]] = []
        with self._lock:
            for name, ranges in spans.items():
                held = self._held.get(name)
                if held is None:
                    held = self._held[name] = _Held(os.memfd_create("recovault-pack", os.MFD_CLOEXEC))
                self._held.move_to_end(name)
                held.pins += 1
                todo = missing_spans(merged_spans(ranges), held.spans)  # gaps merged in, held bytes not
                parts.extend((name, off, n) for off, n in split_spans(todo, FETCH_PART))
        fetched = FetchedPacks(self, spans)
        try:
            if parts:
                with ThreadPoolExecutor(max_workers=min(len(parts), max(1, self.vault.blobs.connections)),
                                        thread_name_prefix="recovault-fetch") as pool:
                    for name, got in zip((p[0] for p in parts), pool.map(lambda p: self._get(*p), parts)):
                        if isinstance(got, RecovaultError):
                            fetched.errors.setdefault(name, got)
        except BaseException:
            fetched.close()
            raise
        return fetched

    def _get(self, name: str, offset: int, length: int) -> Optional[RecovaultError]:
        """Fetch [offset, offset + length) of pack `name` into its memory file. A range cut short (a truncated
        pack) is held only as far as it goes: reading past it comes back short."""
        try:
            data = self.vault.blobs.get(name, offset, length)
        except RecovaultError as e:
            return e
        with self._lock:
            held = self._held[name]
        if data:
            os.pwrite(held.fd, data, offset)
            with self._lock:
                held.spans = merged_spans(held.spans + [(offset, len(data))], gap=0)
        return None

    def fd(self, name: str) -> int:
        with self._lock:
            return self._held[name].fd

    def unpin(self, names: Iterable[str]) -> None:
        """The fetch that pinned `names` is done: drop what no fetch pins beyond `keep` bytes, oldest first (and
        packs that hold nothing: their fetch failed)."""
        with self._lock:
            for name in names:
                self._held[name].pins -= 1
            self._drop(self.keep)

    def close(self) -> None:
        """Free every pack no fetch pins (all of them once the job is over)."""
        with self._lock:
            self._drop(0)

    def _drop(self, keep: int) -> None:
        """(Under the lock.) Drop unpinned packs, oldest first, while more than `keep` bytes are held, and the
        unpinned packs that hold nothing."""
        total = sum(h.size for h in self._held.values())
        for name in list(self._held):
            held = self._held[name]
            if held.pins == 0 and (total > keep or not held.size):
                total -= held.size
                del self._held[name]
                os.close(held.fd)


class FetchedPacks:
    """What one :meth:`PackCache.fetch` asked for, pinned in memory until closed: read by the engine as files
    (``path``) and by Python (``read``)."""

    def __init__(self, cache: PackCache, names: Iterable[str]) -> None:
        self.cache = cache
        self.names = frozenset(names)
        self.errors: Dict[str, RecovaultError] = {}
        self._closed = False

    def __contains__(self, name: object) -> bool:
        return name in self.names and name not in self.errors

    def path(self, name: str) -> Optional[str]:
        """The fetched pack as a file the engine opens, or None when it is not held."""
        return f"/proc/self/fd/{self.cache.fd(name)}" if name in self else None

    def read(self, name: str, offset: int, length: int) -> bytes:
        """`length` bytes at `offset` of a fetched pack (shorter where the pack was cut short)."""
        return os.pread(self.cache.fd(name), length, offset)

    def error(self, name: str) -> Optional[RecovaultError]:
        return self.errors.get(name)

    def raise_first(self) -> None:
        """Raise the first fetch error, if any pack could not be fetched."""
        for e in self.errors.values():
            raise e

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.cache.unpin(self.names)  # (a cache that keeps nothing frees them here)

    def __enter__(self) -> "FetchedPacks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
