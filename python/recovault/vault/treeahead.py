"""Reading a recovery point's trees ahead of a walk, from a store where each read is a request (an object
store): a restore walks its trees one directory at a time, and would otherwise wait on one request a
directory. Trees the agent cache holds (BlobStore.tree_cache: a backup from this host wrote them) are read
from there by the walk, as before. When the walk meets a tree the cache lacks, it reads it (registered, so
no other thread does) and the read-ahead reads the trees below it that the cache lacks on the vault's
``connections`` threads, in the walk's own order (depth first, entries in stored order), into the cache,
where the walk's own reads then find them; a tree the walk asks for while it is being read is waited for.
No tree is fetched twice. At most ``connections`` reads are in flight and only ids are queued, so memory
stays small whatever the tree's size.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from ..errors import RecovaultError
from .cache import ObjectCache
from .tree import decode_tree

if TYPE_CHECKING:
    from .repo import Vault

Parts = Tuple[bytes, ...]


class TreeReadAhead:
    """Reads trees ahead of a depth-first walk (see the module doc): the walk calls ``wait(tree_id, parts)``
    before it loads a tree. `descend(parts)`: whether the walk enters the directory at `parts` (a selective
    restore skips most)."""

    def __init__(self, vault: "Vault", cache: ObjectCache, descend: Callable[[Parts], bool]) -> None:
        self.vault = vault
        self.cache = cache
        self.descend = descend
        self._lock = threading.Lock()
        self._todo: List[Tuple[bytes, Parts]] = []  # a stack: the next tree to read is last
        self._reading: Dict[bytes, "Future[None]"] = {}
        self._done = False
        self._threads = max(1, vault.blobs.connections)
        self._pool: Optional[ThreadPoolExecutor] = ThreadPoolExecutor(self._threads,
                                                                      thread_name_prefix="recovault-trees")

    @classmethod
    def wanted(cls, vault: "Vault", descend: Callable[[Parts], bool]) -> Optional["TreeReadAhead"]:
        """A read-ahead when reading trees costs requests (an object store whose trees go to a usable agent
        cache), else None."""
        cache = vault.blobs.tree_cache
        return None if cache is None or not cache.ok else cls(vault, cache, descend)

    def _start(self) -> None:
        """Start reads from the stack, up to the number of threads."""
        with self._lock:
            while not self._done and self._todo and len(self._reading) < self._threads:
                tree_id, parts = self._todo.pop()
                if tree_id in self._reading or self.cache.has(tree_id.hex()):
                    continue  # (a cached tree: the walk reads it there, and meets what is below it)
                fut: "Future[None]" = Future()
                self._reading[tree_id] = fut
                assert self._pool is not None
                self._pool.submit(self._read, tree_id, parts, fut)

    def _read(self, tree_id: bytes, parts: Parts, fut: "Future[None]") -> None:
        children: List[Tuple[bytes, Parts]] = []
        try:
            for node in decode_tree(self.vault.read_blob(tree_id), f"tree {tree_id.hex()[:16]}"):
                if node.subtree is not None and self.descend(parts + (node.name,)):
                    children.append((bytes.fromhex(node.subtree), parts + (node.name,)))
        except RecovaultError:
            pass  # the walk reads it again and reports it there
        except BaseException as e:  # noqa: BLE001 - handed to the walk, which waits for this tree
            fut.set_exception(e)
        with self._lock:
            self._reading.pop(tree_id, None)
            self._todo.extend(reversed(children))
        if not fut.done():
            fut.set_result(None)
        self._start()

    def wait(self, tree_id: bytes, parts: Parts) -> None:
        """Make sure tree `tree_id` (the directory at `parts`) is in the cache: wait if it is being read ahead,
        else, if the cache lacks it, read it now on the caller's thread (registered: no thread reads it at the
        same time) and read ahead below it."""
        with self._lock:
            fut = self._reading.get(tree_id)
            mine = fut is None and not self._done and not self.cache.has(tree_id.hex())
            if mine:
                fut = self._reading[tree_id] = Future()
        if mine:
            assert fut is not None
            self._read(tree_id, parts, fut)
        if fut is not None:
            fut.result()

    def close(self) -> None:
        """Stop reading ahead (the walk is over or failed); waits for the reads in flight."""
        with self._lock:
            self._done = True
            self._todo.clear()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
