"""recovault init: create a vault."""
from __future__ import annotations

from typing import Optional

import click

from .context import Ctx, common_options, pass_ctx

LOSS_WARNING = ("The vault's key is encrypted with your passphrase. Keep the passphrase safe: if every "
                "passphrase of a vault is lost, its data cannot be recovered by anyone.")


@click.command()
@common_options
@click.option("--chunk-min", type=int, default=None, help="Content-defined chunking minimum size (bytes).")
@click.option("--chunk-avg", type=int, default=None, help="Average chunk size (a power of two).")
@click.option("--chunk-max", type=int, default=None, help="Maximum chunk size.")
@click.option("--compression-level", type=int, default=None, help="zstd level (default 3).")
@click.option("--soft-delete-days", type=int, default=14, show_default=True, metavar="N",
              help="Forgotten recovery points stay recoverable for N days (0: off; 'policy set' changes it).")
@pass_ctx
def init(c: Ctx, chunk_min: Optional[int], chunk_avg: Optional[int], chunk_max: Optional[int],
         compression_level: Optional[int], soft_delete_days: int) -> None:
    """Create a new vault."""
    from ..vault.journal import VaultPolicy
    from ..vault.repo import Settings
    VaultPolicy(None, soft_delete_days)  # a bad period fails before the passphrase is asked for
    s = Settings()
    s.min_size = chunk_min or s.min_size
    s.avg_size = chunk_avg or s.avg_size
    s.max_size = chunk_max or s.max_size
    s.level = s.level if compression_level is None else compression_level
    if not c.json:
        click.echo(LOSS_WARNING, err=True)
    from .. import api
    v = api.init_vault(c.need_location(), c.passphrase(confirm=True), settings=s, cache_dir=c.cache_dir,
                       soft_delete_days=soft_delete_days)
    v.close()
    c.out({"vault": v.storage.url, "id": v.id, "keyid": v.keyid},
          f"created vault {v.id[:8]} at {v.storage.url}")


command = init
