"""Storage backends: where a vault's objects live.

``open_storage("/srv/vault")`` or ``open_storage("file:///srv/vault")`` gives a
:class:`LocalStorage`; the ``azure://`` and ``s3://`` schemes are reserved for the
Azure Blob and S3 backends to come.
"""
from __future__ import annotations

import os
import re
from typing import Union
from urllib.parse import unquote, urlsplit

from ..errors import UsageError
from .base import ObjectInfo, Storage, validate_name, validate_prefix
from .local import LocalStorage

__all__ = [
    "FUTURE_SCHEMES",
    "LocalStorage",
    "ObjectInfo",
    "Storage",
    "open_storage",
    "validate_name",
    "validate_prefix",
]

#: URL schemes reserved for backends that are planned but not implemented yet.
FUTURE_SCHEMES = {"azure": "Azure Blob Storage", "s3": "Amazon S3"}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_storage(location: Union[str, "os.PathLike[str]"], *, create: bool = False) -> Storage:
    """Open the storage at ``location``: a plain path or ``file://`` URL (local directory).

    ``create=True`` creates a missing local directory. ``azure://`` and ``s3://`` raise
    ``UsageError`` (not available yet), as does any other scheme or an empty location.
    A missing local directory without ``create`` raises ``VaultNotFound``.
    """
    if not isinstance(location, str):
        return LocalStorage(location, create=create)
    if not location:
        raise UsageError("no vault location given")
    m = _SCHEME.match(location)
    if m is None:
        return LocalStorage(location, create=create)
    scheme = m.group(1).lower()
    if scheme == "file":
        parts = urlsplit(location)
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"file:// URLs must name a local path (file:///path), got {location!r}")
        if parts.query or parts.fragment:
            raise UsageError(f"unexpected query or fragment in {location!r}")
        path = unquote(parts.path)
        if not path:
            raise UsageError(f"no path in {location!r}")
        return LocalStorage(path, create=create)
    if scheme in FUTURE_SCHEMES:
        raise UsageError(
            f"the {scheme}:// storage backend ({FUTURE_SCHEMES[scheme]}) is not available yet; "
            "use a local path or file:// URL"
        )
    raise UsageError(f"unsupported vault location {location!r}: use a local path or a file:// URL")
