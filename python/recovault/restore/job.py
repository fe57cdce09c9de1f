"""The restore job (as restic's restorer.go): walks the recovery point's trees, decides what is restored
(the selection), and orchestrates the other layers: target.py for every entry beneath the target,
files.py for the files' contents, verify.py for --verify, report.py for counts, errors and warnings.

Memory follows the tree's depth, not its file count: directories are restored one at a time, depth-first;
their files go to a small pool of threads in runs, through a bounded number of slots; a directory's metadata
is applied once its files are done, children before parents (times would otherwise be disturbed). Only
the hard-link table (recovault.hardlinks) grows with the number of (hard-linked) files. From an object store
the files go to the pool in batches instead (batch.py), each pack's needed ranges fetched once per batch. Files restored for
verify wait with an open descriptor, at most about VERIFY_BATCH of them before a batch is verified.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from .. import fsmeta
from ..errors import CorruptData, NotFound, UsageError
from ..hardlinks import HardLinks
from ..paths import split_path
from ..storage.base import has_local_files
from ..vault.records import Node, RecoveryPoint
from ..vault.repo import Vault
from ..vault.treeahead import TreeReadAhead
from ..packfetch import FetchedPacks
from .batch import Batch, Fetcher, batchable
from .files import FileRestorer, FileTask, First
from .report import Report
from .target import OVERWRITE_MODES, Dir, Parts, Target
from .verify import Verifier

RUN_FILES = 16  # files per pool task: one task per small file costs more than restoring it
MAX_OPEN_DIRS = 64  # restored directories waiting for their files (each holds a descriptor)
VERIFY_BATCH = 256  # restored files re-read together by verify


def default_workers(vault: Vault) -> int:
    """File threads by default: 2 from a local vault (more only thrash the GIL on small files, whose cost is
    metadata calls); from an object store one per connection: batched files read fetched memory, but the
    files not batched (big, hard-linked, images) wait on their own ranged gets (measured on the in-memory
    double, 5 threads restored /usr/include no slower than 2)."""
    if has_local_files(vault.storage):
        return 2
    return max(2, vault.blobs.connections)


class RestoreJob:
    """Restore a recovery point (whole, or selected paths) to a target directory, byte for byte."""

    def __init__(self, vault: Vault, point: RecoveryPoint, target: str, paths: Optional[List[str]] = None, *,
                 verify: bool = False, owners: Optional[bool] = None, workers: int = 0,
                 overwrite: str = "if-changed", delete: bool = False,
                 progress: Optional[Callable[[str, Dict[str, Any]], None]] = None) -> None:
        if overwrite not in OVERWRITE_MODES:
            raise UsageError(f"--overwrite must be one of {', '.join(OVERWRITE_MODES)}, not {overwrite!r}")
        self.vault = vault
        self.point = point
        self.target = os.path.abspath(target)
        self.selection = [split_path(p) for p in (paths or [])]
        self.verify = verify
        self.workers = workers if workers > 0 else default_workers(vault)
        # From an object store files are restored in batches, each pack fetched once for all (batch.py).
        self._batch: Optional[Batch] = None if has_local_files(vault.storage) else Batch()
        self.delete = delete
        self.report = Report(progress or (lambda kind, info: None))
        self.stats = self.report.stats
        owners = (os.geteuid() == 0) if owners is None else owners
        self._dest = Target(self.target, overwrite, owners, self.report)
        self._verifier = Verifier(vault, self.report)
        self._links: HardLinks[First] = HardLinks(forget=True)
        self._closing: Deque[Dir] = deque()  # restored directories, children before parents
        self._slots = threading.BoundedSemaphore(8 * self.workers)  # runs of files queued or in the pool

    def _wanted(self, parts: Parts) -> Tuple[bool, bool]:
        """(restore this node, descend into it)."""
        if not self.selection:
            return True, True
        for sel in self.selection:
            if parts[: len(sel)] == sel:
                return True, True  # inside a selected path
            if sel[: len(parts)] == parts:
                return False, True  # an ancestor of a selected path: create it, descend
        return False, False

    # ---- the job -----------------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        t0 = time.monotonic()
        for sel in self.selection:  # before anything is written
            if self.vault.find_node(self.point, "/" + os.fsdecode(b"/".join(sel))) is None:
                raise NotFound(f"path /{os.fsdecode(b'/'.join(sel))} is not in recovery point {self.point.short_id}")
        root = self._dest.open(set() if self.delete and not self.selection else None)
        self.report.progress("plan", {"files": 0, "bytes": 0})  # the totals grow directory by directory ("more")
        try:
            self._walk(root)
            self._verify_queued()
        finally:
            for d in self._closing:  # left open by a failure (the pool is over: nothing uses them)
                os.close(d.fd)
            self._verifier.close()
            self._dest.close()
        self.stats.duration = round(time.monotonic() - t0, 3)
        r = self.report
        return {"snapshot": self.point.id, "target": self.target, "stats": dict(self.stats.__dict__),
                "errors": r.errors, "warnings": r.warnings, "data_errors": r.data_errors}

    def _walk(self, root: Dir) -> None:
        """Restore the whole tree into `root`, with the file pool (and, from an object store, the batches'
        fetch thread)."""
        fetch_thread = ThreadPoolExecutor(1, thread_name_prefix="recovault-batch")
        self._fetcher = Fetcher(self.vault, fetch_thread.submit)
        self._ahead = TreeReadAhead.wanted(self.vault, lambda p: self._wanted(p)[1])
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="recovault-restore") as pool:
                self._pool = pool
                self._files = FileRestorer(self.vault, self._dest, self.report, self._verifier, self.verify)
                try:
                    try:
                        self._restore_dir(root, bytes.fromhex(self.point.tree))
                    finally:
                        self._closing.append(root)
                    self.report.progress("walked", {})  # every file is counted: the totals are final
                    self._drain(0)
                finally:
                    self.report.stopped = self.report.stopped or bool(self._closing)  # failed: end queued runs
        finally:
            if self._ahead is not None:
                self._ahead.close()
            fetch_thread.shutdown(wait=True)
            self._fetcher.close()

    def _restore_dir(self, d: Dir, tree_id: bytes) -> None:
        """Restore the entries of tree `tree_id` into the open directory `d`, its subdirectories first
        (depth-first), its files handed to the pool."""
        run: List[FileTask] = []
        files = nbytes = 0
        if self._ahead is not None:
            self._ahead.wait(tree_id, d.parts)
        for node in self.vault.load_nodes(tree_id):
            name = node.name
            if name in (b"", b".", b"..") or b"/" in name:
                raise CorruptData(f"tree {tree_id.hex()[:16]} holds an invalid file name {name!r}")
            p = d.parts + (name,)
            want, descend = self._wanted(p)
            if not want and not descend:
                continue
            if d.names is not None:
                d.names.add(name)
            meta = fsmeta.Meta.from_dict(node.meta)
            try:
                if meta.type == "d":
                    self._restore_subdir(d, name, node, meta, want, descend)
                elif not want:
                    continue
                elif meta.type == "f" or node.image is not None:
                    files, nbytes = files + 1, nbytes + (node.size or 0)
                    run = self._add_file(FileTask(d, name, node, meta), run)
                else:
                    self._dest.make_other(d, name, meta)
            except OSError as e:
                self.report.fail_on_full_disk(e, self._dest.path_of(p))
                self.report.error(self._dest.path_of(p), f"cannot create: {e.strerror}")
        if run:
            self._submit(d, run)
        if files:
            self.report.progress("more", {"files": files, "bytes": nbytes})

    def _restore_subdir(self, parent: Dir, name: bytes, node: Node, meta: fsmeta.Meta, want: bool,
                        descend: bool) -> None:
        opened = self._dest.open_dir(parent, name, 0o700 if want else 0o777)
        if opened is None:
            return
        fd, made = opened
        d = Dir(fd, parent.parts + (name,), meta if want else None, set() if self.delete and want else None, made)
        if want:
            self.stats.dirs += 1
        try:
            if descend and node.subtree is not None:
                self._restore_dir(d, bytes.fromhex(node.subtree))
        finally:
            self._closing.append(d)
        self._drain(MAX_OPEN_DIRS)

    def _drain(self, keep: int) -> None:
        """Finish the restored directories whose files are done, in order (children before parents); past
        `keep` of them waiting, wait for the oldest."""
        if self._closing and self._closing[0].batched and len(self._closing) > keep // 2:
            self._flush()  # the oldest directory's files go now, so that they are done when it must be finished
        while self._closing:
            d = self._closing[0]
            if len(self._closing) <= keep and (d.batched or not all(f.done() for f in d.pending)):
                break
            if d.batched:
                self._flush()
            futures_wait(d.pending)
            self._closing.popleft()
            try:
                for f in d.pending:
                    f.result()  # a full target ends the restore here
                self._dest.finish_dir(d)
            finally:
                os.close(d.fd)
            if len(self._verifier) >= VERIFY_BATCH:
                self._verify_queued()

    # ---- files to the pool ---------------------------------------------------------------------
    def _add_file(self, t: FileTask, run: List[FileTask]) -> List[FileTask]:
        """Add a file to the directory's current run (sent to the pool when full); the run left open."""
        m = t.meta
        if m.nlink > 1 and m.ino:
            first = First(t.dir.parts + (t.name,))
            prior = self._links.see((m.dev, m.ino), m.nlink, first)
            if prior is not None:
                self._files.link(t, prior)
                return run
            t.first = first  # its run goes to the pool now, so that later names can wait for it
            run.append(t)
            self._submit(t.dir, run)
            return []
        if self._batch is not None and batchable(t):
            if self._batch.add(t):
                self._flush()
            return run
        run.append(t)
        if len(run) >= RUN_FILES:
            self._submit(t.dir, run)
            return []
        return run

    def _flush(self) -> None:
        """Send the batch's files to the pool, in runs per directory, once their packs are fetched."""
        batch, self._batch = self._batch, Batch()
        if not batch:
            return
        fetched = self._fetcher.fetch(batch)
        runs: List["Future[None]"] = []
        run: List[FileTask] = []
        for t in batch.tasks:
            t.dir.batched = 0
            if run and (run[0].dir is not t.dir or len(run) >= RUN_FILES):
                runs.append(self._submit(run[0].dir, run, fetched))
                run = []
            run.append(t)
        runs.append(self._submit(run[0].dir, run, fetched))
        self._fetcher.release_after(fetched, runs)

    def _submit(self, d: Dir, run: List[FileTask],
                fetched: "Optional[Future[FetchedPacks]]" = None) -> "Future[None]":
        if len(self._verifier) >= VERIFY_BATCH:  # (a huge directory: bounds the descriptors held for verify)
            self._verify_queued()
        self._slots.acquire()  # bounds the queued work, and so the memory, whatever the tree's size
        try:
            fut = self._pool.submit(self._files.restore_run, run, fetched)
        except BaseException:
            self._slots.release()
            raise
        fut.add_done_callback(lambda _f: self._slots.release())
        if len(d.pending) >= 64:  # a huge directory: keep only what is still running or failed
            d.pending = [f for f in d.pending if not f.done() or f.exception() is not None]
        d.pending.append(fut)
        for t in run:
            if t.first is not None:
                t.first.future = fut
        return fut

    def _verify_queued(self) -> None:
        """verify: read back the files restored since the last batch (verify.py)."""
        self._verifier.run()
