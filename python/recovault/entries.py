"""Entries of a recovery point as commands show them (ls, diff, find): `Entry`, one tree node at its path with
the metadata a person or a script asks about, and `walk`, the nodes of a tree depth-first.

Reads trees only (`Vault.load_nodes`): never a file's data.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Tuple

from . import timefmt
from .fsmeta import decode_name

if TYPE_CHECKING:
    from .vault.records import Node
    from .vault.repo import Vault

#: fsmeta's type letters as stat's file-type bits (for `ls -l`'s mode string)
_IFMT = {"f": stat.S_IFREG, "d": stat.S_IFDIR, "l": stat.S_IFLNK, "c": stat.S_IFCHR, "b": stat.S_IFBLK,
         "p": stat.S_IFIFO, "s": stat.S_IFSOCK}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Entry:
    """One entry of a recovery point: its absolute path and what its tree node records. `user`/`group` are
    the names recorded at backup (None if there were none), `link_target` a symlink's target."""

    path: str
    type: str
    mode: int
    size: int
    mtime_ns: int
    uid: int
    gid: int
    user: Optional[str]
    group: Optional[str]
    link_target: Optional[str]

    @classmethod
    def of(cls, path: bytes, node: "Node") -> "Entry":
        m = node.meta
        target = os.fsdecode(decode_name(m["lt"])) if "lt" in m else None
        return cls(os.fsdecode(path or b"/"), node.type, m.get("m", 0), node.size or 0, m.get("mt", 0),
                   m.get("u", 0), m.get("g", 0), m.get("un"), m.get("gn"), target)

    @property
    def mtime(self) -> str:
        """The modification time, RFC 3339 UTC (microseconds)."""
        return timefmt.format_time(_EPOCH + timedelta(microseconds=self.mtime_ns // 1000))

    @property
    def mode_string(self) -> str:
        """`ls -l`'s mode column ("drwxr-xr-x")."""
        return stat.filemode(_IFMT.get(self.type, 0) | self.mode)

    def owner(self) -> Tuple[str, str]:
        """User and group as `ls -l` shows them: the recorded names, else the numbers."""
        return (self.user if self.user is not None else str(self.uid),
                self.group if self.group is not None else str(self.gid))

    def to_json(self) -> Dict[str, Any]:
        """`ls --json`'s entry (and diff's and find's): the fields, and `mtime` in RFC 3339."""
        return {"path": self.path, "type": self.type, "mode": self.mode, "size": self.size, "mtime": self.mtime,
                "mtime_ns": self.mtime_ns, "uid": self.uid, "gid": self.gid, "user": self.user,
                "group": self.group, "link_target": self.link_target}

    def long_line(self) -> str:
        """`ls -l`'s line: mode, owner, group, size, mtime (UTC), path (-> link target)."""
        user, group = self.owner()
        when = timefmt.shown(self.mtime)
        return (f"{self.mode_string} {user:8} {group:8} {self.size:>12} {when} {self.path}"
                + (f" -> {self.link_target}" if self.link_target is not None else ""))


def walk(vault: "Vault", tree: str, prefix: bytes, recursive: bool = True) -> Iterator[Tuple[bytes, "Node"]]:
    """(path, node) of each entry of `tree` (hex id) under `prefix`, depth-first in stored order (by raw
    name), a directory before what it holds; `recursive=False`: the tree's own entries only."""
    for n in vault.load_nodes(bytes.fromhex(tree)):
        path = prefix + b"/" + n.name
        yield path, n
        if recursive and n.subtree is not None:
            yield from walk(vault, n.subtree, path, recursive)
