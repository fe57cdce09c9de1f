"""The agent cache: a private local directory of copies of content-addressed vault objects.

Layout: ``<root>/<vault id>/<kind>/<64 hex name>`` (kinds: ``index``, ``journal``), bundles of many small
objects in one file, ``<root>/<vault id>/<kind>.bundle`` (kind ``points``: the recovery points), plus small
state files such as ``<root>/<vault id>/journal-heads``. Objects are kept sealed, exactly as on storage, and
checked against their names (BLAKE3) on every read, so a damaged or planted one is ignored and fetched again.

The cache says which vaults this user backs up and when, so it is private: directories 0700, files 0600,
the root included. A directory found more open (made by an older recovault, or by a umask) is tightened
when the cache is opened. The cache is an accelerator: every failure to use it falls back to the vault.
"""
from __future__ import annotations

import os
import stat
import struct
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional

from .. import core
from . import format as fmt

__all__ = ["DIR_MODE", "FILE_MODE", "ObjectBundle", "ObjectCache", "bytes_written", "mark_used", "private_dir",
           "read_private", "write_private"]

DIR_MODE = 0o700
FILE_MODE = 0o600
_written = 0  # bytes_written()


def private_dir(path: Path) -> bool:
    """Make ``path`` (and missing parents) a directory with mode 0700; tighten it if it is more open.
    Returns whether it is usable."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError:
        return False
    # mkdir's mode applies to the last component only (parents get 0777 & ~umask), and an existing directory
    # keeps whatever mode it had: tighten each directory this module owns explicitly.
    try:
        st = path.stat()
        if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)
    except OSError:
        pass
    return True


def write_private(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically (a unique temporary name, then rename), mode 0600."""
    global _written
    _written += len(data)
    tmp = path.with_name(f".tmp-{os.getpid()}-{os.urandom(4).hex()}-{path.name}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False


def mark_used(path: Path) -> None:
    """A cached file was used: its mtime is its last use, what the size cap's least-recently-used eviction
    orders by (atime is not kept on most mounts: relatime, noatime)."""
    try:
        os.utime(path)
    except OSError:
        pass


def bytes_written() -> int:
    """Bytes this process wrote into agent caches (the CLI enforces the size cap after a run that wrote)."""
    return _written


def read_private(path: Path) -> Optional[bytes]:
    try:
        return path.read_bytes()
    except OSError:
        return None


class ObjectCache:
    """Cached copies of one kind of content-addressed object (``index``, ``journal``) of one vault. With
    ``by_hash`` False (tree blobs: named by their keyed chunk ID, not the hash of their bytes) `get` does not
    check the bytes against the name: the caller opens them as the sealed blob of that ID, which
    authenticates them (a damaged or planted copy fails to open and is fetched again)."""

    def __init__(self, root: str, vault_id: str, kind: str, by_hash: bool = True) -> None:
        self.root = Path(root)
        self.vault_dir = self.root / vault_id
        self.dir = self.vault_dir / kind
        self.by_hash = by_hash
        self.ok = all(private_dir(p) for p in (self.root, self.vault_dir, self.dir))

    @staticmethod
    def _id(name: str) -> str:
        return name.rsplit("/", 1)[-1]

    def get(self, name: str) -> Optional[bytes]:
        """The cached bytes of object ``name``, or None if absent or not matching the name."""
        if not self.ok:
            return None
        path = self.dir / self._id(name)
        raw = read_private(path)
        # a re-sealed object (§3.1) no longer hashes to its name: opening it authenticates it, under its name
        resealed = raw is not None and raw.startswith(fmt.RESEALED)
        if raw is None or (self.by_hash and not resealed and core.blake3(raw).hex() != self._id(name)):
            return None
        mark_used(path)
        return raw

    def has(self, name: str) -> bool:
        """Whether a copy of ``name`` is cached (unverified: get() verifies)."""
        return self.ok and (self.dir / self._id(name)).exists()

    def put(self, name: str, raw: bytes) -> None:
        if self.ok:
            write_private(self.dir / self._id(name), raw)

    def names(self) -> List[str]:
        """The ids of the cached objects (unverified: get() verifies)."""
        if not self.ok:
            return []
        try:
            return [p.name for p in self.dir.iterdir() if not p.name.startswith(".tmp-")]
        except OSError:
            return []

    def prune(self, live: Iterable[str]) -> None:
        """Remove cached objects not in ``live`` (names)."""
        keep = {self._id(n) for n in live}
        for name in self.names():
            if name not in keep:
                try:
                    (self.dir / name).unlink()
                except OSError:
                    pass


BUNDLE_MAGIC = b"RVB1"
BUNDLE_RECORD = struct.Struct("<32sI")  # object id (its BLAKE3), length of the sealed bytes that follow


class ObjectBundle:
    """Cached copies of many small content-addressed objects of one kind (``points``) of one vault, in one
    file ``<kind>.bundle``: ``RVB1``, then per object its 32-byte id, its length (u32 LE) and its sealed bytes
    as on storage. One read instead of one per object (10,000 recovery points: one file, not 10,000); each
    object is still checked against its name when loaded, and one that fails is left out (fetched again)."""

    def __init__(self, root: str, vault_id: str, kind: str) -> None:
        self.root = Path(root)
        self.vault_dir = self.root / vault_id
        self.path = self.vault_dir / f"{kind}.bundle"
        self.ok = all(private_dir(p) for p in (self.root, self.vault_dir))

    def load(self) -> Dict[str, bytes]:
        """The objects of the bundle that match their names (hex id -> bytes; a re-sealed one is authenticated
        when opened, under its name); empty if there is none."""
        raw = read_private(self.path) if self.ok else None
        if not raw or not raw.startswith(BUNDLE_MAGIC):
            return {}
        mark_used(self.path)
        out, pos, view = {}, len(BUNDLE_MAGIC), memoryview(raw)
        while pos + BUNDLE_RECORD.size <= len(raw):
            oid, length = BUNDLE_RECORD.unpack_from(raw, pos)
            pos += BUNDLE_RECORD.size
            data = bytes(view[pos:pos + length])
            pos += length
            if len(data) == length and (data.startswith(fmt.RESEALED) or core.blake3(data) == oid):
                out[oid.hex()] = data
        return out

    def save(self, objects: Mapping[str, bytes]) -> None:
        """Replace the bundle with `objects` (hex id -> bytes, each the BLAKE3 of its bytes); atomic."""
        if not self.ok:
            return
        parts = [BUNDLE_MAGIC]
        for oid in sorted(objects):
            data = objects[oid]
            parts += [BUNDLE_RECORD.pack(bytes.fromhex(oid), len(data)), data]
        write_private(self.path, b"".join(parts))
