"""Job files (issue 12): the typed model `load_job` makes, and every problem of a bad file reported with its
line (tomllib has no positions: jobfile.spec.scan_lines finds them), by `load_job` and by `recovault job
validate` (exit 2; --json)."""
from __future__ import annotations

import json
import textwrap
from datetime import date

import pytest

from recovault.jobfile.spec import JobFileError, load_job, scan_lines
from recovault.retention import Policy

from test_cli import run_main

GOOD = """\
[vault]
url = "/backup/vault"
passphrase_file = "/etc/recovault/passphrase"

[backup]
paths = ["/srv", "/etc"]
exclude = ["*.tmp"]
exclude_file = "/etc/recovault/excludes"
one_file_system = true
images = ["/var/lib/libvirt/images/vm.img"]
stdin_command = "pg_dump app"
stdin_name = "db/app.sql"
host = "web1"
tags = ["nightly"]
full_on = "Sun, 1"
differential_on = ["Mon..Fri"]

[retention]
keep_daily = 7
keep_weekly = 4
keep_monthly = 12
keep_within = "2d"
prune = true
prune_margin = "1h"

[schedule]
calendar = ["*-*-* 01:30", "*-*-* 13:30"]

[limits]
upload = "20MiB"
upload_work = "2MiB"
work_hours = "Mon-Fri 08:00-18:00"
connections = 4

[check]
every = "7d"
read_data_subset = "5%"

[[hooks.before]]
command = "systemctl stop app"
timeout = "1m"

[[hooks.after]]
command = "systemctl start app"
on_failure = "continue"

[report]
webhook = "https://example.net/hook"
"""


def write(tmp_path, text: str, name: str = "web.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def problems(path: str):
    with pytest.raises(JobFileError) as exc:
        load_job(path)
    assert exc.value.exit_code == 2
    return [(p.line, p.message) for p in exc.value.problems]


def test_a_complete_job_file_is_read_into_its_typed_model(tmp_path):
    spec = load_job(write(tmp_path, GOOD))
    assert spec.name == "web" and spec.path == str(tmp_path / "web.toml")
    assert spec.vault.url == "/backup/vault"
    assert (spec.vault.passphrase.kind, spec.vault.passphrase.value) == ("file", "/etc/recovault/passphrase")
    b = spec.backup
    assert b.paths == ["/srv", "/etc"] and b.exclude == ["*.tmp"] and b.exclude_file == ["/etc/recovault/excludes"]
    assert b.one_file_system and b.images == ["/var/lib/libvirt/images/vm.img"]
    assert (b.stdin_command, b.stdin_name, b.host, b.tags) == ("pg_dump app", "db/app.sql", "web1", ["nightly"])
    assert b.point_paths() == ["/db/app.sql", "/etc", "/srv", "/var/lib/libvirt/images/vm.img"]
    assert spec.retention.policy == Policy(keep_daily=7, keep_weekly=4, keep_monthly=12, keep_within="2d")
    assert spec.retention.prune and spec.retention.prune_margin == 3600
    assert spec.schedule.calendar == ["*-*-* 01:30", "*-*-* 13:30"]
    assert spec.schedule.randomized_delay == "30min" and spec.schedule.persistent
    assert spec.limits.upload.bytes_per_second == 20 << 20 and spec.limits.connections == 4
    assert spec.limits.transfer_limits().upload.limited
    assert spec.check.every == 7 * 86400 and spec.check.read_data_subset == "5%"
    assert [(h.argv, h.timeout, h.on_failure) for h in spec.hooks.before] == [(["systemctl", "stop", "app"], 60, "abort")]
    assert [(h.timeout, h.on_failure) for h in spec.hooks.after] == [(300, "continue")]
    assert spec.report is not None and spec.report.webhook == "https://example.net/hook"
    assert spec.report.destinations == ["webhook https://example.net"]
    assert spec.lines["backup.paths"] == 6 and spec.lines["hooks.before.0.command"] == 40


@pytest.mark.parametrize("day, mode", [
    (date(2026, 11, 29), "full"),          # a Sunday
    (date(2026, 12, 1), "full"),           # the 1st, a Tuesday: full wins over differential
    (date(2026, 11, 25), "differential"),  # a Wednesday
    (date(2026, 11, 28), "incremental"),   # a Saturday
])
def test_the_mode_follows_the_day_rules_and_full_wins(tmp_path, day, mode):
    assert load_job(write(tmp_path, GOOD)).backup.mode_on(day) == mode


def test_the_mode_is_incremental_without_rules_and_ranges_wrap(tmp_path):
    spec = load_job(write(tmp_path, """\
        [vault]
        url = "/v"
        passphrase_env = "PASS"
        [backup]
        paths = ["/srv"]
        differential_on = "Fri..Mon"
        """))
    assert spec.retention is None and spec.check is None and spec.hooks.before == []
    modes = [spec.backup.mode_on(date(2026, 11, 23 + i)) for i in range(7)]  # Mon 23 .. Sun 29
    assert modes == ["differential", "incremental", "incremental", "incremental", "differential",
                     "differential", "differential"]


BAD = """\
[vault]
url = "relative/vault"

[backup]
paths = "/srv"
exclude = [1, 2]
one_file_system = "yes"
full_on = "Sunday, Funday"
colour = "red"

[retention]
keep_daily = "7"
prune = 1

[limits]
upload = "20Mb"

[[hooks.before]]
command = "stop"
timeout = "forever"
on_failure = "ignore"
wat = 1

[check]
read_data_subset = "lots"

[extra]
x = 1
"""


def test_every_problem_is_reported_with_its_line(tmp_path):
    found = problems(write(tmp_path, BAD))
    expected = [
        (1, "no passphrase source"),
        (2, "'relative/vault' is not an absolute path"),
        (6, "backup.exclude: must be an array of non-empty strings"),
        (7, "backup.one_file_system: must be true or false, not a string"),
        (8, "'Funday' is not a weekday"),
        (9, "unknown key 'colour' in [backup]"),
        (12, "retention.keep_daily: must be an integer, not a string"),
        (13, "retention.prune: must be true or false, not an integer"),
        (16, "limits.upload: "),
        (20, "hooks.before[0].timeout: 'forever' is not a duration"),
        (21, "hooks.before[0].on_failure: 'ignore': use 'abort'"),
        (22, "unknown key 'wat' in hooks.before[0]"),
        (24, "[check] has no 'every'"),
        (25, "check.read_data_subset: 'lots'"),
        (27, "unknown table or key 'extra'"),
    ]
    for line, needle in expected:
        assert any(l == line and needle in m for l, m in found), (line, needle, found)
    assert [l for l, _ in found] == sorted(l for l, _ in found)
    assert "/srv" not in " ".join(m for _, m in found)  # a lone string is a list of one path


def test_missing_vault_and_two_passphrase_sources(tmp_path):
    assert problems(write(tmp_path, '[backup]\npaths = ["/srv"]\n')) == [
        (1, "no [vault] table: the job needs [vault] url and a passphrase source")]
    found = problems(write(tmp_path, """\
        [vault]
        passphrase_file = "/p"
        passphrase_command = "pass show backup"

        [backup]
        paths = []
        stdin_name = "db.sql"
        """))
    assert (1, "[vault] has no url (the vault's path or URL)") in found
    assert any(l == 3 and "passphrase_file and passphrase_command" in m for l, m in found)
    assert any(l == 5 and "nothing to back up" in m for l, m in found)
    assert any(l == 7 and "stdin_command, which is not given" in m for l, m in found)


def test_bad_hooks_in_inline_form_and_a_toml_syntax_error(tmp_path):
    found = problems(write(tmp_path, """\
        [vault]
        url = "/v"
        passphrase_env = "P"
        [backup]
        paths = ["/srv"]
        [hooks]
        before = [
          {command = "ok"},
          {timeout = "1m"},
        ]
        after = "notify-send done"
        during = []
        [limits]
        work_hours = "Mon-Fri 08:00-18:00"
        """))
    assert any(l == 14 and "limits.work_hours needs a rate for them" in m for l, m in found), found
    assert any(l == 7 and "hooks.before[1] has no command" in m for l, m in found), found
    assert any(l == 11 and "hooks.after must be an array of tables" in m for l, m in found), found
    assert any(l == 12 and "unknown key 'during' in [hooks]" in m for l, m in found), found
    line, message = problems(write(tmp_path, '[vault]\nurl = "/v"\npaths = [\n"a",,\n]\n'))[0]
    assert line == 4 and message.startswith("not valid TOML: ")


def test_a_bad_job_name_and_an_unreadable_file(tmp_path):
    found = problems(write(tmp_path, '[vault]\nurl = "/v"\npassphrase_env = "P"\n[backup]\npaths = ["/s"]\n',
                           name="web job.toml"))
    assert found == [(0, "job name 'web job' (the file's name without .toml) may hold only letters, digits, "
                         "'_', '.' and '-'")]
    assert problems(str(tmp_path / "none.toml"))[0][1].startswith("cannot read the job file: ")


def test_scan_lines_skips_multiline_values():
    text = textwrap.dedent('''\
        [backup]
        exclude = [
          "a = b",
          "[not.a.table]",
        ]
        note = """
        tags = 1
        """
        "quoted key" = 2
        tags = ["x"]
        vault.url = "/v"
        ''')
    lines = scan_lines(text)
    assert lines == {"backup": 1, "backup.exclude": 2, "backup.note": 6, "backup.quoted key": 9, "backup.tags": 10,
                     "backup.vault.url": 11}


def test_job_validate_lists_every_problem_and_exits_2(tmp_path, capsys):
    path = write(tmp_path, BAD)
    res = run_main(["job", "validate", path], capsys)
    assert res.code == 2 and res.out == ""
    lines = res.err.splitlines()
    assert lines[0].startswith(f"recovault: error: {path}:1: ")
    assert f"{path}:27: unknown table or key 'extra'" in lines[-1]
    assert len(lines) == len(problems(path))
    res = run_main(["job", "validate", path, "--json"], capsys)
    doc = json.loads(res.out)
    assert res.code == 2 and doc["valid"] is False and doc["job"] == "web"
    assert [p["line"] for p in doc["problems"]] == [l for l, _ in problems(path)]


def test_job_validate_of_a_good_file(tmp_path, capsys):
    res = run_main(["job", "validate", write(tmp_path, GOOD)], capsys)
    assert res.code == 0 and "job web" in res.out and "valid" in res.out
    doc = json.loads(run_main(["job", "validate", write(tmp_path, GOOD), "--json"], capsys).out)
    assert doc["valid"] is True and doc["problems"] == [] and doc["vault"] == "/backup/vault"
    assert doc["retention"] == {"policy": Policy(keep_daily=7, keep_weekly=4, keep_monthly=12,
                                                 keep_within="2d").to_json(), "prune": True}
    assert doc["hooks"] == {"before": 1, "after": 1} and doc["check"] == {"every": "7d"}


def test_the_readme_job_file_is_valid(tmp_path):
    """The complete job file of the README's "Scheduled jobs" reads without a problem (every key it shows is
    one load_job knows, with a value it takes), and so does docs/usage.md's nightly job."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    section = readme[readme.index("### Scheduled jobs"):]
    job = tmp_path / "web.toml"
    job.write_text(re.search(r"```toml\n(.*?)```", section, re.S).group(1))
    spec = load_job(str(job))
    assert spec.report is not None and spec.report.syslog and spec.schedule.calendar
    assert spec.retention is not None and spec.check is not None and spec.hooks.before and spec.hooks.after
    usage = (root / "docs" / "usage.md").read_text()
    job.write_text(re.search(r"```toml\n(# /etc/recovault/jobs/nightly.toml.*?)```", usage, re.S).group(1))
    spec = load_job(str(job))
    assert spec.vault.passphrase.kind == "credential" and spec.retention is not None and spec.retention.prune


@pytest.mark.parametrize("name", ["../../etc/shadow", "a/b", "..", "my cred"])
def test_a_credential_name_is_one_safe_path_component(tmp_path, name):
    """passphrase_credential is read as $CREDENTIALS_DIRECTORY/NAME (and loaded from /etc/credstore/NAME):
    a name that is not one plain path component is refused with its line, by validate and so by run."""
    job = tmp_path / "web.toml"
    job.write_text(f'[vault]\nurl = "/v"\npassphrase_credential = "{name}"\n[backup]\npaths = ["/srv"]\n')
    with pytest.raises(JobFileError) as ei:
        load_job(str(job))
    assert [(p.line, p.message) for p in ei.value.problems] == [
        (3, f"vault.passphrase_credential: {name!r} is not a credential name (letters, digits, '_', '.' and '-')")]
