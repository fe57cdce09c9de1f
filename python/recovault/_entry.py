"""The `recovault` command.

Before the command line is parsed (importing click and the rest of the program takes ~0.1 s), this
starts deriving the key of the vault the arguments name, in a background thread: Argon2id (~0.2 s)
releases the GIL, so the two overlap. The arguments are only glanced at here (--vault/-r, RECOVAULT_VAULT,
--passphrase-file, RECOVAULT_PASSPHRASE_FILE, RECOVAULT_PASSPHRASE; never a prompt, standard input or a
passphrase command, which can be read or run only once; the common options of cli/context.py, anywhere on
the command line); a wrong guess or any failure is silently dropped, and the command then unlocks the vault
the ordinary way. See vault.keys.derive_early.
"""
from __future__ import annotations

import os
import stat
import sys
from typing import List, Optional


def _option(argv: List[str], *names: str) -> Optional[str]:
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg in names and i + 1 < len(argv):
            return argv[i + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return None


def _start_early_key_derivation(argv: List[str]) -> None:
    if os.environ.get("RECOVAULT_FAULTS"):
        return  # injected faults (and a kill at the Nth storage call) count the command's own calls only
    if not argv or argv[0] == "init" or "-h" in argv or "--help" in argv or "--version" in argv:
        return
    location = _option(argv, "--vault", "-r") or os.environ.get("RECOVAULT_VAULT")
    if _option(argv, "--key-file") is not None or os.environ.get("RECOVAULT_KEY_FILE"):
        return  # a host key file: its own key derivation (the vault's key files are not its)
    if _option(argv, "--passphrase-command") is not None:
        return  # a command runs once, when the CLI asks for the passphrase (it may prompt, or cost)
    passphrase_file = _option(argv, "--passphrase-file")
    if passphrase_file is None:
        if os.environ.get("RECOVAULT_PASSPHRASE_COMMAND"):
            return
        passphrase_file = os.environ.get("RECOVAULT_PASSPHRASE_FILE") or None
    if not location or not (passphrase_file or os.environ.get("RECOVAULT_PASSPHRASE")) or passphrase_file == "-":
        return  # '-': standard input can be read only once: leave it to the CLI
    from .storage import find_scheme
    try:
        scheme = find_scheme(location)
    except Exception:  # noqa: BLE001 - an unknown scheme: the command reports it
        return
    if scheme is not None and scheme.name != "file":
        return  # object stores, erasure-coded sets: no network requests before the command line is parsed
    if passphrase_file is not None:
        try:
            if not stat.S_ISREG(os.stat(passphrase_file).st_mode):
                return  # a pipe (--passphrase-file <(pass show ...)) can be read only once: leave it to the CLI
        except OSError:
            return
    try:
        from .storage import open_storage
        from .vault.keys import derive_early, read_passphrase
        storage = open_storage(location)
        try:
            derive_early(storage, read_passphrase(passphrase_file, prompt=False))
        finally:
            storage.close()
    except Exception:  # noqa: BLE001 - only a head start: the command reports any real problem itself
        pass


def main() -> None:
    _start_early_key_derivation(sys.argv[1:])
    from .cli import main as cli_main
    cli_main()
