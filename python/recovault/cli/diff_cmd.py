"""recovault diff: what changed between two recovery points (restic diff)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

import click

from ..errors import NotFound, UsageError
from .context import Ctx, common_options, examples, pass_ctx, point_options

if TYPE_CHECKING:
    from ..diff import Diff
    from ..vault.records import RecoveryPoint
    from ..vault.repo import Vault


@click.command(epilog=examples(
    "recovault diff 1a2b3c4d latest /etc",
    "recovault diff --host web1 1a2b3c4d latest --json",
    "recovault diff 1a2b3c4d:/srv/www latest:/srv/www"))
@common_options
@point_options
@click.argument("first")
@click.argument("second")
@click.argument("path", required=False, default=None)
@pass_ctx
def diff(c: Ctx, first: str, second: str, path: Optional[str]) -> None:
    """Show what changed from recovery point FIRST to SECOND (ids, prefixes or 'latest'), under PATH or
    everywhere: + added, - removed, M modified content, T type changed, U metadata only; and the data added
    and removed. SNAPSHOT:PATH compares two paths (a relative PATH is taken against the backed-up paths).
    """
    from ..selection import parse_point_path
    (spec_a, path_a), (spec_b, path_b) = parse_point_path(first), parse_point_path(second)
    if path is not None and (path_a or path_b):
        raise UsageError("give the path as PATH or in SNAPSHOT:PATH, not both")
    with c.open() as v:
        a, b = c.select_point(v, spec_a), c.select_point(v, spec_b)
        (where_a, node_a), (where_b, node_b) = _side(v, a, path_a or path or "/"), _side(v, b, path_b or path or "/")
        if node_a is None and node_b is None:
            raise NotFound(f"{where_a} is in neither recovery point ({a.short_id}, {b.short_id})")
        from ..diff import diff_nodes
        from ..paths import split_path
        d = diff_nodes(v, b"".join(b"/" + p for p in split_path(where_b)), node_a, node_b)
    c.out({"before": a.id, "after": b.id, "path_before": where_a, "path_after": where_b,
           "changes": [ch.to_json() for ch in d.changes], "stats": d.stats.to_json()},
          _text(a, b, d))


def _side(v: "Vault", point: "RecoveryPoint", path: str) -> Tuple[str, object]:
    """The absolute path in `point` and its node (None when the point lacks it)."""
    from ..selection import resolve_path
    try:
        where = resolve_path(v, point, path)
    except NotFound:
        where = "/" + path.lstrip("/")
    return where, v.find_node(point, where)


def _text(a: "RecoveryPoint", b: "RecoveryPoint", d: "Diff") -> str:
    lines = [f"comparing recovery point {a.short_id} to {b.short_id}:", ""]
    for ch in d.changes:
        is_dir = (ch.after or ch.before).type == "d"  # type: ignore[union-attr]
        lines.append(f"{ch.modifier}    {ch.path}{'/' if is_dir else ''}")
    st = d.stats
    lines += ["", f"added: {st.added}, removed: {st.removed}, modified: {st.modified}, type changed: "
                  f"{st.type_changed}, metadata only: {st.metadata}",
              f"data added: {st.bytes_added} bytes in {st.blobs_added} blobs; removed: {st.bytes_removed} bytes in "
              f"{st.blobs_removed} blobs"]
    return "\n".join(lines)


command = diff
