"""The copy job: recovery points with their blobs from one vault (the source) into another (the target),
deduplicating against what the target holds (restic's `copy`; docs/vault-format.md §9 and §10.1).

Two ways, chosen by the keys:
- **sealed**: both vaults have the same master keys (`init --copy-keys-from`) and chunk-ID algorithm, so
  chunk IDs agree and a sealed blob opens in either: the blobs the target lacks are moved as they are
  (checked to open on the way, so a damaged blob stops the copy instead of spreading), and each recovery
  point's object is stored byte for byte: it keeps its id.
- **re-encoded**: other keys. Every data blob is opened, its ID computed again with the target's ID key and
  sealed under the target's key; trees are rewritten bottom up with the new IDs (file contents, subtrees,
  image pages and the blocks they name), so every tree gets a new ID, and the recovery point a new one. Its
  document keeps the source's fields, with `tree` the new root and `original` the id it had where it was
  first stored. Chunk boundaries stay the source's (a later backup into the target cuts with the target's
  chunker: for seeding a vault, create it with `init --copy-keys-from`).

The same point is never copied twice: a point's identity is `original` if its document has one, else its
id (`origin`); a point whose origin a retained point of the target has is present already.

The copy is a writer on the target (§10.1): it registers a session before it loads the target's index,
leaves every pending plan's garbage out of the target's known blobs (so it stores them again rather than
reuse what a prune may delete), stores packs, then index files, then each recovery point (logged in the
journal by `Vault.save_snapshot`), one point at a time, oldest first. A copy killed anywhere leaves a valid
target; run again, it finds the points already stored and every blob an index lists, and copies the rest.
The source is only read (a prune there moving a blob meanwhile is followed by reloading its index once).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from .. import core
from ..errors import CorruptData, NotFound, ObjectMissing, UsageError
from ..packfetch import MERGE_GAP  # blobs of one pack closer than this are fetched in one ranged read
from ..vault import format as fmt
from ..vault.blobstore import Location, pack_name
from ..vault.coordination import Coordinator, WriterSession
from ..vault.reach import ZERO_ID, ids_of, referenced
from ..vault.records import Node, RecoveryPoint
from ..vault.repo import Vault
from ..vault.tree import encode_tree
from .backup import revalidate

Progress = Callable[[str, Dict[str, Any]], None]


def origin(point: RecoveryPoint) -> str:
    """A recovery point's identity across vaults: the id it had where it was first stored."""
    original = point.extra.get("original")
    return original if isinstance(original, str) and original else point.id


def shares_keys(src: Vault, dst: Vault) -> bool:
    """Whether sealed blobs and chunk IDs of `src` are valid in `dst` as they are."""
    # Format 3 seals each session under its own data key, whose session key object only the source holds:
    # blobs are opened and sealed again.
    return (src.master.enc_key == dst.master.enc_key and src.master.id_key == dst.master.id_key
            and src.settings.id_algo == dst.settings.id_algo
            and max(src.format_version, dst.format_version) < fmt.HOST_KEY_FORMAT)


class CopiedPoint(NamedTuple):
    """A recovery point of the source (`source_id`: its id there) and its id in the target."""
    source_id: str
    id: str
    time: str
    host: str
    paths: List[str]

    def to_json(self) -> Dict[str, Any]:
        return self._asdict()


@dataclass
class CopyResult:
    """What a copy did: `copied` points stored now, `present` ones the target had already; blobs stored in
    the target (and their sealed bytes), blobs it had already, bytes read from the source; `damaged`:
    source points that could not be read (not copied)."""
    source: str
    target: str
    mode: str  # "sealed" or "re-encoded"
    copied: List[CopiedPoint] = field(default_factory=list)
    present: List[CopiedPoint] = field(default_factory=list)
    blobs_copied: int = 0
    bytes_copied: int = 0
    blobs_present: int = 0
    bytes_read: int = 0
    damaged: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        doc = dict(self.__dict__)
        doc["copied"] = [p.to_json() for p in self.copied]
        doc["present"] = [p.to_json() for p in self.present]
        return doc


def _entry(point: RecoveryPoint, target_id: str) -> CopiedPoint:
    return CopiedPoint(point.id, target_id, point.time, point.host, list(point.paths))


def copy_points(src: Vault, dst: Vault, refs: Sequence[str] = (), progress: Optional[Progress] = None) -> CopyResult:
    """Copy the source's recovery points named by `refs` (ids, unique prefixes, 'latest'), by default every
    live one, that the target lacks. Everything is checked (same vault, unknown names) before the target is
    written to."""
    src.require_admin()
    dst.require_admin()
    if src.id == dst.id:
        raise UsageError(f"the source and the target are the same vault (id {src.id}): nothing to copy")
    progress = progress or (lambda kind, info: None)
    result = CopyResult(src.storage.url, dst.storage.url, "sealed" if shares_keys(src, dst) else "re-encoded")
    todo = _selected(src, refs, result, progress)
    dst.prepare_write()
    session = WriterSession(Coordinator(dst.storage, dst.sealer))
    try:
        for plan in session.open():  # registered before the target's index is loaded (§10.1)
            dst.blobs.exclude(plan.garbage)
        _Copier(src, dst, session, result, progress).run(todo)
    finally:
        session.close()
    return result


def _selected(src: Vault, refs: Sequence[str], result: CopyResult, progress: Progress) -> List[RecoveryPoint]:
    """The source points to copy, oldest first (NotFound for a name no live point has)."""
    def damaged(msg: str) -> None:
        result.damaged.append(msg)
        progress("problem", {"message": f"{msg}: not copied"})
    snaps = src.snapshots(on_corrupt=damaged)
    if not refs:
        return snaps
    try:
        chosen = {p.id: p for p in (src.find_snapshot(ref, snaps, on_corrupt=lambda m: None) for ref in refs)}
    except (NotFound, UsageError) as e:  # same class: same exit code
        raise type(e)(f"the source vault {src.storage.url}: {e}") from None
    return sorted(chosen.values(), key=lambda p: p.sort_key)


class _Copier:
    def __init__(self, src: Vault, dst: Vault, session: WriterSession, result: CopyResult, progress: Progress) -> None:
        self.src, self.dst, self.session, self.result, self.progress = src, dst, session, result, progress
        self.sealed = result.mode == "sealed"
        self.walked = core.IdSet()  # sealed: trees whose blobs this run has copied
        self.new_ids: Dict[bytes, bytes] = {}  # re-encoded: source blob id -> target blob id
        self.in_target: Dict[str, RecoveryPoint] = {}
        self.src_origin: Dict[str, str] = {}

    def run(self, todo: List[RecoveryPoint]) -> None:
        """Copy the points of `todo` the target lacks. Progress: "plan" (files: the points to copy), "more"
        (bytes about to be read), "bytes" (read), "file" (a point stored: path = its source id)."""
        # the target's points by origin (what it has), and the source's origins by id (to map parents); not
        # read for the blob-level uses of a copier (repair --from: vault/replica_repair.py)
        self.in_target = {origin(p): p for p in self.dst.retained_snapshots()}
        self.src_origin = {p.id: origin(p) for p in self.src.points.list(on_corrupt=lambda m: None)}
        present = [self.in_target[origin(p)] for p in todo if origin(p) in self.in_target]
        if present:  # a copy killed between storing a point and logging it: log it now
            self.dst.journal.adopt(present)
        self.progress("plan", {"files": len(todo) - len(present), "bytes": 0})
        for point in todo:
            have = self.in_target.get(origin(point))
            if have is not None:
                self.result.present.append(_entry(point, have.id))
                continue
            stored = self._copy_point(point)
            self.in_target[origin(point)] = stored
            self.result.copied.append(_entry(point, stored.id))
            self.progress("file", {"path": point.id, "bytes": 0})

    def _copy_point(self, point: RecoveryPoint) -> RecoveryPoint:
        """Copy the blobs of `point` the target lacks, then store the point (after its packs and index)."""
        root = bytes.fromhex(point.tree)
        new_root = self._copy_sealed(root) if self.sealed else self._reencode_tree(root)
        dst, session = self.dst, self.session
        dst.flush()
        if session.lapsed:
            revalidate(dst, session, new_root)

        def check_stored() -> None:  # stopped between the check and the save: see jobs/backup.py
            if session.lapsed:
                revalidate(dst, session, new_root, rescue=False)
        if not self.sealed:
            copy = self._reencoded_point(point, new_root)
            dst.save_snapshot(copy, check_stored)
            return copy
        raw = self.src.blobs.get(fmt.SNAPSHOTS + point.id)
        self.src.sealer.open_named(fmt.AAD_SNAPSHOT, raw, point.id, f"recovery point {point.short_id}")
        dst.save_snapshot(point, check_stored, sealed=raw)  # the same bytes: the same id
        return point

    def _reencoded_point(self, point: RecoveryPoint, new_root: bytes) -> RecoveryPoint:
        """The point's document for the target: the new root, `original`, and parent and base_full naming
        the target's copies of those points where it has them."""
        copy = RecoveryPoint.from_json(point.to_json(with_id=False))
        copy.tree = new_root.hex()
        copy.extra["original"] = origin(point)
        for name in ("parent", "base_full"):
            ref = getattr(copy, name)
            there = self.in_target.get(self.src_origin.get(ref, ref)) if ref else None
            if there is not None:
                setattr(copy, name, there.id)
        return copy

    # ---- reading the source ------------------------------------------------------------------------
    def _fetch(self, ids: Iterable[bytes], retry: bool = True) -> Iterator[Tuple[bytes, Location, bytes]]:
        """The sealed bytes of blobs `ids` of the source, read pack by pack, nearby blobs in one ranged read.
        A pack gone meanwhile (a prune on the source moved its blobs): the index is loaded again, once."""
        by_pack: Dict[bytes, List[Tuple[bytes, Location]]] = {}
        size = 0
        for blob_id in ids:
            loc = self.src.locate(blob_id)
            by_pack.setdefault(loc.pack, []).append((blob_id, loc))
            size += loc.length
        if retry:
            self.progress("more", {"files": 0, "bytes": size})
        for pack, blobs in sorted(by_pack.items()):
            blobs.sort(key=lambda t: t[1].offset)
            done = 0
            try:
                for run in _runs(blobs):
                    for blob in self._read_run(pack, run):
                        yield blob
                        done += 1
            except ObjectMissing:
                if not retry:
                    raise
                self.src.load_index()
                yield from self._fetch([b for b, _ in blobs[done:]], retry=False)

    def _read_run(self, pack: bytes, run: List[Tuple[bytes, Location]]) -> Iterator[Tuple[bytes, Location, bytes]]:
        name = pack_name(pack)
        start = run[0][1].offset
        data = self.src.blobs.get(name, start, run[-1][1].offset + run[-1][1].length - start)
        self.result.bytes_read += len(data)
        self.progress("bytes", {"bytes": sum(loc.length for _, loc in run)})  # as "more" counted them
        for blob_id, loc in run:
            raw = data[loc.offset - start:loc.offset - start + loc.length]
            if len(raw) != loc.length:
                raise CorruptData(f"pack {name} of the source is truncated (blob {blob_id.hex()[:16]} cut short)")
            yield blob_id, loc, raw

    # ---- sealed: blobs moved as they are -----------------------------------------------------------
    def _copy_sealed(self, root: bytes) -> bytes:
        refs = referenced(self.src, [root], skip=self.walked)
        known = self.dst.known
        missing = []
        for blob_id in ids_of(refs):
            if blob_id in known:
                self.result.blobs_present += 1
            else:
                missing.append(blob_id)
        for blob_id, loc, raw in self._fetch(missing):
            self.src.open_sealed(blob_id, raw, pack_name(loc.pack), loc.raw_length)  # damage stops here
            if known.add(blob_id):
                self.dst.add_sealed(loc.type, blob_id, raw, loc.raw_length)
                self._copied(raw)
        self.walked.update(refs.dump())
        return root

    def _copied(self, sealed: bytes) -> None:
        self.result.blobs_copied += 1
        self.result.bytes_copied += len(sealed)

    # ---- re-encoded: new IDs, trees rewritten ---------------------------------------------------------
    def _store(self, blob_type: int, plain: bytes) -> bytes:
        """Store plaintext in the target (deduplicated) and return its target ID."""
        dst = self.dst
        blob_id = dst.chunk_id(plain)
        if dst.known.add(blob_id):
            sealed = dst.sealer.session.seal(blob_id, plain, dst.settings.level)
            dst.add_sealed(blob_type, blob_id, sealed, len(plain))
            self._copied(sealed)
        else:
            self.result.blobs_present += 1
        return blob_id

    def _reencode_data(self, ids: Iterable[bytes]) -> None:
        """Give each data blob `ids` names (not done yet) its target ID, storing those the target lacks."""
        todo = {b for b in ids if b not in self.new_ids}
        for blob_id, loc, raw in self._fetch(todo):
            plain = self.src.open_sealed(blob_id, raw, pack_name(loc.pack), loc.raw_length)
            self.new_ids[blob_id] = self._store(fmt.BLOB_DATA, plain)

    def _reencode_tree(self, root: bytes) -> bytes:
        """The target ID of source tree `root`, rewritten bottom up (an explicit stack: any depth)."""
        new_ids = self.new_ids
        stack: List[Tuple[bytes, Optional[List[Node]]]] = [(root, None)]
        while stack:
            tree_id, nodes = stack[-1]
            if tree_id in new_ids:
                stack.pop()
                continue
            if nodes is None:
                nodes = self.src.load_nodes(tree_id)
                stack[-1] = (tree_id, nodes)
                subs = [bytes.fromhex(n.subtree) for n in nodes if n.subtree is not None]
                todo = [s for s in subs if s not in new_ids]
                if todo:
                    stack.extend((s, None) for s in todo)
                    continue
            stack.pop()
            new_ids[tree_id] = self._rewrite(nodes)
        return new_ids[root]

    def _rewrite(self, nodes: List[Node]) -> bytes:
        """Store the tree of `nodes` with every ID they name replaced by the target's (subtrees done)."""
        self._reencode_data(bytes.fromhex(c) for n in nodes for c in n.content or ())
        new = self.new_ids
        out = []
        for n in nodes:
            changes: Dict[str, Any] = {}
            if n.content is not None:
                changes["content"] = [new[bytes.fromhex(c)].hex() for c in n.content]
            if n.subtree is not None:
                changes["subtree"] = new[bytes.fromhex(n.subtree)].hex()
            if n.image is not None:
                changes["image"] = {**n.image, "pages": [self._reencode_page(bytes.fromhex(p)).hex()
                                                         for p in n.image.get("pages", [])]}
            out.append(replace(n, **changes))
        return self._store(fmt.BLOB_TREE, encode_tree(out))

    def _reencode_page(self, page_id: bytes) -> bytes:
        """A page of an image's block map, with its blocks' target IDs (all-zero entries stay zero)."""
        if page_id not in self.new_ids:
            page = self.src.read_blob(page_id)
            blocks = [page[i:i + 32] for i in range(0, len(page), 32)]
            self._reencode_data(b for b in blocks if b != ZERO_ID)
            new_page = b"".join(b if b == ZERO_ID else self.new_ids[b] for b in blocks)
            self.new_ids[page_id] = self._store(fmt.BLOB_TREE, new_page)
        return self.new_ids[page_id]


def _runs(blobs: List[Tuple[bytes, Location]]) -> Iterator[List[Tuple[bytes, Location]]]:
    """Blobs of one pack (sorted by offset) in runs whose gaps are under MERGE_GAP: one ranged read each."""
    run = [blobs[0]]
    for b in blobs[1:]:
        last = run[-1][1]
        if b[1].offset - (last.offset + last.length) > MERGE_GAP:
            yield run
            run = []
        run.append(b)
    yield run
