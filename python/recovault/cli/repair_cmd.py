"""recovault repair: rebuild what is damaged or missing. On an erasure-coded vault (`ec:K+M:...`), `repair`
rebuilds every missing, corrupt or stale shard from K intact ones, and `--replace OLD=NEW` moves a location to a
new disk (storage/ec_repair.py); on any vault `--from REPLICA` restores damaged or missing objects from another
vault holding the same recovery points (vault/replica_repair.py; with `--dry-run` what it would restore, the
vault left as it is); `repair index` rebuilds the index from the packs."""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

import click

from ..errors import CorruptData, UsageError
from .context import Ctx, common_options, examples, pass_ctx
from .source import check_config, from_passphrase_option, open_named, source_passphrase, storage_of

if TYPE_CHECKING:
    from ..storage.ec_repair import EcRepair
    from ..vault.replica_repair import FromRepair


@click.group(invoke_without_command=True, epilog=examples(
    'recovault repair --vault ec:4+2:/mnt/d1,/mnt/d2,/mnt/d3,/mnt/d4,/mnt/d5,/mnt/d6',
    'recovault repair --dry-run --json',
    'recovault repair --replace /mnt/d3=/mnt/d7',
    'recovault repair --from /mnt/offsite/vault',
    'recovault repair --from /mnt/offsite/vault --dry-run',
    'recovault repair index'))
@common_options
@click.option("--replace", "replace", multiple=True, metavar="OLD=NEW",
              help="Move location OLD of an erasure-coded vault to NEW (empty or new) and rebuild its shards "
                   "there (repeatable); prints the vault's new URL.")
@click.option("--dry-run", is_flag=True, help="Say what would be rebuilt and removed (with --from: restored, put "
                                             "back and taken out of the index); write nothing.")
@click.option("--margin", default="2h", show_default=True,
              help="Remove an object fewer than K locations hold (an interrupted write) only once its newest "
                   "shard is this old ('0': at once, when no backup or init is running).")
@click.option("--from", "from_", default=None, metavar="REPLICA",
              help="Restore damaged or missing packs, blobs and recovery points from REPLICA, another vault "
                   "holding the same recovery points (a copy target or source); its passphrase: "
                   "--from-passphrase-file, RECOVAULT_FROM_PASSPHRASE or a prompt.")
@from_passphrase_option
@click.pass_context
def repair(ctx: click.Context, replace: Tuple[str, ...], dry_run: bool, margin: str, from_: Optional[str],
           from_passphrase_file: Optional[str]) -> None:
    """Rebuild the shards of an erasure-coded vault (ec:K+M:...) that are missing, corrupt or stale, or move
    a location (--replace); restore damaged or missing objects from a replica (--from REPLICA); 'repair index'
    rebuilds the index from the packs."""
    if ctx.invoked_subcommand is not None:
        if replace or dry_run or from_:
            raise UsageError(f"--replace, --dry-run and --from apply to 'recovault repair' itself, not to 'repair "
                             f"{ctx.invoked_subcommand}'")
        return
    c = ctx.ensure_object(Ctx)
    c.wire_storage()  # a group's callback: common_options does this for commands only
    if from_:
        if replace:
            raise UsageError("--from restores from a replica; give --replace without it")
        _repair_from(c, from_, from_passphrase_file, dry_run)
        return
    _repair_set(c, replace, dry_run, margin)


def _repair_set(c: Ctx, replace: Tuple[str, ...], dry_run: bool, margin: str) -> None:
    from ..jobs.prune import parse_margin
    from ..storage import find_scheme, open_storage
    from ..storage.ec_repair import erasure_of, repair_set, replace_locations, replaced_url
    location = c.need_location()
    margin_s = parse_margin(margin)
    scheme = find_scheme(location)
    if scheme is None or scheme.name != "ec":
        raise UsageError(f"{location} is not an erasure-coded vault: it holds each object once, so there is no "
                         "shard to rebuild; use 'recovault repair --from REPLICA' to restore damaged objects from "
                         "a copy of the vault, or 'recovault repair index' to rebuild its index")
    url, replacements = replaced_url(location, replace) if replace else (location, [])
    storage = open_storage(url)
    try:
        ec = erasure_of(storage)
        assert ec is not None
        replace_locations(ec, replacements, dry_run)
        with c.progress("checking", "objects") as prog:
            rep = repair_set(ec, dry_run=dry_run, margin=margin_s, replaced=replacements, progress=prog)
    finally:
        storage.close()
    rep.vault = url
    for obj in rep.scan.damaged + rep.scan.unreadable + rep.scan.incomplete:
        c.info(f"shards: {obj.line()}")  # --verbose: each object that was not whole
    c.out(rep.to_json(), "\n".join(_text(rep, url != location)))
    if rep.unrepairable:
        more = f" (and {len(rep.unrepairable) - 1} more)" if len(rep.unrepairable) > 1 else ""
        raise CorruptData(f"repair could not rebuild everything: {rep.unrepairable[0]}{more}")


def _text(rep: "EcRepair", moved: bool) -> List[str]:
    would = "would rebuild" if rep.dry_run else "rebuilt"
    lines = rep.scan.lines()
    lines.append(f"{would} {rep.shards_rebuilt} shard(s) of {rep.objects_rebuilt} object(s)")
    if rep.removed:
        lines.append(f"{'would remove' if rep.dry_run else 'removed'} {len(rep.removed)} incomplete object(s) "
                     f"(fewer than {rep.scan.k} shards of them anywhere: interrupted writes), first: {rep.removed[0]}")
    if rep.kept:
        lines.append(f"kept {len(rep.kept)} incomplete object(s) (younger than --margin, or a location down or "
                     f"being replaced; a later repair removes them), first: {rep.kept[0]}")
    lines += [f"cannot repair: {msg}" for msg in rep.unrepairable]
    if moved:
        lines.append(f"the vault's URL is now {rep.vault}\nrecovault cannot change the URL your scripts, job files "
                     "and RECOVAULT_VAULT give: use this one from now on")
    return lines


def _repair_from(c: Ctx, location: str, passphrase_file: Optional[str], dry_run: bool) -> None:
    """repair --from: vault/replica_repair.py does the work; this opens both vaults and reports. A dry run
    opens the vault for reading (no upgrade) and exits as the real run would (15 with `lacking`)."""
    from ..vault.replica_repair import repair_from
    storage = storage_of("replica", location)
    check_config("replica", storage)
    with c.open(write=not dry_run) as v:
        if storage.url == v.storage.url:
            raise UsageError(f"--from {location} is the vault itself: give another vault holding its recovery points")
        with open_named(c, "replica", storage, source_passphrase(c, passphrase_file)) as replica, \
                c.progress("checking", "packs") as prog:
            rep = repair_from(v, replica, progress=prog, dry_run=dry_run)
    c.out({"vault": rep.vault, "from": rep.to_json()}, _from_text(rep))
    if rep.lacking:
        more = f" (and {len(rep.lacking) - 1} more: see --json)" if len(rep.lacking) > 1 else ""
        could = "can be restored (dry run: nothing was written)" if rep.dry_run else "could be restored"
        raise CorruptData(f"not everything {could} from {rep.replica}: {rep.lacking[0]}{more}")


def _from_text(rep: "FromRepair") -> str:
    """The text of repair --from: what was done, or with --dry-run what would be."""
    if rep.dry_run:
        verbs = ("would rebuild the index from the packs first (an index file is damaged); ", "would restore",
                 "would copy", "would put back", "would leave the index", "nothing was written")
    else:
        verbs = ("rebuilt the index from the packs first (an index file was damaged); ", "restored", "copied",
                 "put back", "left the index", "the next prune deletes them")
    return (f"{verbs[0] if rep.index_rebuilt else ''}read {rep.packs_read} pack(s): {len(rep.damaged_packs)} "
            f"damaged or missing; {verbs[1]} {rep.restored_blobs} blob(s) ({rep.restored_bytes / 1e6:.1f} MB) from "
            f"{rep.replica} ({rep.mode}), {verbs[2]} {rep.rescued_blobs} intact one(s) out of damaged packs, "
            f"{verbs[3]} {len(rep.restored_points)} recovery point(s); {len(rep.dropped_packs)} damaged pack(s) "
            f"{verbs[4]} ({verbs[5]})")


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
