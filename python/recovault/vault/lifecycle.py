"""The lifecycle of recovery points over the journal (journal.py, docs/vault-format.md §11): which points are
live, soft-deleted or gone; ``forget`` (by a retention policy or by id), ``undelete``, the stored policy, and
purging what has expired.

A forgotten point is soft-deleted: a ``remove`` entry, its object kept. It expires ``r + max(D(r), D(now))``
after its removal r (journal.expiry); until then ``undelete`` brings it back and prune keeps everything it
references (``retained``). Expired points are purged: a ``purge`` entry, then the object is deleted. With the
period in force 0, forget purges at once.

Write order (kill -9 at any point leaves a valid vault, and the next run finishes the job): remove entries,
then purge entries, then the objects are deleted. Nothing here prints; times are injectable (`now`) so tests
need not sleep.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .. import timefmt
from ..errors import Busy, NotFound, ObjectLocked, ObjectMissing, UsageError
from ..retention import GroupKey, Kept, Policy, apply_policy, group_points, parse_group_by
from ..selection import PointFilter
from . import format as fmt
from . import immutability
from .immutability import LockedObject, LockedSink
from .journal import Journal, PointState, VaultPolicy, expiry
from .points import OnCorrupt
from .records import RecoveryPoint

if TYPE_CHECKING:
    from .repo import Vault

__all__ = ["DeletedPoint", "Expired", "ForgetGroup", "deleted", "forget", "live", "purge_expired",
           "retained", "set_policy", "undelete"]


class Expired(NotFound):
    """A soft-deleted recovery point named to undelete has expired: it is no longer recoverable."""


@dataclass(frozen=True)
class DeletedPoint:
    """A soft-deleted recovery point: removed (effective time, stored form) on `host`, recoverable with
    ``undelete`` until `expires`."""

    point: RecoveryPoint
    removed: str
    expires: str
    host: str

    def expired(self, now: Optional[datetime] = None) -> bool:
        return timefmt.parse_time(self.expires) <= _now(now)

    def to_json(self) -> Dict[str, Any]:
        """The point as ``snapshots --json`` prints it, with ``removed``, ``expires`` and ``removed_by``."""
        doc = self.point.to_json()
        doc.update(removed=self.removed, expires=self.expires, removed_by=self.host)
        return doc


@dataclass(frozen=True)
class ForgetGroup:
    """What forget does to one group: ``keep`` (with the rules that keep each; empty when points are named
    by id) and ``remove`` (soft-deleted, or purged when the period in force is 0), newest first."""

    key: GroupKey
    keep: List[Kept]
    remove: List[RecoveryPoint]

    def to_json(self) -> Dict[str, Any]:
        """restic's ``forget --json`` group: host, paths, tags, keep, remove (points as ``snapshots --json``)
        and reasons (one per kept point: ``{"snapshot", "matches", "counters"}``)."""
        doc = self.key.to_json()
        doc.update(keep=[k.point.to_json() for k in self.keep], remove=[p.to_json() for p in self.remove],
                   reasons=[dict(snapshot=k.point.to_json(), **k.reasons_json()) for k in self.keep])
        return doc


def _now(now: Optional[datetime]) -> datetime:
    return now if now is not None else datetime.now(timezone.utc)


def _states(journal: Journal) -> Dict[str, PointState]:
    journal.refresh()
    return journal.states()


# ---- which points ---------------------------------------------------------------------------------

def live(vault: "Vault", on_corrupt: Optional[OnCorrupt] = None) -> List[RecoveryPoint]:
    """The live recovery points, oldest first: journal state live, or no entry at all (an interrupted add,
    or a point older than the journal)."""
    states = _states(vault.journal)
    return [p for p in vault.points.list(on_corrupt) if p.id not in states or states[p.id].live]


def deleted(vault: "Vault", now: Optional[datetime] = None,
            on_corrupt: Optional[OnCorrupt] = None) -> List[DeletedPoint]:
    """The soft-deleted recovery points whose objects are still stored (expired ones too, until purged),
    oldest removal first."""
    states = _states(vault.journal)
    changes, now = vault.journal.period_changes(), _now(now)
    out = []
    for p in vault.points.list(on_corrupt):
        st = states.get(p.id)
        if st is not None and st.state == "deleted":
            out.append(DeletedPoint(p, timefmt.format_time(st.effective),
                                    timefmt.format_time(expiry(st.effective, changes, now)), st.last.host))
    out.sort(key=lambda d: (d.removed, d.point.id))
    return out


def counts(vault: "Vault", on_corrupt: Optional[OnCorrupt] = None) -> Tuple[int, int]:
    """(live points, soft-deleted points still stored) as `live` and `deleted` count them, listing once."""
    states = _states(vault.journal)
    points = vault.points.list(on_corrupt)
    n_live = sum(1 for p in points if p.id not in states or states[p.id].live)
    return n_live, sum(1 for p in points if p.id in states and states[p.id].state == "deleted")


def retained(vault: "Vault", now: Optional[datetime] = None,
             on_corrupt: Optional[OnCorrupt] = None) -> List[RecoveryPoint]:
    """What prune must keep: the live points and the soft-deleted ones not expired at `now`, oldest first."""
    states = _states(vault.journal)
    changes, now = vault.journal.period_changes(), _now(now)

    def keep(st: Optional[PointState]) -> bool:
        return st is None or st.live or (st.state == "deleted" and expiry(st.effective, changes, now) > now)
    return [p for p in vault.points.list(on_corrupt) if keep(states.get(p.id))]


# ---- changing them --------------------------------------------------------------------------------

def _remove(vault: "Vault", points: Sequence[RecoveryPoint], now: datetime) -> None:
    """Soft-delete `points`; those that expire at once (the period in force is 0) are purged."""
    vault.prepare_write()
    journal = vault.journal
    when = timefmt.format_time(now)
    journal.append_many([("remove", p.id, when) for p in points])
    states, changes = journal.states(), journal.period_changes()
    # A purged point whose object the store keeps locked stays stored; the next prune deletes and reports it.
    _purge(vault, [p.id for p in points if expiry(states[p.id].effective, changes, now) <= now], now, [])


def _purge(vault: "Vault", sids: Sequence[str], now: datetime, locked: LockedSink = None) -> None:
    """Log `sids` as purged, then delete their objects (a crash in between: the audit warns, purge_expired
    finishes)."""
    if sids:
        vault.prepare_write()
    vault.journal.append_many([("purge", sid, timefmt.format_time(now)) for sid in sids])
    _delete_objects(vault, sids, locked)


def _delete_objects(vault: "Vault", sids: Iterable[str], locked: LockedSink = None) -> None:
    """Delete the objects of points `sids`; one still locked by the store (S3 Object Lock) is added to
    `locked` and left (it is logged purged: the next prune deletes it) instead of raising, when given."""
    for sid in sids:
        try:
            vault.points.delete(sid)
        except ObjectMissing:
            pass  # deleted by an earlier, interrupted run (or another host finishing it at the same time)
        except ObjectLocked as exc:
            if locked is None:
                raise
            locked.append(LockedObject(fmt.SNAPSHOTS + sid, str(exc)))


def purge_expired(vault: "Vault", now: Optional[datetime] = None, locked: LockedSink = None) -> List[str]:
    """Purge the soft-deleted points expired at `now`, and finish interrupted purges (a purge entry whose
    object is still stored). Returns their ids. Objects still locked go to `locked` (see _delete_objects)."""
    now = _now(now)
    states, changes = _states(vault.journal), vault.journal.period_changes()
    stored = set(vault.points.ids())
    expired = sorted(sid for sid, st in states.items()
                     if st.state == "deleted" and expiry(st.effective, changes, now) <= now)
    _purge(vault, expired, now, locked)
    unfinished = sorted(sid for sid, st in states.items() if st.state == "purged" and sid in stored)
    _delete_objects(vault, unfinished, locked)
    return sorted(set(expired) | set(unfinished))


def _named(vault: "Vault", refs: Iterable[str], snaps: List[RecoveryPoint]) -> List[RecoveryPoint]:
    """The live points `refs` name (ids, unique prefixes, 'latest'), each once; NotFound / UsageError for a
    ref that names none or several (a soft-deleted one is named as such)."""
    out: Dict[str, RecoveryPoint] = {}
    for ref in refs:
        p = find_live(vault, ref, snaps)
        out[p.id] = p
    return list(out.values())


def find_live(vault: "Vault", ref: str, snaps: List[RecoveryPoint]) -> RecoveryPoint:
    """The live point among `snaps` that `ref` names (id, unique prefix, 'latest'); a ref that names only a
    soft-deleted point gets a NotFound that says so and how to bring it back."""
    try:
        return vault.points.find(ref, snaps)
    except NotFound:
        gone = [d for d in deleted(vault) if d.point.id.startswith(ref)] if ref and ref != "latest" else []
        if gone:
            raise NotFound(f"recovery point {gone[0].point.short_id} is soft-deleted (until {gone[0].expires}); "
                           f"'recovault undelete {gone[0].point.short_id}' brings it back") from None
        raise


def _check_not_emptied(snaps: List[RecoveryPoint], removed: Iterable[RecoveryPoint]) -> None:
    """UsageError if removing `removed` leaves a host and paths with no live point."""
    gone = {p.id for p in removed}
    for group in group_points(snaps, by=("host", "paths")):
        if all(p.id in gone for p in group.points):
            raise UsageError(f"this would remove every recovery point of host {group.key.host} and paths "
                             f"{', '.join(group.key.paths)} (the last is {group.points[-1].short_id}); "
                             "give --allow-empty to do it")


def forget(vault: "Vault", policy: Optional[Policy] = None, ids: Sequence[str] = (), *,
           group_by: Any = ("host", "paths"), where: PointFilter = PointFilter(), dry_run: bool = False,
           allow_empty: bool = False, now: Optional[datetime] = None) -> List[ForgetGroup]:
    """Forget recovery points: those `ids` name, or those `policy` (default: the stored one) removes from
    each group of the live points `where` selects. Removing the last live point of a host and paths is
    refused unless `allow_empty`. With `dry_run`, nothing is written. Returns what happens per group."""
    now = _now(now)
    if ids and policy is not None:
        raise UsageError("give recovery point IDs or --keep-* rules, not both")
    fields_ = parse_group_by(group_by)
    snaps = live(vault)
    if ids:
        named = _named(vault, ids, snaps)
        groups = [ForgetGroup(g.key, [], sorted(g.points, key=lambda p: p.sort_key, reverse=True))
                  for g in group_points(named, by=fields_)]
    else:
        if policy is None:
            policy = vault.journal.policy().retention
        if policy is None:
            raise UsageError("no retention rules given and no policy stored in the vault "
                             "(give --keep-* rules, or store a policy with 'recovault policy set')")
        groups = [ForgetGroup(g.key, *apply_policy(g.points, policy, now=now))
                  for g in group_points([p for p in snaps if where(p)], by=fields_)]
    removed = [p for g in groups for p in g.remove]
    if not allow_empty:
        _check_not_emptied(snaps, removed)
    if removed and not dry_run:
        _remove(vault, removed, now)
    return groups


def undelete(vault: "Vault", ref: str, now: Optional[datetime] = None) -> RecoveryPoint:
    """Bring a soft-deleted point back (id or unique prefix); Expired once it has expired, NotFound if no
    soft-deleted point matches, UsageError if several do or it is live."""
    now = _now(now)
    hits = [d for d in deleted(vault, now) if ref and d.point.id.startswith(ref)]
    if len(hits) > 1:
        raise UsageError(f"'{ref}' matches {len(hits)} soft-deleted recovery points; give more characters")
    if not hits:
        if ref and any(p.id.startswith(ref) for p in live(vault)):
            raise UsageError(f"recovery point '{ref}' is not deleted")
        raise NotFound(f"no soft-deleted recovery point matches '{ref}' (see 'recovault snapshots --deleted')")
    d = hits[0]
    if d.expired(now):
        raise Expired(f"recovery point {d.point.short_id} expired at {d.expires} (soft-deleted at {d.removed}): "
                      "it can no longer be undeleted")
    vault.prepare_write()
    vault.journal.append("undelete", d.point.id, timefmt.format_time(now))
    return d.point


def set_policy(vault: "Vault", policy: VaultPolicy, now: Optional[datetime] = None) -> VaultPolicy:
    """Store `policy` as the vault's (a policy entry). A shorter soft-delete period takes effect only once
    the current one has passed (journal.soft_delete_days_at)."""
    vault.prepare_write()
    vault.journal.append("policy", "", timefmt.format_time(_now(now)), policy=policy)
    try:
        immutability.publish_lock_days(vault)  # hosts lock for the new period from their next backup
    except Busy:
        vault.on_event("notice", {"message": "a prune holds the vault's lease: hosts keep locking what they store "
                                             "for the previous lock period until the next prune publishes this "
                                             "policy's"})
    return policy
