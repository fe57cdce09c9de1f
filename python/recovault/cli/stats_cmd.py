"""recovault stats: what the recovery points hold and what the vault stores."""
from __future__ import annotations

import click

from .context import Ctx, common_options, pass_ctx


@click.command()
@common_options
@pass_ctx
def stats(c: Ctx) -> None:
    """Sizes: what the recovery points hold and what the vault stores."""
    from ..vault import format as fmt
    with c.open() as v:
        snaps = v.snapshots()
        stored = sum(v.storage.stat(n).size for n in v.storage.list(fmt.DATA))
        raw = sum(loc.raw_length for loc in v.locations.values())
        res = {"snapshots": len(snaps), "blobs": len(v.locations), "raw_bytes": raw, "stored_bytes": stored,
               "packs": len({loc.pack for loc in v.locations.values()}),
               "protected_bytes_latest": snaps[-1].stats["bytes_total"] if snaps else 0}
    c.out(res, (f"{res['snapshots']} recovery points; {res['blobs']} unique blobs, {raw / 1e6:.1f} MB before and "
                f"{stored / 1e6:.1f} MB after compression and encryption, in {res['packs']} packs"))


command = stats
