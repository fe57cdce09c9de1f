"""Hard-link tracking, shared by backup and restore: the first name seen of each multiply-linked inode.

A backup stores the first name of an inode with its content and the later names as links to it; a restore
writes the first name's content and links the later names to it. Both need one thing: for an inode
(``st_dev``, ``st_ino``), what the first name was (a node, a path...). This table is the only part of either
job whose memory grows with the number of files, and only with the number of hard-linked ones; an entry is
forgotten once all of the inode's ``nlink`` names were seen, when the caller asks for that (``forget``).
"""
from __future__ import annotations

from typing import Dict, Generic, List, Optional, Tuple, TypeVar

T = TypeVar("T")
Key = Tuple[int, int]  # (st_dev, st_ino)


class HardLinks(Generic[T]):
    """First names of multiply-linked inodes. ``see(key, nlink, value)`` gives None for the first name of an
    inode (and remembers `value`), the remembered value for each later one."""

    def __init__(self, *, forget: bool = False) -> None:
        # forget: drop an inode once its nlink names were seen (restore); a backup keeps every entry, since
        # it looks the first names up again when it stores the held directories.
        self._forget = forget
        self._first: Dict[Key, List] = {}  # key -> [value, names still to come]

    def see(self, key: Key, nlink: int, value: T) -> Optional[T]:
        if nlink < 2:
            return None
        rec = self._first.get(key)
        if rec is None:
            self._first[key] = [value, nlink - 1]
            return None
        rec[1] -= 1
        if self._forget and rec[1] <= 0:
            del self._first[key]
        return rec[0]

    def get(self, key: Key) -> Optional[T]:
        rec = self._first.get(key)
        return None if rec is None else rec[0]

    def discard(self, key: Key) -> None:
        """Forget an inode, e.g. when its first name could not be stored or restored after all."""
        self._first.pop(key, None)

    def __len__(self) -> int:
        return len(self._first)
