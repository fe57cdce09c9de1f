"""Typed records for what the vault stores as JSON: recovery points (§9 of docs/vault-format.md) and tree nodes
(§8). Each converts to and from exactly the JSON the format specifies; keys this version does not know are
kept (``extra``) and written back unchanged, so a newer writer's fields survive an older reader."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

from ..fsmeta import decode_name, encode_name

SNAPSHOT_VERSION = 1


@dataclass
class RecoveryPoint:
    """One recovery point: when, where from, which root tree, and how it was made. ``id`` is the name of its
    object (the BLAKE3 of the sealed bytes): empty until it is stored."""

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
    version: int = SNAPSHOT_VERSION
    id: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Dict[str, Any], sid: str = "") -> "RecoveryPoint":
        known = {f.name for f in fields(cls)} - {"extra", "id"}
        rp = cls(**{k: v for k, v in doc.items() if k in known})
        rp.extra = {k: v for k, v in doc.items() if k not in known and k != "id"}
        rp.id = sid or doc.get("id", "")
        return rp

    def to_json(self, with_id: bool = True) -> Dict[str, Any]:
        """The stored document (``with_id=False``), or the one `snapshots --json` prints (with ``id``)."""
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "id")}
        doc.update(self.extra)
        if with_id:
            doc["id"] = self.id
        return doc

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def same_source(self, host: str, paths: List[str]) -> bool:
        """Made on `host` from exactly `paths` (the identity incremental backups compare against)."""
        return self.host == host and sorted(self.paths) == sorted(paths)


@dataclass
class Node:
    """One entry of a tree: its raw name, its metadata (fsmeta's compact dict, §8) and, by type, the file's
    ``size`` and ``content`` (chunk IDs, hex), a directory's ``subtree`` (tree ID, hex), or an image's block
    map (``image``: ``{"bs", "size", "pages"}``)."""

    name: bytes
    meta: Dict[str, Any]
    size: Optional[int] = None
    content: Optional[List[str]] = None
    subtree: Optional[str] = None
    image: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    _KEYS = ("size", "content", "subtree", "image")

    @classmethod
    def from_json(cls, doc: Dict[str, Any]) -> "Node":
        node = cls(decode_name(doc["name"]), doc.get("meta") or {},
                   doc.get("size"), doc.get("content"), doc.get("subtree"), doc.get("image"))
        if len(doc) > 2 + sum(k in doc for k in cls._KEYS):
            node.extra = {k: v for k, v in doc.items() if k not in cls._KEYS and k not in ("name", "meta")}
        return node

    def to_json(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {"name": encode_name(self.name), "meta": self.meta}
        for k in self._KEYS:
            v = getattr(self, k)
            if v is not None:
                doc[k] = v
        doc.update(self.extra)
        return doc

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
