"""recovault backup: files, directories, disk images and stdin into a new recovery point."""
from __future__ import annotations

import os
from typing import Optional, Tuple

import click

from ..errors import Partial, RecovaultError, UsageError
from ..jobs import MODES
from .context import Ctx, common_options, examples, pass_ctx


@click.command(epilog=examples(
    'recovault backup /srv /etc --exclude "*.tmp" --exclude-caches', 'recovault backup --image /var/lib/libvirt/images/vm.img --tag nightly', 'pg_dump app | recovault backup --stdin --stdin-name db/app.sql'))
@common_options
@click.argument("paths", nargs=-1)
@click.option("--image", "images", multiple=True,
              help="A disk image file or block device to back up by block map (repeatable).")
@click.option("--image-block-size", type=int, default=0, help="Block size for --image (default: the one the image's last backup used, else 64 KiB; more above 256 GiB).")
@click.option("--stdin", "use_stdin", is_flag=True, help="Back up standard input (a dump, dd, tar) as a file.")
@click.option("--stdin-name", default="stdin", show_default=True, help="The file name --stdin is stored under.")
@click.option("--mode", type=click.Choice(MODES), default="incremental", show_default=True,
              help="What to compare against: the last point (incremental), the last full one (differential), or "
                   "nothing: read every file (full).")
@click.option("--exclude", "-e", multiple=True, help="gitignore-style pattern (repeatable).")
@click.option("--exclude-file", multiple=True, help="File of gitignore-style patterns.")
@click.option("--exclude-caches", is_flag=True, help="Skip contents of directories with a valid CACHEDIR.TAG.")
@click.option("--one-file-system", "-x", is_flag=True, help="Do not cross file-system boundaries.")
@click.option("--tag", multiple=True, help="Tag the recovery point (repeatable).")
@click.option("--host", default=None, help="Host name to record (default: this host).")
@click.option("--time", "when", default=None, metavar="'YYYY-MM-DD HH:MM:SS'",
              help="Record this local time as the recovery point's time instead of now (as restic's --time).")
@click.option("--workers", type=int, default=0, help="Pipeline worker threads (default: all cores).")
@pass_ctx
def backup(c: Ctx, paths: Tuple[str, ...], images: Tuple[str, ...], image_block_size: int, use_stdin: bool,
           stdin_name: str, mode: str, exclude: Tuple[str, ...], exclude_file: Tuple[str, ...],
           exclude_caches: bool, one_file_system: bool, tag: Tuple[str, ...], host: Optional[str],
           when: Optional[str], workers: int) -> None:
    """Back up files and directories (and --image disks, --stdin streams) into a new recovery point."""
    if not paths and not images and not use_stdin:
        raise UsageError("nothing to back up: name at least one path, --image or --stdin")
    if use_stdin:
        passphrase_file, command = c.passphrase_source()
        if passphrase_file == "-":
            raise UsageError("--stdin reads the data from standard input: the passphrase cannot come from there "
                             "too (--passphrase-file -)")
        if passphrase_file is None and command is None and not os.environ.get("RECOVAULT_PASSPHRASE"):
            raise UsageError("--stdin needs the passphrase from RECOVAULT_PASSPHRASE, --passphrase-file or "
                             "--passphrase-command")
    try:
        with c.open(write=True, host_ok=True) as v, c.progress("backing up") as prog:
            from .. import api
            point = api.backup(v, list(paths), mode=mode, excludes=list(exclude), exclude_files=list(exclude_file),
                              exclude_caches=exclude_caches, one_file_system=one_file_system, tags=list(tag),
                              host=host, time=when, workers=workers, images=list(images),
                              image_block_size=image_block_size, stdin_name=stdin_name if use_stdin else None,
                              progress=prog)
    except RecovaultError as e:  # interrupted: --json still gives the partial recovery point it saved
        partial = getattr(e, "point", None)
        if partial is not None:
            c.out(partial.to_json(), "")
        raise
    st = point.stats
    c.out(point.to_json(), (f"recovery point {point.short_id} saved ({point.mode}): "
                 f"{st['files_new']} new, {st['files_changed']} changed, {st['files_unmodified']} unmodified files; "
                 f"{st['bytes_read'] / 1e6:.1f} MB read, {st['bytes_added'] / 1e6:.1f} MB added "
                 f"in {st['duration']:.1f}s"))
    if point.errors:
        raise Partial(f"{len(point.errors)} file(s) could not be read and are not in the recovery point")


command = backup
