"""Bandwidth limits: rates (`20MiB`, `100Mbit`), the work-hours schedule and the token bucket that enforces them.

One :class:`TransferLimiter` per process (:data:`PROCESS_LIMITER`) holds two buckets, upload and download;
every storage the process opens through ``open_storage`` with limits configured is wrapped by
``wrappers.LimitedStorage`` around that one limiter, so all of its connections and threads share the rate.

A :class:`Schedule` is the MARS agent's throttling: one rate during work hours (days and local hours to
choose, default Mon-Fri 08:00-18:00) and another for the rest of the week. The bucket asks the schedule for
the rate at every piece it hands out (pieces are about a tenth of a second of the rate), so a running job
changes its rate within a piece or so of the clock crossing a boundary.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, FrozenSet, NamedTuple, Optional, Tuple

from ..errors import UsageError

__all__ = [
    "DEFAULT_WORK_HOURS",
    "PROCESS_LIMITER",
    "Rate",
    "Schedule",
    "TokenBucket",
    "TransferLimiter",
    "TransferLimits",
    "WorkHours",
    "Window",
    "parse_rate",
    "parse_work_hours",
]

MIN_RATE = 1024  # bytes per second: below this a single 4 KiB piece would take seconds
PIECE_SECONDS = 0.1  # a piece is about this long at the current rate ...
MIN_PIECE = 4 << 10  # ... but at least this many bytes (fewer, cheaper lock round trips at low rates)
MAX_PIECE = 1 << 20  # ... and at most this many (a boundary or another thread never waits long)
BURST_SECONDS = 0.1  # an idle bucket saves up at most this long of its rate (and at least one piece)

_PREFIX = {"": 1, "k": 1000, "ki": 1024, "m": 1000 ** 2, "mi": 1024 ** 2, "g": 1000 ** 3, "gi": 1024 ** 3,
           "t": 1000 ** 4, "ti": 1024 ** 4}
_RATE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)(?:/s)?\s*")
_UNLIMITED = ("unlimited", "off", "none")
_RATE_FORMS = ("write a number and a unit: bytes per second as 500KiB, 20MiB, 1.5GB (B = byte), bits per "
               "second as 100Mbit or 100Mbps; or 'unlimited'")


class Rate(NamedTuple):
    """A parsed rate: bytes per second (None: unlimited) and the text it was written as (for messages)."""

    bytes_per_second: Optional[float]
    text: str


def _unit_factor(unit: str) -> Optional[float]:
    """Bytes per second in one ``unit``: a capital B is a byte, "bit" or "bps" a bit; None if not a unit."""
    for suffix, bits in (("Bps", 1), ("B", 1), ("bps", 8), ("bit", 8), ("Bit", 8)):
        prefix = unit[:-len(suffix)].lower()
        if unit.endswith(suffix) and prefix in _PREFIX:
            return _PREFIX[prefix] / bits
    return None


def parse_rate(text: str) -> Rate:
    """``"20MiB"`` -> 20 MiB per second. Units: B, kB/KB, KiB, MB, MiB, GB, GiB, TB, TiB (bytes, a capital
    B), bit, kbit, Mbit, Gbit (or kbps, Mbps, ...: bits), optionally with "/s"; "unlimited" (or "off"):
    no limit. Anything else, zero, or less than 1 KiB per second raises one ``UsageError``."""
    if text.strip().lower() in _UNLIMITED:
        return Rate(None, text.strip())
    m = _RATE.fullmatch(text)
    factor = _unit_factor(m.group(2)) if m else None
    if m is None or factor is None:
        hint = " (a bare number has no unit)" if m and not m.group(2) else ""
        if m and m.group(2) and m.group(2)[-1:] == "b":
            hint = f" ({m.group(2)!r}: write {m.group(2)[:-1]}bit for bits or {m.group(2)[:-1]}B for bytes)"
        raise UsageError(f"invalid rate {text!r}{hint}: {_RATE_FORMS}")
    value = float(m.group(1)) * factor
    if value < MIN_RATE:
        raise UsageError(f"invalid rate {text!r}: a limit must be at least 1KiB per second "
                         "(write 'unlimited' for no limit)")
    return Rate(value, text.strip())


# -- work hours ------------------------------------------------------------------------------------------

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WINDOW = re.compile(r"\s*([A-Za-z,\- ]+?)\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")
_HOURS_FORM = ("write days and local hours as 'Mon-Fri 08:00-18:00' (days: Mon..Sun, ranges and commas such "
               "as 'Mon,Wed,Sat-Sun'; hours 00:00-24:00, an end before the start runs past midnight; several "
               "windows separated by ';')")


@dataclass(frozen=True)
class Window:
    """Work hours on some days: from ``start`` to ``end`` (seconds after local midnight) of each day in
    ``days`` (0 = Monday). An ``end`` before ``start`` runs past midnight into the next day."""

    days: FrozenSet[int]
    start: int
    end: int

    def covers(self, weekday: int, second: float) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= second < self.end
        return (weekday in self.days and second >= self.start) or ((weekday - 1) % 7 in self.days
                                                                   and second < self.end)


@dataclass(frozen=True)
class WorkHours:
    """The work hours of a week, in local time: one or more windows, and the text they were written as."""

    windows: Tuple[Window, ...]
    text: str

    def covers(self, when: datetime) -> bool:
        second = when.hour * 3600 + when.minute * 60 + when.second + when.microsecond / 1e6
        return any(w.covers(when.weekday(), second) for w in self.windows)


def _day(text: str, whole: str) -> int:
    low = text.strip().lower()
    for i, full in enumerate(_FULL_DAYS):
        if len(low) >= 3 and full.startswith(low):
            return i
    raise UsageError(f"invalid work hours {whole!r}: {text.strip()!r} is not a day; {_HOURS_FORM}")


def _days(text: str, whole: str) -> FrozenSet[int]:
    days = set()
    for item in text.split(","):
        first, sep, last = item.partition("-")
        a = _day(first, whole)
        b = _day(last, whole) if sep else a
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))  # "Fri-Mon" wraps over the weekend
    return frozenset(days)


def _seconds(hours: str, minutes: str, whole: str) -> int:
    h, m = int(hours), int(minutes)
    if m > 59 or h > 24 or (h == 24 and m):
        raise UsageError(f"invalid work hours {whole!r}: {hours}:{minutes} is not a time of day; {_HOURS_FORM}")
    return h * 3600 + m * 60


def parse_work_hours(text: str) -> WorkHours:
    """``"Mon-Fri 08:00-18:00"`` (the default), ``"Mon,Wed 09:00-12:00; Sat 10:00-14:00"``, ``"Mon-Sun
    22:00-06:00"`` (overnight: each night belongs to the day it starts on). One ``UsageError`` otherwise."""
    windows = []
    for part in text.split(";"):
        m = _WINDOW.fullmatch(part)
        if m is None:
            raise UsageError(f"invalid work hours {text!r}: {_HOURS_FORM}")
        start, end = _seconds(m.group(2), m.group(3), text), _seconds(m.group(4), m.group(5), text)
        if start == end or start == 24 * 3600:
            raise UsageError(f"invalid work hours {text!r}: {part.strip()!r} is an empty window; {_HOURS_FORM}")
        windows.append(Window(_days(m.group(1), text), start, end))
    return WorkHours(tuple(windows), text.strip())


DEFAULT_WORK_HOURS = parse_work_hours("Mon-Fri 08:00-18:00")


@dataclass(frozen=True)
class Schedule:
    """One direction's limit: ``work`` during ``hours``, ``other`` the rest of the time (None: unlimited)."""

    work: Optional[float] = None
    other: Optional[float] = None
    hours: WorkHours = DEFAULT_WORK_HOURS

    @property
    def limited(self) -> bool:
        return self.work is not None or self.other is not None

    def rate_at(self, when: datetime) -> Optional[float]:
        """Bytes per second allowed at local time ``when`` (None: unlimited)."""
        if self.work == self.other:
            return self.work
        return self.work if self.hours.covers(when) else self.other


UNLIMITED = Schedule()


@dataclass(frozen=True)
class TransferLimits:
    """What a process may send (upload) and receive (download)."""

    upload: Schedule = UNLIMITED
    download: Schedule = UNLIMITED

    @property
    def limited(self) -> bool:
        return self.upload.limited or self.download.limited

    @classmethod
    def from_options(cls, upload: Optional[Rate] = None, download: Optional[Rate] = None,
                     upload_work: Optional[Rate] = None, download_work: Optional[Rate] = None,
                     work_hours: Optional[WorkHours] = None) -> "TransferLimits":
        """The CLI's options: ``--limit-upload`` is the rate at all times, or outside work hours when
        ``--limit-upload-work`` gives another for work hours (likewise for download); ``--work-hours``
        chooses them (default Mon-Fri 08:00-18:00) and needs a work rate."""
        if work_hours is not None and upload_work is None and download_work is None:
            raise UsageError("--work-hours needs a rate for them: --limit-upload-work RATE or "
                             "--limit-download-work RATE")
        hours = work_hours or DEFAULT_WORK_HOURS

        def schedule(rest: Optional[Rate], work: Optional[Rate]) -> Schedule:
            other = rest.bytes_per_second if rest else None
            return Schedule(work.bytes_per_second if work else other, other, hours)
        return cls(schedule(upload, upload_work), schedule(download, download_work))


# -- the token bucket --------------------------------------------------------------------------------------

Clock = Callable[[], float]


def _piece(rate: float) -> int:
    return int(min(max(rate * PIECE_SECONDS, MIN_PIECE), MAX_PIECE))


class TokenBucket:
    """A token bucket whose rate follows a :class:`Schedule`, shared by every thread that calls ``acquire``.

    ``acquire(n)`` takes ``n`` bytes' worth in pieces of about a tenth of a second of the current rate; a
    piece may drive the bucket into debt, and its taker sleeps until the debt is repaid, so callers
    together get the rate and each waits about as long as its share. ``clock`` (monotonic seconds),
    ``wall`` (seconds since the epoch, for the schedule's local time) and ``sleep`` are injectable.
    """

    def __init__(self, schedule: Schedule = UNLIMITED, *, clock: Clock = time.monotonic, wall: Clock = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._lock = threading.Lock()
        self._clock, self._wall, self._sleep = clock, wall, sleep
        self.schedule = schedule
        self._tokens = 0.0
        self._last = clock()

    @property
    def limited(self) -> bool:
        return self.schedule.limited

    def rate(self) -> Optional[float]:
        """The rate in force now (bytes per second; None: unlimited)."""
        return self.schedule.rate_at(datetime.fromtimestamp(self._wall()))

    def set_schedule(self, schedule: Schedule) -> None:
        with self._lock:
            self.schedule = schedule

    def piece(self) -> int:
        """How many bytes to hand out at once now: about PIECE_SECONDS of the rate (MAX_PIECE: unlimited)."""
        rate = self.rate()
        return MAX_PIECE if rate is None else _piece(rate)

    def acquire(self, n: int) -> None:
        """Wait until ``n`` more bytes may go at the rate in force (at once when unlimited)."""
        while n > 0:
            with self._lock:
                rate = self.rate()
                now = self._clock()
                elapsed, self._last = now - self._last, now
                if rate is None:
                    self._tokens = 0.0
                    return
                piece = _piece(rate)
                self._tokens = min(self._tokens + elapsed * rate, max(rate * BURST_SECONDS, piece))
                take = min(n, piece)
                self._tokens -= take
                wait = -self._tokens / rate if self._tokens < 0 else 0.0
            n -= take
            if wait > 0:
                self._sleep(wait)


class TransferLimiter:
    """The two buckets of a process: ``upload`` (bytes sent by put) and ``download`` (bytes got)."""

    def __init__(self, limits: TransferLimits = TransferLimits(), **clocks: object) -> None:
        self.upload = TokenBucket(limits.upload, **clocks)  # type: ignore[arg-type]
        self.download = TokenBucket(limits.download, **clocks)  # type: ignore[arg-type]

    @property
    def limited(self) -> bool:
        return self.upload.limited or self.download.limited

    def configure(self, limits: TransferLimits) -> None:
        """Apply new limits (also to storages already open: they share these buckets)."""
        self.upload.set_schedule(limits.upload)
        self.download.set_schedule(limits.download)


#: The one limiter of this process: every storage opened with limits shares it.
PROCESS_LIMITER = TransferLimiter()
