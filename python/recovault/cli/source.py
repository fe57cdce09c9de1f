"""The second vault a command reads (copy's --from, init's --copy-keys-from): its passphrase option and how
it is opened. Its passphrase comes from --from-passphrase-file, RECOVAULT_FROM_PASSPHRASE or a prompt, never
from the other vault's options: two vaults, two passphrases, each named in its messages."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

import click

from ..errors import RecovaultError
from .context import Ctx

if TYPE_CHECKING:
    from ..storage import Storage
    from ..vault.repo import Vault

FROM_PASSPHRASE_ENV = "RECOVAULT_FROM_PASSPHRASE"


def from_passphrase_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--from-passphrase-file", default=None, metavar="FILE",
                        help=f"Read the source vault's passphrase from FILE (else ${FROM_PASSPHRASE_ENV}, "
                             "else a prompt).")(f)


def named(role: str, url: str, e: RecovaultError) -> RecovaultError:
    """`e` (same class: same exit code) with its message saying which vault it is about."""
    return type(e)(f"the {role} vault {url}: {e}")


def storage_of(role: str, location: str) -> "Storage":
    """The storage at `location`; errors (no such directory, a URL that does not parse) name `role`."""
    from ..storage import open_storage
    try:
        return open_storage(location)
    except RecovaultError as e:
        raise named(role, location, e) from None


def check_config(role: str, storage: "Storage") -> str:
    """The id of the vault at `storage` (its plaintext config: no passphrase needed); errors name `role`."""
    from ..vault.repo import ConfigEnvelope
    try:
        return ConfigEnvelope.read(storage).vault_id
    except RecovaultError as e:
        raise named(role, storage.url, e) from None


def open_named(c: Ctx, role: str, storage: "Storage", passphrase: str) -> "Vault":
    from ..vault.repo import Vault
    try:
        return Vault.open(storage, passphrase, cache_dir=c.cache_dir, on_event=c.vault_event)
    except RecovaultError as e:
        raise named(role, storage.url, e) from None


def source_passphrase(c: Ctx, passphrase_file: Optional[str]) -> str:
    from ..vault.keys import read_passphrase
    return read_passphrase(passphrase_file, prompt=True, on_warning=c.warn, env_var=FROM_PASSPHRASE_ENV,
                           option="--from-passphrase-file", what="the source vault")


def open_source(c: Ctx, location: str, passphrase_file: Optional[str]) -> "Vault":
    """The source vault, unlocked with its own passphrase."""
    storage = storage_of("source", location)
    check_config("source", storage)
    return open_named(c, "source", storage, source_passphrase(c, passphrase_file))
