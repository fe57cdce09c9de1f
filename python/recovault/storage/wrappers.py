"""Storage wrappers, written once around any back end (restic's and kopia's backend wrappers are the model).

* :class:`StorageWrapper` forwards every call to the storage it wraps: each method of the ``Storage``
  interface (also ones added to it later, and a back end's own attributes, such as ``LocalStorage.root``).
* :class:`MetricsStorage` counts requests, bytes, misses, errors and seconds per operation into a
  :class:`StorageMetrics` (thread-safe; ``snapshot()`` gives typed records for ``--json``, progress, benches).
* :class:`LimitedStorage` holds uploads and downloads to a :class:`~.limits.TransferLimiter`'s rates.
  A large get is fetched in ranged pieces, each paid for when it arrives; a put is handed to the back end
  as a stream paid for as the back end reads it (``Storage.put_stream``), so a 16 MiB pack leaves smoothly
  rather than in one burst, and nothing is copied. A back end whose ``put_stream`` is not streaming
  (``streams_puts`` False) gets the data whole, after its bytes were paid for piece by piece.

``open_storage`` wraps what it opens as :func:`configure_process` says (the CLI configures its limits; a
bench or an embedding program its metrics): ``LimitedStorage(MetricsStorage(back end))``, either one only
when asked for, so a process that asks for neither gets the back end itself.
"""
from __future__ import annotations

import io
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Tuple, Union

from ..errors import ObjectMissing
from .base import ObjectInfo, Storage
from .limits import PROCESS_LIMITER, TokenBucket, TransferLimiter, TransferLimits

__all__ = [
    "GET_PIECE",
    "LimitedStorage",
    "MetricsStorage",
    "OpStats",
    "PacedReader",
    "StorageMetrics",
    "StorageWrapper",
    "configure_process",
    "process_wrapper",
]

Data = Union[bytes, bytearray, memoryview]

#: A limited get larger than this is fetched in ranged requests of this size (objects that are rewritten
#: in place, such as the config, keys and session heartbeats, are all far smaller, so they come whole).
GET_PIECE = 1 << 20


class StorageWrapper(Storage):
    """A Storage that forwards everything to ``inner``; subclasses override what they add to."""

    def __init__(self, inner: Storage) -> None:
        self._inner = inner

    @property
    def inner(self) -> Storage:
        return self._inner

    @property
    def url(self) -> str:
        return self._inner.url

    @property
    def streams_puts(self) -> bool:  # type: ignore[override]
        return self._inner.streams_puts

    def put(self, name: str, data: Data) -> None:
        self._inner.put(name, data)

    def get(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        return self._inner.get(name, offset, length)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self._inner.list(prefix)

    def stat(self, name: str) -> ObjectInfo:
        return self._inner.stat(name)

    def delete(self, name: str) -> None:
        self._inner.delete(name)

    def __getattr__(self, name: str) -> Any:
        # Only for what the class does not define: a back end's own attributes (LocalStorage.root, ...).
        inner = self.__dict__.get("_inner")
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)

    def __str__(self) -> str:
        return str(self._inner)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._inner!r})"


def _forwarder(name: str) -> Callable[..., Any]:
    def forward(self: StorageWrapper, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._inner, name)(*args, **kwargs)
    forward.__name__ = name
    forward.__doc__ = getattr(Storage, name).__doc__
    return forward


# Every public method of the interface that StorageWrapper does not define itself (list_info, exists,
# local_path, close, put_stream, and whatever is added to Storage later, such as put_if_absent) goes to
# the wrapped storage, never to Storage's default: a back end's own version (one listing with sizes, an
# atomic conditional put) must not be replaced by the generic one.
for _name, _value in list(vars(Storage).items()):
    if callable(_value) and not _name.startswith("_") and _name not in vars(StorageWrapper):
        setattr(StorageWrapper, _name, _forwarder(_name))
StorageWrapper.__abstractmethods__ = frozenset()


# -- metrics -----------------------------------------------------------------------------------------------

class OpStats(NamedTuple):
    """One operation's totals: requests made, bytes moved (sent by puts, received by gets), requests that
    found no object (``ObjectMissing``), other failed requests, and seconds spent in them."""

    requests: int = 0
    bytes: int = 0
    missing: int = 0
    errors: int = 0
    seconds: float = 0.0


class StorageMetrics:
    """Counters per operation name ("put", "get", "list", "stat", "delete", "exists", "put_if_absent"),
    shared by every thread; ``snapshot()`` reads them all at one instant."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: Dict[str, OpStats] = {}

    def add(self, op: str, nbytes: int = 0, *, missing: bool = False, error: bool = False,
            seconds: float = 0.0) -> None:
        with self._lock:
            s = self._ops.get(op, OpStats())
            self._ops[op] = OpStats(s.requests + 1, s.bytes + nbytes, s.missing + missing, s.errors + error,
                                    s.seconds + seconds)

    def snapshot(self) -> Dict[str, OpStats]:
        with self._lock:
            return dict(self._ops)

    def total(self, field: str) -> Union[int, float]:
        """One field summed over every operation (``total("requests")``)."""
        return sum(getattr(s, field) for s in self.snapshot().values())

    def as_dict(self) -> Dict[str, Dict[str, Union[int, float]]]:
        """For ``--json``: ``{"put": {"requests": 3, "bytes": ..., ...}, ...}``."""
        return {op: s._asdict() for op, s in sorted(self.snapshot().items())}


class _Request:
    __slots__ = ("bytes",)

    def __init__(self, nbytes: int) -> None:
        self.bytes = nbytes


class MetricsStorage(StorageWrapper):
    """Counts every request to ``inner`` into ``metrics``."""

    def __init__(self, inner: Storage, metrics: StorageMetrics) -> None:
        super().__init__(inner)
        self.metrics = metrics

    @contextmanager
    def _count(self, op: str, nbytes: int = 0) -> Iterator["_Request"]:
        request = _Request(nbytes)
        start = time.perf_counter()
        try:
            yield request
        except ObjectMissing:
            self.metrics.add(op, missing=True, seconds=time.perf_counter() - start)
            raise
        except BaseException:
            self.metrics.add(op, error=True, seconds=time.perf_counter() - start)
            raise
        self.metrics.add(op, request.bytes, seconds=time.perf_counter() - start)

    def put(self, name: str, data: Data) -> None:
        with self._count("put", memoryview(data).nbytes):
            self._inner.put(name, data)

    def put_stream(self, name: str, stream: "io.RawIOBase", size: int) -> None:
        with self._count("put", size):
            self._inner.put_stream(name, stream, size)

    def put_if_absent(self, name: str, data: Data) -> bool:
        with self._count("put_if_absent", memoryview(data).nbytes):
            return self._inner.put_if_absent(name, data)  # type: ignore[attr-defined, no-any-return]

    def get(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        with self._count("get") as request:
            data = self._inner.get(name, offset, length)
            request.bytes = len(data)
        return data

    def stat(self, name: str) -> ObjectInfo:
        with self._count("stat"):
            return self._inner.stat(name)

    def exists(self, name: str) -> bool:
        with self._count("exists"):
            return self._inner.exists(name)

    def delete(self, name: str) -> None:
        with self._count("delete"):
            self._inner.delete(name)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self._listing("list", self._inner.list(prefix))

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self._listing("list", self._inner.list_info(prefix))

    def _listing(self, op: str, items: Iterator[Any]) -> Iterator[Any]:
        with self._count(op):  # one request per listing (its pages are the back end's business)
            yield from items


# -- rate limits -------------------------------------------------------------------------------------------

class PacedReader(io.RawIOBase):
    """A binary stream over ``data`` that takes each read's bytes from ``bucket`` before handing them out:
    the back end reading it sends at the bucket's rate. Seekable (an SDK retrying a request rereads, and
    pays again: those bytes cross the wire again)."""

    def __init__(self, data: Data, bucket: TokenBucket) -> None:
        super().__init__()
        view = memoryview(data)
        self._view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
        self._bucket = bucket
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._view.nbytes}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: Optional[int] = -1) -> bytes:
        """``size`` bytes (all that is left if -1 or None), fewer only at the end: a client that reads a
        length it was given must get it whole (each piece is paid as it is read)."""
        left = self._view.nbytes - self._pos
        want = left if size is None or size < 0 else min(size, left)
        out = bytearray(want)
        got = 0
        while got < want:
            got += self.readinto(memoryview(out)[got:])
        return bytes(out)

    def readinto(self, buffer: Any) -> int:
        """At most one piece (about a tenth of a second of the rate), paid before it is copied."""
        out = memoryview(buffer).cast("B")
        n = min(out.nbytes, self._view.nbytes - self._pos, self._bucket.piece())
        if n <= 0:
            return 0
        self._bucket.acquire(n)
        out[:n] = self._view[self._pos:self._pos + n]
        self._pos += n
        return n


class LimitedStorage(StorageWrapper):
    """Holds ``inner``'s puts to ``limiter.upload`` and its gets to ``limiter.download`` (by default the
    process's one limiter, shared by every storage and thread). With a download limit, ``local_path`` is
    None: reads go through ``get`` (and the limit) rather than straight to the file."""

    def __init__(self, inner: Storage, limiter: TransferLimiter = PROCESS_LIMITER) -> None:
        super().__init__(inner)
        self.limiter = limiter

    def put(self, name: str, data: Data) -> None:
        bucket = self.limiter.upload
        if not bucket.limited:
            self._inner.put(name, data)
        elif self._inner.streams_puts:
            self._inner.put_stream(name, PacedReader(data, bucket), memoryview(data).nbytes)
        else:
            bucket.acquire(memoryview(data).nbytes)
            self._inner.put(name, data)

    def put_stream(self, name: str, stream: "io.RawIOBase", size: int) -> None:
        if self.limiter.upload.limited:
            stream = _PacedStream(stream, self.limiter.upload)
        self._inner.put_stream(name, stream, size)

    def put_if_absent(self, name: str, data: Data) -> bool:
        """Paid whole before it is handed over (a conditional put takes bytes, not a stream)."""
        put_if_absent = self._inner.put_if_absent  # type: ignore[attr-defined]
        self.limiter.upload.acquire(memoryview(data).nbytes)
        return put_if_absent(name, data)  # type: ignore[no-any-return]

    def get(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        bucket = self.limiter.download
        if not bucket.limited or (length is not None and length <= GET_PIECE):
            data = self._inner.get(name, offset, length)
            bucket.acquire(len(data))
            return data
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"negative range for {name!r}: offset {offset}, length {length}")
        return self._get_pieces(name, offset, length, bucket)

    def _get_pieces(self, name: str, offset: int, length: Optional[int], bucket: TokenBucket) -> bytes:
        out = bytearray()
        while length is None or len(out) < length:
            want = GET_PIECE if length is None else min(GET_PIECE, length - len(out))
            piece = self._inner.get(name, offset + len(out), want)
            bucket.acquire(len(piece))
            out += piece
            if len(piece) < want:
                break
        return bytes(out)

    def local_path(self, name: str) -> Optional[str]:
        return None if self.limiter.download.limited else self._inner.local_path(name)


class _PacedStream(io.RawIOBase):
    """A caller's stream, read at ``bucket``'s rate."""

    def __init__(self, stream: "io.RawIOBase", bucket: TokenBucket) -> None:
        super().__init__()
        self._stream, self._bucket = stream, bucket

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")[:self._bucket.piece()]
        n = self._stream.readinto(out) or 0
        self._bucket.acquire(n)
        return n


# -- what open_storage applies ---------------------------------------------------------------------------

class _Process:
    limits: Optional[Callable[[], TransferLimits]] = None
    metrics: Optional[StorageMetrics] = None


def configure_process(*, limits: Optional[Callable[[], TransferLimits]] = None,
                      metrics: Optional[StorageMetrics] = None) -> None:
    """Say how ``open_storage`` wraps what it opens from now on: ``limits`` is called at each open (the CLI
    passes its options, read once they are all parsed) and configures :data:`PROCESS_LIMITER`; ``metrics``
    collects every request. None for either: no such wrapper (the default)."""
    _Process.limits = limits
    _Process.metrics = metrics


def process_config() -> Tuple[Optional[Callable[[], TransferLimits]], Optional[StorageMetrics]]:
    """What :func:`configure_process` was last given (limits, metrics): to change one and put it back."""
    return _Process.limits, _Process.metrics


def process_wrapper() -> Callable[[Storage], Storage]:
    """What :func:`configure_process` asked for, as a function that wraps a storage (the identity when
    nothing is configured). The limits are read, and the process's limiter set, here."""
    metrics = _Process.metrics
    limits = _Process.limits() if _Process.limits is not None else None
    if limits is not None:
        PROCESS_LIMITER.configure(limits)

    def wrap(storage: Storage) -> Storage:
        if metrics is not None:
            storage = MetricsStorage(storage, metrics)
        if limits is not None and limits.limited:
            storage = LimitedStorage(storage, PROCESS_LIMITER)
        return storage
    return wrap
