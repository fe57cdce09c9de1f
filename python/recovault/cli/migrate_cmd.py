"""recovault migrate: upgrade a vault to the current format version (docs/vault-format.md §4). Writing
commands do it by themselves; this does it alone, and says what it did. Running it twice is a no-op."""
from __future__ import annotations

import click

from .context import Ctx, common_options, examples, pass_ctx


@click.command(epilog=examples(
    'recovault migrate --vault /backup/vault'))
@common_options
@pass_ctx
def migrate(c: Ctx) -> None:
    """Upgrade the vault to the current format version (recovault versions that read only the old one can
    no longer open it)."""
    with c.open() as v:
        from .. import api
        report = api.migrate(v)
    c.out({"from_version": report.from_version, "to_version": report.to_version, "adopted": report.adopted,
           "config_rewritten": report.config_rewritten}, report.describe())


command = migrate
