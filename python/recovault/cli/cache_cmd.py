"""recovault cache: what the agent cache holds (per vault: location, last use, size by kind), and
--cleanup: the directories of vaults unused for --max-age days removed, then the cache held to --cache-max
(vault/cache_hygiene.py). Needs no vault and no passphrase."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

import click

from ..progress import human_bytes
from ..timefmt import shown
from .context import Ctx, common_options, examples, pass_ctx


def _when(epoch: float) -> str:
    from ..timefmt import format_time
    return format_time(datetime.fromtimestamp(epoch, timezone.utc))


def _vault_json(v: Any, old_before: float) -> Dict[str, Any]:
    return {"id": v.id, "location": v.url, "last_used": _when(v.last_used), "bytes": v.bytes, "files": v.files,
            "kinds": dict(sorted(v.kinds.items())), "old": v.last_used < old_before}


def _table(root: str, cap: Optional[int], vaults: List[Dict[str, Any]]) -> List[str]:
    total = sum(v["bytes"] for v in vaults)
    lines = [f"agent cache {root}: {human_bytes(total)} in {len(vaults)} vault(s), cap "
             + (human_bytes(cap) if cap is not None else "unlimited")]
    if vaults:
        lines.append(f"{'VAULT':<10}{'LAST USED':<21}{'SIZE':>11}  LOCATION")
    for v in vaults:
        when = shown(v["last_used"])
        lines.append(f"{v['id'][:8]:<10}{when:<21}{human_bytes(v['bytes']):>11}  {v['location'] or '(unknown)'}"
                     + ("  (unused: --cleanup removes it)" if v["old"] else ""))
    return lines


@click.command(epilog=examples(
    "recovault cache",
    "recovault cache --cleanup --max-age 7 --cache-max 200M",
    "recovault cache --json"))
@common_options
@click.option("--cleanup", is_flag=True,
              help="Remove the directories of vaults not used for --max-age days, then evict the least recently "
                   "used files above --cache-max.")
@click.option("--max-age", type=click.IntRange(0), default=30, show_default=True, metavar="DAYS",
              help="A vault's directory unused this many days is old (listed as such; removed by --cleanup).")
@pass_ctx
def cache(c: Ctx, cleanup: bool, max_age: int) -> None:
    """Show what the agent cache holds, per vault; --cleanup tidies it."""
    import time
    from ..vault import cache_hygiene
    root, cap = c.cache_dir, c.cache_max_bytes
    now = time.time()
    old_before = now - max_age * 86400
    done: Optional[Dict[str, Any]] = None
    if cleanup:
        r = cache_hygiene.tidy(root, cap, max_age_days=max_age, now=now)
        done = {"removed": [_vault_json(v, old_before) for v in r.removed], "evicted_files": r.evicted_files,
                "evicted_bytes": r.evicted_bytes}
    vaults = [_vault_json(v, old_before) for v, _files in reversed(cache_hygiene.survey(root))]
    lines = _table(root, cap, vaults)
    if done is not None:
        lines.append(f"cleanup: removed {len(done['removed'])} unused vault directory(ies), evicted "
                     f"{done['evicted_files']} file(s) ({human_bytes(done['evicted_bytes'])})")
    c.out({"root": root, "max_bytes": cap, "max_age_days": max_age, "bytes": sum(v["bytes"] for v in vaults),
           "vaults": vaults, "cleanup": done}, "\n".join(lines))


command = cache
