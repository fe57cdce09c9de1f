"""The --keep-* options of `forget` and `policy set` (restic's forget flags), and the retention Policy they
make. Shared by both commands; not a command itself."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

import click

if TYPE_CHECKING:
    from ..retention import Policy

COUNTS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
WITHINS = ("", "-hourly", "-daily", "-weekly", "-monthly", "-yearly")
_BUCKET = {"-hourly": "hour", "-daily": "day", "-weekly": "week", "-monthly": "month", "-yearly": "year"}


def keep_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add --keep-last .. --keep-yearly N, --keep-within[-hourly..-yearly] DURATION, --keep-tag TAGS."""
    f = click.option("--keep-tag", "keep_tag", multiple=True, metavar="TAG[,TAG]",
                     help="Keep points with all these tags (repeatable: any of the lists).")(f)
    for suffix in reversed(WITHINS):
        f = click.option(f"--keep-within{suffix}", f"keep_within{suffix.replace('-', '_')}", default=None,
                         metavar="DURATION", help=f"Keep {'the newest point of each ' + _BUCKET[suffix] if suffix else 'every point'}"
                         " within DURATION of the newest point (e.g. 1y2m3d4h).")(f)
    for what in reversed(COUNTS):
        text = (f"Keep the newest point of each of the last N {_BUCKET['-' + what]}s with points (-1: all)."
                if what != "last" else "Keep the N newest points (-1: all).")
        f = click.option(f"--keep-{what}", f"keep_{what}", type=int, default=None, metavar="N", help=text)(f)
    return f


def policy_from(options: Dict[str, Any]) -> Optional["Policy"]:
    """The Policy the --keep-* values in `options` (a command's keyword arguments) give; None if no rule is
    given. UsageError for a count below -1 or a bad duration. Removes those keys from `options`."""
    from ..retention import Policy
    rules: Dict[str, Any] = {}
    for what in COUNTS:
        value = options.pop(f"keep_{what}")
        if value is not None:
            rules[f"keep_{what}"] = value
    for suffix in WITHINS:
        name = f"keep_within{suffix.replace('-', '_')}"
        value = options.pop(name)
        if value is not None:
            rules[name] = value
    tags = options.pop("keep_tag")
    if tags:
        rules["keep_tags"] = list(tags)
    return Policy(**rules) if rules else None
