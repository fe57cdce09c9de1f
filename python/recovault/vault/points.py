"""The recovery-point store: save, load, list, find and delete recovery points (snapshots/<id>, one sealed
JSON document each, docs/vault-format.md §9). It knows nothing of packs or indexes: a recovery point names
its root tree, and the blob store holds the trees.

Listing keeps every recovery point it read in the agent cache (``<cache>/<vault id>/points.bundle``, one
file: cache.ObjectBundle), so a listing reads from the vault only the points it has not seen: `snapshots`
and a backup's search for its base stay one listing of snapshots/ and one local file read with 10,000
points. `load` (and so `check`) always reads the vault."""
from __future__ import annotations

import json
from typing import Callable, Dict, List, Optional

from .. import core, jsondoc
from ..errors import CorruptData, NotFound, ObjectMissing, RefusedSession, UsageError
from ..storage import Storage
from ..storage.base import put_or_withdraw
from . import format as fmt
from .cache import ObjectBundle
from .records import RecoveryPoint
from .sealing import Sealer

OnCorrupt = Callable[[str], None]


class PointStore:
    def __init__(self, storage: Storage, sealer: Sealer, cache_root: Optional[str] = None,
                 vault_id: str = "") -> None:
        self.storage = storage
        self.sealer = sealer
        self.cache = ObjectBundle(cache_root, vault_id, "points") if cache_root else None
        self.refused: Dict[str, str] = {}  # id -> why: points of sessions by a revoked host key, left out

    def save(self, point: RecoveryPoint, sealed: Optional[bytes] = None) -> str:
        """Store `point` (its document without the id, keys sorted) and return the id it is stored under.
        `sealed`: the point's object as another vault with the same keys stores it (a copy): stored as it
        is, so the point keeps its id."""
        if sealed is None:
            sealed = self.sealer.seal(fmt.AAD_SNAPSHOT, json.dumps(point.to_json(with_id=False), sort_keys=True).encode())
        sid = core.blake3(sealed).hex()
        put_or_withdraw(self.storage, fmt.SNAPSHOTS + sid, sealed)
        return sid

    def reseal(self, sid: str, raw: bytes) -> bytes:
        """Point `sid` (stored as `raw`) re-sealed by this session under the same name (§3.1, key rotate
        --rewrite): CorruptData if `raw` does not open."""
        plain = self.sealer.open_named(fmt.AAD_SNAPSHOT, raw, sid, f"recovery point {sid[:8]}")
        return fmt.RESEALED + self.sealer.reseal(fmt.AAD_SNAPSHOT, plain, sid)

    def load(self, sid: str) -> RecoveryPoint:
        """The recovery point `sid`, read from the vault (never from the cache)."""
        return self._decode(sid, self._fetch(sid))

    def _fetch(self, sid: str) -> bytes:
        name = fmt.SNAPSHOTS + sid
        try:
            return self.storage.get(name)
        except ObjectMissing:
            raise ObjectMissing(f"object {name} is missing from the vault at {self.storage.url}") from None

    def _decode(self, sid: str, raw: bytes) -> RecoveryPoint:
        try:
            doc = jsondoc.parse(self.sealer.open_named(fmt.AAD_SNAPSHOT, raw, sid, f"recovery point {sid[:8]}"))
        except ValueError:
            raise CorruptData(f"recovery point {sid[:8]} does not parse") from None
        if not isinstance(doc, dict):
            raise CorruptData(f"recovery point {sid[:8]} does not parse")
        return RecoveryPoint.from_json(doc, sid)

    def ids(self) -> List[str]:
        return [fmt.name_to_id(n) for n in self.storage.list(fmt.SNAPSHOTS)]

    def list(self, on_corrupt: Optional[OnCorrupt] = None) -> List[RecoveryPoint]:
        """All recovery points, oldest first. A recovery point that is corrupt or unreadable is passed to
        `on_corrupt(message)` and left out (one damaged object must not stop every later backup); without
        `on_corrupt`, it raises. Points in the agent cache are not read again (see the module docstring)."""
        cached = self.cache.load() if self.cache else {}
        snaps, good, read = [], {}, 0
        for sid in self.ids():
            try:
                raw = cached.get(sid)
                point = self._cached_point(sid, raw)
                if point is None:
                    raw = self._fetch(sid)
                    point = self._decode(sid, raw)
                    read += 1
                snaps.append(point)
                good[sid] = raw
            except RefusedSession as e:  # not the vault's: a revoked host key's (check names its session)
                self.refused[sid] = str(e)
            except (CorruptData, ObjectMissing) as e:
                if on_corrupt is None:
                    raise
                on_corrupt(str(e))
        if self.cache and (read or good.keys() != cached.keys()):  # points read from the vault, or gone from it
            self.cache.save(good)
        snaps.sort(key=lambda p: p.sort_key)
        return snaps

    def _cached_point(self, sid: str, raw: Optional[bytes]) -> Optional[RecoveryPoint]:
        """The point from its cached bytes (already checked against its name), or None (not cached, or not
        opening: a cache written under another key is read again from the vault)."""
        if raw is None:
            return None
        try:
            return self._decode(sid, raw)
        except CorruptData:
            return None

    def find(self, ref: str, snaps: Optional[List[RecoveryPoint]] = None,
             on_corrupt: Optional[OnCorrupt] = None) -> RecoveryPoint:
        """A recovery point by full id, unique prefix, or 'latest'. Damaged recovery points are passed to
        `on_corrupt(message)` and left out of the search (a good one can still be restored), but 'latest',
        or a ref that matches no good point, then fails: the damaged one may be the point meant."""
        damaged: List[str] = []
        if snaps is None:
            snaps = self.list(on_corrupt=damaged.append)
        for msg in damaged:
            if on_corrupt is not None:
                on_corrupt(msg)
        if damaged and (ref == "latest" or not any(s.id.startswith(ref) for s in snaps)):
            # never hand out an older point as "latest" when a newer one may be the damaged one
            raise CorruptData(f"{damaged[0]}; name another recovery point by its id")
        if ref == "latest":
            if not snaps:
                raise NotFound("the vault has no recovery points yet")
            return snaps[-1]
        hits = [s for s in snaps if s.id.startswith(ref)]
        refused = [msg for sid, msg in self.refused.items() if sid.startswith(ref)]
        if not hits and refused:
            raise RefusedSession(refused[0])
        if not hits:
            raise NotFound(f"no recovery point matches '{ref}'")
        if len(hits) > 1:
            raise UsageError(f"'{ref}' matches {len(hits)} recovery points; give more characters")
        return hits[0]

    def delete(self, sid: str) -> None:
        self.storage.delete(fmt.SNAPSHOTS + sid)
