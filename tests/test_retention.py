"""Retention policies (recovault.retention): restic's semantics, checked against restic's own expected
results (its golden files, converted to tests/data/restic_policy_golden.json), the worked examples of its
documentation (doc/060_forget.rst), and the edge cases of local calendar time."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List, Sequence

import pytest

from recovault import timefmt
from recovault.errors import UsageError
from recovault.retention import Duration, GroupKey, Policy, apply_policy, group_points, within_cutoff
from recovault.vault.records import RecoveryPoint

GOLDEN = json.loads((Path(__file__).parent / "data" / "restic_policy_golden.json").read_text())
NOW = "2030-01-01T00:00:00Z"


def point(local: str, pid: str = "", host: str = "h", paths: Sequence[str] = ("/d",),
          tags: Sequence[str] = ()) -> RecoveryPoint:
    """A recovery point made at `local` ("YYYY-MM-DD HH:MM:SS[.f]" in the current TZ)."""
    when = datetime.fromisoformat(local).astimezone()
    return RecoveryPoint(time=timefmt.format_time(when), host=host, paths=list(paths), tree="0" * 64,
                         tags=list(tags), id=pid or local)


def kept(points: List[RecoveryPoint], policy: Policy, now: str = NOW) -> List[str]:
    return [k.point.id for k in apply_policy(points, policy, now=now).keep]


# ---- restic's own expected results ----

@pytest.mark.parametrize("case", range(len(GOLDEN["cases"])))
def test_restic_golden_files(tz, case):
    """Every policy of restic's TestApplyPolicy on its 103 points: the same points kept, in the same order,
    with the same reasons and counters (keep-oldest and -1 included: these are current restic's results)."""
    tz("UTC")
    points = [point(p["time"], f"{1000 - i:04d}", paths=p.get("paths", ["/d"]), tags=p.get("tags", ()))
              for i, p in enumerate(GOLDEN["points"])]
    spec = GOLDEN["cases"][case]
    policy = Policy.from_json(spec["policy"])
    if policy.is_empty:  # restic's ApplyPolicy removes all; its forget and recovault refuse such a policy
        with pytest.raises(UsageError, match="no rule"):
            apply_policy(points, policy)
        return
    out = apply_policy(points, policy, now=NOW)
    got = [[int(1000 - int(k.point.id)), list(k.matches), k.counters.to_json()] for k in out.keep]
    assert got == spec["keep"]
    assert len(out.keep) + len(out.remove) == len(points)
    assert {p.id for p in out.remove}.isdisjoint(k.point.id for k in out.keep)


DOC_POINTS = ["2025-04-21 11:00:00", "2025-04-22 11:00:00", "2025-04-23 11:00:00", "2025-04-24 11:00:00",
              "2025-04-25 11:00:00", "2025-04-25 23:00:00", "2025-04-28 11:00:00", "2025-04-29 11:00:00",
              "2025-05-01 11:00:00", "2025-05-02 11:00:00", "2025-05-02 23:00:00"]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize("policy, want", [
    # restic's doc/060_forget.rst, "Removing snapshots according to a policy"
    (Policy(keep_daily=5), ["2025-05-02 23:00:00", "2025-05-01 11:00:00", "2025-04-29 11:00:00",
                            "2025-04-28 11:00:00", "2025-04-25 23:00:00"]),
    (Policy(keep_within_daily="7d"), ["2025-05-02 23:00:00", "2025-05-01 11:00:00", "2025-04-29 11:00:00",
                                      "2025-04-28 11:00:00"]),
])
def test_restic_documentation_examples(tz, zone, policy, want):
    """The documented example gives the documented result in any zone (its times are local times)."""
    tz(zone)
    points = [point(t) for t in DOC_POINTS]
    assert kept(points, policy) == want


def test_keep_oldest_when_count_left(tz):
    """restic >= 0.16 (doc: "the oldest snapshot is kept additionally and marked as oldest"): a rule with
    count left at the oldest point keeps it too, even in an already kept bucket."""
    tz("UTC")
    points = [point(t) for t in ["2025-01-01 08:00:00", "2025-01-01 09:00:00", "2025-01-02 09:00:00"]]
    out = apply_policy(points, Policy(keep_daily=5), now=NOW)
    assert [(k.point.id, k.matches) for k in out.keep] == [
        ("2025-01-02 09:00:00", ("daily snapshot",)), ("2025-01-01 09:00:00", ("daily snapshot",)),
        ("2025-01-01 08:00:00", ("oldest daily snapshot",))]
    assert out.keep[-1].counters.to_json() == {"daily": 2}  # the oldest used one count too
    assert out.keep[-1].reasons_json() == {"matches": ["oldest daily snapshot"], "counters": {"daily": 2}}
    # no count left: the oldest goes
    assert kept(points, Policy(keep_daily=2)) == ["2025-01-02 09:00:00", "2025-01-01 09:00:00"]


def test_unlimited_keeps_every_bucket(tz):
    """-1 ("unlimited" in restic's doc): the newest point of every bucket, counters stay -1."""
    tz("UTC")
    points = [point(f"2025-01-{d:02d} {h:02d}:00:00") for d in range(1, 29) for h in (3, 15)]
    out = apply_policy(points, Policy(keep_daily=-1), now=NOW)
    assert [k.point.id for k in out.keep] == [f"2025-01-{d:02d} 15:00:00" for d in range(28, 0, -1)] \
        + ["2025-01-01 03:00:00"]
    assert {k.counters.daily for k in out.keep} == {-1}
    assert out.keep[-1].matches == ("oldest daily snapshot",)
    assert kept(points, Policy(keep_last=-1)) == [p.id for p in reversed(points)]


# ---- local calendar time ----

def utc_point(utc: str, pid: str) -> RecoveryPoint:
    return RecoveryPoint(time=utc.replace(" ", "T") + ".000000Z", host="h", paths=["/d"], tree="", id=pid)


def test_buckets_are_local_days(tz):
    """The same three instants bucket into the days of the machine's zone."""
    points = [utc_point("2025-01-10 22:30:00", "x"), utc_point("2025-01-10 23:30:00", "a"),
              utc_point("2025-01-11 00:30:00", "b")]
    tz("UTC")  # x, a on the 10th; b on the 11th
    assert kept(points, Policy(keep_daily=2)) == ["b", "a"]
    tz("Europe/Berlin")  # 23:30 on the 10th; 00:30, 01:30 on the 11th
    assert kept(points, Policy(keep_daily=2)) == ["b", "x"]
    tz("America/New_York")  # 17:30, 18:30, 19:30 on the 10th: one day (and the oldest, with a count left)
    assert kept(points, Policy(keep_daily=2)) == ["b", "x"]
    assert kept(points, Policy(keep_daily=1)) == ["b"]
    tz("Asia/Kolkata")  # +5:30: 04:00, 05:00, 06:00 on the 11th: three hours
    assert kept(points, Policy(keep_hourly=2)) == ["b", "a"]


def test_dst_change(tz):
    """Berlin, 2025-03-30: 02:00-03:00 does not exist; 01:30 CET and 03:30 CEST are one hour apart, in two
    hour buckets of one day. 2025-10-26: 02:30 happens twice (CEST, then CET): two instants, one bucket."""
    tz("Europe/Berlin")
    spring = [point("2025-03-30 01:30:00", "a"), point("2025-03-30 03:30:00", "b")]
    assert kept(spring, Policy(keep_hourly=2)) == ["b", "a"]
    assert kept(spring, Policy(keep_daily=1)) == ["b"]
    first = RecoveryPoint(time="2025-10-26T00:30:00.000000Z", host="h", paths=["/d"], tree="", id="first")
    second = RecoveryPoint(time="2025-10-26T01:30:00.000000Z", host="h", paths=["/d"], tree="", id="second")
    assert timefmt.parse_time(second.time).astimezone().hour == timefmt.parse_time(first.time).astimezone().hour
    assert kept([first, second], Policy(keep_hourly=1)) == ["second"]
    assert kept([first, second], Policy(keep_last=2)) == ["second", "first"]


def test_iso_week_53_and_year_boundary(tz):
    """2020-12-31 (Thu) and 2021-01-03 (Sun) are both in ISO week 2020-W53; 2021-01-04 starts 2021-W01. The
    yearly rule uses the calendar year, not the ISO year."""
    tz("UTC")
    points = [point("2020-12-28 10:00:00"), point("2020-12-31 10:00:00"), point("2021-01-03 10:00:00"),
              point("2021-01-04 10:00:00")]
    assert kept(points, Policy(keep_weekly=2)) == ["2021-01-04 10:00:00", "2021-01-03 10:00:00"]
    assert kept(points, Policy(keep_weekly=3)) == ["2021-01-04 10:00:00", "2021-01-03 10:00:00",
                                                   "2020-12-28 10:00:00"]
    assert kept(points, Policy(keep_yearly=2)) == ["2021-01-04 10:00:00", "2020-12-31 10:00:00"]


def test_only_buckets_with_points_count(tz):
    tz("UTC")
    points = [point("2025-01-01 10:00:00"), point("2025-03-01 10:00:00"), point("2025-07-01 10:00:00")]
    assert kept(points, Policy(keep_monthly=2)) == ["2025-07-01 10:00:00", "2025-03-01 10:00:00"]


def test_same_bucket_ties_keep_the_newest(tz):
    """Two points in one second bucket: the newer (by microsecond) wins; equal times: the greater id."""
    tz("UTC")
    a, b = point("2025-01-01 10:00:00.000001", "a"), point("2025-01-01 10:00:00.000002", "b")
    assert kept([b, a, point("2024-01-01 00:00:00", "z")], Policy(keep_daily=1)) == ["b"]
    c, d = point("2025-01-01 10:00:00", "c"), point("2025-01-01 10:00:00", "d")
    assert kept([c, d], Policy(keep_hourly=1)) == ["d"]
    assert kept([d, c], Policy(keep_hourly=1)) == ["d"]


def test_rules_are_a_union_counted_separately(tz):
    tz("UTC")
    points = [point(f"2025-01-{d:02d} 12:00:00") for d in range(1, 32)]
    out = apply_policy(points, Policy(keep_last=2, keep_weekly=2), now=NOW)
    # last: 31st, 30th; weekly: 31st (Fri, W05), 26th (Sun, W04)
    assert [(k.point.id[:10], k.matches) for k in out.keep] == [
        ("2025-01-31", ("last snapshot", "weekly snapshot")), ("2025-01-30", ("last snapshot",)),
        ("2025-01-26", ("weekly snapshot",))]


# ---- keep_within ----

@pytest.mark.parametrize("newest, duration, cutoff", [
    ("2025-03-31 12:00:00", "1m", "2025-03-03 12:00:00"),   # "31 February" normalises to 3 March
    ("2024-03-31 12:00:00", "1m", "2024-03-02 12:00:00"),   # leap year: 29 days in February
    ("2025-05-31 12:00:00", "1m", "2025-05-01 12:00:00"),   # "31 April" is 1 May
    ("2024-02-29 12:00:00", "1y", "2023-03-01 12:00:00"),   # 29 Feb of a common year
    ("2025-01-31 12:00:00", "2m3d", "2024-11-28 12:00:00"),  # Nov has 30 days: 31-3 = 28
    ("2025-03-01 05:00:00", "1d6h", "2025-02-27 23:00:00"),  # days in the calendar, then hours
])
def test_within_steps_back_like_go_adddate(tz, newest, duration, cutoff):
    """The window is exclusive: a point exactly at the cutoff is out, one a microsecond later is in."""
    tz("UTC")
    at = point(cutoff, "at")
    after = point(cutoff + ".000001", "after")
    points = [point(newest, "newest"), after, at]
    out = apply_policy(points, Policy(keep_within=duration), now=NOW)
    assert [k.point.id for k in out.keep] == ["newest", "after"]
    assert [p.id for p in out.remove] == ["at"]
    assert out.keep[0].matches == (f"within {Duration.parse(duration)}",)


def test_within_across_dst_is_calendar_days(tz):
    """Berlin: 1d back from 2025-03-30 12:00 CEST is 2025-03-29 12:00 CET, 23 hours earlier."""
    tz("Europe/Berlin")
    newest, day_before = point("2025-03-30 12:00:00"), point("2025-03-29 12:00:00")

    def us(p: RecoveryPoint) -> int:
        return (timefmt.parse_time(p.time) - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)

    assert within_cutoff(us(newest), Duration(days=1)) == us(day_before)
    assert us(newest) - us(day_before) == 23 * 3600 * 10**6
    assert within_cutoff(us(newest), Duration(hours=24)) == us(newest) - 24 * 3600 * 10**6


def test_within_ignores_future_points(tz):
    """The window ends at the newest point that is not in the future; future points are kept (within)."""
    tz("UTC")
    points = [point("2031-01-01 00:00:00", "future"), point("2025-06-10 00:00:00", "newest"),
              point("2025-06-05 00:00:00", "in"), point("2025-06-01 00:00:00", "out")]
    assert kept(points, Policy(keep_within="7d"), now="2026-01-01T00:00:00Z") == ["future", "newest", "in"]


def test_within_calendar_rules(tz):
    tz("UTC")
    points = [point(f"2025-01-{d:02d} {h:02d}:00:00") for d in range(1, 11) for h in (6, 18)]
    out = apply_policy(points, Policy(keep_within_daily="3d"), now=NOW)
    # newest 10th 18:00; cutoff 7th 18:00 (exclusive): the 10th, 9th, 8th; the 7th 18:00 is out
    assert [(k.point.id, k.matches) for k in out.keep] == [
        ("2025-01-10 18:00:00", ("daily within 3d",)), ("2025-01-09 18:00:00", ("daily within 3d",)),
        ("2025-01-08 18:00:00", ("daily within 3d",))]


# ---- tags ----

def test_keep_tags_lists_are_and_within_or_between(tz):
    tz("UTC")
    points = [point("2025-01-01 00:00:00", "ab", tags=["a", "b"]), point("2025-01-02 00:00:00", "a", tags=["a"]),
              point("2025-01-03 00:00:00", "c", tags=["c"]), point("2025-01-04 00:00:00", "none")]
    assert kept(points, Policy(keep_tags=["a,b"])) == ["ab"]
    assert kept(points, Policy(keep_tags=[" a , b "])) == ["ab"]  # spaces around tags are stripped
    assert kept(points, Policy(keep_tags=["a", "c"])) == ["c", "a", "ab"]
    assert kept(points, Policy(keep_tags=[""])) == ["none"]  # '' matches untagged points only
    out = apply_policy(points, Policy(keep_tags=["a", "a,b"]), now=NOW)
    assert out.keep[-1].matches == ("has tags [a]", "has tags [a, b]")
    assert out.keep[-1].counters.to_json() == {}


# ---- policies and grouping ----

@pytest.mark.parametrize("text, want", [
    ("1y2m3d4h", Duration(1, 2, 3, 4)), ("4h1y", Duration(years=1, hours=4)), (" 7d ", Duration(days=7)),
    ("", Duration()), ("1d2d", Duration(days=2)), ("0d", Duration())])
def test_duration_parse(text, want):
    assert Duration.parse(text) == want


@pytest.mark.parametrize("text, message", [
    ("5", "no unit after 5"), ("d", "no number found"), ("1w", "invalid unit 'w'"), ("-1d", "negative"),
    ("1d 2h", "no number found"), ("1.5d", "invalid unit '.'")])
def test_duration_errors(text, message):
    with pytest.raises(UsageError, match=message):
        Duration.parse(text)


@pytest.mark.parametrize("kwargs, message", [
    ({"keep_daily": -2}, "--keep-daily -2: a count is a whole number"),
    ({"keep_last": 1.5}, "--keep-last 1.5"), ({"keep_last": True}, "--keep-last True"),
    ({"keep_within_weekly": "2w"}, "invalid duration '2w'"),
    ({"keep_within": Duration(days=-1)}, "--keep-within -1d: negative"),
    ({"keep_within": 7}, "not a duration"), ({"keep_tags": 5}, "--keep-tag: 5 is not a list"),
    ({"keep_tags": [["a", 1]]}, "invalid tag list"), ({"keep_tags": [3]}, "invalid tag list")])
def test_policy_rejects_bad_rules(kwargs, message):
    with pytest.raises(UsageError, match=message):
        Policy(**kwargs)


def test_policy_json_round_trip_and_text():
    p = Policy(keep_daily=7, keep_weekly=-1, keep_within="1y2m", keep_within_daily="7d", keep_tags=["a,b", "c"])
    doc = p.to_json()
    assert doc == {"keep_daily": 7, "keep_weekly": -1, "keep_within": "1y2m", "keep_within_daily": "7d",
                   "keep_tags": [["a", "b"], ["c"]]}
    assert Policy.from_json(json.loads(json.dumps(doc))) == p
    assert str(p) == ("keep 7 daily, all weekly snapshots, daily snapshots within 7d and all snapshots with tags "
                      "[[a, b] [c]] and all snapshots within 1y2m of the newest")
    assert Policy.empty().is_empty and not p.is_empty and str(Policy()) == "remove"
    with pytest.raises(UsageError, match="unknown retention rule.*keep_fortnightly"):
        Policy.from_json({"keep_fortnightly": 2})


def test_empty_policy_is_refused():
    with pytest.raises(UsageError, match="no rule"):
        apply_policy([point("2025-01-01 00:00:00")], Policy(keep_daily=0, keep_within="0d"))
    assert apply_policy([], Policy(keep_last=1)) == ([], [])


def test_group_points(tz):
    tz("UTC")
    pts = [point("2025-01-01 00:00:00", "1", host="a", paths=["/y", "/x"], tags=["t"]),
           point("2025-01-02 00:00:00", "2", host="a", paths=["/x", "/y"]),
           point("2025-01-03 00:00:00", "3", host="b", paths=["/x", "/y"], tags=["t"])]
    groups = group_points(pts)
    assert [(g.key, [p.id for p in g.points]) for g in groups] == [
        (GroupKey("a", ("/x", "/y"), ()), ["1", "2"]), (GroupKey("b", ("/x", "/y"), ()), ["3"])]
    assert [g.key for g in group_points(pts, "host,tags")] == [GroupKey("a", (), ()), GroupKey("a", (), ("t",)),
                                                               GroupKey("b", (), ("t",))]
    assert [len(g.points) for g in group_points(pts, "")] == [3]
    assert group_points(pts, ("paths",))[0].key.to_json() == {"host": "", "paths": ["/x", "/y"], "tags": []}
    with pytest.raises(UsageError, match="unknown grouping option 'hostname'"):
        group_points(pts, "hostname")


def test_apply_policy_is_pure(tz):
    """The input list and records are left as they were."""
    tz("UTC")
    pts = [point(f"2025-01-{d:02d} 00:00:00") for d in (3, 1, 2)]
    before = [p.to_json() for p in pts]
    order = [p.id for p in pts]
    apply_policy(pts, Policy(keep_last=1))
    assert [p.id for p in pts] == order and [p.to_json() for p in pts] == before
