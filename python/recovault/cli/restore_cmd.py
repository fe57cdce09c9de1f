"""recovault restore: a recovery point (or some of its paths) under --target, or one image --to a file or
device."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import click

from ..errors import CorruptData, NotFound, Partial, UsageError
from .context import Ctx, common_options, examples, pass_ctx, point_options

if TYPE_CHECKING:
    from ..vault.records import RecoveryPoint
    from ..vault.repo import Vault


@click.command(epilog=examples(
    'recovault restore latest --target /tmp/restore', 'recovault restore 1a2b3c4d /srv/www --target /tmp/r --overwrite if-newer --verify', 'recovault restore latest --to /dev/sdb --image /dev/sdb'))
@common_options
@point_options
@click.argument("snapshot")
@click.argument("paths", nargs=-1)
@click.option("--target", "-t", default=None, help="Directory to restore into.")
@click.option("--to", "to", default=None, help="Write one image (see --image) exactly to this file or device.")
@click.option("--image", "image", default=None, help="With --to: the backed-up path of the image to write.")
@click.option("--range", "byte_range", default=None, help="With --to: only bytes START:END of the image.")
@click.option("--verify", is_flag=True, help="Re-read every restored file and compare with the recovery point.")
@click.option("--workers", type=int, default=None,
              help="Restore threads (default: 2 for files, whose cost is metadata calls, or --connections from an "
              "object store; all cores for --to).")
@click.option("--overwrite", type=click.Choice(["if-changed", "always", "if-newer", "never"]), default=None,
              help="Which existing files of the target are replaced: those whose size or mtime differ (the "
              "default, if-changed), all, those older than the recovery point's, or none.")
@click.option("--delete", is_flag=True,
              help="Remove what the target holds but the recovery point does not (only in the restored paths).")
@pass_ctx
def restore(c: Ctx, snapshot: str, paths: Tuple[str, ...], target: Optional[str], to: Optional[str],
            image: Optional[str], byte_range: Optional[str], verify: bool, workers: Optional[int],
            overwrite: Optional[str], delete: bool) -> None:
    """Restore recovery point SNAPSHOT (id, prefix or 'latest'), or only PATHS of it, under --target;
    or write one backed-up image to a file or device with --to. SNAPSHOT:PATH names one path as PATHS
    does; a relative PATH is taken against the point's backed-up paths."""
    if (target is None) == (to is None):
        raise UsageError("give exactly one of --target DIR or --to FILE_OR_DEVICE")
    if target == "" or to == "":
        raise UsageError("--target and --to need a non-empty path")
    if to is not None:
        if overwrite is not None or delete:
            raise UsageError("--overwrite and --delete apply to --target only")
        from ..selection import parse_point_path
        spec, in_spec = parse_point_path(snapshot)  # SNAPSHOT:PATH names the image as --image does
        if in_spec is not None and image is not None:
            raise UsageError("give the image once: as SNAPSHOT:PATH or as --image PATH")
        return _restore_image(c, spec, to, image or in_spec, _parse_range(byte_range), verify, workers or 0)
    from ..selection import parse_point_path, resolve_path
    spec, in_spec = parse_point_path(snapshot)
    with c.open() as v, c.progress("restoring") as prog:
        point = c.select_point(v, spec)
        chosen = [resolve_path(v, point, p) for p in ([in_spec] if in_spec else []) + list(paths)]
        from ..restore import RestoreJob
        job = RestoreJob(v, point, target, chosen, verify=verify, workers=workers or 0,
                         overwrite=overwrite or "if-changed", delete=delete, progress=prog)
        res = job.run()
    st = res["stats"]
    if res["warnings"] and c.chatty:
        click.echo(f"recovault: {len(res['warnings'])} warning(s): metadata not restored as recorded (above)",
                   err=True)
    c.out(res, (f"restored {st['files']} files, {st['dirs']} dirs, {st['bytes'] / 1e6:.1f} MB from "
                f"{point.short_id} to {res['target']} in {st['duration']:.1f}s"
                + (f"; {st['verified']} files verified" if verify else "")))
    if res["errors"]:
        failure = job.report.store_failure
        if failure is not None and job.report.store_errors == res["data_errors"]:
            raise type(failure)(f"{res['data_errors']} file(s) could not be restored because the storage failed "
                                f"(first: {failure}); nothing is known to be damaged: run the restore again")
        if res.get("data_errors"):
            raise CorruptData(f"{res['data_errors']} file(s) could not be restored because vault data is corrupt or "
                              f"missing; {st['errors']} problem(s) in all (listed above)")
        raise Partial(f"{st['errors']} file(s) could not be restored (listed above)")


def _parse_range(byte_range: Optional[str]) -> Optional[Tuple[int, int]]:
    if not byte_range:
        return None
    try:
        a, b = (int(x, 0) for x in byte_range.split(":"))
    except ValueError:
        raise UsageError("--range must be START:END in bytes") from None
    return a, b


def _restore_image(c: Ctx, snapshot: str, to: str, image: Optional[str], rng: Optional[Tuple[int, int]],
                   verify: bool, workers: int) -> None:
    import time
    from ..jobs.image import restore_image
    with c.open() as v, c.progress("writing image") as prog:
        point = c.select_point(v, snapshot)
        images = [p for p in point.paths if _image_at(v, point, p) is not None]
        if image is None:
            if len(images) != 1:
                raise UsageError(f"recovery point {point.short_id} holds {len(images)} images; name one with --image"
                                 + (f" ({', '.join(images)})" if images else ""))
            image = images[0]
        desc = _image_at(v, point, os.path.abspath(image))
        if desc is None:
            raise NotFound(f"{image} is not an image in recovery point {point.short_id}")
        t0 = time.monotonic()
        st = restore_image(v, desc, to, byte_range=rng, verify=verify, workers=workers, progress=prog)
        st["duration"] = round(time.monotonic() - t0, 3)
    c.out({"snapshot": point.id, "image": image, "to": to, "stats": st},
          f"wrote {image} from {point.short_id} to {to}: {st['bytes_written'] / 1e6:.1f} MB of data, "
          f"{st['zero_blocks']} zero blocks, in {st['duration']:.1f}s" + (" (verified)" if verify else ""))


def _image_at(v: "Vault", point: "RecoveryPoint", path: str) -> Optional[Dict[str, Any]]:
    """The block map of the image at `path` in the recovery point, or None."""
    node = v.find_node(point, path)
    return node.image if node is not None else None


command = restore
