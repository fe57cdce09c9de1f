"""Restore from an object store in batches (restore/batch.py, packfetch.py, vault/treeahead.py), on the
in-memory double: each part of a pack is fetched once for every file that needs it, across batches; trees
are read ahead on several connections when the agent cache is cold; a truncated or vanished pack fails only
the files that need it. Each restore is checked byte for byte against the source."""
from __future__ import annotations

import os
import random
import threading
from collections import defaultdict

import pytest

from memstore import MemoryStorage
from recovault.errors import ObjectMissing
from recovault.packfetch import PackCache, merged_spans, missing_spans, split_spans
from recovault.restore import RestoreJob
from recovault.restore import batch as batch_mod
from recovault.vault import format as fmt
from test_transfer import backup, make_vault, open_vault


class RecordingStorage(MemoryStorage):
    """Records every ranged get (name, offset, length) and the most gets of tree packs in flight at once."""

    def __init__(self, name: str, latency: float = 0.0) -> None:
        super().__init__(name, latency)
        self.ranges = defaultdict(list)
        self.tree_packs: set = set()
        self.tree_now = self.tree_max = 0
        self._rec = threading.Lock()

    def get(self, name, offset=0, length=None):
        tree = name in self.tree_packs
        with self._rec:
            self.ranges[name].append((offset, length))
            if tree:
                self.tree_now += 1
                self.tree_max = max(self.tree_max, self.tree_now)
        try:
            return super().get(name, offset, length)
        finally:
            if tree:
                with self._rec:
                    self.tree_now -= 1


@pytest.fixture
def tree_src(tmp_path):
    """400 small files (100 B - 12 KiB of random bytes) in 100 directories, three levels deep."""
    rnd = random.Random(21)
    root = tmp_path / "src"
    for i in range(400):
        d = root / f"d{i % 5}" / f"e{i % 20}" / f"f{i % 100}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i:03}").write_bytes(rnd.randbytes(rnd.randint(100, 12 << 10)))
    return root


def files_of(root) -> dict:
    out = {}
    for dp, _dn, fns in os.walk(root):
        for fn in fns:
            p = os.path.join(dp, fn)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


def restore(tmp_path, store, point, target, cache="cache"):
    with open_vault(tmp_path, store, cache=cache) as v:
        return RestoreJob(v, v.find_snapshot(point.id), str(target)).run()


def restored(target, src) -> dict:
    return files_of(os.path.join(target, str(src).lstrip("/")))


def test_each_part_of_a_pack_is_fetched_once_across_batches(tmp_path, tree_src, monkeypatch):
    store = RecordingStorage("batches")
    make_vault(tmp_path, store)
    point = backup(tmp_path, store, [tree_src])
    with open_vault(tmp_path, store) as v:  # packs of file data (trees have packs of their own)
        data_packs = {n: len(store.objects[n][0]) for n in
                      {v.pack_name(loc.pack) for loc in v.locations.values() if loc.type == fmt.BLOB_DATA}}
    batches = []
    real_fetch = batch_mod.Fetcher.fetch
    monkeypatch.setattr(batch_mod, "BATCH_FILES", 16)  # many batches, each pack needed by several
    monkeypatch.setattr(batch_mod.Fetcher, "fetch", lambda self, b: batches.append(len(b)) or real_fetch(self, b))
    store.ranges.clear()
    store.reset_counts()
    res = restore(tmp_path, store, point, tmp_path / "out")
    assert res["errors"] == []
    assert restored(tmp_path / "out", tree_src) == files_of(tree_src)
    assert len(batches) >= 20 and sum(batches) == 400
    fetched = 0
    for name, ranges in store.ranges.items():
        if name not in data_packs:
            continue
        spans = sorted((o, n) for o, n in ranges)
        for (o1, n1), (o2, _n2) in zip(spans, spans[1:]):
            assert o1 + n1 <= o2, f"{name}: bytes {o2}.. fetched twice"
        fetched += sum(n for _o, n in spans)
    assert fetched <= sum(data_packs.values())
    data_gets = sum(c for n, c in store.gets.items() if n in data_packs)
    assert data_gets < 400 // 4  # was one get (or more) a file


def test_a_cold_cache_reads_trees_ahead_on_several_connections_and_each_once(tmp_path, tree_src):
    store = RecordingStorage("trees", latency=0.005)
    make_vault(tmp_path, store)
    point = backup(tmp_path, store, [tree_src])
    with open_vault(tmp_path, store) as v:
        store.tree_packs = {v.pack_name(loc.pack) for loc in v.locations.values() if loc.type == fmt.BLOB_TREE}
    store.ranges.clear()
    res = restore(tmp_path, store, point, tmp_path / "out", cache="cold-cache")
    assert res["errors"] == []
    assert restored(tmp_path / "out", tree_src) == files_of(tree_src)
    tree_reads = [(n, r) for n in store.tree_packs for r in store.ranges[n]]
    assert len(tree_reads) == len(set(tree_reads)) >= 100  # every tree read once (~130 directories)
    assert store.tree_max > 1


def test_a_selective_restore_reads_ahead_only_the_selected_trees(tmp_path, tree_src):
    store = RecordingStorage("select")
    make_vault(tmp_path, store)
    point = backup(tmp_path, store, [tree_src])
    with open_vault(tmp_path, store) as v:
        store.tree_packs = {v.pack_name(loc.pack) for loc in v.locations.values() if loc.type == fmt.BLOB_TREE}
    store.ranges.clear()
    sel = str(tree_src / "d1" / "e1")
    with open_vault(tmp_path, store, cache="cold-cache") as v:
        res = RestoreJob(v, v.find_snapshot(point.id), str(tmp_path / "out"), [sel]).run()
    assert res["errors"] == []
    assert restored(tmp_path / "out", tree_src) == {k: v for k, v in files_of(tree_src).items()
                                                     if k.startswith("d1/e1/")}
    tree_reads = sum(len(store.ranges[n]) for n in store.tree_packs)
    depth = len(tree_src.parts) + 2  # the root's trees down to e1, then e1's 5 subdirectories
    assert tree_reads <= depth + 5 + 1


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_pack_fails_only_the_files_that_need_it(tmp_path, tree_src, damage):
    store = MemoryStorage("damage")
    make_vault(tmp_path, store)
    point = backup(tmp_path, store, [tree_src])
    with open_vault(tmp_path, store) as v:
        victim = sorted({v.pack_name(loc.pack) for loc in v.locations.values() if loc.type == fmt.BLOB_DATA})[3]
        affected = set()
        for dp, _dn, fns in os.walk(tree_src):
            for fn in fns:
                path = os.path.join(dp, fn)
                node = v.find_node(v.find_snapshot(point.id), path)
                if any(v.pack_name(v.locate(bytes.fromhex(c)).pack) == victim for c in node.content):
                    affected.add(os.path.relpath(path, tree_src))
    assert 0 < len(affected) < 400
    if damage == "truncate":
        data, mtime = store.objects[victim]
        store.objects[victim] = (data[: len(data) // 3], mtime)
    else:
        del store.objects[victim]
    res = restore(tmp_path, store, point, tmp_path / "out")
    failed = {os.path.relpath(e["path"], os.path.join(tmp_path / "out", str(tree_src).lstrip("/")))
              for e in res["errors"]}
    got, want = restored(tmp_path / "out", tree_src), files_of(tree_src)
    assert set(got) | failed == set(want)
    assert {k for k in want if got.get(k) != want[k]} == failed
    assert failed and failed <= affected
    if damage == "truncate":  # the chunks before the cut are whole: only the files past it fail
        assert all("truncated" in e["error"] for e in res["errors"])
    else:
        assert failed == affected and all("missing" in e["error"] for e in res["errors"])


def test_missing_spans_and_split():
    held = [(10, 20), (50, 10)]
    assert missing_spans([(0, 100)], held) == [(0, 10), (30, 20), (60, 40)]
    assert missing_spans([(12, 5), (52, 3)], held) == []
    assert missing_spans([(25, 30)], held) == [(30, 20)]
    assert missing_spans([(0, 5)], []) == [(0, 5)]
    assert list(split_spans([(0, 10), (20, 3)], 4)) == [(0, 4), (4, 4), (8, 2), (20, 3)]
    assert merged_spans([(5, 5), (0, 5)], gap=0) == [(0, 10)]


def test_pack_cache_keeps_what_is_unpinned_up_to_its_limit_and_never_drops_a_pinned_pack(tmp_path, tree_src):
    store = MemoryStorage("cache")
    make_vault(tmp_path, store)
    backup(tmp_path, store, [tree_src])
    packs = sorted(n for n in store.objects if n.startswith(fmt.DATA))[:3]  # any packs: read as bytes here
    size = {n: len(store.objects[n][0]) for n in packs}
    with open_vault(tmp_path, store) as v:
        cache = PackCache(v, keep=size[packs[1]] + size[packs[2]])
        first = cache.fetch({packs[0]: [(0, size[packs[0]])], packs[1]: [(0, size[packs[1]])]})
        assert first.read(packs[0], 0, size[packs[0]]) == store.objects[packs[0]][0]
        second = cache.fetch({packs[2]: [(0, size[packs[2]])]})
        first.close()  # 3 packs held, over the limit: the oldest unpinned one goes, the pinned one stays
        assert packs[0] not in cache._held and packs[2] in cache._held
        store.reset_counts()
        again = cache.fetch({packs[1]: [(0, 100)], packs[2]: [(10, 100)]})
        assert store.requests["get"] == 0  # both held: nothing fetched
        assert again.read(packs[2], 10, 100) == store.objects[packs[2]][0][10:110]
        again.close()
        second.close()
        gone = cache.fetch({"data/00/" + "0" * 64: [(0, 10)]})
        assert isinstance(gone.error("data/00/" + "0" * 64), ObjectMissing)
        assert ("data/00/" + "0" * 64) not in gone and gone.path("data/00/" + "0" * 64) is None
        gone.close()
        cache.close()
        assert cache._held == {}
