"""What the object-store back ends (Azure Blob, S3) share: their URL form, the mapping of object names to keys
under the vault's prefix, range and listing semantics, and the shape of their error messages.

A location is ``SCHEME://CONTAINER[/PREFIX]``: the container (Azure) or bucket (S3) and an optional key prefix
under which the vault's objects live (``azure://backups/host1`` keeps ``config`` as the blob
``host1/config``). Names below the prefix follow :func:`~recovault.storage.base.validate_name`; a key that is
not a valid name (another tool's object beside the vault) is not listed.
"""
from __future__ import annotations

import re
from abc import abstractmethod
from typing import Iterator, NamedTuple, Optional, Tuple
from urllib.parse import urlsplit

from ..errors import UsageError
from .base import ObjectInfo, Storage, validate_name, validate_prefix

__all__ = ["POOL_SIZE", "ObjectStore", "StoreLocation", "parse_location"]

#: HTTP connections each back end keeps open to its service: enough for parallel pack uploads and ranged
#: reads (a thread beyond it opens and discards a connection per request).
POOL_SIZE = 32


class StoreLocation(NamedTuple):
    """A parsed ``SCHEME://CONTAINER[/PREFIX]``; ``prefix`` is "" or ends with "/"."""

    scheme: str
    container: str
    prefix: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.container}" + (f"/{self.prefix.rstrip('/')}" if self.prefix else "")


def parse_location(location: str, container_re: "re.Pattern[str]", what: str) -> StoreLocation:
    """Parse ``location``; ``container_re`` is the service's rule for ``what`` (container, bucket) names.
    Anything else in the URL (user, port, query, fragment, a bad name or prefix) is a ``UsageError``."""
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    form = f"{scheme}://{what.upper()}[/PREFIX]"
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc or "?" in location:
        raise UsageError(f"invalid vault location {location!r}: write it as {form} (no user, port, query or "
                         "fragment; credentials come from the environment)")
    container = parts.netloc
    if not container_re.fullmatch(container):
        raise UsageError(f"invalid vault location {location!r}: {container!r} is not a valid {what} name "
                         f"(write {form})")
    prefix = parts.path.strip("/")
    if prefix:
        try:
            validate_name(prefix)
        except ValueError:
            raise UsageError(f"invalid vault location {location!r}: the prefix {prefix!r} must be "
                             "'/'-separated ASCII letters, digits and '._-'") from None
        prefix += "/"
    return StoreLocation(scheme, container, prefix)


class ObjectStore(Storage):
    """A vault under a prefix of one container or bucket. Subclasses give the service's primitives on full
    keys; this class validates names, strips the prefix and keeps the range and listing rules."""

    def __init__(self, where: StoreLocation) -> None:
        self.where = where

    @property
    def url(self) -> str:
        return self.where.url

    def _key(self, name: str) -> str:
        return self.where.prefix + validate_name(name)

    def get(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if length is not None and length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        key = self._key(name)
        if length == 0:
            self.stat(name)  # a missing object is still an error
            return b""
        return self._get_range(key, name, offset, length)

    def list(self, prefix: str = "") -> Iterator[str]:
        for info in self.list_info(prefix):
            yield info.name

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """One paginated listing: sizes and times come with the names (no request per object)."""
        validate_prefix(prefix)
        cut = len(self.where.prefix)
        for key, size, mtime in self._list(self.where.prefix + prefix):
            name = key[cut:]
            try:
                validate_name(name)
            except ValueError:
                continue  # not one of the vault's objects
            yield ObjectInfo(name=name, size=size, mtime=mtime)

    def _message(self, problem: str, op: str, name: str = "") -> str:
        """``azure://c/p: <problem> (<op> <name>)``: the store, the problem and the failing operation."""
        return f"{self.url}: {problem} ({op}{' ' + name if name else ''})"

    @abstractmethod
    def _get_range(self, key: str, name: str, offset: int, length: Optional[int]) -> bytes:
        """The bytes of ``key`` from ``offset`` (``length`` > 0 or None); b"" past the end."""

    @abstractmethod
    def _list(self, key_prefix: str) -> Iterator[Tuple[str, int, float]]:
        """(key, size, mtime) of every key starting with ``key_prefix``, in key order, page by page."""
