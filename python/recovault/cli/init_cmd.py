"""recovault init: create a vault."""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import click

from ..errors import UsageError
from .context import Ctx, common_options, examples, pass_ctx
from .source import from_passphrase_option, open_source

LOSS_WARNING = ("The vault's key is encrypted with your passphrase. Keep the passphrase safe: if every "
                "passphrase of a vault is lost, its data cannot be recovered by anyone.")


@click.command(epilog=examples(
    'recovault init --vault /backup/vault', 'recovault init --vault s3://acme-backups/web1 --soft-delete-days 30', 'recovault init --vault /backup/replica --copy-keys-from /mnt/usb/vault'))
@common_options
@click.option("--chunk-min", type=int, default=None, help="Content-defined chunking minimum size (bytes).")
@click.option("--chunk-avg", type=int, default=None, help="Average chunk size (a power of two).")
@click.option("--chunk-max", type=int, default=None, help="Maximum chunk size.")
@click.option("--compression-level", type=int, default=None, help="zstd level (default 3).")
@click.option("--soft-delete-days", type=int, default=14, show_default=True, metavar="N",
              help="Forgotten recovery points stay recoverable for N days (0: off; 'policy set' changes it).")
@click.option("--copy-keys-from", "keys_from", default=None, metavar="VAULT",
              help="Share the master keys and chunker settings of VAULT (its passphrase: --from-passphrase-file, "
                   "RECOVAULT_FROM_PASSPHRASE or a prompt): 'copy' between the two then moves blobs as they are, "
                   "and backups into either deduplicate against the other's data.")
@from_passphrase_option
@pass_ctx
def init(c: Ctx, chunk_min: Optional[int], chunk_avg: Optional[int], chunk_max: Optional[int],
         compression_level: Optional[int], soft_delete_days: int, keys_from: Optional[str],
         from_passphrase_file: Optional[str]) -> None:
    """Create a new vault."""
    from ..vault.journal import VaultPolicy
    from ..vault.repo import Settings
    VaultPolicy(None, soft_delete_days)  # a bad period fails before the passphrase is asked for
    if keys_from and (chunk_min or chunk_avg or chunk_max):
        raise UsageError("--copy-keys-from takes the chunker settings of the source vault: --chunk-min, "
                         "--chunk-avg and --chunk-max cannot be given with it")
    location = c.need_location()
    source = open_source(c, keys_from, from_passphrase_file) if keys_from else None
    if source is not None:
        s = source.settings if compression_level is None else replace(source.settings, level=compression_level)
    else:
        s = Settings()
        s.min_size = chunk_min or s.min_size
        s.avg_size = chunk_avg or s.avg_size
        s.max_size = chunk_max or s.max_size
        s.level = s.level if compression_level is None else compression_level
    from .. import api
    v = api.init_vault(location, c.passphrase(confirm=True), settings=s, cache_dir=c.cache_dir,
                       soft_delete_days=soft_delete_days, keys_from=source)
    v.close()
    if source is not None:
        source.close()
    c.out({"vault": v.storage.url, "id": v.id, "keyid": v.keyid, "keys_from": source.id if source else None},
          f"created vault {v.id[:8]} at {v.storage.url}"
          + (f", sharing the keys of vault {source.id[:8]} at {source.storage.url}" if source else ""))
    if not c.json:  # only once the vault exists: a failed init has no passphrase to lose
        click.echo(LOSS_WARNING, err=True)


command = init
