"""A copy-on-write view of a storage, for dry runs: `OverlayStorage(inner, scratch)` reads `inner`, but every
write (put, conditional create, stream, delete) lands in `scratch` (a local directory) or a set of deleted
names, and later reads see them. The storage it wraps is never written to: a job run on the overlay does
all it would do, and what it did can be inspected, while the store is left as it was.

The overlay never locks objects (`can_lock_objects` is False) and offers no local paths (reads go through
`get`, so they see what was written on top).
"""
from __future__ import annotations

import heapq
import shutil
import tempfile
import threading
from typing import BinaryIO, Iterator, Optional, Set, Tuple

from ..errors import ObjectMissing
from .base import ObjectInfo, Storage
from .local import LocalStorage
from .wrappers import Data, StorageWrapper


class OverlayStorage(StorageWrapper):
    """Reads `inner` under what was written on top; writes only to a scratch directory (see the module)."""

    def __init__(self, inner: Storage, scratch_dir: Optional[str] = None) -> None:
        super().__init__(inner)
        self._own_dir = scratch_dir is None
        self._dir = scratch_dir or tempfile.mkdtemp(prefix="recovault-overlay-")
        self._upper = LocalStorage(self._dir, create=True)
        self._deleted: Set[str] = set()
        self._lock = threading.Lock()

    @property
    def written(self) -> Tuple[str, ...]:
        """The names put on top (sorted); deleted ones excluded."""
        return tuple(self._upper.list())

    @property
    def deleted(self) -> Tuple[str, ...]:
        """The names deleted from `inner` as seen through the overlay (sorted)."""
        with self._lock:
            return tuple(sorted(self._deleted))

    def _hidden(self, name: str) -> bool:
        with self._lock:
            return name in self._deleted

    def put(self, name: str, data: Data) -> None:
        self._upper.put(name, data)
        with self._lock:
            self._deleted.discard(name)

    def put_if_absent(self, name: str, data: Data) -> bool:
        if not self._hidden(name) and self._inner.exists(name):
            return False
        if not self._upper.put_if_absent(name, data):  # atomic among the overlay's own writers
            return False
        with self._lock:
            self._deleted.discard(name)
        return True

    def put_stream(self, name: str, stream: BinaryIO, size: int) -> None:
        self._upper.put_stream(name, stream, size)
        with self._lock:
            self._deleted.discard(name)

    def delete(self, name: str) -> None:
        self._upper.delete(name)
        with self._lock:
            self._deleted.add(name)

    def get(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        try:
            return self._upper.get(name, offset, length)
        except ObjectMissing:
            if self._hidden(name):
                raise
        return self._inner.get(name, offset, length)

    def stat(self, name: str) -> ObjectInfo:
        try:
            return self._upper.stat(name)
        except ObjectMissing:
            if self._hidden(name):
                raise
        return self._inner.stat(name)

    exists = Storage.exists  # through stat: above, then below unless deleted (not the inner store's own)

    def list(self, prefix: str = "") -> Iterator[str]:
        for info in self.list_info(prefix):
            yield info.name

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        upper = list(self._upper.list_info(prefix))
        on_top = {i.name for i in upper}
        below = (i for i in self._inner.list_info(prefix) if i.name not in on_top and not self._hidden(i.name))
        yield from heapq.merge(upper, below, key=lambda i: i.name)

    def can_lock_objects(self) -> bool:
        return False

    def lock_new_objects(self, days: int, prefixes: Tuple[str, ...]) -> bool:
        return False

    def local_path(self, name: str) -> Optional[str]:
        return None

    def close(self) -> None:
        """Drop what was written on top (the scratch directory, if the overlay made it); `inner` stays open:
        its owner closes it."""
        self._upper.close()
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)
