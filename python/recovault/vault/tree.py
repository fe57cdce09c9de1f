"""Trees: one sealed blob per directory, listing its entries sorted by name (docs/vault-format.md §8).

A tree's plaintext is ``{"v": 1, "nodes": [...]}``, each node a JSON object: {"name": NAME, "meta": {fsmeta
dict}, and per type: "content": [chunk ids hex] and "size" for files, "subtree": tree id hex for
directories, "image" and "size" for images}. NAME is a str when the file name is valid UTF-8, else {"b64":
base64 of the raw bytes}. Identical directories produce identical bytes (sorted keys, no whitespace), so
unchanged directories deduplicate between recovery points: ``encode_tree`` must give, for the same entries,
the bytes every earlier version gave (tests/test_records.py pins them). In Python a node is a
``records.Node``.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List

from .. import jsondoc
from ..errors import CorruptData
from .records import Node

TREE_VERSION = 1


def encode_tree(nodes: List[Node]) -> bytes:
    """The plaintext of the tree holding ``nodes`` (sorted here, by raw name)."""
    nodes.sort(key=_name)
    doc = {"v": TREE_VERSION, "nodes": [n.to_json() for n in nodes]}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def decode_tree(data: bytes, what: str) -> List[Node]:
    """The nodes of a tree's plaintext (`what` names it in the CorruptData a malformed one raises)."""
    try:
        return [Node.from_json(n) for n in parse_tree(data, what).get("nodes", [])]
    except (KeyError, TypeError, AttributeError, ValueError):  # ValueError: a name no file system name encodes
        raise CorruptData(f"{what} holds a malformed node") from None


def parse_tree(data: bytes, what: str) -> Dict[str, Any]:
    """A tree's plaintext as its JSON document."""
    try:
        doc = jsondoc.parse(data)
    except ValueError:
        raise CorruptData(f"{what} does not parse") from None
    if not isinstance(doc, dict):
        raise CorruptData(f"{what} does not parse")
    return doc


def node_map(nodes: Iterable[Node]) -> Dict[bytes, Node]:
    """The nodes by raw name."""
    return {n.name: n for n in nodes}


def _name(node: Node) -> bytes:
    return node.name
