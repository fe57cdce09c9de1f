"""One fuzz harness per parser of untrusted bytes (docs/reliability.md, "Fuzzing").

Each harness feeds one input to the real reader of one kind of object, as a command meets it on storage,
and then does with the result what the vault's own readers do (check's walk, prune's walk of references, a
restore's block map), so a parser that lets a malformed field through is caught where it is used. An input
that the reader refuses with one of the harness's ``expected`` errors (the project's documented ones:
CorruptData, ObjectMissing, ...) is fine; any other exception (TypeError, KeyError, IndexError, ValueError,
ZeroDivisionError, RecursionError, MemoryError), a hang or a crash is a finding.

Where the object is sealed, most inputs are the *plaintext*: the harness seals it under the fixture's fixed
key, so the parser behind the tag is what gets fuzzed (mutated sealed bytes only ever fail the tag). The
first byte of an input chooses a mode where a harness has several (``_mode``).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple, Type

from recovault import core
from recovault.errors import (CorruptData, ObjectMissing, RecovaultError, StorageError, UsageError,
                              VaultNotFound, WrongPassphrase)
from recovault.storage import erasure
from recovault.vault import format as fmt
from recovault.vault import reach
from recovault.vault.blobstore import Locations
from recovault.vault.check import Checker
from recovault.vault.coordination import Coordinator
from recovault.vault.journal import Journal, audit
from recovault.vault.keys import KeyStore, _KeyFile
from recovault.vault.repo import Vault

from fixture import MASTER, PASSPHRASE, DictStorage, Fixture, pack_blobs, seal

Run = Callable[[Fixture, bytes], None]
Seeds = Callable[[Fixture], List[bytes]]


@dataclass(frozen=True)
class Harness:
    name: str
    what: str  # the parser it feeds, for the runner's table
    seeds: Seeds
    run: Run
    expected: Tuple[Type[BaseException], ...] = (CorruptData, ObjectMissing)
    json_at: int = -1  # where a JSON document starts in an input (mutators.json_mutator), -1: no JSON


def _mode(data: bytes, modes: int) -> Tuple[int, bytes]:
    return (data[0] % modes, data[1:]) if data else (0, b"")


def _unseal(aad: bytes, raw: bytes) -> bytes:
    return core.open_blob(MASTER.enc_key, aad, raw)


# -- sealed blobs (C++ open via core): raw sealed bytes, or a blob forged under the key -----------------

_BLOB_ID = bytes(range(32))


def _forge_blob(version: int, codec: int, payload: bytes) -> bytes:
    """A sealed blob (docs/vault-format.md §2) with any version, codec and payload, authentic under MASTER:
    so the codec and the zstd frame behind the tag are fuzzed."""
    salt, counter = bytes(16), (7).to_bytes(8, "big")
    head = bytes([version & 0xFF, codec & 0xFF]) + salt + bytes(4) + counter
    subkey = core.hkdf_sha256(MASTER.enc_key, salt, b"recovault/v1/blob", 32)
    return head + core.aes_gcm_encrypt(subkey, head[18:30], payload, _BLOB_ID + head)


def _blob_seeds(fx: Fixture) -> List[bytes]:
    out = []
    for name in fx.names(fmt.DATA)[:3]:
        for e, raw in pack_blobs(fx, name)[:2]:
            out.append(b"\x00" + e.id + e.raw_length.to_bytes(4, "little") + raw)
    zstd = core.zstd_compress(b"a page of plaintext " * 200)
    return out + [b"\x01\x01\x01" + zstd, b"\x01\x01\x00" + b"stored plaintext", b"\x01\x02\x01" + zstd]


def _blob_run(fx: Fixture, data: bytes) -> None:
    mode, rest = _mode(data, 2)
    if mode == 0:  # a blob as stored in a pack: id, plaintext length, sealed bytes
        blob_id, raw_length, raw = rest[:32].ljust(32, b"\0"), int.from_bytes(rest[32:36], "little"), rest[36:]
        fx.vault.open_sealed(blob_id, raw, "data/fuzz", raw_length)
    else:  # behind the tag: version, codec, payload
        blob = _forge_blob(rest[0] if rest else 1, rest[1] if len(rest) > 1 else 1, rest[2:])
        plain = fx.vault.sealer.unseal(_BLOB_ID, blob, "fuzzed blob")
        fx.vault.open_sealed(_BLOB_ID, blob, "data/fuzz", len(plain))


# -- packs: header and trailer ----------------------------------------------------------------------

def _pack_seeds(fx: Fixture) -> List[bytes]:
    first = fx.names(fmt.DATA)[0]  # mode 1 seals a header for this pack's blobs
    return [b"\x00" + fx.objects[name] for name in fx.names(fmt.DATA)[:4]] + \
        [b"\x01" + fmt.encode_pack_header([e for e, _ in pack_blobs(fx, first)])]


def _pack_run(fx: Fixture, data: bytes) -> None:
    mode, rest = _mode(data, 2)
    name = fx.names(fmt.DATA)[0]
    if mode == 0:  # the whole pack as stored (trailer, sealed header, blobs)
        pack = rest
    else:  # the header's plaintext, sealed, after the fixture pack's blobs, with a true trailer
        blobs = b"".join(raw for _, raw in pack_blobs(fx, name))
        header = seal(fmt.AAD_PACK_HEADER, rest)
        pack = blobs + header + fmt.PACK_TRAILER.pack(len(header), fmt.PACK_MAGIC)
    entries = fx.vault.blobs.read_pack_header(name, data=pack)
    for e in entries[:64]:  # what check --read-data and a restore do with an entry
        fx.vault.open_sealed(e.id, pack[e.offset:e.offset + e.length], name, e.raw_length)
    checker = Checker(fx.vault)
    checker._read_pack(name, pack)


# -- index files --------------------------------------------------------------------------------------

def _index_seeds(fx: Fixture) -> List[bytes]:
    return [_unseal(fmt.AAD_INDEX, fx.objects[n]) for n in fx.names(fmt.INDEX)]


def _index_run(fx: Fixture, data: bytes) -> None:
    try:  # the C++ parser alone, before the layout check that guards it in BlobStore: ValueError if malformed
        Locations().add_index(data, core.IdSet())
    except ValueError:
        pass
    storage = DictStorage()
    sealed = seal(fmt.AAD_INDEX, data)
    name = fmt.INDEX + core.blake3(sealed).hex()
    storage.put(name, sealed)
    for pack in fx.names(fmt.DATA)[:2]:
        storage.put(pack, fx.objects[pack])
    vault = Vault(storage, MASTER, "fuzz", fx.vault.id, fx.vault.settings)
    try:
        vault.blobs.read_index_file(name)
    except CorruptData:
        pass
    vault.load_index()  # reports a damaged index file, then reads the packs' own headers
    for blob_id, loc in list(vault.locations.items())[:32]:
        try:
            vault.read_blob(blob_id)
        except (CorruptData, ObjectMissing):
            pass


# -- trees, recovery points, image block maps: what check, prune and restore do with them ---------------

def _with_blob(fx: Fixture, blob_id: bytes, plain: bytes) -> Vault:
    """The fixture's vault, whose blob `blob_id` (a located tree blob) now reads as `plain`."""
    vault = fx.vault
    real = type(vault).read_blob

    def read_blob(bid: bytes) -> bytes:
        return plain if bid == blob_id else real(vault, bid)
    vault.read_blob = read_blob  # type: ignore[method-assign]
    return vault


def _root_tree(fx: Fixture) -> bytes:
    return bytes.fromhex(fx.vault.load_snapshot(fx.points[-1]).tree)


def _walk_tree(vault: Vault, tree_id: bytes) -> None:
    """What check, prune and restore do with a tree: check's walk, prune's references, each image's map."""
    from recovault.jobs.image import ImageMap
    Checker(vault)._tree(tree_id, "fuzz")
    reach.referenced(vault, [tree_id])
    for node in vault.load_nodes(tree_id)[:16]:
        node.type, node.is_dir, node.to_json()
        if node.image is not None:
            image = ImageMap(vault, node.image)
            for block in range(min(image.nblocks, 4)):
                image.read_block(block)


def _tree_seeds(fx: Fixture) -> List[bytes]:
    out, todo = [], [_root_tree(fx)]
    while todo and len(out) < 12:
        nodes_plain = fx.vault.read_blob(todo.pop())
        out.append(nodes_plain)
        todo += [bytes.fromhex(n["subtree"]) for n in json.loads(nodes_plain)["nodes"] if "subtree" in n]
    return out


def _tree_run(fx: Fixture, data: bytes) -> None:
    root = _root_tree(fx)
    vault = _with_blob(fx, root, data)
    try:
        _walk_tree(vault, root)
    finally:
        del vault.read_blob


def _point_seeds(fx: Fixture) -> List[bytes]:
    return [_unseal(fmt.AAD_SNAPSHOT, fx.objects[fmt.SNAPSHOTS + sid]) for sid in fx.points]


def _point_run(fx: Fixture, data: bytes) -> None:
    sealed = seal(fmt.AAD_SNAPSHOT, data)
    sid = core.blake3(sealed).hex()
    fx.storage.put(fmt.SNAPSHOTS + sid, sealed)
    try:
        point = fx.vault.load_snapshot(sid)
        point.to_json(), point.sort_key, point.short_id, point.same_source("h", ["/"])
        fx.vault.snapshots(on_corrupt=lambda msg: None)
        Checker(fx.vault)._points()  # check's walk from every point (this one's tree included)
    finally:
        fx.storage.delete(fmt.SNAPSHOTS + sid)


def _page_seeds(fx: Fixture) -> List[bytes]:
    return [fx.vault.read_blob(p) for p in fx.image_pages[:3]]


def _page_run(fx: Fixture, data: bytes) -> None:
    from recovault.jobs.image import ImageMap
    node = fx.image_node
    page = fx.image_pages[0]
    vault = _with_blob(fx, page, data)
    try:
        image = ImageMap(vault, node.image)  # type: ignore[attr-defined]
        for block in range(min(image.nblocks, 64)):
            image.read_block(block)
        reach.referenced(vault, [_root_tree(fx)])
    finally:
        del vault.read_blob


# -- the journal ----------------------------------------------------------------------------------------

def _journal_seeds(fx: Fixture) -> List[bytes]:
    return [_unseal(fmt.AAD_JOURNAL, fx.objects[n]) for n in fx.names(fmt.JOURNAL)]


def _journal_run(fx: Fixture, data: bytes) -> None:
    sealed = seal(fmt.AAD_JOURNAL, data)
    name = fmt.JOURNAL + core.blake3(sealed).hex()
    fx.storage.put(name, sealed)
    try:
        journal = Journal(fx.storage, fx.vault.sealer, None, fx.vault.id)
        try:
            journal.open_entry(name[len(fmt.JOURNAL):], sealed)
        except CorruptData:
            pass
        journal.states(), journal.policy(), journal.period_changes()
        audit(journal, fx.points)
        fx.vault.journal = journal
        fx.vault.deleted_snapshots(), fx.vault.retained_snapshots()
    finally:
        fx.storage.delete(name)


# -- key files and the config -------------------------------------------------------------------------

def _key_seeds(fx: Fixture) -> List[bytes]:
    return [fx.objects[n] for n in fx.names(fmt.KEYS)]


def _key_run(fx: Fixture, data: bytes) -> None:
    storage = DictStorage()
    storage.put(fmt.KEYS + fx.vault.keyid, data)  # the key id is in the AAD: the fixture's, so the seed opens
    keys = KeyStore(storage)
    keys.list()
    try:
        kdf = _KeyFile.parse(fx.vault.keyid, data).kdf
    except ValueError:
        kdf = None
    if kdf is None or (kdf.memory_kib <= 64 and kdf.iterations <= 2 and kdf.lanes <= 2):
        # costs a key file may ask (up to 4 GiB, 1000 passes) are bounded by design; fuzz the cheap ones
        keys.unlock(PASSPHRASE)


def _config_seeds(fx: Fixture) -> List[bytes]:
    config = fx.objects[fmt.CONFIG]
    sealed = bytes.fromhex(json.loads(config)["settings"])
    return [b"\x00" + config, b"\x01" + _unseal(fmt.AAD_CONFIG + fx.vault.id.encode(), sealed)]


def _config_run(fx: Fixture, data: bytes) -> None:
    mode, rest = _mode(data, 2)
    if mode == 0:  # the plaintext envelope as stored
        config = rest
    else:  # the sealed settings' plaintext, sealed under the key, in the fixture's envelope
        doc = json.loads(fx.objects[fmt.CONFIG])
        doc["settings"] = seal(fmt.AAD_CONFIG + doc["id"].encode(), rest).hex()
        config = json.dumps(doc).encode()
    storage = DictStorage()
    storage.put(fmt.CONFIG, config)
    for name in fx.names(fmt.KEYS):
        storage.put(name, fx.objects[name])
    vault = Vault.open(storage, PASSPHRASE)
    vault.chunk_id(b"some data"), vault.format_version


# -- erasure-coded sets: shard objects and descriptors ------------------------------------------------

_EC_OBJECT = fmt.INDEX + "ec" * 32
_EC_DATA = bytes(range(256)) * 700  # three blocks of 64 KiB per shard on 2+1


def _ec_set(shards: Dict[int, bytes]) -> erasure.ErasureStorage:
    locs = [erasure.Location(f"mem{i}", DictStorage(f"mem{i}"), "") for i in range(3)]
    ec = erasure.ErasureStorage(2, 1, locs)
    for i, loc in enumerate(locs):
        loc.storage.put(_EC_OBJECT, shards[i])  # type: ignore[union-attr]
    return ec


def _ec_shards() -> Dict[int, bytes]:
    locs = [erasure.Location(f"mem{i}", DictStorage(f"mem{i}"), "") for i in range(3)]
    ec = erasure.ErasureStorage(2, 1, locs)
    ec.put(_EC_OBJECT, _EC_DATA)
    ec.close()
    return {i: loc.storage.get(_EC_OBJECT) for i, loc in enumerate(locs)}  # type: ignore[union-attr]


_SHARDS: Dict[int, bytes] = {}


def _shard_seeds(fx: Fixture) -> List[bytes]:
    shards = _SHARDS or _ec_shards()
    return [bytes([mode, i]) + shards[i][:200 if mode else None] for mode in (0, 1, 2) for i in range(3)]


def _retag(header: bytes) -> bytes:
    """Shard header fields (64 bytes) with the tag a writer computes (anyone can: the key is the name's)."""
    fields = header[:64].ljust(64, b"\0")
    return fields + core.blake3(fields, erasure._name_key(_EC_OBJECT))


def _shard_run(fx: Fixture, data: bytes) -> None:
    if not _SHARDS:
        _SHARDS.update(_ec_shards())
    mode, rest = _mode(data, 3)
    which = (rest[0] if rest else 0) % 3
    body = rest[1:]
    shards = dict(_SHARDS)
    if mode == 0:  # one shard object as stored
        shards[which] = body
    elif mode == 1:  # one shard's header fields, tagged as a writer would, before its own blocks
        shards[which] = _retag(body) + _SHARDS[which][erasure.HEADER_SIZE:]
    else:  # a forged version: the same header fields at every location, tagged, per-index
        for i in range(3):
            fields = bytearray(body[:64].ljust(64, b"\0"))
            fields[7] = i
            shards[i] = _retag(bytes(fields)) + body[64:]
    ec = _ec_set(shards)
    try:
        for call in (lambda: ec.get(_EC_OBJECT), lambda: ec.stat(_EC_OBJECT), lambda: list(ec.list_info()),
                     lambda: ec.get(_EC_OBJECT, 70000, 1000), lambda: ec.get(_EC_OBJECT, 131000, 70000)):
            try:
                call()
            except (CorruptData, ObjectMissing):
                pass
    finally:
        ec.close()


def _ecset_seeds(fx: Fixture) -> List[bytes]:
    return [erasure.Descriptor("ab" * 16, 2, 1, i).encode() for i in range(3)]


def _ecset_run(fx: Fixture, data: bytes) -> None:
    locs = []
    for i in range(3):
        storage = DictStorage(f"loc{i}")
        storage.put(erasure.DESCRIPTOR, data if i == 0 else erasure.Descriptor("ab" * 16, 2, 1, i).encode())
        locs.append(erasure.Location(f"loc{i}", storage, ""))
    spec = erasure.parse_location("ec:2+1:loc0,loc1,loc2")
    erasure._check_set("ec:2+1:loc0,loc1,loc2", spec, locs, False).close()


# -- sessions, leases and plans ----------------------------------------------------------------------

_COORD = ((fmt.SESSIONS, fmt.AAD_SESSION), (fmt.LOCKS, fmt.AAD_LEASE), (fmt.PLANS, fmt.AAD_PLAN))


def _coord_seeds(fx: Fixture) -> List[bytes]:
    return [bytes([i]) + _unseal(aad, fx.objects[n]) for i, (prefix, aad) in enumerate(_COORD)
            for n in fx.names(prefix)]


def _coord_run(fx: Fixture, data: bytes) -> None:
    mode, rest = _mode(data, 3)
    prefix, aad = _COORD[mode]
    sealed = seal(aad, rest)
    name = prefix + (core.blake3(sealed).hex() if prefix == fmt.PLANS else "ef" * 16)
    storage = DictStorage()
    storage.put(name, sealed)
    coord = Coordinator(storage, fx.vault.sealer, host="fuzz-host")
    now = 1.8e9
    for s in coord.sessions():
        s.live(now, "fuzz-host"), s.has_seen("x"), s.to_json()
    for lease in coord.leases():
        lease.held(now, "fuzz-host"), lease.to_json()
    coord.held_leases()
    for plan in coord.plans():
        plan.age(now, now), plan.garbage_ids(), plan.encode()


# -- job files (TOML) -----------------------------------------------------------------------------------

_JOB = b"""[vault]
url = "/backup/vault"
passphrase_file = "/etc/recovault/passphrase"

[backup]
paths = ["/srv", "/etc"]
exclude_caches = true
tags = ["nightly"]

[retention]
keep_daily = 7
keep_weekly = 5
prune = true

[report]
on = "failure"
syslog = true
"""


def _job_run(fx: Fixture, data: bytes) -> None:
    from recovault.jobfile.spec import load_job
    with tempfile.TemporaryDirectory(prefix="recovault-fuzz-job-") as tmp:
        path = os.path.join(tmp, "nightly.toml")
        with open(path, "wb") as f:
            f.write(data)
        load_job(path).backup.point_paths()


# -- format 3 (host keys): the keyring, session key objects, host key files, a journal entry's prefix ---------

def _admin():
    from recovault.vault.hostkeys import AdminKeys
    return AdminKeys.derive(MASTER)


def _host_file(fx: Fixture) -> bytes:
    from recovault.vault.hostkeys import HostKeyFile, new_host_material
    from fixture import TINY_KDF
    material, _ = new_host_material(fx.vault.id, "web1", MASTER, _admin(), fx.vault.settings.to_dict())
    return HostKeyFile.encode(material, PASSPHRASE, TINY_KDF)


def _hostkeys_seeds(fx: Fixture) -> List[bytes]:
    """Mode 0 a keyring, 1 a session key object (salt 16 x 0x07), 2 a host key file, 3 a journal prefix."""
    from recovault.vault.hostkeys import Keyring, seal_session_key, sign
    admin = _admin()
    ring = Keyring(1, fx.vault.id, admin.box_public(), admin.signing_public)
    ring_raw = json.dumps(sign(admin.signing, ring.to_json()), sort_keys=True, indent=1).encode()
    session = seal_session_key(bytes([7]) * 16, bytes(32), admin.writer())
    prefix = json.dumps({"prev": ["ab" * 32]}).encode()
    return [b"\x00" + ring_raw, b"\x01" + session, b"\x02" + _host_file(fx), b"\x03" + prefix]


def _hostkeys_run(fx: Fixture, data: bytes) -> None:
    from recovault.vault.hostkeys import (HostKeyFile, Keyring, SessionKeys, read_keyring, session_key_name,
                                          store_keyring)
    from recovault.vault.journal import prefix_prev
    mode, body = _mode(data, 4)
    admin = _admin()
    storage = DictStorage()
    if mode == 0:  # the reader takes the newest keyring whose name, signature and vault match: none is fine
        storage.put(fmt.KEYRING + core.blake3(body).hex(), body)
        ring = read_keyring(storage, admin.signing_public, fx.vault.id)
        if ring is not None:
            ring.newest, [(h.state, h.refuses(bytes(16))) for h in ring.hosts], ring.signer("admin")
    elif mode == 1:  # an admin reading a session's key: unknown, refused or the key
        store_keyring(storage, Keyring(1, fx.vault.id, admin.box_public(), admin.signing_public), admin.signing)
        salt = bytes([7]) * 16
        storage.put(session_key_name(salt), body)
        SessionKeys(storage, admin, fx.vault.id).known(salt)
    elif mode == 2:  # a host opening its key file
        HostKeyFile.is_host_key(body)
        HostKeyFile.open(body, PASSPHRASE, "the fuzzed key file")
    else:
        prefix_prev(body, "the fuzzed journal entry")


HARNESSES: Dict[str, Harness] = {h.name: h for h in (
    Harness("blob", "sealed blobs (core.open_blob, BlobStore.open_sealed)", _blob_seeds, _blob_run),
    Harness("pack", "pack trailer and sealed header (read_pack_header, check's pack read)", _pack_seeds, _pack_run),
    Harness("index", "index files (decode_index, LocationIndex.add_index, load_index)", _index_seeds, _index_run),
    Harness("tree", "trees (decode_tree; check's walk, prune's references, image maps)", _tree_seeds, _tree_run,
            json_at=0),
    Harness("point", "recovery points (PointStore.load, listing, check)", _point_seeds, _point_run, json_at=0),
    Harness("page", "image block-map pages (ImageMap, prune's references)", _page_seeds, _page_run),
    Harness("journal", "journal entries (JournalEntry, states, policy, audit)", _journal_seeds, _journal_run,
            json_at=0),
    Harness("keyfile", "key files (KeyStore.list, unlock)", _key_seeds, _key_run,
            (CorruptData, ObjectMissing, WrongPassphrase), json_at=0),
    Harness("config", "the config envelope and sealed settings (Vault.open)", _config_seeds, _config_run,
            (CorruptData, UsageError, VaultNotFound), json_at=1),
    Harness("shard", "ec shard headers and blocks (ErasureStorage get, stat, list_info)", _shard_seeds, _shard_run,
            (CorruptData, ObjectMissing)),
    Harness("ecset", "ecset.json descriptors (opening a set)", _ecset_seeds, _ecset_run,
            (CorruptData, UsageError, VaultNotFound, StorageError), json_at=0),
    Harness("coord", "sessions, leases and plans (Coordinator)", _coord_seeds, _coord_run, json_at=1),
    Harness("job", "job files (TOML: load_job)", lambda fx: [_JOB], _job_run, (UsageError,)),
    Harness("hostkeys", "format 3: keyrings, session key objects, host key files, journal prefixes", _hostkeys_seeds,
            _hostkeys_run, (CorruptData, UsageError, WrongPassphrase), json_at=1),
)}

__all__ = ["HARNESSES", "Harness", "RecovaultError"]
