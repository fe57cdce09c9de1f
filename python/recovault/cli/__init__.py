"""The recovault command line: the `cli` group, one module per command (`<name>_cmd.py`, each exporting
`command`), and `main`, which turns every failure into one line and an exit code (errors.py), never a
traceback.

Every command takes the common options (--vault or RECOVAULT_VAULT, --passphrase-file, --cache-dir,
--json; context.py), before or after its name; the passphrase comes from --passphrase-file,
RECOVAULT_PASSPHRASE, or a prompt on a terminal.

To add a command: write `<name>_cmd.py` with a click command (or group) decorated with `@common_options`
and `@pass_ctx`, assign it to `command`, and add it to COMMANDS below. To add a common option:
one line in context.COMMON_OPTIONS. Commands import the rest of the package when they run: start-up time
is part of every run (see docs/performance.md), and `recovault` (the _entry module) derives the key
meanwhile.
"""
from __future__ import annotations

import errno
import importlib
import json
import os
import sys
from typing import Dict, List, Optional

import click

from .. import __version__
from ..errors import RecovaultError
from .context import Ctx, common_options, examples

# The commands: name -> module (`<module>.command` is the click command). Add a command here.
COMMANDS: Dict[str, str] = {
    "init": "init_cmd",
    "backup": "backup_cmd",
    "restore": "restore_cmd",
    "snapshots": "snapshots_cmd",
    "ls": "ls_cmd",
    "check": "check_cmd",
    "stats": "stats_cmd",
    "mount": "mount_cmd",
    "repair": "repair_cmd",
    "key": "key_cmd",
    "migrate": "migrate_cmd",
    "forget": "forget_cmd",
    "undelete": "undelete_cmd",
    "policy": "policy_cmd",
    "prune": "prune_cmd",
    "status": "status_cmd",
    "copy": "copy_cmd",
    "diff": "diff_cmd",
    "find": "find_cmd",
    "dump": "dump_cmd",
    "version": "version_cmd",
    "cache": "cache_cmd",
    "job": "job_cmd",
}


class _LazyGroup(click.Group):
    """Imports a command's module only when that command runs (or --help lists them all): a run costs the
    import of one command, not of every one (click's "lazily loading subcommands" pattern)."""

    def list_commands(self, ctx: click.Context) -> List[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name in COMMANDS:
            return importlib.import_module(f".{COMMANDS[cmd_name]}", __name__).command
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: click.Context, args: List[str]):  # type: ignore[no-untyped-def]
        try:
            return super().resolve_command(ctx, args)
        except getattr(click.exceptions, "NoSuchCommand", ()) as e:  # click >= 8.4 suggests a close name
            raise type(e)(e.command_name, possibilities=self.list_commands(ctx), ctx=ctx) from None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=examples(
    "recovault init --vault /backup/vault", "recovault backup --vault /backup/vault /srv /etc",
    "recovault snapshots --vault /backup/vault", "recovault restore latest --target /tmp/restore",
    "recovault COMMAND --help   (each command's options and examples)"))
@click.version_option(__version__, prog_name="recovault")
@common_options
@click.pass_context
def cli(ctx: click.Context) -> None:
    """recovault: deduplicated, compressed, encrypted backups of Linux hosts."""
    ctx.ensure_object(Ctx)


def _terminate(signum, frame):  # SIGTERM: unwind like Ctrl-C so stored packs get indexed
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> None:
    import signal
    signal.signal(signal.SIGTERM, _terminate)
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    state = Ctx()
    try:
        _run(state, argv, as_json)
    finally:
        state.unwire_storage()  # a program that calls main() again, or opens storages after it, starts clean
        state.tidy_cache()


def _run(state: Ctx, argv: Optional[List[str]], as_json: bool) -> None:
    try:
        cli.main(args=argv, prog_name="recovault", standalone_mode=False, obj=state)
    except click.exceptions.Abort:
        _fail(state, "interrupted", 130, as_json)
    except getattr(click.exceptions, "NoArgsIsHelpError", ()) as e:  # `recovault` alone: the help, not an error
        click.echo(e.format_message(), err=True)
        sys.exit(2)
    except click.ClickException as e:
        _fail(state, e.format_message(), 2, as_json)
    except KeyboardInterrupt:
        _fail(state, "interrupted; the vault is still valid and the next backup reuses what was stored", 130, as_json)
    except RecovaultError as e:
        _fail(state, str(e), e.exit_code, as_json)
    except MemoryError:
        _fail(state, "out of memory", 1, as_json)
    except OSError as e:
        what = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        _fail(state, f"{what}{': ' + str(e.filename) if e.filename else ''}", 1, as_json)
    except Exception as e:  # noqa: BLE001 - the last resort: one line, never a traceback (RECOVAULT_DEBUG=1 shows it)
        if os.environ.get("RECOVAULT_DEBUG"):
            raise
        _fail(state, f"internal error: {type(e).__name__}: {e} (set RECOVAULT_DEBUG=1 for a traceback)", 1, as_json)
    sys.exit(0)


def _fail(state: Ctx, msg: str, code: int, as_json: bool) -> None:
    if as_json and not state.json_printed:
        click.echo(json.dumps({"error": msg, "exit_code": code}))
    click.echo(f"recovault: error: {msg}", err=True)
    sys.exit(code)
