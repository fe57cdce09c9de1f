"""Job reports (jobfile/report.py): the [report] table, and each destination against the real thing: a local
HTTP server for the webhook, real scripts for the command, the syslog call injected."""
from __future__ import annotations

import base64
import json
import re
import shlex
import socket
import stat
import syslog
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from recovault.jobfile import report
from recovault.errors import UsageError
from recovault.jobfile.report import ReportSpec, ReportTableError, send
from recovault.jobfile.timespan import parse_timespan

SECRETS = ("s3cret", "TOKEN123", "qsecret", "alice")


def run_record(**changes: Any) -> Dict[str, Any]:
    """A run record's JSON as RunRecord.to_json() gives it (the fields of DESIGN12's seam)."""
    rec: Dict[str, Any] = {
        "id": 7, "job": "web", "file": "/etc/recovault/jobs/web.toml", "host": "web1",
        "start": "2026-11-26T01:30:00.000000Z", "end": "2026-11-26T01:30:03.400000Z", "status": "ok",
        "exit_code": 0, "mode": "incremental", "snapshot": "1a2b3c4d" + "0" * 56, "bytes_read": 5_000_000,
        "bytes_added": 1_200_000, "files": 120, "errors": 0, "message": None,
        "steps": [{"step": "backup", "status": "ok", "seconds": 3.1, "detail": None}], "pid": 4242,
    }
    rec.update(changes)
    return rec


FAILED = {"status": "failed", "exit_code": 10, "snapshot": None, "bytes_read": 0, "bytes_added": 0, "files": 0,
          "message": "no vault at /backup/vault"}


class Warnings(List[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


# -- the webhook's server ------------------------------------------------------------------------------------

class Hook:
    """A local HTTP server answering each request with the next planned status (then 200; 0: hang up
    without an answer), after an optional delay; it records what it received."""

    def __init__(self) -> None:
        self.plan: List[Tuple[int, float]] = []
        self.requests: List[Dict[str, Any]] = []
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, delay = hook.plan.pop(0) if hook.plan else (200, 0.0)
                if delay:
                    hook.release.wait(delay)
                if status == 0:  # hang up without an answer
                    self.close_connection = True
                    return
                self.send_response(status)
                if status in (301, 302):
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, rest: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{rest}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


@pytest.fixture(autouse=True)
def quick_retry(monkeypatch):
    """Retries without the wait, and no proxy between the webhook and the local server."""
    monkeypatch.setattr(report, "RETRY_DELAY", 0.01)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_webhook_posts_the_record_as_json(hook):
    rec, warnings = run_record(), Warnings()
    send(ReportSpec(webhook=hook.url("/hook/x?token=abc")), rec, warnings)
    assert warnings == []
    [req] = hook.requests
    assert req["path"] == "/hook/x?token=abc"
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["headers"]["User-Agent"].startswith("recovault/")
    assert "Authorization" not in req["headers"]
    assert json.loads(req["body"]) == rec


def test_webhook_credentials_in_the_url_are_basic_authentication(hook):
    url = hook.url("/hook").replace("http://", "http://alice:s3cret%21@")
    warnings = Warnings()
    send(ReportSpec(webhook=url), run_record(), warnings)
    assert warnings == []
    [req] = hook.requests
    assert req["headers"]["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cret!").decode()
    assert req["headers"]["Host"] == f"127.0.0.1:{hook.port}"


def test_webhook_5xx_is_tried_again(hook):
    hook.plan = [(500, 0.0)]
    warnings = Warnings()
    send(ReportSpec(webhook=hook.url()), run_record(), warnings)
    assert warnings == []
    assert len(hook.requests) == 2
    assert hook.requests[0]["body"] == hook.requests[1]["body"]


def test_webhook_connection_dropped_is_tried_again(hook):
    hook.plan = [(0, 0.0)]
    warnings = Warnings()
    send(ReportSpec(webhook=hook.url()), run_record(), warnings)
    assert warnings == []
    assert len(hook.requests) == 2


def test_webhook_dropped_twice_is_one_warning(hook):
    hook.plan = [(0, 0.0), (0, 0.0)]
    warnings = Warnings()
    send(ReportSpec(webhook=hook.url()), run_record(), warnings)
    assert warnings == [f"report to webhook http://127.0.0.1:{hook.port} failed: it closed the "
                        "connection without an answer (tried 2 times)"]


def test_webhook_failing_twice_is_one_warning_without_secrets(hook):
    hook.plan = [(503, 0.0), (500, 0.0)]
    url = hook.url("/hook/TOKEN123?key=qsecret").replace("http://", "http://alice:s3cret@")
    warnings = Warnings()
    send(ReportSpec(webhook=url), run_record(), warnings)
    assert len(hook.requests) == 2
    assert warnings == [f"report to webhook http://127.0.0.1:{hook.port} failed: it answered HTTP 500 Internal "
                        "Server Error (tried 2 times)"]


def test_webhook_4xx_and_redirects_are_not_tried_again(hook):
    hook.plan = [(404, 0.0), (302, 0.0)]
    warnings = Warnings()
    spec = ReportSpec(webhook=hook.url())
    send(spec, run_record(), warnings)
    send(spec, run_record(), warnings)
    assert [r["path"] for r in hook.requests] == ["/hook", "/hook"]  # the redirect's target never asked
    assert warnings[0].endswith("failed: it answered HTTP 404 Not Found")
    assert warnings[1].endswith("failed: it answered HTTP 302 Found (redirects are not followed)")


def test_webhook_unreachable_is_a_warning_without_secrets():
    port = free_port()
    warnings = Warnings()
    send(ReportSpec(webhook=f"http://alice:s3cret@127.0.0.1:{port}/TOKEN123?k=qsecret"), run_record(), warnings)
    assert warnings == [f"report to webhook http://127.0.0.1:{port} failed: cannot connect: Connection refused "
                        "(tried 2 times)"]


def test_webhook_timeout_is_a_warning_and_not_sent_twice(hook):
    hook.plan = [(200, 5.0)]
    warnings = Warnings()
    began = time.monotonic()
    send(ReportSpec(webhook=hook.url("/TOKEN123"), webhook_timeout=0.3), run_record(), warnings)
    assert time.monotonic() - began < 3
    assert warnings == [f"report to webhook http://127.0.0.1:{hook.port} failed: no answer within 0.3s"]
    assert len(hook.requests) == 1


# -- the command ---------------------------------------------------------------------------------------------

def script(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_command_gets_the_json_on_stdin_and_the_job_in_its_environment(tmp_path):
    (tmp_path / "my dir").mkdir()
    prog = script(tmp_path, "my dir/notify.sh",
                  'cat > "$1"; echo "$RECOVAULT_JOB $RECOVAULT_JOB_STATUS $2" > "$1.env"\n')
    out = tmp_path / "out.json"
    rec, warnings = run_record(**FAILED), Warnings()
    send(ReportSpec(report_command=f"{shlex.quote(prog)} {shlex.quote(str(out))} 'two words'"), rec, warnings)
    assert warnings == []
    assert json.loads(out.read_text()) == rec
    assert (tmp_path / "out.json.env").read_text() == "web failed two words\n"


def test_command_environment_has_no_passphrase(tmp_path, monkeypatch):
    monkeypatch.setenv("RECOVAULT_PASSPHRASE", "pp-one")
    monkeypatch.setenv("RECOVAULT_FROM_PASSPHRASE", "pp-two")
    monkeypatch.setenv("WEB_VAULT_KEY", "pp-three")
    monkeypatch.setenv("REPORT_TEST_KEPT", "kept")
    out = tmp_path / "env.txt"
    prog = script(tmp_path, "env.sh", f"env > {out}\n")
    send(ReportSpec(report_command=prog), run_record(), Warnings(), hide_env=["WEB_VAULT_KEY"])
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert not {"RECOVAULT_PASSPHRASE", "RECOVAULT_FROM_PASSPHRASE", "WEB_VAULT_KEY"} & set(env)
    assert (env["REPORT_TEST_KEPT"], env["RECOVAULT_JOB"], env["RECOVAULT_JOB_STATUS"]) == ("kept", "web", "ok")


def test_command_output_goes_to_stderr_never_stdout(tmp_path, capfd):
    prog = script(tmp_path, "talk.sh", "echo said-on-stdout; echo said-on-stderr >&2\n")
    send(ReportSpec(report_command=prog), run_record(), Warnings())
    out, err = capfd.readouterr()
    assert "said-on-stdout" not in out
    assert "said-on-stdout" in err and "said-on-stderr" in err


def test_command_failing_is_a_warning_naming_the_program_only(tmp_path):
    prog = script(tmp_path, "fail.sh", "cat >/dev/null; exit 3\n")
    warnings = Warnings()
    send(ReportSpec(report_command=f"{prog} --token TOKEN123"), run_record(), warnings)
    assert warnings == [f"report to command {prog} failed: exit 3"]


def test_command_that_does_not_read_its_input_is_fine(tmp_path):
    prog = script(tmp_path, "ignore.sh", "exit 0\n")
    warnings = Warnings()
    send(ReportSpec(report_command=prog), run_record(message="x" * 1_000_000), warnings)  # past any pipe's buffer
    assert warnings == []


def test_command_missing_is_a_warning(tmp_path):
    warnings = Warnings()
    send(ReportSpec(report_command=f"{tmp_path}/nowhere --token TOKEN123"), run_record(), warnings)
    assert warnings == [f"report to command {tmp_path}/nowhere failed: cannot run it: No such file or directory"]


def _gone(pid: int) -> bool:
    """The process has exited (no entry, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_command_that_hangs_is_killed_with_its_children(tmp_path):
    pidfile = tmp_path / "child.pid"
    prog = script(tmp_path, "hang.sh", f"sleep 60 & echo $! > {pidfile}; wait\n")
    warnings = Warnings()
    began = time.monotonic()
    send(ReportSpec(report_command=prog, report_command_timeout=0.5), run_record(), warnings)
    assert time.monotonic() - began < 10
    assert warnings == [f"report to command {prog} failed: still running after 0.5s: killed"]
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(child), "the command's child (sleep) survived the timeout"


def test_on_failure_reports_only_runs_that_did_not_end_ok(tmp_path):
    out = tmp_path / "out.json"
    prog = script(tmp_path, "notify.sh", f"cat >> {out}\n")
    spec = ReportSpec(report_command=prog, on="failure")
    warnings = Warnings()
    send(spec, run_record(), warnings)
    assert not out.exists()
    for status in ("partial", "failed", "interrupted"):
        send(spec, run_record(status=status), warnings)
    assert [json.loads(line)["status"] for line in out.read_text().splitlines()] == [
        "partial", "failed", "interrupted"]
    assert warnings == []


# -- syslog --------------------------------------------------------------------------------------------------

def test_syslog_priority_err_for_failed_runs_info_else():
    lines: List[Tuple[int, str]] = []
    spec = ReportSpec(syslog=True)
    send(spec, run_record(), Warnings(), log=lambda p, m: lines.append((p, m)))
    send(spec, run_record(**FAILED), Warnings(), log=lambda p, m: lines.append((p, m)))
    send(spec, run_record(status="partial", errors=2, exit_code=3), Warnings(),
         log=lambda p, m: lines.append((p, m)))
    assert [p for p, _ in lines] == [syslog.LOG_INFO, syslog.LOG_ERR, syslog.LOG_ERR]
    assert lines[0][1] == ("job web: ok: incremental backup 1a2b3c4d, 120 files, 5.0 MB read, 1.2 MB added, "
                           "3.4s, run 7")
    assert lines[1][1] == ("job web: failed: no vault at /backup/vault, incremental backup: no recovery point, "
                           "0 files, 0 B read, 0 B added, 3.4s, exit 10, run 7")
    assert "2 errors" in lines[2][1] and "exit 3" in lines[2][1]


def test_syslog_line_of_a_run_that_left_little_record():
    lines: List[Tuple[int, str]] = []
    rec = {"job": "web", "status": "interrupted", "mode": None, "snapshot": None, "files": None,
           "bytes_read": None, "bytes_added": None, "start": "2026-11-26T01:30:00.000000Z", "end": None}
    send(ReportSpec(syslog=True), rec, Warnings(), log=lambda p, m: lines.append((p, m)))
    assert lines == [(syslog.LOG_ERR, "job web: interrupted: backup: no recovery point")]


def test_syslog_line_uses_the_recovault_identifier(monkeypatch):
    calls: List[Tuple[str, tuple]] = []
    monkeypatch.setattr(syslog, "openlog", lambda *a, **k: calls.append(("openlog", a)))
    monkeypatch.setattr(syslog, "syslog", lambda *a: calls.append(("syslog", a)))
    monkeypatch.setattr(syslog, "closelog", lambda: calls.append(("closelog", ())))
    send(ReportSpec(syslog=True), run_record(**FAILED), Warnings())
    assert [c[0] for c in calls] == ["openlog", "syslog", "closelog"]
    assert calls[0][1][0] == "recovault"
    assert calls[1][1][0] == syslog.LOG_ERR and calls[1][1][1].startswith("job web: failed: ")


# -- every destination, and never an exception ---------------------------------------------------------------

def test_a_failing_destination_does_not_stop_the_others(tmp_path, hook):
    out = tmp_path / "out.json"
    prog = script(tmp_path, "notify.sh", f"cat > {out}\n")

    def broken_log(priority: int, message: str) -> None:
        raise OSError(5, "Input/output error")

    warnings = Warnings()
    spec = ReportSpec(report_command=prog, syslog=True, webhook=hook.url())
    assert spec.destinations == [f"command {prog}", "syslog", f"webhook http://127.0.0.1:{hook.port}"]
    send(spec, run_record(), warnings, log=broken_log)
    assert warnings == ["report to syslog failed: OSError"]
    assert out.exists() and len(hook.requests) == 1


def test_send_never_raises(tmp_path):
    def raising_warning(message: str) -> None:
        raise RuntimeError("cannot print")

    send(ReportSpec(report_command=f"{tmp_path}/nowhere"), run_record(), raising_warning)
    warnings = Warnings()
    send(ReportSpec(syslog=True), run_record(when=object()), warnings, log=lambda p, m: None)
    assert warnings == ["report: the run record cannot be written as JSON (TypeError)"]


def test_no_destination_sends_nothing():
    warnings = Warnings()
    spec = ReportSpec.from_table({}, {})
    assert spec.destinations == []
    send(spec, run_record(**FAILED), warnings, log=lambda p, m: warnings.append("logged"))
    assert warnings == []


# -- the [report] table --------------------------------------------------------------------------------------

def test_table_with_every_key():
    spec = ReportSpec.from_table({"report_command": "/usr/local/bin/notify --json", "report_command_timeout": "2min",
                                  "syslog": True, "webhook": "https://hooks.example.com/x?t=1",
                                  "webhook_timeout": "1m30s", "on": "failure"}, {})
    assert spec == ReportSpec(report_command="/usr/local/bin/notify --json", report_command_timeout=120.0, syslog=True,
                              webhook="https://hooks.example.com/x?t=1", webhook_timeout=90.0, on="failure")


def test_table_defaults():
    spec = ReportSpec.from_table({"webhook": "http://[::1]:8080/h"}, {})
    assert (spec.report_command, spec.report_command_timeout, spec.syslog, spec.webhook_timeout, spec.on) == (
        None, 60.0, False, 30.0, "always")
    assert spec.destinations == ["webhook http://[::1]:8080"]


def test_table_lists_every_problem_in_line_order():
    table = {"on": "sometimes", "webhook": "ftp://alice:s3cret@host/TOKEN123?k=qsecret", "syslog": "yes",
             "report_command": "notify 'unclosed", "report_command_timeout": "soon", "webhook_timeout": "0s",
             "emails": ["x"]}
    lines = {"report.report_command": 3, "report.report_command_timeout": 4, "report.syslog": 5,
             "report.webhook": 6, "report.webhook_timeout": 7, "report.on": 8, "report.emails": 9}
    with pytest.raises(ValueError) as info:
        ReportSpec.from_table(table, lines)
    assert isinstance(info.value, ReportTableError)
    assert info.value.problems == [
        ("report.report_command", "cannot split it into arguments: No closing quotation"),
        ("report.report_command_timeout", "'soon' is not a duration: use e.g. 30s, 15min, 2h, 7d (combinable: 1h 30min)"),
        ("report.syslog", "must be true or false, not a string"),
        ("report.webhook", "must be an http:// or https:// URL"),
        ("report.webhook_timeout", "'0s' is not a duration: use e.g. 30s, 15min, 2h, 7d (combinable: 1h 30min)"),
        ("report.on", "must be \"always\" or \"failure\", not 'sometimes'"),
        ("report.emails",
         "unknown key (known: report_command, report_command_timeout, syslog, webhook, webhook_timeout, on)"),
    ]
    assert not any(s in str(info.value) for s in SECRETS)


@pytest.mark.parametrize("value, message", [
    (42, "must be a string (a command line, e.g. \"/usr/local/bin/notify --json\"), not an integer"),
    ("  ", "is empty"),
])
def test_table_command_problems(value, message):
    with pytest.raises(ReportTableError) as info:
        ReportSpec.from_table({"report_command": value}, {})
    assert info.value.problems == [("report.report_command", message)]


@pytest.mark.parametrize("url, message", [
    ("https:///TOKEN123", "has no host"),
    ("http://alice:s3cret@host:99999/TOKEN123", "is not a valid URL"),
    ("http://host/a TOKEN123", "must not contain spaces (write them as %20)"),
    ("hooks.example.com/TOKEN123", "must be an http:// or https:// URL"),
    (True, "must be a string (an http:// or https:// URL), not a boolean"),
])
def test_table_webhook_problems_never_quote_the_url(url, message):
    with pytest.raises(ReportTableError) as info:
        ReportSpec.from_table({"webhook": url}, {})
    assert info.value.problems == [("report.webhook", message)]


def test_table_that_is_not_a_table():
    with pytest.raises(ReportTableError) as info:
        ReportSpec.from_table("http://x", {})  # type: ignore[arg-type]
    assert info.value.problems[0][0] == "report"


@pytest.mark.parametrize("text, seconds", [
    ("60s", 60.0), ("60", 60.0), ("5min", 300.0), ("5m", 300.0), ("1h30m", 5400.0), ("500ms", 0.5),
    ("1.5s", 1.5), (" 2 min 3 s ", 123.0), ("10sec", 10.0), ("2days", 172800.0), ("1w", 604800.0),
    ("3 minutes", 180.0), ("5ms", 0.005)])
def test_parse_span(text, seconds):  # the report's timeouts are the job file's time spans (jobfile/timespan.py)
    assert parse_timespan(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 dayz", "-1s", "1x", "s", "5mins"])
def test_parse_span_refuses(text):
    with pytest.raises(UsageError):
        parse_timespan(text)


def test_the_docs_examples_are_valid_tables():
    """docs/reports.md's [report] tables parse as TOML and validate."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "reports.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    specs = [ReportSpec.from_table(tomllib.loads(b)["report"], {}) for b in blocks]
    assert specs[0].destinations == ["command /usr/local/bin/backup-alert", "syslog",
                                     "webhook https://hooks.example.com"]
    assert specs[1].on == "failure"
