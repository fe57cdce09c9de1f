"""The CLI's progress display and warnings (recovault.progress): library warnings reach stderr, whatever
their text, and never stdout."""
from __future__ import annotations

import io

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
