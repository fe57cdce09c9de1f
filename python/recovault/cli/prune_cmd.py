"""recovault prune: reclaim the space of blobs no retained recovery point references (two phases, a margin
apart, beside running backups; docs/vault-format.md §10)."""
from __future__ import annotations


import click

from .context import Ctx, common_options, examples, pass_ctx


@click.command(epilog=examples(
    'recovault prune --dry-run', 'recovault prune --margin 0 --max-unused 10%'))
@common_options
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted and repacked.")
@click.option("--max-unused", default="5%", show_default=True,
              help="Unused space to tolerate in partly used packs: a percentage, a size (100M), or 'unlimited'.")
@click.option("--repack-small", is_flag=True, help="Also repack packs under 80% of the pack size (as restic).")
@click.option("--recompress", is_flag=True, help="Decrypt and seal again what is repacked (else copied byte for byte).")
@click.option("--margin", default="2h", show_default=True,
              help="How long a plan waits before its packs are deleted (0: no backup runs, reclaim at once).")
@pass_ctx
def prune(c: Ctx, dry_run: bool, max_unused: str, repack_small: bool, recompress: bool, margin: str) -> None:
    """Delete unreferenced data and repack partly used packs, safely beside running backups."""
    from ..jobs.prune import MaxUnused, PruneOptions, parse_margin, run_prune
    MaxUnused.parse(max_unused)  # bad input fails before the vault is opened
    opts = PruneOptions(dry_run=dry_run, max_unused=max_unused, repack_small=repack_small, recompress=recompress,
                        margin=parse_margin(margin))
    with c.open(write=not dry_run) as v, c.progress("pruning") as prog:
        result = run_prune(v, opts, prog)  # its steps: on a terminal, or with RECOVAULT_PROGRESS
    c.out(result.to_json(), _text(result))


def _text(result) -> str:
    lines = []
    d = result.decision
    for p in result.plans:
        if p.done:
            lines.append(f"plan {p.plan[:16]} carried out: {p.packs_deleted} pack(s) deleted, "
                         f"{p.bytes_deleted / 1e6:.1f} MB deleted" + (f", {p.blobs_rescued} blob(s) rescued" if p.blobs_rescued else ""))
        else:
            lines.append(f"plan {p.plan[:16]} waits ({p.reason})")
    if d is not None:
        verb = "would" if result.dry_run else "will"
        lines.append(f"{d.bytes_used / 1e6:.1f} MB used, {d.bytes_unused / 1e6:.1f} MB unused in {d.packs} pack(s); "
                     f"{verb} delete {len(d.delete)}, repack {len(d.repack)} and delete {len(d.unindexed)} unindexed "
                     f"pack(s), freeing {d.bytes_freed / 1e6:.1f} MB")
    if result.new_plan:
        lines.append(f"plan {result.new_plan[:16]} written" + ("" if result.margin <= 0 else
                     f": its packs are deleted by a prune after the margin ({result.margin:g}s)"))
    if result.purged:
        lines.append(f"{len(result.purged)} expired soft-deleted recovery point(s) purged")
    if result.locked:
        lines.append(f"{len(result.locked)} object(s) still locked by the store (S3 Object Lock), left for a later "
                     f"prune: first {result.locked[0].message}")
    if result.refused_packs:
        lines.append(f"{len(result.refused_packs)} pack(s) a revoked host key stored after its revocation taken out "
                     "of the index (deleted by a later prune)")
    return "\n".join(lines)


command = prune
