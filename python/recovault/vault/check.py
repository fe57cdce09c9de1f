"""Vault verification: structure (every recovery point's trees and chunks are indexed, every indexed pack
exists with the right size), and optionally data (read packs, check their names = BLAKE3 of their bytes,
decrypt their headers and every blob)."""
from __future__ import annotations

import random
from typing import Any, Callable, Dict, List, Optional, Set

from .. import core
from ..errors import CorruptData, RecovaultError, UsageError
from . import format as fmt
from .journal import audit
from .repo import Vault


class Checker:
    def __init__(self, vault: Vault, progress: Optional[Callable[[str, Dict[str, Any]], None]] = None) -> None:
        self.vault = vault
        self.progress = progress or (lambda kind, info: None)
        self.problems: List[str] = []
        self.warnings: List[str] = []
        self.stats: Dict[str, int] = {"snapshots": 0, "indexes": 0, "trees": 0, "packs": 0, "packs_read": 0,
                                      "blobs_read": 0}

    def problem(self, msg: str) -> None:
        self.problems.append(msg)
        self.progress("problem", {"message": msg})

    def run(self, read_data: bool = False, subset: Optional[str] = None) -> Dict[str, Any]:
        v = self.vault
        if subset:
            self._parse_subset(subset)  # a malformed argument fails before the work, not after
        # 0. the index files as stored: the vault was opened from the agent cache, which can hide a damaged
        # one that would keep every other host from opening the vault
        for name in v.storage.list(fmt.INDEX):
            try:
                raw = v.storage.get(name)
            except RecovaultError as e:
                self.problem(str(e))
                continue
            if core.blake3(raw).hex() != fmt.name_to_id(name):
                self.problem(f"index file {name}: content does not match its name (corrupt or tampered with)")
                continue
            try:
                fmt.decode_index(v.unseal(fmt.AAD_INDEX, raw, f"index file {name}"))
                self.stats["indexes"] += 1
            except CorruptData as e:
                self.problem(str(e))
            except ValueError as e:
                self.problem(f"index file {name} does not parse: {e}")
        # 1. packs named by the index exist, with their expected extent
        indexed: Dict[bytes, int] = {}
        for loc in v.locations.values():
            indexed[loc.pack] = max(indexed.get(loc.pack, 0), loc.offset + loc.length)
        on_storage = {}
        for name in v.storage.list(fmt.DATA):
            try:
                on_storage[bytes.fromhex(fmt.name_to_id(name))] = name
            except ValueError:
                self.warnings.append(f"unexpected object {name} under data/")
        self.stats["packs"] = len(on_storage)
        for pack, end in indexed.items():
            name = on_storage.get(pack)
            if name is None:
                self.problem(f"pack {pack.hex()} is listed in the index but missing from storage")
                continue
            size = v.storage.stat(name).size
            if size < end + fmt.PACK_TRAILER.size:
                self.problem(f"pack {name} is truncated ({size} bytes, the index needs more than {end})")
        unref = [n for p, n in on_storage.items() if p not in indexed]
        if unref:
            self.warnings.append(f"{len(unref)} pack(s) no index lists (left by an interrupted backup; "
                                 "a future prune removes them)")
        # 2. every recovery point's trees and chunks are indexed; the journal accounts for every point
        seen_trees: Set[bytes] = set()
        points = [fmt.name_to_id(n) for n in v.storage.list(fmt.SNAPSHOTS)]
        self._journal(points)
        for sid in points:
            try:
                snap = v.load_snapshot(sid)
            except RecovaultError as e:
                self.problem(str(e))
                continue
            self.stats["snapshots"] += 1
            self._tree(bytes.fromhex(snap["tree"]), seen_trees, f"recovery point {sid[:8]}")
        self.stats["trees"] = len(seen_trees)
        # 3. data
        if read_data or subset:
            packs = sorted(indexed)
            chosen = self._subset(packs, subset) if subset else packs
            for pack in chosen:
                if pack in on_storage:
                    self._read_pack(on_storage[pack])
        return {"ok": not self.problems, "problems": self.problems, "warnings": self.warnings,
                "stats": self.stats}

    def _journal(self, points: List[str]) -> None:
        report = audit(self.vault.journal, points)
        for msg in report.problems:
            self.problem(msg)
        self.warnings.extend(report.warnings)
        self.stats["journal_entries"] = report.entries

    @staticmethod
    def _parse_subset(subset: str):
        """("groups", n, m) for 'n/m' or ("percent", p) for 'p%' / 'p'; UsageError if malformed."""
        try:
            if "/" in subset:  # n/m: the n-th of m groups, deterministic
                n, m = (int(x) for x in subset.split("/"))
                if not 1 <= n <= m:
                    raise UsageError(f"--read-data-subset {subset}: need 1 <= n <= m")
                return ("groups", n, m)
            pct = float(subset.rstrip("%"))
        except ValueError:
            raise UsageError(f"--read-data-subset {subset}: use 'n/m' or a percentage like '10%'") from None
        if not 0 < pct <= 100:
            raise UsageError(f"--read-data-subset {subset}: percentage must be in (0, 100]")
        return ("percent", pct)

    def _subset(self, packs: List[bytes], subset: str) -> List[bytes]:
        how = self._parse_subset(subset)
        if how[0] == "groups":
            _, n, m = how
            return [p for p in packs if int.from_bytes(p[:4], "big") % m == n - 1]
        pct = how[1]
        k = max(1, round(len(packs) * pct / 100)) if packs else 0
        return random.sample(packs, k)

    def _tree(self, tree_id: bytes, seen: Set[bytes], where: str) -> None:
        if tree_id in seen:
            return
        seen.add(tree_id)
        if tree_id not in self.vault.locations:
            self.problem(f"{where}: tree {tree_id.hex()[:16]} is not in any index")
            return
        try:
            tree = self.vault.load_tree(tree_id)
        except RecovaultError as e:
            self.problem(f"{where}: {e}")
            return
        for node in tree.get("nodes", []):
            if "subtree" in node:
                self._tree(bytes.fromhex(node["subtree"]), seen, where)
            for c in node.get("content", []):
                if bytes.fromhex(c) not in self.vault.locations:
                    self.problem(f"{where}: chunk {c[:16]} of {node['name']} is not in any index")

    def _read_pack(self, name: str) -> None:
        v = self.vault
        try:
            data = v.storage.get(name)
        except RecovaultError as e:
            self.problem(str(e))
            return
        self.stats["packs_read"] += 1
        if core.blake3(data).hex() != fmt.name_to_id(name):
            self.problem(f"pack {name}: content does not match its name (corrupt or tampered with)")
        try:
            entries = v.read_pack_header(name)
        except RecovaultError as e:
            self.problem(str(e))
            return
        for e in entries:
            blob = data[e.offset:e.offset + e.length]
            try:
                plain = v.open_sealed(e.id, blob, name, e.raw_length)
                if v.chunk_id(plain) != e.id:
                    self.problem(f"pack {name}: blob {e.id.hex()[:16]} does not hash to its id")
                self.stats["blobs_read"] += 1
            except CorruptData as err:
                self.problem(str(err))
