"""The Python API for embedding recovault: the same operations as the CLI.

    from recovault import api
    with api.init_vault("/backup/vault", passphrase) as v: ...
    with api.open_vault("/backup/vault", passphrase) as v:
        point = api.backup(v, ["/srv"])      # a vault.records.RecoveryPoint
        api.restore(v, "latest", "/tmp/restore")
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional

from .jobs.backup import BackupJob, BackupOptions
from .restore import RestoreJob
from .storage import open_storage
from .vault.blobstore import no_events
from .vault.keys import KdfParams
from .vault.records import RecoveryPoint
from .vault.repo import Settings, Vault

Progress = Optional[Callable[[str, Dict[str, Any]], None]]


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "recovault")


def init_vault(location: str, passphrase: str, *, settings: Optional[Settings] = None,
               kdf: Optional[KdfParams] = None, cache_dir: Optional[str] = None) -> Vault:
    """Create a new vault at `location` (a directory path) and return it unlocked."""
    return Vault.create(open_storage(location, create=True), passphrase, settings=settings, kdf=kdf,
                        cache_dir=cache_dir if cache_dir is not None else default_cache_dir())


def open_vault(location: str, passphrase: str, *, cache_dir: Optional[str] = None,
               on_event: Optional[Callable[[str, Dict[str, Any]], None]] = None) -> Vault:
    """Unlock an existing vault. `on_event(kind, info)` hears what the vault notices (kind "problem": a
    damaged index file skipped, a damaged recovery point left out of a search, with info["message"])."""
    return Vault.open(open_storage(location), passphrase,
                      cache_dir=cache_dir if cache_dir is not None else default_cache_dir(),
                      on_event=on_event or no_events)


def backup(vault: Vault, paths: List[str], *, progress: Progress = None, **options: Any) -> RecoveryPoint:
    """Back up `paths`; options are BackupOptions fields (mode, excludes, tags, ...). Returns the recovery point."""
    return BackupJob(vault, BackupOptions(paths=list(paths), **options), progress).run()


def snapshots(vault: Vault) -> List[RecoveryPoint]:
    """All recovery points, oldest first."""
    return vault.snapshots()


def restore(vault: Vault, snapshot: str, target: str, paths: Optional[List[str]] = None, *,
            verify: bool = False, overwrite: str = "if-changed", delete: bool = False,
            progress: Progress = None) -> Dict[str, Any]:
    """Restore recovery point `snapshot` (id, unique prefix or 'latest') under `target` (see
    recovault.restore for the overwrite rules and what `delete` removes)."""
    point = vault.find_snapshot(snapshot)
    return RestoreJob(vault, point, target, paths, verify=verify, overwrite=overwrite, delete=delete,
                      progress=progress).run()


def prune(vault: Vault, *, progress: Progress = None, **options: Any):
    """Reclaim space (options are jobs.prune.PruneOptions fields: dry_run, max_unused, repack_small,
    recompress, margin in seconds). Returns a jobs.prune.PruneResult; errors.Busy if a prune runs elsewhere."""
    from .jobs.prune import PruneOptions, run_prune
    return run_prune(vault, PruneOptions(**options), progress)
