"""recovault repair: restore what is damaged or missing (--from REPLICA: from another vault holding the same
recovery points); recovault repair index: rebuild what the vault holds twice (the index) from what it holds
once (the packs)."""
from __future__ import annotations

from typing import Optional

import click

from ..errors import CorruptData, UsageError
from .context import Ctx, common_options, examples, pass_ctx
from .source import check_config, from_passphrase_option, open_named, source_passphrase, storage_of


@click.group(invoke_without_command=True, epilog=examples(
    'recovault repair --from /mnt/offsite/vault', 'recovault repair index'))
@common_options
@click.option("--from", "from_", default=None, metavar="REPLICA",
              help="Restore damaged or missing packs, blobs and recovery points from REPLICA, another vault "
                   "holding the same recovery points (a copy target or source); its passphrase: "
                   "--from-passphrase-file, RECOVAULT_FROM_PASSPHRASE or a prompt.")
@from_passphrase_option
@click.pass_context
def repair(ctx: click.Context, from_: Optional[str], from_passphrase_file: Optional[str]) -> None:
    """Restore what is damaged or missing (--from REPLICA), or rebuild the index (repair index)."""
    if ctx.invoked_subcommand is not None:
        if from_:
            raise UsageError(f"--from is an option of 'repair' itself, not of 'repair {ctx.invoked_subcommand}'")
        return
    if from_:
        _repair_from(ctx.ensure_object(Ctx), from_, from_passphrase_file)
        return
    raise UsageError("a plain vault holds nothing twice to rebuild from: give --from REPLICA (another vault "
                     "holding the same recovery points), or run 'recovault repair index'")


def _repair_from(c: Ctx, location: str, passphrase_file: Optional[str]) -> None:
    """repair --from: vault/replica_repair.py does the work; this opens both vaults and reports."""
    from ..vault.replica_repair import repair_from
    c.wire_storage()  # a group's callback: common_options does this for commands only
    storage = storage_of("replica", location)
    check_config("replica", storage)
    with c.open(write=True) as v:
        if storage.url == v.storage.url:
            raise UsageError(f"--from {location} is the vault itself: give another vault holding its recovery points")
        with open_named(c, "replica", storage, source_passphrase(c, passphrase_file)) as replica, \
                c.progress("checking", "packs") as prog:
            rep = repair_from(v, replica, progress=prog)
    c.out({"vault": rep.vault, "from": rep.to_json()}, (
        f"read {rep.packs_read} pack(s): {len(rep.damaged_packs)} damaged or missing; restored {rep.restored_blobs} "
        f"blob(s) ({rep.restored_bytes / 1e6:.1f} MB) from {rep.replica} ({rep.mode}), copied {rep.rescued_blobs} "
        f"intact one(s) out of damaged packs, put back {len(rep.restored_points)} recovery point(s); "
        f"{len(rep.dropped_packs)} damaged pack(s) left the index (the next prune deletes them)"))
    if rep.lacking:
        more = f" (and {len(rep.lacking) - 1} more: see --json)" if len(rep.lacking) > 1 else ""
        raise CorruptData(f"not everything could be restored from {rep.replica}: {rep.lacking[0]}{more}")


@repair.command(name="index", epilog=examples(
    'recovault repair index --vault /backup/vault'))
@common_options
@pass_ctx
def repair_index(c: Ctx) -> None:
    """Rebuild the index from the packs' own headers, then remove the index files it replaces."""
    with c.open(write=True) as v:
        from ..vault.repair import repair_index as rebuild
        rep = rebuild(v.blobs)
    c.out(rep.__dict__, (f"read {rep.packs_read} packs ({rep.blobs} blobs): wrote {len(rep.written)} index files, "
                         f"removed {len(rep.removed)}"))
    lost = len(rep.unreadable_packs) - len(rep.carried_packs)
    if rep.unreadable_packs:
        raise CorruptData(f"{len(rep.unreadable_packs)} pack(s) have an unreadable header ({lost} of them listed by "
                          f"no old index file either), first: {rep.unreadable_packs[0]}; run 'recovault check'")


command = repair
