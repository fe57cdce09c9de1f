"""recovault ls: the files of a recovery point under a path."""
from __future__ import annotations

from typing import List, Optional

import click

from ..errors import NotFound, UsageError
from .context import Ctx, common_options, pass_ctx, point_options


@click.command(name="ls")
@common_options
@point_options
@click.argument("snapshot")
@click.argument("path", required=False, default=None)
@click.option("--recursive", "-R", is_flag=True, help="List everything beneath PATH, not only its entries.")
@click.option("--long", "-l", "long_", is_flag=True,
              help="Mode, owner, group, size, mtime (UTC) and link target of each entry.")
@pass_ctx
def ls(c: Ctx, snapshot: str, path: Optional[str], recursive: bool, long_: bool) -> None:
    """List files of a recovery point under PATH (default /). SNAPSHOT is an id, a prefix or 'latest', or
    SNAPSHOT:PATH; a relative PATH is taken against the point's backed-up paths.

    \b
    Example: recovault ls -l latest:/etc/ssh
    """
    from ..entries import Entry, walk
    from ..paths import split_path
    from ..selection import parse_point_path, resolve_path
    spec, in_spec = parse_point_path(snapshot)
    if in_spec is not None and path is not None:
        raise UsageError(f"give the path once: as {snapshot} or as PATH {path}, not both")
    out: List[Entry] = []
    with c.open() as v:
        point = c.select_point(v, spec)
        where = resolve_path(v, point, in_spec or path or "/")
        node = v.find_node(point, where)
        if node is None:
            raise NotFound(f"{where} is not in recovery point {point.short_id}")
        prefix = b"".join(b"/" + p for p in split_path(where))
        if node.subtree is None:
            out.append(Entry.of(prefix, node))
        else:
            out.extend(Entry.of(p, n) for p, n in walk(v, node.subtree, prefix, recursive))
    text = [e.long_line() for e in out] if long_ else [f"{e.type} {e.mode:>5o} {e.size:>12} {e.path}" for e in out]
    c.out([e.to_json() for e in out], "\n".join(text))


command = ls
