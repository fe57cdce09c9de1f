"""recovault ls: the files of a recovery point under a path."""
from __future__ import annotations

from typing import List, Optional

import click

from .context import Ctx, common_options, examples, pass_ctx, point_options


@click.command(name="ls", epilog=examples(
    'recovault ls latest /srv', 'recovault ls 1a2b3c4d /etc --recursive --json'))
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
    from ..selection import find_path, point_and_path
    spec, path = point_and_path(snapshot, path)
    out: List[Entry] = []
    with c.open() as v:
        _, prefix, node = find_path(v, c.select_point(v, spec), path or "/")
        if node.subtree is None:
            out.append(Entry.of(prefix, node))
        else:
            out.extend(Entry.of(p, n) for p, n in walk(v, node.subtree, prefix, recursive))
    text = [e.long_line() for e in out] if long_ else [f"{e.type} {e.mode:>5o} {e.size:>12} {e.path}" for e in out]
    c.out([e.to_json() for e in out], "\n".join(text))


command = ls
