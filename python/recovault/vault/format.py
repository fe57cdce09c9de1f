"""Vault format: object names and the binary layouts of packs and index files.

Every byte is specified in docs/vault-format.md; this module is its executable form. Sealing (AES-256-GCM
with per-session subkeys, zstd inside) is done by the C++ core (``recovault.core``); see blob.hpp.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Mapping, Sequence, Tuple

# The vault format version: the config's "recovault" field (docs/vault-format.md §4). Version 2 adds the
# lifecycle objects (sessions, lease, plans) and requires every recovery point to be in the journal; a v1
# writer knows none of it, so a v2 vault must refuse it (it does: it reads only version 1).
VAULT_FORMAT = 2
READABLE_VAULT_FORMATS = (1, 2, 3)  # opened for reading; a writing command upgrades a v1 vault first
#: Format 3 (issue 14): per-session data keys, the keyring, host keys. A vault becomes v3 when its first host
#: key is added; until then it stays v2 (new vaults too).
HOST_KEY_FORMAT = 3

# Versions of the binary layouts, each its own: unchanged by the vault format version 2.
PACK_HEADER_VERSION = 1
INDEX_VERSION = 1

# Object name prefixes on storage.
CONFIG = "config"
KEYS = "keys/"
DATA = "data/"
INDEX = "index/"
SNAPSHOTS = "snapshots/"
JOURNAL = "journal/"  # the authenticated log of the set of recovery points (journal.py)
SESSIONS = "sessions/"  # one per running backup: its heartbeat and the plans it has seen (prune.py, §10)
LOCKS = "locks/"  # the prune lease (§10)
PLANS = "plans/"  # prune plans: packs condemned and blobs unreferenced, deleted after a margin (§10)
KEYRING = "keyring/"  # v3: the signed keyring (§3)
SESSION_KEYS = "sessionkeys/"  # v3: each writing session's data key, sealed to the vault's public key (§3)
KEYGEN = "keygen/"  # v3: a rotated X25519 generation's private key, sealed under a key the master derives (§3.1)

# Blob types inside packs.
BLOB_DATA = 0
BLOB_TREE = 1

# Fixed ids bound (as AAD) to sealed metadata objects, so one kind of object can't pose as another.
AAD_CONFIG = b"recovault/v1/config"
AAD_PACK_HEADER = b"recovault/v1/pack-header"
AAD_INDEX = b"recovault/v1/index"
AAD_SNAPSHOT = b"recovault/v1/snapshot"
AAD_JOURNAL = b"recovault/v1/journal"
AAD_JOURNAL_V3 = b"recovault/v3/journal/"  # followed by the BLAKE3 of the entry's plaintext prefix
AAD_SESSION = b"recovault/v2/session"
AAD_LEASE = b"recovault/v2/lease"
AAD_PLAN = b"recovault/v2/plan"
AAD_RESEALED = b"recovault/v3/resealed/"  # followed by a BLAKE3 of the object's label and name (§3.1)

#: the first bytes of a re-sealed recovery point or journal entry: it keeps its name (§3.1, sealing.py)
RESEALED = b"RVS1"

PACK_MAGIC = b"RVP1"
PACK_TRAILER = struct.Struct("<I4s")  # sealed header length, magic
HEADER_ENTRY = struct.Struct("<B32sII")  # type, blob id, sealed length, plaintext length
HEADER_PREFIX = struct.Struct("<BI")  # header version, entry count
INDEX_PREFIX = struct.Struct("<BI")  # index version, pack count
INDEX_PACK = struct.Struct("<32sI")  # pack id, blob count
INDEX_ENTRY = struct.Struct("<B32sIII")  # type, blob id, offset, sealed length, plaintext length

MAX_PACK_SIZE = 1 << 31  # offsets are 32-bit


@dataclass(frozen=True, slots=True)
class BlobEntry:
    type: int
    id: bytes
    offset: int
    length: int  # sealed length in the pack
    raw_length: int  # plaintext length


class PackEntries(Sequence[BlobEntry]):
    """A pack's blob entries held as an index file stores them (INDEX_ENTRY records, 45 bytes each) and
    unpacked on access: a prune or a check holds every entry of the vault, millions of them, and a
    BlobEntry object costs ~185 bytes."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes = b"") -> None:
        if len(raw) % INDEX_ENTRY.size:
            raise ValueError("pack entries are not a whole number of records")
        self.raw = bytes(raw)

    @classmethod
    def of(cls, entries: Iterable[BlobEntry]) -> "PackEntries":
        if isinstance(entries, PackEntries):
            return entries
        return cls(b"".join(INDEX_ENTRY.pack(e.type, e.id, e.offset, e.length, e.raw_length) for e in entries))

    def __len__(self) -> int:
        return len(self.raw) // INDEX_ENTRY.size

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError("pack entry index out of range")
        return BlobEntry(*INDEX_ENTRY.unpack_from(self.raw, (i % n) * INDEX_ENTRY.size))

    def __iter__(self) -> Iterator[BlobEntry]:
        for t in INDEX_ENTRY.iter_unpack(self.raw):
            yield BlobEntry(*t)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackEntries):
            return self.raw == other.raw
        return isinstance(other, (list, tuple)) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"PackEntries({list(self)!r})"


def object_name(prefix: str, hexid: str) -> str:
    """data/ and index/ objects are fanned out by their first two hex digits: data/3f/3f9a..."""
    if prefix in (DATA,):
        return f"{prefix}{hexid[:2]}/{hexid}"
    return prefix + hexid


def name_to_id(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def encode_pack_header(entries: Iterable[BlobEntry]) -> bytes:
    entries = list(entries)
    out = [HEADER_PREFIX.pack(PACK_HEADER_VERSION, len(entries))]
    out += [HEADER_ENTRY.pack(e.type, e.id, e.length, e.raw_length) for e in entries]
    return b"".join(out)


def decode_pack_header(plain: bytes) -> List[BlobEntry]:
    """Parse a decrypted pack header; offsets follow from the order of the entries."""
    if len(plain) < HEADER_PREFIX.size:
        raise ValueError("pack header too short")
    version, count = HEADER_PREFIX.unpack_from(plain, 0)
    if version != PACK_HEADER_VERSION:
        raise ValueError(f"pack header version {version} is not supported")
    if len(plain) != HEADER_PREFIX.size + count * HEADER_ENTRY.size:
        raise ValueError("pack header length does not match its entry count")
    entries, offset = [], 0
    for i in range(count):
        t, bid, length, raw = HEADER_ENTRY.unpack_from(plain, HEADER_PREFIX.size + i * HEADER_ENTRY.size)
        entries.append(BlobEntry(t, bid, offset, length, raw))
        offset += length
    return entries


def encode_index(packs: Mapping[bytes, Sequence[BlobEntry]]) -> bytes:
    out = [INDEX_PREFIX.pack(INDEX_VERSION, len(packs))]
    for pack_id in sorted(packs):
        entries = packs[pack_id]
        out.append(INDEX_PACK.pack(pack_id, len(entries)))
        out.append(PackEntries.of(entries).raw)
    return b"".join(out)


def decode_index(plain: bytes) -> Dict[bytes, PackEntries]:
    mv = memoryview(plain)
    if len(mv) < INDEX_PREFIX.size:
        raise ValueError("index too short")
    version, npacks = INDEX_PREFIX.unpack_from(mv, 0)
    if version != INDEX_VERSION:
        raise ValueError(f"index version {version} is not supported")
    pos = INDEX_PREFIX.size
    packs: Dict[bytes, PackEntries] = {}
    for _ in range(npacks):
        if pos + INDEX_PACK.size > len(mv):
            raise ValueError("index truncated")
        pack_id, count = INDEX_PACK.unpack_from(mv, pos)
        pos += INDEX_PACK.size
        end = pos + count * INDEX_ENTRY.size
        if end > len(mv):
            raise ValueError("index truncated")
        packs[pack_id] = PackEntries(mv[pos:end])
        pos = end
    if pos != len(mv):
        raise ValueError("index has trailing bytes")
    return packs


def index_pack_ids(plain: bytes) -> List[bytes]:
    """The IDs of the packs an index file's plaintext lists, in order; ValueError if its layout is malformed.
    Walks the pack records only (cheap: no per-blob objects), checking every count against the length."""
    if len(plain) < INDEX_PREFIX.size:
        raise ValueError("index too short")
    version, npacks = INDEX_PREFIX.unpack_from(plain, 0)
    if version != INDEX_VERSION:
        raise ValueError(f"index version {version} is not supported")
    pos, packs = INDEX_PREFIX.size, []
    for _ in range(npacks):
        if pos + INDEX_PACK.size > len(plain):
            raise ValueError("index truncated")
        pack_id, count = INDEX_PACK.unpack_from(plain, pos)
        packs.append(pack_id)
        pos += INDEX_PACK.size + count * INDEX_ENTRY.size
    if pos != len(plain):
        raise ValueError("index truncated" if pos > len(plain) else "index has trailing bytes")
    return packs


def split_pack(pack_len: int, trailer: bytes) -> Tuple[int, int]:
    """Given a pack's total length and its last 8 bytes, return (header offset, header length)."""
    if pack_len < PACK_TRAILER.size:
        raise ValueError("pack shorter than its trailer")
    hlen, magic = PACK_TRAILER.unpack(trailer)
    if magic != PACK_MAGIC:
        raise ValueError("pack trailer magic is wrong")
    start = pack_len - PACK_TRAILER.size - hlen
    if start < 0:
        raise ValueError("pack header length exceeds the pack")
    return start, hlen
