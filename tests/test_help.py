"""Help that teaches: every command of cli.COMMANDS (and every subcommand of a group) has a help line, each of
its options has one, and `recovault COMMAND --help` shows an example of the command in use."""
from __future__ import annotations

from typing import Iterator, List, Tuple

import click
import pytest
from click.testing import CliRunner

from recovault.cli import COMMANDS, cli


def _commands() -> Iterator[Tuple[List[str], click.Command]]:
    ctx = click.Context(cli)
    for name in sorted(COMMANDS):
        cmd = cli.get_command(ctx, name)
        yield [name], cmd
        if isinstance(cmd, click.Group):
            for sub in sorted(cmd.commands):
                yield [name, sub], cmd.commands[sub]


ALL = list(_commands())


@pytest.mark.parametrize("path, cmd", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_every_command_and_option_has_a_help_line(path, cmd):
    assert (cmd.help or "").strip(), f"recovault {' '.join(path)} has no help text"
    assert cmd.get_short_help_str().strip()
    missing = [p.opts[0] for p in cmd.params if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert not missing, f"recovault {' '.join(path)}: options without a help line: {missing}"


@pytest.mark.parametrize("path, cmd", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_every_help_shows_an_example(path, cmd):
    res = CliRunner().invoke(cli, path + ["--help"])
    assert res.exit_code == 0, res.output
    assert "Examples:" in res.output, f"recovault {' '.join(path)} --help shows no example"
    examples = res.output[res.output.index("Examples:"):].splitlines()[1:]
    usage = " ".join(["recovault"] + path)
    assert any(line.strip().startswith(usage) for line in examples), (usage, examples)


def test_the_group_help_lists_every_command_with_its_line():
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0
    commands = res.output.split("Commands:")[1].split("Examples:")[0]
    listed = {line.split()[0]: line for line in commands.splitlines() if line.strip()}
    assert set(listed) == set(COMMANDS)
    assert all(len(line.split()) > 1 for line in listed.values())
    assert "Examples:" in res.output and "recovault backup " in res.output
