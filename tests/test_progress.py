"""The CLI's progress display and warnings (recovault.progress): library warnings reach stderr, whatever
their text, and never stdout."""
from __future__ import annotations

import io
import os

import pytest

from recovault.progress import WARNING_KINDS, ProgressReporter, warn


def test_warning_kinds_become_one_line_each_without_a_terminal(capsys):
    with ProgressReporter(True, "backing up") as prog:  # stderr is not a terminal here: plain lines
        prog("plan", {"files": 2, "bytes": 10})
        prog("error", {"path": "/src/gone", "error": "No such file or directory"})
        prog("problem", {"message": "pack x is not in any index"})
        prog("warning", {"path": "/src/f", "error": "changed while reading"})
        prog("file", {"bytes": 5})
    warn("from an on_warning callable")
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.splitlines() == ["recovault: warning: /src/gone: No such file or directory",
                                    "recovault: warning: pack x is not in any index",
                                    "recovault: warning: /src/f: changed while reading",
                                    "recovault: warning: from an on_warning callable"]
    assert set(WARNING_KINDS) == {"error", "problem", "warning"}


@pytest.mark.parametrize("path", ["/src/[/]odd", "/src/[bold]name[/bold]", "/src/a[b"])
def test_a_path_with_brackets_is_printed_as_it_is_on_a_terminal(path):
    """rich reads [...] as markup: a file named '[/]odd' raised MarkupError out of the progress callback."""
    from rich.console import Console
    prog = ProgressReporter(False, "restoring")
    buf = io.StringIO()
    prog.enabled, prog.console = True, Console(file=buf, force_terminal=False, width=200)
    with prog:
        prog("error", {"path": path, "error": "Permission denied"})
        prog("plan", {"files": 1, "bytes": 1})
        prog("error", {"path": path, "error": "again, above the bar"})
    text = buf.getvalue()
    assert f"warning: {path}: Permission denied" in text and f"warning: {path}: again, above the bar" in text


def terminal_reporter(verb: str = "backing up") -> "tuple[ProgressReporter, io.StringIO]":
    """A reporter drawing its bar into a buffer, as it would on a terminal."""
    from rich.console import Console
    prog = ProgressReporter(False, verb)
    buf = io.StringIO()
    prog.enabled, prog.console = True, Console(file=buf, force_terminal=True, width=200)
    return prog, buf


def test_totals_are_labelled_until_the_walk_ends_then_the_bar_measures_final_totals():
    """A bar over totals that grow moves backwards: until "walked" the totals say "found so far" and the bar
    has no total (no time remaining); then its total is the final one and stays."""
    prog, _buf = terminal_reporter()
    with prog:
        prog("plan", {"files": 0, "bytes": 0})
        prog("more", {"files": 1, "bytes": 1000})
        prog("file", {"path": "/src/a", "bytes": 1000})
        task = prog.bar.tasks[0]
        assert task.total is None and task.fields["totals"] == "1/1 files, 1.0 kB of 1.0 kB found so far"
        assert task.fields["current"] == "/src/a"
        prog("more", {"files": 2, "bytes": 3000})
        assert prog.bar.tasks[0].total is None and "found so far" in prog.bar.tasks[0].fields["totals"]
        prog("walked", {})
        task = prog.bar.tasks[0]
        assert task.total == 4000 and task.completed == 1000
        assert task.fields["totals"] == "1/3 files, 1.0 kB of 4.0 kB"
        prog("file", {"path": "/src/" + "deep/" * 30 + "b", "bytes": 2000})
        task = prog.bar.tasks[0]
        assert task.total == 4000 and task.completed == 3000
        assert task.fields["current"].endswith("deep/b")


def test_the_bar_fits_an_80_column_terminal_with_time_totals_and_the_file_at_hand():
    import re
    prog, buf = terminal_reporter()
    prog.console.width = 80
    deep = "/srv/" + "deep/" * 30 + "name.txt"
    with prog:
        prog("plan", {"files": 0, "bytes": 0})
        prog("more", {"files": 40, "bytes": 80 << 20})
        prog("walked", {})
        prog("file", {"path": deep, "bytes": 2 << 20})
        prog.bar.refresh()
    frames = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue()).replace("\r", "\n").splitlines()
    lines = [line for line in frames if line.strip()][-2:]
    assert all(len(line) <= 80 for line in lines), lines
    assert "backing up" in lines[0] and "elapsed" in lines[0] and "left" in lines[0], lines
    assert "1/40 files, 2.1 MB of 83.9 MB" in lines[1] and lines[1].endswith("deep/name.txt"), lines


def test_a_backup_says_when_its_walk_is_over(tmp_path):
    """The backup job sends "walked" once, after the last "more": its totals are final from there on."""
    from recovault import api
    from recovault.vault.keys import KdfParams
    src = tmp_path / "src"
    for i in range(30):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i}").write_bytes(bytes([i]) * (1000 + i))
    events = []
    with api.init_vault(str(tmp_path / "v"), "a passphrase of some length",
                        kdf=KdfParams(memory_kib=8, iterations=1, lanes=1)) as v:
        api.backup(v, [str(src)], progress=lambda kind, info: events.append(kind))
    kinds = [k for k in events if k in ("plan", "more", "walked")]
    assert kinds[0] == "plan" and kinds.count("walked") == 1 and kinds[-1] == "walked"
    assert kinds.count("more") == 30


def test_nothing_on_a_non_terminal_unless_asked(tmp_path):
    from test_cli import Cli, api_vault, ok
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "vault")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 100_000)
    res = ok(cli("backup", "--vault", vault, src))
    assert res.stderr == ""
    (src / "g").write_bytes(b"y" * 50_000)
    res = ok(cli("backup", "--vault", vault, src, env={"RECOVAULT_PROGRESS": "0.0001"}))
    lines = res.stderr.splitlines()
    assert lines and all(line.startswith("recovault: progress: backing up ") for line in lines), res.stderr
    assert "elapsed" in lines[-1] and "found so far" not in lines[-1] and "1/1 files" in lines[-1], lines


def test_final_totals_from_the_start_give_a_bar_at_once():
    prog, _buf = terminal_reporter("reading")
    with prog:
        prog("plan", {"files": 2, "bytes": 2048, "final": True})
        prog("file", {"path": "data/ab/abcd", "bytes": 1024})
        task = prog.bar.tasks[0]
        assert task.total == 2048 and task.completed == 1024
        assert task.fields["totals"] == "1/2 files, 1.0 kB of 2.0 kB"


def test_check_read_data_reports_its_packs(tmp_path):
    """check --read-data is a long run: it says how many packs it reads, then each one as it is read."""
    from recovault import api
    from recovault.vault.check import Checker
    from recovault.vault.keys import KdfParams
    from recovault.vault.repo import Settings
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}").write_bytes(os.urandom(300_000))
    events = []
    settings = Settings(min_size=16 << 10, avg_size=64 << 10, max_size=256 << 10, pack_size=1 << 20)
    with api.init_vault(str(tmp_path / "v"), "a passphrase of some length",
                        kdf=KdfParams(memory_kib=8, iterations=1, lanes=1), settings=settings) as v:
        api.backup(v, [str(src)])
        assert Checker(v, lambda kind, info: events.append((kind, info))).run(read_data=True)["ok"]
    plans = [info for kind, info in events if kind == "plan"]
    files = [info for kind, info in events if kind == "file"]
    assert len(plans) == 1 and plans[0]["final"] and plans[0]["files"] == len(files) >= 2
    assert sum(f["bytes"] for f in files) == plans[0]["bytes"] >= 1_800_000
    assert all(f["path"].startswith("data/") for f in files)


def test_prune_steps_only_on_a_terminal_or_when_asked(tmp_path):
    from test_cli import Cli, api_vault, ok
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "vault")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(10_000))
    ok(cli("backup", "--vault", vault, src))
    assert ok(cli("prune", "--vault", vault, "--margin", "0")).stderr == ""
    res = ok(cli("prune", "--vault", vault, "--margin", "0", env={"RECOVAULT_PROGRESS": "60"}))
    assert "recovault: progress: pruning: finding referenced blobs" in res.stderr.splitlines(), res.stderr


def test_final_totals_of_nothing_give_a_full_bar():
    """An unchanged backup reads nothing: once its walk is over the bar is full, not stuck at 0%."""
    prog, _buf = terminal_reporter()
    with prog:
        prog("plan", {"files": 0, "bytes": 0})
        assert prog.bar.tasks[0].total is None
        prog("walked", {})
        assert prog.bar.tasks[0].percentage == 100
