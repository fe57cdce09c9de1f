"""Running job files (issue 12): `Job.from_file(path).run()` and `recovault job run` end to end on local vaults:
backup in the day's mode, retention over the job's own points and prune, check cadence, hooks (failing,
hanging, continuing), the run lock (a second start exits 17), bandwidth limits, a stdin command, and a bad
job file refused before the vault (or the history) is touched."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from types import SimpleNamespace

import pytest

from recovault import api
from recovault.errors import Busy
from recovault.jobs import backup as backup_job
from recovault.jobfile.history import History
from recovault.jobfile.runner import Job, job_lock

from test_cli import PASSPHRASE, PKG_PARENT, api_vault, run_main


@pytest.fixture
def env(tmp_path, monkeypatch):
    for k in [k for k in os.environ if k.startswith("RECOVAULT_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("RECOVAULT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    passfile = tmp_path / "pass"
    passfile.write_text(PASSPHRASE + "\n")
    passfile.chmod(0o600)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("alpha\n")
    return SimpleNamespace(tmp=tmp_path, vault=api_vault(tmp_path / "vault"), passfile=str(passfile), src=str(src),
                           state=tmp_path / "state")


def job_file(env, extra: str = "", name: str = "web", backup: str = "") -> str:
    path = env.tmp / f"{name}.toml"
    path.write_text(textwrap.dedent(f"""\
        [vault]
        url = "{env.vault}"
        passphrase_file = "{env.passfile}"

        [backup]
        paths = ["{env.src}"]
        host = "web1"
        {backup}
        """) + textwrap.dedent(extra))
    return str(path)


def live(env):
    with api.open_vault(env.vault, PASSPHRASE, cache_dir=str(env.tmp / "c")) as v:
        return v.snapshots()


def history(env) -> History:
    return History(str(env.state / "history.sqlite"))


def steps(record):
    return [(s.step, s.status) for s in record.steps]


def test_a_job_runs_end_to_end_with_retention_applied_to_its_own_points(env):
    other = env.tmp / "other"
    other.mkdir()
    with api.open_vault(env.vault, PASSPHRASE, cache_dir=str(env.tmp / "c")) as v:
        api.backup(v, [str(other)], host="web1")  # another source of the same host: not this job's
        api.backup(v, [env.src], host="web2")  # the job's paths from another host: not this job's either
        api.backup(v, [env.src], host="web1", tags=["manual"])  # without the job's tag: not this job's
    path = job_file(env, """\
        [retention]
        keep_last = 2
        prune = true
        prune_margin = "0"
        """, backup='tags = ["nightly"]')
    records = []
    for i in range(4):
        (env.tmp / "src" / f"new{i}.txt").write_text(f"run {i}\n" * 1000)
        records.append(Job.from_file(path).run())
    last = records[-1]
    assert [r.status for r in records] == ["ok"] * 4 and [r.exit_code for r in records] == [0] * 4
    assert steps(last) == [("backup", "ok"), ("forget", "ok"), ("prune", "ok")]
    assert last.steps[1].detail == "1 removed, 2 kept"
    points = live(env)
    mine = [p for p in points if p.tags == ["nightly"]]
    assert [p.id for p in mine] == [r.snapshot for r in records[-2:]]
    assert sorted((p.host, tuple(p.paths), tuple(p.tags)) for p in points if p not in mine) == sorted([
        ("web1", (env.src,), ("manual",)), ("web1", (str(other),), ()), ("web2", (env.src,), ())])
    assert last.files == 5 and last.bytes_read > 0 and last.errors == 0 and last.mode == "incremental"
    assert records[0].mode == "incremental"  # its base: the manual point of the same host and paths
    assert last.job == "web" and last.host == "web1" and last.file == path and last.pid == os.getpid()
    assert last.end is not None and last.message is None
    journal = history(env).runs("web")
    assert [r.id for r in journal] == [r.id for r in reversed(records)]
    assert journal[0].to_json() == last.to_json()


def test_the_mode_follows_the_days_rules(env):
    path = job_file(env, backup='full_on = "Sun"\ndifferential_on = "Mon..Fri"')
    modes = [Job.from_file(path, today=datetime(2026, 11, day)).run().mode for day in (28, 29, 30, 28)]
    assert modes == ["full", "full", "differential", "incremental"]  # Sat (first: full), Sun, Mon, Sat
    assert [p.mode for p in live(env)] == modes


def test_job_run_json_prints_the_record_and_exits_as_backup_would(env, capsys, monkeypatch):
    path = job_file(env)
    res = run_main(["job", "run", path, "--json"], capsys)
    doc = json.loads(res.out)
    assert res.code == 0 and doc["status"] == "ok" and doc["snapshot"] == live(env)[-1].id
    vanish = env.tmp / "src" / "vanishing"
    vanish.write_text("x" * 100)
    original = backup_job.BackupJob._start

    def vanishing(self, files, sources=None):  # deleted between the walk and the read: left out (exit 3)
        if vanish.exists():
            vanish.unlink()
        return original(self, files, sources)
    monkeypatch.setattr(backup_job.BackupJob, "_start", vanishing)
    res = run_main(["job", "run", path, "--json"], capsys)
    doc = json.loads(res.out)
    assert res.code == 3 and doc["status"] == "partial" and doc["errors"] == 1 and doc["exit_code"] == 3
    assert "1 file(s) could not be read" in doc["message"] and "recovault: error: job web partial" in res.err


def test_a_failing_before_hook_aborts_the_run_before_the_vault(env):
    marker = env.tmp / "after-ran"
    path = job_file(env, f"""\
        [[hooks.before]]
        command = "sh -c 'echo cannot stop the app >&2; exit 3'"
        [[hooks.after]]
        command = "touch {marker}"
        """)
    record = Job.from_file(path).run()
    assert (record.status, record.exit_code) == ("failed", 1)
    assert record.message == ("before hook \"sh -c 'echo cannot stop the app >&2; exit 3'\" failed: exit status 3: "
                              "cannot stop the app; the job did not run")
    assert steps(record) == [("hook-before", "failed")] and record.snapshot is None
    assert live(env) == [] and not marker.exists()


def test_a_hook_that_continues_warns_and_after_hooks_see_the_status(env):
    seen = env.tmp / "status"
    path = job_file(env, f"""\
        [hooks]
        before = [{{command = "false", on_failure = "continue"}}]
        after = [{{command = "sh -c 'echo $RECOVAULT_JOB $RECOVAULT_JOB_STATUS > {seen}'"}}]
        """)
    warnings = []
    record = Job.from_file(path, on_warning=warnings.append).run()
    assert (record.status, record.exit_code) == ("ok", 0)
    assert steps(record) == [("hook-before", "failed"), ("backup", "ok"), ("hook-after", "ok")]
    assert warnings == ["before hook 'false' failed (exit status 1); continuing"]
    assert seen.read_text() == "web ok\n"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_hook_that_hangs_is_killed_at_its_timeout_with_its_children(env):
    pidfile = env.tmp / "child"
    path = job_file(env, f"""\
        [[hooks.before]]
        command = "sh -c 'sleep 60 & echo $! > {pidfile}; wait'"
        timeout = "1s"
        on_failure = "continue"
        """)
    t0 = time.monotonic()
    record = Job.from_file(path).run()
    assert time.monotonic() - t0 < 30
    assert record.steps[0].status == "failed" and record.steps[0].detail.endswith("killed at its timeout (1s)")
    assert 1 <= record.steps[0].seconds < 10
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
    assert record.status == "ok" and record.snapshot


def test_a_failing_after_hook_marks_the_run_failed(env):
    path = job_file(env, '[[hooks.after]]\ncommand = "sh -c \'exit 2\'"\n')
    record = Job.from_file(path).run()
    assert (record.status, record.exit_code) == ("failed", 1) and record.snapshot == live(env)[-1].id
    assert record.message == "after hook \"sh -c 'exit 2'\" failed: exit status 2"


def test_a_second_start_of_a_running_job_is_refused_with_exit_17(env):
    path = job_file(env)
    with job_lock("web"):
        with pytest.raises(Busy) as exc:
            Job.from_file(path).run()
    assert exc.value.exit_code == 17 and f"job web is running already (pid {os.getpid()})" in str(exc.value)
    assert history(env).runs() == []  # refused: no record
    assert Job.from_file(path).run().status == "ok"  # the lock went with its holder


def test_job_run_cli_busy_then_interrupted_while_a_hook_runs(env, capsys):
    started = env.tmp / "started"
    path = job_file(env, f'[[hooks.before]]\ncommand = "sh -c \'touch {started}; sleep 30\'"\ntimeout = "1m"\n')
    proc = subprocess.Popen([sys.executable, "-m", "recovault", "job", "run", path],
                            env={**os.environ, "PYTHONPATH": PKG_PARENT}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists()
        res = run_main(["job", "run", path], capsys)
        assert res.code == 17 and f"job web is running already (pid {proc.pid})" in res.err
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    [record] = history(env).runs("web")
    assert (record.status, record.exit_code, record.end is not None) == ("interrupted", 130, True)
    assert live(env) == []


def test_a_bad_job_file_is_refused_before_the_vault_or_the_history_is_touched(env, capsys):
    path = job_file(env, '[retention]\nkeep_daily = -5\n', backup='colour = "red"')
    before = {p: os.stat(os.path.join(d, p)).st_mtime_ns for d, _, fs in os.walk(env.vault) for p in fs}
    validated = run_main(["job", "validate", path], capsys)
    res = run_main(["job", "run", path], capsys)
    assert res.code == validated.code == 2 and res.err == validated.err and res.out == ""
    assert f"{path}:8: unknown key 'colour' in [backup]" in res.err and f"{path}:10: retention.keep_daily" in res.err
    assert {p: os.stat(os.path.join(d, p)).st_mtime_ns for d, _, fs in os.walk(env.vault) for p in fs} == before
    assert not env.state.exists()  # no history, no lock


def test_a_missing_passphrase_fails_the_run_before_hooks_or_the_vault(env, monkeypatch):
    marker = env.tmp / "hook-ran"
    path = job_file(env, f'[[hooks.before]]\ncommand = "touch {marker}"\n')
    path_env = path.replace("web.toml", "env.toml")
    with open(path) as f, open(path_env, "w") as g:
        g.write(f.read().replace(f'passphrase_file = "{env.passfile}"', 'passphrase_env = "JOB_PASS"'))
    record = Job.from_file(path_env).run()
    assert (record.status, record.exit_code) == ("failed", 2) and "JOB_PASS is not set" in record.message
    assert not marker.exists() and record.steps == []
    monkeypatch.setenv("JOB_PASS", PASSPHRASE)
    assert Job.from_file(path_env).run().status == "ok" and marker.exists()


def test_a_systemd_credential_and_a_passphrase_command(env, monkeypatch):
    creds = env.tmp / "creds"
    creds.mkdir()
    (creds / "vault-pass").write_text(PASSPHRASE)
    path = job_file(env)
    with open(path) as f:
        text = f.read()
    cred = env.tmp / "cred.toml"
    cred.write_text(text.replace(f'passphrase_file = "{env.passfile}"', 'passphrase_credential = "vault-pass"'))
    assert "CREDENTIALS_DIRECTORY is not set" in Job.from_file(str(cred)).run().message
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert Job.from_file(str(cred)).run().status == "ok"
    cmd = env.tmp / "cmd.toml"
    cmd.write_text(text.replace(f'passphrase_file = "{env.passfile}"', f'passphrase_command = "cat {env.passfile}"'))
    assert Job.from_file(str(cmd)).run().status == "ok"


def test_a_stdin_command_is_backed_up_and_its_failure_fails_the_run(env):
    path = job_file(env, '[retention]\nkeep_last = 1\n', backup='stdin_command = "printf dump-data"\nstdin_name = "db/app.sql"')
    record = Job.from_file(path).run()
    assert record.status == "ok"
    with api.open_vault(env.vault, PASSPHRASE, cache_dir=str(env.tmp / "c")) as v:
        api.restore(v, record.snapshot, str(env.tmp / "r"))
    assert (env.tmp / "r" / "db" / "app.sql").read_text() == "dump-data"
    bad = job_file(env, '[retention]\nkeep_last = 1\n', name="bad",
                   backup='stdin_command = "sh -c \'printf part; exit 4\'"\nstdin_name = "db/app.sql"')
    record = Job.from_file(bad).run()
    assert (record.status, record.exit_code) == ("failed", 1)
    assert record.message.startswith("stdin_command sh failed (exit status 4): recovery point ")
    assert steps(record) == [("backup", "failed")]  # no forget: the good point stays
    assert len(live(env)) == 2


def test_check_runs_when_due_by_the_history(env):
    path = job_file(env, '[check]\nevery = "7d"\nread_data_subset = "50%"\n')
    first, second = Job.from_file(path).run(), Job.from_file(path).run()
    assert steps(first)[-1] == ("check", "ok") and first.steps[-1].detail == "read data 50%"
    assert steps(second)[-1] == ("check", "skipped") and second.steps[-1].detail == "not due (every 7d)"
    real = history(env)

    class LongAgo:  # the history as it would be a week and more later: the last check is old
        def __init__(self):
            self.runs_ = [dataclasses.replace(r, start="2026-01-01T00:00:00.000000Z") for r in real.runs("web")]

        def start(self, *args):
            rec = real.start(*args)
            self.runs_.insert(0, rec)
            return rec

        def finish(self, record):
            real.finish(record)

        def runs(self, job=None, limit=None):
            return self.runs_[:limit]

    assert steps(Job.from_file(path, history=LongAgo()).run())[-1] == ("check", "ok")


def test_the_jobs_bandwidth_limits_apply_while_it_runs(env, monkeypatch):
    from recovault.storage import wrappers
    seen = []
    real = api.open_vault

    def spy(*args, **kwargs):
        limits, _ = wrappers.process_config()
        seen.append((limits().upload.rate_at(datetime(2026, 11, 28, 12)), kwargs["connections"]))
        return real(*args, **kwargs)
    monkeypatch.setattr(api, "open_vault", spy)
    path = job_file(env, '[limits]\nupload = "1MiB"\nconnections = 3\n')
    assert Job.from_file(path).run().status == "ok"
    assert seen == [(1 << 20, 3)] and wrappers.process_config() == (None, None)


def test_recovault_job_is_exported(env):
    import recovault
    from recovault import Job as Exported
    assert Exported is Job and recovault.Job is Job


def test_a_finished_run_is_reported_and_the_report_recorded(env, monkeypatch):
    """[report] command: given the finished run's JSON on stdin (the record the history keeps), without the
    job's passphrase variable in its environment; then a "report" step is in the record and the history."""
    got = env.tmp / "report.json"
    seen_env = env.tmp / "report.env"
    script = env.tmp / "report.sh"
    script.write_text(f"#!/bin/sh\ncat > {got}\nenv > {seen_env}\n")
    script.chmod(0o755)
    monkeypatch.setenv("JOB_SECRET", PASSPHRASE)
    path = env.tmp / "web.toml"
    path.write_text(textwrap.dedent(f"""\
        [vault]
        url = "{env.vault}"
        passphrase_env = "JOB_SECRET"
        [backup]
        paths = ["{env.src}"]
        [report]
        report_command = "{script}"
        """))
    warnings = []
    record = Job.from_file(str(path), on_warning=warnings.append).run()
    assert record.status == "ok" and warnings == []
    sent = json.loads(got.read_text())
    assert sent["id"] == record.id and sent["status"] == "ok" and sent["snapshot"] == record.snapshot
    assert [s["step"] for s in sent["steps"]] == ["backup"]  # what was final when it was sent
    assert "JOB_SECRET" not in seen_env.read_text() and PASSPHRASE not in seen_env.read_text()
    assert steps(record)[-1] == ("report", "ok")
    assert steps(history(env).runs("web")[0])[-1] == ("report", "ok")
    script.write_text("#!/bin/sh\nexit 3\n")  # a failing report: a warning and a failed step, the run still ok
    record = Job.from_file(str(path), on_warning=warnings.append).run()
    assert record.status == "ok" and record.exit_code == 0 and steps(record)[-1] == ("report", "failed")
    assert len(warnings) == 1 and "report to command" in warnings[0]
