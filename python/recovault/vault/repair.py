"""Repairs of a vault's redundant structures. `repair_index` rebuilds the index from the packs, which
describe themselves (docs/vault-format.md §6, §7).

Order, so a kill -9 at any point leaves a valid vault (docs/vault-format.md §10):

1. list the index files there are now (only these are ever removed);
2. read every pack's header and store new index files listing every pack (each put is atomic);
3. carry over, from the old index files that still read, the entries of packs whose header is unreadable
   (their blobs may still open: a lost header must not also lose the index entries);
4. only then remove the old index files.

Interrupted before 4, the vault has old and new index files (a blob listed twice is harmless); during 4, some
old ones are gone and the new ones list everything they did. A backup running meanwhile is safe: its packs
are stored before its index, and index files listed after step 1 are never removed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Set

from ..errors import RecovaultError
from . import format as fmt
from .blobstore import BlobStore, pack_id_of

#: Blobs per new index file: ~2 MiB of plaintext, so each stays cheap to fetch, cache and decrypt.
BLOBS_PER_INDEX = 50_000


@dataclass
class IndexRepair:
    """What `repair_index` did."""
    packs_read: int = 0
    blobs: int = 0
    unreadable_packs: List[str] = field(default_factory=list)  # header unreadable
    carried_packs: List[str] = field(default_factory=list)  # of those, entries kept from an old index file
    written: List[str] = field(default_factory=list)  # new index files
    removed: List[str] = field(default_factory=list)  # old index files replaced


def repair_index(store: BlobStore) -> IndexRepair:
    """Rebuild the index from the packs' headers, then remove the index files it replaces. Problems (an
    unreadable pack, a damaged old index) go to store.on_event as "problem" events."""
    report = IndexRepair()
    old = list(store.storage.list(fmt.INDEX))
    unreadable: Dict[bytes, str] = {}
    batch: Dict[bytes, List[fmt.BlobEntry]] = {}
    batch_blobs = 0
    for name in store.storage.list(fmt.DATA):
        pack = pack_id_of(name)
        if pack is None:
            continue
        try:
            entries = store.read_pack_header(name)
        except RecovaultError as e:
            unreadable[pack] = name
            store.problem(str(e))
            continue
        report.packs_read += 1
        report.blobs += len(entries)
        batch[pack] = entries
        batch_blobs += len(entries)
        if batch_blobs >= BLOBS_PER_INDEX:
            report.written.append(store.store_index(batch))
            batch, batch_blobs = {}, 0
    if batch:
        report.written.append(store.store_index(batch))
    report.unreadable_packs = sorted(unreadable.values())
    carried = _carry_over(store, [n for n in old if n not in report.written], set(unreadable))
    if carried:
        report.written.append(store.store_index(carried))
        report.carried_packs = sorted(unreadable[p] for p in carried)
    for name in old:  # every new index file is stored: only now may the old ones go
        if name not in report.written:
            store.storage.delete(name)
            report.removed.append(name)
    return report


def _carry_over(store: BlobStore, names: List[str], packs: Set[bytes]) -> Dict[bytes, List[fmt.BlobEntry]]:
    """The entries old index files `names` hold for `packs` (those whose header is unreadable)."""
    found: Dict[bytes, List[fmt.BlobEntry]] = {}
    if not packs:
        return found
    for name in names:
        try:
            listed = store.read_index_file(name)
        except RecovaultError:
            continue  # damaged or gone: nothing to carry from it
        for pack in packs & listed.keys():
            found.setdefault(pack, listed[pack])
    return found
