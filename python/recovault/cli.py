"""The recovault command line. Every command takes --vault (or RECOVAULT_VAULT) and --json; the
passphrase comes from --passphrase-file, RECOVAULT_PASSPHRASE, or a prompt on a terminal.

Errors print one line naming the problem and exit non-zero (codes in errors.py); never a traceback.
"""
from __future__ import annotations

import errno
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import click

from . import __version__
from .errors import CorruptData, NotFound, Partial, RecovaultError, UsageError
from .jobs import MODES
from .progress import ProgressReporter

if TYPE_CHECKING:
    from .vault.repo import Vault

# The rest of the package is imported by the commands that need it: start-up time is part of every run
# (see docs/performance.md), and `recovault` (the _entry module) derives the key meanwhile.

_json_printed = False  # a command's --json result was printed: a later error must not print a second document

LOSS_WARNING = ("The vault's key is encrypted with your passphrase. Keep the passphrase safe: if every "
                "passphrase of a vault is lost, its data cannot be recovered by anyone.")


class Ctx:
    def __init__(self, vault: Optional[str], passphrase_file: Optional[str], cache_dir: Optional[str],
                 as_json: bool) -> None:
        self.location = vault
        self.passphrase_file = passphrase_file
        self._cache_dir = cache_dir
        self.json = as_json

    @property
    def cache_dir(self) -> str:
        if not self._cache_dir:
            from .api import default_cache_dir
            self._cache_dir = default_cache_dir()
        return self._cache_dir

    def need_location(self) -> str:
        if not self.location:
            raise UsageError("no vault given: use --vault PATH or set RECOVAULT_VAULT")
        return self.location

    def passphrase(self, confirm: bool = False) -> str:
        from .vault.keys import read_passphrase
        return read_passphrase(self.passphrase_file, prompt=True, confirm=confirm)

    def open(self) -> "Vault":
        from .storage import open_storage
        from .vault.repo import Vault
        return Vault.open(open_storage(self.need_location()), self.passphrase(), cache_dir=self.cache_dir)

    def out(self, data: Any, text: str) -> None:
        global _json_printed
        if self.json:
            click.echo(json.dumps(data, indent=None, sort_keys=True, default=str))
            _json_printed = True
        elif text:
            click.echo(text)


def common(f):
    """Options every command accepts, so they may come before or after the command name."""
    f = click.option("--json", "as_json", is_flag=True, default=None, help="Machine-readable output on stdout.")(f)
    f = click.option("--cache-dir", default=None, help="Agent cache (default ~/.cache/recovault).")(f)
    f = click.option("--passphrase-file", default=None, help="Read the passphrase from this file.")(f)
    f = click.option("--vault", "-r", default=None, help="The vault (a directory). Env: RECOVAULT_VAULT.")(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="recovault")
@common
@click.pass_context
def cli(ctx, vault, passphrase_file, cache_dir, as_json):
    """recovault: deduplicated, compressed, encrypted backups of Linux hosts."""
    ctx.obj = Ctx(vault or os.environ.get("RECOVAULT_VAULT"), passphrase_file, cache_dir, bool(as_json))


def sub(ctx, vault, passphrase_file, cache_dir, as_json) -> Ctx:
    """The command's context: its own options, else those given before the command name."""
    parent: Ctx = ctx.obj
    return Ctx(vault or parent.location, passphrase_file or parent.passphrase_file, cache_dir or parent._cache_dir,
               bool(as_json) or parent.json)


@cli.command()
@common
@click.option("--chunk-min", type=int, default=None, help="Content-defined chunking minimum size (bytes).")
@click.option("--chunk-avg", type=int, default=None, help="Average chunk size (a power of two).")
@click.option("--chunk-max", type=int, default=None, help="Maximum chunk size.")
@click.option("--compression-level", type=int, default=None, help="zstd level (default 3).")
@click.pass_context
def init(ctx, vault, passphrase_file, cache_dir, as_json, chunk_min, chunk_avg, chunk_max, compression_level):
    """Create a new vault."""
    c = sub(ctx, vault, passphrase_file, cache_dir, as_json)
    from .vault.repo import Settings
    s = Settings()
    s.min_size = chunk_min or s.min_size
    s.avg_size = chunk_avg or s.avg_size
    s.max_size = chunk_max or s.max_size
    s.level = s.level if compression_level is None else compression_level
    if not c.json:
        click.echo(LOSS_WARNING, err=True)
    from . import api
    v = api.init_vault(c.need_location(), c.passphrase(confirm=True), settings=s, cache_dir=c.cache_dir)
    v.close()
    c.out({"vault": v.storage.url, "id": v.id, "keyid": v.keyid},
          f"created vault {v.id[:8]} at {v.storage.url}")


@cli.command()
@common
@click.argument("paths", nargs=-1)
@click.option("--image", "images", multiple=True,
              help="A disk image file or block device to back up by block map (repeatable).")
@click.option("--image-block-size", type=int, default=0, help="Block size for --image (default: the one the image's last backup used, else 64 KiB; more above 256 GiB).")
@click.option("--stdin", "use_stdin", is_flag=True, help="Back up standard input (a dump, dd, tar) as a file.")
@click.option("--stdin-name", default="stdin", show_default=True, help="The file name --stdin is stored under.")
@click.option("--mode", type=click.Choice(MODES), default="incremental", show_default=True)
@click.option("--exclude", "-e", multiple=True, help="gitignore-style pattern (repeatable).")
@click.option("--exclude-file", multiple=True, help="File of gitignore-style patterns.")
@click.option("--exclude-caches", is_flag=True, help="Skip contents of directories with a valid CACHEDIR.TAG.")
@click.option("--one-file-system", "-x", is_flag=True, help="Do not cross file-system boundaries.")
@click.option("--tag", multiple=True, help="Tag the recovery point (repeatable).")
@click.option("--host", default=None, help="Host name to record (default: this host).")
@click.option("--workers", type=int, default=0, help="Pipeline worker threads (default: all cores).")
@click.pass_context
def backup(ctx, vault, passphrase_file, cache_dir, as_json, paths, images, image_block_size, use_stdin, stdin_name,
           mode, exclude, exclude_file, exclude_caches, one_file_system, tag, host, workers):
    """Back up files and directories (and --image disks, --stdin streams) into a new recovery point."""
    c = sub(ctx, vault, passphrase_file, cache_dir, as_json)
    if not paths and not images and not use_stdin:
        raise UsageError("nothing to back up: name at least one path, --image or --stdin")
    if use_stdin and c.passphrase_file is None and not os.environ.get("RECOVAULT_PASSPHRASE"):
        raise UsageError("--stdin needs the passphrase from RECOVAULT_PASSPHRASE or --passphrase-file")
    with c.open() as v, ProgressReporter(not c.json, "backing up") as prog:
        from . import api
        snap = api.backup(v, list(paths), mode=mode, excludes=list(exclude), exclude_files=list(exclude_file),
                          exclude_caches=exclude_caches, one_file_system=one_file_system, tags=list(tag),
                          host=host, workers=workers, images=list(images), image_block_size=image_block_size,
                          stdin_name=stdin_name if use_stdin else None, progress=prog)
    st = snap["stats"]
    c.out(snap, (f"recovery point {snap['id'][:8]} saved ({snap['mode']}): "
                 f"{st['files_new']} new, {st['files_changed']} changed, {st['files_unmodified']} unmodified files; "
                 f"{st['bytes_read'] / 1e6:.1f} MB read, {st['bytes_added'] / 1e6:.1f} MB added "
                 f"in {st['duration']:.1f}s"))
    if snap["errors"]:
        raise Partial(f"{len(snap['errors'])} file(s) could not be read and are not in the recovery point")


@cli.command()
@common
@click.argument("snapshot")
@click.argument("paths", nargs=-1)
@click.option("--target", "-t", default=None, help="Directory to restore into.")
@click.option("--to", "to", default=None, help="Write one image (see --image) exactly to this file or device.")
@click.option("--image", "image", default=None, help="With --to: the backed-up path of the image to write.")
@click.option("--range", "byte_range", default=None, help="With --to: only bytes START:END of the image.")
@click.option("--verify", is_flag=True, help="Re-read every restored file and compare with the recovery point.")
@click.option("--workers", type=int, default=None,
              help="Restore threads (default: 2 for files, whose cost is metadata calls; all cores for --to).")
@click.option("--overwrite", type=click.Choice(["if-changed", "always", "if-newer", "never"]), default=None,
              help="Which existing files of the target are replaced: those whose size or mtime differ (the "
              "default, if-changed), all, those older than the recovery point's, or none.")
@click.option("--delete", is_flag=True,
              help="Remove what the target holds but the recovery point does not (only in the restored paths).")
@click.pass_context
def restore(ctx, vault, passphrase_file, cache_dir, as_json, snapshot, paths, target, to, image, byte_range, verify,
            workers, overwrite, delete):
    """Restore recovery point SNAPSHOT (id, prefix or 'latest'), or only PATHS of it, under --target;
    or write one backed-up image to a file or device with --to."""
    c = sub(ctx, vault, passphrase_file, cache_dir, as_json)
    if (target is None) == (to is None):
        raise UsageError("give exactly one of --target DIR or --to FILE_OR_DEVICE")
    if target == "" or to == "":
        raise UsageError("--target and --to need a non-empty path")
    if to is not None:
        if overwrite is not None or delete:
            raise UsageError("--overwrite and --delete apply to --target only")
        return _restore_image(c, snapshot, to, image, byte_range, verify, workers or 0)
    with c.open() as v, ProgressReporter(not c.json, "restoring") as prog:
        snap = v.find_snapshot(snapshot)
        from .restore import RestoreJob
        res = RestoreJob(v, snap, target, list(paths), verify=verify, workers=workers or 2,
                         overwrite=overwrite or "if-changed", delete=delete, progress=prog).run()
    st = res["stats"]
    if res["warnings"] and not c.json:
        click.echo(f"recovault: {len(res['warnings'])} warning(s): metadata not restored as recorded (above)",
                   err=True)
    c.out(res, (f"restored {st['files']} files, {st['dirs']} dirs, {st['bytes'] / 1e6:.1f} MB from "
                f"{snap['id'][:8]} to {res['target']} in {st['duration']:.1f}s"
                + (f"; {st['verified']} files verified" if verify else "")))
    if res["errors"]:
        if res.get("data_errors"):
            raise CorruptData(f"{res['data_errors']} file(s) could not be restored because vault data is corrupt or "
                              f"missing; {st['errors']} problem(s) in all (listed above)")
        raise Partial(f"{st['errors']} file(s) could not be restored (listed above)")


def _restore_image(c: Ctx, snapshot: str, to: str, image: Optional[str], byte_range: Optional[str], verify: bool,
                   workers: int) -> None:
    import time
    from .jobs.image import restore_image
    rng = None
    if byte_range:
        try:
            a, b = (int(x, 0) for x in byte_range.split(":"))
            rng = (a, b)
        except ValueError:
            raise UsageError("--range must be START:END in bytes") from None
    with c.open() as v, ProgressReporter(not c.json, "writing image") as prog:
        snap = v.find_snapshot(snapshot)
        images = [p for p in snap["paths"] if "image" in (v.find_node(snap, p) or {})]
        if image is None:
            if len(images) != 1:
                raise UsageError(f"recovery point {snap['id'][:8]} holds {len(images)} images; name one with --image"
                                 + (f" ({', '.join(images)})" if images else ""))
            image = images[0]
        node = v.find_node(snap, os.path.abspath(image))
        if node is None or "image" not in node:
            raise NotFound(f"{image} is not an image in recovery point {snap['id'][:8]}")
        t0 = time.monotonic()
        st = restore_image(v, node["image"], to, byte_range=rng, verify=verify, workers=workers, progress=prog)
        st["duration"] = round(time.monotonic() - t0, 3)
    c.out({"snapshot": snap["id"], "image": image, "to": to, "stats": st},
          f"wrote {image} from {snap['id'][:8]} to {to}: {st['bytes_written'] / 1e6:.1f} MB of data, "
          f"{st['zero_blocks']} zero blocks, in {st['duration']:.1f}s" + (" (verified)" if verify else ""))


@cli.command()
@common
@click.pass_context
def snapshots(ctx, vault, passphrase_file, cache_dir, as_json):
    """List recovery points."""
    c = sub(ctx, vault, passphrase_file, cache_dir, as_json)
    damaged: List[str] = []
    with c.open() as v:
        snaps = v.snapshots(on_corrupt=damaged.append)
    for msg in damaged:
        click.echo(f"recovault: warning: {msg}", err=True)
    lines = [f"{'ID':8}  {'time':19}  {'host':12}  {'mode':12}  {'size':>10}  paths"]
    for s in snaps:
        lines.append(f"{s['id'][:8]}  {s['time'][:19].replace('T', ' ')}  {s['host'][:12]:12}  {s['mode']:12}  "
                     f"{s['stats']['bytes_total'] / 1e6:>8.1f}MB  {' '.join(s['paths'])}"
                     + ("" if s.get("complete", True) else "  (incomplete)"))
    c.out(snaps, "\n".join(lines))
    if damaged:
        raise CorruptData(f"{len(damaged)} recovery point(s) damaged, first: {damaged[0]}; run 'recovault check'")


@cli.command(name="ls")
@common
@click.argument("snapshot")
@click.argument("path", required=False, default="/")
@click.option("--recursive", "-R", is_flag=True)
@click.pass_context
def ls_cmd(ctx, vault, passphrase_file, cache_dir, as_json, snapshot, path, recursive):
    """List files of a recovery point under PATH."""
    from .fsmeta import decode_name
    c = sub(ctx, vault, passphrase_file, cache_dir, as_json)
    out: List[Dict[str, Any]] = []
    with c.open() as v:
        snap = v.find_snapshot(snapshot)
        parts = [p for p in os.fsencode(path).split(b"/") if p]
        node = v.find_node(snap, path)
        if node is None:
            raise NotFound(f"{path} is not in recovery point {snap['id'][:8]}")
        tree = v.load_tree(bytes.fromhex(node["subtree"])) if "subtree" in node else None
        if tree is None:
            out.append(_ls_entry(b"/" + b"/".join(parts), node))

        def walk(t, prefix: bytes):
            for n in t["nodes"]:
                p = prefix + b"/" + decode_name(n["name"])
                out.append(_ls_entry(p, n))
                if recursive and "subtree" in n:
                    walk(v.load_tree(bytes.fromhex(n["subtree"])), p)
        if tree is not None:
            walk(tree, b"/" + b"/".join(parts) if parts else b"")
    c.out(out, "\n".join(f"{e['type']} {e['mode']:>5o} {e['size']:>12} {e['path']}" for e in out))


def _ls_entry(path: bytes, node: Dict[str, Any]) -> Dict[str, Any]:
    m = node["meta"]
    return {"path": os.fsdecode(path), "type": m["t"], "mode": m.get("m", 0), "size": node.get("size", 0),
            "mtime_ns": m.get("mt", 0), "uid": m.get("u", 0), "gid": m.get("g", 0)}


@cli.command()
@common
@click.option("--read-data", is_flag=True, help="Read and decrypt every pack and chunk.")
@click.option("--read-data-subset", default=None, help="Read a subset: 'n/m' or a percentage like '10%'.")
@click.pass_context
def check(ctx, vault, passphrase_file, cache_dir, as_json, read_data, read_data_subset):
    """Verify the vault's structure, and with --read-data every byte of it."""
    c = sub(ctx, vault, passphrase_file, cache_dir, as_json)
    with c.open() as v, ProgressReporter(not c.json, "checking") as prog:
        from .vault.check import Checker
        res = Checker(v, prog).run(read_data=read_data, subset=read_data_subset)
    st = res["stats"]
    text = "\n".join([f"warning: {w}" for w in res["warnings"]] +
                     [f"checked {st['snapshots']} recovery points, {st['trees']} trees, {st['packs']} packs"
                      + (f", read {st['packs_read']} packs / {st['blobs_read']} blobs" if st["packs_read"] else "")
                      + (": no problems" if res["ok"] else f": {len(res['problems'])} PROBLEM(S)")])
    c.out(res, text)
    if not res["ok"]:
        raise CorruptData(f"check found {len(res['problems'])} problem(s); first: {res['problems'][0]}")


@cli.command()
@common
@click.pass_context
def stats(ctx, vault, passphrase_file, cache_dir, as_json):
    """Sizes: what the recovery points hold and what the vault stores."""
    from .vault import format as fmt
    c = sub(ctx, vault, passphrase_file, cache_dir, as_json)
    with c.open() as v:
        snaps = v.snapshots()
        stored = sum(v.storage.stat(n).size for n in v.storage.list(fmt.DATA))
        raw = sum(loc.raw_length for loc in v.locations.values())
        res = {"snapshots": len(snaps), "blobs": len(v.locations), "raw_bytes": raw, "stored_bytes": stored,
               "packs": len({loc.pack for loc in v.locations.values()}),
               "protected_bytes_latest": snaps[-1]["stats"]["bytes_total"] if snaps else 0}
    c.out(res, (f"{res['snapshots']} recovery points; {res['blobs']} unique blobs, {raw / 1e6:.1f} MB before and "
                f"{stored / 1e6:.1f} MB after compression and encryption, in {res['packs']} packs"))


@cli.command()
@common
@click.argument("snapshot")
@click.argument("mountpoint")
@click.option("--allow-other", is_flag=True, help="Let other users read the mount (needs user_allow_other).")
@click.pass_context
def mount(ctx, vault, passphrase_file, cache_dir, as_json, snapshot, mountpoint, allow_other):
    """Expose a recovery point read-only at MOUNTPOINT (FUSE) until unmounted (fusermount3 -u)."""
    from .mount import mount as do_mount
    c = sub(ctx, vault, passphrase_file, cache_dir, as_json)
    with c.open() as v:
        snap = v.find_snapshot(snapshot)
        if not c.json:
            click.echo(f"serving recovery point {snap['id'][:8]} at {mountpoint}; unmount with 'fusermount3 -u {mountpoint}'",
                       err=True)
        do_mount(v, snap, mountpoint, allow_other=allow_other)


@cli.group()
def key():
    """Manage the passphrases that open the vault."""


@key.command(name="list")
@common
@click.pass_context
def key_list(ctx, vault, passphrase_file, cache_dir, as_json):
    c = sub(ctx.find_root(), vault, passphrase_file, cache_dir, as_json)
    with c.open() as v:
        keys = v.keys.list()
        cur = v.keyid
    rows = [dict(k.__dict__, current=k.keyid == cur) for k in keys]
    c.out(rows, "\n".join(f"{'*' if r['current'] else ' '} {r['keyid'][:12]}  {r['created']}  "
                          f"{r['username']}@{r['hostname']}  {r.get('label') or ''}" for r in rows))


@key.command(name="add")
@common
@click.option("--new-passphrase-file", default=None, help="Read the new passphrase from this file.")
@click.option("--label", default=None)
@click.pass_context
def key_add(ctx, vault, passphrase_file, cache_dir, as_json, new_passphrase_file, label):
    c = sub(ctx.find_root(), vault, passphrase_file, cache_dir, as_json)
    with c.open() as v:
        from .vault.keys import read_passphrase
        new = read_passphrase(new_passphrase_file, env={}, prompt=True, confirm=True)
        kid = v.keys.add(new, v.master, label=label)
    c.out({"keyid": kid}, f"added key {kid[:12]}")


@key.command(name="remove")
@common
@click.argument("keyid")
@click.pass_context
def key_remove(ctx, vault, passphrase_file, cache_dir, as_json, keyid):
    c = sub(ctx.find_root(), vault, passphrase_file, cache_dir, as_json)
    with c.open() as v:
        kid = v.keys.remove(keyid, current_keyid=v.keyid)
    c.out({"removed": kid}, f"removed key {kid[:12]}")


@key.command(name="passwd")
@common
@click.option("--new-passphrase-file", default=None)
@click.pass_context
def key_passwd(ctx, vault, passphrase_file, cache_dir, as_json, new_passphrase_file):
    c = sub(ctx.find_root(), vault, passphrase_file, cache_dir, as_json)
    with c.open() as v:
        from .vault.keys import read_passphrase
        new = read_passphrase(new_passphrase_file, env={}, prompt=True, confirm=True)
        kid = v.keys.passwd(v.keyid, v.master, new)
    c.out({"keyid": kid}, f"passphrase changed (new key {kid[:12]})")


def _terminate(signum, frame):  # SIGTERM: unwind like Ctrl-C so stored packs get indexed
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> None:
    import signal
    signal.signal(signal.SIGTERM, _terminate)
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="recovault", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("interrupted", 130, as_json)
    except getattr(click.exceptions, "NoArgsIsHelpError", ()) as e:  # `recovault` alone: the help, not an error
        click.echo(e.format_message(), err=True)
        sys.exit(2)
    except click.ClickException as e:
        _fail(e.format_message(), 2, as_json)
    except KeyboardInterrupt:
        _fail("interrupted; the vault is still valid and the next backup reuses what was stored", 130, as_json)
    except RecovaultError as e:
        _fail(str(e), e.exit_code, as_json)
    except MemoryError:
        _fail("out of memory", 1, as_json)
    except OSError as e:
        what = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        _fail(f"{what}{': ' + str(e.filename) if e.filename else ''}", 1, as_json)
    except Exception as e:  # noqa: BLE001 - the last resort: one line, never a traceback (RECOVAULT_DEBUG=1 shows it)
        if os.environ.get("RECOVAULT_DEBUG"):
            raise
        _fail(f"internal error: {type(e).__name__}: {e} (set RECOVAULT_DEBUG=1 for a traceback)", 1, as_json)
    sys.exit(0)


def _fail(msg: str, code: int, as_json: bool) -> None:
    if as_json and not _json_printed:
        click.echo(json.dumps({"error": msg, "exit_code": code}))
    click.echo(f"recovault: error: {msg}", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
