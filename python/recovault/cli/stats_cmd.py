"""recovault stats: what the recovery points hold and what the vault stores."""
from __future__ import annotations

from typing import Any, Dict, Optional

import click

from .context import Ctx, common_options, examples, pass_ctx, point_options


@click.command(epilog=examples(
    'recovault stats', 'recovault stats --json'))
@common_options
@point_options
@pass_ctx
def stats(c: Ctx) -> None:
    """Sizes: what the recovery points hold and what the vault stores. --host/--path/--tag choose the
    points counted (and the latest one, whose size is protected_bytes_latest); the rest is the vault's."""
    from ..vault import format as fmt
    with c.open() as v:
        snaps = c.select_points(v.snapshots())
        stored = sum(i.size for i in v.storage.list_info(fmt.DATA))
        raw = sum(loc.raw_length for loc in v.locations.values())
        res = {"snapshots": len(snaps), "blobs": len(v.locations), "raw_bytes": raw, "stored_bytes": stored,
               "packs": len({loc.pack for loc in v.locations.values()}),
               "protected_bytes_latest": snaps[-1].stats.get("bytes_total", 0) if snaps else 0,
               "prunable": _prunable(c, v)}
    p = res["prunable"]
    c.out(res, (f"{res['snapshots']} recovery points; {res['blobs']} unique blobs, {raw / 1e6:.1f} MB before and "
                f"{stored / 1e6:.1f} MB after compression and encryption, in {res['packs']} packs"
                + (f"; prune would free {p['bytes'] / 1e6:.1f} MB (delete {p['packs_delete']}, repack "
                   f"{p['packs_repack']} pack(s))" if p else "")))


def _prunable(c: Ctx, v: Any) -> Optional[Dict[str, Any]]:
    """What prune (with its defaults) would free: phase 1's decision in dry-run, plus the packs pending
    plans already condemned. None, with a warning, where prune itself would refuse (a damaged vault)."""
    from ..errors import RecovaultError
    from ..jobs.prune import PruneOptions, plan_prune
    from ..vault import format as fmt
    from ..vault.blobstore import pack_name
    from ..vault.coordination import Coordinator
    try:
        pending = Coordinator(v.storage, v.sealer).plans()
        d = plan_prune(v, PruneOptions(dry_run=True), pending)
    except RecovaultError as e:
        c.warn(f"cannot tell what prune would free: {e}")
        return None
    sizes = {i.name: i.size for i in v.storage.list_info(fmt.DATA)}
    waiting = sum(sizes.get(pack_name(p), 0) for plan in pending for p in plan.condemned)
    return {"bytes": d.bytes_freed + waiting, "packs_delete": len(d.delete) + len(d.unindexed),
            "packs_repack": len(d.repack), "pending_plans": len(pending), "bytes_pending": waiting}


command = stats
