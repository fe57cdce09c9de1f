"""recovault version: recovault's version, the vault format it writes, and the version of its JSON output
(`schema_version`, docs/json.md): the one place a script learns which shapes it may rely on, since most
outputs are lists that have no room for a version field."""
from __future__ import annotations

import click

from .. import __version__
from .context import Ctx, common_options, examples, pass_ctx

#: The version of the documented --json shapes (docs/json.md, docs/schemas/). Shapes only grow: a field is
#: added, never removed or retyped; each addition raises this number, so a script that needs a field added
#: in version N checks `schema_version >= N`.
SCHEMA_VERSION = 1


@click.command(epilog=examples("recovault version", "recovault version --json"))
@common_options
@pass_ctx
def version(c: Ctx) -> None:
    """Show recovault's version, the vault format it writes and the version of its JSON output."""
    from ..vault.format import VAULT_FORMAT
    c.out({"version": __version__, "schema_version": SCHEMA_VERSION, "vault_format": VAULT_FORMAT},
          f"recovault {__version__} (vault format {VAULT_FORMAT}, JSON schema version {SCHEMA_VERSION})")


command = version
