"""Repair of an erasure-coded set (docs/vault-format.md §13 "Repair"): `recovault repair` on an `ec:` vault.

`repair_set` scans every shard (ec_scan.scan_set, every block read), then for each object whose current version
lacks intact shards somewhere: reads the object from any K (blocks rebuilt column by column, the whole checked
against its digest), encodes it again (the code is deterministic: the same shards a put wrote) and puts only
the shards that are missing, corrupt or of a stale version, each with its location's own atomic put, then
reads the header back. Objects of which fewer than K shards exist anywhere (a put or delete interrupted) are
removed when every location is reachable and their newest shard is older than the margin (a writer's put in
progress is never taken for one). Each step is idempotent: a repair killed at any point, run again, finishes.

`--replace OLD=NEW` (`replace_locations`): NEW takes OLD's place in the set: its descriptor (same set, same
index) is written first, then every shard is rebuilt there by the same pass. A NEW that holds anything but
this set's descriptor for that index, or that is another location of the set, is refused; run again with the
same arguments, an interrupted replacement resumes (NEW's descriptor is already this set's).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..errors import CorruptData, ObjectMissing, StorageError, UsageError
from .base import Storage
from .ec_scan import ObjectShards, ShardScan, scan_set
from .erasure import (DESCRIPTOR, HEADER_SIZE, Descriptor, ErasureStorage, Location, _descriptor, _identity,
                      _open_one, parse_header, parse_location, shard_object)
from .wrappers import StorageWrapper

__all__ = ["EcRepair", "Replacement", "erasure_of", "repair_set", "replace_locations", "replaced_url"]

Progress = Callable[[str, Dict[str, Any]], None]


class Replacement(NamedTuple):
    """Location ``index`` (0-based) of the set moves from ``old`` to ``new`` (each as the URL writes it)."""

    index: int
    old: str
    new: str


@dataclass
class EcRepair:
    """What one repair of a set found and did (with ``dry_run``: would do)."""

    vault: str  # the set's URL to use from now on (another one after --replace)
    dry_run: bool
    scan: ShardScan  # the findings before the repair
    replaced: List[Replacement] = field(default_factory=list)
    objects_rebuilt: int = 0
    shards_rebuilt: int = 0
    removed: List[str] = field(default_factory=list)  # incomplete objects removed (their shards deleted)
    kept: List[str] = field(default_factory=list)  # incomplete objects left: too young, or a location down
    unrepairable: List[str] = field(default_factory=list)  # one message each

    def to_json(self) -> Dict[str, Any]:
        return {"vault": self.vault, "dry_run": self.dry_run, "objects": self.scan.objects,
                "objects_rebuilt": self.objects_rebuilt, "shards_rebuilt": self.shards_rebuilt,
                "replaced": [{"location": r.index + 1, "old": r.old, "new": r.new} for r in self.replaced],
                "removed": self.removed, "kept": self.kept, "unrepairable": self.unrepairable,
                "shards": self.scan.to_json()}


def erasure_of(storage: Storage) -> Optional[ErasureStorage]:
    """The erasure-coded set under ``storage``'s wrappers (limits, metrics, faults), or None."""
    while isinstance(storage, StorageWrapper):
        storage = storage.inner
    return storage if isinstance(storage, ErasureStorage) else None


# -- --replace OLD=NEW -----------------------------------------------------------------------------------


def _same(a: str, b: str) -> bool:
    from . import find_scheme
    if a == b:
        return True
    local = find_scheme(a) is None and find_scheme(b) is None
    return local and os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


def _split(pair: str, labels: List[str]) -> Tuple[int, str]:
    """(index of OLD, NEW) for 'OLD=NEW', OLD being one of ``labels`` (a '=' inside OLD is allowed)."""
    for pos in [p for p, ch in enumerate(pair) if ch == "="]:
        old, new = pair[:pos], pair[pos + 1:]
        hits = [i for i, label in enumerate(labels) if _same(label, old)]
        if hits and new:
            return hits[0], new
    raise UsageError(f"--replace {pair!r}: write OLD=NEW, OLD one of the set's locations as the vault's URL gives "
                     f"it ({', '.join(labels)}) and NEW the new location")


def replaced_url(url: str, pairs: Sequence[str]) -> Tuple[str, List[Replacement]]:
    """The set's URL with each OLD of ``pairs`` ('OLD=NEW') replaced by its NEW, and the replacements;
    UsageError for an OLD not in the set (or given twice), a NEW that is another of its locations."""
    spec = parse_location(url)
    out: List[Replacement] = []
    for pair in pairs:
        i, new = _split(pair, spec.locations)
        if any(r.index == i for r in out):
            raise UsageError(f"--replace: location {i + 1} ({spec.locations[i]}) is replaced twice")
        out.append(Replacement(i, spec.locations[i], new))
    labels = list(spec.locations)
    for r in out:
        labels[r.index] = r.new
    for r in out:
        for j, label in enumerate(labels):
            if j != r.index and _same(label, r.new):
                raise UsageError(f"--replace {r.old}={r.new}: {r.new} is location {j + 1} of the set already: "
                                 "each shard needs its own location")
    return f"ec:{spec.k}+{spec.m}:" + ",".join(labels), out


def replace_locations(ec: ErasureStorage, replacements: Sequence[Replacement], dry_run: bool) -> None:
    """Make each NEW location ``ec`` (opened at the replaced URL) lacks its member: NEW checked (empty, or this
    set's at that index already: a replacement resumed), then its descriptor written. Nothing with
    ``dry_run`` (NEW is only checked, if it exists)."""
    for r in replacements:
        if ec.locations[r.index].storage is not None:
            continue  # open checked its descriptor: this set's, this index (a replacement resumed)
        loc = _open_one(r.new, create=not dry_run)
        if loc.storage is None:
            if dry_run:
                continue  # to be made
            raise StorageError(f"--replace {r.old}={r.new}: cannot use {r.new}: {loc.problem}")
        try:
            _adopt(ec, r, loc.storage, dry_run)
        except BaseException:
            loc.storage.close()
            raise
        if dry_run:
            loc.storage.close()
        else:
            ec.locations[r.index] = Location(r.new, loc.storage, "")


def _adopt(ec: ErasureStorage, r: Replacement, storage: Storage, dry_run: bool) -> None:
    desc, _ = _descriptor(Location(r.new, storage, ""))
    want = Descriptor(ec.set_id, ec.k, ec.m, r.index)
    if desc is not None and desc != want:
        raise UsageError(f"--replace {r.old}={r.new}: {r.new} belongs to another erasure-coded set (or is "
                         f"location {desc.index + 1} of this one): choose an empty location")
    if desc is None and next(iter(storage.list("")), None) is not None:
        raise UsageError(f"--replace {r.old}={r.new}: {r.new} is not empty (it holds objects but no descriptor of "
                         "this set): choose an empty location")
    ident = _identity(storage)
    for j, other in enumerate(ec.locations):
        if j != r.index and other.storage is not None and _identity(other.storage) == ident:
            raise UsageError(f"--replace {r.old}={r.new}: {r.new} is location {j + 1} ({other.label}) again: "
                             "each shard needs its own location")
    if desc is None and not dry_run and not storage.put_if_absent(DESCRIPTOR, want.encode()):
        if _descriptor(Location(r.new, storage, ""))[0] != want:
            raise UsageError(f"--replace {r.old}={r.new}: another descriptor appeared at {r.new} meanwhile")


# -- the repair ------------------------------------------------------------------------------------------


def repair_set(ec: ErasureStorage, *, dry_run: bool = False, margin: float = 7200.0,
               replaced: Sequence[Replacement] = (), progress: Optional[Progress] = None) -> EcRepair:
    """Scan ``ec`` and rebuild what it lacks (see the module's doc). ``replaced``: the locations this run
    replaces (incomplete objects are then left for a later repair: OLD may still hold shards of them)."""
    scan = scan_set(ec, read_data=True, progress=progress)
    result = EcRepair(ec.url, dry_run, scan, list(replaced))
    for obj in scan.damaged:
        targets = [i for i in obj.to_rebuild() if ec.locations[i].storage is not None]
        targets += [r.index for r in replaced if r.index not in obj.present]  # NEW not made yet (--dry-run)
        if not targets:
            continue
        try:
            _rebuild(ec, obj, sorted(set(targets)), dry_run)
        except (CorruptData, ObjectMissing) as exc:
            result.unrepairable.append(str(exc))
            continue
        result.objects_rebuilt += 1
        result.shards_rebuilt += len(set(targets))
    for obj in scan.unreadable:
        result.unrepairable.append(
            f"object {obj.name}: no version of it has {ec.k} intact shards ({len(obj.present)} listed, at "
            f"location(s) {', '.join(str(i + 1) for i in obj.present)}): it cannot be rebuilt")
    _incomplete(ec, scan, result, margin)
    for loc in [loc for loc in scan.down if loc.index not in {r.index for r in replaced}]:
        result.unrepairable.append(
            f"location {loc.index + 1} ({loc.label}) is not reachable ({loc.problem}): its shards cannot be "
            f"rebuilt there; replace it: recovault repair --replace {loc.label}=NEW")
    return result


def _rebuild(ec: ErasureStorage, obj: ObjectShards, targets: List[int], dry_run: bool) -> None:
    """Read ``obj`` (its current version) from K shards, and put its shards at ``targets``."""
    h = obj.header
    assert h is not None
    data = ec.read_version(obj.name, h)
    if dry_run:
        return
    payloads = ec.code.encode(data) if len(data) else [b""] * ec.n
    for i in targets:
        storage = ec.locations[i].storage
        assert storage is not None
        want = h.for_index(obj.name, i)
        storage.put(obj.name, shard_object(want, payloads[i]))
        back = parse_header(obj.name, storage.get(obj.name, 0, HEADER_SIZE))
        if back != want or storage.stat(obj.name).size != want.file_size():
            raise StorageError(f"the shard of {obj.name} rebuilt at location {i + 1} ({ec.locations[i].label}) "
                               "does not read back as written")
    ec.forget(obj.name)


def _incomplete(ec: ErasureStorage, scan: ShardScan, result: EcRepair, margin: float) -> None:
    """Remove the incomplete objects (fewer than K shards anywhere) older than ``margin``, when every location
    is reachable and none is being replaced; keep (and name) the others."""
    whole = not scan.down and not result.replaced
    now = time.time()
    for obj in scan.incomplete:
        if not whole or now - obj.mtime < margin:
            result.kept.append(obj.name)
            continue
        if not result.dry_run:
            for i in obj.present:
                storage = ec.locations[i].storage
                assert storage is not None
                storage.delete(obj.name)
            ec.forget(obj.name)
        result.removed.append(obj.name)
