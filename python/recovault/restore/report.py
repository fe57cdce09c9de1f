"""What a restore reports, shared by its layers: the counts (RestoreStats), the entries that failed or whose
metadata could not be applied, and whether the target filled up (which stops the rest of the restore).

Library code never prints: every error and warning also goes to the job's ``progress(kind, info)`` callback
as an "error" event, and the CLI decides what to show.
"""
from __future__ import annotations

import errno
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from ..errors import RecovaultError, StorageError, TargetFull, store_failed

MAX_LISTED = 1000  # errors (and warnings) listed in the result; all are counted


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    others: int = 0
    bytes: int = 0
    errors: int = 0
    verified: int = 0
    skipped: int = 0  # existing entries kept by the overwrite rule
    deleted: int = 0  # entries removed by delete
    duration: float = 0.0


class Report:
    """Counts and lists for one restore; safe to call from the file pool's threads."""

    def __init__(self, progress: Callable[[str, Dict[str, Any]], None]) -> None:
        self.progress = progress
        self.stats = RestoreStats()
        self.errors: List[Dict[str, str]] = []
        self.warnings: List[Dict[str, str]] = []
        self.data_errors = 0  # errors from the vault (corrupt or missing data), as opposed to the target
        self.store_errors = 0  # of those, the storage's own failures (I/O errors, timeouts): no sign of damage
        self.store_failure: Optional[StorageError] = None  # the first of them
        self.stopped = False  # the target is full (or the walk failed): the pool's remaining runs do nothing
        self._lock = threading.Lock()

    def warn(self, path: str, msg: str) -> None:
        """Metadata that could not be applied (an unsupported xattr, a socket, a device node without
        privileges): reported, counted, but the data is restored, so the restore still succeeds."""
        with self._lock:
            if len(self.warnings) < MAX_LISTED:
                self.warnings.append({"path": path, "warning": msg})
        self.progress("error", {"path": path, "error": msg})

    def error(self, path: str, msg: str) -> None:
        with self._lock:
            if len(self.errors) < MAX_LISTED:
                self.errors.append({"path": path, "error": msg})
            self.stats.errors += 1
        self.progress("error", {"path": path, "error": msg})

    def file_failed(self, dest: str, e: "RecovaultError | OSError") -> None:
        """A file whose data could not be restored: vault-side (corrupt or missing data) or target-side."""
        if isinstance(e, RecovaultError):
            with self._lock:
                self.data_errors += 1
                if store_failed(e):
                    self.store_errors += 1
                    self.store_failure = self.store_failure or e  # type: ignore[assignment]
            self.error(dest, str(e))
        else:
            self.fail_on_full_disk(e, dest)
            self.error(dest, f"write failed: {e.strerror}")

    def fail_on_full_disk(self, e: OSError, path: str) -> None:
        """A full target (or quota) ends the restore with one message, instead of one error per file."""
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise self.target_full(path)

    def target_full(self, path: str) -> TargetFull:
        self.stopped = True
        return TargetFull(f"no space left on the restore target (writing {path}); "
                          f"{self.stats.files} files were restored before it filled up")

    def restored(self, nbytes: int) -> None:
        """A file (or a hard link: no bytes) put in place."""
        with self._lock:
            self.stats.files += 1
            self.stats.bytes += nbytes

    def skipped(self) -> None:
        with self._lock:
            self.stats.skipped += 1

    def verified(self) -> None:
        with self._lock:
            self.stats.verified += 1
