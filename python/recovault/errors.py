"""recovault's exceptions: each carries a one-line message for the operator and an exit code.

The CLI prints ``str(exc)`` and exits with ``exc.exit_code``; nothing here ever carries secrets. One exit
code per concept, each listed in the README's exit-code line (tests/test_cli.py checks it): a new class
either reuses its concept's code (by subclassing) or gets a new code and a README entry.
"""
from __future__ import annotations


class RecovaultError(Exception):
    """Base of every error recovault reports to a user. The message names the problem."""

    exit_code = 1


class UsageError(RecovaultError):
    exit_code = 2


class VaultNotFound(RecovaultError):
    exit_code = 10


class VaultExists(RecovaultError):
    exit_code = 11


class WrongPassphrase(RecovaultError):
    exit_code = 12


class WeakPassphrase(UsageError):
    """A new passphrase is too short: a usage error (exit 2) like any other bad input."""


class StorageError(RecovaultError):
    """The storage failed (I/O error, full disk, permission denied, missing object)."""

    exit_code = 13


class NoSpace(StorageError):
    """A disk is full: the vault's storage or the restore target ran out of space or quota (ENOSPC, EDQUOT).
    The job stops with one message; what it stored is valid, and run again once there is space it finishes."""

    exit_code = 24


class TargetFull(NoSpace):
    """The restore target ran out of space or quota (ENOSPC, EDQUOT): the restore stops with one message."""


class ObjectMissing(StorageError):
    exit_code = 14


class StoreNotFound(VaultNotFound, StorageError):
    """An object store's container or bucket does not exist (or vanished): no vault there (exit 10), and a
    storage failure to code that catches those."""


class AccessDenied(StorageError):
    """The store refused the credentials (wrong key, expired SAS, unknown access key) or what they allow."""

    exit_code = 18


class ObjectLocked(AccessDenied):
    """The store refused to delete an object under a retention lock (S3 Object Lock) that has not expired."""


class StoreUnavailable(StorageError):
    """The store could not be reached (connection refused, DNS, timeouts) after the SDK's own retries."""

    exit_code = 19


def store_failed(exc: BaseException) -> bool:
    """True for a failure of the storage itself (an I/O error, a full disk, a timeout, refused credentials):
    it says nothing about the data, so a check must stop on it rather than call the object damaged. False for
    a missing object (damage) and for everything that is not a StorageError."""
    return isinstance(exc, StorageError) and not isinstance(exc, ObjectMissing)


class CorruptData(RecovaultError):
    """Data on storage failed authentication or does not parse: corrupted or tampered with."""

    exit_code = 15


class RefusedSession(CorruptData):
    """An object sealed in a session of a host key revoked before that session (docs/vault-format.md §3.1): not
    the vault's. Left out of listings of recovery points; named by check; reading it is this error (exit 15)."""


class NotFound(RecovaultError):
    """A recovery point, path or key the user named does not exist."""

    exit_code = 16


class Partial(RecovaultError):
    """The job completed, but some items failed and are listed (a backup: files that could not be read, and
    are not in the recovery point; a restore: files that could not be restored)."""

    exit_code = 3


class Interrupted(RecovaultError):
    """The job was interrupted (Ctrl-C, SIGTERM); a backup saved what it finished as a partial recovery point."""

    exit_code = 130


class Busy(RecovaultError):
    """Another maintainer holds the vault's lease (a prune is running elsewhere): nothing was changed; try
    again when it has finished (or its lease expired)."""

    exit_code = 17


class MountBusy(RecovaultError):
    """The mount point is in use: something is mounted there already (or a FUSE mount whose server died is
    still there). Nothing was mounted; unmount it first (fusermount3 -u), or choose another directory."""

    exit_code = 20


class HistoryUnreadable(RecovaultError):
    """The local journal of job runs (history.sqlite in the state directory) cannot be opened, read or written:
    damaged, written by a newer recovault, or not accessible. A local error (exit 1): no vault is involved."""


class Stale(RecovaultError):
    """`history --stale`: a job has no successful run within the duration given, or its last run failed (or
    was interrupted, or left files out). For monitoring: the report was printed; nothing was changed."""

    exit_code = 21


class HostKeyOnly(RecovaultError):
    """The vault was opened with a host key (format 3), which can add backups only: every operation that reads
    or deletes what the vault holds (restore, ls, snapshots, forget, prune, check, copy, key management...) is
    refused with one message, before anything is read or changed."""

    exit_code = 22


class HostKeyRevoked(RecovaultError):
    """The host key given was revoked by the admin (`key revoke`): the vault refuses it before anything is
    written; the admin makes the host a new key."""

    exit_code = 23
