"""recovault copy: recovery points with their blobs from one vault into another (jobs/copy.py)."""
from __future__ import annotations

from typing import Optional, Tuple

import click

from ..errors import Partial, UsageError, VaultNotFound
from .context import Ctx, common_options, examples, pass_ctx
from .source import check_config, from_passphrase_option, open_named, source_passphrase, storage_of


@click.command(epilog=examples(
    'recovault copy --from /mnt/usb/vault --to /backup/replica', 'recovault copy --from /mnt/usb/vault 1a2b3c4d latest'))
@common_options
@click.argument("snapshots", nargs=-1)
@click.option("--from", "source", required=True, metavar="VAULT", help="The vault to copy from.")
@click.option("--to", "target", default=None, metavar="VAULT",
              help="The vault to copy into (default: --vault / RECOVAULT_VAULT); its passphrase: --passphrase-file, "
                   "RECOVAULT_PASSPHRASE or a prompt.")
@from_passphrase_option
@pass_ctx
def copy(c: Ctx, snapshots: Tuple[str, ...], source: str, target: Optional[str],
         from_passphrase_file: Optional[str]) -> None:
    """Copy recovery points (default: every live one the target lacks) with their blobs into another vault."""
    c.refuse_host_key()
    src_storage = storage_of("source", source)
    src_id = check_config("source", src_storage)
    try:
        dst_storage = storage_of("target", target or c.need_location())
        dst_id = check_config("target", dst_storage)
    except VaultNotFound as e:
        raise VaultNotFound(f"{e}; create it first: 'recovault init --vault TARGET --copy-keys-from {source}' "
                            "(then blobs move as they are, and backups into it deduplicate against them)") from None
    if src_id == dst_id:
        raise UsageError(f"--from {src_storage.url} and --to {dst_storage.url} are the same vault (id {src_id}"
                         "; a copy of a vault made outside recovault keeps its id): nothing to copy")
    with open_named(c, "source", src_storage, source_passphrase(c, from_passphrase_file)) as src, \
            open_named(c, "target", dst_storage, c.passphrase()) as dst:
        from .. import api
        with c.progress("copying", "recovery points") as prog:
            result = api.copy(src, dst, list(snapshots), progress=prog)
    c.out(result.to_json(), (f"copied {len(result.copied)} recovery point(s) from {result.source} to {result.target} "
                             f"({result.mode}): {result.blobs_copied} blob(s), {result.bytes_copied / 1e6:.1f} MB "
                             f"stored, {result.blobs_present} the target had; {len(result.present)} point(s) it "
                             "had already"))
    if result.damaged:
        raise Partial(f"{len(result.damaged)} recovery point(s) of the source could not be read and were not copied")


command = copy
