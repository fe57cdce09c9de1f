"""The journal: an authenticated, append-only log of the set of recovery points (docs/vault-format.md §11).

Every change to the set of recovery points is an entry ``journal/<64 hex>``: one sealed blob (AAD
``recovault/v1/journal``), content-addressed like a recovery point, holding compact JSON
``{"v": 2, "op": ..., "snapshot": ..., "time": ..., "host": ..., "prev": [...]}`` (version 1 entries, of
format 1, are read too: their "remove" reads as "purge"). ``prev`` names the entries
that were heads (referenced by no other entry) when it was written, so the entries form a DAG: many hosts
append at once without a lock, and the next entry merges their heads.

Ops: ``add`` (the point was stored), ``remove`` (it is soft-deleted: its object stays until it expires),
``undelete`` (live again), ``purge`` (its object is deleted for good), and ``policy`` (no point: the vault's
retention policy and soft-delete period, see ``VaultPolicy``).

Order of writes (why a crash is never mistaken for a rollback): an ``add`` entry is written just *after* its
recovery point, and a ``purge`` entry just *before* the point is deleted. Every crash state therefore holds
more data than the journal says (a point with no entry, or a purged point still present), never less; a
live or soft-deleted point whose object is missing is always a deletion outside recovault or a rollback.

Time rules (pure functions below, docs/vault-format.md §11): an entry's *effective time* is the latest of its
own time and its ``prev`` entries' effective times, so an entry written after honest ones cannot be dated
before them. The soft-delete period in force at t, ``D(t)``, is that of the latest policy in force at t,
and also every earlier period replaced less than that period before t (shortening takes effect only once the
old period has passed since the change). A point removed (effective time) at r expires at
``r + max(D(r), D(now))``.

What ``check`` can prove: no entry was deleted that a later entry references (the log was not cut), no
entry this host has seen was deleted (its agent cache keeps them), and every point the log says is live
exists. What it cannot: deleting the newest entries together with their points, seen by a host with no
cache (or whose cache never saw them), is indistinguishable from those backups never having happened.
"""
from __future__ import annotations

import json
import re
import struct
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .. import core, jsondoc, timefmt
from ..errors import CorruptData, ObjectMissing, RecovaultError, UsageError, store_failed
from ..retention import Policy
from ..storage import Storage
from ..storage.base import put_or_withdraw
from . import format as fmt
from .cache import ObjectBundle, ObjectCache, read_private, write_private
from .records import RecoveryPoint
from .sealing import Sealer, resealed_body

__all__ = ["DEFAULT_SOFT_DELETE_DAYS", "ENTRY_VERSION", "READ_VERSIONS", "OPS", "POLICY_OP", "Journal", "JournalEntry",
           "JournalReport", "PeriodChange", "PointState", "VaultPolicy", "audit", "effective_times", "expiry",
           "longer_period_until", "period_changes", "soft_delete_days_at"]

#: the entry version written (format 2: soft delete); version 1 entries (format 1) are read too. Format 3
#: writes version 3: `prev` in a plaintext prefix bound to the sealed body (hosts find the heads from it).
ENTRY_VERSION = 2
ENTRY_VERSION_V3 = 3
READ_VERSIONS = (1, 2, 3)
V3_MAGIC = b"RVJ3"
V3_PREFIX_LEN = struct.Struct("<H")
#: op on a recovery point -> the point's state after it: live, soft-deleted (object kept), purged. In a
#: version 1 entry, "remove" meant the object was being deleted for good: it reads as "purge".
OPS = {"add": "live", "remove": "deleted", "undelete": "live", "purge": "purged"}
#: the op of an entry that names no point and carries the vault's policy
POLICY_OP = "policy"
#: the soft-delete period of a vault with no policy entry (Azure Backup's 14 days)
DEFAULT_SOFT_DELETE_DAYS = 14
MAX_SOFT_DELETE_DAYS = 36500
#: the earliest time: before any entry (the implicit default policy starts there)
DAWN = datetime(1, 1, 1, tzinfo=timezone.utc)

_HEX64 = re.compile(r"[0-9a-f]{64}")
HEADS_FILE = "journal-heads"


@dataclass(frozen=True)
class VaultPolicy:
    """What a ``policy`` entry carries: the retention policy ``forget`` applies with no rules given (None:
    none stored) and the soft-delete period in days (0: off)."""

    retention: Optional[Policy] = None
    soft_delete_days: int = DEFAULT_SOFT_DELETE_DAYS

    def __post_init__(self) -> None:
        days = self.soft_delete_days
        if type(days) is not int or not 0 <= days <= MAX_SOFT_DELETE_DAYS:
            raise UsageError(f"--soft-delete-days {days!r}: a whole number of days, 0 (off) to "
                             f"{MAX_SOFT_DELETE_DAYS}")
        if self.retention is not None and self.retention.is_empty:
            raise UsageError("the retention policy has no rule: it would remove every recovery point "
                             "(give at least one --keep-* rule)")

    def to_json(self) -> Dict[str, Any]:
        return {"retention": self.retention.to_json() if self.retention is not None else None,
                "soft_delete_days": self.soft_delete_days}

    @classmethod
    def from_json(cls, doc: Any) -> "VaultPolicy":
        """``ValueError`` naming the problem if `doc` is not one."""
        if not isinstance(doc, dict) or set(doc) != {"retention", "soft_delete_days"}:
            raise ValueError("policy is not an object with retention and soft_delete_days")
        retention = doc["retention"]
        if retention is not None and not isinstance(retention, dict):
            raise ValueError("policy retention is neither an object nor null")
        try:
            return cls(Policy.from_json(retention) if retention is not None else None, doc["soft_delete_days"])
        except UsageError as e:
            raise ValueError(f"policy: {e}") from None


@dataclass(frozen=True)
class JournalEntry:
    """One entry. ``time``/``host``: for "add", the recovery point's own; for other ops, when and where the
    op was done. ``logged``: for "add", when the entry was written (a point's own time may be anything
    ``backup --time`` gave); "" for other ops and for entries written before it existed. A "policy" entry
    names no point (``snapshot`` is "") and carries ``policy``."""

    op: str
    snapshot: str
    time: str
    host: str
    prev: Tuple[str, ...] = ()
    name: str = field(default="", compare=False)  # journal/<name>; empty until stored
    policy: Optional[VaultPolicy] = None
    logged: str = ""
    version: int = ENTRY_VERSION

    @property
    def state(self) -> str:
        """The state of the point after this entry (for an op in OPS)."""
        return "purged" if self.version == 1 and self.op == "remove" else OPS[self.op]

    def to_json(self) -> bytes:
        doc: Dict[str, Any] = {"v": self.version, "op": self.op, "time": self.time, "host": self.host}
        if self.version < ENTRY_VERSION_V3:  # version 3: prev is in the plaintext prefix (encode_v3)
            doc["prev"] = sorted(self.prev)
        if self.op == POLICY_OP:
            doc["policy"] = self.policy.to_json() if self.policy else VaultPolicy().to_json()
        else:
            doc["snapshot"] = self.snapshot
        if self.logged:
            doc["logged"] = self.logged
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def prefix(self) -> bytes:
        """Version 3: the plaintext prefix's JSON (its prev), canonical."""
        return json.dumps({"prev": sorted(self.prev)}, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, name: str, plain: bytes, prev: Optional[List[str]] = None) -> "JournalEntry":
        """Parse and validate; ``ValueError`` naming the first problem. `prev`: a version 3 entry's, from its
        plaintext prefix (its body has none)."""
        doc = jsondoc.parse(plain)
        if not isinstance(doc, dict) or doc.get("v") not in READ_VERSIONS:
            raise ValueError(f"not a version {' or '.join(map(str, READ_VERSIONS))} journal entry")
        version = doc["v"]
        if (version == ENTRY_VERSION_V3) != (prev is not None) or (prev is not None and "prev" in doc):
            raise ValueError("prev belongs in the plaintext prefix of a version 3 entry, and only there")
        if prev is not None:
            doc = {**doc, "prev": prev}
        op, sid, time, host, prev = (doc.get(k) for k in ("op", "snapshot", "time", "host", "prev"))
        logged = doc.get("logged", "")
        if not all(isinstance(x, str) for x in (op, time, host, logged)):
            raise ValueError("op, time, host and logged must be strings")
        for t in (time, logged) if logged else (time,):
            try:
                timefmt.parse_time(t)
            except ValueError:
                raise ValueError(f"{t!r} is not a time") from None
        if not isinstance(prev, list) or not all(isinstance(p, str) and _HEX64.fullmatch(p) for p in prev):
            raise ValueError("prev is not a list of 64-hex entry names")
        if op == POLICY_OP:
            if sid is not None:
                raise ValueError("a policy entry names no snapshot")
            return cls(op, "", time, host, tuple(prev), name, VaultPolicy.from_json(doc.get("policy")), logged,
                       version)
        if not isinstance(sid, str) or not _HEX64.fullmatch(sid):
            raise ValueError("snapshot is not a 64-hex id")
        return cls(op, sid, time, host, tuple(prev), name, None, logged, version)

    @property
    def describe(self) -> str:
        what = "the policy" if self.op == POLICY_OP else f"recovery point {self.snapshot[:8]}"
        return f"{self.op} of {what} by host {self.host} at {self.time}"


@dataclass(frozen=True)
class PointState:
    """What the journal says of one recovery point: its deciding (latest) entry, its first "add", and the
    deciding entry's effective time (for a soft-deleted point: when it was removed, ``r``)."""

    snapshot: str
    state: str  # "live", "deleted" (soft-deleted, object kept) or "purged"
    last: JournalEntry
    added: Optional[JournalEntry]
    effective: datetime = DAWN

    @property
    def live(self) -> bool:
        return self.state == "live"


class Journal:
    """The journal of one vault: reads entries (through the agent cache), appends, and answers which recovery
    points are live."""

    def __init__(self, storage: Storage, sealer: Sealer, cache_root: Optional[str], vault_id: str) -> None:
        self.storage = storage
        self.sealer = sealer
        self.cache = ObjectCache(cache_root, vault_id, "journal") if cache_root else None
        self.bundle = ObjectBundle(cache_root, vault_id, "journal") if cache_root else None  # read accelerator
        self._heads_path = Path(cache_root) / vault_id / HEADS_FILE if cache_root else None
        self.entries: Dict[str, JournalEntry] = {}
        self.damaged: Dict[str, str] = {}  # name -> why it could not be read
        self.stored: Set[str] = set()  # names on storage at the last refresh
        self.entry_version = ENTRY_VERSION  # ENTRY_VERSION_V3 in a format 3 vault

    # ---- reading ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """List the journal and read the entries not read yet: from the agent cache when it has them (its
        bundle first: one file for all, 10,000 entries in ~0.2 s), else from the vault."""
        self.stored = {fmt.name_to_id(n) for n in self.storage.list(fmt.JOURNAL)}
        todo = sorted(self.stored - set(self.entries))
        bundled = self.bundle.load() if self.bundle and todo else {}
        unbundled: Dict[str, bytes] = {}
        for name in todo:
            raw = bundled.get(name) or (self.cache.get(name) if self.cache else None)
            fetched = replaced = raw is None
            try:
                try:
                    if fetched:
                        raw = self.storage.get(fmt.JOURNAL + name)
                    entry = self.open_entry(name, raw)
                except (CorruptData, ValueError):
                    if fetched:
                        raise
                    # a cached copy that no longer opens (re-sealed since, its old session key retired)
                    fetched = replaced = True
                    raw = self.storage.get(fmt.JOURNAL + name)
                    entry = self.open_entry(name, raw)
            except (RecovaultError, ValueError) as e:
                if isinstance(e, ObjectMissing):
                    self.stored.discard(name)  # deleted since listing: the audit reports it if it mattered
                else:
                    self.damaged[name] = str(e)
                continue
            self.damaged.pop(name, None)
            self.entries[name] = entry
            if replaced or name not in bundled:  # (it replaces the bundle's copy)
                unbundled[name] = raw
            if self.cache and fetched:  # a cached one is there already: rewriting it cost 10,000 renames
                self.cache.put(name, raw)
        if self.bundle and (unbundled or bundled.keys() - self.stored):
            self.bundle.save({n: r for n, r in {**bundled, **unbundled}.items() if n in self.stored})

    def open_entry(self, name: str, raw: bytes) -> JournalEntry:
        """Verify ``raw`` against its name and unseal it; ``CorruptData`` or ``ValueError`` if it fails."""
        plain, _aad, prefix = self._open(name, raw)
        prev = prefix_prev(prefix, f"journal entry {name[:16]}") if prefix is not None else None
        try:
            return JournalEntry.from_json(name, plain, prev)
        except ValueError as e:
            raise CorruptData(f"journal entry {name[:16]} does not parse: {e}") from None

    def _open(self, name: str, raw: bytes) -> Tuple[bytes, bytes, Optional[bytes]]:
        """The plaintext of stored entry `name`, the label it was sealed under and its plaintext prefix (None
        before version 3), authenticated under its name (its hash, or, re-sealed, an admin session's tag);
        CorruptData if it fails."""
        what = f"journal entry {name[:16]}"
        resealed = raw.startswith(fmt.RESEALED)
        if not resealed and core.blake3(raw).hex() != name:
            raise CorruptData(f"{what}: its content does not match its name (corrupt or tampered with)")
        aad, prefix, sealed = entry_layout(raw, what)
        if resealed:
            return self.sealer.open_resealed(aad, sealed, name, what), aad, prefix
        return self.sealer.unseal(aad, sealed, what), aad, prefix

    def reseal(self, name: str, raw: bytes) -> bytes:
        """Entry `name` (stored as `raw`) re-sealed by this session under the same name (§3.1, key rotate
        --rewrite): the same prefix and plaintext. CorruptData if `raw` does not open."""
        plain, aad, prefix = self._open(name, raw)
        head = v3_head(prefix) if prefix is not None else b""
        return fmt.RESEALED + head + self.sealer.reseal(aad, plain, name)

    def heads(self) -> List[str]:
        """Entries on storage (readable or not) that no readable entry names in its prev, sorted."""
        referenced = {p for e in self.entries.values() for p in e.prev}
        return sorted((set(self.entries) | set(self.damaged)) - referenced)

    def remembered(self) -> Set[str]:
        """Entry names this host's agent cache has seen: its cached entries and the heads it remembers."""
        names: Set[str] = set(self.cache.names()) if self.cache else set()
        raw = read_private(self._heads_path) if self._heads_path else None
        if raw:
            try:
                names.update(h for h in jsondoc.parse(raw).get("heads", []) if isinstance(h, str))
            except (ValueError, AttributeError, TypeError):
                pass  # a damaged heads file: the cached entries still testify
        return {n for n in names if _HEX64.fullmatch(n)}

    def _remember_heads(self) -> None:
        """Store the current heads, plus remembered ones now gone (so a rollback stays reported)."""
        if self._heads_path is None or (self.cache and not self.cache.ok):
            return
        gone = self.remembered() - self.stored
        doc = {"v": 1, "heads": sorted(set(self.heads()) | gone)}
        write_private(self._heads_path, json.dumps(doc).encode())

    def states(self) -> Dict[str, PointState]:
        """Per recovery point, its state after the causally last entry naming it (ties between concurrent
        entries: the later time, then the larger name, so every reader decides alike). Entries with an op
        this recovault does not know are left out."""
        order, eff = self._causal_key(), effective_times(self.entries)
        by_point: Dict[str, List[JournalEntry]] = {}
        for e in self.entries.values():
            if e.op in OPS:
                by_point.setdefault(e.snapshot, []).append(e)
        out = {}
        for sid, es in by_point.items():
            last = max(es, key=order)
            adds = [e for e in es if e.op == "add"]
            first_add = min(adds, key=order) if adds else None
            out[sid] = PointState(sid, last.state, last, first_add, eff[last.name])
        return out

    def policy_entries(self) -> List[JournalEntry]:
        """The policy entries, in causal order (the same order as point states: the last one is current)."""
        return sorted((e for e in self.entries.values() if e.op == POLICY_OP), key=self._causal_key())

    def policy(self) -> VaultPolicy:
        """The current policy: the causally last policy entry's; with none, no retention and 14 days."""
        entries = self.policy_entries()
        return entries[-1].policy or VaultPolicy() if entries else VaultPolicy()

    def period_changes(self) -> List["PeriodChange"]:
        """The soft-delete periods this journal has set, with when each took effect (see period_changes)."""
        eff = effective_times(self.entries)
        return period_changes([(e, eff[e.name]) for e in self.policy_entries()])

    def _causal_key(self):  # type: ignore[no-untyped-def]
        depth = _depths(self.entries)
        return lambda e: (depth[e.name], e.time, e.name)

    # ---- writing ---------------------------------------------------------------------------------
    def append(self, op: str, snapshot: str, time: str, host: Optional[str] = None,
               policy: Optional[VaultPolicy] = None) -> str:
        """Write an entry whose prev are the current heads; return its name. A "policy" entry takes
        ``policy`` and snapshot ""."""
        if op not in OPS and op != POLICY_OP:
            raise ValueError(f"unknown journal op {op!r}")
        if (op == POLICY_OP) != (policy is not None):
            raise ValueError("a policy entry, and only one, carries a policy")
        self.refresh()
        name = self._put(JournalEntry(op, snapshot, time, host if host is not None else socket.gethostname(),
                                      tuple(self.heads()), policy=policy,
                                      logged=timefmt.now() if op == "add" else ""))
        self._remember_heads()
        return name

    def _put(self, entry: JournalEntry) -> str:
        if entry.op not in OPS and entry.op != POLICY_OP:
            raise ValueError(f"unknown journal op {entry.op!r}")
        if self.entry_version == ENTRY_VERSION_V3:
            entry = JournalEntry(entry.op, entry.snapshot, entry.time, entry.host, entry.prev, "", entry.policy,
                                 entry.logged, ENTRY_VERSION_V3)
            prefix = entry.prefix()
            sealed = v3_head(prefix) + self.sealer.seal(v3_aad(prefix), entry.to_json())
        else:
            sealed = self.sealer.seal(fmt.AAD_JOURNAL, entry.to_json())
        name = core.blake3(sealed).hex()
        put_or_withdraw(self.storage, fmt.JOURNAL + name, sealed)
        self.entries[name] = JournalEntry(entry.op, entry.snapshot, entry.time, entry.host, entry.prev, name,
                                          entry.policy, entry.logged, entry.version)
        self.stored.add(name)
        if self.cache:
            self.cache.put(name, sealed)
        return name

    def append_many(self, ops: Sequence[Tuple[str, str, str]], host: Optional[str] = None) -> List[str]:
        """Write one entry per ``(op, snapshot, time)``, in a chain (the first names the current heads, each
        next one the entry before it): one listing for all, so forgetting thousands of points stays linear."""
        if not ops:
            return []
        names = [self.append(*ops[0], host=host)]
        for op, snapshot, time in ops[1:]:
            names.append(self._put(JournalEntry(op, snapshot, time, host if host is not None
                                                else socket.gethostname(), (names[-1],),
                                                logged=timefmt.now() if op == "add" else "")))
        self._remember_heads()
        return names

    def adopt(self, points: Iterable[RecoveryPoint]) -> List[str]:
        """Log an "add" for each recovery point no entry names yet (recovery points written before the
        journal existed, or by a backup stopped before logging); return the new entries' names. For upgrading
        a vault (a later ``migrate``): from then on, deleting those points is reported too."""
        self.refresh()
        logged = {e.snapshot for e in self.entries.values()}
        return [self.append("add", p.id, p.time, p.host) for p in points if p.id not in logged]


def entry_layout(raw: bytes, what: str) -> Tuple[bytes, Optional[bytes], bytes]:
    """A stored entry's (re-sealed or not) label, plaintext prefix (None before version 3) and sealed part."""
    body = resealed_body(raw)
    if body.startswith(V3_MAGIC):
        prefix, sealed = split_v3(body, what)
        return v3_aad(prefix), prefix, sealed
    return fmt.AAD_JOURNAL, None, body


def v3_aad(prefix: bytes) -> bytes:
    """The id a version 3 entry's body is sealed under: the label and the BLAKE3 of the plaintext prefix."""
    return fmt.AAD_JOURNAL_V3 + core.blake3(prefix)


def v3_head(prefix: bytes) -> bytes:
    """What a version 3 entry's sealed body follows: the magic, the prefix's length and the prefix."""
    return V3_MAGIC + V3_PREFIX_LEN.pack(len(prefix)) + prefix


def split_v3(raw: bytes, what: str) -> Tuple[bytes, bytes]:
    """A version 3 entry's plaintext prefix and sealed body; CorruptData if the layout is wrong."""
    start = len(V3_MAGIC) + V3_PREFIX_LEN.size
    if len(raw) < start:
        raise CorruptData(f"{what} is corrupt: too short")
    (n,) = V3_PREFIX_LEN.unpack_from(raw, len(V3_MAGIC))
    if len(raw) < start + n:
        raise CorruptData(f"{what} is corrupt: its prefix is cut short")
    return raw[start:start + n], raw[start + n:]


def prefix_prev(prefix: bytes, what: str) -> List[str]:
    """The prev a version 3 entry's prefix names; CorruptData if it does not parse."""
    try:
        doc = jsondoc.parse(prefix)
        prev = doc["prev"]
        if not isinstance(prev, list) or not all(isinstance(p, str) and _HEX64.fullmatch(p) for p in prev):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise CorruptData(f"{what} is corrupt: its prefix does not parse") from None
    return prev


class HostJournal(Journal):
    """The journal as a host key sees it (format 3): it cannot open entries, only read their plaintext
    prefixes, so its heads are the version 3 entries no other names (the upgrade to format 3 wrote one that
    names every earlier head: version 2 entries are all behind it). It appends "add" entries only."""

    def __init__(self, storage: Storage, sealer: Sealer, cache_root: Optional[str], vault_id: str) -> None:
        super().__init__(storage, sealer, cache_root, vault_id)
        self.entry_version = ENTRY_VERSION_V3
        self.prefixes: Dict[str, Tuple[str, ...]] = {}

    def refresh(self) -> None:
        self.stored = {fmt.name_to_id(n) for n in self.storage.list(fmt.JOURNAL)}
        for name in sorted(self.stored - set(self.prefixes) - set(self.damaged)):
            raw = self.cache.get(name) if self.cache else None
            fetched = raw is None
            try:
                if fetched:
                    raw = self.storage.get(fmt.JOURNAL + name)
                if not raw.startswith(fmt.RESEALED) and core.blake3(raw).hex() != name:
                    raise CorruptData(f"journal entry {name[:16]} does not match its name")
                prefix = entry_layout(raw, name)[1]  # a re-sealed one's prefix: only the admin can verify it
            except ObjectMissing:
                self.stored.discard(name)
                continue
            except CorruptData as e:
                self.damaged[name] = str(e)
                continue
            if prefix is not None:
                try:
                    self.prefixes[name] = tuple(prefix_prev(prefix, name))
                except CorruptData as e:
                    self.damaged[name] = str(e)
                    continue
            if self.cache and fetched:
                self.cache.put(name, raw)

    def heads(self) -> List[str]:
        referenced = {p for prev in self.prefixes.values() for p in prev}
        return sorted(n for n in self.prefixes if n in self.stored and n not in referenced)

    def _put(self, entry: JournalEntry) -> str:
        name = super()._put(entry)
        self.prefixes[name] = tuple(entry.prev)
        return name


# ---- the time rules (pure) -------------------------------------------------------------------------

def _topological(entries: Dict[str, JournalEntry]) -> List[str]:
    """Every entry name, each after the entries of its prev that exist. Iterative: a long journal cannot
    exhaust the stack."""
    done: Set[str] = set()
    out: List[str] = []
    for start in entries:
        stack = [start]
        while stack:
            name = stack[-1]
            if name in done:
                stack.pop()
                continue
            todo = [p for p in entries[name].prev if p in entries and p not in done]
            if todo:
                stack.extend(todo)
                continue
            done.add(name)
            out.append(name)
            stack.pop()
    return out


def _depths(entries: Dict[str, JournalEntry]) -> Dict[str, int]:
    """Longest path from a root to each entry: an ancestor always has a smaller depth than its descendants."""
    depth: Dict[str, int] = {}
    for name in _topological(entries):
        depth[name] = 1 + max((depth[p] for p in entries[name].prev if p in depth), default=0)
    return depth


def effective_times(entries: Dict[str, JournalEntry]) -> Dict[str, datetime]:
    """Each entry's effective time: the latest of its own time (and ``logged``) and its prev entries'
    effective times (an entry cannot take effect before the entries it follows, whatever time it claims)."""
    eff: Dict[str, datetime] = {}
    for name in _topological(entries):
        e = entries[name]
        own = [timefmt.parse_time(t) for t in (e.time, e.logged) if t]
        eff[name] = max(own + [eff[p] for p in e.prev if p in eff])
    return eff


@dataclass(frozen=True)
class PeriodChange:
    """A soft-delete period of `days` set by a policy entry that took effect at `start`."""

    start: datetime
    days: int


def period_changes(policies: Sequence[Tuple[JournalEntry, datetime]]) -> List[PeriodChange]:
    """The periods in the order they were set, from policy entries in causal order with their effective
    times. Before the first: the default 14 days, unless the first entry has no prev (the vault's first
    entry, written by ``init --soft-delete-days``). Starts never go back in time (a later policy entry
    written on a host whose clock is behind takes effect when the one before it did)."""
    out: List[PeriodChange] = []
    if not policies or policies[0][0].prev:
        out.append(PeriodChange(DAWN, DEFAULT_SOFT_DELETE_DAYS))
    for entry, start in policies:
        days = (entry.policy or VaultPolicy()).soft_delete_days
        out.append(PeriodChange(max(start, out[-1].start) if out else start, days))
    return out


def soft_delete_days_at(changes: Sequence[PeriodChange], t: datetime) -> int:
    """``D(t)``: the period of the last change in effect at `t`, or any longer earlier period that was
    replaced less than that period before `t` (a period stays in force until it has passed since it was
    replaced). Before every change: the first one's."""
    started = [c for c in changes if c.start <= t] or list(changes[:1])
    days = started[-1].days
    for old, new in zip(started, started[1:]):
        if t < new.start + timedelta(days=old.days):
            days = max(days, old.days)
    return days


def longer_period_until(changes: Sequence[PeriodChange], t: datetime) -> Optional[datetime]:
    """When the last earlier, longer period still in force at `t` stops (a shortening takes effect then);
    None if the latest period alone is in force."""
    started = [c for c in changes if c.start <= t] or list(changes[:1])
    ends = [new.start + timedelta(days=old.days) for old, new in zip(started, started[1:])
            if old.days > started[-1].days and t < new.start + timedelta(days=old.days)]
    return max(ends) if ends else None


def expiry(removed: datetime, changes: Sequence[PeriodChange], now: datetime) -> datetime:
    """When a point soft-deleted at `removed` (the remove entry's effective time) expires: after the longer
    of the period in force then and the one in force now (lengthening applies to deleted points too)."""
    return removed + timedelta(days=max(soft_delete_days_at(changes, removed), soft_delete_days_at(changes, now)))


@dataclass
class JournalReport:
    problems: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    entries: int = 0


def audit(journal: Journal, points: Iterable[str], now: Optional[datetime] = None) -> JournalReport:
    """Check the journal against the recovery point objects on storage (ids in ``points``); see the module
    docstring for what this proves. Reads every entry from storage (not the cache): damage there matters to
    every other host. `now` (default: the current time) decides which soft-deleted points have expired."""
    report = JournalReport()
    journal.refresh()
    for name in sorted(journal.stored):
        try:
            journal.open_entry(name, journal.storage.get(fmt.JOURNAL + name))
        except (RecovaultError, ValueError) as e:
            if store_failed(e):
                raise  # an entry that could not be read is not known to be damaged
            report.problems.append(str(e))
    report.entries = len(journal.stored)
    _missing_entries(journal, report)
    _check_points(journal, set(points), report, now or datetime.now(timezone.utc))
    journal._remember_heads()
    return report


def _missing_entries(journal: Journal, report: JournalReport) -> None:
    referers: Dict[str, JournalEntry] = {}
    for e in journal.entries.values():
        for p in e.prev:
            if p not in journal.stored:
                referers.setdefault(p, e)
    for name, e in sorted(referers.items()):
        report.problems.append(f"journal entry {name[:16]} is missing, but entry {e.name[:16]} ({e.describe}) "
                               "references it: the journal was cut (entries deleted outside recovault)")
    for name in sorted(journal.remembered() - journal.stored - set(referers)):
        report.problems.append(f"journal entry {name[:16]}, seen before by this host, is gone from the vault: "
                               "the vault was rolled back or entries were deleted outside recovault")


def _premature_purges(journal: Journal, states: Dict[str, PointState], changes: List[PeriodChange]) -> List[str]:
    """A purge (version 2) must follow a removal and come after its expiry: one that does not bypassed soft
    delete (a stolen passphrase used with a recovault that ignores it, or entries written by hand)."""
    order, eff = journal._causal_key(), effective_times(journal.entries)
    out = []
    for sid, st in sorted(states.items()):
        if st.state != "purged" or st.last.version == 1:
            continue
        removes = [e for e in journal.entries.values() if e.snapshot == sid and e.op == "remove"
                   and order(e) < order(st.last)]
        if not removes:
            out.append(f"recovery point {sid[:8]} was purged ({st.last.describe}) without being removed first: "
                       "soft delete was bypassed")
            continue
        removed = eff[max(removes, key=order).name]
        expires = expiry(removed, changes, st.effective)
        if st.effective < expires:
            out.append(f"recovery point {sid[:8]} was purged at {timefmt.format_time(st.effective)} "
                       f"({st.last.describe}), before its soft-delete period ended at "
                       f"{timefmt.format_time(expires)}: soft delete was bypassed")
    return out


def _check_points(journal: Journal, points: Set[str], report: JournalReport, now: datetime) -> None:
    """A live or soft-deleted unexpired point must exist; a soft-deleted point that exists is normal; a
    purged one that exists is an interrupted purge."""
    states = journal.states()
    changes = journal.period_changes()
    for sid, st in sorted(states.items(), key=lambda kv: (kv[1].last.time, kv[0])):
        who = st.added or st.last
        if st.live and sid not in points:
            report.problems.append(f"recovery point {sid[:8]} of host {who.host} at {who.time} is missing: "
                                   "deleted outside recovault or rolled back")
        elif st.state == "deleted" and sid not in points:
            expires = expiry(st.effective, changes, now)
            text = (f"soft-deleted recovery point {sid[:8]} of host {who.host} at {who.time} (expires "
                    f"{timefmt.format_time(expires)}) is missing")
            if expires > now:
                report.problems.append(text + ": deleted outside recovault or rolled back before it expired")
            else:
                report.warnings.append(text + " with no purge entry: deleted outside recovault after it expired")
        elif st.state == "purged" and sid in points:
            report.warnings.append(f"recovery point {sid[:8]} was removed for good ({st.last.describe}) but its "
                                   "object is still stored (an interrupted purge, or an object still locked: a later prune "
                                   "finishes it)")
    report.problems.extend(_premature_purges(journal, states, changes))
    unlogged = sorted(points - set(states))
    if unlogged:
        report.warnings.append(
            f"{len(unlogged)} recovery point(s) have no journal entry ({', '.join(s[:8] for s in unlogged[:5])}"
            f"{', ...' if len(unlogged) > 5 else ''}): written by a recovault older than the journal, or by a "
            "backup stopped between storing the point and logging it; they are intact, but their deletion "
            "would go unnoticed")
    unknown = sorted({e.op for e in journal.entries.values() if e.op not in OPS and e.op != POLICY_OP})
    if unknown:
        report.warnings.append(f"journal entries with op(s) {', '.join(unknown)} unknown to this recovault "
                               "(written by a newer one) were not taken into account")
