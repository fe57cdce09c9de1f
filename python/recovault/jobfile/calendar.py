"""systemd OnCalendar expressions (systemd.time(7), "Calendar Events"): is one valid, when does it next elapse,
and what cron line (if any) means the same.

`systemd-analyze calendar` is the reference: where it exists, `problems` and `next_elapse` ask it, so that what
is accepted here is what the timer will accept. Elsewhere (a host without systemd, where a cron line is
written instead), a parser of the forms people write does the same: `[WEEKDAYS] [[YEAR-]MONTH-DAY]
[HOUR:MINUTE[:SECOND]] [TIMEZONE]`, each number field a `*`, a value, a list `1,15`, a range `1..5` and a
repetition `*/15`, `0/15`, `8..18/2`; weekdays `Mon`, `Mon..Fri`, `Sat,Sun`; the last days of a month
`*-02~01`; the words `minutely hourly daily weekly monthly yearly annually quarterly semiannually`. It does not
take fractional seconds or `@EPOCH` (systemd does): it says so, and such an expression has no cron line.

Times: an expression means local time (the host's), unless it names a time zone (`UTC`, `Europe/Berlin`).
"""
from __future__ import annotations

import calendar as _cal
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import FrozenSet, Iterator, List, Optional, Tuple

__all__ = ["Calendar", "parse", "problems", "next_elapse", "next_elapses", "to_cron", "CalendarError"]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_LONG_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
#: Each word and the expression it stands for (systemd.time(7)).
WORDS = {"minutely": "*-*-* *:*:00", "hourly": "*-*-* *:00:00", "daily": "*-*-* 00:00:00",
         "monthly": "*-*-01 00:00:00", "weekly": "Mon *-*-* 00:00:00", "yearly": "*-01-01 00:00:00",
         "annually": "*-01-01 00:00:00", "quarterly": "*-01,04,07,10-01 00:00:00",
         "semiannually": "*-01,07-01 00:00:00"}
YEARS = (1970, 2199)  # the years systemd's calendar covers
_FIELDS = {"year": YEARS, "month": (1, 12), "day": (1, 31), "hour": (0, 23), "minute": (0, 59), "second": (0, 59)}
ANALYZE_TIMEOUT = 10.0


class CalendarError(ValueError):
    """An expression this module cannot read; the message says why (one line)."""


@dataclass(frozen=True)
class Calendar:
    """A parsed expression: the values each field may take (all of them where the expression says `*`)."""
    text: str
    weekdays: FrozenSet[int]  # 0 = Monday .. 6 = Sunday
    years: FrozenSet[int]
    months: FrozenSet[int]
    days: FrozenSet[int]  # days of the month; with `last_days`, counted from the month's end (1: the last)
    last_days: bool
    hours: FrozenSet[int]
    minutes: FrozenSet[int]
    seconds: FrozenSet[int]
    zone: Optional[str]  # None: local time

    def matches_day(self, d: date) -> bool:
        if d.year not in self.years or d.month not in self.months or d.weekday() not in self.weekdays:
            return False
        day = _cal.monthrange(d.year, d.month)[1] - d.day + 1 if self.last_days else d.day
        return day in self.days


# --- parsing ---------------------------------------------------------------------------------------------

def _number(text: str, field: str) -> int:
    if not text.isdigit():
        raise CalendarError(f"{field} {text!r} is not a number" + (" (fractional seconds: systemd only)"
                                                                     if field == "second" and "." in text else ""))
    value = int(text)
    if field == "year" and len(text) <= 2:
        value += 2000 if value < 70 else 1900  # as systemd reads a two-digit year
    lo, hi = _FIELDS[field]
    if not lo <= value <= hi:
        raise CalendarError(f"{field} {value} is outside {lo}..{hi}")
    return value


def _item(item: str, field: str, backwards: bool) -> Iterator[int]:
    """The values of one list item: `*`, `V`, `A..B`, with an optional `/STEP` (backwards: `~` days)."""
    lo, hi = _FIELDS[field]
    base, _, step_text = item.partition("/")
    if base == "*":
        start, end = lo, hi
    elif ".." in base:
        a, _, b = base.partition("..")
        start, end = _number(a, field), _number(b, field)
        if start > end:
            raise CalendarError(f"{field} range {base!r} runs backwards")
    else:
        start = _number(base, field)
        end = (lo if backwards else hi) if step_text else start
    if not step_text:
        yield from range(start, end + 1)
        return
    if not step_text.isdigit() or int(step_text) == 0:
        raise CalendarError(f"{field} repetition '/{step_text}' needs a positive whole number")
    step = int(step_text)
    if backwards and ".." not in base and base != "*":
        yield from range(start, end - 1, -step)
    else:
        yield from range(start, end + 1, step)


def _field(text: str, field: str, backwards: bool = False) -> FrozenSet[int]:
    if not text:
        raise CalendarError(f"empty {field}")
    return frozenset(v for item in text.split(",") for v in _item(item, field, backwards))


def _day_name(text: str) -> int:
    t = text.lower()
    if t in WEEKDAYS:
        return WEEKDAYS.index(t)
    if t in _LONG_DAYS:
        return _LONG_DAYS.index(t)
    raise CalendarError(f"{text!r} is not a weekday (Mon..Sun)")


def _weekdays(text: str) -> FrozenSet[int]:
    days = set()
    for item in text.split(","):
        sep = ".." if ".." in item else "-" if "-" in item else None
        if sep is None:
            days.add(_day_name(item))
            continue
        a, _, b = item.partition(sep)
        first, last = _day_name(a), _day_name(b)
        if first > last:
            raise CalendarError(f"weekday range {item!r} runs backwards (write Sat,Sun..., not Sat..Mon)")
        days.update(range(first, last + 1))
    return frozenset(days)


def _zone(token: str) -> Optional[str]:
    """The time zone a last token names, or None when it names none."""
    if token.upper() in ("UTC", "GMT", "Z"):
        return "UTC"
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*", token) or "/" not in token:
        return None
    try:
        from zoneinfo import ZoneInfo
        ZoneInfo(token)
    except Exception:  # noqa: BLE001 - zoneinfo raises several kinds for a name it does not know
        return None
    return token


def _date(text: str) -> Tuple[FrozenSet[int], FrozenSet[int], FrozenSet[int], bool]:
    last = "~" in text
    head, _, day = text.rpartition("~" if last else "-")
    parts = head.split("-")
    if len(parts) > 2 or not head:
        raise CalendarError(f"date {text!r} is not [YEAR-]MONTH-DAY")
    year = _field(parts[0], "year") if len(parts) == 2 else _field("*", "year")
    return year, _field(parts[-1], "month"), _field(day, "day", backwards=last), last


def _time(text: str) -> Tuple[FrozenSet[int], FrozenSet[int], FrozenSet[int]]:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise CalendarError(f"time {text!r} is not HOUR:MINUTE[:SECOND]")
    second = _field(parts[2], "second") if len(parts) == 3 else frozenset({0})
    return _field(parts[0], "hour"), _field(parts[1], "minute"), second


def parse(expr: str) -> Calendar:
    """The expression, parsed (CalendarError with the reason when it is not one this parser reads)."""
    tokens = expr.split()
    if not tokens:
        raise CalendarError("empty calendar expression")
    zone = _zone(tokens[-1]) if len(tokens) > 1 else None
    if zone is not None:
        tokens = tokens[:-1]
    if len(tokens) == 1 and tokens[0].lower() in WORDS:
        tokens = WORDS[tokens[0].lower()].split()
    weekdays = frozenset(range(7))
    if tokens and tokens[0][:1].isalpha():
        weekdays = _weekdays(tokens.pop(0))
    years, months, days, last = _field("*", "year"), _field("*", "month"), _field("*", "day"), False
    if tokens and ":" not in tokens[0]:
        if "-" not in tokens[0] and "~" not in tokens[0]:
            raise CalendarError(f"{tokens[0]!r} is neither a date (YEAR-MONTH-DAY) nor a time (HOUR:MINUTE)")
        years, months, days, last = _date(tokens.pop(0))
    hours, minutes, seconds = frozenset({0}), frozenset({0}), frozenset({0})
    if tokens:
        hours, minutes, seconds = _time(tokens.pop(0))
    if tokens:
        raise CalendarError(f"unexpected {' '.join(tokens)!r} (a time zone must be last, e.g. UTC or Europe/Berlin)")
    return Calendar(expr, weekdays, years, months, days, last, hours, minutes, seconds, zone)


# --- systemd-analyze -------------------------------------------------------------------------------------

def analyze_available() -> bool:
    return shutil.which("systemd-analyze") is not None


_ELAPSE = re.compile(r"^\s*(?:Next elapse|Iter\. #\d+|\(in UTC\)):\s*(?:\w+ )?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (\S+)$")


def _analyze(expr: str, after: Optional[datetime] = None, iterations: int = 1) -> Tuple[Optional[str], List[datetime]]:
    """Ask `systemd-analyze calendar`: (its complaint, or None when valid; the next elapses, in UTC)."""
    argv = ["systemd-analyze", "calendar", f"--iterations={iterations}"]
    if after is not None:
        argv.append(f"--base-time=@{int(_aware(after).timestamp())}")
    try:
        res = subprocess.run(argv + ["--", expr], capture_output=True, text=True, timeout=ANALYZE_TIMEOUT,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CalendarError(f"systemd-analyze calendar failed: {exc}") from None
    if res.returncode != 0:
        why = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
        why = re.sub(r"^Failed to parse calendar specification '.*': ", "", why)
        return f"systemd-analyze calendar rejects it: {why}", []
    times: List[datetime] = []
    for line in res.stdout.splitlines():
        m = _ELAPSE.match(line)
        if not m:
            continue
        when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
        utc = m.group(2) == "UTC"
        if line.strip().startswith("(in UTC)"):
            times[-1] = when.replace(tzinfo=timezone.utc)
        else:  # local time, followed by an "(in UTC)" line unless the local zone is UTC
            times.append(when.replace(tzinfo=timezone.utc) if utc else when.astimezone(timezone.utc))
    return None, times


# --- what callers use ------------------------------------------------------------------------------------

def problems(expr: str, use_analyze: Optional[bool] = None) -> List[str]:
    """What is wrong with an OnCalendar expression: [] when it is valid and elapses; else one-line messages.
    `systemd-analyze calendar` decides where it exists (`use_analyze` None), the parser elsewhere."""
    if not isinstance(expr, str) or not expr.strip():
        return ["empty calendar expression"]
    if use_analyze is None:
        use_analyze = analyze_available()
    if use_analyze:
        complaint, times = _analyze(expr)
        if complaint:
            return [complaint]
        return [] if times else ["it never elapses (a date that does not exist, or in the past)"]
    try:
        parse(expr)
    except CalendarError as exc:
        return [str(exc)]
    return [] if next_elapse(expr, datetime.now(timezone.utc), use_analyze=False) else \
        ["it never elapses (a date that does not exist, or in the past)"]


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.astimezone()  # naive: local time


def _zoneinfo(zone: Optional[str]):  # type: ignore[no-untyped-def]
    if zone is None:
        return None
    if zone == "UTC":
        return timezone.utc
    from zoneinfo import ZoneInfo
    return ZoneInfo(zone)


def _times(cal: Calendar) -> List[time]:
    return [time(h, m, s) for h in sorted(cal.hours) for m in sorted(cal.minutes) for s in sorted(cal.seconds)]


def _walk(cal: Calendar, after: datetime) -> Iterator[datetime]:
    """The elapses of `cal` after `after` (aware), in order, as aware UTC datetimes."""
    tz = _zoneinfo(cal.zone)
    start = after.astimezone(tz).date() if tz else after.astimezone().date()
    day, times = start - timedelta(days=1), _times(cal)  # a day early: zones behind `after`'s
    last_year = max(cal.years)
    while day.year <= last_year:
        if day.year not in cal.years:
            day = date(day.year + 1, 1, 1) if day.year < YEARS[1] else date(YEARS[1] + 1, 1, 1)
            continue
        if day.month not in cal.months:
            day = date(day.year + (day.month == 12), day.month % 12 + 1, 1)
            continue
        if cal.matches_day(day):
            for t in times:
                wall = datetime.combine(day, t)
                when = wall.replace(tzinfo=tz) if tz else wall.astimezone()
                back = when.astimezone(timezone.utc).astimezone(tz) if tz else when.astimezone()
                if back.replace(tzinfo=None) != wall:
                    continue  # a time the clocks skip (daylight saving starts): systemd skips it too
                if when > after:
                    yield when.astimezone(timezone.utc)
        day += timedelta(days=1)


def next_elapses(expr: str, after: datetime, count: int, use_analyze: Optional[bool] = None) -> List[datetime]:
    """The next `count` elapses after `after` (a naive `after` is local time), aware in UTC; fewer when the
    expression stops elapsing. CalendarError when the expression is invalid."""
    after = _aware(after)
    if use_analyze is None:
        use_analyze = analyze_available()
    if use_analyze:
        complaint, times = _analyze(expr, after, count)
        if complaint:
            raise CalendarError(complaint)
        return times
    out: List[datetime] = []
    for when in _walk(parse(expr), after):
        out.append(when)
        if len(out) == count:
            break
    return out


def next_elapse(expr: str, after: datetime, use_analyze: Optional[bool] = None) -> Optional[datetime]:
    """When `expr` next elapses after `after` (aware, UTC), or None if it never does again."""
    times = next_elapses(expr, after, 1, use_analyze)
    return times[0] if times else None


# --- cron ------------------------------------------------------------------------------------------------

def _cron_field(values: FrozenSet[int], lo: int, hi: int) -> str:
    """`*`, `*/N`, or a list of values and ranges (`1-5,15`)."""
    v = sorted(values)
    if v == list(range(lo, hi + 1)):
        return "*"
    if len(v) > 2 and v[0] == lo:
        step = v[1] - v[0]
        if step > 1 and v == list(range(lo, hi + 1, step)):
            return f"*/{step}"
    parts: List[str] = []
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[j + 1] == v[j] + 1:
            j += 1
        parts.append(str(v[i]) if j - i < 2 else f"{v[i]}-{v[j]}")
        if 0 < j - i < 2:
            parts.append(str(v[j]))
        i = j + 1
    return ",".join(parts)


def to_cron(expr: str) -> Optional[str]:
    """The five cron fields (`MIN HOUR DOM MON DOW`) that fire when `expr` elapses, or None where cron
    cannot say it: seconds other than :00, a year, the last days of a month (`~`), a time zone (cron runs in
    local time), or both weekdays and days of the month (cron fires on either, systemd on both)."""
    try:
        cal = parse(expr)
    except CalendarError:
        return None
    all_days = frozenset(range(1, 32))
    if cal.seconds != frozenset({0}) or cal.years != _field("*", "year") or cal.last_days or cal.zone:
        return None
    if cal.weekdays != frozenset(range(7)) and cal.days != all_days:
        return None
    dow = "*" if len(cal.weekdays) == 7 else _cron_field(frozenset((d + 1) % 7 for d in cal.weekdays), 0, 6)
    return " ".join([_cron_field(cal.minutes, 0, 59), _cron_field(cal.hours, 0, 23), _cron_field(cal.days, 1, 31),
                     _cron_field(cal.months, 1, 12), dow])
