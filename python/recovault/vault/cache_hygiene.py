"""Agent cache hygiene: what the cache holds, a size cap with least-recently-used eviction, and the directories
of vaults not seen for a while removed (restic's `cache --cleanup`).

Each vault's directory ``<root>/<vault id>/`` holds ``vault.json`` (``{"v": 1, "url": ...}``: which vault it
is, for `recovault cache`), rewritten when the URL changes and touched whenever the vault is opened. A cached
file's mtime is its last use: `cache.mark_used` touches it on every hit. A vault's last use is the newest
mtime in its directory.

`tidy` (run by `recovault cache --cleanup`, and by the CLI after a command that wrote into the cache when it
is due: `tidy_if_due`, hourly or when the cap may have been passed):
1. removes the directories of vaults last used more than `max_age_days` ago (default 30);
2. removes leftover temporary files (``.tmp-*``) older than a day (a process killed while writing);
3. while the cache is larger than the cap, deletes the least recently used files that can be fetched again
   (index files, tree blobs, the points and journal bundles). The journal entries and heads
   (``journal/``, ``journal-heads``) are never evicted by the cap: they are how `check` notices a vault
   rolled back (docs/vault-format.md §11); they are small (a few hundred bytes per recovery point) and go
   only with their vault's directory.
Everything here is best effort: the cache is an accelerator, a file another process removes or uses meanwhile
is skipped, and a file evicted while another process reads it is fetched again from the vault.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .. import jsondoc
from ..errors import UsageError
from .cache import mark_used, private_dir, read_private, write_private

__all__ = ["DEFAULT_CACHE_MAX", "MAX_AGE_DAYS", "CachedVault", "TidyResult", "mark_seen", "parse_size", "survey",
           "tidy", "tidy_if_due"]

DEFAULT_CACHE_MAX = 512 << 20
MAX_AGE_DAYS = 30
SEEN_FILE = "vault.json"
KEPT = ("journal", "journal-heads", SEEN_FILE)  # top-level names of a vault's directory the cap never evicts
TMP_AGE = 86400.0
STATE_FILE = "tidy.json"  # in the root: {"v": 1, "bytes": the cache's size after the last tidy, "time": when}
TIDY_EVERY = 3600.0
_VAULT_DIR = re.compile(r"[0-9a-f]{32}")
_SIZE = re.compile(r"(\d+)\s*([bkmgt]?)(?:i?b)?")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, option: str) -> Optional[int]:
    """A size in bytes: ``500M``, ``500MiB``, ``2G``, ``1048576`` (binary units, as prune's --max-unused);
    ``unlimited``: None. UsageError naming `option` otherwise."""
    t = text.strip().lower()
    if t == "unlimited":
        return None
    m = _SIZE.fullmatch(t)
    if not m:
        raise UsageError(f"{option} {text!r}: use a size such as 500M, 2GiB, or unlimited")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)]


def mark_seen(root: str, vault_id: str, url: str) -> None:
    """The vault `vault_id` at `url` is in use: record its URL (if new) and the time (the file's mtime)."""
    vault_dir = Path(root) / vault_id
    if not (private_dir(Path(root)) and private_dir(vault_dir)):
        return
    path = vault_dir / SEEN_FILE
    data = json.dumps({"v": 1, "url": url}, sort_keys=True).encode()
    if read_private(path) == data:
        mark_used(path)
    else:
        write_private(path, data)


@dataclass(frozen=True)
class CachedFile:
    path: str
    size: int
    mtime: float
    kept: bool  # never evicted by the cap (journal evidence, vault.json)


@dataclass
class CachedVault:
    """One vault's directory in the cache: its id, the URL it was last opened at (None: unknown, written by
    an older recovault), when it was last used (epoch seconds), and its bytes per kind."""
    id: str
    path: str
    url: Optional[str]
    last_used: float
    bytes: int = 0
    files: int = 0
    kinds: Dict[str, int] = field(default_factory=dict)


def _kind(top: str) -> str:
    """The kind of a vault directory's top-level entry: `index`, `trees`, `journal`, `points`, `vault`..."""
    name = top.split(".", 1)[0]
    return "journal" if name == "journal-heads" else name


def _files(vault_dir: str) -> List[CachedFile]:
    out = []
    for dirpath, _dirs, names in os.walk(vault_dir):
        rel = os.path.relpath(dirpath, vault_dir)
        top = None if rel == "." else rel.split(os.sep, 1)[0]
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            out.append(CachedFile(path, st.st_size, st.st_mtime, (top or name) in KEPT))
    return out


def _url(vault_dir: str) -> Optional[str]:
    raw = read_private(Path(vault_dir) / SEEN_FILE)
    try:
        url = jsondoc.parse(raw)["url"] if raw else None
    except (ValueError, TypeError, KeyError):
        return None
    return url if isinstance(url, str) else None


def survey(root: str) -> List[Tuple[CachedVault, List[CachedFile]]]:
    """Every vault directory under `root` (named by a vault id; anything else is left alone) with its files,
    least recently used first."""
    out = []
    try:
        entries = sorted(e for e in os.listdir(root) if _VAULT_DIR.fullmatch(e))
    except OSError:
        return []
    for vault_id in entries:
        vault_dir = os.path.join(root, vault_id)
        if not os.path.isdir(vault_dir) or os.path.islink(vault_dir):
            continue
        files = _files(vault_dir)
        try:
            newest = max([f.mtime for f in files], default=os.stat(vault_dir).st_mtime)
        except OSError:
            continue
        v = CachedVault(vault_id, vault_dir, _url(vault_dir), newest)
        for f in files:
            kind = _kind(os.path.relpath(f.path, vault_dir).split(os.sep, 1)[0])
            v.kinds[kind] = v.kinds.get(kind, 0) + f.size
            v.bytes += f.size
            v.files += 1
        out.append((v, files))
    out.sort(key=lambda vf: vf[0].last_used)
    return out


@dataclass
class TidyResult:
    """What `tidy` did: the vault directories removed as unused, and the files evicted for the cap."""
    removed: List[CachedVault] = field(default_factory=list)
    evicted_files: int = 0
    evicted_bytes: int = 0
    bytes_before: int = 0
    bytes_after: int = 0


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except OSError:
        return False


def tidy(root: str, max_bytes: Optional[int] = DEFAULT_CACHE_MAX, max_age_days: float = MAX_AGE_DAYS,
         now: Optional[float] = None) -> TidyResult:
    """Remove unused vaults' directories, stale temporary files, then least recently used files down to
    `max_bytes` (None: no cap). See the module docstring."""
    now = time.time() if now is None else now
    result = TidyResult()
    live: List[CachedFile] = []
    for v, files in survey(root):
        result.bytes_before += v.bytes
        if v.last_used < now - max_age_days * 86400:
            shutil.rmtree(v.path, ignore_errors=True)
            result.removed.append(v)
            continue
        for f in files:
            if os.path.basename(f.path).startswith(".tmp-") and f.mtime < now - TMP_AGE:
                if _unlink(f.path):
                    result.evicted_files += 1
                    result.evicted_bytes += f.size
                continue
            live.append(f)
    total = sum(f.size for f in live)
    if max_bytes is not None and total > max_bytes:
        for f in sorted((f for f in live if not f.kept), key=lambda f: f.mtime):
            if total <= max_bytes:
                break
            if _unlink(f.path):
                total -= f.size
                result.evicted_files += 1
                result.evicted_bytes += f.size
    result.bytes_after = total
    return result


def tidy_if_due(root: str, max_bytes: Optional[int], written: int,
                now: Optional[float] = None) -> Optional[TidyResult]:
    """`tidy` after a run that wrote `written` bytes into the cache, unless the last tidy was less than an hour
    ago and its size plus what was written since is within the cap (surveying 20,000 cached trees takes
    ~0.5 s: not after every run). Returns what `tidy` did, or None when it was not due."""
    now = time.time() if now is None else now
    path = Path(root) / STATE_FILE
    try:
        state = jsondoc.parse(read_private(path) or b"null")
        size, when = int(state["bytes"]), float(state["time"])
    except (ValueError, TypeError, KeyError):
        size, when = 0, float("-inf")
    size += written
    due = now - when >= TIDY_EVERY or now < when or (max_bytes is not None and size > max_bytes)
    result = tidy(root, max_bytes, now=now) if due else None
    if result is not None:
        size, when = result.bytes_after, now
    write_private(path, json.dumps({"v": 1, "bytes": size, "time": when}).encode())
    return result
