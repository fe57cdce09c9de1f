"""The blobs recovery points reference: every tree, chunk and image page (and the blocks a page names)
reachable from their root trees, as restic's prune walks them. Prune keeps what this finds; a backup that
revalidates checks what its new point needs."""
from __future__ import annotations

from typing import Iterable, Optional

from .. import core

ZERO_ID = bytes(32)  # an all-zero block (or a hole) in an image's block map: nothing stored


def referenced(vault, roots: Iterable[bytes], progress=None, skip: Optional["core.IdSet"] = None) -> "core.IdSet":
    """The IDs of every blob reachable from the tree IDs `roots` (themselves included). A tree or page that
    cannot be read raises (CorruptData, ObjectMissing): whoever deletes by this set must not guess. Trees in
    `skip` are taken as walked already (a copy of several points walks each shared tree once): neither
    read nor included."""
    seen = core.IdSet()
    stack = [r for r in roots if (skip is None or r not in skip) and seen.add(r)]
    while stack:
        tree_id = stack.pop()
        for node in vault.load_nodes(tree_id):
            if node.subtree is not None:
                sub = bytes.fromhex(node.subtree)
                if (skip is None or sub not in skip) and seen.add(sub):
                    stack.append(sub)
            if node.content:
                seen.update(b"".join(bytes.fromhex(c) for c in node.content))
            if node.image is not None:
                for page_hex in node.image.get("pages", []):
                    page_id = bytes.fromhex(page_hex)
                    if seen.add(page_id):
                        page = vault.read_blob(page_id)
                        seen.update(b"".join(page[i:i + 32] for i in range(0, len(page), 32)
                                             if page[i:i + 32] != ZERO_ID))
        if progress is not None:
            progress("trees", {"trees": 1})
    return seen


def ids_of(idset: "core.IdSet"):
    """The members of an IdSet, one 32-byte ID at a time."""
    raw = idset.dump()
    return (raw[i:i + 32] for i in range(0, len(raw), 32))
