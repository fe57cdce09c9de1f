"""Trees: one sealed blob per directory, listing its entries sorted by name.

A node is a JSON object: {"name": NAME, "meta": {fsmeta dict}, and per type: "content": [chunk ids hex]
and "size" for files, "subtree": tree id hex for directories}. NAME is a str when the file name is
valid UTF-8, else {"b64": base64 of the raw bytes}. Identical directories produce identical bytes
(sorted keys, no whitespace), so unchanged directories deduplicate between recovery points.
"""
from __future__ import annotations

from typing import Any, Dict, List

from ..fsmeta import decode_name, encode_name  # noqa: F401  (names in trees use fsmeta's encoding)

TREE_VERSION = 1


def make_tree(nodes: List[Dict[str, Any]]) -> Dict[str, Any]:
    nodes.sort(key=lambda n: decode_name(n["name"]))
    return {"v": TREE_VERSION, "nodes": nodes}


def node_map(tree: Dict[str, Any]) -> Dict[bytes, Dict[str, Any]]:
    return {decode_name(n["name"]): n for n in tree.get("nodes", [])}
