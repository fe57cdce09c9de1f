"""recovault dump: one file of a recovery point to stdout, or a directory as a tar archive."""
from __future__ import annotations

import os
import sys
from typing import Optional

import click

from ..errors import UsageError
from .context import Ctx, common_options, examples, pass_ctx, point_options


@click.command(epilog=examples(
    "recovault dump latest /etc/hosts",
    "recovault dump latest:/srv/www > www.tar",
    "recovault dump --host web1 latest /etc | tar -tv"))
@common_options
@point_options
@click.argument("snapshot")
@click.argument("path", required=False, default=None)
@pass_ctx
def dump(c: Ctx, snapshot: str, path: Optional[str]) -> None:
    """Write PATH of recovery point SNAPSHOT to stdout: a file's content, or a directory (with everything
    beneath it) as a tar archive, which is refused when stdout is a terminal. SNAPSHOT:PATH works too; a
    relative PATH is taken against the point's backed-up paths. No --json: the output is the data.
    """
    if c.json:
        raise UsageError("dump writes the data itself and has no --json ('recovault ls --json' describes a path)")
    from ..selection import find_path, point_and_path
    spec, path = point_and_path(snapshot, path)
    if path is None:
        raise UsageError("dump needs a path: SNAPSHOT PATH or SNAPSHOT:PATH")
    out = sys.stdout.buffer
    with c.open() as v:
        _, raw, node = find_path(v, c.select_point(v, spec), path)
        where = os.fsdecode(raw or b"/")
        from ..dump import write_file, write_tar
        if node.subtree is not None:
            if out.isatty():
                raise UsageError(f"{where} is a directory: dump writes it as a tar archive, not to a terminal; "
                                 "redirect stdout (> file.tar, or | tar -t)")
            for skipped in write_tar(v, raw, node, out):
                c.warn(f"{skipped}: a socket, left out of the archive")
        elif node.content is not None or node.image is not None or node.type == "f":
            write_file(v, node, out)
        else:
            raise UsageError(f"{where} is not a file or directory (type {node.type!r})"
                             + (": 'recovault ls -l' shows a symlink's target" if node.type == "l" else ""))
    out.flush()


command = dump
