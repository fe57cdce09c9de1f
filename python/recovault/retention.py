"""Retention: which recovery points a policy keeps. A pure function over recovery point records, with the
semantics of current restic (0.16 and later; internal/data/snapshot_policy.go), so that a user moving from
restic gets the same set kept:

- the calendar rules (``keep_hourly`` .. ``keep_yearly``) put each point in a bucket of its own time in LOCAL
  time (hour, day, ISO week, month, year); the newest point of a bucket is kept, and only buckets that hold
  points count toward N;
- ``keep_last`` N keeps the N newest points;
- the rules are a union, each counted on its own; ``-1`` means unlimited, ``0`` turns a rule off;
- when a counted rule still has count left at the oldest point of the group, the oldest is kept too ("oldest
  daily snapshot", restic 0.16's keep-oldest);
- ``keep_within`` keeps every point newer than the duration back from the group's newest point (not from
  now; a point in the future does not count as the newest); ``keep_within_hourly`` .. ``_yearly`` keep the
  newest point of each bucket in that window (and the oldest point of the group, if it is in the window);
- ``keep_tags``: a point that has all tags of any one list is kept (a list ``[""]`` matches untagged points).

Nothing here reads or writes a vault: ``forget`` applies the result, and the vault stores a policy as
``Policy.to_json()``. Times are compared as instants; the durations of ``keep_within*`` step back in local
calendar time as Go's ``time.AddDate`` does (``1m`` back from 31 March is "31 February", i.e. 3 March), then
back by whole hours.
"""
from __future__ import annotations

import calendar
import re
import time as _time
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

from . import timefmt
from .errors import UsageError
from .vault.records import RecoveryPoint

#: the counted rules, in restic's order, with the name of the reason they give
COUNT_RULES = (("keep_last", "last"), ("keep_hourly", "hourly"), ("keep_daily", "daily"),
               ("keep_weekly", "weekly"), ("keep_monthly", "monthly"), ("keep_yearly", "yearly"))
#: the windowed calendar rules, in restic's order
WITHIN_RULES = (("keep_within_hourly", "hourly"), ("keep_within_daily", "daily"),
                ("keep_within_weekly", "weekly"), ("keep_within_monthly", "monthly"),
                ("keep_within_yearly", "yearly"))
UNLIMITED = -1

_DURATION_PART = re.compile(r"(-?)([0-9]*)(.?)")


class Duration(NamedTuple):
    """restic's duration: years, months, days and hours ("1y2m3d4h"; any order; a unit given twice counts
    once, the last one)."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @classmethod
    def parse(cls, text: str) -> "Duration":
        """The duration `text` names ("" is zero); UsageError if it is not one or has a negative part."""
        rest = text.strip()
        parts = {"y": 0, "m": 0, "d": 0, "h": 0}
        while rest:
            sign, digits, unit = _DURATION_PART.match(rest).groups()  # type: ignore[union-attr]
            if not digits:
                raise UsageError(f"invalid duration {text!r}: no number found (use e.g. 1y2m3d4h)")
            if unit not in parts:
                what = f"invalid unit {unit!r}" if unit else "no unit"
                raise UsageError(f"invalid duration {text!r}: {what} after {sign}{digits} "
                                 "(units: y years, m months, d days, h hours; e.g. 1y2m3d4h)")
            if sign:
                raise UsageError(f"invalid duration {text!r}: negative values are not allowed")
            parts[unit] = int(digits)
            rest = rest[len(sign) + len(digits) + 1:]
        return cls(parts["y"], parts["m"], parts["d"], parts["h"])

    @property
    def is_zero(self) -> bool:
        return not any(self)

    def __str__(self) -> str:
        """restic's canonical form: "1y2m3d4h" without the zero parts ("" when zero)."""
        return "".join(f"{n}{u}" for n, u in zip(self, "ymdh") if n)


def _tag_list(value: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    """One --keep-tag list: "a,b" (restic: comma-separated, spaces around each tag stripped) or a sequence."""
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(","))
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
        raise UsageError(f"invalid tag list {value!r}: tags are strings")
    return tuple(value)


@dataclass(frozen=True)
class Policy:
    """A retention policy. Counts: 0 = rule off, N = the N newest (points, hours, days, ISO weeks, months,
    years with points), -1 = unlimited. Durations: a Duration or restic's text ("1y2m3d4h"), zero = off.
    ``keep_tags``: tag lists ("a,b" = a list of both), a point with all tags of any list is kept."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: Duration = Duration()
    keep_within_hourly: Duration = Duration()
    keep_within_daily: Duration = Duration()
    keep_within_weekly: Duration = Duration()
    keep_within_monthly: Duration = Duration()
    keep_within_yearly: Duration = Duration()
    keep_tags: Tuple[Tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "keep_tags":
                lists = (value,) if isinstance(value, str) else value
                if not isinstance(lists, (list, tuple)):
                    raise UsageError(f"--keep-tag: {value!r} is not a list of tag lists")
                object.__setattr__(self, f.name, tuple(_tag_list(v) for v in lists))
            elif f.name.startswith("keep_within"):
                if isinstance(value, str):
                    object.__setattr__(self, f.name, Duration.parse(value))
                elif not isinstance(value, Duration):
                    raise UsageError(f"--{_flag(f.name)}: {value!r} is not a duration (e.g. 1y2m3d4h)")
                elif any(n < 0 for n in value):
                    raise UsageError(f"--{_flag(f.name)} {value}: negative values are not allowed")
            elif type(value) is not int or value < UNLIMITED:
                raise UsageError(f"--{_flag(f.name)} {value!r}: a count is a whole number, 0 or more, "
                                 "or -1 for unlimited")

    @classmethod
    def empty(cls) -> "Policy":
        return cls()

    @property
    def is_empty(self) -> bool:
        """No rule at all: applying it would keep nothing (``apply_policy`` refuses it)."""
        return self == Policy()

    def to_json(self) -> Dict[str, Any]:
        """The rules that are on: counts as ints, durations in restic's text, tag lists as lists."""
        doc: Dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "keep_tags":
                if value:
                    doc[f.name] = [list(t) for t in value]
            elif isinstance(value, Duration):
                if not value.is_zero:
                    doc[f.name] = str(value)
            elif value:
                doc[f.name] = value
        return doc

    @classmethod
    def from_json(cls, doc: Dict[str, Any]) -> "Policy":
        """The policy of `doc` (as ``to_json`` writes it); UsageError for an unknown rule or a bad value."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise UsageError(f"unknown retention rule(s): {', '.join(unknown)}")
        return cls(**doc)

    def __str__(self) -> str:
        """A one-line description, as restic's "Applying Policy: keep 7 daily snapshots, ..."."""
        parts = [f"{'all' if n == UNLIMITED else n} {'latest' if what == 'last' else what}"
                 for n, what in ((getattr(self, name), what) for name, what in COUNT_RULES) if n]
        text = ", ".join(parts) + " snapshots" if parts else ""
        within = [f"{what} snapshots within {getattr(self, name)}" for name, what in WITHIN_RULES
                  if not getattr(self, name).is_zero]
        text = ", ".join(p for p in (text, ", ".join(within)) if p)
        if self.keep_tags:
            text += (" and " if text else "") + "all snapshots with tags " + _tag_lists_str(self.keep_tags)
        if not self.keep_within.is_zero:
            text += (" and " if text else "") + f"all snapshots within {self.keep_within} of the newest"
        return "keep " + text if text else "remove"


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _tag_lists_str(lists: Iterable[Tuple[str, ...]]) -> str:
    return "[" + " ".join(_tag_list_str(t) for t in lists) + "]"


def _tag_list_str(tags: Tuple[str, ...]) -> str:
    return "[" + ", ".join(tags) + "]"


@dataclass(frozen=True)
class Counters:
    """What each counted rule has left after a point was evaluated (-1: unlimited)."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def to_json(self) -> Dict[str, int]:
        """restic's form: the rules with a count other than 0."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


class Kept(NamedTuple):
    """A point the policy keeps, and why: ``matches`` are restic's reason texts ("daily snapshot",
    "oldest monthly snapshot", "daily within 7d", "within 1m", "has tags [a, b]"), ``counters`` what the
    counted rules had left after it."""

    point: RecoveryPoint
    matches: Tuple[str, ...]
    counters: Counters

    def reasons_json(self) -> Dict[str, Any]:
        """``{"matches": [...], "counters": {...}}``, as restic's ``forget --json`` reasons."""
        return {"matches": list(self.matches), "counters": self.counters.to_json()}


class Outcome(NamedTuple):
    """What a policy does to one group: ``keep`` (newest first, with reasons) and ``remove`` (newest first)."""

    keep: List[Kept]
    remove: List[RecoveryPoint]


class GroupKey(NamedTuple):
    """What the points of a group share: the fields grouped by; the others are empty."""

    host: str
    paths: Tuple[str, ...]
    tags: Tuple[str, ...]

    def to_json(self) -> Dict[str, Any]:
        return {"host": self.host, "paths": list(self.paths), "tags": list(self.tags)}


class Group(NamedTuple):
    key: GroupKey
    points: List[RecoveryPoint]


GROUP_FIELDS = ("host", "paths", "tags")
_GROUP_ALIASES = {"host": "host", "hosts": "host", "path": "paths", "paths": "paths", "tag": "tags",
                  "tags": "tags"}


def parse_group_by(value: Union[str, Iterable[str]]) -> Tuple[str, ...]:
    """restic's --group-by: "host,paths" (also "hosts", "path", "tag"), "" for one group of everything."""
    names = value.split(",") if isinstance(value, str) else list(value)
    chosen = set()
    for name in names:
        if name == "":
            continue
        if name not in _GROUP_ALIASES:
            raise UsageError(f"unknown grouping option {name!r} for --group-by (use host, paths, tags)")
        chosen.add(_GROUP_ALIASES[name])
    return tuple(f for f in GROUP_FIELDS if f in chosen)


def group_points(points: Iterable[RecoveryPoint],
                 by: Union[str, Iterable[str]] = ("host", "paths")) -> List[Group]:
    """The points in groups by `by` (restic's --group-by; paths and tags compare as sorted sets of strings),
    the groups ordered by key, the points of each in their given order."""
    fields_ = parse_group_by(by)
    groups: Dict[GroupKey, List[RecoveryPoint]] = {}
    for p in points:
        key = GroupKey(p.host if "host" in fields_ else "",
                       tuple(sorted(p.paths)) if "paths" in fields_ else (),
                       tuple(sorted(p.tags)) if "tags" in fields_ else ())
        groups.setdefault(key, []).append(p)
    return [Group(k, groups[k]) for k in sorted(groups)]


# ---- time: instants in microseconds since the epoch; calendar buckets in local time ----

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


def _instant(text: str) -> int:
    """A stored time as microseconds since the epoch (UsageError for a time that is not one)."""
    try:
        return (timefmt.parse_time(text) - _EPOCH) // _US
    except ValueError:
        raise UsageError(f"not a time: {text!r}") from None


def _local(us: int) -> datetime:
    """The instant `us` as a naive local wall-clock time (the machine's TZ, DST included)."""
    return (_EPOCH + timedelta(microseconds=us)).astimezone().replace(tzinfo=None)


def _hour(d: datetime) -> int:
    return ((d.year * 100 + d.month) * 100 + d.day) * 100 + d.hour


def _day(d: datetime) -> int:
    return (d.year * 100 + d.month) * 100 + d.day


def _week(d: datetime) -> int:
    year, week, _ = d.isocalendar()
    return year * 100 + week


def _month(d: datetime) -> int:
    return d.year * 100 + d.month


def _year(d: datetime) -> int:
    return d.year


#: bucket functions by unit; "last" gives every point its own bucket
_BUCKETS: Dict[str, Callable[[datetime], int]] = {
    "hourly": _hour, "daily": _day, "weekly": _week, "monthly": _month, "yearly": _year}


def _wall_to_instant(wall: datetime) -> int:
    """A naive local wall-clock time as an instant, the way Go's time.Date resolves it (a wall time in a DST
    gap or overlap takes the offset in force just before or after it)."""
    as_utc = calendar.timegm(wall.timetuple())
    offset = _time.localtime(as_utc).tm_gmtoff
    utc = as_utc - offset
    real = _time.localtime(utc).tm_gmtoff
    if real != offset:
        utc = as_utc - real
    return utc * 1_000_000 + wall.microsecond


def within_cutoff(newest_us: Optional[int], d: Duration) -> Optional[int]:
    """The instant `d` before `newest_us` (Go: ``AddDate(-y, -m, -d).Add(-h hours)`` in local time); points
    strictly after it are within. None: everything is within (no newest point, or before year 1)."""
    if newest_us is None:
        return None
    wall = _local(newest_us)
    months = wall.year * 12 + wall.month - 1 - d.years * 12 - d.months
    year, month = divmod(months, 12)
    if year < 1:
        return None
    try:
        day = date(year, month + 1, 1) + timedelta(days=wall.day - 1 - d.days)
    except OverflowError:
        return None
    return _wall_to_instant(datetime.combine(day, wall.time())) - d.hours * 3_600_000_000


def _newest_not_future(instants: Sequence[int], now_us: int) -> Optional[int]:
    """restic's findLatestTimestamp: the newest point that is before now (a point in the future does not
    move the windows)."""
    past = [t for t in instants if t < now_us]
    return max(past) if past else None


@dataclass
class _Rule:
    """One rule while a group is evaluated: its reason text, bucket function, count left (counted rules),
    window's cutoff (keep_within_*) and the last bucket it kept a point of."""

    reason: str
    bucket: Optional[Callable[[datetime], int]]  # None: every point its own bucket (keep_last)
    count: int = 0
    cutoff: Optional[int] = None
    last: Optional[int] = None


def apply_policy(points: Iterable[RecoveryPoint], policy: Policy,
                 now: Optional[Union[str, datetime]] = None) -> Outcome:
    """Which of `points` (one group: see group_points) `policy` keeps, with the reasons, and which it removes;
    both newest first (ties in time: the greater id first). `now` (default: the current time) only decides
    which points are in the future. UsageError for an empty policy: it would remove every point."""
    if policy.is_empty:
        raise UsageError("the retention policy has no rule: it would remove every recovery point "
                         "(give at least one --keep-* rule)")
    now_us = _instant(now if isinstance(now, str) else timefmt.format_time(now or datetime.now(timezone.utc)))
    timed = sorted(((_instant(p.time), p) for p in points), key=lambda tp: (tp[0], tp[1].id), reverse=True)
    if not timed:
        return Outcome([], [])
    newest = _newest_not_future([t for t, _ in timed], now_us)
    counted = [_Rule(f"{what} snapshot", _BUCKETS.get(what), getattr(policy, name))
               for name, what in COUNT_RULES]
    windows = [_Rule(f"{what} within {getattr(policy, name)}", _BUCKETS[what],
                     cutoff=within_cutoff(newest, getattr(policy, name)))
               for name, what in WITHIN_RULES if not getattr(policy, name).is_zero]
    within = None if policy.keep_within.is_zero else within_cutoff(newest, policy.keep_within)
    keep: List[Kept] = []
    remove: List[RecoveryPoint] = []
    last = len(timed) - 1
    for nr, (us, point) in enumerate(timed):
        wall = _local(us)
        matches = [f"has tags {_tag_list_str(t)}" for t in policy.keep_tags if _has_tags(point, t)]
        if not policy.keep_within.is_zero and (within is None or us > within):
            matches.append(f"within {policy.keep_within}")
        for rule in counted:
            if rule.count:
                reason = _step(rule, wall, nr, nr == last)
                if reason:
                    if rule.count > 0:
                        rule.count -= 1
                    matches.append(reason)
        for rule in windows:
            if rule.cutoff is None or us > rule.cutoff:
                reason = _step(rule, wall, nr, nr == last)
                if reason:
                    matches.append(reason)
        if matches:
            keep.append(Kept(point, tuple(matches), Counters(*(r.count for r in counted))))
        else:
            remove.append(point)
    return Outcome(keep, remove)


def _step(rule: _Rule, wall: datetime, nr: int, oldest: bool) -> Optional[str]:
    """The point opens a new bucket of `rule` (or is the oldest, with the rule still on): its reason, else None."""
    value = nr if rule.bucket is None else rule.bucket(wall)
    if value != rule.last or oldest:
        reason = rule.reason if value != rule.last else "oldest " + rule.reason
        rule.last = value
        return reason
    return None


def _has_tags(point: RecoveryPoint, tags: Tuple[str, ...]) -> bool:
    """restic's HasTags: the point has every tag of the list; an empty tag matches an untagged point."""
    for tag in tags:
        if tag == "" and not point.tags:
            return True
        if tag not in point.tags:
            return False
    return True
