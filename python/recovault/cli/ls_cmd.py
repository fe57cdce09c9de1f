"""recovault ls: the files of a recovery point under a path."""
from __future__ import annotations

import os
from typing import Any, Dict, List

import click

from ..errors import NotFound
from .context import Ctx, common_options, pass_ctx


@click.command(name="ls")
@common_options
@click.argument("snapshot")
@click.argument("path", required=False, default="/")
@click.option("--recursive", "-R", is_flag=True)
@pass_ctx
def ls(c: Ctx, snapshot: str, path: str, recursive: bool) -> None:
    """List files of a recovery point under PATH."""
    from ..fsmeta import decode_name
    out: List[Dict[str, Any]] = []
    with c.open() as v:
        snap = v.find_snapshot(snapshot)
        parts = [p for p in os.fsencode(path).split(b"/") if p]
        node = v.find_node(snap, path)
        if node is None:
            raise NotFound(f"{path} is not in recovery point {snap['id'][:8]}")
        tree = v.load_tree(bytes.fromhex(node["subtree"])) if "subtree" in node else None
        if tree is None:
            out.append(_entry(b"/" + b"/".join(parts), node))

        def walk(t, prefix: bytes):
            for n in t["nodes"]:
                p = prefix + b"/" + decode_name(n["name"])
                out.append(_entry(p, n))
                if recursive and "subtree" in n:
                    walk(v.load_tree(bytes.fromhex(n["subtree"])), p)
        if tree is not None:
            walk(tree, b"/" + b"/".join(parts) if parts else b"")
    c.out(out, "\n".join(f"{e['type']} {e['mode']:>5o} {e['size']:>12} {e['path']}" for e in out))


def _entry(path: bytes, node: Dict[str, Any]) -> Dict[str, Any]:
    m = node["meta"]
    return {"path": os.fsdecode(path), "type": m["t"], "mode": m.get("m", 0), "size": node.get("size", 0),
            "mtime_ns": m.get("mt", 0), "uid": m.get("u", 0), "gid": m.get("g", 0)}


command = ls
