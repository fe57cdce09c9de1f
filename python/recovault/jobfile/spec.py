"""The job file: its typed model (`JobSpec` and one dataclass per table) and `load_job(path)`.

A job file is TOML (read with `tomllib`), one job per file, named by the file's stem (`web.toml` -> `web`).
Every problem is collected, not only the first: an unknown key, a wrong type, a missing vault or passphrase
source, a bad hook, a bad rate, duration or day rule. `load_job` raises one `JobFileError` (a UsageError,
exit 2) whose message lists them as `FILE:LINE: message`, one per line. tomllib gives no positions, so
`scan_lines` finds the line of each table and key with a small scan of the text (tables, dotted keys,
arrays of tables, multi-line arrays and strings); a problem whose key it cannot place is reported at its
table's line.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, List, NamedTuple, Optional

from ..errors import UsageError
from ..retention import Policy
from .locations import job_name, valid_name
from .values import BadValue, check_bool, check_str, type_name

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: the same parser as a package (pyproject: tomli there)
    import tomli as tomllib  # type: ignore[no-redef]

if TYPE_CHECKING:
    from .report import ReportSpec

PASSPHRASE_KEYS = ("passphrase_file", "passphrase_env", "passphrase_credential", "passphrase_command")
HOOK_FAILURE = ("abort", "continue")
DEFAULT_HOOK_TIMEOUT = "5m"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class Problem(NamedTuple):
    """One problem of a job file, at its line (0: the file itself)."""
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


class JobFileError(UsageError):
    """A job file that cannot be run: every problem, one `FILE:LINE: message` a line (exit 2)."""

    def __init__(self, problems: List[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# -- the model ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PassphraseSource:
    """Where the vault's passphrase comes from: `kind` is `file`, `env` (a variable's name), `credential` (a
    systemd credential: `$CREDENTIALS_DIRECTORY/NAME`) or `command` (run without a shell)."""
    kind: str
    value: str


@dataclass(frozen=True)
class VaultSpec:
    url: str
    passphrase: PassphraseSource
    cache_dir: Optional[str] = None
    key_file: Optional[str] = None  # a host key file: the passphrase is its, and the job only backs up


@dataclass(frozen=True)
class DayRule:
    """`full_on` / `differential_on`: weekdays (0 = Monday) and days of the month; empty: never."""
    weekdays: FrozenSet[int] = frozenset()
    monthdays: FrozenSet[int] = frozenset()

    def matches(self, day: date) -> bool:
        return day.weekday() in self.weekdays or day.day in self.monthdays

    def __bool__(self) -> bool:
        return bool(self.weekdays or self.monthdays)


@dataclass(frozen=True)
class BackupSpec:
    paths: List[str] = field(default_factory=list)
    exclude: List[str] = field(default_factory=list)
    exclude_file: List[str] = field(default_factory=list)
    exclude_caches: bool = False
    one_file_system: bool = False
    images: List[str] = field(default_factory=list)
    stdin_command: Optional[str] = None
    stdin_name: Optional[str] = None  # "stdin" when stdin_command is given without it
    host: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    full_on: DayRule = DayRule()
    differential_on: DayRule = DayRule()

    def mode_on(self, day: date) -> str:
        """The backup mode of a run on `day` (local): full on a `full_on` day (full wins), differential on
        a `differential_on` day, else incremental."""
        if self.full_on.matches(day):
            return "full"
        return "differential" if self.differential_on.matches(day) else "incremental"

    def point_paths(self) -> List[str]:
        """The paths the job's recovery points record (as backup records them): the paths, the images and
        the stream's name, made absolute."""
        named = [os.path.abspath(p) for p in self.paths + self.images]
        if self.stdin_command:
            named.append("/" + (self.stdin_name or "stdin").strip("/"))
        return sorted(set(named))


@dataclass(frozen=True)
class RetentionSpec:
    """The forget rules (restic's --keep-*), applied to this job's points after each backup that saved one,
    and whether (and how) to prune after."""
    policy: Policy
    prune: bool = False
    # prune's options (seconds, as --max-unused, a flag); None: prune's own default (jobs.prune.PruneOptions)
    prune_margin: Optional[float] = None
    prune_max_unused: Optional[str] = None
    prune_repack_small: Optional[bool] = None


@dataclass(frozen=True)
class ScheduleSpec:
    calendar: List[str] = field(default_factory=list)
    randomized_delay: str = "30min"
    persistent: bool = True


@dataclass(frozen=True)
class LimitsSpec:
    """Bandwidth limits (the common options --limit-upload ... --work-hours) and --connections."""
    upload: Any = None  # storage.limits.Rate
    download: Any = None
    upload_work: Any = None
    download_work: Any = None
    work_hours: Any = None  # storage.limits.WorkHours
    connections: int = 0  # 0: the storage's default

    @property
    def limited(self) -> bool:
        return any(r is not None for r in (self.upload, self.download, self.upload_work, self.download_work))

    def transfer_limits(self):  # -> storage.limits.TransferLimits
        from ..storage.limits import TransferLimits
        return TransferLimits.from_options(self.upload, self.download, self.upload_work, self.download_work,
                                           self.work_hours)


@dataclass(frozen=True)
class CheckSpec:
    """Run `check` when the last check by this job (in the history) is older than `every` seconds."""
    every: float
    every_text: str
    read_data: bool = False
    read_data_subset: Optional[str] = None


@dataclass(frozen=True)
class HookSpec:
    command: str
    argv: List[str]
    timeout: float  # seconds
    on_failure: str = "abort"  # or "continue"


@dataclass(frozen=True)
class HooksSpec:
    before: List[HookSpec] = field(default_factory=list)
    after: List[HookSpec] = field(default_factory=list)


@dataclass(frozen=True)
class JobSpec:
    name: str
    path: str
    vault: VaultSpec
    backup: BackupSpec
    retention: Optional[RetentionSpec]
    schedule: ScheduleSpec
    limits: LimitsSpec
    check: Optional[CheckSpec]
    hooks: HooksSpec
    report: Optional["ReportSpec"]  # [report] (jobfile/report.py); None: no reports
    lines: Dict[str, int]  # "section.key" -> line, for messages


# -- value checks: each returns the value converted, or raises BadValue(message) ----------------------------------

def _integer(v: Any) -> int:
    if type(v) is not int:
        raise BadValue(f"must be an integer, not {type_name(v)}")
    return v


def _strings(v: Any) -> List[str]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
        raise BadValue("must be an array of non-empty strings" + ("" if isinstance(v, list) else
                                                               f", not {type_name(v)}"))
    return list(v)


def _absolute(p: str) -> str:
    if not os.path.isabs(p):
        raise BadValue(f"{p!r} is not an absolute path (a job runs from any directory)")
    return os.path.normpath(p)


def _path(v: Any) -> str:
    return _absolute(check_str(v))


def _paths(v: Any) -> List[str]:
    return [_absolute(p) for p in _strings(v)]


def _credential(v: Any) -> str:
    """A systemd credential's name: read as $CREDENTIALS_DIRECTORY/NAME, loaded by the unit from
    /etc/credstore/NAME, so one path component (no '/', not '..')."""
    name = check_str(v)
    if not valid_name(name):
        raise BadValue(f"{name!r} is not a credential name (letters, digits, '_', '.' and '-')")
    return name


def _vault_url(v: Any) -> str:
    url = check_str(v)
    if "://" not in url and not url.startswith("ec:"):
        _absolute(url)
    return url


def _argv(v: Any) -> str:
    cmd = check_str(v)
    try:
        argv = shlex.split(cmd)
    except ValueError as e:
        raise BadValue(f"cannot split {cmd!r} into arguments: {e}") from None
    if not argv:
        raise BadValue("names no program")
    return cmd


def _usage(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    """A check made of a library parser that raises UsageError."""
    def check(v: Any) -> Any:
        try:
            return parse(check_str(v))
        except UsageError as e:
            raise BadValue(str(e)) from None
    return check


def parse_duration(text: str) -> float:
    """A time span as systemd writes them ("30s", "15min", "2h", "7d", "1h 30min": jobfile/timespan.py) in
    seconds; UsageError otherwise (zero is refused)."""
    from .timespan import parse_timespan
    try:
        seconds = parse_timespan(text, "duration")
    except UsageError:
        seconds = 0.0
    if seconds <= 0:
        raise UsageError(f"{text!r} is not a duration: use e.g. 30s, 15min, 2h, 7d (combinable: 1h 30min)")
    return seconds


def _timespan_text(v: Any) -> str:
    """A time span kept as written (a unit's RandomizedDelaySec=), checked; 0 allowed."""
    from .timespan import parse_timespan
    text = check_str(v)
    try:
        parse_timespan(text, "time span")
    except UsageError as e:
        raise BadValue(str(e)) from None
    return text


def _margin(v: Any) -> float:
    """prune --margin: a duration, or 0 (no backup runs beside the prune)."""
    return _usage(lambda t: 0.0 if t.strip() == "0" else parse_duration(t))(v)


def _max_unused(v: Any) -> str:
    from ..jobs.prune import MaxUnused
    _usage(MaxUnused.parse)(v)
    return v


def _rate(v: Any) -> Any:
    from ..storage.limits import parse_rate
    return _usage(parse_rate)(v)


def _work_hours(v: Any) -> Any:
    from ..storage.limits import parse_work_hours
    return _usage(parse_work_hours)(v)


def _connections(v: Any) -> int:
    n = _integer(v)
    if not 1 <= n <= 64:
        raise BadValue(f"{n} is not between 1 and 64")
    return n


def _count(v: Any) -> int:
    n = _integer(v)
    if n < -1:
        raise BadValue(f"{n}: a count is 0 or more, or -1 for unlimited")
    return n


def _within(v: Any) -> str:
    from ..retention import Duration
    _usage(Duration.parse)(v)
    return v


def _subset(v: Any) -> str:
    text = check_str(v)
    if not re.fullmatch(r"\d+/\d+|\d+(\.\d+)?%", text.strip()):
        raise BadValue(f"{text!r}: use 'n/m' or a percentage like '5%'")
    return text


def _stdin_name(v: Any) -> str:
    name = check_str(v).strip("/")
    if not name or any(part in ("", ".", "..") for part in name.split("/")):
        raise BadValue(f"{v!r} is not a valid file name")
    return v


def _day(text: str) -> int:
    t = text.strip().lower()
    for names in (WEEKDAYS, _FULL_DAYS):
        if t in names:
            return names.index(t)
    raise BadValue(f"{text!r} is not a weekday (Mon..Sun), a range of them (Mon..Fri) or a day of the month (1..31)")


def _day_rule(v: Any) -> DayRule:
    weekdays, monthdays = set(), set()
    for item in (part for s in _strings(v) for part in s.split(",")):
        item = item.strip()
        if item.isdigit():
            if not 1 <= int(item) <= 31:
                raise BadValue(f"{item!r} is not a day of the month (1..31)")
            monthdays.add(int(item))
            continue
        ends = re.split(r"\.\.|-", item)
        if len(ends) == 2:
            a, b = _day(ends[0]), _day(ends[1])
            weekdays.update((a + i) % 7 for i in range((b - a) % 7 + 1))
        else:
            weekdays.add(_day(item))
    return DayRule(frozenset(weekdays), frozenset(monthdays))


def _on_failure(v: Any) -> str:
    if check_str(v) not in HOOK_FAILURE:
        raise BadValue(f"{v!r}: use 'abort' (the job fails, nothing else runs) or 'continue' (a warning)")
    return v


def _calendar(v: Any) -> List[str]:
    # Here only their shape; _schedule checks each expression (jobfile/calendar.py).
    return _strings(v)


# Each table's keys: key -> check. [hooks] and [report] are read apart.
SCHEMA: Dict[str, Dict[str, Callable[[Any], Any]]] = {
    "vault": {"url": _vault_url, "passphrase_file": _path, "passphrase_env": check_str,
              "passphrase_credential": _credential, "passphrase_command": _argv, "cache_dir": _path,
              "key_file": _path},
    "backup": {"paths": _paths, "exclude": _strings, "exclude_file": _paths, "exclude_caches": check_bool,
               "one_file_system": check_bool, "images": _paths, "stdin_command": _argv, "stdin_name": _stdin_name,
               "host": check_str, "tags": _strings, "full_on": _day_rule, "differential_on": _day_rule},
    "retention": {**{f"keep_{w}": _count for w in ("last", "hourly", "daily", "weekly", "monthly", "yearly")},
                  **{f"keep_within{s}": _within for s in ("", "_hourly", "_daily", "_weekly", "_monthly",
                                                          "_yearly")},
                  "keep_tags": _strings, "prune": check_bool, "prune_margin": _margin,
                  "prune_max_unused": _max_unused, "prune_repack_small": check_bool},
    "schedule": {"calendar": _calendar, "randomized_delay": _timespan_text, "persistent": check_bool},
    "limits": {"upload": _rate, "download": _rate, "upload_work": _rate, "download_work": _rate,
               "work_hours": _work_hours, "connections": _connections},
    "check": {"every": _usage(parse_duration), "read_data": check_bool, "read_data_subset": _subset},
}
HOOK_KEYS: Dict[str, Callable[[Any], Any]] = {
    "command": _argv, "timeout": _usage(parse_duration),
    "on_failure": _on_failure,
}
TABLES = tuple(SCHEMA) + ("hooks", "report")


# -- where each key is: a small scan of the text -------------------------------------------------------------

_BARE = r'[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\''
_DOTTED = rf"(?:{_BARE})(?:\s*\.\s*(?:{_BARE}))*"
_HEADER = re.compile(rf"\s*(\[\[?)\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(rf"\s*({_DOTTED})\s*=")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'')


def _dotted(text: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in re.findall(_BARE, text))


def _balance(rest: str) -> int:
    """Brackets and braces opened minus closed in a value's text (strings and comments left out)."""
    code = _STRINGS.sub("", rest).split("#", 1)[0]
    return code.count("[") + code.count("{") - code.count("]") - code.count("}")


def scan_lines(text: str) -> Dict[str, int]:
    """"table.key" -> the line (from 1) where it is defined; tables too ("hooks"); the Nth table of an
    array of tables is "name.N" ("hooks.before.0", its keys "hooks.before.0.command")."""
    lines: Dict[str, int] = {}
    table, counts = "", {}  # type: Tuple[str, Dict[str, int]]
    multiline: Optional[str] = None  # the delimiter of a multi-line string being skipped
    depth = 0  # brackets a multi-line value holds open
    for n, line in enumerate(text.splitlines(), 1):
        if multiline:
            if line.count(multiline) % 2:
                multiline = None
            continue
        if depth > 0:
            depth += _balance(line)
            continue
        header = _HEADER.match(line)
        if header:
            table = _dotted(header.group(2))
            lines.setdefault(table, n)
            if header.group(1) == "[[":
                counts[table] = counts.get(table, -1) + 1
                table = f"{table}.{counts[table]}"
                lines.setdefault(table, n)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault(".".join(filter(None, (table, _dotted(key.group(1))))), n)
            rest = line[key.end():]
            for delim in ('"""', "'''"):
                if rest.count(delim) % 2:
                    multiline = delim
            if not multiline:
                depth = max(0, _balance(rest))
    return lines


# -- loading ---------------------------------------------------------------------------------------------------

class _Reader:
    """Reads the parsed document table by table, collecting every problem with its line."""

    def __init__(self, path: str, lines: Dict[str, int]) -> None:
        self.path = path
        self.lines = lines
        self.problems: List[Problem] = []

    def line(self, key: str) -> int:
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key.rpartition(".")[0]
        return 1

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.path, self.line(key), message))

    def table(self, doc: Dict[str, Any], name: str, schema: Dict[str, Callable[[Any], Any]],
              where: Optional[str] = None, label: Optional[str] = None) -> Dict[str, Any]:
        """The keys of table `name` (at `where` for lines, called `label` in messages) that pass their check,
        converted."""
        where = where or name
        prefix = label or where
        label = label or f"[{where}]"
        value = doc.get(name, {})
        if not isinstance(value, dict):
            self.problem(where, f"{where} must be a table ([{where}]), not {type_name(value)}")
            return {}
        out: Dict[str, Any] = {}
        for key, v in value.items():
            check = schema.get(key)
            if check is None:
                self.problem(f"{where}.{key}", f"unknown key {key!r} in {label}"
                             + _did_you_mean(key, schema))
                continue
            try:
                out[key] = check(v)
            except BadValue as e:
                self.problem(f"{where}.{key}", f"{prefix}.{key}: {e}")
        return out


def _did_you_mean(key: str, known: Dict[str, Any]) -> str:
    import difflib
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(known))})"


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except OSError as e:
        raise JobFileError([Problem(path, 0, f"cannot read the job file: {e.strerror or e}")]) from None
    except UnicodeDecodeError:
        raise JobFileError([Problem(path, 0, "the job file is not valid UTF-8")]) from None


def load_job(path: str) -> JobSpec:
    """The job file at `path`, checked; JobFileError listing every problem (`FILE:LINE: message`)."""
    path = os.path.abspath(path)
    text = _read_text(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        raise JobFileError([Problem(path, int(m.group(1)) if m else 0, f"not valid TOML: {msg}")]) from None
    r = _Reader(path, scan_lines(text))
    name = job_name(path)
    if not valid_name(name):
        r.problems.append(Problem(path, 0, f"job name {name!r} (the file's name without .toml) may hold only "
                                           "letters, digits, '_', '.' and '-'"))
    for key in doc:
        if key not in TABLES:
            r.problem(key, f"unknown table or key {key!r} (known: {', '.join(f'[{t}]' for t in TABLES)})")
    spec = JobSpec(name, path, _vault(r, doc), _backup(r, doc), _retention(r, doc), _schedule(r, doc),
                   _limits(r, doc), _check(r, doc), _hooks(r, doc),
                   _report(r, doc), r.lines)
    if r.problems:
        raise JobFileError(sorted(r.problems, key=lambda p: p.line))
    return spec


def _raw(doc: Dict[str, Any], name: str) -> Dict[str, Any]:
    """Table `name` as written (empty when missing or not a table: `_Reader.table` reports that)."""
    value = doc.get(name)
    return value if isinstance(value, dict) else {}


def _vault(r: _Reader, doc: Dict[str, Any]) -> VaultSpec:
    t = r.table(doc, "vault", SCHEMA["vault"])
    raw = _raw(doc, "vault")
    given = [k for k in PASSPHRASE_KEYS if k in raw]
    if "vault" not in doc:
        r.problem("", "no [vault] table: the job needs [vault] url and a passphrase source")
    elif "url" not in raw:
        r.problem("vault", "[vault] has no url (the vault's path or URL)")
    if "vault" in doc and not given:
        r.problem("vault", f"[vault] has no passphrase source: give one of {', '.join(PASSPHRASE_KEYS)}")
    elif len(given) > 1:
        r.problem(f"vault.{given[1]}", f"[vault] gives {' and '.join(given)}: the passphrase comes from one")
    source = next((PassphraseSource(k[len("passphrase_"):], t[k]) for k in given if k in t),
                  PassphraseSource("env", ""))
    admin_only = [name for name in ("retention", "check") if name in doc]
    if "key_file" in raw and admin_only:
        r.problem("vault.key_file", f"a host key can add backups only: a job with [vault] key_file has no "
                  f"[{'] or ['.join(admin_only)}] (the admin's job does that)")
    return VaultSpec(t.get("url", ""), source, t.get("cache_dir"), t.get("key_file"))


def _backup(r: _Reader, doc: Dict[str, Any]) -> BackupSpec:
    t = r.table(doc, "backup", SCHEMA["backup"])
    raw = _raw(doc, "backup")
    if not any(raw.get(k) for k in ("paths", "images", "stdin_command")):
        r.problem("backup", "nothing to back up: [backup] needs paths, images or stdin_command")
    if "stdin_name" in raw and "stdin_command" not in raw:
        r.problem("backup.stdin_name", "backup.stdin_name names the stream of stdin_command, which is not given")
    if "stdin_command" in t and "stdin_name" not in t:
        t["stdin_name"] = "stdin"
    return BackupSpec(**t)


def _retention(r: _Reader, doc: Dict[str, Any]) -> Optional[RetentionSpec]:
    if "retention" not in doc:
        return None
    t = r.table(doc, "retention", SCHEMA["retention"])
    prune = {k: t.pop(k) for k in list(t) if k.startswith("prune")}
    rules = dict(t)
    raw = _raw(doc, "retention")
    if not any(k.startswith("keep_") for k in raw):
        r.problem("retention", "[retention] has no keep_* rule: it would keep nothing (leave the table out to "
                               "forget nothing)")
        return None
    try:
        policy = Policy(**rules)
    except UsageError as e:
        r.problem("retention", f"[retention]: {e}")
        return None
    if policy.is_empty and len(rules) == sum(1 for k in raw if k.startswith("keep_")):
        r.problem("retention", "[retention]'s rules are all 0: they would keep nothing")
        return None
    return RetentionSpec(policy, **prune)


def _schedule(r: _Reader, doc: Dict[str, Any]) -> ScheduleSpec:
    t = r.table(doc, "schedule", SCHEMA["schedule"])
    for i, expr in enumerate(t.get("calendar", [])):
        for message in _calendar_problems(expr):
            r.problem("schedule.calendar", f"schedule.calendar[{i}] {expr!r}: {message}")
    return ScheduleSpec(**t)


def _calendar_problems(expr: str) -> List[str]:
    """The problems of one OnCalendar expression (jobfile/calendar.py: systemd-analyze where it exists)."""
    from . import calendar
    return calendar.problems(expr)


def _limits(r: _Reader, doc: Dict[str, Any]) -> LimitsSpec:
    t = r.table(doc, "limits", SCHEMA["limits"])
    if "work_hours" in t and "upload_work" not in t and "download_work" not in t:
        r.problem("limits.work_hours", "limits.work_hours needs a rate for them: upload_work or download_work")
    return LimitsSpec(**t)


def _check(r: _Reader, doc: Dict[str, Any]) -> Optional[CheckSpec]:
    if "check" not in doc:
        return None
    t = r.table(doc, "check", SCHEMA["check"])
    raw = _raw(doc, "check")
    if "every" not in raw:
        r.problem("check", "[check] has no 'every' (how often to check, e.g. every = \"7d\")")
        return None
    if t.get("read_data") and "read_data_subset" in t:
        r.problem("check.read_data_subset", "[check] gives read_data and read_data_subset: choose one")
    return CheckSpec(t["every"], raw["every"], t.get("read_data", False), t.get("read_data_subset")) \
        if "every" in t else None


def _hooks(r: _Reader, doc: Dict[str, Any]) -> HooksSpec:
    t = doc.get("hooks", {})
    if not isinstance(t, dict):
        r.problem("hooks", f"hooks must be a table ([hooks]), not {type_name(t)}")
        return HooksSpec()
    for key in t:
        if key not in ("before", "after"):
            r.problem(f"hooks.{key}", f"unknown key {key!r} in [hooks] (known: after, before)")
    return HooksSpec(_hook_list(r, t, "before"), _hook_list(r, t, "after"))


def _hook_list(r: _Reader, table: Dict[str, Any], when: str) -> List[HookSpec]:
    items = table.get(when, [])
    where = f"hooks.{when}"
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        r.problem(where, f"{where} must be an array of tables ({{command = \"...\", timeout = \"5m\", "
                         "on_failure = \"abort\"}})")
        return []
    hooks = []
    for i, item in enumerate(items):
        at = f"{where}.{i}" if f"{where}.{i}" in r.lines else where
        t = r.table({"hook": item}, "hook", HOOK_KEYS, where=at, label=f"{where}[{i}]")
        if "command" not in item:
            r.problem(at, f"{where}[{i}] has no command")
        if "command" in t:
            hooks.append(HookSpec(t["command"], shlex.split(t["command"]),
                                  t.get("timeout", parse_duration(DEFAULT_HOOK_TIMEOUT)), t.get("on_failure", "abort")))
    return hooks


def _report(r: _Reader, doc: Dict[str, Any]) -> Optional["ReportSpec"]:
    """The [report] table as a ReportSpec (jobfile/report.py), or None without one; its problems with their
    lines."""
    if "report" not in doc:
        return None
    from .report import ReportSpec, ReportTableError
    try:
        return ReportSpec.from_table(doc["report"], r.lines)
    except ReportTableError as e:
        for key, message in e.problems:
            r.problem(key, f"{key}: {message}")
        return None
