"""Fault injection: a Storage wrapper that fails the way real storage fails, for the reliability suite.

:class:`FaultStorage` wraps any back end and, by rule or at random with a seed, makes its calls fail:

* ``eio``: an I/O error (``StorageError``), nothing done;
* ``enospc``: a full disk on a write (``StorageError``), nothing done;
* ``timeout``: the store did not answer (``StoreUnavailable``), nothing done;
* ``torn``: a write that stores only a prefix of the data, then fails (``StorageError``);
* ``lostack``: the write (or delete) happened, but the caller sees an error (``StoreUnavailable``);
* ``slow``: the call succeeds after a delay.

A plan may also kill the process (SIGKILL, no clean-up of any kind) just before its Nth storage call,
counted over every storage the process opens: kill -9 at a chosen point.

The CLI (and anything that opens storage with ``open_storage``) applies the plan in the environment
variable :data:`ENV`, and only then: a value that does not parse is refused (``UsageError``), so a typo never
runs a command without the faults it asked for, and nothing else turns them on. Its form, ``key=value``
items separated by commas::

    RECOVAULT_FAULTS="seed=7,rate=0.05,kinds=eio+torn+lostack,ops=put+get,after=20,kill=42,rule=torn@put:index/#2"

``seed`` (default 0) and ``rate`` (a probability per call, default 0) drive the random faults, of ``kinds``
(default: all) on ``ops`` (default: all); the first ``after`` calls to each storage are spared (a vault is
opened cleanly). ``rule=KIND@OP[:PREFIX][#N[+]]`` (repeatable) injects KIND on every call of OP on a name
starting with PREFIX, or only on the Nth such call (``#N+``: the Nth and every later one); each rule counts
the calls it matches, the first rule that fires decides. ``kill=N`` kills the process before its Nth call;
``tally=PATH`` writes the number of calls made to PATH when the process exits (to choose kill points spread
over a command); ``delay`` is the seconds a slow call takes (default 0.05). With threads, the seed fixes the
sequence of decisions, not which thread's call meets each one. docs/reliability.md has what it found.
"""
from __future__ import annotations

import atexit
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, FrozenSet, Optional, Set, Tuple, Union

from ..errors import NoSpace, StorageError, StoreUnavailable, UsageError
from .base import ObjectInfo, Storage, stream_pieces
from .wrappers import StorageWrapper

__all__ = ["ENV", "KINDS", "OPS", "FaultPlan", "FaultRule", "FaultStorage", "calls", "from_environment", "parse_plan"]

#: The environment variable the CLI reads its fault plan from.
ENV = "RECOVAULT_FAULTS"
KINDS = ("eio", "enospc", "timeout", "torn", "lostack", "slow")
OPS = ("put", "put_if_absent", "get", "list", "stat", "delete")
_WRITES = frozenset({"put", "put_if_absent"})
#: The kinds each operation can meet (a read cannot be torn; a full disk fails writes only).
_APPLIES = {
    "eio": frozenset(OPS), "timeout": frozenset(OPS), "slow": frozenset(OPS),
    "enospc": _WRITES, "torn": _WRITES, "lostack": _WRITES | {"delete"},
}

Data = Union[bytes, bytearray, memoryview]


@dataclass(frozen=True)
class FaultRule:
    """Inject ``kind`` on calls of ``op`` on names starting with ``prefix``: every one, or only the ``nth``
    (``onward``: the nth and every later one)."""

    kind: str
    op: str
    prefix: str = ""
    nth: Optional[int] = None
    onward: bool = False


@dataclass(frozen=True)
class FaultPlan:
    """What a :class:`FaultStorage` injects (see the module's doc)."""

    seed: int = 0
    rate: float = 0.0
    kinds: FrozenSet[str] = frozenset(KINDS)
    ops: FrozenSet[str] = frozenset(OPS)
    after: int = 0
    kill: Optional[int] = None
    delay: float = 0.05
    rules: Tuple[FaultRule, ...] = ()
    tally: Optional[str] = None

    def may_fault(self, op: str) -> bool:
        """Whether any call of ``op`` may meet a fault."""
        random_ok = self.rate > 0 and op in self.ops and any(op in _APPLIES[k] for k in self.kinds)
        return random_ok or any(r.op == op for r in self.rules)


class _Counter:
    """Storage calls made by this process (every FaultStorage shares it: ``kill=N`` counts them all)."""

    lock = threading.Lock()
    calls = 0
    tallies: Set[str] = set()


@dataclass
class _Decider:
    plan: FaultPlan
    rng: random.Random = field(init=False)
    matched: dict = field(default_factory=dict)
    own: int = 0  # this storage's calls (``after`` counts them)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.plan.seed)

    def decide(self, op: str, name: str) -> Optional[str]:
        """The fault this call meets (None: none); kills the process first if this is the planned call."""
        with _Counter.lock:
            _Counter.calls += 1
            call = _Counter.calls
            self.own += 1
            if self.plan.kill is not None and call >= self.plan.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            fired = None
            for i, rule in enumerate(self.plan.rules):  # each rule counts every call it matches
                if rule.op == op and name.startswith(rule.prefix):
                    self.matched[i] = self.matched.get(i, 0) + 1
                    count = self.matched[i]
                    if fired is None and (rule.nth is None or rule.nth == count or (rule.onward and count > rule.nth)):
                        fired = rule.kind
            if fired is not None:
                return fired
            plan = self.plan
            if self.own <= plan.after or plan.rate <= 0 or op not in plan.ops:
                return None
            if self.rng.random() >= plan.rate:
                return None
            kinds = sorted(k for k in plan.kinds if op in _APPLIES[k])
            return self.rng.choice(kinds) if kinds else None


def _error(kind: str, op: str, name: str, url: str) -> StorageError:
    what = f"{op} {name} on {url}" if name else f"{op} on {url}"
    if kind == "enospc":
        return NoSpace(f"no space left on device while writing {name} to {url} (injected fault)")
    if kind == "timeout":
        return StoreUnavailable(f"timed out: {what} (injected fault)")
    if kind == "torn":
        return StorageError(f"connection lost part way through writing {name} to {url} (injected fault)")
    if kind == "lostack":
        return StoreUnavailable(f"connection reset before the answer to {what} (injected fault)")
    return StorageError(f"input/output error: {what} (injected fault)")


class FaultStorage(StorageWrapper):
    """Injects the faults of ``plan`` into the calls made to ``inner`` (thread-safe)."""

    def __init__(self, inner: Storage, plan: FaultPlan) -> None:
        super().__init__(inner)
        self.plan = plan
        self._decider = _Decider(plan)

    def _before(self, op: str, name: str = "") -> Optional[str]:
        """Decide this call's fault; raise the ones that happen before anything is done."""
        kind = self._decider.decide(op, name)
        if kind == "slow":
            time.sleep(self.plan.delay)
            return None
        if kind in ("eio", "enospc", "timeout"):
            raise _error(kind, op, name, self.url)
        return kind

    def _write(self, op: str, name: str, data: Data, do: Callable[[Data], object]) -> object:
        kind = self._before(op, name)
        if kind == "torn":
            view = memoryview(data).cast("B")
            do(view[:len(view) // 2])
            raise _error(kind, op, name, self.url)
        result = do(data)
        if kind == "lostack":
            raise _error(kind, op, name, self.url)
        return result

    def put(self, name: str, data: Data) -> None:
        self._write("put", name, data, lambda d: self._inner.put(name, d))

    def put_stream(self, name: str, stream: BinaryIO, size: int) -> None:
        buf = bytearray()
        for piece in stream_pieces(name, stream, size):
            buf += piece
        self.put(name, buf)

    def put_if_absent(self, name: str, data: Data) -> bool:
        inner = self._inner
        return bool(self._write("put_if_absent", name, data, lambda d: inner.put_if_absent(name, d)))

    def get(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        self._before("get", name)
        return self._inner.get(name, offset, length)

    def stat(self, name: str) -> ObjectInfo:
        self._before("stat", name)
        return self._inner.stat(name)

    def exists(self, name: str) -> bool:
        self._before("stat", name)
        return self._inner.exists(name)

    def delete(self, name: str) -> None:
        kind = self._before("delete", name)
        self._inner.delete(name)
        if kind == "lostack":
            raise _error(kind, "delete", name, self.url)

    def list(self, prefix: str = ""):  # type: ignore[no-untyped-def]
        self._before("list", prefix)
        return self._inner.list(prefix)

    def list_info(self, prefix: str = ""):  # type: ignore[no-untyped-def]
        self._before("list", prefix)
        return self._inner.list_info(prefix)

    @property
    def streams_puts(self) -> bool:  # type: ignore[override]
        return False

    def local_path(self, name: str) -> Optional[str]:
        """None when reads may fail (they must then go through ``get``), else the back end's path."""
        return None if self.plan.may_fault("get") else self._inner.local_path(name)


def _parse_rule(text: str) -> FaultRule:
    kind, _, rest = text.partition("@")
    rest, _, nth = rest.partition("#")
    op, _, prefix = rest.partition(":")
    if kind not in KINDS or op not in OPS or op not in _APPLIES[kind]:
        raise ValueError(f"rule {text!r}: KIND@OP[:PREFIX][#N[+]], a kind of {', '.join(KINDS)} on an op it applies to")
    onward = nth.endswith("+")
    return FaultRule(kind, op, prefix, int(nth.rstrip("+")) if nth else None, onward)


def _names(value: str, allowed: Tuple[str, ...], what: str) -> FrozenSet[str]:
    names = frozenset(value.split("+"))
    if not names <= set(allowed):
        raise ValueError(f"unknown {what} {', '.join(sorted(names - set(allowed)))} (known: {', '.join(allowed)})")
    return names


def parse_plan(text: str) -> FaultPlan:
    """The plan ``text`` writes (the module's doc gives the form); ``UsageError`` naming what is wrong."""
    fields: dict = {}
    rules = []
    try:
        for item in filter(None, (s.strip() for s in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r} is not key=value")
            if key == "rule":
                rules.append(_parse_rule(value))
            elif key in ("seed", "after", "kill"):
                fields[key] = int(value)
            elif key == "tally":
                fields[key] = value
            elif key in ("rate", "delay"):
                fields[key] = float(value)
            elif key == "kinds":
                fields[key] = _names(value, KINDS, "fault kind")
            elif key == "ops":
                fields[key] = _names(value, OPS, "operation")
            else:
                raise ValueError(f"unknown key {key!r}")
        plan = FaultPlan(rules=tuple(rules), **fields)
        if not 0 <= plan.rate <= 1 or plan.delay < 0 or (plan.kill is not None and plan.kill < 1):
            raise ValueError("rate must be in [0, 1], delay >= 0 and kill >= 1")
    except ValueError as exc:
        raise UsageError(f"invalid {ENV}={text!r}: {exc}") from None
    return plan


def calls() -> int:
    """The storage calls made so far through every FaultStorage of this process."""
    return _Counter.calls


def _write_tally(path: str) -> None:
    with open(path, "w") as f:
        f.write(f"{calls()}\n")


def from_environment() -> Optional[FaultPlan]:
    """The plan in :data:`ENV`, None when it is not set (or empty). A plan's ``tally`` file is written when
    the process exits (once, however many storages it opens)."""
    text = os.environ.get(ENV, "")
    if not text.strip():
        return None
    plan = parse_plan(text)
    if plan.tally and plan.tally not in _Counter.tallies:
        _Counter.tallies.add(plan.tally)
        atexit.register(_write_tally, plan.tally)
    return plan
