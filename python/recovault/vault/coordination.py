"""How prune and running backups coordinate without a lock that blocks backups (docs/vault-format.md §10):
sessions (`sessions/<32 hex>`: one per running backup, its heartbeat and the plans it has seen), the prune
lease (`locks/<32 hex>`: one prune at a time) and plans (`plans/<64 hex>`: what a prune will delete after
a margin). Each is one sealed JSON document (a plan also carries a binary list of blob IDs); the storage
mtime of a session is its heartbeat.

`Coordinator` reads and writes these objects; `WriterSession` is a backup's registration (with its heartbeat
thread); `LeaseHolder` is a prune's lease (with its renewal thread). Library code: nothing here prints.

On storage that refuses overwriting and deleting (a create-only Azure SAS, S3 credentials without
s3:DeleteObject, an append-only directory) a writer keeps the **create-only** session protocol (§10.2): its
session is the object `sessions/<id>` put once, each later put (the plans it read, every heartbeat) a new
object `sessions/<id>-<seq>`, and its end an object `sessions/<id>-end` instead of a deletion; a prune (with
delete rights) reads a session from its newest object and deletes them all once it is dead or ended. A
writer switches to it at the first overwrite or deletion of its session the storage refuses (AccessDenied).
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

from .. import core, jsondoc, timefmt
from ..errors import AccessDenied, Busy, CorruptData, ObjectMissing, RecovaultError, StorageError
from ..storage import Storage
from ..storage.base import ObjectInfo, put_or_withdraw
from . import format as fmt
from .sealing import Sealer

SESSION_TIMEOUT = 15 * 60  # a session whose heartbeat is older is dead (unless its process is alive here)
HEARTBEAT = 60  # a session is re-put, a lease renewed, this often
LEASE_TERM = 10 * 60  # a lease expires this long after its last renewal
#: A writer whose heartbeat stopped this long (its process was stopped, its host slept, or the storage
#: refused the puts) may have been taken for dead: it revalidates before it saves its recovery point.
LAPSE = SESSION_TIMEOUT // 3
PLAN_PREFIX = struct.Struct("<I")  # the length of a plan's JSON part
#: The name suffix of a create-only session's end (`sessions/<id>-end`); its puts are `-<8 hex seq>`.
SESSION_END = "end"

Clock = Callable[[], float]


def _elapsed() -> float:
    """Seconds on a clock that counts a stopped process and a suspended host (CLOCK_BOOTTIME on Linux)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_space() -> str:
    """Which pids this process can check: the boot and the pid namespace (two containers may share a host
    name but not their pids). "" where the system does not say (then the host name alone decides)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f"{f.read().strip()}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


PID_SPACE = _pid_space()


def _here(host: str, pid_space: str, this_host: str) -> bool:
    """Whether a record's pid can be checked from here: same host, same boot, same pid namespace."""
    return host == this_host and pid_space == PID_SPACE


def _text(doc: dict, key: str) -> str:
    """Field `key` of a session, lease or plan document: a string, else ValueError (KeyError if absent)."""
    value = doc[key]
    if type(value) is not str:
        raise ValueError(f"{key} is not a string")
    return value


def _time(doc: dict, key: str) -> str:
    """A time field (§9), checked to parse (ValueError), as stored."""
    value = _text(doc, key)
    timefmt.parse_time(value)
    return value


def _pid(doc: dict) -> int:
    """The `pid` field: a process id (what os.kill takes), else ValueError."""
    pid = doc["pid"]
    if type(pid) is not int or not 0 <= pid < 1 << 31:
        raise ValueError("pid is not a process id")
    return pid


def _stamp(seconds: float) -> str:
    return timefmt.format_time(datetime.fromtimestamp(seconds, timezone.utc))


def _seconds(stamp: str) -> float:
    return timefmt.parse_time(stamp).timestamp()


@dataclass
class Session:
    """A running backup's registration. `plans` None: it has not read the plans yet (or is revalidating),
    which blocks every plan."""
    name: str
    host: str
    pid: int
    started: str
    plans: Optional[List[str]]
    mtime: float  # the storage's: the last heartbeat
    pid_space: str = ""
    #: Its objects (names under `sessions/`): one for the v2 protocol; the registration, every later put
    #: and the end for the create-only one. Removing the session deletes them all.
    objects: List[str] = field(default_factory=list)
    ended: bool = False  # a create-only session whose (authentic) end object is stored

    def live(self, storage_now: float, host: str) -> bool:
        """Not ended, and its heartbeat is younger than SESSION_TIMEOUT (both on the storage's clock), or its
        process is alive here."""
        if self.ended:
            return False
        return (storage_now - self.mtime < SESSION_TIMEOUT
                or (_here(self.host, self.pid_space, host) and pid_alive(self.pid)))

    def has_seen(self, plan: str) -> bool:
        return self.plans is not None and plan in self.plans

    def to_json(self) -> dict:
        return {"name": self.name, "host": self.host, "pid": self.pid, "started": self.started,
                "plans": self.plans, "heartbeat": _stamp(self.mtime)}


class SessionObject(NamedTuple):
    """One object of a session: `sessions/<id>` (seq 0), `sessions/<id>-<8 hex seq>` or `sessions/<id>-end`."""
    session: str  # the 32 hex id
    seq: int  # 0 for the registration; -1 for the end
    info: ObjectInfo

    @classmethod
    def parse(cls, info: ObjectInfo) -> Optional["SessionObject"]:
        """None for a name that is no session object's."""
        stem, _, suffix = fmt.name_to_id(info.name).partition("-")
        if len(stem) != 32 or not _is_hex(stem):
            return None
        if not suffix:
            return cls(stem, 0, info)
        if suffix == SESSION_END:
            return cls(stem, -1, info)
        if len(suffix) == 8 and _is_hex(suffix):
            return cls(stem, int(suffix, 16), info)
        return None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def session_object(session: str, seq: int) -> str:
    """The name (under `sessions/`) of `session`'s object `seq` (0: the registration; -1: the end)."""
    if seq == 0:
        return session
    return f"{session}-{SESSION_END if seq < 0 else format(seq, '08x')}"


@dataclass
class Lease:
    """The prune lease: held until `expires` (renewed while its prune runs), or while its process lives."""
    name: str
    op: str
    host: str
    pid: int
    started: str
    expires: str
    pid_space: str = ""

    def held(self, now: float, host: str) -> bool:
        """Until it expires; where its process can be checked (same host, boot and pid namespace), exactly
        while it lives (a prune killed here frees it at once; a live one holds it even past an expiry its
        stalled renewal missed)."""
        if _here(self.host, self.pid_space, host) and self.pid:
            return pid_alive(self.pid)
        return _seconds(self.expires) > now

    def to_json(self) -> dict:
        return {"name": self.name, "op": self.op, "host": self.host, "pid": self.pid, "started": self.started,
                "expires": self.expires}


@dataclass
class Plan:
    """Phase 1's decision: the packs to delete (`condemned`) and the blobs they hold that no retained
    recovery point referenced (`garbage`, concatenated 32-byte IDs), which writers that have seen the plan
    never reference. Deleted (with its packs) by phase 2, after the margin."""
    time: str
    host: str
    condemned: List[bytes]
    garbage: bytes
    points: List[str] = field(default_factory=list)  # the recovery points whose trees were walked
    name: str = ""
    mtime: float = 0.0

    def encode(self) -> bytes:
        doc = json.dumps({"v": 1, "time": self.time, "host": self.host,
                          "condemned": sorted(p.hex() for p in self.condemned), "points": sorted(self.points)},
                         sort_keys=True, separators=(",", ":")).encode()
        return PLAN_PREFIX.pack(len(doc)) + doc + self.garbage

    @classmethod
    def decode(cls, plain: bytes, name: str, mtime: float) -> "Plan":
        try:
            (n,) = PLAN_PREFIX.unpack_from(plain, 0)
            doc = jsondoc.parse(plain[PLAN_PREFIX.size:PLAN_PREFIX.size + n])
            garbage = plain[PLAN_PREFIX.size + n:]
            if doc["v"] != 1 or len(garbage) % 32 or PLAN_PREFIX.size + n > len(plain):
                raise ValueError("bad layout")
            condemned = [bytes.fromhex(p) for p in doc["condemned"]]
            if any(len(p) != 32 for p in condemned):
                raise ValueError("a condemned pack is not a pack ID")
            return cls(_time(doc, "time"), _text(doc, "host"), condemned, garbage, [str(p) for p in doc["points"]],
                       name, mtime)
        except (ValueError, KeyError, TypeError, struct.error) as e:
            raise CorruptData(f"plan {name} is corrupt: {e}") from None

    def age(self, now: float, storage_now: float) -> float:
        """How old it is: the lesser of the age by its stored time (on this host's clock) and by its storage
        mtime (on the storage's clock): a clock that is off makes a plan look younger, never older."""
        return min(now - _seconds(self.time), storage_now - self.mtime)

    def garbage_ids(self) -> List[bytes]:
        return [self.garbage[i:i + 32] for i in range(0, len(self.garbage), 32)]


class Coordinator:
    """Reads and writes sessions, leases and plans of one vault (sealed with its keys)."""

    def __init__(self, storage: Storage, sealer: Sealer, host: Optional[str] = None, clock: Clock = time.time) -> None:
        self.storage = storage
        self.sealer = sealer
        self.host = host or socket.gethostname()
        self.clock = clock
        self.damaged_plans: List[Tuple[str, str]] = []  # from the last plans()
        # From the last sessions() and leases(): (name, why) of each that could not be read (check warns)
        self.damaged_sessions: List[Tuple[str, Exception]] = []
        self.damaged_leases: List[Tuple[str, Exception]] = []
        self.skew = 0.0  # the storage's clock minus this host's (measure_skew), for ages read off mtimes

    def storage_now(self) -> float:
        """Now on the storage's clock, as far as `measure_skew` found it (else this host's)."""
        return self.clock() + self.skew

    def measure_skew(self, name: str) -> None:
        """Learn the storage's clock from the mtime of object `name`, just written. The put's own duration
        makes it read early: ages of sessions and plans read off mtimes then look younger, never older."""
        self.skew = self.storage.stat(name).mtime - time.time()

    def _put(self, name: str, aad: bytes, doc: dict, *, first: bool = False) -> None:
        """Store `doc` sealed under `name` (this process's random name); `first`: it is created now, so a
        failed put is withdrawn (a torn lease nobody can read would be held for a lease term). A renewal is
        never withdrawn: the object it renews stays, with its heartbeat."""
        sealed = self.sealer.seal(aad, json.dumps(doc, sort_keys=True).encode())
        if first:
            put_or_withdraw(self.storage, name, sealed)
        else:
            self.storage.put(name, sealed)

    def _get(self, name: str, aad: bytes) -> dict:
        doc = jsondoc.parse(self.sealer.unseal(aad, self.storage.get(name), name))
        if not isinstance(doc, dict) or doc.get("v") != 1:
            raise CorruptData(f"{name} is corrupt: not a version 1 document")
        return doc

    # ---- sessions --------------------------------------------------------------------------------
    def put_session(self, name: str, started: str, plans: Optional[List[str]], seq: Optional[int] = None) -> None:
        """Put session `name`'s document: the v2 object (`seq` None, put again at each heartbeat), or its
        create-only object `seq` (0 the registration, n > 0 a later put, -1 the end), which names the session
        and its seq inside, so a sealed object copied to another name is not believed."""
        doc = {"v": 1, "host": self.host, "pid": os.getpid(), "pid_space": PID_SPACE, "started": started,
               "plans": plans}
        if seq is not None and seq != 0:
            doc.update(session=name, seq=seq)
        self._put(fmt.SESSIONS + session_object(name, seq or 0), fmt.AAD_SESSION, doc)

    def sessions(self) -> List[Session]:
        """Every session on storage, each read from its newest object (a create-only session's objects are
        grouped by id; its mtime is the newest one's). One that cannot be read counts as a writer that has
        seen no plan (and is in `damaged_sessions`); a create-only end object counts only if it opens and names
        its session."""
        self.damaged_sessions = []
        groups: Dict[str, List[SessionObject]] = {}
        for info in self.storage.list_info(fmt.SESSIONS):
            obj = SessionObject.parse(info)
            if obj is not None:
                groups.setdefault(obj.session, []).append(obj)
        out = []
        for name, objects in groups.items():
            session = self._session(name, objects)
            if session is not None:
                out.append(session)
        return out

    def _session(self, name: str, objects: List[SessionObject]) -> Optional[Session]:
        mtime = max(o.info.mtime for o in objects)
        names = [o.info.name for o in objects]
        ended = any(o.seq < 0 and self._session_doc(o) is not None for o in objects)
        newest = max((o for o in objects if o.seq >= 0), key=lambda o: o.seq, default=None)
        if newest is None:  # only an end object (the others already deleted): one that does not open is kept
            return Session(name, "?", 0, "", None, mtime, objects=names, ended=ended)  # ... only until it is dead
        try:
            d = self._session_doc(newest, strict=True)
        except ObjectMissing:
            return None if len(objects) == 1 else Session(name, "?", 0, "", None, mtime, objects=names)
        if d is None:
            return Session(name, "?", 0, "", None, mtime, objects=names, ended=ended)
        return Session(name, d["host"], d["pid"], d["started"], d["plans"], mtime, str(d.get("pid_space", "")),
                       objects=names, ended=ended)  # _session_doc checked each field's type

    def _session_doc(self, obj: SessionObject, strict: bool = False) -> Optional[dict]:
        """The document of one session object, None if it does not open or does not name itself (`strict`:
        a vanished object raises ObjectMissing)."""
        try:
            d = self._get(obj.info.name, fmt.AAD_SESSION)
            if obj.seq != 0 and (d.get("session") != obj.session or d.get("seq") != obj.seq):
                raise CorruptData(f"{obj.info.name} names another session object")
            if not all(key in d for key in ("host", "pid", "started", "plans")):
                raise CorruptData(f"{obj.info.name} is not a session")
            plans = d["plans"]
            if plans is not None and (type(plans) is not list or not all(type(p) is str for p in plans)):
                raise ValueError("plans is neither null nor a list of names")
            _text(d, "host"), _pid(d), _text(d, "started")  # each of the right type, or ValueError
            return d
        except ObjectMissing:
            if strict:
                raise
            return None
        except (RecovaultError, ValueError, KeyError, TypeError) as e:
            if strict:  # the session's newest object: check warns of it
                self.damaged_sessions.append((obj.session, e))
            return None

    def delete_session(self, name: str) -> None:
        """Delete a v2 session's object (its writer's end)."""
        self.storage.delete(fmt.SESSIONS + name)

    def remove_session(self, session: Session) -> None:
        """Delete every object of `session` (prune, once it is dead or ended)."""
        for name in session.objects or [fmt.SESSIONS + session.name]:
            self.storage.delete(name)

    # ---- leases --------------------------------------------------------------------------------------
    def put_lease(self, name: str, started: str, op: str = "prune", *, first: bool = False) -> None:
        """Store (`first`: take) or renew lease `name`."""
        expires = _stamp(self.clock() + LEASE_TERM)
        self._put(fmt.LOCKS + name, fmt.AAD_LEASE, {"v": 1, "op": op, "host": self.host, "pid": os.getpid(),
                                                    "pid_space": PID_SPACE, "started": started,
                                                    "expires": expires}, first=first)

    def leases(self) -> List[Lease]:
        """Every lease on storage; an unreadable one is held for a lease term after its mtime (and is in
        `damaged_leases`)."""
        out = []
        self.damaged_leases = []
        for info in self.storage.list_info(fmt.LOCKS):
            name = fmt.name_to_id(info.name)
            try:
                d = self._get(info.name, fmt.AAD_LEASE)
                out.append(Lease(name, _text(d, "op"), _text(d, "host"), _pid(d), _text(d, "started"),
                                 _time(d, "expires"), str(d.get("pid_space", ""))))
            except ObjectMissing:
                continue
            except (RecovaultError, ValueError, KeyError, TypeError) as e:
                self.damaged_leases.append((name, e))
                stamp = _stamp(info.mtime)
                until = _stamp(info.mtime + LEASE_TERM)
                out.append(Lease(name, "?", "?", 0, stamp, until))
        return out

    def held_leases(self) -> List[Lease]:
        now = self.clock()
        return [lease for lease in self.leases() if lease.held(now, self.host)]

    def delete_lease(self, name: str) -> None:
        self.storage.delete(fmt.LOCKS + name)

    # ---- plans -----------------------------------------------------------------------------------------
    def put_plan(self, plan: Plan) -> str:
        sealed = self.sealer.seal(fmt.AAD_PLAN, plan.encode())
        plan.name = core.blake3(sealed).hex()
        self.storage.put(fmt.PLANS + plan.name, sealed)
        plan.mtime = self.storage_now()
        return plan.name

    def plans(self) -> List[Plan]:
        """Every pending plan that opens, oldest first. One that does not (damaged, or tampered with) is in
        `damaged_plans` (name, reason): no prune can carry it out either (it needs the same key and the same
        bytes), so nothing is ever deleted by it, and a writer may ignore it; prune deletes it."""
        out = []
        self.damaged_plans: List[Tuple[str, str]] = []
        for info in self.storage.list_info(fmt.PLANS):
            name = fmt.name_to_id(info.name)
            try:
                raw = self.storage.get(info.name)
            except ObjectMissing:
                continue  # carried out meanwhile
            try:
                plain = self.sealer.open_named(fmt.AAD_PLAN, raw, name, f"plan {name}")
                out.append(Plan.decode(plain, name, info.mtime))
            except CorruptData as e:
                self.damaged_plans.append((name, str(e)))
        return sorted(out, key=lambda p: (p.time, p.name))

    def delete_plan(self, name: str) -> None:
        self.storage.delete(fmt.PLANS + name)


class _Beat:
    """A daemon thread calling `beat()` every `every` seconds until stopped."""

    def __init__(self, beat: Callable[[], None], every: float, name: str) -> None:
        self._stop = threading.Event()
        self._beat = beat
        self._every = every
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._beat()
            except Exception:  # noqa: BLE001 - a failed beat is retried; the owner sees its lapse
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class WriterSession:
    """A backup's session (§10): registered before it lists plans and loads the index, then put again with
    the plans it has read and by a heartbeat thread, ended at the end (`close`). On storage that refuses
    overwriting or deleting it (AccessDenied) it keeps the create-only protocol from then on: each later put
    a new object, its end an object too (`create_only`, or learned). `lapsed` tells whether the heartbeat
    ever stopped long enough (LAPSE) that a prune may have taken it for dead."""

    def __init__(self, coord: Coordinator, heartbeat: float = HEARTBEAT, lapse: float = LAPSE,
                 create_only: bool = False) -> None:
        self.coord = coord
        self.name = secrets.token_hex(16)
        self.started = timefmt.now()
        self.plans: List[Plan] = []
        self.create_only = create_only
        self._seq = -1  # the last create-only object put (-1: none yet, not even the registration)
        self._seen: Optional[List[str]] = None
        self._heartbeat = heartbeat
        self._lapse = lapse
        self._last = _elapsed()
        self._lapsed = False
        self._lock = threading.Lock()
        self._put_lock = threading.Lock()  # one put at a time: the heartbeat thread and block_plans
        self._beat: Optional[_Beat] = None

    def open(self) -> List[Plan]:
        """Register (blocking every plan), read the pending plans, and say which were seen; the plans."""
        self.put()
        self.plans = self.coord.plans()
        self._seen = [p.name for p in self.plans]
        self.put()
        self._beat = _Beat(self.put, self._heartbeat, "recovault-session")
        return self.plans

    def put(self) -> None:
        with self._put_lock:
            self._store(self._seen)
        with self._lock:
            now = _elapsed()
            if now - self._last >= self._lapse:
                self._lapsed = True
            self._last = now

    def _store(self, plans: Optional[List[str]], end: bool = False) -> None:
        """Put the session (the v2 object again), or its next create-only object (`end`: its end)."""
        if not self.create_only and self._seq >= 0:
            try:
                self.coord.put_session(self.name, self.started, plans)
                return
            except AccessDenied:
                self.create_only = True  # the storage refuses overwriting: create-only from now on
        self._seq = -1 if end else self._seq + 1
        self.coord.put_session(self.name, self.started, plans, seq=self._seq)

    def block_plans(self) -> None:
        """Say "seen no plan" again (revalidation): every plan now waits for this writer."""
        self._seen = None
        self.put()

    @property
    def lapsed(self) -> bool:
        with self._lock:
            return self._lapsed or _elapsed() - self._last >= self._lapse

    def close(self) -> None:
        """End the session: delete its object, or (create-only, or the deletion refused) store its end."""
        if self._beat is not None:
            self._beat.stop()
            self._beat = None
        try:
            if not self.create_only:
                try:
                    self.coord.delete_session(self.name)
                    return
                except AccessDenied:
                    self.create_only = True
            with self._put_lock:
                if self._seq >= 0:  # registered
                    self._store(self._seen, end=True)
        except RecovaultError:
            pass  # left behind: its heartbeat stops, and a prune deletes it once it is dead


class LeaseHolder:
    """The prune lease (§10): `acquire` refuses (Busy) while another holds one, and breaks ties between two
    acquiring at once by (started, name); a thread renews it; `release` deletes it."""

    def __init__(self, coord: Coordinator, renew: float = HEARTBEAT) -> None:
        self.coord = coord
        self.name = secrets.token_hex(16)
        self.started = timefmt.now()
        self._renew = renew
        self._beat: Optional[_Beat] = None
        self._renewed = _elapsed()
        self._lost = False

    def _others(self) -> List[Lease]:
        return [lease for lease in self.coord.held_leases() if lease.name != self.name]

    def acquire(self) -> None:
        others = self._others()
        if others:
            raise Busy(_busy_message(others[0]))
        self.coord.put_lease(self.name, self.started, first=True)
        self.coord.measure_skew(fmt.LOCKS + self.name)
        mine = (self.started, self.name)
        earlier = [lease for lease in self._others() if (lease.started, lease.name) < mine]
        if earlier:
            self.coord.delete_lease(self.name)
            raise Busy(_busy_message(earlier[0]))
        self._renewed = _elapsed()
        self._beat = _Beat(self._put, self._renew, "recovault-lease")

    def _put(self) -> None:
        self.coord.put_lease(self.name, self.started)
        now = _elapsed()
        if now - self._renewed >= LEASE_TERM - 2 * HEARTBEAT:
            self._lost = True  # it may have expired meanwhile: another prune may have taken over
        self._renewed = now

    def ensure(self) -> None:
        """Raise (StorageError) if the lease may have expired since it was last renewed (the renewals failed,
        or this process was stopped): then another prune may be running, and this one must delete nothing
        more."""
        if self._lost or _elapsed() - self._renewed >= LEASE_TERM - 2 * HEARTBEAT:
            self._lost = True
            raise StorageError("the prune lease could not be renewed in time (the storage refused it, or this "
                               "process was stopped): stopped before deleting anything more; run prune again")

    def release(self) -> None:
        if self._beat is not None:
            self._beat.stop()
            self._beat = None
        self.coord.delete_lease(self.name)

    def __enter__(self) -> "LeaseHolder":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _busy_message(lease: Lease) -> str:
    return (f"another {lease.op if lease.op != '?' else 'prune'} holds the vault's lease (host {lease.host}, "
            f"pid {lease.pid}, since {lease.started}, until {lease.expires} unless renewed); nothing was changed")
