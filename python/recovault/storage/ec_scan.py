"""What each location of an erasure-coded set holds, shard by shard (docs/vault-format.md §13): the findings
`check` reports and `repair` works from.

`scan_set` merges the listings of every reachable location (one listing each), then reads each object's
shards: their 96-byte headers (cheap: what the listings and headers show), or with ``read_data`` each whole
shard, every block checked against its tag. Per object it finds the *current version* (the one most valid
headers carry, if at least K do) and, per location, whether its shard of that version is intact, missing,
corrupt (a header or block check failed, a wrong size) or of another (stale) version. An object no version of
which K locations hold is *incomplete* (fewer than K shards in all: a put or a delete interrupted, or the
rest of an object lost beyond repair) or *unreadable* (K or more shards, too many of them damaged).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional

from ..errors import StorageError
from .base import ObjectInfo
from .erasure import (DESCRIPTOR, HEADER_SIZE, ErasureStorage, ShardHeader, parse_header, verify_blocks,
                      versions_of)

__all__ = ["LocationReport", "ObjectShards", "ShardScan", "scan_set"]

#: Objects a finding's JSON lists by name (the counts count them all).
NAMED = 100


@dataclass
class LocationReport:
    """One location's shards: intact ones of current versions, and what is wrong with the others."""

    index: int  # 0-based (messages count from 1)
    label: str
    problem: str = ""  # why the location is not reachable ("" when it is)
    intact: int = 0
    missing: int = 0  # objects with a current version that have no shard here
    corrupt: int = 0  # a shard here that fails its header or block checks, or has the wrong size
    stale: int = 0  # a valid shard of another version than the current one
    unexpected: int = 0  # a shard of an incomplete object (fewer than K shards of it anywhere)

    @property
    def reachable(self) -> bool:
        return not self.problem

    def damaged(self) -> int:
        return self.missing + self.corrupt + self.stale

    def line(self) -> str:
        """One line of text for people."""
        where = f"location {self.index + 1} ({self.label})"
        if not self.reachable:
            return f"{where}: not reachable ({self.problem})"
        parts = [f"{n} {what}" for n, what in ((self.missing, "missing"), (self.corrupt, "corrupt"),
                                                (self.stale, "of a stale version"), (self.unexpected, "unexpected"))
                 if n]
        return f"{where}: {self.intact} intact shard(s)" + (f"; {', '.join(parts)}" if parts else "")


@dataclass
class ObjectShards:
    """One object's shards across the set (indexes 0-based)."""

    name: str
    header: Optional[ShardHeader]  # the current version's (index 0 form); None: no version K locations hold
    present: List[int] = field(default_factory=list)  # locations listing a shard of it
    missing: List[int] = field(default_factory=list)  # reachable locations without one (with a current version)
    corrupt: List[int] = field(default_factory=list)
    stale: List[int] = field(default_factory=list)
    mtime: float = 0.0  # the newest of its shards' mtimes

    def to_rebuild(self) -> List[int]:
        return sorted(self.missing + self.corrupt + self.stale)

    def line(self) -> str:
        """One line of text for people: which shards of the object are not intact, by location (from 1)."""
        parts = [f"{what} at location(s) {', '.join(str(i + 1) for i in where)}"
                 for what, where in (("missing", self.missing), ("corrupt", self.corrupt), ("stale", self.stale))
                 if where]
        if self.header is None:
            parts.append(f"shards at location(s) {', '.join(str(i + 1) for i in self.present)} only")
        return f"{self.name}: {'; '.join(parts) or 'shards at a location not reachable'}"

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "missing": [i + 1 for i in self.missing],
                "corrupt": [i + 1 for i in self.corrupt], "stale": [i + 1 for i in self.stale],
                "present": [i + 1 for i in self.present]}


@dataclass
class ShardScan:
    """The findings of one scan of a set."""

    k: int
    m: int
    set_id: str
    read_data: bool
    locations: List[LocationReport]
    objects: int = 0
    damaged: List[ObjectShards] = field(default_factory=list)  # a current version, fewer than n intact shards
    unreadable: List[ObjectShards] = field(default_factory=list)  # K or more shards, no version K hold intact
    incomplete: List[ObjectShards] = field(default_factory=list)  # fewer than K shards of it in all

    @property
    def down(self) -> List[LocationReport]:
        return [loc for loc in self.locations if not loc.reachable]

    def clean(self) -> bool:
        return not (self.damaged or self.unreadable or self.incomplete or self.down)

    def lines(self) -> List[str]:
        """One line per location, then a summary (text for people)."""
        summary = (f"ec:{self.k}+{self.m} set {self.set_id[:8]}: {self.objects} object(s), "
                   f"{'every shard read' if self.read_data else 'shard headers read'}; ")
        if self.clean():
            summary += f"all {self.k + self.m} shards of every object intact"
        else:
            summary += (f"{len(self.damaged)} object(s) with fewer than {self.k + self.m} intact shards, "
                        f"{len(self.unreadable)} unreadable, {len(self.incomplete)} incomplete, "
                        f"{len(self.down)} location(s) not reachable")
        return [loc.line() for loc in self.locations] + [summary]

    def warnings(self) -> List[str]:
        """What `check` warns of: redundancy lost (the data still reads; `repair` rebuilds it)."""
        out = [f"{loc.line()}: run 'recovault repair --replace {loc.label}=NEW' to rebuild its shards elsewhere"
               for loc in self.down]
        out += [f"{loc.line()}: run 'recovault repair'" for loc in self.locations
                if loc.reachable and (loc.damaged() or loc.unexpected)]
        return out

    def to_json(self) -> Dict[str, Any]:
        return {"k": self.k, "m": self.m, "set": self.set_id, "read_data": self.read_data, "objects": self.objects,
                "clean": self.clean(),
                "locations": [dict(asdict(loc), index=loc.index + 1, reachable=loc.reachable)
                              for loc in self.locations],
                "damaged": [o.to_json() for o in self.damaged[:NAMED]], "damaged_total": len(self.damaged),
                "unreadable": [o.name for o in self.unreadable[:NAMED]], "unreadable_total": len(self.unreadable),
                "incomplete": [o.name for o in self.incomplete[:NAMED]], "incomplete_total": len(self.incomplete)}


Progress = Callable[[str, Dict[str, Any]], None]


def scan_set(ec: ErasureStorage, read_data: bool = False, progress: Optional[Progress] = None) -> ShardScan:
    """Every object's shards at every location of ``ec`` (see the module's doc)."""
    reports = [LocationReport(i, loc.label, "" if loc.storage is not None else (loc.problem or "not reachable"))
               for i, loc in enumerate(ec.locations)]
    scan = ShardScan(ec.k, ec.m, ec.set_id, read_data, reports)
    listed = _listings(ec, reports)
    for name in sorted(listed):
        obj = _scan_object(ec, name, listed[name], read_data, reports)
        _file(scan, obj)
        if progress is not None:
            progress("file", {"path": name, "bytes": 0})
    return scan


def _listings(ec: ErasureStorage, reports: List[LocationReport]) -> Dict[str, Dict[int, ObjectInfo]]:
    """name -> {location: its listing's info}, from every reachable location (one that fails to list is
    reported not reachable)."""
    out: Dict[str, Dict[int, ObjectInfo]] = {}
    for i, loc in enumerate(ec.locations):
        if loc.storage is None:
            continue
        try:
            for info in loc.storage.list_info(""):
                if info.name != DESCRIPTOR:
                    out.setdefault(info.name, {})[i] = info
        except StorageError as exc:
            reports[i].problem = f"cannot list it: {exc}"
    for infos in out.values():  # a location that failed part way is not reported on
        for i in [i for i in infos if not reports[i].reachable]:
            del infos[i]
    return out


def _scan_object(ec: ErasureStorage, name: str, infos: Dict[int, ObjectInfo], read_data: bool,
                 reports: List[LocationReport]) -> ObjectShards:
    present = sorted(infos)
    raws = ec.read_shards(name, present, whole=read_data)
    obj = ObjectShards(name, None, present=present, mtime=max(info.mtime for info in infos.values()))
    valid: Dict[int, ShardHeader] = {}
    for i, raw in raws.items():
        h = parse_header(name, raw) if raw is not None else None
        if h is not None and (h.k, h.m, h.index) == (ec.k, ec.m, i):
            valid[i] = h
        else:
            obj.corrupt.append(i)
    best = versions_of(list(valid.values()))
    current = best[0][0] if best and len(best[0]) + len(obj.corrupt) >= ec.k else None  # as ErasureStorage reads
    if current is None:
        return obj
    obj.header = current.for_index(name, 0)
    for i, h in valid.items():
        if (h.digest, h.length) != (current.digest, current.length):
            obj.stale.append(i)
        elif not _intact(h, infos[i], raws[i], read_data):
            obj.corrupt.append(i)
    obj.missing = [i for i in range(ec.n) if i not in infos and reports[i].reachable]
    obj.corrupt.sort()
    return obj


def _intact(h: ShardHeader, info: ObjectInfo, raw: Optional[bytes], read_data: bool) -> bool:
    """The shard has the size its header gives, and with ``read_data`` every block passes its check."""
    if info.size != h.file_size():
        return False
    return not read_data or (raw is not None and verify_blocks(h, 0, h.blocks(), raw[HEADER_SIZE:]) is not None)


def _file(scan: ShardScan, obj: ObjectShards) -> None:
    """Count ``obj`` into the scan and its locations' reports."""
    scan.objects += 1
    reports = scan.locations
    if obj.header is None:
        (scan.incomplete if len(obj.present) < scan.k else scan.unreadable).append(obj)
        if len(obj.present) < scan.k:
            for i in obj.present:
                reports[i].unexpected += 1
        return
    for i in obj.missing:
        reports[i].missing += 1
    for i in obj.corrupt:
        reports[i].corrupt += 1
    for i in obj.stale:
        reports[i].stale += 1
    bad = set(obj.to_rebuild())
    for i in obj.present:
        if i not in bad:
            reports[i].intact += 1
    if bad or len(obj.present) + len(obj.missing) < scan.k + scan.m:
        scan.damaged.append(obj)
