"""`recovault job schedule` and jobfile/calendar.py: OnCalendar expressions checked against `systemd-analyze
calendar` (the reference), their cron equivalents, the service + timer pair (checked with `systemd-analyze
verify`), the cron file, --dry-run writing nothing, and bad expressions refused with one clear message."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import List

import pytest

from recovault.jobfile import calendar, schedule

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (Debian package systemd)")

VALID = [
    "*-*-* 01:30", "*-*-* 13:30", "Mon..Fri 08:00", "mon..fri 08:00", "Mon-Fri 08:00", "Monday 1:00", "daily",
    "hourly", "Hourly", "weekly", "monthly", "yearly", "annually", "quarterly", "semiannually", "minutely",
    "*:0/15", "*:00/15", "*-*-* 01:30 UTC", "daily UTC", "12:00", "2027-12-01", "12-01", "*-*-31", "Sat..Sun",
    "00/2:00", "*-*~07/1", "Mon *-05~07/1", "*-02~03", "*-*~1", "*-*-* 8..18/2:00", "*:*", "*-*-1,15 0:0",
    "Mon,Wed,Fri *-*-* 3:00", "2027-*-* 1:00", "*-*-* 01:30:00 Europe/Paris", "Mon..Wed,Fri 0:0", "Sun 03:00",
    "Sun *-*-1..7 03:00", "*-*-* 00/6:15", "*-*-* 6,18:00", "*-*-* 1..5:0/20:30", "2027..2028-01-01",
    "*-1/3-1 0:0", "*-*-* *:*:0/10", "Sat,Sun *-*-* 10:00", "Mon 01:30 UTC", "*-*-1/7 04:00",
    "*-*-* 23:59:59", "*-02-29 12:00", "Fri *-*-13", "28-1-1", "*-*-* 02:30", "*:0/30",
]
# Never elapses, or not an expression at all.
INVALID = [
    "*-*-* 24:00", "*:0/0", "5..3:00", "Fri..Mon", "*", "1,15", "Mon Tue 3:00", "bogus", "01:30 bogus",
    "Mon 25:00", "*-13-01", "*-*-* 01:60", "*-02-30", "2025-01-01", "", "   ", "*-*-* 1:2:3:4", "Mon..Funday",
]
BASES = ["2026-11-26T10:07:30+00:00", "2026-03-28T23:10:00+00:00", "2026-10-24T23:10:00+00:00",
         "2028-02-28T23:59:59+00:00"]


@pytest.fixture
def zone(monkeypatch):
    """Set the process's local time zone (TZ) for the test, restored after it."""
    def set_zone(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()
    yield set_zone
    monkeypatch.undo()
    time.tzset()


@needs_analyze
@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "America/New_York"])
def test_the_parser_agrees_with_systemd_analyze(zone, tz):
    """Validity, and the next six elapses from several moments (daylight saving changes among them), the same
    by the parser as by systemd-analyze, in three local time zones."""
    zone(tz)
    disagree: List[str] = []
    for expr in VALID + INVALID:
        ref, mine = calendar.problems(expr, use_analyze=True), calendar.problems(expr, use_analyze=False)
        if bool(ref) != bool(mine):
            disagree.append(f"{expr!r}: systemd {ref}, parser {mine}")
        if expr in VALID and ref:
            disagree.append(f"{expr!r} should be valid: {ref}")
        if expr in INVALID and not ref:
            disagree.append(f"{expr!r} should be invalid")
    for expr in VALID:
        for base in BASES if tz == "UTC" else BASES[1:3]:  # elsewhere: the days clocks change
            after = datetime.fromisoformat(base)
            ref = calendar.next_elapses(expr, after, 6, use_analyze=True)
            mine = calendar.next_elapses(expr, after, 6, use_analyze=False)
            if ref != mine:
                disagree.append(f"{expr!r} after {base}: systemd {ref}, parser {mine}")
    assert not disagree, "\n".join(disagree)


def test_the_parser_says_what_is_wrong():
    cases = {"*-*-* 24:00": "hour 24 is outside 0..23", "*:0/0": "repetition '/0'", "5..3:00": "runs backwards",
             "Fri..Mon": "runs backwards", "Mon..Funday": "'Funday' is not a weekday", "*-13-01": "month 13",
             "bogus": "'bogus' is not a weekday", "1,15": "neither a date", "01:30 bogus": "unexpected 'bogus'",
             "*-02-30": "never elapses", "": "empty calendar expression", "*-*-* 1:2:3.5": "fractional seconds"}
    for expr, words in cases.items():
        found = calendar.problems(expr, use_analyze=False)
        assert len(found) == 1 and words in found[0], (expr, found)
    assert calendar.problems("Mon..Fri 08:00", use_analyze=False) == []


@needs_analyze
def test_systemd_analyze_decides_where_it_exists():
    """A form only systemd reads (fractional seconds) is valid by default here, and a rejection quotes it."""
    assert calendar.problems("*-*-* 1:2:3.5") == []
    assert calendar.problems("*-*-* 24:00") == ["systemd-analyze calendar rejects it: Invalid argument"]


def test_next_elapse_by_the_parser():
    after = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)
    assert calendar.next_elapse("Mon..Fri 08:00 UTC", after, use_analyze=False) == \
        datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc)
    assert calendar.next_elapse("*:0/15 UTC", after, use_analyze=False) == \
        datetime(2026, 11, 26, 10, 15, tzinfo=timezone.utc)  # strictly after
    assert calendar.next_elapse("2027-01-01 UTC", datetime(2027, 1, 2, tzinfo=timezone.utc), use_analyze=False) \
        is None


CRON = {
    "*-*-* 01:30": "30 1 * * *", "Mon..Fri 08:00": "0 8 * * 1-5", "daily": "0 0 * * *", "hourly": "0 * * * *",
    "weekly": "0 0 * * 1", "monthly": "0 0 1 * *", "yearly": "0 0 1 1 *", "quarterly": "0 0 1 */3 *",
    "semiannually": "0 0 1 1,7 *", "minutely": "* * * * *", "*:0/15": "*/15 * * * *", "Sat..Sun": "0 0 * * 0,6",
    "Sun 03:00": "0 3 * * 0", "Mon..Wed,Fri 0:0": "0 0 * * 1-3,5", "*-*-1,15 02:00": "0 2 1,15 * *",
    "*-*-* 8..18/2:00": "0 8,10,12,14,16,18 * * *", "*-*-* 00/6:15": "15 */6 * * *", "*:0/30": "0,30 * * * *",
    "*-*-1/7 04:00": "0 4 */7 * *", "12-01": "0 0 1 12 *",
    # no cron equivalent: seconds, a year, the month's last days, a time zone, weekdays AND days of the month
    "*-*-* 23:59:59": None, "2027-*-* 1:00": None, "*-*~1": None, "daily UTC": None, "Sun *-*-1..7 03:00": None,
    "*-*-* 1:2:3.5": None, "bogus": None,
}


@pytest.mark.parametrize("expr", sorted(CRON))
def test_cron_fields(expr):
    assert calendar.to_cron(expr) == CRON[expr]


# --- the units, the cron file, the command ---------------------------------------------------------------

JOB = """[vault]
url = "/backup/vault"
passphrase_file = "/etc/recovault/passphrase"

[backup]
paths = ["/srv"]

[schedule]
calendar = {calendar}
"""


def job_file(tmp_path: Path, calendar_list: List[str], name: str = "web", extra: str = "") -> Path:
    p = tmp_path / "jobs" / f"{name}.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(JOB.format(calendar=json.dumps(calendar_list)) + extra)
    return p


def run_cli(argv: List[str]):
    from recovault.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code, out.getvalue(), err.getvalue()


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A host whose system directories are under tmp_path; systemd and cron absent unless a test says."""
    root = tmp_path / "host"
    monkeypatch.setattr(schedule, "SYSTEM_UNIT_DIR", str(root / "etc/systemd/system"))
    monkeypatch.setattr(schedule, "CRON_DIR", str(root / "etc/cron.d"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(root / "home/.config"))
    monkeypatch.setattr(schedule, "systemd_running", lambda: False)
    monkeypatch.setattr(schedule, "cron_available", lambda: False)
    calls: List[List[str]] = []

    def systemctl(argv):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")
    monkeypatch.setattr(schedule, "_systemctl", systemctl)
    root.mkdir()
    return root, calls


def tree(root: Path) -> List[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_systemd_units_written_and_enabled(tmp_path, host, monkeypatch):
    root, calls = host
    monkeypatch.setattr(schedule, "systemd_running", lambda: True)
    jf = job_file(tmp_path, ["*-*-* 01:30", "Mon..Fri 13:30"])
    code, out, err = run_cli(["job", "schedule", str(jf)])
    assert code == 0, err
    units = root / "etc/systemd/system"
    service = (units / "recovault-job-web.service").read_text()
    timer = (units / "recovault-job-web.timer").read_text()
    assert f" job run {jf}\n" in service and "Type=oneshot" in service and "IOSchedulingClass=idle" in service
    assert "passphrase" not in service.lower()
    assert "OnCalendar=*-*-* 01:30\nOnCalendar=Mon..Fri 13:30\n" in timer
    assert "Persistent=true" in timer and "RandomizedDelaySec=30min" in timer and "WantedBy=timers.target" in timer
    assert calls == [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "recovault-job-web.timer"]]
    assert not (root / "etc/cron.d").exists()
    assert "systemctl enable --now recovault-job-web.timer" in out
    # idempotent: a second run rewrites the same files
    assert run_cli(["job", "schedule", str(jf)])[0] == 0
    assert (units / "recovault-job-web.timer").read_text() == timer and tree(units) == sorted(
        ["recovault-job-web.service", "recovault-job-web.timer"])


def test_user_units(tmp_path, host, monkeypatch):
    root, calls = host
    monkeypatch.setattr(schedule, "systemd_running", lambda: True)
    jf = job_file(tmp_path, ["daily"], extra='randomized_delay = "1h"\npersistent = false\n')
    assert run_cli(["job", "schedule", str(jf), "--user"])[0] == 0
    units = root / "home/.config/systemd/user"
    timer = (units / "recovault-job-web.timer").read_text()
    assert "RandomizedDelaySec=1h" in timer and "Persistent=false" in timer
    assert "network-online" not in (units / "recovault-job-web.service").read_text()
    assert calls[-1] == ["systemctl", "--user", "enable", "--now", "recovault-job-web.timer"]
    assert not (root / "etc").exists()


def test_a_systemd_credential_is_loaded(tmp_path, host):
    jf = job_file(tmp_path, ["daily"])
    jf.write_text(jf.read_text().replace('passphrase_file = "/etc/recovault/passphrase"',
                                         'passphrase_credential = "recovault-web"'))
    code, out, _ = run_cli(["job", "schedule", str(jf), "--dry-run"])
    assert code == 0 and "LoadCredential=recovault-web:/etc/credstore/recovault-web\n" in out


def test_cron_file_where_systemd_is_absent(tmp_path, host, monkeypatch):
    root, calls = host
    monkeypatch.setattr(schedule, "cron_available", lambda: True)
    jf = job_file(tmp_path, ["*-*-* 01:30", "Mon..Fri 13:30"], name="db.main")
    code, out, err = run_cli(["job", "schedule", str(jf)])
    assert code == 0, err
    cron = root / "etc/cron.d/recovault-db_main"  # cron ignores files whose names hold a dot
    lines = [ln for ln in cron.read_text().splitlines() if ln and not ln.startswith("#")]
    run = " ".join(schedule.recovault_command() + ["job", "run", str(jf)])
    assert lines[2:] == [f"30 1 * * * root {run}", f"30 13 * * 1-5 root {run}"]
    assert calls == [] and not (root / "etc/systemd").exists()
    assert oct(cron.stat().st_mode & 0o777) == "0o644"


def test_cron_refuses_what_it_cannot_say(tmp_path, host, monkeypatch):
    root, _ = host
    monkeypatch.setattr(schedule, "cron_available", lambda: True)
    jf = job_file(tmp_path, ["daily", "*-*~1 02:00"])
    code, _, err = run_cli(["job", "schedule", str(jf)])
    assert code == 2 and "cron cannot say '*-*~1 02:00'" in err and "Traceback" not in err
    assert tree(root) == []
    code, out, _ = run_cli(["job", "schedule", str(jf), "--dry-run"])
    assert code == 0 and "would refuse: cron cannot say '*-*~1 02:00'" in out and tree(root) == []


def test_no_scheduler_one_clear_message(tmp_path, host):
    root, _ = host
    jf = job_file(tmp_path, ["daily"])
    code, _, err = run_cli(["job", "schedule", str(jf)])
    assert code == 1 and "neither systemd (as the service manager) nor cron found" in err
    assert f"job run {jf}" in err and len(err.strip().splitlines()) == 1 and tree(root) == []


@pytest.mark.parametrize("systemd", [True, False])
def test_dry_run_writes_nothing(tmp_path, host, monkeypatch, systemd):
    root, calls = host
    monkeypatch.setattr(schedule, "systemd_running", lambda: systemd)
    monkeypatch.setattr(schedule, "cron_available", lambda: True)
    jf = job_file(tmp_path, ["*-*-* 01:30"])
    before = tree(tmp_path)
    code, out, err = run_cli(["job", "schedule", str(jf), "--dry-run"])
    assert code == 0, err
    assert tree(tmp_path) == before and calls == []
    assert f"# {root}/etc/systemd/system/recovault-job-web.timer" in out and "OnCalendar=*-*-* 01:30" in out
    assert f"# {root}/etc/cron.d/recovault-web" in out and "30 1 * * * root " in out
    code, out, _ = run_cli(["job", "schedule", str(jf), "--dry-run", "--json"])
    doc = json.loads(out)
    assert code == 0 and doc["dry_run"] and doc["done"] == [] and not doc["enabled"] and tree(tmp_path) == before
    assert doc["scheduler"] == ("systemd" if systemd else "cron")


def test_bad_expressions_are_refused(tmp_path, host, monkeypatch):
    root, calls = host
    monkeypatch.setattr(schedule, "systemd_running", lambda: True)
    jf = job_file(tmp_path, ["*-*-* 25:00", "daily", "Fri..Mon 3:00"])
    code, out, err = run_cli(["job", "schedule", str(jf), "--json"])
    assert code == 2 and "Traceback" not in err
    assert "'*-*-* 25:00'" in err and "'Fri..Mon 3:00'" in err and "'daily'" not in err
    assert json.loads(out)["exit_code"] == 2
    assert tree(root) == [] and calls == []


BASE = "[vault]\nurl = '/v'\npassphrase_env = 'P'\n[backup]\npaths = ['/srv']\n"


@pytest.mark.parametrize("content, words", [
    (BASE, "no [schedule] calendar"),
    (BASE + "[schedule]\ncalendar = [1]\n", "web.toml:7: schedule.calendar: must be an array of non-empty strings"),
    (BASE + "[schedule\n", "web.toml:6: not valid TOML"),
    (BASE + "[schedule]\ncalendar = ['daily']\nrandomized_delay = 'soon'\n", "'soon' is not a time span"),
])
def test_bad_job_files_are_refused(tmp_path, host, content, words):
    jf = tmp_path / "web.toml"  # (the job file is read as `job validate` reads it: every problem, its line)
    jf.write_text(content)
    code, _, err = run_cli(["job", "schedule", str(jf), "--dry-run"])
    assert code == 2 and words in err and "Traceback" not in err
    code, _, err = run_cli(["job", "schedule", str(tmp_path / "none.toml"), "--dry-run"])
    assert code == 2 and "cannot read the job file" in err


def test_a_job_name_must_be_a_unit_name(tmp_path, host):
    jf = job_file(tmp_path, ["daily"], name="web job")
    code, _, err = run_cli(["job", "schedule", str(jf), "--dry-run"])
    assert code == 2 and "job name 'web job'" in err


@needs_analyze
@pytest.mark.parametrize("credential", [False, True])
def test_systemd_analyze_verify_accepts_the_units(tmp_path, host, credential):
    jf = job_file(tmp_path, ["*-*-* 01:30", "Mon..Fri 13:30", "*:0/15"], name="web-1.x")
    if credential:
        jf.write_text(jf.read_text().replace('passphrase_file = "/etc/recovault/passphrase"',
                                             'passphrase_credential = "recovault"'))
    units = tmp_path / "units"
    code, out, err = run_cli(["job", "schedule", str(jf), "--unit-dir", str(units), "--json"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["scheduler"] == "systemd" and not doc["enabled"]
    assert tree(units) == ["recovault-job-web-1.x.service", "recovault-job-web-1.x.timer"]
    res = subprocess.run([ANALYZE, "verify", "--man=no", str(units / "recovault-job-web-1.x.timer"),
                          str(units / "recovault-job-web-1.x.service")], capture_output=True, text=True)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


@needs_analyze
def test_verify_notices_a_broken_unit(tmp_path):
    """The check above can fail: a unit with a wrong key is reported by systemd-analyze verify."""
    units = tmp_path / "units"
    units.mkdir()
    job = schedule.JobSchedule("web", str(tmp_path / "web.toml"), ["daily"])
    (units / "recovault-job-web.timer").write_text(schedule.timer_text(job).replace("Persistent=", "Persistant="))
    (units / "recovault-job-web.service").write_text(schedule.service_text(job, ["/bin/true"], False))
    res = subprocess.run([ANALYZE, "verify", "--man=no", str(units / "recovault-job-web.timer")],
                         capture_output=True, text=True)
    assert "Persistant" in res.stderr


def test_exec_start_quotes_what_systemd_would_split(tmp_path):
    job = schedule.JobSchedule("web", "/etc/recovault/my jobs/100%.toml", ["daily"])
    text = schedule.service_text(job, ["/opt/recovault/bin/recovault"], False)
    assert 'ExecStart=/opt/recovault/bin/recovault job run "/etc/recovault/my jobs/100%%.toml"\n' in text
    cron = schedule.cron_text(job, ["/opt/recovault/bin/recovault"])
    assert "root /opt/recovault/bin/recovault job run '/etc/recovault/my jobs/100\\%.toml'" in cron


def test_the_schedule_json_matches_its_schema(tmp_path, host, monkeypatch):
    jsonschema = pytest.importorskip("jsonschema")
    from test_json_schemas import validate
    monkeypatch.setattr(schedule, "systemd_running", lambda: True)
    jf = job_file(tmp_path, ["*-*-* 01:30", "*-*-* 1:2:3.5" if ANALYZE else "*-*~1"])
    for extra in (["--dry-run"], []):
        code, out, err = run_cli(["job", "schedule", str(jf), "--json"] + extra)
        assert code == 0, err
        doc = json.loads(out)
        validate(doc, {"$ref": "job.json#/$defs/schedule"})
        assert doc["calendar"][0]["cron"] == "30 1 * * *" and doc["calendar"][1]["cron"] is None
        assert doc["calendar"][0]["next"].endswith("Z")
    assert jsonschema


def test_user_timers_need_systemd(tmp_path, host, monkeypatch):
    root, _ = host
    monkeypatch.setattr(schedule, "cron_available", lambda: True)
    code, _, err = run_cli(["job", "schedule", str(job_file(tmp_path, ["daily"])), "--user"])
    assert code == 1 and "--user needs systemd as the service manager" in err and tree(root) == []
