"""`repair --from REPLICA`: restore what is damaged or missing in a vault from another vault that holds the
same recovery points (a `copy` target or source), blob by blob (docs/vault-format.md §10.4).

What counts as damaged: a pack the index lists that is missing, or whose bytes do not match its name (then
each of its blobs is opened: those that fail are lost, the others intact); a blob a recovery point references
that no index lists; a recovery point object the journal logs that is missing or does not open.

The repair is a writer (§10.1: a session, pending plans' garbage never taken as present) and works in this
order, each step idempotent, so a kill -9 anywhere leaves a valid vault and a rerun finishes the job:

1. read every pack the index lists (as `check --read-data` does) and find the lost blobs (a damaged index
   file is replaced first, as `repair index` does);
2. copy the intact blobs of damaged packs that no sound pack holds, byte for byte, into new packs (a damaged
   pack leaves the index in step 5, and must not take what it still holds with it);
3. fetch the lost blobs from the replica into new packs, then index them. With the same keys (`init
   --copy-keys-from`) a blob is found by its chunk ID and moved sealed as it is; with other keys, each
   recovery point that lost something is rebuilt from the replica's copy of it (the same point by origin,
   jobs/copy.py) re-encoded bottom up: the blobs it lacks are stored, and its root must come out as the
   point's own tree ID (else the replica's copy differs and nothing of it is trusted). The trees are walked
   again after each round, to find the blobs below a tree that was itself lost;
4. put back the recovery point objects that are missing or damaged (same keys only: the object is the same
   bytes, under the same name);
5. only then take the damaged packs out of the index (prune's compaction: new index files first, then the
   old ones deleted), each once every blob it listed has a sound copy or is referenced by no point. The
   pack objects stay on storage, unindexed, for the normal prune to delete: nothing here deletes data.

A rerun finds the lost blobs indexed in sound packs (nothing to fetch) and finishes step 5.

A dry run (`dry_run=True`, `repair --from REPLICA --dry-run`) does all of the above on a copy-on-write view
of the vault's storage (storage/overlay.py: reads go to the vault, every write to a scratch directory under
TMPDIR, dropped at the end), through a second `Vault` over that view with the same keys and no agent cache.
So its report is what a real run would do, not an estimate: the index rebuilt first if an index file is
damaged, the blobs below a lost tree found by walking the restored tree, a point re-encoded and its root
compared, the packs that would leave the index. Nothing reaches the vault's storage (no session, pack,
index file, point or journal entry) nor the caller's `Vault` object. Its costs: the reads of a real run
(every indexed pack, the replica's blobs), and scratch space for what a real run would store. What it
cannot foresee is what changes between it and the real run (another writer, more damage, the replica).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

from .. import core
from ..errors import CorruptData, ObjectMissing, RecovaultError, store_failed
from . import format as fmt
from .blobstore import pack_name
from .reach import ZERO_ID
from .records import Node, RecoveryPoint
from .repo import Vault
from ..storage.overlay import OverlayStorage

Progress = Callable[[str, Dict[str, Any]], None]
MAX_ROUNDS = 64  # tree levels a repair descends, a round each (a lost tree hides what lies below it)


class DamagedPack(NamedTuple):
    """A pack the index lists that is missing or damaged, and how many of its blobs were lost."""
    pack: str  # its object name
    reason: str
    lost_blobs: int

    def to_json(self) -> Dict[str, Any]:
        return self._asdict()


@dataclass
class FromRepair:
    """What `repair_from` did (with `dry_run`: would do). `lacking`: one message per thing it could not
    restore (the replica lacks it, or holds it damaged too); empty when the vault is whole again."""
    vault: str
    replica: str
    mode: str  # "sealed" (same keys: blobs moved as they are) or "re-encoded"
    index_rebuilt: bool = False  # an index file was damaged: the index was rebuilt first (repair index)
    packs_read: int = 0
    damaged_packs: List[DamagedPack] = field(default_factory=list)
    rescued_blobs: int = 0  # intact blobs copied out of damaged packs
    restored_blobs: int = 0  # blobs fetched from the replica
    restored_bytes: int = 0
    restored_points: List[str] = field(default_factory=list)  # recovery point objects put back
    dropped_packs: List[str] = field(default_factory=list)  # taken out of the index (prune deletes them)
    incomplete_points: List[str] = field(default_factory=list)  # ids of the points still missing data after it
    lacking: List[str] = field(default_factory=list)
    dry_run: bool = False  # nothing was written: every field says what a real run would do

    def to_json(self) -> Dict[str, Any]:
        doc = dict(self.__dict__)
        doc["damaged_packs"] = [d.to_json() for d in self.damaged_packs]
        return doc


class _Scan(NamedTuple):
    """Step 1: the index as stored, the damaged packs, and per blob of theirs whether it is intact."""
    index: Any  # jobs.prune.IndexView
    damaged: Dict[bytes, str]  # pack -> reason
    intact: Dict[bytes, Tuple[bytes, fmt.BlobEntry]]  # blob -> (pack, entry): an intact copy in a damaged pack
    lost: Set[bytes]  # blobs of damaged packs with no intact copy anywhere
    sound: Set[bytes]  # blobs some sound pack holds


def repair_from(vault: Vault, replica: Vault, progress: Optional[Progress] = None,
                dry_run: bool = False) -> FromRepair:
    """Restore what `vault` lost from `replica` (see the module docstring); the report says what, and what
    could not be restored (`lacking`). `dry_run`: write nothing to `vault`, report what a real run would do."""
    if dry_run:
        with _shadow(vault) as shadow:
            report = repair_from(shadow, replica, progress)
        report.dry_run = True
        return report
    from ..jobs.copy import CopyResult, _Copier, shares_keys
    from .coordination import Coordinator, WriterSession
    progress = progress or (lambda kind, info: None)
    report = FromRepair(vault.storage.url, replica.storage.url, "sealed" if shares_keys(replica, vault) else "re-encoded")
    vault.prepare_write()
    session = WriterSession(Coordinator(vault.storage, vault.sealer))
    try:
        for plan in session.open():  # before the index is read (§10.1)
            vault.blobs.exclude(plan.garbage)
        copier = _Copier(replica, vault, session, CopyResult(replica.storage.url, vault.storage.url, report.mode),
                         progress)
        _Repair(vault, replica, copier, report, progress).run()
    finally:
        session.close()
    return report


def _shadow(vault: Vault) -> Vault:
    """`vault` over a copy-on-write view of its storage (the same keys, no agent cache): what it writes stays
    in a scratch directory, dropped when it is closed. An upgrade of an older format happens there too: its
    notice says a real run would do it."""
    def on_event(kind: str, info: Dict[str, Any]) -> None:
        if kind == "notice" and "upgrade" in info:
            info = {**info, "message": f"a real run would first upgrade the vault ({info['message']})"}
        vault.on_event(kind, info)
    return type(vault)(OverlayStorage(vault.storage), vault.master, vault.keyid, vault.id, vault.settings, None,
                       on_event, vault.config, host=vault.host_key)


class _Repair:
    def __init__(self, vault: Vault, replica: Vault, copier: Any, report: FromRepair, progress: Progress) -> None:
        self.vault, self.replica, self.copier, self.report, self.progress = vault, replica, copier, report, progress
        self.sealed = report.mode == "sealed"
        self.fetched: Set[bytes] = set()  # blobs this run stored (rescued or from the replica)
        self.lacking: Set[bytes] = set()  # lost blobs the replica cannot give
        self.broken_points: Set[str] = set()  # points whose replica copy could not be used

    def run(self) -> None:
        from ..jobs.prune import compact_index, read_index
        scan = self.scan = self._scan()
        self._rescue(scan)
        self._restore_points()
        self._restore_blobs(scan.lost)
        walk = self._rounds(scan.lost)
        drop = self._droppable(scan, walk)
        if drop:
            self.progress("step", {"step": "taking damaged packs out of the index"})
            compact_index(self.vault, read_index(self.vault), drop)
            self.report.dropped_packs = sorted(pack_name(p) for p in drop)
        needed = sorted(b for b in self.lacking if walk.unreadable or b in walk.refs)
        hurt = [p for p in self._points() if not walk.tree_ok(bytes.fromhex(p.tree))]
        self.report.incomplete_points = [p.id for p in hurt]
        if needed:  # a lost blob no recovery point references is no loss
            self.report.lacking.insert(0, f"{len(needed)} blob(s) the recovery points reference could not be "
                                          f"restored (first {needed[0].hex()[:16]}); recovery point(s) still "
                                          f"missing data: {' '.join(p.short_id for p in hurt)}")

    # ---- 1: what is damaged ---------------------------------------------------------------------------
    def _scan(self) -> _Scan:
        from ..jobs.prune import read_index
        v = self.vault
        try:
            index = read_index(v)
        except CorruptData:  # a damaged index file: rebuilt from the packs first (repair index), then read
            from .repair import repair_index
            self.progress("step", {"step": "rebuilding the index from the packs (an index file is damaged)"})
            repair_index(v.blobs)
            self.report.index_rebuilt = True
            v.blobs.reload_index()
            index = read_index(v)
        on_storage = {n for n in v.storage.list(fmt.DATA)}
        damaged: Dict[bytes, str] = {}
        intact: Dict[bytes, Tuple[bytes, fmt.BlobEntry]] = {}
        lost: Set[bytes] = set()
        present = [pack_name(p) for p in sorted(index.packs) if pack_name(p) in on_storage]
        for p in index.packs:
            if pack_name(p) not in on_storage:
                damaged[p] = "missing from storage"
        self.progress("plan", {"files": len(present), "bytes": 0, "final": True})
        for name, data in v.blobs.get_many(present):
            pack = bytes.fromhex(fmt.name_to_id(name))
            if isinstance(data, RecovaultError):
                if store_failed(data):
                    raise data  # not known to be damaged
                damaged[pack] = "missing from storage"
                continue
            self.report.packs_read += 1
            self.progress("file", {"path": name, "bytes": 0})
            if core.blake3(data).hex() != fmt.name_to_id(name):
                damaged[pack] = "content does not match its name"
                for e in index.packs[pack]:
                    sealed = data[e.offset:e.offset + e.length]
                    if self._opens(e, sealed, name):
                        intact.setdefault(e.id, (pack, e))
        sound = {e.id for p, es in index.packs.items() if p not in damaged for e in es}
        for p in damaged:
            lost.update(e.id for e in index.packs[p] if e.id not in sound and e.id not in intact)
        for p, reason in sorted(damaged.items()):
            n = sum(1 for e in index.packs[p] if e.id in lost)
            self.report.damaged_packs.append(DamagedPack(pack_name(p), reason, n))
        return _Scan(index, damaged, intact, lost, sound)

    def _opens(self, e: fmt.BlobEntry, sealed: bytes, name: str) -> bool:
        if len(sealed) != e.length:
            return False
        try:
            return self.vault.chunk_id(self.vault.open_sealed(e.id, sealed, name, e.raw_length)) == e.id
        except CorruptData:
            return False

    # ---- 2: intact blobs out of damaged packs -----------------------------------------------------------
    def _rescue(self, scan: _Scan) -> None:
        """Copy them byte for byte, reading each damaged pack once more (a pack at a time in memory)."""
        by_pack: Dict[bytes, List[fmt.BlobEntry]] = {}
        for blob_id, (pack, e) in scan.intact.items():
            if blob_id not in scan.sound:
                by_pack.setdefault(pack, []).append(e)
        for pack, entries in sorted(by_pack.items()):
            name = pack_name(pack)
            data = self.vault.blobs.get(name)
            for e in entries:
                sealed = data[e.offset:e.offset + e.length]
                if self._opens(e, sealed, name):  # as it was when the scan read it
                    self.vault.add_sealed(e.type, e.id, sealed, e.raw_length)
                    self.fetched.add(e.id)
                    self.report.rescued_blobs += 1
        self.vault.flush()

    # ---- 3: lost blobs from the replica -------------------------------------------------------------
    def _restore_blobs(self, lost: Iterable[bytes]) -> None:
        """Sealed: fetch `lost` by ID. Re-encoded: nothing here (a lost ID names nothing in the replica);
        `_rounds` rebuilds the points that lost them."""
        todo = sorted(b for b in lost if b not in self.fetched and b not in self.lacking)
        if not todo:
            return
        if not self.sealed:
            self.vault.known.difference_update(b"".join(todo))  # stored again when a rebuilt point needs them
            return
        self.progress("step", {"step": f"fetching {len(todo)} blob(s) from the replica"})
        there = self.replica.locations
        for blob_id in todo:
            if blob_id not in there:
                self.lacking.add(blob_id)
        by_pack: Dict[bytes, List[Tuple[bytes, Any]]] = {}
        for blob_id in todo:
            loc = there.get(blob_id)
            if loc is not None:
                by_pack.setdefault(loc.pack, []).append((blob_id, loc))
        for pack, blobs in sorted(by_pack.items()):
            self._fetch_pack(pack, sorted(blobs, key=lambda t: t[1].offset))
        self.vault.flush()

    def _fetch_pack(self, pack: bytes, blobs: List[Tuple[bytes, Any]]) -> None:
        from ..jobs.copy import _runs
        name = pack_name(pack)
        for run in _runs(blobs):
            try:
                got = list(self.copier._read_run(pack, run))
            except (CorruptData, ObjectMissing) as e:
                self.report.lacking.append(f"the replica's pack {name}: {e}")
                self.lacking.update(b for b, _ in run)
                continue
            for blob_id, loc, raw in got:
                try:
                    self.replica.open_sealed(blob_id, raw, name, loc.raw_length)
                except CorruptData:
                    self.report.lacking.append(f"blob {blob_id.hex()[:16]} is damaged in the replica too ({name})")
                    self.lacking.add(blob_id)
                    continue
                self.vault.add_sealed(loc.type, blob_id, raw, loc.raw_length)
                self.fetched.add(blob_id)
                self.report.restored_blobs += 1
                self.report.restored_bytes += len(raw)

    def _rounds(self, lost: Set[bytes]) -> "_Walk":
        """Walk the points' trees; restore what the walk finds missing; again until a walk finds nothing new
        (a restored tree may name blobs that were lost too)."""
        for _ in range(MAX_ROUNDS):
            walk = _Walk(self.vault, (lost - self.fetched) | self.lacking)
            points = self._points()
            for p in points:
                walk.tree_ok(bytes.fromhex(p.tree))
            new = walk.missing - self.fetched - self.lacking
            if self.sealed:
                if not new:
                    return walk
                self._restore_blobs(new)
                continue
            hurt = [p for p in points if not walk.tree_ok(bytes.fromhex(p.tree)) and p.id not in self.broken_points]
            if not hurt:
                return walk
            self._rebuild(hurt, walk.missing | (lost - self.fetched))
        return walk

    def _rebuild(self, points: List[RecoveryPoint], missing: Set[bytes]) -> None:
        """Re-encoded: rebuild each of `points` from the replica's copy of it (by origin)."""
        from ..jobs.copy import origin
        self.vault.known.difference_update(b"".join(sorted(missing)))
        theirs = {origin(p): p for p in self.replica.points.list(on_corrupt=lambda m: None)}
        for p in points:
            self.broken_points.add(p.id)
            twin = theirs.get(origin(p))
            if twin is None:
                self.report.lacking.append(f"recovery point {p.short_id}: the replica has no copy of it")
                continue
            self.progress("step", {"step": f"rebuilding recovery point {p.short_id} from the replica"})
            before = self.copier.result.blobs_copied, self.copier.result.bytes_copied
            try:
                root = self.copier._reencode_tree(bytes.fromhex(twin.tree))
            except RecovaultError as e:
                if store_failed(e):
                    raise
                self.report.lacking.append(f"recovery point {p.short_id}: its copy in the replica is damaged: {e}")
                continue
            self.report.restored_blobs += self.copier.result.blobs_copied - before[0]
            self.report.restored_bytes += self.copier.result.bytes_copied - before[1]
            if root.hex() != p.tree:
                self.report.lacking.append(f"recovery point {p.short_id}: the replica's copy of it ({twin.short_id}) "
                                           "holds other trees; nothing of it was used")
        self.vault.flush()
        damaged = self.scan.damaged
        for b in missing:  # stored again now: its location is a new pack's
            loc = self.vault.locations.get(b)
            if loc is not None and loc.pack not in damaged:
                self.fetched.add(b)

    def _points(self) -> List[RecoveryPoint]:
        """Every recovery point object that opens (live, soft-deleted and not yet purged)."""
        return self.vault.points.list(on_corrupt=lambda m: None)

    # ---- 4: recovery point objects ------------------------------------------------------------------
    def _restore_points(self) -> None:
        """Put back the point objects the journal logs (live or soft-deleted) that are missing or damaged."""
        v = self.vault
        v.journal.refresh()
        stored = set(v.points.ids())
        for sid, st in sorted(v.journal.states().items()):
            if not (st.live or st.state == "deleted"):
                continue
            if sid in stored:
                try:
                    v.points.load(sid)
                    continue
                except CorruptData:
                    pass
            self._restore_point(sid)

    def _restore_point(self, sid: str) -> None:
        if not self.sealed:
            self.report.lacking.append(f"recovery point {sid[:8]}: missing or damaged here, and the replica has other "
                                       "keys (its copy has another id): 'recovault copy --from REPLICA' copies it")
            return
        name = fmt.SNAPSHOTS + sid
        try:
            raw = self.replica.storage.get(name)
            self.vault.sealer.open_named(fmt.AAD_SNAPSHOT, raw, sid, f"recovery point {sid[:8]}")
        except (CorruptData, ObjectMissing) as e:
            self.report.lacking.append(f"recovery point {sid[:8]}: the replica cannot give it ({e})")
            return
        self.vault.storage.put(name, raw)  # the object's own bytes (its name is their hash): atomic, idempotent
        self.report.restored_points.append(sid)

    # ---- 5: the damaged packs out of the index --------------------------------------------------------
    def _droppable(self, scan: _Scan, walk: "_Walk") -> Set[bytes]:
        """The damaged packs whose every blob now has a sound copy, or (when every tree could be walked) is
        referenced by no recovery point: the index may forget them."""
        if not scan.damaged:
            return set()
        v = self.vault
        v.load_index()
        safe = scan.sound | self.fetched
        complete = not walk.unreadable
        refs = walk.refs
        drop = set()
        for p in scan.damaged:
            if all(e.id in safe or (complete and e.id not in refs) for e in scan.index.packs[p]):
                drop.add(p)
        return drop


class _Walk:
    """The trees of recovery points walked (each once): every blob they reference (`refs`), those no sound
    copy of which is known (`missing`: in `lost`, or no index lists them), and whether each tree is whole."""

    def __init__(self, vault: Vault, lost: Set[bytes]) -> None:
        self.vault, self.lost = vault, lost
        self.ok: Dict[bytes, bool] = {}
        self.refs = core.IdSet()
        self.missing: Set[bytes] = set()
        self.unreadable: Set[bytes] = set()  # trees and pages that could not be read: their subtrees unknown

    def _gone(self, blob_id: bytes) -> bool:
        self.refs.add(blob_id)
        if blob_id in self.lost or blob_id not in self.vault.locations:
            self.missing.add(blob_id)
            return True
        return False

    def _read(self, blob_id: bytes, read: Callable[[bytes], Any]) -> Any:
        if self._gone(blob_id):
            self.unreadable.add(blob_id)
            return None
        try:
            return read(blob_id)
        except RecovaultError as e:
            if store_failed(e):
                raise
            self.missing.add(blob_id)
            self.unreadable.add(blob_id)
            return None

    def tree_ok(self, root: bytes) -> bool:
        """Whether everything under tree `root` is there (post-order over an explicit stack: any depth)."""
        stack: List[Tuple[bytes, Optional[List[Node]]]] = [(root, None)]
        while stack:
            tree_id, nodes = stack[-1]
            if tree_id in self.ok:
                stack.pop()
                continue
            if nodes is None:
                nodes = self._read(tree_id, self.vault.load_nodes)
                if nodes is None:
                    self.ok[tree_id] = False
                    stack.pop()
                    continue
                stack[-1] = (tree_id, nodes)
                todo = [bytes.fromhex(n.subtree) for n in nodes if n.subtree is not None]
                todo = [s for s in todo if s not in self.ok]
                if todo:
                    stack.extend((s, None) for s in todo)
                    continue
            stack.pop()
            self.ok[tree_id] = all([self._node_ok(n) for n in nodes])
        return self.ok[root]

    def _node_ok(self, node: Node) -> bool:
        ok = node.subtree is None or self.ok[bytes.fromhex(node.subtree)]
        for c in node.content or ():
            ok = not self._gone(bytes.fromhex(c)) and ok
        for page_hex in (node.image or {}).get("pages", []):
            page = self._read(bytes.fromhex(page_hex), self.vault.read_blob)
            if page is None:
                ok = False
                continue
            for i in range(0, len(page), 32):
                block = page[i:i + 32]
                if block != ZERO_ID:
                    ok = not self._gone(block) and ok
        return ok
