"""Files restored together from an object store, each pack read once for all of them (restic's restorer
reads each pack once for every file that needs it; its filerestorer plans all files first, this plans a
batch at a time so that memory stays bounded whatever the tree's size).

The restore job adds the files of the directories it walks to a :class:`Batch` (at most ``BATCH_BYTES`` of
content and ``BATCH_FILES`` files); when one is full, or a directory of its files must be finished, the job
flushes it: the batch's needed ranges of each pack (merged, in parallel) are fetched on the fetch thread
while the file pool writes the previous batch, into the job's packfetch.PackCache, which keeps what later
batches may need too, so each part of a pack is read once; the batch's files then go to the file pool in
runs, reading their chunks from the fetched memory. At most ``IN_FLIGHT`` batches are pinned at once.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Callable, Dict, List

from ..packfetch import FetchedPacks, PackCache, Span
from ..vault.repo import Vault
from .files import FileTask

BATCH_BYTES = 64 << 20  # content of the files of one batch (what is fetched, but for the gaps merged in)
BATCH_FILES = 4096
BIG_FILE = BATCH_BYTES // 4  # a bigger file is not batched: the engine fetches it in windows of its own
IN_FLIGHT = 2  # batches held at once: one fetched while the one before is written


class Batch:
    """The files of one batch, in the order the walk found them."""

    def __init__(self) -> None:
        self.tasks: List[FileTask] = []
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.tasks)

    def add(self, t: FileTask) -> bool:
        """Add a file; True when the batch is now full."""
        self.tasks.append(t)
        t.dir.batched += 1
        self.bytes += t.node.size or 0
        return self.bytes >= BATCH_BYTES or len(self.tasks) >= BATCH_FILES

    def spans(self, vault: Vault) -> Dict[str, List[Span]]:
        """The sealed ranges of every chunk the batch's files need, per pack name."""
        out: Dict[str, List[Span]] = {}
        for t in self.tasks:
            for h in t.node.content or []:
                loc = vault.locate(bytes.fromhex(h))
                out.setdefault(vault.pack_name(loc.pack), []).append((loc.offset, loc.length))
        return out


def batchable(t: FileTask) -> bool:
    """A file restored in a batch: not a device image, not a hard link (its later names wait for it, which
    the walk does at once), not bigger than BIG_FILE."""
    m = t.meta
    return t.node.image is None and not (m.nlink > 1 and m.ino) and (t.node.size or 0) <= BIG_FILE


class Fetcher:
    """Fetches flushed batches, one at a time on its own thread (each on the vault's connections), holding
    at most IN_FLIGHT batches' memory; a batch's memory is freed when all its runs are done."""

    def __init__(self, vault: Vault, executor: Callable[[Callable[[], FetchedPacks]], "Future[FetchedPacks]"]) -> None:
        self.vault = vault
        self.cache = PackCache(vault)
        self._submit = executor
        self._room = threading.BoundedSemaphore(IN_FLIGHT)

    def fetch(self, batch: Batch) -> "Future[FetchedPacks]":
        """Start fetching the batch's packs (waits while IN_FLIGHT batches are held)."""
        spans = batch.spans(self.vault)  # on the walk's thread: an unindexed chunk fails the restore here
        self._room.acquire()
        try:
            return self._submit(lambda: self.cache.fetch(spans))
        except BaseException:
            self._room.release()
            raise

    def close(self) -> None:
        """Free the fetched packs (the job is over: no run reads them any more)."""
        self.cache.close()

    def release_after(self, fetched: "Future[FetchedPacks]", runs: List["Future[None]"]) -> None:
        """Free the batch's memory and its room once every run of it is done."""
        left = [len(runs)]
        lock = threading.Lock()

        def done(_f: "Future[None]") -> None:
            with lock:
                left[0] -= 1
                if left[0]:
                    return
            try:
                if fetched.exception() is None:
                    fetched.result().close()
            finally:
                self._room.release()
        for f in runs:  # (a flushed batch has one run at least)
            f.add_done_callback(done)
