"""Typed records for what the vault stores as JSON: recovery points (§9 of docs/vault-format.md) and tree nodes
(§8). Each converts to and from exactly the JSON the format specifies: ``to_json(from_json(doc)) == doc`` for
any document this version reads. Keys it does not know are kept (``extra``) and written back unchanged, so a
newer writer's fields survive an older reader; the stored bytes (sorted keys) do not depend on the order of
the fields here.

The ``meta`` of a node stays fsmeta's compact dict (§8: ``t``, ``m``, ``mt``, ...), and an image's block map
its ``{"bs", "size", "pages"}`` dict: both are copied into the tree as they are, and an unchanged file's node
is reused from the base recovery point without being decoded further."""
from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from ..errors import CorruptData
from ..fsmeta import decode_name, encode_name

SNAPSHOT_VERSION = 1

#: Metadata of a directory nothing is known about (the root, or one made up on the way to a stored path).
DEFAULT_DIR_META: Dict[str, Any] = {"t": "d", "m": 0o755}


@dataclass
class RecoveryPoint:
    """One recovery point: when, where from, which root tree, and how it was made. ``id`` is the name of its
    object (the BLAKE3 of the sealed bytes): empty until it is stored. ``stats`` is the job's counters
    (``files_new``, ``bytes_total``, ...), ``errors`` the paths left out (``{"path", "error"}``)."""

    time: str
    host: str
    paths: List[str]
    tree: str
    username: str = ""
    tags: List[str] = field(default_factory=list)
    mode: str = "full"
    parent: Optional[str] = None
    base_full: Optional[str] = None
    excludes: List[str] = field(default_factory=list)
    program: str = ""
    stats: Dict[str, Any] = field(default_factory=dict)
    errors: List[Dict[str, str]] = field(default_factory=list)
    complete: bool = True
    partial: bool = False  # an interrupted backup's: what it finished (§9); stored only when true
    version: int = SNAPSHOT_VERSION
    id: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)
    #: known keys the document did not have: not written back while they keep their default
    absent: FrozenSet[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.partial:  # a complete point's document has no "partial" key (from_json resets `absent`)
            self.absent = frozenset({"partial"})

    @classmethod
    def from_json(cls, doc: Dict[str, Any], sid: str = "") -> "RecoveryPoint":
        """The record of a stored (or printed) document; CorruptData if it is not one."""
        known = _POINT_KEYS
        try:
            rp = cls(**{k: v for k, v in doc.items() if k in known})
        except (TypeError, AttributeError):
            raise CorruptData(f"recovery point {sid[:8]} lacks a required field (time, host, paths, tree)") from None
        for name, kind in _POINT_TYPES:
            if not isinstance(getattr(rp, name), kind):
                raise CorruptData(f"recovery point {sid[:8]}: {name} is not a {kind.__name__}")
        if not _is_id(rp.tree):
            raise CorruptData(f"recovery point {sid[:8]}: tree is not a tree ID")
        rp.extra = {k: v for k, v in doc.items() if k not in known and k != "id"}
        rp.absent = frozenset(k for k in known if k not in doc)
        rp.id = sid or doc.get("id", "")
        return rp

    def to_json(self, with_id: bool = True) -> Dict[str, Any]:
        """The stored document (``with_id=False``), or the one the CLI prints (``--json``: with ``id``)."""
        doc = {}
        for name in _POINT_KEYS:
            value = getattr(self, name)
            if name not in self.absent or value != _POINT_DEFAULTS.get(name):
                doc[name] = value
        doc.update(self.extra)
        if with_id:
            doc["id"] = self.id
        return doc

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def sort_key(self) -> Tuple[str, str]:
        """Recovery points are ordered by time, then id (§9: the times sort as strings)."""
        return (self.time, self.id)

    def same_source(self, host: str, paths: List[str]) -> bool:
        """Made on `host` from exactly `paths` (the identity incremental backups compare against)."""
        return self.host == host and sorted(self.paths) == sorted(paths)


#: what the rest of the code relies on, checked when a document is read
_POINT_TYPES = (("time", str), ("host", str), ("paths", list), ("tree", str), ("stats", dict), ("errors", list),
               ("partial", bool))
_POINT_KEYS = tuple(f.name for f in fields(RecoveryPoint) if f.name not in ("extra", "id", "absent"))
_POINT_DEFAULTS = {f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
                   for f in fields(RecoveryPoint) if f.name in _POINT_KEYS
                   and (f.default is not MISSING or f.default_factory is not MISSING)}


@dataclass
class Node:
    """One entry of a tree: its raw name, its metadata (fsmeta's compact dict, §8) and, by type, the file's
    ``size`` and ``content`` (chunk IDs, hex), a directory's ``subtree`` (tree ID, hex), or an image's block
    map (``image``: ``{"bs", "size", "pages"}``, with ``size``). A field that is None is not in the JSON."""

    name: bytes
    meta: Dict[str, Any]
    size: Optional[int] = None
    content: Optional[List[str]] = None
    subtree: Optional[str] = None
    image: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Dict[str, Any]) -> "Node":
        """The node of a tree's JSON object (CorruptData for a malformed name; KeyError without name or
        meta). Per node of every base tree a backup compares with: kept to a few attribute reads."""
        get = doc.get
        name = doc["name"]
        # decode_name, with its str case inlined (the common one)
        raw = name.encode("utf-8", "surrogateescape") if type(name) is str else decode_name(name)
        node = cls(raw, doc["meta"], get("size"), get("content"), get("subtree"), get("image"), {})
        problem = _malformed(node)
        if problem:
            raise CorruptData(f"a tree node's {problem}")
        if len(doc) != 2 + (node.size is not None) + (node.content is not None) + (node.subtree is not None) \
                + (node.image is not None):
            # keys this version does not know, or a known one written as null: kept exactly as they are
            node.extra = {k: v for k, v in doc.items() if k not in _NODE_FIXED and (k not in _NODE_KEYS or v is None)}
        return node

    def to_json(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {"name": encode_name(self.name), "meta": self.meta}
        if self.size is not None:
            doc["size"] = self.size
        if self.content is not None:
            doc["content"] = self.content
        if self.subtree is not None:
            doc["subtree"] = self.subtree
        if self.image is not None:
            doc["image"] = self.image
        if self.extra:
            doc.update(self.extra)
        return doc

    @classmethod
    def directory(cls, name: bytes, meta: Optional[Dict[str, Any]], subtree: str) -> "Node":
        """A directory's node (``meta`` None: one nothing is known about)."""
        return cls(name, meta if meta is not None else dict(DEFAULT_DIR_META), subtree=subtree)

    @property
    def type(self) -> str:
        """``f`` file, ``d`` directory, ``l`` symlink, ... (fsmeta's type letters)."""
        return self.meta.get("t", "f")

    @property
    def is_dir(self) -> bool:
        return self.subtree is not None

    @property
    def is_image(self) -> bool:
        return self.image is not None


def _is_id(value: Any) -> bool:
    """A blob ID as the JSON holds it: 64 lowercase hex digits."""
    return type(value) is str and _HEX64.fullmatch(value) is not None


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _malformed(node: "Node") -> str:
    """What is wrong with a node's fields (§8) that every reader relies on (check's walk, prune's references,
    restore, the block map), or "": a tree is sealed, so only a writer with the key (or a bug) makes one, but
    its reader must say "corrupt" rather than fail inside. `meta` is checked where it is used (fsmeta)."""
    if type(node.meta) is not dict:
        return "meta is not an object"
    if node.size is not None and not _is_count(node.size):
        return "size is not a count of bytes"
    if node.subtree is not None and not _is_id(node.subtree):
        return "subtree is not a tree ID"
    if node.content is not None and (type(node.content) is not list or not all(map(_is_id, node.content))):
        return "content is not a list of chunk IDs"
    image = node.image
    if image is not None:
        if type(image) is not dict or type(image.get("pages")) is not list or not all(map(_is_id, image["pages"])):
            return "image has no list of page IDs"
        bs, size = image.get("bs"), image.get("size")
        if type(bs) is not int or not MIN_IMAGE_BLOCK <= bs <= MAX_IMAGE_BLOCK or not _is_count(size):
            return "image has no valid block size and size"
    return ""


_HEX64 = re.compile(r"[0-9a-f]{64}")
#: an image's block size (§8): 4 KiB to 64 MiB, chosen by the writer
MIN_IMAGE_BLOCK = 4 << 10
MAX_IMAGE_BLOCK = 64 << 20
_NODE_KEYS = frozenset(("size", "content", "subtree", "image"))
_NODE_FIXED = frozenset(("name", "meta"))
