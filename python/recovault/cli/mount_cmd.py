"""recovault mount: a recovery point as a read-only FUSE file system."""
from __future__ import annotations

import click

from .context import Ctx, common_options, examples, pass_ctx, point_options


@click.command(epilog=examples(
    'recovault mount latest /mnt/rp   (then: fusermount3 -u /mnt/rp)'))
@common_options
@point_options
@click.argument("snapshot")
@click.argument("mountpoint")
@click.option("--allow-other", is_flag=True, help="Let other users read the mount (needs user_allow_other).")
@pass_ctx
def mount(c: Ctx, snapshot: str, mountpoint: str, allow_other: bool) -> None:
    """Expose a recovery point read-only at MOUNTPOINT (FUSE) until unmounted (fusermount3 -u)."""
    from ..mount import mount as do_mount
    from ..progress import ProgressReporter
    with c.open() as v, ProgressReporter(False, "serving") as prog:  # prog: the mount's errors as warnings
        point = c.select_point(v, snapshot)
        if c.chatty:
            click.echo(f"serving recovery point {point.short_id} at {mountpoint}; unmount with 'fusermount3 -u {mountpoint}'",
                       err=True)
        do_mount(v, point, mountpoint, allow_other=allow_other, on_event=prog)


command = mount
