"""Building a recovery point's trees while the backup walk goes on (the backup job decides what each entry
is and feeds files to the pipeline; this module assembles and stores directories), as restic's archiver
hands its trees to a tree saver.

Each directory is stored, and its children freed, as soon as the walk has left it, none of its files is
still being read, and all its subdirectories are stored: memory follows the depth of the tree, not the
number of files. Directories on the way to a named path, an image or the stream are stored only at the
end (something is still to be added below them after the walk has left them). A directory whose every
entry is exactly as in the base recovery point reuses the base's tree id without encoding anything.

An interrupted backup saves what it finished (`save_root(limit)`, once every queued blob is stored or
known lost): each finished thing carries a *stamp*, the number of blobs the blob store had queued when it was
finished (`Stamps`); it depends on no blob queued later. Given the number of the first blob that may be
lost, the partial tree holds the files, stored subdirectories and other entries stamped no later, every
directory still being assembled with what it holds so far, and of what is stamped later, what is checked
to be stored: a file whose chunks all are (`BlobStore.stored`), a subdirectory reused from the base, and
the stored part of a subdirectory stored since (its tree read back and filtered the same way). Every blob
the partial tree names is stored.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from ..errors import CorruptData, ObjectMissing, StorageError
from ..vault.records import DEFAULT_DIR_META, Node
from ..vault.repo import Vault
from ..vault.tree import node_map

Parts = Tuple[bytes, ...]

#: The stamp of something finished while a pipeline batch was running: it may depend on blobs of that batch
#: not yet queued (the pipeline counts an ID as known when it seals it), so it is settled when the batch is.
UNSETTLED = 1 << 62


class Stamps:
    """Stamps what the backup finishes with the number of blobs queued so far (`queued()`). While a pipeline
    batch runs (`busy`), stamps are UNSETTLED and settled (`settle`) once the batch is drained."""

    def __init__(self, queued: Callable[[], int]) -> None:
        self.queued = queued
        self.busy = False
        self.unsettled: List[Any] = []  # FileItems, SavedDirs and Leaves stamped while busy

    def stamp(self, item: Any, waits: Optional[bool] = None) -> None:
        """Stamp `item` now; `waits`: whether it may depend on the running batch (default: one is running)."""
        if self.busy if waits is None else waits:
            item.stamp = UNSETTLED
            self.unsettled.append(item)
        else:
            item.stamp = self.queued()

    def start(self) -> None:
        self.busy = True

    def settle(self) -> None:
        """The running batch is drained: what was finished meanwhile depends only on blobs queued by now."""
        now = self.queued()
        for item in self.unsettled:
            item.stamp = now
        self.unsettled = []
        self.busy = False


class PendingDir:
    """A directory being assembled (see the module docstring for when it is stored)."""

    __slots__ = ("meta", "children", "old", "parts", "up", "name", "pending", "open_children", "closed",
                 "hold")

    def __init__(self, meta: Optional[Dict[str, Any]], up: "Optional[PendingDir]" = None,
                 name: bytes = b"") -> None:
        self.meta = meta
        self.children: Dict[bytes, Any] = {}
        self.old: Optional[Node] = None  # this directory's node in the base recovery point
        self.parts: Optional[Parts] = None
        self.up = up
        self.name = name
        self.pending = 0  # files handed to the pipeline, not yet drained
        self.open_children = 0  # subdirectories not stored yet
        self.closed = False  # the walk has left it
        self.hold = False  # holds a hard link whose content is only known at the end of the walk
        if up is not None:
            up.open_children += 1


class SavedDir:
    """A stored subdirectory: its tree node, and its node in the base (for tree-id reuse upstream)."""

    __slots__ = ("node", "old", "stamp")

    def __init__(self, node: Node, old: Optional[Node]) -> None:
        self.node = node
        self.old = old
        self.stamp = UNSETTLED


class FileItem:
    """A regular file (or the stream) in a pending directory; its content is known once it is read."""

    __slots__ = ("node", "content", "path", "size", "link_key", "reused", "dir", "fd", "stamp")

    def __init__(self, node: Node, path: str, size: int) -> None:
        self.node = node
        self.path = path
        self.size = size
        self.content: Optional[List[str]] = None
        self.link_key: Optional[Tuple[int, int]] = None
        self.reused = False  # node taken unchanged from the base recovery point
        self.dir: Optional[PendingDir] = None  # set while the file is being read
        self.fd: Optional[int] = None  # open to be read from (paths beyond PATH_MAX), closed once read
        self.stamp = UNSETTLED  # set with its content (Stamps)


class Leaf:
    """Anything else with a finished node: symlinks, devices, fifos, sockets, images."""

    __slots__ = ("node", "stamp")

    def __init__(self, node: Node, stamp: int = 0) -> None:
        self.node = node
        self.stamp = stamp  # what it depends on (0: nothing stored, as a symlink; an image: its blocks)


class BaseTrees:
    """Looks up nodes of the base recovery point by path, loading its trees lazily. A tree of the base that is
    lost or damaged (the vault was damaged, then `repair index`) is reported to `on_problem` and taken as
    absent: what it held is compared with nothing, so read and stored again, which heals the vault."""

    def __init__(self, vault: Vault, root_tree: Optional[str],
                 on_problem: Optional[Callable[[str], None]] = None) -> None:
        self.vault = vault
        self.cache: Dict[Parts, Optional[Dict[bytes, Node]]] = {}
        self.root = root_tree
        self.on_problem = on_problem

    def dir_nodes(self, parts: Parts) -> Optional[Dict[bytes, Node]]:
        if parts in self.cache:
            return self.cache[parts]
        if not parts:
            sub = self.root
        else:
            up = self.dir_nodes(parts[:-1])
            node = up.get(parts[-1]) if up else None
            sub = node.subtree if node else None
        result = self._load(sub, parts) if sub else None
        self.cache[parts] = result
        return result

    def _load(self, tree: str, parts: Parts) -> Optional[Dict[bytes, Node]]:
        try:
            return node_map(self.vault.load_nodes(bytes.fromhex(tree)))
        except (CorruptData, ObjectMissing) as e:
            if self.on_problem is None:
                raise
            where = "/" + b"/".join(parts).decode("utf-8", "surrogateescape")
            self.on_problem(f"the previous recovery point's directory {where} cannot be read ({e}): what it "
                            "holds is read again and stored")
            return None

    def node(self, parts: Parts) -> Optional[Node]:
        """The base's node at ``parts`` (not the root), or None."""
        up = self.dir_nodes(parts[:-1])
        return up.get(parts[-1]) if up else None

    def forget(self, parts: Parts) -> None:
        """The walk is done with this directory: drop its loaded tree."""
        self.cache.pop(parts, None)


def _unsettled(child: Any) -> bool:
    """Whether a child of a directory being stored has an unsettled stamp (an unread file has no content
    and is left out of the tree: it does not count)."""
    return getattr(child, "stamp", 0) >= UNSETTLED and getattr(child, "content", True) is not None


def pinned_dirs(paths: Iterable[Parts]) -> Set[Parts]:
    """The directories strictly above each of ``paths`` (the root excluded): stored only at the end."""
    return {parts[:i] for parts in paths for i in range(1, len(parts))}


class TreeBuilder:
    """Assembles the recovery point's directories as the walk visits them, depth-first, and stores each
    one as early as it can. ``base`` is the base recovery point's trees (tree-id reuse)."""

    def __init__(self, vault: Vault, base: BaseTrees, pinned: Set[Parts], stamps: Optional[Stamps] = None) -> None:
        self.vault = vault
        self.stamps = stamps or Stamps(lambda: vault.blobs.queued)
        self.base = base
        self.pinned = pinned
        self.root = PendingDir(None)
        self.dirs: Dict[Parts, PendingDir] = {(): self.root}
        self.open_dirs: List[Parts] = []  # directories the walk is inside, outermost first

    def add_ancestors(self, paths: Iterable[Parts], meta_of: Callable[[Parts], Dict[str, Any]]) -> None:
        """Record the directories above each path with their metadata (``meta_of``), without contents."""
        for parts in paths:
            cur = self.root
            for i, part in enumerate(parts[:-1]):
                d = cur.children.get(part)
                if not isinstance(d, PendingDir):
                    d = cur.children[part] = PendingDir(meta_of(parts[: i + 1]), cur, part)
                cur = d

    def dir_for(self, parts: Parts) -> PendingDir:
        """The pending directory at ``parts``, made (with default metadata) if the walk has not seen it."""
        d = self.dirs.get(parts)
        if d is None:
            up = self.dir_for(parts[:-1])
            d = up.children.get(parts[-1])
            if not isinstance(d, PendingDir):
                d = up.children[parts[-1]] = PendingDir(dict(DEFAULT_DIR_META), up, parts[-1])
            d.parts = parts
            self.dirs[parts] = d
        return d

    def enter_dir(self, parts: Parts, meta: Dict[str, Any], old: Optional[Node]) -> None:
        """The walk found the directory at ``parts`` and is about to list it."""
        d = self.dir_for(parts) if parts else self.root
        d.meta = meta
        d.parts = parts
        d.old = old
        if parts:
            self.open_dirs.append(parts)

    def leave_until(self, dparts: Parts) -> None:
        """The walk is now in ``dparts``: close the directories it has left (depth-first order)."""
        open_dirs = self.open_dirs
        while open_dirs and dparts[:len(open_dirs[-1])] != open_dirs[-1]:
            self._close(self.dirs.get(open_dirs.pop()))

    def leave_all(self) -> None:
        while self.open_dirs:
            self._close(self.dirs.get(self.open_dirs.pop()))

    def file_done(self, d: PendingDir) -> None:
        """One of ``d``'s files has been read."""
        d.pending -= 1
        if d.closed:
            self._try_save(d)

    def leaf_dir(self, parts: Parts) -> PendingDir:
        """After the walk: the directory that will hold ``parts`` (an image or the stream)."""
        d = self.root
        for part in parts[:-1]:
            nxt = d.children.get(part)
            if not isinstance(nxt, PendingDir):
                nxt = d.children[part] = PendingDir(dict(DEFAULT_DIR_META))
            d = nxt
        return d

    def files(self, d: Optional[PendingDir] = None) -> Iterator[FileItem]:
        """Files still held in pending directories (after the walk: those beside a held hard link)."""
        for child in list((d or self.root).children.values()):
            if isinstance(child, PendingDir):
                yield from self.files(child)
            elif isinstance(child, FileItem):
                yield child

    def save_root(self, limit: Optional[int] = None) -> bytes:
        """Store the root tree (and every directory not stored yet). With `limit` (an interrupted backup:
        see the module docstring), leave out what is unfinished or stamped after `limit`."""
        return self._save_dir(self.root, limit)

    def _close(self, d: Optional[PendingDir]) -> None:
        if d is not None:
            d.closed = True
            self._try_save(d)

    def _try_save(self, d: PendingDir) -> None:
        """Store a closed directory whose files are all read and whose subdirectories are stored; then
        replace it in its parent by its node, freeing its children, and try the parent in turn."""
        while (d.closed and d.pending == 0 and d.open_children == 0 and not d.hold and d.up is not None
               and d.parts is not None and d.parts not in self.pinned):
            node = Node.directory(d.name, d.meta or None, self._save_dir(d).hex())
            up = d.up
            saved = up.children[d.name] = SavedDir(node, d.old)
            # its blobs are queued by now, but a file the walk reused may name one of the running batch
            self.stamps.stamp(saved, waits=any(_unsettled(c) for c in d.children.values()))
            up.open_children -= 1
            self.dirs.pop(d.parts, None)
            self.base.forget(d.parts)
            d.children = {}
            d = up

    def _save_dir(self, d: PendingDir, limit: Optional[int] = None) -> bytes:
        """Store the directory's tree (children first), or reuse the base's tree id if nothing changed. With
        `limit`, only what was finished by then (stamped no later)."""
        nodes: List[Node] = []
        same = d.old is not None and d.parts is not None and d.old.subtree is not None and d.meta == d.old.meta
        old_map: Optional[Dict[bytes, Node]] = None
        for name, child in d.children.items():
            if limit is not None and not isinstance(child, PendingDir) and child.stamp > limit:
                same = False
                child = self._late(child)  # it may name a blob that was lost: what of it is stored
                if child is None:
                    continue
            if isinstance(child, (PendingDir, SavedDir)):
                node = self._subdir_node(name, child, limit)
                same = same and child.old is not None and child.old.subtree == node.subtree and \
                    child.old.meta == node.meta
            elif isinstance(child, FileItem):
                if child.content is None:
                    same = False
                    continue  # unreadable: reported in the recovery point's errors
                node = child.node
                node.content = child.content
                same = same and child.reused
            else:
                node = child.node
                if same:
                    if old_map is None:
                        old_map = self.base.dir_nodes(d.parts) or {}
                    same = old_map.get(name) == node
            nodes.append(node)
        if same and d.old is not None:
            if old_map is None:
                old_map = self.base.dir_nodes(d.parts) or {}
            tree_id = bytes.fromhex(d.old.subtree)
            if len(old_map) == len(nodes) and tree_id in self.vault.known:
                return tree_id
        return self.vault.save_tree(nodes)

    def _late(self, child: Any) -> Any:
        """A finished entry stamped after the interruption's limit, reduced to what is checked to be stored
        (a Leaf, SavedDir or FileItem), or None."""
        stored = self.vault.blobs.stored
        if isinstance(child, FileItem):
            ok = child.content is not None and all(stored(bytes.fromhex(c)) for c in child.content)
            return child if ok else None
        if isinstance(child, SavedDir):
            node = child.node
            if child.old is not None and child.old.subtree == node.subtree and stored(bytes.fromhex(node.subtree)):
                return child  # the base's tree, reused: it names only what the vault had
            sub = self._stored_part(bytes.fromhex(node.subtree))
            return None if sub is None else SavedDir(Node.directory(node.name, node.meta or None, sub.hex()), None)
        return None  # an image: its pages are not read back here

    def _stored_part(self, tree_id: bytes) -> Optional[bytes]:
        """The part of stored tree `tree_id` whose every blob is stored (a new tree if that is not all of
        it), or None if the tree itself is not stored."""
        stored = self.vault.blobs.stored
        if not stored(tree_id):
            return None
        try:
            nodes = self.vault.load_nodes(tree_id)
        except (CorruptData, StorageError):
            return None
        subtrees = [n.subtree for n in nodes]
        kept: List[Node] = []
        for node in nodes:
            if node.subtree is not None:
                sub = self._stored_part(bytes.fromhex(node.subtree))
                if sub is None:
                    continue
                node.subtree = sub.hex()
            elif node.image is not None or (node.content is not None and
                                            not all(stored(bytes.fromhex(c)) for c in node.content)):
                continue
            kept.append(node)
        if len(kept) == len(nodes) and all(a.subtree == b for a, b in zip(kept, subtrees)):
            return tree_id
        return self.vault.save_tree(kept)

    def _subdir_node(self, name: bytes, child: Any, limit: Optional[int] = None) -> Node:
        if isinstance(child, SavedDir):
            return child.node
        return Node.directory(name, child.meta or None, self._save_dir(child, limit).hex())
