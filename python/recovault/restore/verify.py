"""``--verify`` for a restore to a directory: re-read every restored file, chunk and hash it as a backup
would, and compare its chunk IDs with the recovery point's.

Each file is read through a descriptor opened from its directory's descriptor with ``O_NOFOLLOW`` just after
its rename (files.py calls :meth:`Verifier.add`) and checked to be the inode written, never by path: paths
past PATH_MAX verify too, and a symlink or another file swapped in since is reported, never read. The
descriptors wait here until the job runs a batch (:meth:`Verifier.run`); each is closed as its file's END
event arrives. An image under the target is verified by ``restore_image`` itself, through the descriptor it
wrote.
"""
from __future__ import annotations

import errno
import os
import threading
from typing import List, NamedTuple, Optional, Tuple

from .. import core, fsmeta
from ..vault.repo import Vault
from .report import Report


class _Readback(NamedTuple):
    """A restored file waiting for verify: `fd` reads exactly the file written (opened from its directory's
    descriptor, never through a symlink), `content` is the recovery point's chunk list."""
    path: str
    content: List[str]
    fd: int


class Verifier:
    """The restored files waiting to be read back, each holding a descriptor."""

    def __init__(self, vault: Vault, report: Report) -> None:
        self.vault = vault
        self._report = report
        self._lock = threading.Lock()
        self._files: List[_Readback] = []

    def __len__(self) -> int:
        return len(self._files)

    def add(self, dir_fd: int, name: bytes, path: str, inode: Tuple[int, int], content: List[str]) -> None:
        """Open the file just restored for verify to read back: from its directory's descriptor (paths may
        pass PATH_MAX), never through a symlink, and only if it is still the file written (st_dev, st_ino)."""
        try:
            fd = fsmeta.open_to_read(name, dir_fd)
        except OSError as e:
            why = "a symlink is there now, not the restored file" if e.errno == errno.ELOOP else e.strerror
            self._report.error(path, f"verify: cannot read back: {why}")
            return
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != inode:
            os.close(fd)
            self._report.error(path, "verify: cannot read back: another file is there now, not the restored file")
            return
        with self._lock:
            self._files.append(_Readback(path, content, fd))

    def run(self) -> None:
        """Re-read what was added, through its descriptors: chunk and hash each file as a backup would,
        compare chunk IDs. Each descriptor is closed once its file is read."""
        with self._lock:
            files, self._files = self._files, []
        if not files:
            return
        scratch = core.IdSet()
        pipe = self.vault.pipeline(compress="never", known=scratch, hashing_only=True)
        # Preload every id as known so nothing is sealed: verification only hashes.
        ids: List[List[str]] = [[] for _ in files]
        for f in files:
            for c in f.content:
                scratch.add(bytes.fromhex(c))
        open_fds = {f.fd for f in files}
        try:
            for batch in pipe.run([f.fd for f in files]):
                for kind, src, _off, _len, cid, payload in batch:
                    if kind == core.CHUNK:
                        ids[src].append(cid.hex())
                    elif kind == core.END:
                        f = files[src]
                        os.close(f.fd)
                        open_fds.discard(f.fd)
                        self._verified(f, ids[src], payload)
                        ids[src] = []
        finally:
            for fd in open_fds:
                os.close(fd)

    def _verified(self, f: _Readback, ids: List[str], error: Optional[str]) -> None:
        if error is not None:
            self._report.error(f.path, f"verify: cannot read back: {error}")
        elif ids != f.content:
            self._report.error(f.path, "verify: restored content differs from the recovery point")
        else:
            self._report.verified()

    def close(self) -> None:
        """Close the descriptors of files never verified (the restore failed before their batch)."""
        for f in self._files:
            os.close(f.fd)
        self._files = []
