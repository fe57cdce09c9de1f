"""docs/usage.md stays true: the README links it, and every `recovault ...` line in its examples names a real
command (and subcommand) with options that command has. The commands are parsed, not run (the walk through
itself was run as written when it was written)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import List

import click

from recovault.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parent.parent
USAGE = ROOT / "docs" / "usage.md"


def invocations(text: str) -> List[List[str]]:
    """The argument lists after `recovault` in the doc's shell blocks and units' ExecStart= lines
    (continuation lines joined; comments, pipes and `&&` cut off)."""
    out = []
    for lang, block in re.findall(r"```(sh|ini)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if lang == "ini" and not line.startswith("ExecStart="):
                continue
            line = line.split("  #")[0].split(" # ")[0]
            for part in re.split(r"\|(?!\s*recovault)|&&|;", line):
                words = shlex.split(part, comments=True)
                for i, w in enumerate(words):
                    if w == "recovault" or w.endswith("/recovault"):
                        out.append(words[i + 1:])
                        break
    return out


def options_of(command: click.Command) -> set:
    return {opt for p in command.params for opt in p.opts + p.secondary_opts}


def test_the_readme_links_usage():
    assert "(docs/usage.md)" in (ROOT / "README.md").read_text()


def test_every_example_is_a_real_command_with_real_options():
    ctx = click.Context(cli)
    found = invocations(USAGE.read_text())
    assert len(found) >= 19  # the walk through covers the week
    for args in found:
        name = args[0]
        assert name in COMMANDS, args
        command = cli.get_command(ctx, name)
        rest = args[1:]
        if isinstance(command, click.Group) and not (command.invoke_without_command and rest[0].startswith("-")):
            sub = command.get_command(ctx, rest[0])
            assert sub is not None, args
            command, rest = sub, rest[1:]
        known = options_of(command)
        for word in rest:
            if word.startswith("--"):
                assert word.split("=")[0] in known, (word, args)
    names = {a[0] for a in found}
    assert {"init", "backup", "restore", "check", "repair", "cache", "forget"} <= names
