"""The Python API for embedding recovault: the same operations as the CLI.

    from recovault import api
    with api.init_vault("/backup/vault", passphrase) as v: ...
    with api.open_vault("/backup/vault", passphrase) as v:
        point = api.backup(v, ["/srv"])      # a vault.records.RecoveryPoint
        api.restore(v, "latest", "/tmp/restore")
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

from .errors import UsageError
from .jobs.backup import BackupJob, BackupOptions
from .retention import Policy
from .restore import RestoreJob
from .storage import open_storage
from .vault.blobstore import no_events
from .vault.journal import DEFAULT_SOFT_DELETE_DAYS, VaultPolicy
from .vault.keys import KdfParams
from .selection import PointFilter
from .vault.lifecycle import ForgetGroup
from .vault.records import RecoveryPoint
from .vault.repo import Settings, UpgradeReport, Vault

Progress = Optional[Callable[[str, Dict[str, Any]], None]]


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "recovault")


def init_vault(location: str, passphrase: str, *, settings: Optional[Settings] = None,
               kdf: Optional[KdfParams] = None, cache_dir: Optional[str] = None,
               soft_delete_days: int = DEFAULT_SOFT_DELETE_DAYS, keys_from: Optional[Vault] = None) -> Vault:
    """Create a new vault at `location` (a directory path) and return it unlocked. `soft_delete_days`: how
    long a forgotten recovery point stays recoverable (0: off). `keys_from`: an open vault whose master keys
    and settings (chunker, chunk-ID algorithm) the new vault shares (init --copy-keys-from), so `copy`
    between them moves blobs as they are and backups into either deduplicate against the other's data;
    `settings` may then change only the compression level."""
    master = None
    if keys_from is not None:
        settings = _shared_settings(keys_from.settings, settings)
        master = keys_from.master
    return Vault.create(open_storage(location, create=True), passphrase, settings=settings, kdf=kdf,
                        cache_dir=cache_dir if cache_dir is not None else default_cache_dir(),
                        soft_delete_days=soft_delete_days, master=master)


def _shared_settings(theirs: Settings, asked: Optional[Settings]) -> Settings:
    """The settings of a vault that shares `theirs`'s keys: theirs, with the compression level asked for (the
    chunker and chunk-ID settings must agree, or chunk IDs would not)."""
    shared = dataclasses.replace(theirs)
    if asked is not None:
        if (asked.min_size, asked.avg_size, asked.max_size, asked.normalization, asked.id_algo) != \
                (theirs.min_size, theirs.avg_size, theirs.max_size, theirs.normalization, theirs.id_algo):
            raise UsageError("a vault made with --copy-keys-from chunks as its source does: no chunker settings "
                             "can be given with it")
        shared.level = asked.level
    return shared


def copy(src: Vault, dst: Vault, snapshots: Sequence[str] = (), *, progress: Progress = None):
    """Copy recovery points (ids, unique prefixes, 'latest'; by default every live one) with their blobs from
    `src` into `dst`, deduplicating against what `dst` has; points it has already (by origin) are not copied
    again. Returns a jobs.copy.CopyResult."""
    from .jobs.copy import copy_points
    return copy_points(src, dst, snapshots, progress)


def open_vault(location: str, passphrase: str, *, cache_dir: Optional[str] = None,
               on_event: Optional[Callable[[str, Dict[str, Any]], None]] = None, write: bool = False,
               connections: int = 0, key_file: Optional[str] = None) -> Vault:
    """Unlock an existing vault. `on_event(kind, info)` hears what the vault notices (kind "problem": a
    damaged index file skipped, a damaged recovery point left out of a search, with info["message"]; kind
    "notice": the vault was upgraded). A vault of an older format opens for reading; `write=True` upgrades it
    first (so does every writing call: `backup`, `migrate`). `connections`: requests to the storage at once
    (pack uploads, restore reads; 0: 2 for a local directory, 5 for an object store). `key_file`: a host key
    file (`add_host_key`): the vault then opens for adding backups only, and every other call raises
    errors.HostKeyOnly."""
    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    if key_file is not None:
        from .vault.hostvault import open_host
        return open_host(open_storage(location), key_file, passphrase, cache_dir=cache_dir,
                         on_event=on_event or no_events, connections=connections)
    return Vault.open(open_storage(location), passphrase, cache_dir=cache_dir, on_event=on_event or no_events,
                      write=write, connections=connections)


def add_host_key(vault: Vault, host: str, passphrase: str, export: str, *, kdf: Optional[KdfParams] = None) -> str:
    """Make a host key for `host` (the vault becomes format 3 the first time) and write its key file to
    `export`, sealed under `passphrase` (refused if the file exists); returns the new key's id. The host opens
    the vault with ``open_vault(location, passphrase, key_file=export)``."""
    from .vault.hostkeys import write_key_file
    from .vault.hostvault import add_host_key as add
    if os.path.lexists(export):
        raise UsageError(f"{export} exists already: choose another file for the key")
    material, data = add(vault, host, passphrase, kdf)
    write_key_file(export, data)
    return material.keyid


def rotate_key(vault: Vault, rewrite: bool = False, margin: Optional[float] = None, progress=None):
    """`key rotate`: a new X25519 generation every session seals to from now on (returns a
    vault.rotation.Rotation); with `rewrite`, also re-seal every blob under it (returns a
    jobs.rotate.RewriteResult; `margin` as prune's, default prune's)."""
    if not rewrite:
        from .vault.rotation import rotate
        return rotate(vault)
    from .jobs.prune import DEFAULT_MARGIN, PruneOptions
    from .jobs.rotate import rewrite as run
    return run(vault, PruneOptions(margin=DEFAULT_MARGIN if margin is None else margin), progress)


def host_key_list(vault: Vault):
    """The host keys the keyring lists (vault.hostkeys.HostEntry; none for a vault below format 3)."""
    from .vault.hostvault import host_keys
    return list(host_keys(vault).hosts) if vault.format_version >= 3 else []


def revoke_host_key(vault: Vault, keyid: str):
    """`key revoke`: revoke host key `keyid` (id or unique prefix). Returns (its keyring entry, whether this
    call revoked it)."""
    from .vault.rotation import revoke_host
    return revoke_host(vault, keyid)


def migrate(vault: Vault) -> UpgradeReport:
    """Upgrade `vault` to the current format version (nothing if it is current); see Vault.upgrade."""
    return vault.upgrade()


def backup(vault: Vault, paths: List[str], *, progress: Progress = None, **options: Any) -> RecoveryPoint:
    """Back up `paths`; options are BackupOptions fields (mode, excludes, tags, ...). Returns the recovery point."""
    vault.prepare_write()
    return BackupJob(vault, BackupOptions(paths=list(paths), **options), progress).run()


def snapshots(vault: Vault) -> List[RecoveryPoint]:
    """The live recovery points, oldest first (``vault.deleted_snapshots()``: the soft-deleted ones)."""
    return vault.snapshots()


def forget(vault: Vault, policy: Optional[Policy] = None, ids: Sequence[str] = (), *,
           group_by: Any = ("host", "paths"), hosts: Sequence[str] = (), paths: Sequence[str] = (),
           tags: Sequence[str] = (), dry_run: bool = False, allow_empty: bool = False) -> List[ForgetGroup]:
    """Forget recovery points (soft delete): those `ids` names, or those `policy` (default: the vault's
    stored policy) removes from each group (restic's forget; `hosts`, `paths`, `tags` select points).
    Returns, per group, what is kept (and why) and removed."""
    return vault.forget(policy, ids, group_by=group_by, where=PointFilter(tuple(hosts), tuple(paths), tuple(tags)),
                        dry_run=dry_run, allow_empty=allow_empty)


def undelete(vault: Vault, snapshot: str) -> RecoveryPoint:
    """Bring back a soft-deleted recovery point (id or unique prefix) before it expires."""
    return vault.undelete(snapshot)


def set_policy(vault: Vault, retention: Optional[Policy] = None,
               soft_delete_days: int = DEFAULT_SOFT_DELETE_DAYS) -> VaultPolicy:
    """Store the vault's policy: the retention rules forget applies with none given, and the soft-delete
    period in days (a shorter one takes effect only once the current one has passed). ``vault.policy``
    reads it."""
    return vault.set_policy(VaultPolicy(retention, soft_delete_days))


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
    vault.require_admin()
    return run_prune(vault, PruneOptions(**options), progress)
