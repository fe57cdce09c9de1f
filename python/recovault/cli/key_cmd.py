"""recovault key list | add | remove | passwd | rotate | revoke: the passphrases that open the vault (one key
file each), host keys, and the generations of the key sessions seal their data keys to."""
from __future__ import annotations

from typing import Optional

import click

from ..errors import UsageError
from .context import Ctx, common_options, examples, pass_ctx


@click.group(epilog=examples(
    'recovault key list', 'recovault key add --label laptop', 'recovault key rotate --rewrite',
    'recovault key revoke 3f2a9c'))
@common_options
def key() -> None:
    """Manage the passphrases that open the vault."""


@key.command(name="list", epilog=examples(
    'recovault key list --json'))
@common_options
@pass_ctx
def key_list(c: Ctx) -> None:
    """List the vault's keys (* marks the one that opened it), and the host keys its keyring registers."""
    from .. import api
    from ..timefmt import canonical
    with c.open() as v:
        keys = v.keys.list()
        cur = v.keyid
        hosts = api.host_key_list(v)
    rows = [dict(k.__dict__, current=k.keyid == cur, created=canonical(k.created), role="admin") for k in keys]
    rows += [dict(keyid=h.keyid, created=canonical(h.created), hostname=h.host, username="", label=None,
                  problem=None, authenticated=True, current=False, role="host", state=h.state,
                  revoked=canonical(h.revoked) if h.revoked else None) for h in hosts]
    c.out(rows, "\n".join(f"{'*' if r['current'] else ' '} {r['keyid'][:12]}  {r['created']}  "
                          + (f"host key for {r['hostname']}" + (f"  REVOKED {r['revoked']}" if r["revoked"] else "")
                             if r["role"] == "host" else f"{r['username']}@{r['hostname']}  {r.get('label') or ''}")
                          + ("" if r["authenticated"] or r["problem"] else
                             "  (version 1 key file: its fields are not authenticated; 'key passwd' rewrites it)")
                          + (f"  PROBLEM: {r['problem']}" if r["problem"] else "") for r in rows))


def _new_passphrase(new_passphrase_file: Optional[str]) -> str:
    from ..vault.keys import read_passphrase
    from ..progress import warn
    return read_passphrase(new_passphrase_file, env={}, prompt=True, confirm=True, on_warning=warn)


@key.command(name="add", epilog=examples(
    'recovault key add --label backup-admin', 'recovault key add --new-passphrase-file /root/new-pass',
    'recovault key add --role host --host web1 --export web1.key --new-passphrase-file web1.pass'))
@common_options
@click.option("--new-passphrase-file", default=None, help="Read the new passphrase from this file.")
@click.option("--label", default=None, help="A note stored with the key (who or what uses it).")
@click.option("--role", type=click.Choice(["admin", "host"]), default="admin", show_default=True,
              help="admin: another passphrase for the vault's keys (a key file in the vault). host: a key for "
                   "one host that can add backups only, written to --export (the vault becomes format 3).")
@click.option("--host", "host_name", default=None, metavar="NAME", help="--role host: the host the key is for.")
@click.option("--export", default=None, metavar="FILE",
              help="--role host: write the host's key file here (never into the vault); the host opens the vault "
                   "with --key-file FILE.")
@pass_ctx
def key_add(c: Ctx, new_passphrase_file: Optional[str], label: Optional[str], role: str,
            host_name: Optional[str], export: Optional[str]) -> None:
    """Add a passphrase (a new key file for the same vault), or a host key (--role host)."""
    if role == "host":
        _add_host_key(c, new_passphrase_file, label, host_name, export)
        return
    if host_name is not None or export is not None:
        raise UsageError("--host and --export go with --role host")
    with c.open() as v:
        kid = v.keys.add(_new_passphrase(new_passphrase_file), v.master, label=label)
    c.out({"keyid": kid}, f"added key {kid[:12]}")


def _add_host_key(c: Ctx, new_passphrase_file: Optional[str], label: Optional[str], host_name: Optional[str],
                  export: Optional[str]) -> None:
    import os
    from .. import api
    if not host_name or not export:
        raise UsageError("--role host needs --host NAME and --export FILE")
    if label is not None:
        raise UsageError("--label goes with an admin key; a host key is named by --host")
    if os.path.lexists(export):
        raise UsageError(f"{export} exists already: choose another file for the key")
    with c.open() as v:
        kid = api.add_host_key(v, host_name, _new_passphrase(new_passphrase_file), export)
    c.out({"keyid": kid, "role": "host", "host": host_name, "export": export},
          f"added host key {kid[:12]} for host {host_name}: key file {export}")


@key.command(name="remove", epilog=examples(
    'recovault key remove 3f2a9c'))
@common_options
@click.argument("keyid")
@pass_ctx
def key_remove(c: Ctx, keyid: str) -> None:
    """Remove key KEYID (id or unique prefix); never the one in use."""
    with c.open() as v:
        kid = v.keys.remove(keyid, current_keyid=v.keyid)
    c.out({"removed": kid}, f"removed key {kid[:12]}")


@key.command(name="passwd", epilog=examples(
    'recovault key passwd'))
@common_options
@click.option("--new-passphrase-file", default=None, help="Read the new passphrase from this file.")
@pass_ctx
def key_passwd(c: Ctx, new_passphrase_file: Optional[str]) -> None:
    """Change the passphrase of the key in use."""
    with c.open() as v:
        kid = v.keys.passwd(v.keyid, v.master, _new_passphrase(new_passphrase_file))
    c.out({"keyid": kid}, f"passphrase changed (new key {kid[:12]})")


@key.command(name="rotate", epilog=examples(
    'recovault key rotate', 'recovault key rotate --rewrite', 'recovault key rotate --rewrite --margin 0 --json'))
@common_options
@click.option("--rewrite", is_flag=True,
              help="Also re-seal every stored blob under the new key (prune's repacking: reads and rewrites every "
                   "pack), so a leaked older key opens none; resumable: run it again after an interruption.")
@click.option("--margin", default="2h", show_default=True,
              help="--rewrite: how long the old packs wait before they are deleted, as prune's --margin (0: no "
                   "backup runs, delete them at once; else the next --rewrite or prune deletes them).")
@pass_ctx
def key_rotate(c: Ctx, rewrite: bool, margin: str) -> None:
    """Make a new key that every backup seals its data keys to from now on (hosts keep their key files)."""
    from .. import api
    from ..jobs.prune import parse_margin
    seconds = parse_margin(margin)  # bad input fails before the vault is opened
    if not rewrite and margin != "2h":
        raise UsageError("--margin goes with --rewrite")
    with c.open(write=True) as v:
        if not rewrite:
            rot = api.rotate_key(v)
            c.out({"gen": rot.gen, "keyring": rot.keyring, "seq": rot.seq, "rewrite": None},
                  f"key generation {rot.gen} made: sessions seal to it from now on (keyring {rot.seq}); "
                  "'recovault key rotate --rewrite' re-seals what is stored")
            return
        with c.progress("rotating") as prog:
            res = api.rotate_key(v, rewrite=True, margin=seconds, progress=prog)
    c.out({"gen": res.gen, "keyring": None, "seq": None, "rewrite": res.to_json()}, _rewrite_text(res))


def _rewrite_text(res) -> str:
    head = (f"key generation {res.gen} made" if res.rotated else f"resuming the rewrite to key generation {res.gen}")
    lines = [f"{head}: {res.packs_rewritten} pack(s) re-sealed ({res.blobs_resealed} blob(s), "
             f"{res.bytes_resealed / 1e6:.1f} MB), {res.packs_deleted} old pack(s) deleted"]
    if res.points_resealed or res.entries_resealed:
        lines.append(f"{res.points_resealed} recovery point(s) and {res.entries_resealed} journal entry(ies) "
                     "re-sealed (their ids unchanged)")
    if res.done:
        lines.append(f"done: everything stored is sealed under the new key; {res.generations_retired} older key "
                     f"generation(s) and {res.session_keys_deleted} old session key(s) retired")
    elif res.waiting:
        lines.append(f"plan {res.waiting[:16]} waits for its margin: run 'recovault key rotate --rewrite' "
                     "again after it to delete the old packs")
    lines += [f"not finished: {why}" for why in res.unfinished]
    return "\n".join(lines)


@key.command(name="revoke", epilog=examples(
    'recovault key revoke 3f2a9c', 'recovault key revoke 3f2a9c --json'))
@common_options
@click.argument("keyid")
@pass_ctx
def key_revoke(c: Ctx, keyid: str) -> None:
    """Revoke host key KEYID (id or unique prefix): its later backups are refused, its earlier ones kept."""
    from .. import api
    with c.open() as v:
        entry, now = api.revoke_host_key(v, keyid)
    c.out({"keyid": entry.keyid, "host": entry.host, "revoked": entry.revoked, "sessions_accepted":
           len(entry.accepted), "changed": now},
          (f"revoked host key {entry.keyid[:12]} (host {entry.host}); its {len(entry.accepted)} earlier "
           "session(s) stay readable" if now else f"host key {entry.keyid[:12]} (host {entry.host}) was revoked "
           f"already, on {entry.revoked}"))


command = key
