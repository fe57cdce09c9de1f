"""Where a job's run is reported: the job file's ``[report]`` table.

Three destinations, each optional: a command given the run record's JSON on its standard input (an argv
string split as a shell would, run without one; killed with its process group at ``report_command_timeout``),
syslog through the stdlib ``syslog`` module (identifier ``recovault``, so journald shows it as
``recovault[PID]``; priority err for a run that did not end ``ok``, info otherwise), and a webhook: a POST of
the JSON (``Content-Type: application/json``; one retry on a 5xx answer or a connection error; the URL's
``user:password@`` sent as HTTP basic authentication). ``on = "failure"`` reports only runs that did not end
``ok``.

``ReportSpec.from_table(table, lines)`` reads the table; every problem is a ``(key, message)`` pair of a
``ReportTableError`` (a ValueError). ``send(spec, record, on_warning)`` reports one run record (the dict of
``RunRecord.to_json()``) to each destination in turn: one that fails is one warning naming it, and nothing
raises, so a failed report never changes the run's outcome. Warnings never quote a secret: a webhook is named
by its scheme, host and port only (its path, query and credentials may all be tokens), a command by its
program only, and neither's output is repeated.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import shlex
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

from .. import __version__, timefmt
from ..errors import UsageError
from ..progress import human_bytes
from .process import kill_group
from .spec import parse_duration
from .timespan import parse_timespan
from .values import BadValue, check_bool, check_str

#: the syslog identifier (journald: SYSLOG_IDENTIFIER=recovault)
IDENT = "recovault"
#: `on`'s values: report every run, or only those that did not end "ok"
ON_VALUES = ("always", "failure")
DEFAULT_COMMAND_TIMEOUT = "60s"
DEFAULT_WEBHOOK_TIMEOUT = "30s"
#: a webhook is tried this many times when it answers 5xx or cannot be reached (never after a timeout)
WEBHOOK_ATTEMPTS = 2
#: seconds between two tries of a webhook
RETRY_DELAY = 1.0

#: systemd's time span units (systemd.time(7)), in seconds; none: seconds
#: log(priority, message): how a line reaches syslog (tests inject their own)
LogFunction = Callable[[int, str], None]


class ReportTableError(ValueError):
    """The ``[report]`` table has problems: ``problems`` lists each as (key, message), the key as the job
    file's ``lines`` name it ("report.webhook"), in the order of their lines."""

    def __init__(self, problems: List[Tuple[str, str]]) -> None:
        super().__init__(problems)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(f"{key}: {message}" for key, message in self.problems)


class _Failed(Exception):
    """One destination failed; the message says how (never a secret)."""


def _span_text(seconds: float) -> str:
    return f"{seconds:g}s"


def webhook_origin(url: str) -> str:
    """The part of a webhook URL that may be shown: scheme, host and port (no credentials, path or query)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


# -- the table -----------------------------------------------------------------------------------------------

def _command(value: Any) -> str:
    text = check_str(value, 'a command line, e.g. "/usr/local/bin/notify --json"', empty_ok=True)
    try:
        args = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"cannot split it into arguments: {exc}") from None
    if not args:
        raise ValueError("is empty")
    return text


def _timeout(value: Any) -> float:
    text = check_str(value, 'a time span, e.g. "30s" or "5min"')
    try:
        return parse_duration(text)
    except UsageError as exc:
        raise BadValue(str(exc)) from None


def _webhook(value: Any) -> str:
    """A webhook URL, checked without ever quoting it (it may carry a token)."""
    text = check_str(value, 'an http:// or https:// URL', empty_ok=True)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number in range)
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("has no host")
    if any(c.isspace() for c in text):
        raise ValueError("must not contain spaces (write them as %20)")
    return text


def _on(value: Any) -> str:
    text = check_str(value, '"always" or "failure"', empty_ok=True)
    if text not in ON_VALUES:
        raise ValueError(f'must be "always" or "failure", not {text!r}')
    return text


_PARSERS: Dict[str, Callable[[Any], Any]] = {
    "report_command": _command, "report_command_timeout": _timeout, "syslog": check_bool, "webhook": _webhook,
    "webhook_timeout": _timeout, "on": _on,
}


@dataclass(frozen=True)
class ReportSpec:
    """Where to report a job's runs (the ``[report]`` table). No destination: nothing is reported."""

    report_command: Optional[str] = None
    report_command_timeout: float = parse_timespan(DEFAULT_COMMAND_TIMEOUT)
    syslog: bool = False
    webhook: Optional[str] = None
    webhook_timeout: float = parse_timespan(DEFAULT_WEBHOOK_TIMEOUT)
    on: str = "always"

    @classmethod
    def from_table(cls, table: Mapping[str, Any], lines: Optional[Mapping[str, int]] = None) -> "ReportSpec":
        """The spec of a job file's ``[report]`` table (``{}``: no reports); ReportTableError listing every
        problem (unknown keys, wrong types, bad values), in the order of `lines` ("report.KEY" -> line)."""
        if not isinstance(table, Mapping):
            raise ReportTableError([("report", "must be a table ([report] with keys such as webhook = ...)")])
        values: Dict[str, Any] = {}
        problems: List[Tuple[str, str]] = []
        for key, value in table.items():
            parse = _PARSERS.get(key)
            if parse is None:
                problems.append((f"report.{key}", f"unknown key (known: {', '.join(_PARSERS)})"))
                continue
            try:
                values[key] = parse(value)
            except ValueError as exc:
                problems.append((f"report.{key}", str(exc)))
        if problems:
            where = lines or {}
            problems.sort(key=lambda p: where.get(p[0], 1 << 30))
            raise ReportTableError(problems)
        return cls(**values)

    @property
    def destinations(self) -> List[str]:
        """The destinations' names, in the order they are tried, as warnings name them."""
        return list(self._names().values())

    def _names(self) -> Dict[str, str]:
        """Each destination set ("command", "syslog", "webhook") -> its name for people: a webhook by its
        origin, a command by its program (the rest may hold secrets)."""
        names = {"command": f"command {_program(self.report_command)}"} if self.report_command else {}
        names.update({"syslog": "syslog"} if self.syslog else {})
        names.update({"webhook": f"webhook {webhook_origin(self.webhook)}"} if self.webhook else {})
        return names

    def wants(self, record: Mapping[str, Any]) -> bool:
        """Whether `record` is reported: always, or with ``on = "failure"`` a run that did not end ok."""
        return self.on == "always" or failed(record)


def failed(record: Mapping[str, Any]) -> bool:
    """A run that did not end ``ok`` (partial, failed, interrupted) is a failure for reports."""
    return record.get("status") != "ok"


# -- sending -------------------------------------------------------------------------------------------------

def send(spec: ReportSpec, record: Mapping[str, Any], on_warning: Callable[[str], None], *,
         log: Optional[LogFunction] = None, hide_env: Iterable[str] = ()) -> None:
    """Report `record` (a run record's JSON dict) to each of `spec`'s destinations; each that fails is one
    warning to `on_warning` ("report to webhook https://host failed: ..."). Never raises
    (KeyboardInterrupt aside). `log` replaces the syslog call (priority, message). The command's environment
    is ours without the variables named in `hide_env` (the job's passphrase variable) or with PASSPHRASE in
    their name."""
    if not spec.wants(record):
        return
    try:
        body = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    except (TypeError, ValueError) as exc:
        _warn(on_warning, f"report: the run record cannot be written as JSON ({type(exc).__name__})")
        return
    deliveries: Dict[str, Callable[[], None]] = {
        "command": lambda: _run_command(spec, body, _command_env(record, hide_env)),
        "syslog": lambda: (log or syslog_line)(priority(record), summary(record)),
        "webhook": lambda: _post(spec, body),
    }
    for destination, name in spec._names().items():
        try:
            deliveries[destination]()
        except _Failed as exc:
            _warn(on_warning, f"report to {name} failed: {exc}")
        except Exception as exc:  # noqa: BLE001 (a report never fails the run; its text may hold a URL)
            _warn(on_warning, f"report to {name} failed: {type(exc).__name__}")


def _warn(on_warning: Callable[[str], None], message: str) -> None:
    try:
        on_warning(message)
    except Exception:  # noqa: BLE001 (a warning that cannot be shown must not stop the other reports)
        pass


def _program(command: str) -> str:
    """The program of an argv string (what warnings name: its arguments may be secrets)."""
    try:
        args = shlex.split(command)
    except ValueError:
        args = []
    return args[0] if args else "(empty)"


def _command_env(record: Mapping[str, Any], hide: Iterable[str]) -> Dict[str, str]:
    """The report command's environment: ours, less what may hold a passphrase, plus the job and status."""
    hidden = set(hide)
    env = {k: v for k, v in os.environ.items() if k not in hidden and "PASSPHRASE" not in k.upper()}
    env.update(RECOVAULT_JOB=str(record.get("job") or ""), RECOVAULT_JOB_STATUS=str(record.get("status") or ""))
    return env


def _run_command(spec: ReportSpec, body: bytes, env: Mapping[str, str]) -> None:
    """Run the report command with `body` on its stdin; its stdout and stderr go to our stderr (stdout stays
    `job run --json`'s document); killed with its process group at the timeout."""
    assert spec.report_command is not None
    args = shlex.split(spec.report_command)
    try:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=2, env=env, start_new_session=True)
    except OSError as exc:
        raise _Failed(f"cannot run it: {exc.strerror or type(exc).__name__}") from None
    try:
        proc.communicate(body, timeout=spec.report_command_timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise _Failed(f"still running after {_span_text(spec.report_command_timeout)}: killed") from None
    finally:
        if proc.poll() is None:
            kill_group(proc)
    if proc.returncode != 0:
        code = proc.returncode
        raise _Failed(f"killed by signal {-code}" if code < 0 else f"exit {code}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook that redirects fails: urllib would turn the POST into a GET without the JSON."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def _webhook_request(url: str, body: bytes) -> urllib.request.Request:
    """The POST of `body` to `url`; credentials in the URL become an Authorization header."""
    parts = urlsplit(url)
    headers = {"Content-Type": "application/json", "User-Agent": f"recovault/{__version__}"}
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode("utf-8")
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    return urllib.request.Request(urlunsplit(parts), data=body, headers=headers, method="POST")


def _post(spec: ReportSpec, body: bytes) -> None:
    """POST the JSON; a 2xx answer is success. A 5xx answer or a connection error is tried again (once, by
    default) after RETRY_DELAY; a timeout is not (the server may be handling it: no second report)."""
    assert spec.webhook is not None
    request = _webhook_request(spec.webhook, body)
    opener = urllib.request.build_opener(_NoRedirect)  # per call: the proxy variables as they are now
    failure = ""
    for attempt in range(WEBHOOK_ATTEMPTS):
        if attempt:
            time.sleep(RETRY_DELAY)
        try:
            opener.open(request, timeout=spec.webhook_timeout).close()  # a 2xx: its body is not read
            return
        except urllib.error.HTTPError as exc:
            exc.close()
            failure = f"it answered HTTP {exc.code}{_phrase(exc.code)}"
            if exc.code < 500:
                raise _Failed(failure + (" (redirects are not followed)" if exc.code < 400 else "")) from None
        except (socket.timeout, TimeoutError):
            raise _Failed(f"no answer within {_span_text(spec.webhook_timeout)}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (socket.timeout, TimeoutError)):
                raise _Failed(f"no answer within {_span_text(spec.webhook_timeout)}") from None
            failure = f"cannot connect: {_reason(exc.reason)}"
        except http.client.RemoteDisconnected:
            failure = "it closed the connection without an answer"
        except http.client.HTTPException:
            failure = "its answer is not HTTP"
        except OSError as exc:  # reset while sending or reading
            failure = f"connection failed: {_reason(exc)}"
    raise _Failed(f"{failure} (tried {WEBHOOK_ATTEMPTS} times)" if WEBHOOK_ATTEMPTS > 1 else failure)


def _phrase(code: int) -> str:
    """The standard reason phrase of `code` (never the server's own text)."""
    try:
        return " " + HTTPStatus(code).phrase
    except ValueError:
        return ""


def _reason(reason: Any) -> str:
    """An error's cause without its text where that may quote the URL: an OS error's strerror, else its
    type."""
    if isinstance(reason, OSError) and reason.strerror:
        return str(reason.strerror)
    if isinstance(reason, str):
        return reason
    return type(reason).__name__


# -- syslog --------------------------------------------------------------------------------------------------

def priority(record: Mapping[str, Any]) -> int:
    """The syslog priority of a run: err when it did not end ok, info else."""
    import syslog
    return syslog.LOG_ERR if failed(record) else syslog.LOG_INFO


def syslog_line(level: int, message: str) -> None:
    """One line to syslog (journald collects it) as ``recovault[PID]``."""
    import syslog
    syslog.openlog(IDENT, syslog.LOG_PID)
    try:
        syslog.syslog(level, message)
    finally:
        syslog.closelog()


def summary(record: Mapping[str, Any]) -> str:
    """A run in one line, as syslog shows it: "job web: ok: incremental backup 1a2b3c4d, 120 files, 5.0 MB
    read, 1.2 MB added, 0 errors, 3.4s, run 7"."""
    status = record.get("status") or "unknown"
    details: List[str] = []
    if record.get("message"):
        details.append(" ".join(str(record["message"]).split()))
    backup = f"{record['mode']} backup" if record.get("mode") else "backup"
    snapshot = record.get("snapshot")
    details.append(f"{backup} {str(snapshot)[:8]}" if snapshot else f"{backup}: no recovery point")
    if record.get("files") is not None:
        details.append(f"{record['files']} files")
    for key, what in (("bytes_read", "read"), ("bytes_added", "added")):
        if isinstance(record.get(key), (int, float)):
            details.append(f"{human_bytes(record[key], False)} {what}")
    if record.get("errors"):
        details.append(f"{record['errors']} errors")
    seconds = _seconds(record.get("start"), record.get("end"))
    if seconds is not None:
        details.append(f"{seconds:.1f}s")
    if record.get("exit_code"):
        details.append(f"exit {record['exit_code']}")
    if record.get("id") is not None:
        details.append(f"run {record['id']}")
    return f"job {record.get('job') or '?'}: {status}: " + ", ".join(details)


def _seconds(start: Any, end: Any) -> Optional[float]:
    try:
        return (timefmt.parse_time(end) - timefmt.parse_time(start)).total_seconds()
    except (TypeError, ValueError, AttributeError):
        return None
