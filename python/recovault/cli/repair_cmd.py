"""recovault repair index: rebuild what the vault holds twice (the index) from what it holds once (the packs).
Later issues add more repairs under the same group (shards, --replace, --from REPLICA)."""
from __future__ import annotations

import click

from ..errors import CorruptData
from .context import Ctx, common_options, examples, pass_ctx


@click.group(epilog=examples(
    'recovault repair index'))
@common_options
def repair() -> None:
    """Rebuild what the vault holds twice (the index) from what it holds once (the packs)."""


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
