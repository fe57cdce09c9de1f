"""Where the passphrase comes from (issue 11, "secrets, the usual ways"): RECOVAULT_PASSPHRASE_FILE,
--passphrase-file - (standard input), --passphrase-command / RECOVAULT_PASSPHRASE_COMMAND (restic's
password-command), which wins when two are given, and that no secret ever reaches the output. Also: init
prints its passphrase-loss warning only once the vault exists."""
from __future__ import annotations

import os

import pytest

from test_cli import PASSPHRASE, Cli, api_vault, fails, json_out, ok
from e2e_tree import write

from recovault.cli.init_cmd import LOSS_WARNING

SECRET_WRONG = "a wrong passphrase nobody may see"


@pytest.fixture
def setup(tmp_path):
    cli = Cli(tmp_path / "home", passphrase=None)
    vault = api_vault(tmp_path / "vault")
    good = os.fsdecode(write(tmp_path / "good", PASSPHRASE.encode() + b"\n"))
    os.chmod(good, 0o600)
    wrong = os.fsdecode(write(tmp_path / "wrong", SECRET_WRONG.encode()))
    os.chmod(wrong, 0o600)
    return cli, vault, good, wrong


def test_passphrase_from_standard_input(setup):
    cli, vault, _good, _wrong = setup
    assert json_out(cli("snapshots", "--vault", vault, "--json", "--passphrase-file", "-",
                          stdin=PASSPHRASE.encode() + b"\n")) == []
    fails(cli("snapshots", "--vault", vault, "--passphrase-file", "-", stdin=b""), 2, "standard input")
    res = cli("snapshots", "--vault", vault, "--passphrase-file", "-", stdin=SECRET_WRONG.encode())
    fails(res, 12, "wrong passphrase")
    assert SECRET_WRONG not in res.stdout + res.stderr


def test_passphrase_file_from_the_environment(setup):
    cli, vault, good, wrong = setup
    assert json_out(cli("snapshots", "--vault", vault, "--json", env={"RECOVAULT_PASSPHRASE_FILE": good})) == []
    # the command line wins over the environment, before or after the command name
    ok(cli("snapshots", "--vault", vault, "--passphrase-file", good, env={"RECOVAULT_PASSPHRASE_FILE": wrong}))
    ok(cli("--passphrase-file", good, "snapshots", "--vault", vault, env={"RECOVAULT_PASSPHRASE_FILE": wrong}))
    # and a file wins over RECOVAULT_PASSPHRASE, as --passphrase-file always did
    ok(cli("snapshots", "--vault", vault,
           env={"RECOVAULT_PASSPHRASE_FILE": good, "RECOVAULT_PASSPHRASE": SECRET_WRONG}))
    res = cli("snapshots", "--vault", vault, env={"RECOVAULT_PASSPHRASE_FILE": wrong})
    fails(res, 12, "wrong passphrase")
    assert SECRET_WRONG not in res.stdout + res.stderr


def test_passphrase_command(setup, tmp_path):
    cli, vault, good, wrong = setup
    assert json_out(cli("snapshots", "--vault", vault, "--json", "--passphrase-command", f"cat '{good}'")) == []
    ok(cli("snapshots", "--vault", vault, env={"RECOVAULT_PASSPHRASE_COMMAND": f"cat {good}"}))
    # the command line wins over the environment, whichever of the two sources each is
    ok(cli("snapshots", "--vault", vault, "--passphrase-command", f"cat {good}",
           env={"RECOVAULT_PASSPHRASE_FILE": wrong}))
    ok(cli("snapshots", "--vault", vault, "--passphrase-file", good,
           env={"RECOVAULT_PASSPHRASE_COMMAND": f"cat {wrong}"}))
    fails(cli("snapshots", "--vault", vault, "--passphrase-file", good, "--passphrase-command", f"cat {good}"),
          2, "not both")
    fails(cli("snapshots", "--vault", vault, env={"RECOVAULT_PASSPHRASE_FILE": good,
                                                 "RECOVAULT_PASSPHRASE_COMMAND": f"cat {good}"}), 2, "both set")

    # a failing command: one line naming the program and its status, never what it printed
    leaky = f"sh -c 'echo {SECRET_WRONG}; exit 3'"
    res = cli("snapshots", "--vault", vault, "--json", "--passphrase-command", leaky)
    fails(res, 2, "passphrase command sh failed (exit 3)")
    assert SECRET_WRONG not in res.stdout + res.stderr
    fails(cli("snapshots", "--vault", vault, "--passphrase-command", tmp_path / "no-such-program"), 2, "cannot run")
    fails(cli("snapshots", "--vault", vault, "--passphrase-command", "true"), 2, "printed no passphrase")
    fails(cli("snapshots", "--vault", vault, "--passphrase-command", "cat 'unclosed"), 2, "--passphrase-command")
    res = cli("snapshots", "--vault", vault, "--passphrase-command", f"cat {wrong}")
    fails(res, 12, "wrong passphrase")
    assert SECRET_WRONG not in res.stdout + res.stderr


def test_backup_stdin_keeps_its_data_from_the_passphrase_sources(setup, tmp_path):
    cli, vault, good, _wrong = setup
    data = os.urandom(1000) + b"the stream"
    fails(cli("backup", "--vault", vault, "--stdin", "--passphrase-file", "-", stdin=data), 2,
          "--passphrase-file -")
    # the command does not get the data piped to recovault: its standard input is empty
    seen = tmp_path / "command-saw"
    cmd = f"sh -c 'cat > {seen}; cat {good}'"
    ok(cli("backup", "--vault", vault, "--stdin", "--stdin-name", "s.bin", "--passphrase-command", cmd,
             stdin=data))
    assert seen.read_bytes() == b""
    res = cli("restore", "--vault", vault, "latest", "--target", tmp_path / "r",
                "--passphrase-command", f"cat {good}", stdin=b"")
    ok(res)
    found = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "r") for f in fs]
    assert len(found) == 1 and open(found[0], "rb").read() == data


def test_init_warns_of_passphrase_loss_only_once_the_vault_exists(tmp_path):
    cli = Cli(tmp_path / "home")
    vault = tmp_path / "vault"
    res = cli("init", "--vault", vault, env={"RECOVAULT_PASSPHRASE": "too short"})
    fails(res, 2, "16 characters")
    assert LOSS_WARNING not in res.stderr
    res = cli("init", "--vault", vault, "--passphrase-command", "false")
    fails(res, 2, "passphrase command false failed")
    assert LOSS_WARNING not in res.stderr
    res = cli("init", "--vault", vault, "--passphrase-command", "echo too short")
    fails(res, 2, "16 characters")
    assert LOSS_WARNING not in res.stderr and not os.path.exists(vault / "config")
    res = ok(cli("init", "--vault", vault))
    assert LOSS_WARNING in res.stderr and "created vault" in res.stdout
    res = cli("init", "--vault", vault)
    fails(res, 11, "already exists")
    assert LOSS_WARNING not in res.stderr
