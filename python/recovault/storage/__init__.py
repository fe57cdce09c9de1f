"""Storage backends: where a vault's objects live, chosen by the vault location's scheme.

A location is either a local path (``/srv/vault``, ``./a:b``) or a URL of a registered scheme. The rule,
applied in this order:

1. ``scheme://...``, where the scheme matches ``[A-Za-z][A-Za-z0-9+.-]*``, is a URL: its scheme must be
   registered, else the location is refused (never taken as a directory named ``azur:``).
2. ``scheme:...`` for a scheme registered as *opaque* (no ``//``; ``ec:K+M:...`` for erasure-coded sets)
   is that scheme's location.
3. Anything else is a local path, colons and all: ``./a:b``, ``/x/y:z``, ``backup:2026``. A local
   directory whose name starts like a URL or an opaque scheme is written with a ``./`` in front.

``file://`` URLs and plain paths open :class:`LocalStorage`; ``azure://CONTAINER[/PREFIX]`` Azure Blob Storage
(:mod:`.azure`, the ``azure`` extra) and ``s3://BUCKET[/PREFIX]`` S3 (:mod:`.s3`, the ``s3`` extra), each
imported when first used; ``ec:K+M:LOC1,...,LOCn`` an erasure-coded set of such locations (:mod:`.erasure`).
"""
from __future__ import annotations

import os
import re
from typing import Callable, Dict, NamedTuple, Optional, Union
from urllib.parse import unquote, urlsplit

from ..errors import UsageError
from .base import ObjectInfo, Storage, validate_name, validate_prefix
from . import faults, wrappers
from .local import LocalStorage

__all__ = [
    "LocalStorage",
    "ObjectInfo",
    "Scheme",
    "Storage",
    "find_scheme",
    "open_storage",
    "register_scheme",
    "schemes",
    "validate_name",
    "validate_prefix",
]

#: Opens a location of one scheme (the whole string, scheme included); ``create`` as in open_storage.
Opener = Callable[[str, bool], Storage]

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_OPAQUE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


class Scheme(NamedTuple):
    """One registered storage scheme. ``opener`` None: reserved, not available yet."""

    name: str  # lowercase, without ':' or '//'
    description: str
    form: str  # how a location of this scheme is written, for messages: "file:///path", "ec:K+M:..."
    opener: Optional[Opener]
    opaque: bool = False  # written "name:..." rather than "name://..."


_registry: Dict[str, Scheme] = {}


def register_scheme(name: str, description: str, opener: Optional[Opener], *, form: str = "",
                    opaque: bool = False) -> Scheme:
    """Register (or replace) the back end for ``name``: ``opener(location, create)`` returns its Storage."""
    name = name.lower()
    if not _OPAQUE.match(name + ":") or ":" in name:
        raise ValueError(f"invalid storage scheme name {name!r}")
    scheme = Scheme(name, description, form or (f"{name}:..." if opaque else f"{name}://..."), opener, opaque)
    _registry[name] = scheme
    return scheme


def schemes() -> Dict[str, Scheme]:
    """The registered schemes by name (a copy)."""
    return dict(_registry)


def _open_file_url(location: str, create: bool) -> Storage:
    parts = urlsplit(location)
    if parts.netloc not in ("", "localhost"):
        raise UsageError(f"file:// URLs must name a local path (file:///path), got {location!r}")
    if parts.query or parts.fragment:
        raise UsageError(f"unexpected query or fragment in {location!r}")
    path = unquote(parts.path)
    if not path:
        raise UsageError(f"no path in {location!r}")
    return LocalStorage(path, create=create)


def _sdk_opener(module: str, function: str, extra: str, sdk: str) -> Opener:
    """An opener importing its back end (and so its SDK) only when a location of its scheme is opened."""
    def opener(location: str, create: bool) -> Storage:
        import importlib
        try:
            mod = importlib.import_module(f".{module}", __name__)
        except ImportError as exc:
            if exc.name and exc.name.split(".")[0] in ("azure", "boto3", "botocore"):
                raise UsageError(f"{location} needs {sdk}: pip install 'recovault[{extra}]'") from None
            raise
        return getattr(mod, function)(location, create)
    return opener


register_scheme("file", "a local directory", _open_file_url, form="file:///path")
register_scheme("azure", "Azure Blob Storage", _sdk_opener("azure", "open_azure", "azure", "azure-storage-blob"),
                form="azure://CONTAINER[/PREFIX]")
register_scheme("s3", "Amazon S3 or an S3-compatible store", _sdk_opener("s3", "open_s3", "s3", "boto3"),
                form="s3://BUCKET[/PREFIX]")


def _open_erasure(location: str, create: bool) -> Storage:
    from .erasure import open_erasure
    return open_erasure(location, create)


register_scheme("ec", "an erasure-coded set of vaults", _open_erasure, form="ec:K+M:LOCATION,...", opaque=True)


def _known() -> str:
    shown = [f"{s.form} ({s.description}{'' if s.opener else ', not available yet'})" for s in _registry.values()]
    return "a local path, or " + "; ".join(shown)


def find_scheme(location: str) -> Optional[Scheme]:
    """The scheme ``location`` names, None for a local path; ``UsageError`` for an unknown URL scheme."""
    m = _URL.match(location)
    if m is not None:
        scheme = _registry.get(m.group(1).lower())
        if scheme is None or scheme.opaque:
            raise UsageError(f"unknown storage scheme {m.group(1)!r} in vault location {location!r}: use "
                             f"{_known()} (write a local directory with such a name as ./{location})")
        return scheme
    m = _OPAQUE.match(location)
    if m is not None:
        scheme = _registry.get(m.group(1).lower())
        if scheme is not None and scheme.opaque:
            return scheme
    return None


def open_storage(location: Union[str, "os.PathLike[str]"], *, create: bool = False) -> Storage:
    """Open the storage at ``location`` (see the module's rule), wrapped as the process configured
    (``wrappers.configure_process``: rate limits, metrics; nothing by default), with the faults of
    ``$RECOVAULT_FAULTS`` injected under those wrappers when it is set (:mod:`.faults`, for the reliability
    suite). ``create=True`` creates a
    missing local directory. An unknown or not yet available scheme, or an empty location, raises
    ``UsageError``; a missing local directory without ``create`` raises ``VaultNotFound``."""
    wrap = wrappers.process_wrapper()  # first: a bad limit fails before anything is opened
    plan = faults.from_environment()  # tests and benches only: RECOVAULT_FAULTS (faults.py)
    backend = _open_backend(location, create)
    return wrap(backend if plan is None else faults.FaultStorage(backend, plan))


def _open_backend(location: Union[str, "os.PathLike[str]"], create: bool) -> Storage:
    if not isinstance(location, str):
        return LocalStorage(location, create=create)
    if not location:
        raise UsageError("no vault location given")
    scheme = find_scheme(location)
    if scheme is None:
        return LocalStorage(location, create=create)
    if scheme.opener is None:
        raise UsageError(f"the {scheme.form} storage back end ({scheme.description}) is not available yet; "
                         "use a local path or a file:// URL")
    return scheme.opener(location, create)
