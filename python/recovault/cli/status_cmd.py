"""recovault status: the vault, its recovery points, and what runs in it (a prune's lease, backups'
sessions, pending prune plans)."""
from __future__ import annotations

import click

from .context import Ctx, common_options, examples, pass_ctx


@click.command(epilog=examples(
    'recovault status', 'recovault status --json'))
@common_options
@pass_ctx
def status(c: Ctx) -> None:
    """Show the vault: recovery points, the prune lease, running backups and pending prune plans."""
    from ..jobs.prune import vault_status
    with c.open() as v:
        st = vault_status(v)
    lines = [f"vault {st.id} at {st.url} (format {st.format_version})",
             f"{st.points} recovery point(s)" + (f", {st.soft_deleted} soft-deleted" if st.soft_deleted else ""),
             "prune: " + (f"running on {st.lease['host']} (pid {st.lease['pid']}) since {st.lease['started']}"
                          if st.lease else "not running"),
             f"{len(st.sessions)} backup(s) running" + (f" ({st.dead_sessions} dead session(s) left for prune)"
                                                       if st.dead_sessions else "")]
    lines += [f"  {s['host']} pid {s['pid']} since {s['started']}" for s in st.sessions]
    lines.append(f"{len(st.plans)} pending prune plan(s)")
    lines += [f"  {p['name'][:16]} of {p['time']}: {p['packs']} pack(s) to delete"
              + (f", waiting for {len(p['waiting_for'])} backup(s)" if p["waiting_for"] else "") for p in st.plans]
    c.out(st.to_json(), "\n".join(lines))


command = status
