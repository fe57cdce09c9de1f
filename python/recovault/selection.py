"""Choosing recovery points, and paths inside them: the one place that says what `latest`, an id prefix,
`--host/--path/--tag` and `SNAPSHOT:PATH` mean, for every command that takes a recovery point.

- `PointFilter`: restic's snapshot filter (any of the hosts, every one of the paths, any of the tag lists).
- `select_points`: the live points a filter keeps (NotFound when a filter is given and keeps none).
- `select_point`: one point by full id, unique prefix or `latest`. `latest` is the latest of the filtered
  points; when those come from several hosts and no `--host` was given, it is the latest of *this* host
  (`this_host`), and `on_notice` says so; when this host has none of them it is ambiguous (UsageError).
  `this_host=None` takes the latest whatever its host (the CLI's `--all-hosts`).
- `parse_point_path`: restic's `SNAPSHOT:PATH`.
- `resolve_path`: a path a person typed, made absolute in a point: a relative path is taken against the
  point's backed-up roots (`www/index.html` in a point of `/srv` is `/srv/www/index.html`).

Library code: nothing here prints; notices go to `on_notice`.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, List, NamedTuple, Optional, Tuple

from .errors import CorruptData, NotFound, UsageError
from .paths import split_path
from .vault.records import RecoveryPoint

if TYPE_CHECKING:
    from .vault.records import Node
    from .vault.repo import Vault

__all__ = ["PointFilter", "PointPath", "find_path", "parse_point_path", "point_and_path", "resolve_path",
           "select_point", "select_points"]

OnNotice = Callable[[str], None]

#: The SNAPSHOT of SNAPSHOT:PATH: `latest` or a (prefix of a) hex id.
_POINT_SPEC = re.compile(r"(latest|[0-9a-fA-F]+):")


@dataclass(frozen=True)
class PointFilter:
    """restic's snapshot filter: any of `hosts`; every one of `paths`; any of `tags` (each "a,b": all of a, b;
    "" matches a point without tags)."""

    hosts: Tuple[str, ...] = ()
    paths: Tuple[str, ...] = ()
    tags: Tuple[str, ...] = ()

    def __call__(self, p: RecoveryPoint) -> bool:
        if self.hosts and p.host not in self.hosts:
            return False
        if any(path not in p.paths for path in self.paths):
            return False
        return not self.tags or any(self._has_tags(p, spec) for spec in self.tags)

    @staticmethod
    def _has_tags(p: RecoveryPoint, spec: str) -> bool:
        wanted = [t for t in spec.split(",") if t]
        return all(t in p.tags for t in wanted) if wanted else not p.tags

    def __bool__(self) -> bool:
        """True when the filter selects anything less than every point."""
        return bool(self.hosts or self.paths or self.tags)

    def describe(self) -> str:
        """The filter as the options that give it ("--host web1 --tag daily")."""
        return " ".join(f"--{opt} {v if v else repr(v)}" for opt, values in
                        (("host", self.hosts), ("path", self.paths), ("tag", self.tags)) for v in values)


def select_points(points: List[RecoveryPoint], where: PointFilter) -> List[RecoveryPoint]:
    """The points `where` keeps, in their order. NotFound when a filter is given and keeps none of them."""
    chosen = [p for p in points if where(p)]
    if where and not chosen:
        raise NotFound(f"no recovery point matches {where.describe()}"
                       + (f" (the vault's hosts: {', '.join(_hosts(points))})" if points else ""))
    return chosen


def _hosts(points: List[RecoveryPoint]) -> List[str]:
    return sorted({p.host for p in points})


def select_point(vault: "Vault", spec: str, where: PointFilter = PointFilter(), this_host: Optional[str] = None,
                 on_notice: Optional[OnNotice] = None,
                 points: Optional[List[RecoveryPoint]] = None) -> RecoveryPoint:
    """The live recovery point `spec` names (full id, unique prefix or `latest`) among those `where` keeps.
    See the module docstring for `latest` and `this_host`. Damaged points are reported as the vault's
    "problem" events; `latest` (or a spec that matches no good point) then fails with CorruptData, since the
    damaged point may be the one meant. `points`: the live points, if the caller has listed them."""
    damaged: List[str] = []
    if points is None:
        points = vault.snapshots(on_corrupt=damaged.append)
    for msg in damaged:
        vault.on_event("problem", {"message": msg})
    if damaged and (spec == "latest" or not any(p.id.startswith(spec) for p in points)):
        raise CorruptData(f"{damaged[0]}; name another recovery point by its id")
    if spec == "latest":
        return _latest(select_points(points, where), where, this_host, on_notice)
    from .vault import lifecycle
    chosen = [p for p in points if where(p)]
    if where and not any(p.id.startswith(spec) for p in chosen):
        others = [p for p in points if spec and p.id.startswith(spec)]
        if len(others) == 1:
            p = others[0]
            raise NotFound(f"recovery point {p.short_id} (host {p.host}, paths {' '.join(p.paths)}, tags "
                           f"{','.join(p.tags) or 'none'}) does not match {where.describe()}")
    return lifecycle.find_live(vault, spec, chosen)


def _latest(points: List[RecoveryPoint], where: PointFilter, this_host: Optional[str],
            on_notice: Optional[OnNotice]) -> RecoveryPoint:
    if not points:
        raise NotFound("the vault has no recovery points yet")
    hosts = _hosts(points)
    if where.hosts or this_host is None or len(hosts) == 1:
        return points[-1]
    mine = [p for p in points if p.host == this_host]
    if not mine:
        raise UsageError(f"'latest' is ambiguous: the recovery points are of {len(hosts)} hosts "
                         f"({', '.join(hosts)}) and none of this host ({this_host}); give --host HOST, or "
                         "--all-hosts for the latest of any host")
    if on_notice is not None:
        on_notice(f"latest: the latest recovery point of this host ({this_host}), {mine[-1].short_id}; the vault "
                  f"holds points of {len(hosts)} hosts (--host HOST or --all-hosts to choose another)")
    return mine[-1]


def parse_point_path(text: str) -> Tuple[str, Optional[str]]:
    """restic's `SNAPSHOT:PATH`: ("abc123", "/etc") for "abc123:/etc", (text, None) for a spec without a path
    ("latest", "abc123"). Only `latest` or hex before the colon counts: anything else is a spec as it is."""
    m = _POINT_SPEC.match(text)
    if m is None:
        return text, None
    path = text[m.end():]
    return m.group(1), (path or "/")


def point_and_path(snapshot: str, path: Optional[str]) -> Tuple[str, Optional[str]]:
    """The point spec and path of a command's SNAPSHOT [PATH] arguments, where SNAPSHOT may be SNAPSHOT:PATH
    (UsageError when both give a path)."""
    spec, in_spec = parse_point_path(snapshot)
    if in_spec is not None and path is not None:
        raise UsageError(f"give the path once: as {snapshot} or as PATH {path}, not both")
    return spec, in_spec if in_spec is not None else path


class PointPath(NamedTuple):
    """A path found in a recovery point: the point, the absolute path (raw bytes, b"" for the root) and its
    tree node."""

    point: RecoveryPoint
    path: bytes
    node: "Node"


def find_path(vault: "Vault", point: RecoveryPoint, path: str) -> PointPath:
    """`path` (relative ones as `resolve_path` takes them) in `point`, with its node; NotFound if absent."""
    where = resolve_path(vault, point, path)
    node = vault.find_node(point, where)
    if node is None:
        raise NotFound(f"{where} is not in recovery point {point.short_id}")
    return PointPath(point, b"".join(b"/" + p for p in split_path(where)), node)


def resolve_path(vault: "Vault", point: RecoveryPoint, path: str) -> str:
    """`path` as an absolute path in `point`. An absolute path is taken as it is. A relative one is taken
    against each of the point's backed-up roots: the one root under which it exists wins (UsageError when it
    exists under several); when it exists under none, it is taken from "/" (what a relative path always meant)
    and NotFound names the roots if that does not exist either."""
    if path.startswith("/"):
        return path
    rel = posixpath.normpath(path).lstrip("/")
    rel = "" if rel == "." else rel
    candidates = [_join(root, rel) for root in point.paths]
    found = sorted({c for c in candidates if vault.find_node(point, c) is not None})
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise UsageError(f"'{path}' is in several backed-up paths of recovery point {point.short_id}: "
                         f"{', '.join(found)}; give the absolute path")
    from_root = "/" + rel
    if vault.find_node(point, from_root) is not None:
        return from_root
    raise NotFound(f"'{path}' is not in recovery point {point.short_id} (relative paths are taken against its "
                   f"backed-up paths: {', '.join(point.paths)})")


def _join(root: str, rel: str) -> str:
    root = root.rstrip("/")
    return f"{root}/{rel}" if rel else (root or "/")
