"""recovault ls: the files of a recovery point under a path."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List

import click

from ..errors import NotFound
from ..paths import split_path
from .context import Ctx, common_options, examples, pass_ctx

if TYPE_CHECKING:
    from ..vault.records import Node
    from ..vault.repo import Vault


@click.command(name="ls", epilog=examples(
    'recovault ls latest /srv', 'recovault ls 1a2b3c4d /etc --recursive --json'))
@common_options
@click.argument("snapshot")
@click.argument("path", required=False, default="/")
@click.option("--recursive", "-R", is_flag=True, help="List the directories below PATH too.")
@pass_ctx
def ls(c: Ctx, snapshot: str, path: str, recursive: bool) -> None:
    """List files of a recovery point under PATH."""
    out: List[Dict[str, Any]] = []
    with c.open() as v:
        point = v.find_snapshot(snapshot)
        node = v.find_node(point, path)
        if node is None:
            raise NotFound(f"{path} is not in recovery point {point.short_id}")
        prefix = b"".join(b"/" + p for p in split_path(path))
        if node.subtree is None:
            out.append(_entry(prefix or b"/", node))
        else:
            _walk(v, node.subtree, prefix, recursive, out)
    c.out(out, "\n".join(f"{e['type']} {e['mode']:>5o} {e['size']:>12} {e['path']}" for e in out))


def _walk(v: "Vault", tree: str, prefix: bytes, recursive: bool, out: List[Dict[str, Any]]) -> None:
    for n in v.load_nodes(bytes.fromhex(tree)):
        p = prefix + b"/" + n.name
        out.append(_entry(p, n))
        if recursive and n.subtree is not None:
            _walk(v, n.subtree, p, recursive, out)


def _entry(path: bytes, node: "Node") -> Dict[str, Any]:
    m = node.meta
    return {"path": os.fsdecode(path), "type": m["t"], "mode": m.get("m", 0), "size": node.size or 0,
            "mtime_ns": m.get("mt", 0), "uid": m.get("u", 0), "gid": m.get("g", 0)}


command = ls
