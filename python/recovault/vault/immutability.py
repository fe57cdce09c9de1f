"""Object-level immutability (docs/security.md, docs/vault-format.md §1): on a store that can lock objects
(S3 Object Lock), every pack, recovery point and journal entry a writer puts is locked against deletion and
replacement for the vault's lock period, so that not even the admin's key deletes them before their time.

The period, in days, is the soft-delete period in force plus the span the retention policy keeps a point at
the least (`lock_days`): a point is deleted for good no sooner than that after it was written, if backups
run as the policy expects. Index files (rebuilt from pack headers), plans, sessions, leases, keys and the
config are not locked: prune and key management replace or delete them.
"""
from __future__ import annotations

import math
from dataclasses import fields
from datetime import datetime, timezone
from typing import TYPE_CHECKING, List, NamedTuple, Optional

from ..retention import Duration, Policy
from . import format as fmt
from .coordination import Coordinator, LeaseHolder
from .hostkeys import AdminKeys, read_keyring, store_keyring
from .journal import DEFAULT_SOFT_DELETE_DAYS, soft_delete_days_at

if TYPE_CHECKING:
    from .repo import Vault

#: What is locked: what a compromised key could otherwise delete and nothing could rebuild.
LOCKED_PREFIXES = (fmt.DATA, fmt.SNAPSHOTS, fmt.JOURNAL)
MAX_LOCK_DAYS = 36500 + 100 * 366  # the longest soft-delete period plus a century of keep_yearly
_UNIT_DAYS = {"keep_hourly": 1 / 24, "keep_daily": 1, "keep_weekly": 7, "keep_monthly": 31, "keep_yearly": 366}


class LockedObject(NamedTuple):
    """An object a prune would have deleted that the store refused to, being locked (it skips it)."""
    name: str
    message: str  # the store's refusal, naming until when

    def to_json(self) -> dict:
        return {"name": self.name, "message": self.message}


#: Where a deleting step collects what it skipped as locked (None: a locked object raises ObjectLocked).
LockedSink = Optional[List[LockedObject]]


def duration_days(d: Duration) -> int:
    return d.years * 366 + d.months * 31 + d.days + math.ceil(d.hours / 24)


def retention_days(policy: Optional[Policy]) -> int:
    """The longest time, in days, `policy` keeps a point by its time-based rules (keep_within*, and
    keep_<unit> N for N units: N days for keep_daily when a backup runs daily); 0 with no such rule
    (keep_last and keep_tags keep by count or by tag, not for a time)."""
    if policy is None:
        return 0
    spans = [duration_days(getattr(policy, f.name)) for f in fields(policy) if f.name.startswith("keep_within")]
    for name, unit in _UNIT_DAYS.items():
        count = getattr(policy, name)
        spans.append(MAX_LOCK_DAYS if count < 0 else math.ceil(count * unit))
    return max(spans, default=0)


def lock_days(retention: Optional[Policy], soft_delete_days: int) -> int:
    """The lock period: `soft_delete_days` plus `retention_days(retention)`, at least 1, at most
    MAX_LOCK_DAYS."""
    return max(1, min(MAX_LOCK_DAYS, soft_delete_days + retention_days(retention)))


def lock_new_objects(vault: "Vault", now: Optional[datetime] = None) -> Optional[int]:
    """Ask the vault's storage to lock what this process puts from now on (LOCKED_PREFIXES) for the vault's
    lock period; the period in days, or None where the storage cannot lock objects (nothing is read then).
    A host key cannot open the journal's policy entries: it takes the period the admin published in the
    signed keyring (`publish_lock_days`), or the default soft-delete period's if none is published."""
    storage = vault.storage
    if not storage.can_lock_objects():
        return None
    if vault.host_key is not None:
        ring = read_keyring(storage, vault.host_key.admin_public, vault.id)
        days = ring.lock_days if ring is not None and ring.lock_days else lock_days(None, DEFAULT_SOFT_DELETE_DAYS)
    else:
        days = vault_lock_days(vault, now)
    return days if storage.lock_new_objects(days, LOCKED_PREFIXES) else None


def vault_lock_days(vault: "Vault", now: Optional[datetime] = None) -> int:
    """The lock period the admin reads off the journal: its retention policy and the soft-delete period in
    force."""
    return lock_days(vault.policy.retention, soft_delete_days_at(vault.journal.period_changes(),
                                                                 now or datetime.now(timezone.utc)))


def publish_lock_days(vault: "Vault", lease_held: bool = False) -> Optional[int]:
    """The admin's side: on a store that locks objects, in a format 3 vault, store a keyring that names the
    lock period (so hosts lock for it) when the newest one names another, under the prune lease (keyrings are
    written one at a time: `lease_held` says the caller holds it; else it is taken here, and Busy raised if
    another holds it). The period published, or None (nothing to do)."""
    if vault.host_key is not None or vault.format_version < fmt.HOST_KEY_FORMAT or not vault.storage.can_lock_objects():
        return None
    if not lease_held:
        with LeaseHolder(Coordinator(vault.storage, vault.sealer)):
            return publish_lock_days(vault, lease_held=True)
    admin = AdminKeys.derive(vault.master)  # type: ignore[arg-type]
    ring = read_keyring(vault.storage, admin.signing_public, vault.id)
    days = vault_lock_days(vault)
    if ring is None or ring.lock_days == days:
        return None
    store_keyring(vault.storage, ring.next(lock_days=days), admin.signing)
    return days
