"""Parsing the JSON documents recovault reads from storage (config, key files, trees, recovery points, journal
entries, sessions, leases, plans, ec set descriptors) and its agent cache.

`json.loads` raises RecursionError, not ValueError, for arrays or objects nested deeper than Python's
recursion limit (about a thousand levels: a few kilobytes of ``[``). Every reader catches ValueError for a
document that does not parse; this makes the deep one such a document too, so it is reported as corrupt
rather than escaping as an internal error (found by fuzzing: docs/reliability.md).
"""
from __future__ import annotations

import json
from typing import Any, Union


def parse(data: Union[str, bytes, bytearray]) -> Any:
    """The JSON value of `data`; ValueError (json.JSONDecodeError for bad syntax) if it is not one."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
