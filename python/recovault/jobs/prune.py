"""prune: reclaim the space of blobs no retained recovery point references, beside running backups, in two
phases (docs/vault-format.md §10, the protocol and why no interleaving loses data).

One run, under the lease: purge expired soft-deleted points; phase 2 of every pending plan that is past its
margin and seen by every live writer (rescue, compact the index, delete the packs, delete the plan);
phase 1 of a new plan (repack partly used packs now, condemn the rest, write the plan); with margin 0 its
phase 2 at once. `plan_prune` is phase 1's decision alone, writing nothing (`--dry-run`, `stats`).
"""
from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from .. import core, timefmt
from ..errors import CorruptData, ObjectLocked, ObjectMissing, UsageError
from ..storage import ObjectInfo
from ..jobfile.timespan import parse_timespan
from ..vault import format as fmt
from ..vault import lifecycle
from ..vault.blobstore import pack_id_of, pack_name
from ..vault.cache_hygiene import parse_size
from ..vault.coordination import Clock, Coordinator, LeaseHolder, Plan
from ..vault.immutability import LockedObject, LockedSink, publish_lock_days
from ..vault.reach import ids_of, referenced
from ..vault.rotation import refusal_since, refused_packs
from ..vault.records import RecoveryPoint

Progress = Callable[[str, Dict[str, Any]], None]
DEFAULT_MARGIN = 2 * 3600  # seconds; see docs/vault-format.md §10 for why
COMPACT_OVER = 32  # index files: more, and prune compacts them even with nothing to delete
INDEX_FILE_BLOBS = 50_000  # blobs per compacted index file (as repair writes them)
SMALL_PACK = 0.8  # --repack-small: packs under this fraction of the vault's pack size (restic's 80%)


def parse_margin(text: str) -> float:
    """--margin: "0", or a time span as a job file writes one (jobfile/timespan.py: "30s", "15m", "2h", "1d",
    "1h30m", "1h 30min"; lower-cased first, as always: "2H" is two hours) in seconds; UsageError otherwise."""
    t = text.strip().lower()
    if t == "0":
        return 0.0
    try:
        return parse_timespan(t, "--margin")
    except UsageError:
        raise UsageError(f"--margin {text!r}: use a duration like 0, 30s, 15m, 2h, 1d (combinable: 1h30m)") from None


@dataclass(frozen=True)
class MaxUnused:
    """restic's --max-unused: a percentage (of the vault's size after the prune), a size, or unlimited."""
    percent: Optional[float] = None
    size: Optional[int] = None  # both None: unlimited

    @classmethod
    def parse(cls, text: str) -> "MaxUnused":
        t = text.strip().lower()
        if t == "unlimited":
            return cls()
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", t)
        if m and float(m.group(1)) < 100:
            return cls(percent=float(m.group(1)))
        try:
            return cls(size=parse_size(t, "--max-unused"))
        except UsageError:
            pass
        raise UsageError(f"--max-unused {text!r}: use a percentage below 100% (5%), a size (100M), or unlimited")

    def allowed(self, used: int) -> float:
        """The unused bytes tolerated beside `used` live bytes."""
        if self.percent is not None:
            return self.percent / (100 - self.percent) * used
        return float("inf") if self.size is None else float(self.size)


@dataclass
class PruneOptions:
    dry_run: bool = False
    max_unused: str = "5%"
    repack_small: bool = False
    recompress: bool = False
    margin: float = DEFAULT_MARGIN  # seconds; 0: no backup runs, one prune reclaims everything


@dataclass
class PackUse:
    """One pack as phase 1 sees it: its size, and the bytes of its blobs that are referenced or not."""
    id: bytes
    size: int
    used: int = 0
    unused: int = 0
    entries: List[fmt.BlobEntry] = field(default_factory=list)


@dataclass
class Decision:
    """Phase 1's decision (what `--dry-run` and `stats` show): packs to delete whole, to repack, and
    unindexed ones past the margin; the blobs to copy first; the bytes that frees."""
    delete: List[bytes] = field(default_factory=list)
    repack: List[bytes] = field(default_factory=list)
    unindexed: List[bytes] = field(default_factory=list)
    copy: List[Tuple[bytes, fmt.BlobEntry]] = field(default_factory=list)  # (pack, entry) of live blobs
    garbage: bytes = b""
    points: List[str] = field(default_factory=list)  # the retained points whose trees made the referenced set
    packs: int = 0
    bytes_total: int = 0
    bytes_used: int = 0
    bytes_unused: int = 0
    bytes_freed: int = 0  # condemned packs' sizes minus the live bytes copied out of them
    bytes_copied: int = 0

    @property
    def condemned(self) -> List[bytes]:
        return self.delete + self.repack + self.unindexed

    def to_json(self) -> Dict[str, Any]:
        return {"packs_delete": len(self.delete), "packs_repack": len(self.repack),
                "packs_unindexed": len(self.unindexed), "blobs_garbage": len(self.garbage) // 32,
                "blobs_copied": len(self.copy), "bytes_copied": self.bytes_copied, "bytes_freed": self.bytes_freed,
                "packs_total": self.packs, "bytes_total": self.bytes_total, "bytes_used": self.bytes_used,
                "bytes_unused": self.bytes_unused}


@dataclass
class PlanOutcome:
    """What became of one pending plan in this run: carried out (phase 2), or why it waits."""
    plan: str
    done: bool
    reason: str = ""  # why it waits: "margin" or "session"
    packs_deleted: int = 0
    bytes_deleted: int = 0  # the deleted packs' sizes (their live blobs were copied first)
    blobs_rescued: int = 0


@dataclass
class PruneResult:
    dry_run: bool
    margin: float
    purged: List[str] = field(default_factory=list)
    sessions_removed: int = 0
    plans: List[PlanOutcome] = field(default_factory=list)
    new_plan: Optional[str] = None
    decision: Optional[Decision] = None
    index_files_written: int = 0
    index_files_deleted: int = 0
    #: Objects it would have deleted that the store refused, locked (S3 Object Lock): left for a later prune.
    locked: List[LockedObject] = field(default_factory=list)
    #: Packs a revoked host key stored after its revocation, taken out of the index (`quarantine_refused`).
    refused_packs: List[str] = field(default_factory=list)

    @property
    def bytes_deleted(self) -> int:
        return sum(p.bytes_deleted for p in self.plans if p.done)

    def to_json(self) -> Dict[str, Any]:
        return {"dry_run": self.dry_run, "margin": self.margin, "purged": self.purged,
                "sessions_removed": self.sessions_removed, "plans": [asdict(p) for p in self.plans],
                "new_plan": self.new_plan, "decision": self.decision.to_json() if self.decision else None,
                "index": {"files_written": self.index_files_written, "files_deleted": self.index_files_deleted},
                "bytes_deleted": self.bytes_deleted, "locked": [o.to_json() for o in self.locked],
                "refused_packs": self.refused_packs}


def retained_points(vault) -> List[RecoveryPoint]:
    """What prune must keep: live and soft-deleted unexpired points. A damaged point raises: never guess."""
    return vault.retained_snapshots()


def _test_hook(step: str) -> None:
    """Tests kill a prune at a named step (RECOVAULT_TEST_PRUNE_KILL=step): the kill -9 tests."""
    if os.environ.get("RECOVAULT_TEST_PRUNE_KILL") == step:
        os.kill(os.getpid(), signal.SIGKILL)


# ---- reading the index as stored ---------------------------------------------------------------------
@dataclass
class IndexView:
    """Every index file as stored now: their names, and the entries of every pack they list."""
    files: List[str]
    packs: Dict[bytes, fmt.PackEntries]  # compact: 45 bytes a blob (a prune holds every entry)


def read_index(vault) -> IndexView:
    """List and read every index file (from storage). A damaged one stops prune: its packs' blobs could be
    taken for garbage."""
    files = list(vault.storage.list(fmt.INDEX))
    packs: Dict[bytes, fmt.PackEntries] = {}
    for name in files:
        try:
            for pack, entries in vault.blobs.read_index_file(name).items():
                packs.setdefault(pack, entries)
        except ObjectMissing:
            continue  # replaced meanwhile (a repair): its packs are listed by the replacement
        except CorruptData as e:
            raise CorruptData(f"{e}; prune needs an intact index: run 'recovault repair index' first") from None
    return IndexView(files, packs)


def _packs_on_storage(vault) -> Dict[bytes, ObjectInfo]:
    out = {}
    for info in vault.storage.list_info(fmt.DATA):
        pack = pack_id_of(info.name)
        if pack is not None:
            out[pack] = info
    return out


# ---- phase 1: the decision --------------------------------------------------------------------------
def plan_prune(vault, opts: PruneOptions, pending: Iterable[Plan] = (), now: Optional[float] = None,
               progress: Optional[Progress] = None) -> Decision:
    """Phase 1's decision, writing nothing: reference walk over the retained points, each pack's used and
    unused bytes, which packs to delete, repack (restic's --max-unused rule, --repack-small) or, unindexed
    and older than the margin (`now` on the storage's clock: ages are read off mtimes), condemn."""
    progress = progress or (lambda kind, info: None)
    now = time.time() if now is None else now
    limit = MaxUnused.parse(opts.max_unused)
    taken = {p for plan in pending for p in plan.condemned}  # a pending plan's packs are its business
    # The index before the packs: a pack an index lists is stored before that index, so one listed then but
    # absent from the later listing of packs is truly missing (the other order would take a backup's new
    # pack, stored and indexed in between, for missing).
    index = read_index(vault)
    on_storage = _packs_on_storage(vault)
    missing = [p for p in index.packs if p not in on_storage]
    if missing:
        raise CorruptData(f"pack {pack_name(missing[0])} is listed in the index but missing from storage "
                          f"({len(missing)} such): run 'recovault check'; prune deletes nothing until it is repaired")
    progress("prune", {"step": "finding referenced blobs"})
    points = retained_points(vault)
    live = _referenced(vault, points, progress)
    uses = [_use(p, index.packs[p], on_storage[p].size, live) for p in index.packs if p not in taken]
    unindexed = [_unindexed_use(vault, p, info, live) for p, info in on_storage.items()
                 if p not in index.packs and p not in taken and now - info.mtime >= opts.margin]
    d = _decide(uses, unindexed, limit, opts.repack_small, vault.settings.pack_size, live)
    d.points = [p.id for p in points]
    return d


def _referenced(vault, points: List[RecoveryPoint], progress: Progress) -> "core.IdSet":
    """Every blob `points` reference. The index files written since this process loaded the index are
    loaded first: a point is stored after the index files its blobs need, so listing the points and then
    loading the index locates every blob they reference (a backup may have finished meanwhile)."""
    vault.load_index()
    return referenced(vault, [bytes.fromhex(p.tree) for p in points], progress)


def _use(pack: bytes, entries: List[fmt.BlobEntry], size: int, live: "core.IdSet") -> PackUse:
    use = PackUse(pack, size, entries=entries)
    for e in entries:
        if e.id in live:
            use.used += e.length
        else:
            use.unused += e.length
    return use


def _unindexed_use(vault, pack: bytes, info: ObjectInfo, live: "core.IdSet") -> PackUse:
    """An unindexed pack (an interrupted backup's) past the margin: its own header says what it holds; one
    whose header does not read holds nothing anyone can use."""
    try:
        entries = vault.blobs.read_pack_header(info.name, info.size)
    except (CorruptData, ObjectMissing):
        entries = []
    return _use(pack, entries, info.size, live)


def _decide(uses: List[PackUse], unindexed: List[PackUse], limit: MaxUnused, repack_small: bool,
            pack_size: int, live: "core.IdSet") -> Decision:
    d = Decision(packs=len(uses), bytes_total=sum(u.size for u in uses))
    d.bytes_used = sum(u.used for u in uses)
    d.bytes_unused = sum(u.unused for u in uses)
    chosen: List[PackUse] = [u for u in uses if u.used == 0]
    d.delete = [u.id for u in chosen]
    partly = sorted((u for u in uses if u.used and u.unused), key=lambda u: (-u.unused / u.size, u.id))
    excess = sum(u.unused for u in partly) - limit.allowed(d.bytes_used)
    repack = []
    for u in partly:
        if excess <= 0:
            break
        repack.append(u)
        excess -= u.unused
    if repack_small:
        chosen_ids = {u.id for u in repack}
        small = [u for u in uses if u.used and u.id not in chosen_ids and u.size < pack_size * SMALL_PACK]
        if len(small) + len(repack) > 1:
            repack += small
    d.repack = [u.id for u in repack]
    d.unindexed = [u.id for u in unindexed]
    condemned = chosen + repack + unindexed
    gone = {u.id for u in condemned}
    kept = core.IdSet()
    kept.update(b"".join(e.id for u in uses if u.id not in gone for e in u.entries))
    _blobs(d, condemned, uses + unindexed, live, kept)
    return d


def _blobs(d: Decision, condemned: List[PackUse], every: List[PackUse], live: "core.IdSet",
           kept: "core.IdSet") -> None:
    """The live blobs to copy out of the condemned packs (each once, and none a kept indexed pack holds:
    an unindexed pack's copy of it may be the damaged one that `repair --from` took out of the index), and
    the garbage: every blob of every pack that no retained point references (the plan's promise to writers:
    none of these is "known" to a writer that has seen it). All of them, not only those in condemned packs,
    so the argument of §10 needs no reasoning about which kept blob names which condemned one (a tree names
    its subtrees and chunks)."""
    copied, garbage = core.IdSet(), core.IdSet()
    for u in condemned:
        for e in u.entries:
            if e.id in live and e.id not in kept and copied.add(e.id):
                d.copy.append((u.id, e))
                d.bytes_copied += e.length
        d.bytes_freed += u.size
    d.bytes_freed -= d.bytes_copied
    for u in every:
        garbage.update(b"".join(e.id for e in u.entries if e.id not in live))
    d.garbage = garbage.dump()


# ---- copying, compaction ----------------------------------------------------------------------------
def copy_blobs(vault, blobs: List[Tuple[bytes, fmt.BlobEntry]], recompress: bool = False) -> int:
    """Copy blobs (pack, entry) into new packs, byte for byte (a sealed blob is self-contained: its salt
    and nonce travel with it), or with `recompress` opened and sealed again; then index the new packs.
    Returns the bytes copied. ObjectMissing if a source pack is gone."""
    by_pack: Dict[bytes, List[fmt.BlobEntry]] = {}
    for pack, e in blobs:
        by_pack.setdefault(pack, []).append(e)
    copied = 0
    for pack, entries in sorted(by_pack.items()):
        name = pack_name(pack)
        copied += copy_from_pack(vault, name, vault.blobs.get(name), entries, recompress)
    vault.blobs.flush()
    return copied


def copy_from_pack(vault, name: str, data: bytes, entries: List[fmt.BlobEntry], recompress: bool) -> int:
    """Queue `entries` of pack `name` (its bytes `data`) for new packs (see copy_blobs; the caller flushes).
    With `recompress` each is opened and sealed again by this process's session. Returns the bytes queued."""
    copied = 0
    for e in entries:
        sealed = data[e.offset:e.offset + e.length]
        if len(sealed) != e.length:
            raise CorruptData(f"pack {name} is truncated (blob {e.id.hex()[:16]} cut short)")
        if recompress:
            plain = vault.open_sealed(e.id, sealed, name, e.raw_length)
            sealed = vault.sealer.session.seal(e.id, plain, vault.settings.level)
        vault.add_sealed(e.type, e.id, sealed, e.raw_length)
        copied += len(sealed)
    return copied


def compact_index(vault, index: IndexView, drop: Set[bytes]) -> Tuple[List[str], int]:
    """Write index files for every pack `index` lists except `drop`, then delete the index files `index`
    listed (only those: a backup's index file written meanwhile stays). Returns (files written, deleted)."""
    written: List[str] = []
    batch: Dict[bytes, List[fmt.BlobEntry]] = {}
    count = 0
    for pack in sorted(p for p in index.packs if p not in drop):
        batch[pack] = index.packs[pack]
        count += len(batch[pack])
        if count >= INDEX_FILE_BLOBS:
            written.append(vault.blobs.store_index(batch))
            batch, count = {}, 0
    if batch:
        written.append(vault.blobs.store_index(batch))
    _test_hook("compacted")
    deleted = 0
    for name in index.files:
        if name not in written:
            vault.storage.delete(name)
            deleted += 1
            _test_hook("index-deleted")
    return written, deleted


def quarantine_refused(vault, progress: Progress) -> List[str]:
    """Take the packs a revoked host key stored after its revocation out of the index (under the lease):
    writers then no longer deduplicate against what it claims to hold, so the next backup of that data
    stores it again, and a point that had named one of its blobs is whole again once some backup has. Until
    then check names such points, and prune deletes nothing they miss. The packs stay on storage, unindexed,
    until a prune deletes them as garbage. Returns their names."""
    since = refusal_since(vault)
    if since is None:  # no host key stored anything after its revocation: the index is not read here
        return []
    index = read_index(vault)
    refused = set(refused_packs(vault, index.packs, since))
    if not refused:
        return []
    progress("problem", {"message": f"{len(refused)} pack(s) stored by a revoked host key after its revocation "
                                    "taken out of the index: a point that deduplicated against them misses those "
                                    "blobs until that data is backed up again ('recovault check' names them)"})
    compact_index(vault, index, refused)
    vault.blobs.reload_index()
    return [pack_name(p) for p in sorted(refused)]


# ---- phase 2 ------------------------------------------------------------------------------------------
def waiting_reason(plan: Plan, sessions, coord: Coordinator, margin: float) -> str:
    """Why `plan` cannot be carried out yet ("margin", "session"), or "" when it can. With margin 0 the
    operator vouches that no backup runs: sessions are not consulted."""
    if margin <= 0:
        return ""
    storage_now = coord.storage_now()
    if plan.age(coord.clock(), storage_now) < margin:
        return "margin"
    if any(s.live(storage_now, coord.host) and not s.has_seen(plan.name) for s in sessions):
        return "session"
    return ""


def _rescue(vault, index: IndexView, condemned: Set[bytes], on_storage: Dict[bytes, ObjectInfo],
            live: "core.IdSet") -> int:
    """Copy out of the condemned packs every referenced blob that no other pack holds (a backup that had
    not seen the plan when it started may reference its garbage; phase 2 sees its point). CorruptData,
    before anything is deleted, for a referenced blob no pack holds."""
    kept = core.IdSet()
    for pack, entries in index.packs.items():
        if pack not in condemned and pack in on_storage:
            kept.update(b"".join(e.id for e in entries))
    need = core.IdSet()
    need.update(b"".join(b for b in ids_of(live) if b not in kept))
    found: List[Tuple[bytes, fmt.BlobEntry]] = []
    for pack in sorted(condemned):
        if not len(need):
            break
        if pack not in on_storage:
            continue
        entries = index.packs.get(pack)
        if entries is None:  # no index lists it any more (a phase 2 interrupted after compacting)
            try:
                entries = vault.blobs.read_pack_header(on_storage[pack].name, on_storage[pack].size)
            except (CorruptData, ObjectMissing):
                continue  # nothing to take from it: what is still needed is reported below
        for e in entries:
            if need.discard(e.id):
                found.append((pack, e))
    if len(need):
        first = next(ids_of(need)).hex()[:16]
        raise CorruptData(f"{len(need)} blob(s) the recovery points reference are in no pack (first {first}): "
                          "prune deleted nothing; run 'recovault check'")
    if found:
        copy_blobs(vault, found)
    return len(found)


def _listed_again(vault, seen: Set[str], condemned: Set[bytes]) -> Set[bytes]:
    """Condemned packs an index file written since the listing names (a backup indexed a pack this plan
    took for unindexed): they stay."""
    keep: Set[bytes] = set()
    for name in vault.storage.list(fmt.INDEX):
        if name not in seen:
            try:
                keep.update(p for p in vault.blobs.read_index_file(name) if p in condemned)
            except ObjectMissing:
                continue
    return keep


def phase2(vault, coord: Coordinator, plan: Plan, progress: Progress,
           still_held: Callable[[], None] = lambda: None,
           locked: LockedSink = None) -> Tuple[PlanOutcome, List[str], int]:
    """Carry out `plan` (its readiness checked, and the sessions listed, by the caller): rescue, compact the
    index, delete the condemned packs, then the plan. `still_held()` raises if the lease may be lost; it is
    asked before each deleting step. A condemned pack the store keeps locked goes to `locked` (if given) and
    stays: no index lists it any more, so a later prune condemns it again (as unindexed) and deletes it once
    its lock has expired. Returns (outcome, index files written, deleted)."""
    progress("prune", {"step": f"carrying out plan {plan.name[:16]}"})
    live = _referenced(vault, retained_points(vault), progress)
    index = read_index(vault)
    condemned = set(plan.condemned)
    on_storage = _packs_on_storage(vault)
    out = PlanOutcome(plan.name, True)
    out.blobs_rescued = _rescue(vault, index, condemned, on_storage, live)
    _test_hook("rescued")
    still_held()
    written, deleted = compact_index(vault, index, condemned)
    keep = _listed_again(vault, set(index.files) | set(written), condemned)
    still_held()
    for pack in sorted(condemned - keep):
        info = on_storage.get(pack)
        if info is not None:
            try:
                vault.storage.delete(info.name)
            except ObjectLocked as exc:
                if locked is None:
                    raise
                locked.append(LockedObject(info.name, str(exc)))
                continue
            out.packs_deleted += 1
            out.bytes_deleted += info.size
            _test_hook("pack-deleted")
    coord.delete_plan(plan.name)
    vault.blobs.reload_index()  # this process's own view: the packs it located are gone
    return out, written, deleted


# ---- one run ------------------------------------------------------------------------------------------
def _remove_dead(coord: Coordinator, lease: LeaseHolder) -> int:
    """Delete dead sessions (crashed backups) and expired leases; returns the sessions removed."""
    storage_now, now = coord.storage_now(), coord.clock()
    dead = [s for s in coord.sessions() if not s.live(storage_now, coord.host)]
    for s in dead:
        coord.remove_session(s)
    for old in coord.leases():
        if old.name != lease.name and not old.held(now, coord.host):
            coord.delete_lease(old.name)
    return len(dead)


def _plans(coord: Coordinator, progress: Progress) -> List[Plan]:
    """The pending plans; a damaged one (no prune can carry it out, no writer heeds it) is reported and
    deleted: the packs it condemned are garbage a new plan takes."""
    plans = coord.plans()
    for name, reason in coord.damaged_plans:
        progress("problem", {"message": f"{reason}; deleted (it deleted nothing)"})
        coord.delete_plan(name)
    return plans


def run_prune(vault, opts: Optional[PruneOptions] = None, progress: Optional[Progress] = None,
              clock: Clock = time.time) -> PruneResult:
    """One prune (see the module docstring). Busy if another prune holds the lease; with `dry_run`, only
    the decision (and the pending plans' state), nothing written and no lease taken."""
    vault.require_admin()
    opts = opts or PruneOptions()
    progress = progress or (lambda kind, info: None)
    coord = Coordinator(vault.storage, vault.sealer, clock=clock)
    result = PruneResult(opts.dry_run, opts.margin)
    if opts.dry_run:
        pending, sessions = coord.plans(), coord.sessions()
        result.plans = [PlanOutcome(p.name, False, waiting_reason(p, sessions, coord, opts.margin) or "ready")
                        for p in pending]
        result.decision = plan_prune(vault, opts, pending, coord.storage_now(), progress)
        return result
    with LeaseHolder(coord) as lease:
        publish_lock_days(vault, lease_held=True)  # hosts follow a policy changed while a prune held the lease
        result.refused_packs = quarantine_refused(vault, progress)
        result.purged = vault.purge_expired(locked=result.locked)
        result.sessions_removed = _remove_dead(coord, lease)
        for plan in _plans(coord, progress):
            sessions = coord.sessions()  # before phase 2 lists the recovery points
            reason = waiting_reason(plan, sessions, coord, opts.margin)
            if reason:
                result.plans.append(PlanOutcome(plan.name, False, reason))
            else:
                _record(result, phase2(vault, coord, plan, progress, lease.ensure, result.locked))
        result.decision, new = _phase1(vault, coord, opts, progress, lease.ensure)
        if new is not None:
            result.new_plan = new.name
            if opts.margin <= 0:
                _record(result, phase2(vault, coord, new, progress, lease.ensure, result.locked))
        if not any(p.done for p in result.plans):
            index = read_index(vault)
            if len(index.files) > COMPACT_OVER:
                _record(result, (None, *compact_index(vault, index, set())))
    return result


def _record(result: PruneResult, done: Tuple[Optional[PlanOutcome], List[str], int]) -> None:
    outcome, written, deleted = done
    if outcome is not None:
        result.plans.append(outcome)
    result.index_files_written += len(written)
    result.index_files_deleted += deleted


def _phase1(vault, coord: Coordinator, opts: PruneOptions, progress: Progress,
            still_held: Callable[[], None]) -> Tuple[Decision, Optional[Plan]]:
    """Decide, copy the live blobs of the packs to repack (now, so the plan's garbage is exactly what no
    point referenced), and write the plan; no plan when there is nothing to delete."""
    d = plan_prune(vault, opts, coord.plans(), coord.storage_now(), progress)
    if not d.condemned:
        return d, None
    progress("prune", {"step": f"repacking: copying {len(d.copy)} live blob(s)"})
    copy_blobs(vault, d.copy, opts.recompress)
    _test_hook("repacked")
    still_held()
    plan = Plan(timefmt.now(), coord.host, d.condemned, d.garbage, d.points)
    coord.put_plan(plan)
    _test_hook("planned")
    return d, plan


# ---- status -------------------------------------------------------------------------------------------
@dataclass
class VaultStatus:
    """What `recovault status` shows: the vault, its points, and the objects of §10 (a prune's lease, the
    running backups' sessions, the pending plans)."""
    url: str
    id: str
    format_version: int
    points: int
    soft_deleted: int  # soft-deleted points, expired or not (purged by the next prune)
    lease: Optional[Dict[str, Any]]
    sessions: List[Dict[str, Any]]
    dead_sessions: int
    plans: List[Dict[str, Any]]

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


def vault_status(vault, clock: Clock = time.time) -> VaultStatus:
    coord = Coordinator(vault.storage, vault.sealer, clock=clock)
    held = coord.held_leases()
    sessions = coord.sessions()
    live = [s for s in sessions if s.live(coord.storage_now(), coord.host)]
    plans = [{"name": p.name, "time": p.time, "host": p.host, "packs": len(p.condemned),
              "blobs_garbage": len(p.garbage) // 32,
              "waiting_for": [s.name for s in live if not s.has_seen(p.name)]} for p in coord.plans()]
    n_live, n_deleted = lifecycle.counts(vault, on_corrupt=lambda msg: None)  # one listing of the points
    return VaultStatus(vault.storage.url, vault.id, vault.format_version, n_live, n_deleted,
                       held[0].to_json() if held else None, [s.to_json() for s in live],
                       len(sessions) - len(live), plans)
