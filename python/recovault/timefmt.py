"""Times as recovault stores them: RFC 3339 in UTC, with microseconds and a "Z" ("2026-11-25T14:00:00.123456Z",
vault-format.md §9). Always 27 characters, so stored times sort as strings in time order (recovery points are
ordered by theirs); microseconds, so two recovery points of one second keep their order.

`parse_time` reads any RFC 3339 time, so also what versions before this module wrote: key files had whole
seconds ("2026-11-25T14:00:00Z").
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_LOCAL_FORMAT = "%Y-%m-%d %H:%M:%S"
_LOCAL = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\Z")


def format_time(dt: datetime) -> str:
    """`dt` (aware; a naive one is taken as UTC) as stored: UTC, microseconds, "Z"."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc)
    return f"{dt.year:04d}" + dt.strftime(_FORMAT[2:])  # strftime's %Y does not pad years before 1000


def now() -> str:
    """The current time, as stored."""
    return format_time(datetime.now(timezone.utc))


def parse_time(text: str) -> datetime:
    """A stored time ("Z" or an offset, with or without a fraction of a second) as an aware datetime;
    ValueError if `text` is not one."""
    dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    if dt.tzinfo is None:
        raise ValueError(f"time without a UTC offset: {text!r}")
    try:
        dt.astimezone(timezone.utc)  # what format_time and every comparison in UTC do with it
    except OverflowError:
        raise ValueError(f"time out of range: {text!r}") from None
    return dt


def canonical(text: str) -> str:
    """A stored time in the one form recovault prints (`format_time`'s: a key file of an older version has
    whole seconds); text that is no time (an unreadable key file's empty `created`) is returned as it is."""
    try:
        return format_time(parse_time(text))
    except ValueError:
        return text


def shown(text: str) -> str:
    """A stored time as people's tables show it: RFC 3339 in UTC to the second, with the space separator RFC
    3339 allows for readability ("2026-11-25 14:00:00Z"); JSON documents carry the stored form."""
    return text[:19].replace("T", " ") + "Z" if len(text) >= 19 else text


def parse_local(text: str) -> datetime:
    """A time a person gives ("YYYY-MM-DD HH:MM:SS", local time, as restic's ``backup --time``) as an aware
    datetime; ValueError if `text` is not one. A wall time that happens twice (DST ends) is the first."""
    if not _LOCAL.match(text):
        raise ValueError(f"{text!r} is not a time in the form YYYY-MM-DD HH:MM:SS")
    try:
        return datetime.strptime(text, _LOCAL_FORMAT).astimezone()
    except (ValueError, OverflowError) as e:
        raise ValueError(f"{text!r} is not a valid time ({e})") from None
