"""The recovery-point store: save, load, list, find and delete recovery points (snapshots/<id>, one sealed
JSON document each, docs/vault-format.md §9). It knows nothing of packs or indexes: a recovery point names
its root tree, and the blob store holds the trees."""
from __future__ import annotations

import json
from typing import Callable, List, Optional

from .. import core
from ..errors import CorruptData, NotFound, ObjectMissing, UsageError
from ..storage import Storage
from . import format as fmt
from .records import RecoveryPoint
from .sealing import Sealer

OnCorrupt = Callable[[str], None]


class PointStore:
    def __init__(self, storage: Storage, sealer: Sealer) -> None:
        self.storage = storage
        self.sealer = sealer

    def save(self, point: RecoveryPoint) -> str:
        """Store `point` (its document without the id, keys sorted) and return the id it is stored under."""
        sealed = self.sealer.seal(fmt.AAD_SNAPSHOT, json.dumps(point.to_json(with_id=False), sort_keys=True).encode())
        sid = core.blake3(sealed).hex()
        self.storage.put(fmt.SNAPSHOTS + sid, sealed)
        return sid

    def load(self, sid: str) -> RecoveryPoint:
        name = fmt.SNAPSHOTS + sid
        try:
            raw = self.storage.get(name)
        except ObjectMissing:
            raise ObjectMissing(f"object {name} is missing from the vault at {self.storage.url}") from None
        try:
            doc = json.loads(self.sealer.open_named(fmt.AAD_SNAPSHOT, raw, sid, f"recovery point {sid[:8]}"))
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
        `on_corrupt`, it raises."""
        snaps = []
        for sid in self.ids():
            try:
                snaps.append(self.load(sid))
            except (CorruptData, ObjectMissing) as e:
                if on_corrupt is None:
                    raise
                on_corrupt(str(e))
        snaps.sort(key=lambda p: p.sort_key)
        return snaps

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
        if not hits:
            raise NotFound(f"no recovery point matches '{ref}'")
        if len(hits) > 1:
            raise UsageError(f"'{ref}' matches {len(hits)} recovery points; give more characters")
        return hits[0]

    def delete(self, sid: str) -> None:
        self.storage.delete(fmt.SNAPSHOTS + sid)
