"""The Storage contract, one suite for every back end: a local directory, Azure Blob (Azurite) and S3 (moto),
the last two on servers the tests start on loopback (tests/servers.py), erasure-coded sets (2+1, 4+2) of
local directories, and the copy-on-write overlay of a dry run over a local directory. What only one back end
does (fsync order, file modes, ENOSPC) is tested in that back end's own file (test_storage.py for the local
directory; test_storage_wrappers.py for the overlay over objects it did not write)."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from recovault.errors import ObjectMissing, StorageError
from recovault.storage import ObjectInfo, Storage, open_storage
from servers import unique_name

BACKENDS = ["local", "azure", "s3", "ec:2+1", "ec:4+2", "overlay"]


def _opener(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Storage]:
    """A function opening a store of ``kind``: ``open(prefix="", page=None)``, all in one fresh container (an
    erasure-coded set: over local directories, one per shard)."""
    if kind == "local":
        return lambda prefix="", page=None: open_storage(str(tmp_path / "vault" / prefix), create=True)
    if kind == "overlay":  # a dry run's copy-on-write view (storage/overlay.py) over a local directory
        from recovault.storage.overlay import OverlayStorage
        return lambda prefix="", page=None: OverlayStorage(
            open_storage(str(tmp_path / "vault" / prefix), create=True), str(tmp_path / "scratch" / prefix))
    if kind.startswith("ec:"):
        k, m = map(int, kind[3:].split("+"))
        return lambda prefix="", page=None: open_storage(
            kind + ":" + ",".join(str(tmp_path / f"d{i}" / prefix) for i in range(k + m)), create=True)
    container = unique_name()
    if kind == "azure":
        request.getfixturevalue("azure_env")
        from recovault.storage.azure import AzureStorage, CONTAINER_NAME
        from recovault.storage.objstore import parse_location

        def open_azure(prefix: str = "", page=None) -> Storage:
            where = parse_location(f"azure://{container}/{prefix}", CONTAINER_NAME, "container")
            return AzureStorage(where, create=True, list_page_size=page)
        return open_azure
    request.getfixturevalue("s3_env")
    from recovault.storage.objstore import parse_location
    from recovault.storage.s3 import BUCKET_NAME, S3Storage

    def open_s3(prefix: str = "", page=None) -> Storage:
        return S3Storage(parse_location(f"s3://{container}/{prefix}", BUCKET_NAME, "bucket"), create=True,
                         list_page_size=page)
    return open_s3


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Storage]:
    return _opener(request.param, request, tmp_path)


@pytest.fixture
def store(open_store: Callable[..., Storage]) -> Storage:
    s = open_store()
    yield s
    s.close()


def test_put_get_roundtrip_and_overwrite(store: Storage) -> None:
    store.put("data/3f/3f9a", b"hello")
    assert store.get("data/3f/3f9a") == b"hello"
    store.put("data/3f/3f9a", b"second version")
    assert store.get("data/3f/3f9a") == b"second version"
    assert list(store.list()) == ["data/3f/3f9a"]


def test_put_accepts_memoryview_bytearray_and_empty(store: Storage) -> None:
    store.put("a", memoryview(b"0123456789")[2:6])
    store.put("b", bytearray(b"xyz"))
    store.put("c", b"")
    assert (store.get("a"), store.get("b"), store.get("c")) == (b"2345", b"xyz", b"")
    assert store.stat("c").size == 0
    assert store.get("c", 0, 5) == b"" and store.get("c", 3) == b""


@pytest.mark.parametrize("offset,length,expected", [
    (0, None, b"0123456789"), (3, None, b"3456789"), (3, 4, b"3456"), (0, 0, b""),
    (8, 10, b"89"), (10, None, b""), (15, 5, b""), (9, 1, b"9"),
])
def test_get_ranges(store: Storage, offset: int, length, expected: bytes) -> None:
    store.put("r", b"0123456789")
    assert store.get("r", offset, length) == expected


@pytest.mark.parametrize("offset,length", [(-1, None), (0, -1)])
def test_get_rejects_negative_range(store: Storage, offset: int, length) -> None:
    store.put("r", b"abc")
    with pytest.raises(ValueError):
        store.get("r", offset, length)


def test_missing_objects(store: Storage) -> None:
    for call in (lambda: store.get("data/00/0000"), lambda: store.get("data/00/0000", 5, 3),
                 lambda: store.get("data/00/0000", 0, 0), lambda: store.stat("data/00/0000")):
        with pytest.raises(ObjectMissing, match="data/00/0000"):
            call()
    assert not store.exists("data/00/0000")
    store.put("data/ab/abcd", b"x")
    assert not store.exists("data")  # a "directory" is not an object
    assert issubclass(ObjectMissing, StorageError)


def test_stat_exists_and_list_info(store: Storage) -> None:
    before = time.time()
    store.put("p/a", b"12345")
    store.put("p/b/c", b"1")
    store.put("q", b"22")
    info = store.stat("p/a")
    assert info == ObjectInfo(name="p/a", size=5, mtime=info.mtime)
    assert before - 5 <= info.mtime <= time.time() + 5
    assert store.exists("p/a") and not store.exists("p/x")
    infos = list(store.list_info("p/"))
    assert [(i.name, i.size) for i in infos] == [("p/a", 5), ("p/b/c", 1)]
    assert infos == [store.stat("p/a"), store.stat("p/b/c")]


def test_delete_is_idempotent(store: Storage) -> None:
    store.put("d/x", b"1")
    store.delete("d/x")
    assert not store.exists("d/x")
    with pytest.raises(ObjectMissing):
        store.get("d/x")
    store.delete("d/x")
    store.delete("never/existed/at/all")


def test_list_prefixes_and_order(store: Storage) -> None:
    names = ["config", "data/3f/3f9a", "data/3f/3f01", "data/40/40aa", "data-x", "keys/k1", "a/x", "a-b"]
    for n in names:
        store.put(n, b".")
    assert list(store.list()) == sorted(names)  # exact lexicographic order, "a-b" < "a/x"
    assert list(store.list("data/")) == ["data/3f/3f01", "data/3f/3f9a", "data/40/40aa"]
    assert list(store.list("data/3")) == ["data/3f/3f01", "data/3f/3f9a"]
    assert list(store.list("data/3f/3f9")) == ["data/3f/3f9a"]
    assert list(store.list("data")) == ["data-x", "data/3f/3f01", "data/3f/3f9a", "data/40/40aa"]
    assert list(store.list("keys/k1")) == ["keys/k1"]
    assert list(store.list("zzz/")) == [] and list(store.list("data/ff/")) == []
    for bad in ("../", "/data"):
        with pytest.raises(ValueError):
            list(store.list(bad))


def test_list_info_comes_from_the_listing(store: Storage) -> None:
    """Sizes and times come with the listing: no request (stat) per object."""
    for i in range(5):
        store.put(f"index/{i:064x}", b"x" * i)

    def no_stat(name: str) -> ObjectInfo:
        raise AssertionError(f"list_info stat'ed {name}")

    store.stat = no_stat
    assert [(i.name[-1], i.size) for i in store.list_info("index/")] == [(str(i), i) for i in range(5)]


def test_listing_is_paginated(open_store: Callable[..., Storage]) -> None:
    """A listing longer than one page (pages of 4 here) comes whole and in order."""
    store = open_store(page=4)
    names = [f"data/{i:02x}/{i:02x}{'0' * 62}" for i in range(11)]
    for n in names:
        store.put(n, bytes([len(n) % 256]) * 3)
    assert list(store.list("data/")) == names
    assert [i.size for i in store.list_info("data/")] == [3] * 11


def test_prefixes_keep_vaults_apart(open_store: Callable[..., Storage]) -> None:
    """Two vaults under two prefixes of one container see only their own objects; a prefix is a path, so
    vault "a" never lists vault "ab"'s objects."""
    a, ab = open_store("a"), open_store("ab")
    a.put("config", b"A")
    ab.put("config", b"AB")
    ab.put("data/00/00aa", b"x")
    assert list(a.list()) == ["config"] and a.get("config") == b"A"
    assert list(ab.list()) == ["config", "data/00/00aa"] and ab.get("config") == b"AB"
    a.delete("config")
    assert ab.get("config") == b"AB"


@pytest.mark.parametrize("name", ["", "/abs", "a//b", "a/", "..", "a/../b", "a b", "caf\u00e9", ".tmp-1", "x" * 256])
def test_invalid_names_are_rejected(store: Storage, name: str) -> None:
    for call in (lambda: store.put(name, b"x"), lambda: store.put_if_absent(name, b"x"), lambda: store.get(name),
                 lambda: store.stat(name), lambda: store.delete(name)):
        with pytest.raises(ValueError):
            call()
    assert list(store.list()) == []


# -- put_if_absent ---------------------------------------------------------------------------------------


def test_put_if_absent_creates_once_and_never_overwrites(store: Storage) -> None:
    assert store.put_if_absent("locks/lease", b"first") is True
    assert store.put_if_absent("locks/lease", b"second") is False
    assert store.get("locks/lease") == b"first"
    assert store.put_if_absent("locks/empty", b"") is True and store.get("locks/empty") == b""
    store.delete("locks/lease")
    assert store.put_if_absent("locks/lease", memoryview(b"third")) is True
    assert store.get("locks/lease") == b"third"
    assert list(store.list("locks/")) == ["locks/empty", "locks/lease"]  # no temporary objects left


def test_put_if_absent_has_one_winner(store: Storage) -> None:
    """Eight writers race to create one name: exactly one wins, and its bytes are what is stored."""
    won = []
    go = threading.Barrier(8)

    def writer(i: int) -> None:
        go.wait()
        if store.put_if_absent("plans/p", b"writer %d" % i):
            won.append(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert store.get("plans/p") == b"writer %d" % won[0]


def test_large_object_roundtrip_and_ranges(store: Storage) -> None:
    """A pack-sized object (3 MiB) and ranged reads into it."""
    import os
    payload = os.urandom(3 << 20)
    store.put("data/77/77ff", payload)
    assert store.get("data/77/77ff") == payload
    assert store.get("data/77/77ff", 1_000_003, 65_536) == payload[1_000_003:1_000_003 + 65_536]
    assert store.get("data/77/77ff", len(payload) - 10) == payload[-10:]
    assert store.stat("data/77/77ff").size == len(payload)


def test_init_racing_another_init_never_replaces_its_config(store: Storage, tmp_path: Path) -> None:
    """Two inits of one location at once: both see no config, both write one. The config is created
    conditionally, so the second init fails with "already exists", the first vault's config stays, and the
    loser's key file is removed."""
    from recovault.errors import VaultExists
    from recovault.vault.keys import KdfParams, KeyStore
    from recovault.vault.repo import Vault
    kdf = KdfParams(memory_kib=8, iterations=1, lanes=1)
    first = Vault.create(store, "first passphrase, long enough", kdf=kdf, cache_dir=str(tmp_path / "c1"))
    config, keys = store.get("config"), list(store.list("keys/"))
    store.exists = lambda name: False  # the second init checked before the first had written its config
    with pytest.raises(VaultExists, match="already exists"):
        Vault.create(store, "second passphrase, long enough", kdf=kdf, cache_dir=str(tmp_path / "c2"))
    assert store.get("config") == config and list(store.list("keys/")) == keys
    del store.exists
    assert KeyStore(store).unlock("first passphrase, long enough")[1] == first.keyid
    first.close()


def test_parallel_writers_share_one_pool_quietly(store: Storage, caplog: pytest.LogCaptureFixture) -> None:
    """24 threads putting and reading at once (parallel pack uploads: --connections) all succeed, and the
    HTTP connection pool is large enough that no connection is thrown away (urllib3 warns "Connection pool is
    full", which would reach the user's terminal)."""
    import logging
    from concurrent.futures import ThreadPoolExecutor
    caplog.set_level(logging.WARNING)
    payloads = {f"data/{i:02x}/{i:02x}aa": bytes([i]) * (64 << 10) for i in range(48)}
    with ThreadPoolExecutor(24) as pool:
        list(pool.map(lambda kv: store.put(*kv), payloads.items()))
        got = dict(zip(payloads, pool.map(store.get, payloads)))
    assert got == payloads
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
