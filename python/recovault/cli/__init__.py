"""The recovault command line: the `cli` group, one module per command (`<name>_cmd.py`, each exporting
`command`), and `main`, which turns every failure into one line and an exit code (errors.py), never a
traceback.

Every command takes the common options (--vault or RECOVAULT_VAULT, --passphrase-file, --cache-dir,
--json; context.py), before or after its name; the passphrase comes from --passphrase-file,
RECOVAULT_PASSPHRASE, or a prompt on a terminal.

To add a command: write `<name>_cmd.py` with a click command (or group) decorated with `@common_options`
and `@pass_ctx`, assign it to `command`, and import it and list it in COMMANDS below. To add a common option:
one line in context.COMMON_OPTIONS. Commands import the rest of the package when they run: start-up time
is part of every run (see docs/performance.md), and `recovault` (the _entry module) derives the key
meanwhile.
"""
from __future__ import annotations

import errno
import json
import os
import sys
from typing import List, Optional

import click

from .. import __version__
from ..errors import RecovaultError
from .context import Ctx, common_options

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="recovault")
@common_options
@click.pass_context
def cli(ctx: click.Context) -> None:
    """recovault: deduplicated, compressed, encrypted backups of Linux hosts."""
    ctx.ensure_object(Ctx)


# The commands (help lists them by name). Each module is small: it imports what it needs when it runs.
from . import backup_cmd, check_cmd, init_cmd, key_cmd, ls_cmd, mount_cmd, restore_cmd, snapshots_cmd, stats_cmd  # noqa: E402

COMMANDS = (init_cmd, backup_cmd, restore_cmd, snapshots_cmd, ls_cmd, check_cmd, stats_cmd, mount_cmd, key_cmd)
for _module in COMMANDS:
    cli.add_command(_module.command)


def _terminate(signum, frame):  # SIGTERM: unwind like Ctrl-C so stored packs get indexed
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> None:
    import signal
    signal.signal(signal.SIGTERM, _terminate)
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    state = Ctx()
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
