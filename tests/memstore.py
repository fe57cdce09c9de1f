"""A test double of an object store: `MemoryStorage` implements storage/base.py's `Storage` in memory, with
no `local_path` (so readers take the object-store paths), an injectable latency per request, and injectable
failures (`fail_when`), and counts requests and bytes per operation. The real Azure and S3 back ends are
tested against their emulators elsewhere; this one makes failures happen exactly where a test wants them.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Callable, Dict, Iterator, Optional, Tuple, Union

from recovault.errors import ObjectMissing, StorageError
from recovault.storage import register_scheme
from recovault.storage.base import ObjectInfo, Storage, validate_name, validate_prefix

#: fail_when(op, name, size) -> True to make that request fail (op: "put", "get", "list", "stat", "delete";
#: size: the bytes a put stores, else 0).
FailRule = Callable[[str, str, int], bool]


class MemoryStorage(Storage):
    """Objects in a dict. `latency` seconds are slept per request (outside the lock: requests overlap, as on
    a network); `in_flight_max` records the most requests seen at once."""

    def __init__(self, name: str = "test", latency: float = 0.0) -> None:
        self.name = name
        self.latency = latency
        self.objects: Dict[str, Tuple[bytes, float]] = {}
        self.fail_when: Optional[FailRule] = None
        self.requests: Counter = Counter()
        self.gets: Counter = Counter()  # gets per object name
        self.whole_gets: Counter = Counter()  # gets of a whole object, per name
        self.bytes: Counter = Counter()
        self.in_flight = 0
        self.in_flight_max = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"mem://{self.name}"

    def _request(self, op: str, name: str, size: int = 0) -> None:
        with self._lock:
            self.requests[op] += 1
            self.in_flight += 1
            self.in_flight_max = max(self.in_flight_max, self.in_flight)
        try:
            if self.latency:
                time.sleep(self.latency)
            if self.fail_when is not None and self.fail_when(op, name, size):
                raise StorageError("connection reset by peer")
        finally:
            with self._lock:
                self.in_flight -= 1

    def put(self, name: str, data: Union[bytes, bytearray, memoryview]) -> None:
        validate_name(name)
        self._request("put", name, len(data))
        with self._lock:
            self.objects[name] = (bytes(data), time.time())
            self.bytes["put"] += len(data)

    def get(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        validate_name(name)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("negative offset or length")
        self._request("get", name)
        with self._lock:
            self.gets[name] += 1
            self.whole_gets[name] += offset == 0 and length is None
        with self._lock:
            if name not in self.objects:
                raise ObjectMissing(f"{self.url}: no object {name}")
            data = self.objects[name][0]
        out = data[offset:] if length is None else data[offset:offset + length]
        with self._lock:
            self.bytes["get"] += len(out)
        return out

    def list(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        self._request("list", prefix)
        with self._lock:
            names = sorted(n for n in self.objects if n.startswith(prefix))
        return iter(names)

    def stat(self, name: str) -> ObjectInfo:
        validate_name(name)
        self._request("stat", name)
        with self._lock:
            if name not in self.objects:
                raise ObjectMissing(f"{self.url}: no object {name}")
            data, mtime = self.objects[name]
        return ObjectInfo(name, len(data), mtime)

    def delete(self, name: str) -> None:
        validate_name(name)
        self._request("delete", name)
        with self._lock:
            self.objects.pop(name, None)

    def reset_counts(self) -> None:
        self.requests.clear()
        self.gets.clear()
        self.whole_gets.clear()
        self.bytes.clear()
        self.in_flight_max = 0


#: Stores opened by name through the `mem://NAME` scheme (CLI runs in-process), made on first use.
STORES: Dict[str, MemoryStorage] = {}


def _open(location: str, create: bool) -> Storage:
    name = location[len("mem://"):]
    return STORES.setdefault(name, MemoryStorage(name))


register_scheme("mem", "an in-memory test store", _open, form="mem://NAME")
