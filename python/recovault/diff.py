"""What changed between two recovery points (or two paths in them), like `restic diff`: each entry added
(`+`), removed (`-`), modified (`M`: a file's content, a symlink's target or a device's number), of another
type (`T`), or with only its metadata changed (`U`: mode, owner, mtime, extended attributes); and the data
added and removed, counted in unique blobs (a file moved or copied adds nothing).

Reads trees only: subtrees with the same ID are skipped without being read, and file data is never read
(sizes come from the index). Times of access and change, inode numbers and link counts are not compared
(they change without the file changing), nor a directory's mtime (it follows its entries, which are
listed themselves). Nothing here prints.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Set

from .entries import Entry, walk
from .vault.tree import node_map

if TYPE_CHECKING:
    from .vault.records import Node
    from .vault.repo import Vault

#: metadata keys that change without the entry changing (fsmeta's compact names)
_VOLATILE = frozenset(("at", "ct", "ino", "dev", "nl", "sz"))
#: metadata keys that are content, not metadata: a symlink's target, a device's number
_CONTENT_META = frozenset(("lt", "rd"))

MODIFIERS = {"+": "added", "-": "removed", "M": "modified", "T": "type_changed", "U": "metadata"}


@dataclass(frozen=True)
class Change:
    """One changed entry: its path (in the second point), the modifier, and the entry in each point."""

    path: str
    modifier: str
    before: Optional[Entry]
    after: Optional[Entry]

    def to_json(self) -> Dict[str, Any]:
        return {"path": self.path, "modifier": self.modifier,
                "before": self.before.to_json() if self.before else None,
                "after": self.after.to_json() if self.after else None}


@dataclass
class DiffStats:
    """Counts per modifier, and the data blobs only one side references (with their bytes before
    compression)."""

    added: int = 0
    removed: int = 0
    modified: int = 0
    type_changed: int = 0
    metadata: int = 0
    blobs_added: int = 0
    blobs_removed: int = 0
    bytes_added: int = 0
    bytes_removed: int = 0

    def to_json(self) -> Dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Diff:
    changes: List[Change] = field(default_factory=list)
    stats: DiffStats = field(default_factory=DiffStats)


class _Differ:
    def __init__(self, vault: "Vault") -> None:
        self.vault = vault
        self.result = Diff()
        self.blobs: List[Set[bytes]] = [set(), set()]  # data blobs of the changed entries, before and after

    def emit(self, modifier: str, path: bytes, a: Optional["Node"], b: Optional["Node"]) -> None:
        before = Entry.of(path, a) if a is not None else None
        after = Entry.of(path, b) if b is not None else None
        self.result.changes.append(Change((after or before).path, modifier, before, after))  # type: ignore[union-attr]
        name = MODIFIERS[modifier]
        setattr(self.result.stats, name, getattr(self.result.stats, name) + 1)

    def one_side(self, modifier: str, path: bytes, node: "Node") -> None:
        """An entry only one point has (`+` or `-`), and everything beneath it."""
        side = 1 if modifier == "+" else 0
        self._subtree_entry(side, path, node)
        if node.subtree is not None:
            for p, n in walk(self.vault, node.subtree, path):
                self._subtree_entry(side, p, n)

    def compare(self, path: bytes, a: Optional["Node"], b: Optional["Node"]) -> None:
        if a is None or b is None:
            if a is not None or b is not None:
                self.one_side("+" if a is None else "-", path, a or b)  # type: ignore[arg-type]
            return
        if _kind(a) != _kind(b):
            self.emit("T", path, a, b)
            for side, node in ((0, a), (1, b)):
                self.blobs[side].update(self.data_blobs(node))
                if node.subtree is not None:
                    for p, n in walk(self.vault, node.subtree, path):
                        self._subtree_entry(side, p, n)
            return
        if a.subtree is not None:
            if _meta(a, directory=True) != _meta(b, directory=True):
                self.emit("U", path, a, b)
            if a.subtree != b.subtree:
                self.children(path, a.subtree, b.subtree)  # type: ignore[arg-type]
            return
        if _content(a) != _content(b):
            self.emit("M", path, a, b)
            self.blobs[0].update(self.data_blobs(a))
            self.blobs[1].update(self.data_blobs(b))
        elif _meta(a) != _meta(b):
            self.emit("U", path, a, b)

    def _subtree_entry(self, side: int, path: bytes, node: "Node") -> None:
        """An entry beneath a directory that became (or stopped being) something else: added or removed."""
        self.emit("+" if side else "-", path, *((None, node) if side else (node, None)))
        self.blobs[side].update(self.data_blobs(node))

    def children(self, path: bytes, tree_a: str, tree_b: str) -> None:
        na = node_map(self.vault.load_nodes(bytes.fromhex(tree_a)))
        nb = node_map(self.vault.load_nodes(bytes.fromhex(tree_b)))
        for name in sorted(na.keys() | nb.keys()):
            self.compare(path + b"/" + name, na.get(name), nb.get(name))

    def data_blobs(self, node: "Node") -> Iterable[bytes]:
        if node.content:
            return [bytes.fromhex(c) for c in node.content]
        if node.image is not None:
            from .jobs.image import ImageMap
            img = ImageMap(self.vault, node.image)
            ids = [bytes.fromhex(p) for p in node.image.get("pages", ())]
            return ids + [bid for bid in (img.block_id(i) for i in range(img.nblocks)) if bid is not None]
        return ()

    def finish(self) -> Diff:
        before, after = self.blobs
        st = self.result.stats
        added, removed = after - before, before - after
        st.blobs_added, st.blobs_removed = len(added), len(removed)
        st.bytes_added = sum(self.vault.locate(b).raw_length for b in added)
        st.bytes_removed = sum(self.vault.locate(b).raw_length for b in removed)
        return self.result


def _kind(node: "Node") -> str:
    return "image" if node.image is not None else "d" if node.subtree is not None else node.type


def _content(node: "Node") -> Any:
    return (node.size, node.content, node.image, {k: node.meta.get(k) for k in _CONTENT_META})


def _meta(node: "Node", directory: bool = False) -> Dict[str, Any]:
    skip = _VOLATILE | _CONTENT_META | ({"mt"} if directory else set())
    return {k: v for k, v in node.meta.items() if k not in skip}


def diff_nodes(vault: "Vault", path: bytes, a: Optional["Node"], b: Optional["Node"]) -> Diff:
    """The changes from node `a` to node `b` (either None: absent), both at `path` (raw, absolute; b"" for
    the root), and beneath them."""
    d = _Differ(vault)
    if path == b"" and a is not None and b is not None and a.subtree and b.subtree:
        if a.subtree != b.subtree:  # the roots have no metadata of their own: compare what they hold
            d.children(path, a.subtree, b.subtree)
    else:
        d.compare(path, a, b)
    return d.finish()
