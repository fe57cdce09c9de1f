"""recovault mount: every recovery point (browsable, as restic's mount), or one, as a read-only FUSE file
system."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, List, Optional, Set

import click

from ..errors import UsageError
from .context import Ctx, common_options, examples, pass_ctx, point_options

if TYPE_CHECKING:
    from ..mount import MountInfo
    from ..vault.records import RecoveryPoint


@click.command(epilog=examples(
    "recovault mount /mnt/vault &    # then: ls /mnt/vault/hosts/web1/latest/etc",
    "recovault mount --host web1 /mnt/web1 &",
    "recovault mount latest /mnt/rp  # one point; fusermount3 -u /mnt/rp ends it"))
@common_options
@point_options
@click.argument("first", metavar="[SNAPSHOT]")
@click.argument("mountpoint", required=False, metavar="MOUNTPOINT")
@click.option("--allow-other", is_flag=True, help="Let other users read the mount (needs user_allow_other).")
@pass_ctx
def mount(c: Ctx, first: str, mountpoint: Optional[str], allow_other: bool) -> None:
    """Expose the vault read-only at MOUNTPOINT (FUSE) until unmounted (fusermount3 -u): every recovery
    point under ids/, snapshots/, hosts/HOST/ and tags/TAG/ (named by time, with `latest` links); with
    SNAPSHOT, that one point's tree at MOUNTPOINT. With --json, one document describes the mount once it is
    live. --host/--path/--tag browse (or choose 'latest' among) the points they select. A mount point in use
    exits 20."""
    c.refuse_host_key()
    from ..mount import check_mountpoint, require_fuse
    require_fuse()  # before anything else: without pyfuse3, say how to get it
    snapshot, where = (first, mountpoint) if mountpoint is not None else (None, first)
    if snapshot is None and not os.path.lexists(where):  # `mount latest`: a point named, no mount point
        raise UsageError(f"mount point {where} does not exist (one recovery point: recovault mount SNAPSHOT "
                         "MOUNTPOINT; every one: recovault mount MOUNTPOINT)")
    check_mountpoint(where)  # in use (exit 20) or no directory: before the passphrase and the vault
    from ..mount import mount as do_mount
    from ..progress import ProgressReporter

    def ready(info: "MountInfo") -> None:
        if c.json:
            c.out(info.to_json(), "")
        elif not c.chatty:
            pass
        elif info.snapshot:
            click.echo(f"serving recovery point {info.snapshot[:8]} at {where}; unmount with "
                       f"'fusermount3 -u {where}'", err=True)
        else:
            click.echo(f"serving {len(info.points)} recovery point(s) at {where} (ids/, snapshots/, hosts/, "
                       f"tags/); unmount with 'fusermount3 -u {where}'", err=True)

    with c.open() as v, ProgressReporter(False, "serving") as prog:  # prog: the mount's errors as warnings
        damaged: List[str] = []

        def listed() -> List["RecoveryPoint"]:
            """The points to browse (asked again while serving); a damaged point is left out, warned once."""
            points = c.select_points(v.snapshots(on_corrupt=damaged.append))
            for msg in damaged:
                if msg not in warned:
                    warned.add(msg)
                    c.warn(msg)
            damaged.clear()
            return points

        warned: Set[str] = set()
        if snapshot is not None:
            point = c.select_point(v, snapshot)
            points = [point]
        else:
            point, points = None, listed()
        do_mount(v, point, where, points=points, allow_other=allow_other, on_event=prog, on_ready=ready,
                 list_points=listed)


command = mount
