"""key rotate --rewrite: re-seal every blob under session keys of a new X25519 generation, through prune's
repacking path (docs/vault-format.md §3.1, §10).

One run: rotate (unless the keyring already names a rewrite to its newest generation: a run interrupted
before, resumed), then under the prune lease: carry out the pending plans that are ready (as prune does);
read every indexed pack (and unindexed ones past the margin, as prune) and condemn each that holds a blob,
or a header, whose session key is not of the new generation; open and seal again, in this process's session
(sealed to the new generation), every live blob of those packs; write a plan condemning them (their garbage:
every unreferenced blob, as prune's); with margin 0, or once the plan is ready, carry it out. When no pack
is left to rewrite and no plan of the rewrite waits, a keyring without `rewriting` says it is done. Progress
is what is left to rewrite (read off the packs), so a kill -9 anywhere is resumed by the next run.

Then the records: every recovery point and journal entry sealed under an older generation's session is
re-sealed in place (format.RESEALED: it keeps its name, so no id, journal link or outside script changes).
Last, the old keys are retired once no session that began before the rotation is running (dead sessions
and expired leases are deleted first, as prune does): every `sessionkeys/` object of an older generation
(those of a revoked host's refused sessions stay: they say why its data is refused), then the `keygen/`
objects of the others, then a keyring listing only the new generation. What an old generation's private
key or an old session's data key then opens in the vault is nothing (tests/test_key_rotation.py inspects
every stored byte).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .. import core, timefmt
from ..errors import CorruptData, ObjectMissing, RecovaultError, RefusedSession
from ..vault import format as fmt
from ..vault.blobstore import pack_name
from ..vault.coordination import Coordinator, LeaseHolder, Plan
from ..vault.hostkeys import AdminKeys
from ..vault.repo import Vault
from ..vault.journal import entry_layout
from ..vault.rotation import current_ring, retire_generations, rotate
from ..vault.sealing import resealed_body
from . import prune as pr

__all__ = ["RewriteResult", "rewrite"]


@dataclass
class RewriteResult:
    """What one `key rotate --rewrite` did: the generation it rewrites to, whether it rotated (False: it
    resumed a rewrite), the packs it re-sealed and the blobs and bytes in them, the plans carried out and
    the packs they deleted, and `done` (no blob left under an older key) or the plan still `waiting`."""

    gen: int
    rotated: bool
    packs_rewritten: int = 0
    blobs_resealed: int = 0
    bytes_resealed: int = 0
    packs_deleted: int = 0
    plans_done: int = 0
    waiting: Optional[str] = None  # a plan of the rewrite waiting for its margin (or a running backup)
    done: bool = False
    points_resealed: int = 0
    entries_resealed: int = 0
    session_keys_deleted: int = 0
    generations_retired: int = 0
    unfinished: List[str] = field(default_factory=list)  # why the old keys cannot be retired yet

    def to_json(self) -> Dict[str, Any]:
        return dict(self.__dict__)


class _Fresh:
    """Whether a sealed object's session is of generation `gen` (or is this process's own)."""

    def __init__(self, vault: Vault, gen: int) -> None:
        self.vault, self.gen = vault, gen
        self.own = vault.sealer.id_session.salt

    def __call__(self, sealed: bytes) -> bool:
        salt = bytes(sealed[2:18])
        if salt == self.own:
            return True
        resolver = self.vault.sealer.resolver
        # a session begun after the listing counts as stale: its live blobs are re-sealed, which costs only time
        opened = resolver.opened(salt) if resolver is not None else None
        return opened is not None and opened.gen == self.gen


def _stale_blobs(name: str, data: bytes, entries: List[fmt.BlobEntry], fresh: _Fresh) -> bool:
    """Whether pack `name` holds a blob (or its header) sealed under another generation's session."""
    try:
        start, hlen = fmt.split_pack(len(data), data[-fmt.PACK_TRAILER.size:])
    except ValueError as e:
        raise CorruptData(f"pack {name} is corrupt: {e}") from None
    return not fresh(data[start:start + hlen]) or any(not fresh(data[e.offset:e.offset + e.length])
                                                       for e in entries)


def _condemn(vault: Vault, coord: Coordinator, opts: pr.PruneOptions, result: RewriteResult,
             fresh: _Fresh, progress: pr.Progress) -> Optional[Plan]:
    """Re-seal the live blobs of every pack that holds a stale one; the plan condemning those packs (and
    prune's garbage), not yet stored; None when no pack is stale."""
    taken = {p for plan in coord.plans() for p in plan.condemned}  # a pending plan's packs are its business
    index = pr.read_index(vault)
    on_storage = pr._packs_on_storage(vault)
    points = pr.retained_points(vault)
    live = pr._referenced(vault, points, progress)
    uses = [pr._use(p, index.packs[p], on_storage[p].size, live) for p in index.packs
            if p not in taken and p in on_storage]
    now = coord.storage_now()
    unindexed = [pr._unindexed_use(vault, p, info, live) for p, info in on_storage.items()
                 if p not in index.packs and p not in taken and now - info.mtime >= opts.margin]
    condemned: List[bytes] = []
    by_name = {pack_name(u.id): u for u in uses + unindexed}
    for name, data in vault.blobs.get_many(by_name):  # read `connections` packs ahead
        if isinstance(data, ObjectMissing):
            continue
        if isinstance(data, RecovaultError):
            raise data
        use = by_name[name]
        if not _stale_blobs(name, data, use.entries, fresh):
            continue
        progress("rotate", {"step": f"re-sealing pack {name}"})
        keep = [e for e in use.entries if e.id in live]
        result.bytes_resealed += pr.copy_from_pack(vault, name, data, keep, True)
        result.blobs_resealed += len(keep)
        result.packs_rewritten += 1
        condemned.append(use.id)
        pr._test_hook("resealed")
    vault.blobs.flush()
    if not condemned:
        return None
    garbage = core.IdSet()
    for use in uses + unindexed:
        garbage.update(b"".join(e.id for e in use.entries if e.id not in live))
    return Plan(timefmt.now(), coord.host, condemned, garbage.dump(), [p.id for p in points])


def rewrite(vault: Vault, opts: Optional[pr.PruneOptions] = None,
            progress: Optional[pr.Progress] = None) -> RewriteResult:
    """key rotate --rewrite (see the module docstring)."""
    vault.require_admin()
    opts = opts or pr.PruneOptions()
    progress = progress or (lambda kind, info: None)
    admin = AdminKeys.derive(vault.master)  # type: ignore[arg-type]
    ring = current_ring(vault, admin) if vault.format_version >= fmt.HOST_KEY_FORMAT else None
    rotated = ring is None or not ring.rewriting or ring.rewriting != ring.newest
    gen = rotate(vault, rewriting=True).gen if rotated else ring.newest  # type: ignore[union-attr]
    pr._test_hook("rotated")
    vault.blobs.flush()
    vault._use_sealer(vault._make_sealer())  # a session sealing to the new generation
    result = RewriteResult(gen, rotated)
    coord = Coordinator(vault.storage, vault.sealer)
    with LeaseHolder(coord) as lease:
        _carry_out(vault, coord, opts, progress, lease, result)
        for _round in range(3):  # with margin 0: again, for packs an older session stored meanwhile
            plan = _condemn(vault, coord, opts, result, _Fresh(vault, gen), progress)
            if plan is None:
                break
            lease.ensure()
            coord.put_plan(plan)
            pr._test_hook("planned")
            if opts.margin > 0:
                break
            _record(result, pr.phase2(vault, coord, plan, progress, lease.ensure))
        waiting = coord.plans()
        result.waiting = waiting[0].name if waiting else None
        if plan is None and not waiting:
            fresh = _Fresh(vault, gen)
            _reseal_records(vault, fresh, result, progress)
            lease.ensure()
            _settle_sessions(vault, coord, lease, fresh, result)
            if not result.unfinished:
                lease.ensure()
                _retire(vault, admin, gen, result)
                result.done = True
    return result


#: Points and journal entries re-sealed at once: each is a get and a put, a round trip each on an object store.
RESEAL_WORKERS = 8


def _reseal_records(vault: Vault, fresh: _Fresh, result: RewriteResult, progress: pr.Progress) -> None:
    """Re-seal in place every recovery point and journal entry sealed under an older generation's session
    (or the master's enc_key), RESEAL_WORKERS at a time. A refused one (a revoked host's) is left; a damaged
    one is named in `unfinished` ('check' and 'repair' deal with it)."""
    for prefix, what, reseal in ((fmt.SNAPSHOTS, "recovery point", vault.points.reseal),
                                 (fmt.JOURNAL, "journal entry", vault.journal.reseal)):
        names = list(vault.storage.list(prefix))
        with ThreadPoolExecutor(RESEAL_WORKERS, thread_name_prefix="reseal") as pool:
            for name, outcome in zip(names, pool.map(lambda n: _reseal_one(vault, n, what, reseal, fresh), names)):
                if outcome is None:
                    continue
                if outcome:  # why it could not be
                    result.unfinished.append(outcome)
                    continue
                progress("rotate", {"step": f"re-sealed {what} {fmt.name_to_id(name)[:16]}"})
                if prefix == fmt.SNAPSHOTS:
                    result.points_resealed += 1
                else:
                    result.entries_resealed += 1
                pr._test_hook("record-resealed")


def _reseal_one(vault: Vault, name: str, what: str, reseal: Any, fresh: _Fresh) -> Optional[str]:
    """Re-seal one point or entry (an atomic overwrite: the old bytes or the new, each valid): "" when done,
    None when there was nothing to do (fresh, refused, or deleted since the listing: a purge), else why not."""
    oid = fmt.name_to_id(name)
    try:
        raw = vault.storage.get(name)
        sealed = entry_layout(raw, what)[2] if name.startswith(fmt.JOURNAL) else resealed_body(raw)
        if fresh(sealed) or vault.sealer.refusal(bytes(sealed[2:18])):
            return None
        new = reseal(oid, raw)
    except (ObjectMissing, RefusedSession):
        return None
    except (CorruptData, ValueError) as e:
        return f"{what} {oid[:16]} cannot be re-sealed: {e}"
    vault.storage.put(name, new)
    return ""


def _settle_sessions(vault: Vault, coord: Coordinator, lease: LeaseHolder, fresh: _Fresh,
                     result: RewriteResult) -> None:
    """Dead sessions and expired leases are deleted (prune's `_remove_dead`); a running session sealed under
    an older generation keeps the old keys (its later packs would be sealed to them): `unfinished`."""
    pr._remove_dead(coord, lease)
    for session in coord.sessions():
        if not all(_fresh_object(vault, name, fresh) for name in session.objects or [fmt.SESSIONS + session.name]):
            result.unfinished.append(f"backup session {session.name[:16]} (host {session.host}) began before "
                                     "the rotation and is running: run 'recovault key rotate --rewrite' again "
                                     "after it ends")


def _fresh_object(vault: Vault, name: str, fresh: _Fresh) -> bool:
    try:
        return fresh(vault.storage.get(name))
    except ObjectMissing:
        return True


def _retire(vault: Vault, admin: AdminKeys, gen: int, result: RewriteResult) -> None:
    """Nothing sealed under an older generation is left: retire the old keys (rotation.retire_generations)."""
    retired = retire_generations(vault, admin, gen, between=lambda: pr._test_hook("keys-retired"))
    result.session_keys_deleted, result.generations_retired = retired


def _carry_out(vault: Vault, coord: Coordinator, opts: pr.PruneOptions, progress: pr.Progress,
               lease: LeaseHolder, result: RewriteResult) -> None:
    """Phase 2 of every pending plan that is ready (a rewrite's, or a prune's), as prune carries them out."""
    for plan in pr._plans(coord, progress):
        if not pr.waiting_reason(plan, coord.sessions(), coord, opts.margin):
            _record(result, pr.phase2(vault, coord, plan, progress, lease.ensure))


def _record(result: RewriteResult, done: Tuple[Any, List[str], int]) -> None:
    outcome = done[0]
    result.plans_done += 1
    result.packs_deleted += outcome.packs_deleted
