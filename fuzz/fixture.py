"""The small real vault every fuzz harness starts from (its objects are the seed corpora, its keys the fixed
test key behind which harnesses seal what they mutate).

Built once per harness process, in memory (``DictStorage``) so a harness run touches no disk: a vault made by
the library as the CLI makes one (tiny Argon2id parameters, small chunks and packs so there are several of
each), two backups of a small tree with a hard link, a symlink, a subdirectory and a disk image (so trees,
image block maps and their pages exist), a soft-delete policy entry, a forgotten point and a prune (so the
journal has a remove and a purge, and a plan exists), and a session and a lease written by the real
coordinator code. ``Fixture.objects`` is every object by name, as stored.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple, Union

from recovault import api, core
from recovault.errors import ObjectMissing
from recovault.storage.base import ObjectInfo, Storage, validate_name, validate_prefix
from recovault.vault import format as fmt
from recovault.vault.coordination import Coordinator, Plan
from recovault.vault.keys import KdfParams, MasterKeys
from recovault.vault.repo import Settings, Vault

PASSPHRASE = "fuzzing passphrase, sixteen+ chars"
TINY_KDF = KdfParams(memory_kib=8, iterations=1, lanes=1)
#: the fixed test key: every harness process seals with these master keys
MASTER = MasterKeys(*(bytes([i]) * 32 for i in (1, 2, 3, 4)))
SMALL = Settings(min_size=4 << 10, avg_size=8 << 10, max_size=16 << 10, pack_size=64 << 10)


class DictStorage(Storage):
    """Objects in a dict: the Storage contract (names validated, ranges clipped, ObjectMissing) without I/O."""

    def __init__(self, name: str = "fuzz") -> None:
        self.name = name
        self.objects: Dict[str, Tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"mem://{self.name}"

    def put(self, name: str, data: Union[bytes, bytearray, memoryview]) -> None:
        validate_name(name)
        with self._lock:
            self.objects[name] = (bytes(data), time.time())

    def put_if_absent(self, name: str, data: Union[bytes, bytearray, memoryview]) -> bool:
        validate_name(name)
        with self._lock:
            if name in self.objects:
                return False
            self.objects[name] = (bytes(data), time.time())
            return True

    def get(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("negative offset or length")
        got = self.objects.get(name)
        if got is None:
            raise ObjectMissing(f"object {name} is missing from {self.url}")
        data = got[0]
        return data[offset:] if length is None else data[offset:offset + length]

    def list(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        return iter(sorted(n for n in list(self.objects) if n.startswith(prefix)))

    def stat(self, name: str) -> ObjectInfo:
        got = self.objects.get(name)
        if got is None:
            raise ObjectMissing(f"object {name} is missing from {self.url}")
        return ObjectInfo(name=name, size=len(got[0]), mtime=got[1])

    def delete(self, name: str) -> None:
        with self._lock:
            self.objects.pop(name, None)


@dataclass
class Fixture:
    storage: DictStorage
    vault: Vault
    objects: Dict[str, bytes]
    points: List[str]  # recovery point ids, oldest first
    image_node: Optional[object] = None  # the records.Node of the disk image
    image_pages: List[bytes] = field(default_factory=list)

    def names(self, prefix: str) -> List[str]:
        return sorted(n for n in self.objects if n.startswith(prefix))

    def restore_objects(self) -> None:
        """Put the storage back as the fixture made it (a harness may have added or replaced objects)."""
        self.storage.objects = {n: (data, 0.0) for n, data in self.objects.items()}


def _tree(root: str) -> None:
    os.makedirs(os.path.join(root, "src", "sub"))
    with open(os.path.join(root, "src", "hello.txt"), "wb") as f:
        f.write(b"hello, fuzzer\n" * 50)
    with open(os.path.join(root, "src", "sub", "random.bin"), "wb") as f:
        f.write(os.urandom(40 << 10))
    os.link(os.path.join(root, "src", "hello.txt"), os.path.join(root, "src", "sub", "hard.txt"))
    os.symlink("../hello.txt", os.path.join(root, "src", "sub", "link"))
    with open(os.path.join(root, "disk.img"), "wb") as f:
        f.write(os.urandom(8 << 10) + bytes(8 << 10) + b"img" * 3000)


def build() -> Fixture:
    """The fixture vault (about a second)."""
    storage = DictStorage()
    vault = Vault.create(storage, PASSPHRASE, settings=SMALL, kdf=TINY_KDF, master=MASTER, soft_delete_days=0)
    with tempfile.TemporaryDirectory(prefix="recovault-fuzz-") as tmp:
        _tree(tmp)
        src, img = os.path.join(tmp, "src"), os.path.join(tmp, "disk.img")
        first = api.backup(vault, [src], images=[img], image_block_size=4096)
        with open(os.path.join(src, "hello.txt"), "ab") as f:
            f.write(b"one more line\n")
        second = api.backup(vault, [src], images=[img], image_block_size=4096)
        gone = api.backup(vault, [os.path.join(src, "sub")])
    api.forget(vault, ids=[gone.id], allow_empty=True)
    api.prune(vault)  # margin 2h: deletes nothing
    coord = Coordinator(storage, vault.sealer, host="fuzz-host")
    packs = sorted(storage.list(fmt.DATA))
    coord.put_plan(Plan("2026-11-25T14:00:00.000000Z", "fuzz-host", [bytes.fromhex(packs[0].rsplit("/", 1)[1])],
                        bytes(range(64)), [first.id]))
    coord.put_session(fmt.SESSIONS + "ab" * 16, "2026-11-25T14:00:00.000000Z", ["0" * 64])
    coord.put_lease(fmt.LOCKS + "cd" * 16, "2026-11-25T14:00:00.000000Z")
    objects = {n: storage.objects[n][0] for n in storage.objects}
    fx = Fixture(storage, vault, objects, [first.id, second.id])
    node = vault.find_node(second, img)
    if node is not None and node.image:
        fx.image_node = node
        fx.image_pages = [bytes.fromhex(p) for p in node.image["pages"]]
    return fx


def pack_blobs(fx: Fixture, name: str) -> List[Tuple[fmt.BlobEntry, bytes]]:
    """The entries of pack `name` with each blob's sealed bytes."""
    data = fx.objects[name]
    return [(e, data[e.offset:e.offset + e.length]) for e in fx.vault.blobs.read_pack_header(name, data=data)]


def seal(aad: bytes, plain: bytes) -> bytes:
    """`plain` sealed under the fixture's key, as the vault seals it (so a parser behind the tag sees it)."""
    return core.SealSession(MASTER.enc_key).seal(aad, plain, 3)
