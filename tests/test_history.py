"""The journal of job runs (jobfile/history.py) and the commands that read it: `recovault history [JOB]
[--stale DURATION]` and `recovault job list`. Runs recorded, finished, read back; the database in WAL mode,
versioned, private; a run killed with SIGKILL found interrupted (not missing, not running forever), also when
its pid is reused; two processes writing at once; a damaged or newer journal refused with one message."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone

import pytest

from recovault import timefmt
from recovault.errors import HistoryUnreadable, UsageError
from recovault.jobfile import history as hist
from recovault.jobfile.history import History, RunRecord, RunStep
from recovault.jobfile.timespan import parse_timespan

from test_cli import PKG_PARENT, run_main

SEAM_KEYS = {"id", "job", "file", "host", "start", "end", "status", "exit_code", "mode", "snapshot", "bytes_read",
             "bytes_added", "files", "errors", "message", "steps", "pid"}


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A private state directory (RECOVAULT_STATE_DIR) and no jobs directory but the test's own."""
    monkeypatch.setenv("RECOVAULT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RECOVAULT_JOBS_DIR", str(tmp_path / "jobs"))
    return tmp_path / "state"


def finished(h: History, job: str, status: str = "ok", *, exit_code: int = 0, message=None, end=None,
             mode: str = "incremental") -> RunRecord:
    r = h.start(job, f"/etc/recovault/jobs/{job}.toml", "web1", mode, os.getpid())
    r.status, r.exit_code, r.message, r.end = status, exit_code, message, end
    h.finish(r)
    return r


def schema_check(doc, ref: str) -> None:
    from test_json_schemas import validate
    validate(doc, {"$ref": ref})


def raw(state, sql: str):
    with sqlite3.connect(state / "history.sqlite") as db:
        return db.execute(sql).fetchall()


# ---- the library ---------------------------------------------------------------------------------------------

def test_a_run_is_recorded_running_then_finished_with_every_field(state):
    h = History()
    r = h.start("web", "jobs/web.toml", "web1", "differential", os.getpid())
    assert r.id >= 1 and r.status == "running" and r.end is None and r.exit_code is None
    assert r.file == os.path.abspath("jobs/web.toml") and timefmt.parse_time(r.start)
    assert h.last("web").status == "running"  # this very process: alive, so still running
    r.status, r.exit_code, r.snapshot = "partial", 3, "ab" * 32
    r.bytes_read, r.bytes_added, r.files, r.errors = 10, 5, 2, 1
    r.message = "1 file(s) could not be read"
    r.steps = [RunStep("backup", "partial", 1.25, "1 file(s) could not be read"),
               {"step": "forget", "status": "ok", "seconds": 0.5, "detail": None}]  # a mapping is taken too
    h.finish(r)
    assert r.end is not None  # finish stamps the end when the runner did not
    back = h.last("web")
    assert back == RunRecord(r.id, "web", r.file, "web1", r.start, r.end, "partial", 3, "differential", "ab" * 32,
                             10, 5, 2, 1, "1 file(s) could not be read",
                             [RunStep("backup", "partial", 1.25, "1 file(s) could not be read"),
                              RunStep("forget", "ok", 0.5, None)], os.getpid())
    doc = back.to_json()
    assert set(doc) == SEAM_KEYS
    assert doc["steps"][1] == {"step": "forget", "status": "ok", "seconds": 0.5, "detail": None}
    schema_check(doc, "history.json#/$defs/record")
    assert h.last_success("web") is None  # partial is not a success


def test_runs_are_newest_first_per_job_and_limited(state):
    h = History()
    ids = [finished(h, job).id for job in ("web", "db", "web", "web")]
    assert [r.id for r in h.runs()] == ids[::-1]
    assert [r.id for r in h.runs("web")] == [ids[3], ids[2], ids[0]]
    assert [r.id for r in h.runs("web", limit=2)] == [ids[3], ids[2]]
    assert h.runs("nothing") == [] and h.last("nothing") is None
    failed = finished(h, "web", "failed", exit_code=13, message="storage error")
    assert h.last("web").id == failed.id and h.last_success("web").id == ids[3]
    assert h.jobs() == ["db", "web"]


def test_finish_refuses_a_running_status_and_unknown_modes(state):
    h = History()
    r = h.start("web", "web.toml", "h", "full", os.getpid())
    with pytest.raises(ValueError):
        h.finish(r)  # still "running"
    with pytest.raises(ValueError):
        h.start("web", "web.toml", "h", "sometimes", os.getpid())
    r.status, r.id = "ok", r.id + 100
    with pytest.raises(HistoryUnreadable, match="no run"):
        h.finish(r)


def test_the_journal_is_wal_versioned_and_private(state):
    h = History()
    assert h.runs() == [] and not state.exists()  # reading an absent journal creates nothing
    finished(h, "web")
    assert raw(state, "PRAGMA journal_mode") == [("wal",)]
    assert raw(state, "PRAGMA user_version") == [(hist.SCHEMA_VERSION,)]
    assert os.stat(state / "history.sqlite").st_mode & 0o777 == 0o600
    assert os.stat(state).st_mode & 0o777 == 0o700


def test_a_newer_journal_is_refused_and_left_as_it_is(state, capsys):
    h = History()
    finished(h, "web")
    with sqlite3.connect(state / "history.sqlite") as db:
        db.execute("PRAGMA user_version = 99")
    before = raw(state, "SELECT * FROM runs")
    with pytest.raises(HistoryUnreadable, match="schema version 99, newer"):
        h.runs()
    with pytest.raises(HistoryUnreadable):
        h.start("web", "web.toml", "h", "full", os.getpid())
    assert raw(state, "SELECT * FROM runs") == before and raw(state, "PRAGMA user_version") == [(99,)]
    res = run_main(["history", "--json"], capsys)
    assert res.code == 1 and json.loads(res.out)["exit_code"] == 1
    assert res.err.count("\n") == 1 and "newer than this recovault" in res.err


def test_a_damaged_journal_is_one_message(state, capsys):
    state.mkdir()
    (state / "history.sqlite").write_bytes(b"this is no SQLite database, not even close" * 100)
    res = run_main(["history"], capsys)
    assert res.code == 1 and "Traceback" not in res.err
    assert "cannot read the job history" in res.err and "move it aside" in res.err


def test_an_older_journal_is_brought_up_to_date(state):
    """A journal of schema version 0 (an empty file: a process killed between creating it and making the
    table) is migrated on first use."""
    state.mkdir()
    (state / "history.sqlite").write_bytes(b"")
    assert History().runs() == []
    assert raw(state, "PRAGMA user_version") == [(hist.SCHEMA_VERSION,)]


# ---- interrupted runs -----------------------------------------------------------------------------------------

RUNNER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    from recovault.jobfile.history import History
    r = History().start("web", "web.toml", "web1", "full", os.getpid())
    print(r.id, flush=True)
    time.sleep(120)
""")


def test_a_run_killed_with_sigkill_is_found_interrupted(state, capsys):
    p = subprocess.Popen([sys.executable, "-c", RUNNER, PKG_PARENT], stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ))
    try:
        rid = int(p.stdout.readline())
        assert History().last("web").status == "running"  # alive: running
        res = run_main(["history", "web", "--json"], capsys)
        assert res.code == 0 and json.loads(res.out)[0]["status"] == "running"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
    assert raw(state, f"SELECT status FROM runs WHERE id = {rid}") == [("running",)]  # nothing changed it yet
    res = run_main(["history", "--json"], capsys)
    doc = json.loads(res.out)
    assert res.code == 0 and [(d["id"], d["status"], d["end"], d["exit_code"]) for d in doc] == \
        [(rid, "interrupted", None, None)]
    assert f"pid {p.pid}" in doc[0]["message"]
    schema_check(doc, "history.json")
    assert raw(state, f"SELECT status FROM runs WHERE id = {rid}") == [("interrupted",)]  # stored, too


def test_a_killed_but_unreaped_process_is_interrupted(state):
    """A process killed whose parent has not waited for it yet is a zombie: gone, for the journal."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        h = History()
        r = h.start("web", "web.toml", "h", "full", p.pid)
        p.kill()
        deadline = time.monotonic() + 10
        while hist._proc_stat(p.pid)[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert h.last("web").status == "interrupted" and h.last("web").id == r.id
    finally:
        p.kill()
        p.wait()


def test_a_reused_pid_or_a_reboot_is_not_taken_for_the_run(state):
    """The pid of a killed run may belong to another process later (or after a reboot): the process start
    time and boot id stored with the row tell them apart. The rows below carry this (living) process's pid."""
    h = History()
    alive = h.start("alive", "a.toml", "h", "full", os.getpid())
    reused = h.start("reused", "r.toml", "h", "full", os.getpid())
    rebooted = h.start("rebooted", "b.toml", "h", "full", os.getpid())
    with sqlite3.connect(state / "history.sqlite") as db:
        db.execute(f"UPDATE runs SET proc_start = proc_start - 1 WHERE id = {reused.id}")
        db.execute(f"UPDATE runs SET boot_id = 'another-boot' WHERE id = {rebooted.id}")
    assert raw(state, "SELECT COUNT(*) FROM runs WHERE proc_start IS NULL OR boot_id IS NULL") == [(0,)]
    status = {r.job: r.status for r in h.runs()}
    assert status == {"alive": "running", "reused": "interrupted", "rebooted": "interrupted"}
    assert alive.id in [r.id for r in h.runs("alive")]


def test_the_start_time_is_read_past_a_command_name_with_parentheses(tmp_path):
    """/proc/PID/stat's second field is the command name in parentheses, which may hold ') (' itself."""
    odd = tmp_path / "a) b (c"
    odd.symlink_to(sys.executable)
    p = subprocess.Popen([str(odd), "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 10
        while "b (" not in open(f"/proc/{p.pid}/stat").read() and time.monotonic() < deadline:
            time.sleep(0.01)
        state, start = hist._proc_stat(p.pid)
        assert state in "RS" and start == int(open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()[19])
        assert hist.process_alive(p.pid, hist.process_stamp(p.pid))
    finally:
        p.kill()
        p.wait()
    assert not hist.process_alive(p.pid, hist.ProcessStamp(start, None))


WRITER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    from recovault.jobfile.history import History, RunStep
    job, go = sys.argv[2], sys.argv[3]
    while not os.path.exists(go):
        time.sleep(0.001)
    h = History(busy_timeout=60)
    for i in range(40):
        r = h.start(job, job + ".toml", "h", "incremental", os.getpid())
        r.status, r.exit_code, r.files, r.steps = "ok", 0, i, [RunStep("backup", "ok", 0.1)]
        h.finish(r)
        h.runs(job, limit=3)
    print("done", flush=True)
""")


def test_two_processes_write_at_once(state, tmp_path):
    """Two jobs' runs recorded by two processes at the same time, from a journal neither has created yet:
    every run is there, finished, once (no 'database is locked', no lost update)."""
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, PKG_PARENT, job, str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for job in ("web", "db")]
    go.write_text("")
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    runs = History().runs()
    assert len(runs) == 80 and len({r.id for r in runs}) == 80
    for job in ("web", "db"):
        mine = History().runs(job)
        assert sorted(r.files for r in mine) == list(range(40)) and {r.status for r in mine} == {"ok"}


# ---- staleness ------------------------------------------------------------------------------------------------

def test_health_flags_failures_and_old_successes(state):
    h = History()
    now = datetime.now(timezone.utc)
    old = timefmt.format_time(now - timedelta(days=3))
    finished(h, "old", end=old)
    finished(h, "fresh")
    finished(h, "broken")
    finished(h, "broken", "failed", exit_code=13, message="storage error: disk full")
    assert h.health("fresh", 86400, now).problems == ()
    assert h.health("old", 4 * 86400, now).problems == ()
    assert h.health("old", 2 * 86400, now).problems == ("no successful run for 3 days (the last ended "
                                                        f"{timefmt.shown(old)})",)
    (problem,) = h.health("broken", 86400, now).problems
    assert "failed (exit 13): storage error: disk full" in problem
    assert h.health("never", 86400, now).problems == ("no finished run recorded",)


def test_timespans_as_systemd_writes_them():
    assert parse_timespan("2d") == 172800 and parse_timespan("1h 30min") == 5400 and parse_timespan("1w") == 604800
    assert parse_timespan("36h") == parse_timespan("1d12h") and parse_timespan("90") == 90
    assert parse_timespan("1.5d") == 129600 and parse_timespan("5m") == 300 and parse_timespan("1M") > 30 * 86400
    for bad in ("", "2x", "d", "-1d", "2 d e"):
        with pytest.raises(UsageError):
            parse_timespan(bad)


# ---- recovault history ----------------------------------------------------------------------------------------

def test_history_lists_runs_as_text_and_json(state, capsys):
    h = History()
    a = finished(h, "web")
    b = finished(h, "db", "failed", exit_code=13, message="storage error")
    res = run_main(["history"], capsys)
    lines = res.out.splitlines()
    assert res.code == 0 and lines[0].split()[:3] == ["ID", "JOB", "START"]
    assert lines[1].split()[:2] == [str(b.id), "db"] and "storage error" in lines[1] and "failed" in lines[1]
    assert lines[2].split()[:2] == [str(a.id), "web"]
    res = run_main(["history", "--json", "--limit", "1"], capsys)
    assert [d["id"] for d in json.loads(res.out)] == [b.id]
    res = run_main(["history", "web", "--json"], capsys)
    assert [d["id"] for d in json.loads(res.out)] == [a.id]
    schema_check(json.loads(res.out), "history.json")
    res = run_main(["history", "/etc/recovault/jobs/web.toml", "--json"], capsys)  # a job file names its job
    assert [d["id"] for d in json.loads(res.out)] == [a.id]
    assert "no job runs recorded" in run_main(["history", "nothing"], capsys).out


def test_history_refuses_bad_input_with_exit_2(state, capsys):
    for argv in (["history", "a/b"], ["history", "--stale", "soon"], ["history", "--limit", "0"],
                 ["history", "--stale", "2d", "--jobs-dir", str(state / "none")]):
        res = run_main(argv, capsys)
        assert res.code == 2 and res.err.startswith("recovault: error:") and "Traceback" not in res.err, argv


def test_stale_exits_21_for_a_failing_or_late_job(state, tmp_path, capsys):
    h = History()
    finished(h, "web")
    assert run_main(["history", "--stale", "2d"], capsys).code == 0  # no jobs directory: the journal's jobs
    old = timefmt.format_time(datetime.now(timezone.utc) - timedelta(days=3))
    finished(h, "db", end=old)
    res = run_main(["history", "--stale", "2d"], capsys)
    assert res.code == 21 and "db: STALE: no successful run for 3 days" in res.out and "web: ok" in res.out
    assert res.err == "recovault: error: 1 job(s) stale or failing: db\n"
    assert run_main(["history", "db", "--stale", "4d"], capsys).code == 0
    finished(h, "web", "partial", exit_code=3, message="1 file(s) could not be read")
    res = run_main(["history", "web", "--stale", "2d", "--json"], capsys)
    doc = json.loads(res.out)
    assert res.code == 21 and doc["stale"] and doc["seconds"] == 172800 and doc["within"] == "2d"
    (job,) = doc["jobs"]
    assert job["job"] == "web" and job["last"]["status"] == "partial" and job["last_success"]["status"] == "ok"
    assert "left out (exit 3): 1 file(s) could not be read" in job["problems"][0]
    schema_check(doc, "history.json")
    assert run_main(["history", "never", "--stale", "2d"], capsys).code == 21  # a job named that never ran


def test_stale_checks_the_jobs_of_the_jobs_directory(state, tmp_path, capsys):
    """With a jobs directory, its job files are the jobs checked: one never run is stale, one whose file is
    gone is not checked any more."""
    h = History()
    finished(h, "removed", "failed", exit_code=1, message="boom")
    finished(h, "web")
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "web.toml").write_text("")
    assert run_main(["history", "--stale", "1d"], capsys).code == 0
    (jobs / "new.toml").write_text("")
    res = run_main(["history", "--stale", "1d", "--json"], capsys)
    assert res.code == 21 and [(j["job"], j["stale"]) for j in json.loads(res.out)["jobs"]] == \
        [("new", True), ("web", False)]
    assert run_main(["history", "--stale", "1d", "--jobs-dir", str(tmp_path)], capsys).code == 0  # no *.toml there


# ---- recovault job list ---------------------------------------------------------------------------------------

def _jobs_dir(tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    vault = '[vault]\nurl = "/backup/vault"\npassphrase_env = "BACKUP_PASSPHRASE"\n[backup]\npaths = ["/srv"]\n'
    (jobs / "web.toml").write_text(vault + '[schedule]\ncalendar = ["*-*-* 13:30", "*-*-* 01:30"]\n')
    (jobs / "db.toml").write_text(vault)
    (jobs / "broken.toml").write_text('[vault\n')
    (jobs / "notes.txt").write_text("not a job")
    return jobs


def test_job_list_shows_each_job_with_its_last_run(state, tmp_path, capsys):
    jobs = _jobs_dir(tmp_path)
    h = History()
    finished(h, "web", "failed", exit_code=13, message="storage error")
    last = finished(h, "web")
    finished(h, "other")
    res = run_main(["job", "list", "--json"], capsys)  # RECOVAULT_JOBS_DIR
    doc = json.loads(res.out)
    assert res.code == 0 and [d["job"] for d in doc] == ["broken", "db", "web"]
    broken, db, web = doc
    assert web["last"]["id"] == last.id and web["status"] == "ok" and web["file"] == str(jobs / "web.toml")
    assert web["calendar"] == ["*-*-* 13:30", "*-*-* 01:30"] and web["problem"] is None
    assert db["last"] is None and db["status"] is None and db["calendar"] == []
    assert broken["problem"].startswith(f"{jobs / 'broken.toml'}:") and broken["status"] is None
    schema_check(doc, "job.json#/$defs/list")
    res = run_main(["job", "list", "--jobs-dir", str(jobs)], capsys)
    lines = res.out.splitlines()
    assert res.code == 0 and len(lines) == 4 and lines[0].split()[:2] == ["JOB", "LAST"]
    assert lines[1].startswith("broken") and "PROBLEM:" in lines[1]
    assert lines[2].split()[:3] == ["db", "-", "never"]
    assert lines[3].split()[0] == "web" and " ok " in lines[3]


def test_job_list_of_a_missing_directory_is_exit_2(state, tmp_path, capsys):
    res = run_main(["job", "list", "--jobs-dir", str(tmp_path / "none")], capsys)
    assert res.code == 2 and "no jobs directory" in res.err
    (tmp_path / "empty").mkdir()
    res = run_main(["job", "list", "--jobs-dir", str(tmp_path / "empty")], capsys)
    assert res.code == 0 and "no job files" in res.out


def test_next_run_is_the_earliest_of_the_job_calendars(state, tmp_path, capsys, tz):
    from recovault.cli import job_cmd
    from recovault.jobfile.spec import load_job
    tz("UTC")
    jobs = _jobs_dir(tmp_path)
    spec = load_job(str(jobs / "web.toml"))  # calendar "*-*-* 13:30" and "*-*-* 01:30"
    assert job_cmd.next_run(spec, datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)) == \
        datetime(2026, 11, 26, 13, 30, tzinfo=timezone.utc)
    assert job_cmd.next_run(spec, datetime(2026, 11, 26, 14, 0, tzinfo=timezone.utc)) == \
        datetime(2026, 11, 27, 1, 30, tzinfo=timezone.utc)
    doc = json.loads(run_main(["job", "list", "--json"], capsys).out)
    assert doc[2]["job"] == "web" and doc[2]["next"].endswith(":30:00.000000Z") and doc[1]["next"] is None
    schema_check(doc, "job.json#/$defs/list")