"""Bandwidth limits (storage/limits.py): rates, work hours, the schedule and the token bucket, on an injected
clock (nothing here sleeps)."""
from __future__ import annotations

import threading
from datetime import datetime

import pytest

from recovault.errors import UsageError
from recovault.storage.limits import (DEFAULT_WORK_HOURS, Schedule, TokenBucket, TransferLimits, parse_rate,
                                      parse_work_hours)

KiB, MiB = 1024, 1024 * 1024


class FakeClock:
    """monotonic, wall and sleep for a TokenBucket: sleeping only moves the clock (shared by threads)."""

    def __init__(self, wall: float = 0.0) -> None:
        self.now = 0.0
        self.wall0 = wall
        self.lock = threading.Lock()
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.wall0 + self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds
            self.slept += seconds

    def bucket(self, schedule: Schedule) -> TokenBucket:
        return TokenBucket(schedule, clock=self.clock, wall=self.wall, sleep=self.sleep)


@pytest.mark.parametrize("text, expected", [
    ("20MiB", 20 * MiB), ("500KiB", 500 * KiB), ("1.5GB", 1.5e9), ("2kB", 2000), ("2KB", 2000), ("4096B", 4096),
    ("100Mbit", 100e6 / 8), ("100Mbps", 100e6 / 8), ("80kbit", 10000), ("1Gbit/s", 1e9 / 8), ("20MiB/s", 20 * MiB),
    ("20MBps", 20e6), (" 3 MiB ", 3 * MiB), (".5MiB", 0.5 * MiB), ("1GiB", 1 << 30),
])
def test_parse_rate(text, expected):
    rate = parse_rate(text)
    assert rate.bytes_per_second == pytest.approx(expected)
    assert rate.text == text.strip()


@pytest.mark.parametrize("text", ["unlimited", "off", "Unlimited"])
def test_parse_rate_unlimited(text):
    assert parse_rate(text).bytes_per_second is None


@pytest.mark.parametrize("text, needle", [
    ("20", "a bare number has no unit"), ("20Mb", "write Mbit for bits or MB for bytes"), ("", "invalid rate"),
    ("fast", "invalid rate"), ("-5MiB", "invalid rate"), ("20 MiB MiB", "invalid rate"), ("5XB", "invalid rate"),
    ("0MiB", "at least 1KiB"), ("100B", "at least 1KiB"), ("1e3MB", "invalid rate"),
])
def test_bad_rates_get_one_message(text, needle):
    with pytest.raises(UsageError, match="invalid rate") as info:
        parse_rate(text)
    assert needle in str(info.value)
    assert "20MiB" in str(info.value) or "1KiB" in str(info.value)  # says what to write instead


# Mon 2026-11-23 is a Monday.
@pytest.mark.parametrize("when, work", [
    (datetime(2026, 11, 23, 7, 59, 59), False), (datetime(2026, 11, 23, 8, 0, 0), True),
    (datetime(2026, 11, 23, 17, 59, 59, 999000), True), (datetime(2026, 11, 23, 18, 0, 0), False),
    (datetime(2026, 11, 27, 12, 0), True),  # Friday
    (datetime(2026, 11, 28, 12, 0), False),  # Saturday
    (datetime(2026, 11, 29, 12, 0), False),  # Sunday
])
def test_default_work_hours(when, work):
    assert DEFAULT_WORK_HOURS.covers(when) is work
    assert DEFAULT_WORK_HOURS.text == "Mon-Fri 08:00-18:00"


def test_work_hours_forms():
    h = parse_work_hours("mon,Wednesday 9:00-12:30; Sat-Sun 10:00-24:00")
    assert h.covers(datetime(2026, 11, 23, 9, 0)) and h.covers(datetime(2026, 11, 25, 12, 29))
    assert not h.covers(datetime(2026, 11, 24, 10, 0))  # Tuesday
    assert not h.covers(datetime(2026, 11, 25, 12, 30))
    assert h.covers(datetime(2026, 11, 29, 23, 59, 59)) and not h.covers(datetime(2026, 11, 30, 0, 0))
    wrap = parse_work_hours("Fri-Mon 08:00-09:00")  # a range over the weekend
    assert [wrap.covers(datetime(2026, 11, 23 + d, 8, 30)) for d in range(7)] == [
        True, False, False, False, True, True, True]


def test_overnight_window_belongs_to_the_day_it_starts():
    night = parse_work_hours("Fri 22:00-06:00")
    assert night.covers(datetime(2026, 11, 27, 22, 0))  # Friday night
    assert night.covers(datetime(2026, 11, 28, 5, 59))  # Saturday morning: still Friday's night
    assert not night.covers(datetime(2026, 11, 28, 6, 0))
    assert not night.covers(datetime(2026, 11, 27, 5, 0))  # Friday morning: Thursday's night, not in it
    assert not night.covers(datetime(2026, 11, 28, 22, 0))


@pytest.mark.parametrize("text, needle", [
    ("Mon-Fri", "write days"), ("Mon-Frx 08:00-18:00", "'Frx' is not a day"), ("Mon 25:00-26:00", "not a time"),
    ("Mon 08:60-09:00", "not a time"), ("Mon 08:00-08:00", "empty window"), ("08:00-18:00", "write days"),
    ("Mon 24:00-06:00", "empty window"), ("Mon 08:00-18:00;", "write days"), ("Mo 08:00-18:00", "not a day"),
])
def test_bad_work_hours_get_one_message(text, needle):
    with pytest.raises(UsageError, match="invalid work hours") as info:
        parse_work_hours(text)
    assert needle in str(info.value) and "Mon-Fri 08:00-18:00" in str(info.value)


def test_transfer_limits_from_options():
    assert not TransferLimits.from_options().limited
    up = parse_rate("2MiB")
    only = TransferLimits.from_options(upload=up)
    assert only.upload == Schedule(2 * MiB, 2 * MiB, DEFAULT_WORK_HOURS) and not only.download.limited
    work = TransferLimits.from_options(upload=up, upload_work=parse_rate("512KiB"),
                                       download_work=parse_rate("1MiB"), work_hours=parse_work_hours("Sat 1:00-2:00"))
    assert work.upload.work == 512 * KiB and work.upload.other == 2 * MiB
    assert work.download.work == MiB and work.download.other is None  # unlimited outside work hours
    assert work.upload.hours.text == "Sat 1:00-2:00"
    with pytest.raises(UsageError, match="--work-hours needs a rate"):
        TransferLimits.from_options(upload=up, work_hours=DEFAULT_WORK_HOURS)


def test_bucket_holds_the_rate():
    fc = FakeClock()
    bucket = fc.bucket(Schedule(MiB, MiB))
    for _ in range(100):
        bucket.acquire(300 * KiB)  # 30,000 KiB at 1 MiB/s: 29.3 s
    assert fc.now == pytest.approx(100 * 300 / 1024, rel=0.01)


def test_bucket_paces_a_large_acquire_in_pieces():
    fc = FakeClock()
    sleeps = []
    bucket = TokenBucket(Schedule(MiB, MiB), clock=fc.clock, wall=fc.wall,
                         sleep=lambda s: (sleeps.append(s), fc.sleep(s)))
    bucket.acquire(16 * MiB)  # one pack: 16 s, in pieces of a tenth of a second
    assert fc.now == pytest.approx(16, rel=0.01)
    assert len(sleeps) >= 150 and max(sleeps) <= 0.11


def test_unlimited_bucket_never_waits():
    fc = FakeClock()
    bucket = fc.bucket(Schedule())
    bucket.acquire(1 << 40)
    assert fc.slept == 0 and not bucket.limited


def test_idle_bucket_saves_only_a_short_burst():
    fc = FakeClock()
    bucket = fc.bucket(Schedule(MiB, MiB))
    fc.now += 3600  # an hour idle
    bucket.acquire(10 * MiB)
    assert fc.now - 3600 == pytest.approx(9.9, abs=0.02)  # only 0.1 s of the rate was saved up


def test_threads_share_one_rate():
    """Four threads each taking 1 MiB at 8 MiB/s (the real clock): 0.5 s in all, not 0.125 (one bucket)."""
    import time
    bucket = TokenBucket(Schedule(8 * MiB, 8 * MiB))
    threads = [threading.Thread(target=bucket.acquire, args=(MiB,)) for _ in range(4)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 0.45 <= time.monotonic() - start < 3  # one bucket's 0.5 s (a busy machine only adds to it)


def test_rate_changes_when_the_clock_crosses_a_boundary(tz):
    """A job sending through 17:59:50 -> 18:00: 1 MiB/s during work hours, 4 MiB/s after; each piece asks
    the schedule, so the new rate applies within a piece (a tenth of a second) of the boundary."""
    tz("UTC")
    start = datetime(2026, 11, 23, 17, 59, 50).timestamp()  # a Monday, in UTC
    fc = FakeClock(wall=start)
    bucket = fc.bucket(Schedule(work=MiB, other=4 * MiB))
    sent, before, at = 0, 0, 0.0
    while fc.now < 20:
        bucket.acquire(64 * KiB)
        sent += 64 * KiB
        if not before and fc.now >= 10:
            before, at = sent, fc.now  # the first piece past the boundary
    assert at - 10 < 0.11
    assert before == pytest.approx(10 * MiB, rel=0.02)
    assert (sent - before) / (fc.now - at) == pytest.approx(4 * MiB, rel=0.03)


def test_rate_back_to_limited_after_unlimited_hours(tz):
    tz("UTC")
    fc = FakeClock(wall=datetime(2026, 11, 23, 7, 59, 59).timestamp())
    bucket = fc.bucket(Schedule(work=MiB, other=None))
    bucket.acquire(100 * MiB)  # unlimited before 08:00: no wait at all
    assert fc.now == 0
    fc.now = 1.0  # 08:00:00
    bucket.acquire(5 * MiB)
    assert fc.now - 1.0 == pytest.approx(5, rel=0.02)  # nothing saved up from the unlimited time


def test_set_schedule_applies_to_a_running_bucket():
    fc = FakeClock()
    bucket = fc.bucket(Schedule(MiB, MiB))
    bucket.acquire(MiB)
    bucket.set_schedule(Schedule(2 * MiB, 2 * MiB))
    t = fc.now
    bucket.acquire(4 * MiB)
    assert fc.now - t == pytest.approx(2, rel=0.03)
