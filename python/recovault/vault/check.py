"""Vault verification: structure (every index file as stored, every recovery point's trees and chunks are
located, every indexed pack exists with the right size), and optionally data (read packs, check their names =
BLAKE3 of their bytes, decrypt their headers and every blob).

A damaged index file does not stop a check: it is a problem, the packs no good index lists are read from
their own headers, and the report says which recovery points are still fully restorable."""
from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple, Union

from .. import core
from ..errors import CorruptData, RecovaultError, UsageError, store_failed
from . import format as fmt
from .blobstore import pack_id_of
from .coordination import LEASE_TERM, SESSION_TIMEOUT, Coordinator
from .hostkeys import session_salt
from .journal import audit
from .keys import KeyStore
from .reach import ZERO_ID
from .records import Node
from .repo import Vault

if TYPE_CHECKING:
    from ..storage.ec_scan import ShardScan

FILES_NAMED = 20  # paths a missing pack's finding lists (its message names the first few; files_total counts all)
_UNINDEXED = b""  # the key of the blobs no index lists (their pack is unknown: lost, then the index rebuilt)


def _damage_only(e: RecovaultError) -> None:
    """Raise ``e`` when the storage failed (``errors.store_failed``): an object check could not read is not
    known to be damaged, and check stops with that error rather than report damage or send anyone to repair."""
    if store_failed(e):
        raise e


@dataclass
class MissingPack:
    """One finding for one pack the index lists but the storage lacks (`pack` None: the referenced blobs no
    index lists at all, as after a pack was lost and the index rebuilt): what it takes away, once, instead
    of a line per tree or chunk."""
    pack: Optional[str]  # hex id, or None for the blobs no index lists
    blobs: int = 0  # blobs lost: those the index locates in the pack, or the unindexed ones referenced
    points: List[str] = field(default_factory=list)  # ids of the recovery points that reference them
    files: List[str] = field(default_factory=list)  # the first FILES_NAMED paths affected, sorted; a directory
    # whose own tree is lost ends with "/" (all it held is affected)
    files_total: int = 0
    every_file: List[str] = field(default_factory=list, repr=False)  # all of them (check --verbose; not in JSON)

    def message(self) -> str:
        what = (f"pack {self.pack} is listed in the index but missing from storage ({self.blobs} blob(s))"
                if self.pack else f"{self.blobs} blob(s) the recovery points reference are in no index (their pack "
                "is missing)")
        shown = ", ".join(self.files[:5]) + (f", and {self.files_total - 5} more" if self.files_total > 5 else "")
        if not self.points:
            return f"{what}: no recovery point whose trees could be read references them"
        return (f"{what}: {len(self.points)} recovery point(s) reference them ({' '.join(p[:8] for p in self.points)})"
                + (f"; {self.files_total} path(s) affected: {shown}" if self.files_total else ""))

    def to_json(self) -> Dict[str, Any]:
        doc = asdict(self)
        del doc["every_file"]
        return doc


class _Hit(NamedTuple):
    """An entry of a tree that lost data: a file (or a directory whose tree is lost) and the packs it lost
    (`packs`), or a directory below which something did (`subtree`)."""
    name: bytes
    subtree: Optional[bytes]
    packs: Tuple[bytes, ...]


class Checker:
    def __init__(self, vault: Vault, progress: Optional[Callable[[str, Dict[str, Any]], None]] = None) -> None:
        vault.require_admin()
        self.vault = vault
        self.progress = progress or (lambda kind, info: None)
        self.problems: List[str] = []
        self.warnings: List[str] = []
        self.damaged_indexes: List[str] = []
        self.damaged_points: List[str] = []
        self.recovered_packs: List[str] = []  # packs no good index lists, located by their own headers
        self.stats: Dict[str, int] = {"snapshots": 0, "indexes": 0, "trees": 0, "packs": 0, "packs_read": 0,
                                      "blobs_read": 0, "packs_recovered": 0, "restorable": 0}
        self._tree_ok: Dict[bytes, bool] = {}
        self._refs = core.IdSet()  # every blob a recovery point references (trees, chunks, pages, blocks)
        self._entries: Dict[bytes, List[fmt.BlobEntry]] = {}  # what the good index files list, by pack
        self.garbage: Dict[str, int] = {}
        # Lost data, reported once per pack (missing_packs): the packs gone, the trees whose own blob is in
        # one, and per tree its entries that lost data (_Hit), to name the paths once every point is walked.
        self._missing: Dict[bytes, MissingPack] = {}
        self._lost_trees: Dict[bytes, bytes] = {}
        self._hits: Dict[bytes, List[_Hit]] = {}
        self._unindexed: Set[bytes] = set()
        self._point_roots: Dict[str, bytes] = {}
        self.shard_scan: "Optional[ShardScan]" = None  # an erasure-coded vault's shards (_shards)

    def problem(self, msg: str) -> None:
        self.problems.append(msg)
        self.progress("problem", {"message": msg})

    def run(self, read_data: bool = False, subset: Optional[str] = None) -> Dict[str, Any]:
        if subset:
            self._parse_subset(subset)  # a malformed argument fails before the work, not after
        # Packs are listed before index files: a concurrent backup stores a pack before the index naming it,
        # so every pack seen here that a finished backup stored is named by an index listed after it.
        self._keys()
        on_storage = self._packs_on_storage()
        listed = self._index_files()
        self._listed_packs(listed, on_storage)
        condemned = self._condemned()
        recovered = self._unlisted_packs(listed, {p: n for p, n in on_storage.items() if p not in condemned})
        self._points()
        self._session_keys()
        self._report_missing()
        self._garbage(listed, on_storage, condemned)
        if read_data or subset:
            packs = sorted(set(listed) | recovered)
            names = [on_storage[p] for p in (self._subset(packs, subset) if subset else packs) if p in on_storage]
            size = {name: listed.get(pack_id_of(name) or b"", 0) for name in names}  # the bytes its blobs take
            self.progress("plan", {"files": len(names), "bytes": sum(size.values()), "final": True})
            for name, data in self.vault.blobs.get_many(names):  # fetched on --connections threads, ahead
                self._read_pack(name, data)
                self.progress("file", {"path": name, "bytes": size[name]})
        shards = self._shards(read_data)
        return {"ok": not self.problems, "problems": self.problems, "warnings": self.warnings,
                "stats": self.stats, "damaged_indexes": self.damaged_indexes,
                "damaged_points": self.damaged_points, "recovered_packs": self.recovered_packs,
                "garbage": self.garbage, "missing_packs": [m.to_json() for m in self.missing_packs()],
                "shards": shards.to_json() if shards is not None else None}

    # ---- an erasure-coded vault's shards ----------------------------------------------------------------
    def _shards(self, read_data: bool) -> "Optional[ShardScan]":
        """On an erasure-coded vault, every shard at every location (headers; with `read_data` every block):
        what is lost is redundancy, not data (the vault reads around it), so it is reported as warnings
        pointing to `recovault repair`; an object too damaged to read is a problem where the vault uses it."""
        from ..storage.ec_repair import erasure_of
        from ..storage.ec_scan import scan_set
        ec = erasure_of(self.vault.storage)
        if ec is None:
            return None
        self.shard_scan = scan_set(ec, read_data=read_data)
        self.warnings.extend(self.shard_scan.warnings())
        return self.shard_scan

    # ---- key files ------------------------------------------------------------------------------------
    def _keys(self) -> None:
        """Every key file parses and matches its digest (vault-format §3): the vault opened with one key, so
        damage to another (or to this one's digest alone, which still opens) would be found only by whoever
        needs that key next."""
        infos = KeyStore(self.vault.storage).list()
        self.stats["keys"] = len(infos)
        for info in infos:
            if info.problem:
                self.problem(info.problem)

    def _session_keys(self) -> None:
        """Format 3: a session key object that does not open, or is signed by a key the keyring does not list,
        is reported (planted, or damaged); the blobs of its session are read under the master key, and any
        that does not open is a problem found by reading them (--read-data)."""
        resolver = self.vault.sealer.resolver
        if resolver is None:
            return
        bad = []
        for name in self.vault.storage.list(fmt.SESSION_KEYS):
            salt = session_salt(name)
            if salt is not None and resolver.known(salt) is None and salt in resolver.refusals:
                self.problem(f"session key object {name}: {resolver.refusals[salt]}: its blobs, trees and "
                             "recovery point are refused")
            elif salt is None or resolver.known(salt) is None:
                bad.append(name)
        if bad:
            self.warnings.append(f"{len(bad)} session key object(s) do not open or are not signed by a key of the "
                                 f"keyring ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): planted or "
                                 "damaged; their sessions' blobs open only if sealed under the master key")

    # ---- garbage: what prune reclaims, not damage ------------------------------------------------------
    def _condemned(self) -> Set[bytes]:
        """The packs pending prune plans condemn (deleted after their margin: garbage, whether or not an
        index still lists them). A plan that does not open is a problem."""
        coord = Coordinator(self.vault.storage, self.vault.sealer)
        plans = coord.plans()
        for name, reason in coord.damaged_plans:
            self.warnings.append(f"{reason}: it deletes nothing (the next prune removes it)")
        self._sessions_and_leases(coord)
        self.garbage["pending_plans"] = len(plans)
        return {p for plan in plans for p in plan.condemned}

    def _sessions_and_leases(self, coord: Coordinator) -> None:
        """A backup session or a prune lease that does not open holds no data, but holds prune back (vault-format
        §10.2): a warning each, saying for how long."""
        coord.sessions()
        coord.leases()
        for found, what, until in ((coord.damaged_sessions, "session", "counts as a running backup that has seen "
                                    f"no plan (every prune plan waits) until it is {SESSION_TIMEOUT // 60} minutes "
                                    "old"), (coord.damaged_leases, "lease", "counts as a prune holding the lease "
                                             f"until {LEASE_TERM // 60} minutes after it was stored")):
            for name, err in found:
                if isinstance(err, RecovaultError):
                    _damage_only(err)
                self.warnings.append(f"{what} {name} does not open ({err}): it {until}; then the next "
                                     "prune deletes it")

    def _garbage(self, listed: Dict[bytes, int], on_storage: Dict[bytes, str], condemned: Set[bytes]) -> None:
        """Count what prune would reclaim: packs condemned by pending plans, packs no index lists, and (when
        every recovery point was read) indexed blobs no point references."""
        size = {p: self.vault.storage.stat(n).size for p, n in on_storage.items() if p in condemned or p not in listed}
        g = self.garbage
        g["condemned_packs"] = sum(1 for p in condemned if p in on_storage)
        g["condemned_bytes"] = sum(size[p] for p in condemned if p in on_storage)
        unlisted = [p for p in on_storage if p not in listed and p not in condemned]
        g["unindexed_packs"], g["unindexed_bytes"] = len(unlisted), sum(size[p] for p in unlisted)
        if self.damaged_points or self.damaged_indexes:
            return  # what the damaged points reference is unknown: no blob can be called unreferenced
        unused = [e for p, es in self._entries.items() if p not in condemned for e in es if e.id not in self._refs]
        g["unreferenced_blobs"], g["unreferenced_bytes"] = len(unused), sum(e.length for e in unused)
        g["unreferenced_packs"] = sum(1 for p, es in self._entries.items()
                                      if p not in condemned and es and all(e.id not in self._refs for e in es))

    # ---- packs and index files ------------------------------------------------------------------
    def _packs_on_storage(self) -> Dict[bytes, str]:
        on_storage = {}
        for name in self.vault.storage.list(fmt.DATA):
            pack = pack_id_of(name)
            if pack is None:
                self.warnings.append(f"unexpected object {name} under data/")
            else:
                on_storage[pack] = name
        self.stats["packs"] = len(on_storage)
        return on_storage

    def _index_files(self) -> Dict[bytes, int]:
        """Every index file as stored (the vault may have been opened from the agent cache, which hides a
        damaged one from this host but not from the next): pack -> bytes its entries need, from the good ones.
        The packs an index file lists, not the blob locations: a blob stored twice (two backups running at
        once) has one location, yet both its packs are listed."""
        v = self.vault
        listed: Dict[bytes, int] = {}
        for name in v.storage.list(fmt.INDEX):
            try:
                packs = v.blobs.read_index_file(name)
            except RecovaultError as e:
                _damage_only(e)
                self.damaged_indexes.append(name)
                self.problem(str(e))
                continue
            self.stats["indexes"] += 1
            for pack, entries in packs.items():
                self._entries.setdefault(pack, entries)
                end = max((e.offset + e.length for e in entries), default=0)
                listed[pack] = max(listed.get(pack, 0), end)
        return listed

    def _listed_packs(self, listed: Dict[bytes, int], on_storage: Dict[bytes, str]) -> None:
        """Packs an index lists exist, with at least the bytes it names plus a trailer."""
        for pack, end in listed.items():
            name = on_storage.get(pack)
            if name is None:  # one finding, once the points are walked (_report_missing)
                self._missing[pack] = MissingPack(pack.hex(), blobs=len(self._entries.get(pack, ())))
                continue
            size = self.vault.storage.stat(name).size
            if size < end + fmt.PACK_TRAILER.size:
                self.problem(f"pack {name} is truncated ({size} bytes, the index needs more than {end})")

    def _unlisted_packs(self, listed: Dict[bytes, int], on_storage: Dict[bytes, str]) -> Set[bytes]:
        """Packs no good index lists: with every index file good, garbage an interrupted backup left (a
        warning); with a damaged one, maybe what it listed, so their headers are read and their blobs located."""
        unlisted = [p for p in on_storage if p not in listed]
        if not unlisted:
            return set()
        if not self.damaged_indexes:
            self.warnings.append(f"{len(unlisted)} pack(s) no index lists (left by an interrupted backup; "
                                 "a future prune removes them)")
            return set()
        recovered: Set[bytes] = set()
        for pack in unlisted:
            try:
                self.vault.blobs.locate_pack(pack, on_storage[pack])
            except RecovaultError as e:
                _damage_only(e)
                self.problem(f"{e}; no good index lists it: its blobs cannot be located")
                continue
            recovered.add(pack)
        self.recovered_packs = sorted(on_storage[p] for p in recovered)
        self.stats["packs_recovered"] = len(recovered)
        self.problem(f"{len(self.damaged_indexes)} index file(s) damaged: {len(unlisted)} pack(s) no good index "
                     f"lists, {len(recovered)} of them read from their own headers; "
                     "run 'recovault repair index' to rebuild the index")
        return recovered

    # ---- recovery points ----------------------------------------------------------------------------
    def _points(self) -> None:
        """Every recovery point's trees and chunks are located; names the points that are not restorable."""
        v = self.vault
        points = v.points.ids()
        self._journal(points)  # the journal accounts for every point
        # A purged point whose object is still stored (a purge interrupted, or its object locked by S3 Object
        # Lock) is garbage: prune no longer keeps its blobs, so they are not required (the audit warns of it).
        purged = {sid for sid, st in v.journal.states().items() if st.state == "purged"}
        for sid in (p for p in points if p not in purged):
            try:
                snap = v.load_snapshot(sid)
            except RecovaultError as e:
                _damage_only(e)
                self.problem(str(e))
                self.damaged_points.append(sid)
                continue
            self.stats["snapshots"] += 1
            self._point_roots[sid] = bytes.fromhex(snap.tree)
            if self._tree(bytes.fromhex(snap.tree), f"recovery point {sid[:8]}"):
                self.stats["restorable"] += 1
            else:
                self.damaged_points.append(sid)
        self.stats["trees"] = len(self._tree_ok)

    def _journal(self, points: List[str]) -> None:
        report = audit(self.vault.journal, points)
        for msg in report.problems:
            self.problem(msg)
        self.warnings.extend(report.warnings)
        self.stats["journal_entries"] = report.entries

    def _tree(self, tree_id: bytes, where: str) -> bool:
        """True if the tree and everything under it is located (memoized: a shared subtree is walked once,
        and every recovery point holding a damaged one is named)."""
        ok = self._tree_ok.get(tree_id)
        if ok is not None:
            return ok
        self._tree_ok[tree_id] = True  # a cycle cannot be built (content addressing), but never loop
        ok = self._walk_tree(tree_id, where)
        self._tree_ok[tree_id] = ok
        return ok

    def _walk_tree(self, tree_id: bytes, where: str) -> bool:
        self._refs.add(tree_id)
        lost = self._lost(tree_id)
        if lost is not None:  # named in the pack's finding, not a problem per tree
            self._lost_trees[tree_id] = lost
            return False
        try:
            nodes = self.vault.load_nodes(tree_id)
        except RecovaultError as e:
            _damage_only(e)
            self.problem(f"{where}: {e}")
            return False
        ok = True
        hits: List[_Hit] = []
        for node in nodes:
            ok = self._node(node, where, hits) and ok
        if hits:
            self._hits[tree_id] = hits
        return ok

    def _node(self, node: Node, where: str, hits: List[_Hit]) -> bool:
        """One entry of a tree: its subtree walked, its chunks and image located; what it lost goes to `hits`."""
        ok = True
        if node.subtree is not None:
            sub = bytes.fromhex(node.subtree)
            ok = self._tree(sub, where)
            if sub in self._lost_trees:
                hits.append(_Hit(node.name + b"/", None, (self._lost_trees[sub],)))
            elif sub in self._hits:
                hits.append(_Hit(node.name, sub, ()))
        lost: Set[bytes] = set()
        for c in node.content or ():
            chunk = bytes.fromhex(c)
            self._refs.add(chunk)
            pack = self._lost(chunk)
            if pack is not None:
                lost.add(pack)
        if node.image is not None:
            ok = self._image(node, where, lost) and ok
        if lost:
            hits.append(_Hit(node.name, None, tuple(sorted(lost))))
        return ok and not lost

    def _lost(self, blob_id: bytes) -> Optional[bytes]:
        """The key of the finding that accounts for a referenced blob (its missing pack, or _UNINDEXED when no
        index lists it), or None: the blob is where the index says."""
        loc = self.vault.locations.get(blob_id)
        if loc is None:
            self._unindexed.add(blob_id)
            return _UNINDEXED
        return loc.pack if self._missing and loc.pack in self._missing else None

    def _image(self, node: Node, where: str, lost: Set[bytes]) -> bool:
        """An image's block-map pages, and every block they name, are located (what is lost goes to `lost`)."""
        for page_hex in (node.image or {}).get("pages", []):
            page_id = bytes.fromhex(page_hex)
            self._refs.add(page_id)
            pack = self._lost(page_id)
            if pack is not None:
                lost.add(pack)
                continue
            try:
                page = self.vault.read_blob(page_id)
            except RecovaultError as e:
                _damage_only(e)
                self.problem(f"{where}: block map of {_shown(node)}: {e}")
                return False
            blocks = [page[i:i + 32] for i in range(0, len(page), 32) if page[i:i + 32] != ZERO_ID]
            self._refs.update(b"".join(blocks))
            lost.update(p for p in map(self._lost, blocks) if p is not None)
        return True

    # ---- lost data: one finding per missing pack -----------------------------------------------------
    def missing_packs(self) -> List[MissingPack]:
        return sorted(self._missing.values(), key=lambda m: (m.pack is None, m.pack or ""))

    def _report_missing(self) -> None:
        """Name, for each missing pack (and the blobs no index lists), the recovery points and paths that lost
        data to it; then report each as one problem."""
        if self._unindexed:
            self._missing[_UNINDEXED] = MissingPack(None, blobs=len(self._unindexed))
        paths: Dict[bytes, Set[bytes]] = {}
        memo: Dict[bytes, Dict[bytes, List[bytes]]] = {}
        roots_seen: Set[bytes] = set()
        for sid, root in self._point_roots.items():  # the points that loaded, in the order checked
            found = {self._lost_trees[root]: [b"/"]} if root in self._lost_trees else self._paths(root, memo)
            for pack, names in found.items():
                self._missing[pack].points.append(sid)
                if root not in roots_seen:  # points of one tree (nothing changed) name the same paths
                    paths.setdefault(pack, set()).update(names)
            roots_seen.add(root)
        for pack, m in self._missing.items():
            names = sorted(paths.get(pack, ()))
            m.every_file = [os.fsdecode(n).encode("utf-8", "backslashreplace").decode() for n in names]
            m.files_total = len(names)
            m.files = m.every_file[:FILES_NAMED]
        for m in self.missing_packs():
            self.problem(m.message())

    def _paths(self, tree: bytes, memo: Dict[bytes, Dict[bytes, List[bytes]]]) -> Dict[bytes, List[bytes]]:
        """pack -> the paths under `tree` (relative, each starting with "/") that lost data to it."""
        if tree in memo:
            return memo[tree]
        out: Dict[bytes, List[bytes]] = {}
        for hit in self._hits.get(tree, ()):
            if hit.subtree is not None:
                for pack, names in self._paths(hit.subtree, memo).items():
                    out.setdefault(pack, []).extend(b"/" + hit.name + n for n in names)
            for pack in hit.packs:
                out.setdefault(pack, []).append(b"/" + hit.name)
        memo[tree] = out
        return out

    # ---- data -------------------------------------------------------------------------------------
    @staticmethod
    def _parse_subset(subset: str):
        """("groups", n, m) for 'n/m' or ("percent", p) for 'p%' / 'p'; UsageError if malformed."""
        try:
            if "/" in subset:  # n/m: the n-th of m groups, deterministic
                n, m = (int(x) for x in subset.split("/"))
                if not 1 <= n <= m:
                    raise UsageError(f"--read-data-subset {subset}: need 1 <= n <= m")
                return ("groups", n, m)
            pct = float(subset.rstrip("%"))
        except ValueError:
            raise UsageError(f"--read-data-subset {subset}: use 'n/m' or a percentage like '10%'") from None
        if not 0 < pct <= 100:
            raise UsageError(f"--read-data-subset {subset}: percentage must be in (0, 100]")
        return ("percent", pct)

    def _subset(self, packs: List[bytes], subset: str) -> List[bytes]:
        how = self._parse_subset(subset)
        if how[0] == "groups":
            _, n, m = how
            return [p for p in packs if int.from_bytes(p[:4], "big") % m == n - 1]
        pct = how[1]
        k = max(1, round(len(packs) * pct / 100)) if packs else 0
        return random.sample(packs, k)

    def _read_pack(self, name: str, data: Union[bytes, RecovaultError]) -> None:
        """Check one pack read whole (`data`, or the error reading it): its name is its hash, its header
        decrypts, each blob opens and hashes to its id. A pack too small or garbled to hold a header is one
        problem, and the check goes on."""
        v = self.vault
        if isinstance(data, RecovaultError):
            _damage_only(data)
            self.problem(str(data))
            return
        self.stats["packs_read"] += 1
        if core.blake3(data).hex() != fmt.name_to_id(name):
            self.problem(f"pack {name}: content does not match its name (corrupt or tampered with)")
        try:
            entries = v.blobs.read_pack_header(name, data=data)
        except RecovaultError as e:
            _damage_only(e)
            self.problem(str(e))
            return
        for e in entries:
            blob = data[e.offset:e.offset + e.length]
            try:
                plain = v.open_sealed(e.id, blob, name, e.raw_length)
                if v.chunk_id(plain) != e.id:
                    self.problem(f"pack {name}: blob {e.id.hex()[:16]} does not hash to its id")
                self.stats["blobs_read"] += 1
            except CorruptData as err:
                self.problem(str(err))


def _shown(node: Node) -> str:
    """A node's name in a message: as the file system shows it (undecodable bytes escaped)."""
    return os.fsdecode(node.name).encode("utf-8", "backslashreplace").decode()
