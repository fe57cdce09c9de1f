"""Which recovery points hold paths matching a pattern (restic's find): a glob (fnmatch, case-sensitive)
against each entry's name, or against its whole path when the pattern holds a "/".

Reads trees only, never file data: a subtree already searched at the same path in another point (same tree
ID) is not read again, so searching many points costs about one point plus what changed between them.
Nothing here prints.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Sequence, Tuple

from .entries import Entry

if TYPE_CHECKING:
    from .vault.records import RecoveryPoint
    from .vault.repo import Vault


@dataclass(frozen=True)
class PointMatches:
    """The entries of one recovery point that match."""

    point: "RecoveryPoint"
    matches: List[Entry]

    def to_json(self) -> Dict[str, Any]:
        p = self.point
        return {"snapshot": p.id, "time": p.time, "host": p.host, "paths": p.paths, "tags": p.tags,
                "matches": [e.to_json() for e in self.matches]}


class Finder:
    def __init__(self, vault: "Vault", pattern: str) -> None:
        self.vault = vault
        self.pattern = pattern
        self.whole_path = "/" in pattern
        self._seen: Dict[Tuple[str, bytes], List[Entry]] = {}

    def matches(self, path: bytes, name: bytes) -> bool:
        return fnmatch.fnmatchcase(os.fsdecode(path if self.whole_path else name), self.pattern)

    def in_tree(self, tree: str, prefix: bytes) -> List[Entry]:
        """The matching entries beneath `tree` at `prefix`, in depth-first order (remembered per tree and
        prefix)."""
        key = (tree, prefix)
        found = self._seen.get(key)
        if found is None:
            found = []
            for n in self.vault.load_nodes(bytes.fromhex(tree)):
                path = prefix + b"/" + n.name
                if self.matches(path, n.name):
                    found.append(Entry.of(path, n))
                if n.subtree is not None:
                    found.extend(self.in_tree(n.subtree, path))
            self._seen[key] = found
        return found


def find(vault: "Vault", pattern: str, points: Sequence["RecoveryPoint"]) -> List[PointMatches]:
    """The points (in the given order) that hold entries matching `pattern`, with those entries."""
    finder = Finder(vault, pattern)
    out = []
    for p in points:
        hits = finder.in_tree(p.tree, b"")
        if hits:
            out.append(PointMatches(p, hits))
    return out
