"""The checks of a job file's values that every table shares (spec.py's tables, report.py's ``[report]``):
each returns the value or raises ``BadValue`` (a ValueError) whose message follows the key in the problem
("backup.one_file_system: must be true or false, not a string"), so the same mistake reads the same in
every table."""
from __future__ import annotations

from typing import Any


class BadValue(ValueError):
    """A value of the wrong type or form; the message says what it must be."""


def type_name(v: Any) -> str:
    """What a TOML value is, for people: "a string", "an integer", "a table"..."""
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(v), type(v).__name__)


def check_str(v: Any, hint: str = "", empty_ok: bool = False) -> str:
    """A string (`hint`: what it holds, named when it is not one); an empty one is refused unless
    `empty_ok` (the caller then says what is wrong with it)."""
    if not isinstance(v, str):
        raise BadValue(f"must be a string{f' ({hint})' if hint else ''}, not {type_name(v)}")
    if not empty_ok and not v.strip():
        raise BadValue("must not be empty")
    return v


def check_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise BadValue(f"must be true or false, not {type_name(v)}")
    return v
