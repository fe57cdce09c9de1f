"""What every command shares: the common options (--vault, --passphrase-file, --passphrase-command, --cache-dir,
--cache-max, --json, --quiet, --verbose, the bandwidth limits --limit-upload and friends) and the `Ctx` object
they fill, which opens the vault and speaks to people (results on stdout, warnings on stderr).

The common options are accepted before the command name (`recovault --vault V snapshots`) and after it
(`recovault snapshots --vault V`): `common_options` adds them to the group and to every command, without
passing them to the command function; their callback stores each value in the one `Ctx` (click's `ctx.obj`,
shared by the group and its commands). A value on the command line wins over the environment (`envvar`),
and one given after the command name over one given before it.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple, Union

import click
from click.core import ParameterSource

from ..errors import UsageError
from ..progress import ProgressReporter, notice, warn

if TYPE_CHECKING:
    from ..storage.limits import Rate, TransferLimits, WorkHours
    from ..selection import PointFilter
    from ..storage.wrappers import StorageMetrics
    from ..vault.records import RecoveryPoint
    from ..vault.repo import Vault


class Ctx:
    """The common options' values, and the output of one run (created once, in `main` or by the group)."""

    def __init__(self) -> None:
        self.location: Optional[str] = None
        self.passphrase_file: Optional[str] = None  # "-": standard input
        self.passphrase_command: Optional[str] = None
        self.key_file: Optional[str] = None  # --key-file: a host key file (backups only)
        self._passphrase: Optional[str] = None  # read once: stdin and a command cannot be read twice
        self.from_env: Set[str] = set()  # the attributes whose value came from the environment
        self._cache_dir: Optional[str] = None
        self.cache_max: Optional["CacheSize"] = None  # None: not given (cache_hygiene.DEFAULT_CACHE_MAX)
        loaded = sys.modules.get("recovault.vault.cache")  # what earlier runs in this process wrote to caches
        self._cache_written_before = loaded.bytes_written() if loaded is not None else 0
        self.json = False
        self.quiet = False  # --quiet: errors, warnings and the --json document only
        self.verbose = 0  # --verbose (-v, -vv): the vault opened, each file as it is backed up or restored
        self.connections = 0  # 0: the storage's default (blobstore.default_connections)
        self.json_printed = False  # the --json result was printed: a later error must not print a second document
        # Bandwidth limits (storage/limits.py), parsed by their options' types; applied by open_storage.
        self.limit_upload: Optional["Rate"] = None
        self.limit_download: Optional["Rate"] = None
        self.limit_upload_work: Optional["Rate"] = None
        self.limit_download_work: Optional["Rate"] = None
        self.work_hours: Optional["WorkHours"] = None
        #: Requests, bytes and errors per storage operation of this run (every storage it opens).
        self.metrics: Optional["StorageMetrics"] = None
        self._wired = False
        # Point selection (`point_options`): --host/--path/--tag, --all-hosts.
        self.point_hosts: Tuple[str, ...] = ()
        self.point_paths: Tuple[str, ...] = ()
        self.point_tags: Tuple[str, ...] = ()
        self.all_hosts = False

    def wire_storage(self) -> None:
        """Make open_storage apply the limit options and count into `metrics`: done when a command decorated
        with `common_options` starts running (after all its options are parsed; never for --help, which
        must not import the storage layer), and by `open`."""
        if self._wired:
            return
        from ..storage import wrappers
        self.metrics = wrappers.StorageMetrics()
        wrappers.configure_process(limits=self.transfer_limits, metrics=self.metrics)
        self._wired = True

    def unwire_storage(self) -> None:
        """Undo `wire_storage` (the end of a run). With RECOVAULT_STORAGE_METRICS=FILE, the run's storage
        requests, bytes and errors per operation are written to FILE as one JSON object (for benches and
        scripts: what an unchanged backup downloaded, what a resumed one uploaded)."""
        if not self._wired:
            return
        from ..storage import wrappers
        wrappers.configure_process()
        self._wired = False
        path = os.environ.get("RECOVAULT_STORAGE_METRICS")
        if path and self.metrics is not None:
            tmp = f"{path}.tmp{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.metrics.as_dict(), f, sort_keys=True)
            os.replace(tmp, path)

    def transfer_limits(self) -> "TransferLimits":
        from ..storage.limits import TransferLimits
        return TransferLimits.from_options(self.limit_upload, self.limit_download, self.limit_upload_work,
                                           self.limit_download_work, self.work_hours)

    @property
    def cache_dir(self) -> str:
        if not self._cache_dir:
            from ..api import default_cache_dir
            self._cache_dir = default_cache_dir()
        return self._cache_dir

    @property
    def cache_max_bytes(self) -> Optional[int]:
        """The agent cache's size cap in bytes (None: unlimited)."""
        if self.cache_max is None:
            from ..vault.cache_hygiene import DEFAULT_CACHE_MAX
            return DEFAULT_CACHE_MAX
        return self.cache_max.bytes

    def tidy_cache(self) -> None:
        """After a run that wrote into the agent cache: hold it to --cache-max and remove the directories of
        vaults unused for 30 days, when due (vault/cache_hygiene.py: hourly, or at once when the cap may be
        exceeded). Best effort: never fails a run."""
        if self._cache_dir is None or "recovault.vault.cache" not in sys.modules:
            return
        from ..vault import cache, cache_hygiene
        written = cache.bytes_written() - self._cache_written_before
        if written > 0:
            try:
                cache_hygiene.tidy_if_due(self._cache_dir, self.cache_max_bytes, written)
            except Exception:  # noqa: BLE001 - an accelerator's upkeep: the command itself has succeeded or failed
                pass

    def need_location(self) -> str:
        if not self.location:
            raise UsageError("no vault given: use --vault PATH or set RECOVAULT_VAULT")
        return self.location

    def passphrase_source(self) -> Tuple[Optional[str], Optional[str]]:
        """(passphrase file, passphrase command), at most one of them set: one given on the command line wins
        over one from the environment (RECOVAULT_PASSPHRASE_FILE, RECOVAULT_PASSPHRASE_COMMAND); two from
        the same place are refused."""
        file, command = self.passphrase_file, self.passphrase_command
        if file is not None and command is not None:
            file_env, command_env = "passphrase_file" in self.from_env, "passphrase_command" in self.from_env
            if file_env != command_env:
                return (None, command) if file_env else (file, None)
            both = ("RECOVAULT_PASSPHRASE_FILE and RECOVAULT_PASSPHRASE_COMMAND are both set" if file_env
                    else "give --passphrase-file or --passphrase-command, not both")
            raise UsageError(f"{both}: the passphrase comes from one of them")
        return file, command

    def passphrase(self, confirm: bool = False) -> str:
        """The vault's passphrase (read_passphrase: a file, '-' for standard input, a command, the environment
        or a prompt), read once per run."""
        if self._passphrase is None:
            from ..vault.keys import read_passphrase
            file, command = self.passphrase_source()
            self._passphrase = read_passphrase(file, prompt=True, confirm=confirm, on_warning=self.warn,
                                               command=command)
        return self._passphrase

    def open(self, quiet: bool = False, write: bool = False, host_ok: bool = False) -> "Vault":
        """The vault, unlocked. What it notices while opening is printed as warnings, unless `quiet` (a command
        that reports the same findings itself, as check does). A command that writes says `write=True`: a
        vault of an older format is then upgraded first, with one notice line saying so. With --key-file (a
        host key), only a command that says `host_ok` (backup) opens it; every other is refused (HostKeyOnly)
        before the passphrase is asked for."""
        import time
        from ..storage import open_storage
        from ..vault.repo import Vault
        if not host_ok:
            self.refuse_host_key()
        self.wire_storage()
        t0 = time.monotonic()
        on_event = self._notices if quiet else self.vault_event
        if self.key_file is not None:
            from ..vault.hostvault import open_host
            v: Vault = open_host(open_storage(self.need_location()), self.key_file, self.passphrase(),
                                 cache_dir=self.cache_dir, on_event=on_event, connections=self.connections)
        else:
            v = Vault.open(open_storage(self.need_location()), self.passphrase(), cache_dir=self.cache_dir,
                           on_event=on_event, write=write, connections=self.connections)
        self.info(f"opened vault {v.id[:8]} at {v.storage.url} (format {v.format_version}, key {v.keyid[:12]}) "
                  f"in {time.monotonic() - t0:.2f}s")
        return v

    def refuse_host_key(self) -> None:
        """HostKeyOnly if a host key file was given (--key-file, RECOVAULT_KEY_FILE): the command is the
        admin's."""
        if self.key_file is not None:
            from ..errors import HostKeyOnly
            from ..vault.hostvault import HOST_KEY_ONLY
            raise HostKeyOnly(HOST_KEY_ONLY)

    @property
    def chatty(self) -> bool:
        """Whether to tell people more than the result (progress, steps, hints): not with --json or --quiet."""
        return not self.json and not self.quiet

    def progress(self, verb: str, unit: str = "files") -> Union[ProgressReporter, "FileLog"]:
        """The progress callback of a job: a bar on a terminal unless --json or --quiet; with --verbose, a
        line per file instead (`recovault: backing up PATH`)."""
        reporter = ProgressReporter(self.chatty and not self.verbose, verb, unit)
        return FileLog(reporter, verb) if self.verbose and not self.quiet else reporter

    def info(self, message: str) -> None:
        """A line for --verbose (on stderr), else nothing."""
        if self.verbose and not self.quiet:
            click.echo(f"recovault: {message}", err=True)

    @property
    def where(self) -> "PointFilter":
        """The --host/--path/--tag filter of this run (`point_options`)."""
        from ..selection import PointFilter
        return PointFilter(self.point_hosts, self.point_paths, self.point_tags)

    def select_point(self, v: "Vault", spec: str,
                     points: Optional[List["RecoveryPoint"]] = None) -> "RecoveryPoint":
        """The recovery point SPEC names (id, prefix, 'latest') among those the filter options select;
        'latest' defaults to this host when they come from several (said on stderr), unless --all-hosts."""
        import socket
        from ..selection import select_point
        return select_point(v, spec, self.where, None if self.all_hosts else socket.gethostname(),
                            on_notice=self.notice, points=points)

    def select_points(self, points: List["RecoveryPoint"]) -> List["RecoveryPoint"]:
        """The points the filter options select (NotFound when a filter is given and selects none)."""
        from ..selection import select_points
        return select_points(points, self.where)

    def vault_event(self, kind: str, info: Dict[str, Any]) -> None:
        """What the vault notices on the way (a damaged index skipped, a damaged recovery point left out), and
        what it did (kind "notice": the vault was upgraded)."""
        if kind == "problem":
            self.warn(info["message"])
        self._notices(kind, info)

    def _notices(self, kind: str, info: Dict[str, Any]) -> None:
        if kind == "notice" and not self.quiet:
            self.notice(info["message"])

    def out(self, data: Any, text: str) -> None:
        """The command's result: `data` as one JSON document with --json, else `text` (if any; not with
        --quiet)."""
        if self.json:
            click.echo(json.dumps(data, indent=None, sort_keys=True, default=str))
            self.json_printed = True
        elif text and not self.quiet:
            click.echo(text)

    #: A warning on stderr (with --json too: stdout is for the result); an `on_warning` callable for the
    #: library. A job's warnings come through its progress callback (progress.ProgressReporter).
    warn = staticmethod(warn)
    #: Something done on the way that is no problem (a vault upgraded), on stderr.
    notice = staticmethod(notice)


class FileLog:
    """--verbose: a job's progress callback that prints a line per file done (`recovault: VERB PATH`, on
    stderr) and hands every event on to the reporter it wraps (its warnings, a bar it may draw)."""

    def __init__(self, reporter: ProgressReporter, verb: str) -> None:
        self.reporter = reporter
        self.verb = verb

    def __enter__(self) -> "FileLog":
        self.reporter.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.reporter.__exit__(*exc)

    def warn(self, message: str) -> None:
        self.reporter.warn(message)

    def __call__(self, kind: str, info: Dict[str, Any]) -> None:
        if kind == "file":
            path = os.fsdecode(info.get("path", "")).encode("utf-8", "backslashreplace").decode()
            click.echo(f"recovault: {self.verb} {path}", err=True)
        self.reporter(kind, info)


pass_ctx = click.make_pass_decorator(Ctx, ensure=True)


def examples(*lines: str) -> str:
    """A command's epilog: examples of it in use, as `recovault COMMAND --help` shows them (unwrapped: click
    keeps a paragraph starting with \\b as written). Every command has some (tests/test_help.py)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


@dataclass(frozen=True)
class CacheSize:
    """--cache-max: the cap in bytes (None: unlimited) as given (an object, so 0 and unlimited are values)."""
    bytes: Optional[int]
    text: str


class _CacheSize(click.ParamType):
    name = "SIZE"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        if not isinstance(value, str):
            return value
        from ..vault.cache_hygiene import parse_size
        try:
            return CacheSize(parse_size(value, "--cache-max"), value)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


class _Limit(click.ParamType):
    """An option value parsed by a function of storage/limits.py (imported only when the option is given)."""

    def __init__(self, name: str, parser: str) -> None:
        self.name = name
        self._parser = parser

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        if not isinstance(value, str):
            return value
        from ..storage import limits
        try:
            return getattr(limits, self._parser)(value)
        except UsageError as exc:
            envvar = getattr(param, "envvar", None)
            if ctx is not None and param is not None and envvar and \
                    ctx.get_parameter_source(param.name or "") is ParameterSource.ENVIRONMENT:
                raise UsageError(f"{envvar}: {exc}") from None
            self.fail(str(exc), param, ctx)


# (option names, the Ctx attribute it sets, click.option keywords). Add a common option here. The _entry
# module glances at --vault/-r, --passphrase-file and their environment variables before click is even
# imported (to derive the key meanwhile): keep it in step when one of those changes or gains an envvar.
COMMON_OPTIONS: Tuple[Tuple[Tuple[str, ...], str, dict], ...] = (
    (("--vault", "-r"), "location",
     dict(envvar="RECOVAULT_VAULT", help="The vault: a directory, azure://CONTAINER[/PREFIX] or s3://BUCKET[/PREFIX]. Env: RECOVAULT_VAULT.")),
    (("--passphrase-file",), "passphrase_file",
     dict(envvar="RECOVAULT_PASSPHRASE_FILE", metavar="FILE",
          help="Read the passphrase from FILE ('-': standard input). Env: RECOVAULT_PASSPHRASE_FILE.")),
    (("--passphrase-command",), "passphrase_command",
     dict(envvar="RECOVAULT_PASSPHRASE_COMMAND", metavar="CMD",
          help="Run CMD (no shell) and read the passphrase from its output, as restic's --password-command. "
               "Env: RECOVAULT_PASSPHRASE_COMMAND.")),
    (("--key-file",), "key_file",
     dict(envvar="RECOVAULT_KEY_FILE", metavar="FILE",
          help="Open the vault with the host key in FILE ('key add --role host --export'): backups only. "
               "Env: RECOVAULT_KEY_FILE.")),
    (("--cache-dir",), "_cache_dir", dict(help="Agent cache (default ~/.cache/recovault).")),
    (("--cache-max",), "cache_max",
     dict(type=_CacheSize(), envvar="RECOVAULT_CACHE_MAX",
          help="Cap the agent cache at SIZE (500M, 2GiB, unlimited; default 512MiB), least recently used "
               "files evicted first. Env: RECOVAULT_CACHE_MAX.")),
    (("--json",), "json", dict(is_flag=True, help="Machine-readable output on stdout: one JSON document "
                                                 "(docs/json.md).")),
    (("--quiet", "-q"), "quiet", dict(is_flag=True, help="No progress, notices or result text (failures, warnings "
                                      "and the --json document still print).")),
    (("--verbose", "-v"), "verbose", dict(count=True, help="Say more (on stderr): the vault opened, each file as it "
                                          "is backed up or restored (no progress bar then).")),
    (("--connections",), "connections",
     dict(type=click.IntRange(1, 64), help="Requests to the vault's storage at once: pack uploads, restore and "
          "check reads (default: 2 for a local directory, 5 for an object store).")),
    (("--limit-upload",), "limit_upload",
     dict(type=_Limit("RATE", "parse_rate"), envvar="RECOVAULT_LIMIT_UPLOAD",
          help="Send at most RATE (20MiB, 100Mbit, unlimited); outside --work-hours if --limit-upload-work "
               "is given.")),
    (("--limit-download",), "limit_download",
     dict(type=_Limit("RATE", "parse_rate"), envvar="RECOVAULT_LIMIT_DOWNLOAD",
          help="Receive at most RATE; outside --work-hours if --limit-download-work is given.")),
    (("--limit-upload-work",), "limit_upload_work",
     dict(type=_Limit("RATE", "parse_rate"), envvar="RECOVAULT_LIMIT_UPLOAD_WORK",
          help="Send at most RATE during --work-hours.")),
    (("--limit-download-work",), "limit_download_work",
     dict(type=_Limit("RATE", "parse_rate"), envvar="RECOVAULT_LIMIT_DOWNLOAD_WORK",
          help="Receive at most RATE during --work-hours.")),
    (("--work-hours",), "work_hours",
     dict(type=_Limit("HOURS", "parse_work_hours"), envvar="RECOVAULT_WORK_HOURS", metavar="'DAYS HH:MM-HH:MM'",
          help="When the -work rates apply, in local time (default 'Mon-Fri 08:00-18:00'; ';' between windows).")),
)


def _store(attr: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if not value:  # not given (or empty, as before): leave what an earlier place set
            return
        obj = ctx.ensure_object(Ctx)
        from_env = ctx.get_parameter_source(param.name or "") is ParameterSource.ENVIRONMENT
        if from_env and getattr(obj, attr):
            return  # the environment never overrides the command line before the command name
        setattr(obj, attr, value)
        if from_env:
            obj.from_env.add(attr)
        else:
            obj.from_env.discard(attr)
    return callback


def common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add the common options to a group or command (they fill `Ctx`, the function does not receive them).
    When a command (not a group: its subcommand's options are not parsed yet) runs, every storage it opens
    gets the limit options and the run's metrics (`Ctx.wire_storage`); --help never gets there."""
    @functools.wraps(f)
    def run(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        if not isinstance(ctx.command, click.Group):
            ctx.ensure_object(Ctx).wire_storage()
        return f(*args, **kwargs)
    g: Callable[..., Any] = run
    for names, attr, kw in reversed(COMMON_OPTIONS):
        g = click.option(*names, expose_value=False, callback=_store(attr), **kw)(g)
    return g


def _store_points(attr: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value:
            if attr == "point_paths":  # as backup records them: absolute, normalized ("srv/" in / is "/srv")
                value = tuple(os.path.abspath(p) for p in value)
            setattr(ctx.ensure_object(Ctx), attr, value)
    return callback


#: The point selection options (`point_options`): (names, Ctx attribute, click.option keywords).
POINT_OPTIONS: Tuple[Tuple[Tuple[str, ...], str, dict], ...] = (
    (("--host",), "point_hosts", dict(multiple=True, help="Only recovery points of this host (repeatable: any).")),
    (("--path",), "point_paths",
     dict(multiple=True, help="Only recovery points that include this backed-up path (repeatable: all).")),
    (("--tag",), "point_tags", dict(multiple=True, metavar="TAG[,TAG]",
                                   help="Only recovery points with these tags (repeatable: any; '' = untagged).")),
    (("--all-hosts",), "all_hosts",
     dict(is_flag=True, help="'latest' is the latest of any host (default: of this host when the recovery "
          "points come from several).")),
)


def point_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add --host/--path/--tag/--all-hosts to a command that chooses recovery points: they fill `Ctx` (the
    function does not receive them); the command calls `Ctx.select_point` or `Ctx.select_points`."""
    g = f
    for names, attr, kw in reversed(POINT_OPTIONS):
        g = click.option(*names, attr, expose_value=False, callback=_store_points(attr), **kw)(g)
    return g
