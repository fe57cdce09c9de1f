"""The browsable mount's directory model (`recovault mount MOUNTPOINT`): every recovery point of a vault,
laid out as restic's mount lays out snapshots (internal/fuse, its default path templates):

    ids/<ID>/                       each point under the shortest prefix of its id (8+ characters) that no
                                    other point shares
    snapshots/<TIME>/               each point under its time, oldest first; `latest` -> the newest
    hosts/<HOST>/<TIME>/            the points of each host; `latest` per host
    tags/<TAG>/<TIME>/              the points of each tag (a point with two tags is in both); `latest` per tag

<TIME> is the point's time in UTC to the second (`2026-11-25T14:00:00Z`); points of the same second get
`-1`, `-2`, ... in the order (time, id). A `latest` link points at the newest point of its directory (the
last in that order), by the relative name of its directory. Host and tag names that cannot be file names
(empty, `.`, `..`, holding `/` or NUL) are spelled with `_` for the bad characters; two names that end up
spelled alike get `-1`, `-2`, ... so no two hosts or tags share a directory.

Pure: built from the point records alone (no tree is read: listing thousands of points costs a sort), and
no FUSE import, so it is tested without /dev/fuse. mount.py serves it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timezone
from typing import Dict, Iterable, List, Optional, Sequence, Union

from .timefmt import parse_time
from .vault.records import RecoveryPoint

#: The top-level directories, in the order restic's mount shows them.
TOP_DIRS = ("ids", "snapshots", "hosts", "tags")
LATEST = "latest"
ID_MIN_CHARS = 8


@dataclass(frozen=True)
class PointEntry:
    """A directory whose contents are the point's backed-up tree."""

    point: RecoveryPoint


@dataclass(frozen=True)
class LatestLink:
    """The `latest` symlink: `target` is the name of a sibling PointEntry (a relative link)."""

    target: str
    point: RecoveryPoint


@dataclass
class MetaDir:
    """A directory of the layout itself. `time` is the newest point's time under it (its mtime), "" when
    empty."""

    entries: Dict[str, "Entry"] = field(default_factory=dict)
    time: str = ""

    def dir(self, name: str) -> "MetaDir":
        """The subdirectory `name`, made on first use."""
        sub = self.entries.get(name)
        if sub is None:
            sub = self.entries[name] = MetaDir()
        assert isinstance(sub, MetaDir), name
        return sub

    def walk(self, path: str) -> Optional["Entry"]:
        """The entry at a relative path ("hosts/web1/latest"), or None."""
        entry: Entry = self
        for part in [p for p in path.split("/") if p]:
            if not isinstance(entry, MetaDir) or part not in entry.entries:
                return None
            entry = entry.entries[part]
        return entry


Entry = Union[MetaDir, PointEntry, LatestLink]


def time_name(point: RecoveryPoint) -> str:
    """The point's directory name: its time in UTC to the second, RFC 3339 (`2026-11-25T14:00:00Z`)."""
    try:
        return parse_time(point.time).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, TypeError):
        return "_" + file_name(point.time)  # a time this version cannot parse: still a name, never "latest"


def file_name(text: str) -> str:
    """`text` as one path component (as restic's filenameFromTag): `/` and NUL become `_`; "", "." and ".."
    become "_", "_" and "__"; a character no file name can hold (a lone surrogate a JSON document may
    carry) becomes `?`."""
    if text in ("", "."):
        return "_"
    if text == "..":
        return "__"
    name = text.replace("/", "_").replace("\0", "_")
    try:
        os.fsencode(name)
    except UnicodeEncodeError:
        name = name.encode("utf-8", "replace").decode("utf-8")
    return name


def _unique(taken: Dict[str, object], name: str) -> str:
    """`name`, or `name-1`, `name-2`, ... : the first not in `taken` (restic's uniqueName)."""
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def id_names(points: Sequence[RecoveryPoint]) -> Dict[str, str]:
    """Point id -> its name under ids/: the shortest prefix (at least 8 characters) no other point shares."""
    ids = sorted({p.id for p in points})
    names = {}
    for i, sid in enumerate(ids):
        need = ID_MIN_CHARS
        for other in (ids[i - 1] if i else "", ids[i + 1] if i + 1 < len(ids) else ""):
            common = 0
            for a, b in zip(sid, other):
                if a != b:
                    break
                common += 1
            need = max(need, common + 1)
        names[sid] = sid[:need]
    return names


class _Spelling:
    """Host or tag names as directory names: the same name always gets the same directory, and two names
    spelled alike by file_name get different ones."""

    def __init__(self) -> None:
        self.names: Dict[str, str] = {}
        self.taken: Dict[str, object] = {}

    def __call__(self, text: str) -> str:
        name = self.names.get(text)
        if name is None:
            name = _unique(self.taken, file_name(text))
            self.names[text] = self.taken[name] = name
        return name


def _add_point(d: MetaDir, point: RecoveryPoint) -> None:
    """`point` into a time-named directory: its name, and `latest` now names it (points arrive in order)."""
    name = _unique(d.entries, time_name(point))
    d.entries[name] = PointEntry(point)
    d.entries[LATEST] = LatestLink(name, point)
    d.time = point.time


def build_layout(points: Iterable[RecoveryPoint]) -> MetaDir:
    """The root directory of the browsable mount for `points` (any order; each needs its id)."""
    ordered: List[RecoveryPoint] = sorted(points, key=lambda p: (p.time, p.id))
    root = MetaDir()
    for top in TOP_DIRS:
        root.dir(top)
    ids, by_time, hosts, tags = (root.dir(top) for top in TOP_DIRS)
    host_name, tag_name = _Spelling(), _Spelling()
    short = id_names(ordered)
    for p in ordered:
        ids.entries[short[p.id]] = PointEntry(p)
        _add_point(by_time, p)
        _add_point(hosts.dir(host_name(p.host)), p)
        for tag in dict.fromkeys(p.tags):  # a tag given twice: once
            _add_point(tags.dir(tag_name(tag)), p)
        root.time = ids.time = hosts.time = p.time
        if p.tags:
            tags.time = p.time
    return root
