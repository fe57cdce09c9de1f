"""Time spans as systemd writes them (systemd.time(7)): "2d", "12h", "1h 30min", "90s", "1w", "1.5d". Units:
us, ms, s (sec, second, seconds), m (min, minute, minutes), h (hr, hour, hours), d (day, days), w (week,
weeks), M (month, months: 30.44 days), y (year, years: 365.25 days). A bare number is seconds. The job files'
durations use this form (hook timeouts, the check cadence) and so does `history --stale`."""
from __future__ import annotations

import re

from ..errors import UsageError

_UNITS = {
    "us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3,
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 7 * 86400, "week": 7 * 86400, "weeks": 7 * 86400,
    "M": 2629800, "month": 2629800, "months": 2629800,
    "y": 31557600, "year": 31557600, "years": 31557600,
}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)")


def parse_timespan(text: str, what: str = "duration") -> float:
    """Seconds in the span `text` names; UsageError naming `what` if it is not one (or is empty)."""
    pos, total, parts = 0, 0.0, 0
    stripped = text.strip()
    while pos < len(stripped):
        m = _PART.match(stripped, pos)
        unit = m.group(2) if m else None
        if m is None or (unit and unit not in _UNITS):
            bad = f"unknown unit {unit!r}" if m else f"no number at {stripped[pos:]!r}"
            raise UsageError(f"{what}: {text!r} is not a time span ({bad}; e.g. 2d, 12h, 1h30min, 1w)")
        total += float(m.group(1)) * _UNITS[unit or "s"]
        parts += 1
        pos = m.end()
        while pos < len(stripped) and stripped[pos] == " ":
            pos += 1
    if not parts:
        raise UsageError(f"{what}: an empty time span (e.g. 2d, 12h, 1h30min, 1w)")
    return total
