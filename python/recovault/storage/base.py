"""The whole-object storage interface a vault lives on.

A storage is a flat namespace of immutable-ish objects addressed by names such as
``"data/3f/3f9a..."``. The interface is deliberately the common subset of a local
directory, Azure Blob Storage and S3: whole-object atomic writes, ranged reads,
prefix listings, stat and idempotent deletes. Nothing here knows about vault formats.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Optional, Tuple, Union

from ..errors import ObjectMissing, StorageError

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_SEGMENT_LENGTH",
    "RESERVED_PREFIX",
    "ObjectInfo",
    "Storage",
    "has_local_files",
    "put_or_withdraw",
    "stream_pieces",
    "validate_name",
    "validate_prefix",
]

#: Longest object name accepted (Azure Blob and S3 both cap names at 1024).
MAX_NAME_LENGTH = 1024
#: Longest "/"-separated segment accepted (a file-name limit on most local file systems).
MAX_SEGMENT_LENGTH = 255
#: Segments starting with this are reserved for a backend's in-flight temporary objects.
RESERVED_PREFIX = ".tmp-"

_ALLOWED = re.compile(r"[A-Za-z0-9._/-]*")


@dataclass(frozen=True)
class ObjectInfo:
    """What ``Storage.stat`` reports about one object."""

    name: str
    size: int
    mtime: float  # seconds since the epoch (last modification)


def _check_segments(text: str, what: str, segments: list) -> None:
    for seg in segments:
        if seg in (".", ".."):
            raise ValueError(f"invalid {what} {text!r}: '.' and '..' segments are not allowed")
        if len(seg) > MAX_SEGMENT_LENGTH:
            raise ValueError(f"invalid {what} {text!r}: a segment is longer than {MAX_SEGMENT_LENGTH} characters")
        if seg.startswith(RESERVED_PREFIX):
            raise ValueError(f"invalid {what} {text!r}: segments starting with {RESERVED_PREFIX!r} are reserved")


def _check_common(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"invalid {what} {text!r}: must be a str")
    if len(text) > MAX_NAME_LENGTH:
        raise ValueError(f"invalid {what}: longer than {MAX_NAME_LENGTH} characters")
    if not _ALLOWED.fullmatch(text):
        raise ValueError(f"invalid {what} {text!r}: only ASCII letters, digits and '._/-' are allowed")
    if text.startswith("/"):
        raise ValueError(f"invalid {what} {text!r}: must not start with '/'")
    return text


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid object name, else raise ``ValueError``.

    Valid: non-empty, ASCII ``[A-Za-z0-9._/-]``, "/"-separated segments that are
    non-empty (no leading/trailing/double "/"), not "." or "..", at most 255
    characters each and not starting with ".tmp-"; at most 1024 characters in all.
    """
    _check_common(name, "object name")
    if not name:
        raise ValueError("invalid object name '': must not be empty")
    segments = name.split("/")
    if "" in segments:
        raise ValueError(f"invalid object name {name!r}: empty path segment")
    _check_segments(name, "object name", segments)
    return name


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start a valid object name, else raise ``ValueError``.

    A prefix is matched as a plain string (``"data/3"`` matches ``"data/3f/..."``); it may
    be empty or end with "/", but otherwise follows the rules of ``validate_name``.
    """
    _check_common(prefix, "prefix")
    if not prefix:
        return prefix
    segments = prefix.split("/")
    complete = segments[:-1]  # the last segment may be partial ("data/3" matches "data/3f/...")
    if "" in complete:
        raise ValueError(f"invalid prefix {prefix!r}: empty path segment")
    _check_segments(prefix, "prefix", complete)
    return prefix


def stream_pieces(name: str, stream: BinaryIO, size: int, piece: int = 1 << 20) -> Iterator[memoryview]:
    """The ``size`` bytes of ``stream`` (for object ``name``), as views of one reused buffer of at most
    ``piece`` bytes; a stream that ends early raises ``ValueError``."""
    buf = memoryview(bytearray(min(size, piece)))
    left = size
    while left:
        n = stream.readinto(buf[:min(left, piece)])
        if not n:
            raise ValueError(f"the data for {name!r} ended after {size - left} of {size} bytes")
        left -= n
        yield buf[:n]


class Storage(ABC):
    """Abstract whole-object storage (a local directory, Azure Blob Storage, S3).

    Contract shared by every backend:

    * names are validated with :func:`validate_name` (``ValueError`` otherwise);
    * ``put`` is atomic: readers see the old object, or the complete new one, never a
      partial one; overwriting is allowed (content-addressed writes are idempotent);
    * ``put_if_absent`` never overwrites (a conditional create);
    * a missing object raises :class:`~recovault.errors.ObjectMissing` from ``get``/``stat``;
    * other failures raise :class:`~recovault.errors.StorageError` with an operator-ready message.
    """

    @property
    @abstractmethod
    def url(self) -> str:
        """A URL for this storage, e.g. ``file:///srv/vault``; used in messages."""

    @abstractmethod
    def put(self, name: str, data: Union[bytes, bytearray, memoryview]) -> None:
        """Store ``data`` under ``name`` atomically and durably, replacing any existing object."""

    def put_if_absent(self, name: str, data: Union[bytes, bytearray, memoryview]) -> bool:
        """Create ``name`` with ``data`` only if no object of that name exists (a conditional create:
        ``If-None-Match: *`` on Azure Blob and S3, a hard link on a local directory). True if this call
        created it; False if an object was already there (left untouched). Atomic like :meth:`put`: of two
        concurrent calls exactly one returns True. A backend that cannot create conditionally raises
        ``NotImplementedError`` (never a check-then-put that could clobber)."""
        raise NotImplementedError(f"{type(self).__name__} offers no conditional create")

    @abstractmethod
    def get(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        """Return ``length`` bytes of ``name`` from ``offset`` (to the end if ``length`` is None).

        A range reaching past the end returns only the bytes that exist (``b""`` when
        ``offset`` is at or past the end); it is not an error. Negative ``offset`` or
        ``length`` raise ``ValueError``. A missing object raises ``ObjectMissing``.
        """

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield the names of all objects whose name starts with ``prefix``.

        ``prefix`` is a plain string prefix (not only a directory): ``"data/3"`` matches
        ``"data/3f/3f9a..."``. Names come in lexicographic (ASCII) order.
        """

    @abstractmethod
    def stat(self, name: str) -> ObjectInfo:
        """Return size and modification time of ``name``; ``ObjectMissing`` if absent."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove ``name``; deleting a missing object is not an error."""

    #: True when :meth:`put_stream` sends the stream's bytes as it reads them (a rate-limited upload then
    #: leaves smoothly); False: the default put_stream reads the whole stream first, then calls put.
    streams_puts = False

    def put_stream(self, name: str, stream: BinaryIO, size: int) -> None:
        """Like :meth:`put`, with the ``size`` bytes read from ``stream`` (a binary file object whose
        ``readinto`` may return fewer bytes than asked, as raw streams do). This default reads them all,
        then puts them; a back end that can send while it reads overrides it and
        sets ``streams_puts``. A stream that ends early raises ``ValueError`` and stores nothing."""
        buf = bytearray()
        for piece in stream_pieces(name, stream, size):
            buf += piece
        self.put(name, buf)

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Like :meth:`list`, with each object's size and modification time (prune reads ages off it:
        the mtime of a session or a plan is its heartbeat). This default stats each listed object, and
        skips one deleted between the listing and its stat; a backend whose listing carries sizes and
        times (a directory scan, Azure's and S3's list calls) overrides it with one pass."""
        for name in self.list(prefix):
            try:
                yield self.stat(name)
            except ObjectMissing:
                continue

    def exists(self, name: str) -> bool:
        """True if an object called ``name`` exists."""
        try:
            self.stat(name)
        except ObjectMissing:
            return False
        return True

    def can_lock_objects(self) -> bool:
        """Whether this store can lock objects against deletion and replacement for a period (S3 Object
        Lock on a bucket that has it enabled). False by default."""
        return False

    def lock_new_objects(self, days: int, prefixes: Tuple[str, ...]) -> bool:
        """From now on, lock each object put whose name starts with one of ``prefixes`` for ``days`` days
        after its put (deleting it before raises ``ObjectLocked``). False, and nothing changes, where the
        store cannot (``can_lock_objects``)."""
        return False

    def local_path(self, name: str) -> Optional[str]:
        """The path of object ``name`` as a file on this host that a reader may open and ``pread``
        directly (the C++ restore engine does), or None when the object is not a local file (the default:
        object stores). The object need not exist; only reads may be done through the path."""
        return None

    def close(self) -> None:
        """Release resources (connections); a no-op for backends that hold none."""

    def __enter__(self) -> "Storage":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def put_or_withdraw(storage: "Storage", name: str, data: Union[bytes, bytearray, memoryview]) -> None:
    """``storage.put(name, data)`` for an object named by the hash of this writer's own sealed bytes (a pack,
    an index file, a recovery point, a journal entry: no other writer can store that name). If the put
    fails, what it may have left under the name (a prefix, on a store that tore the write; the whole object,
    when only the acknowledgement was lost) is deleted, best effort, before the error is raised: the write
    failed, and leaves nothing a check would call damaged."""
    try:
        storage.put(name, data)
    except StorageError as exc:
        if not isinstance(exc, ObjectMissing):
            try:
                storage.delete(name)
            except StorageError:
                pass  # the store is failing: the error raised is the put's
        raise


def has_local_files(storage: "Storage") -> bool:
    """Whether ``storage``'s objects are files on this host that a reader may open and ``pread``
    (``Storage.local_path``): asked of the storage as opened, so a wrapper that must see every read (a
    download limit) says no. Restore, the upload pool and the agent cache choose their strategy by it."""
    return storage.local_path("config") is not None
