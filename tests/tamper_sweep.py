"""The every-byte tamper sweep (issue 13): flip one byte of one stored object, run `check --read-data` and a
restore of every recovery point through the library (in this process: no subprocess per flip), put the byte
back, and say how the flip was noticed. A flip must be reported by check (a problem, or a warning for an
object that deletes nothing when damaged: a prune plan), or by the restore with a clear error, or be proven
harmless (which and why: a JSON object whose meaning did not change, a shard the erasure-coded layer rejects
and reads around); and no restore may ever write a wrong byte without saying so.

`tests/test_tamper.py` runs a seeded sample of a few hundred positions per object type; `bench/tamper.py` the
long form (>= 10,000 positions; figures in docs/reliability.md). Both build their vault with `make_scene`.
"""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import stat
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from recovault import api, timefmt
from recovault.errors import RecovaultError
from recovault.jobs.prune import PruneOptions, run_prune
from recovault.storage import erasure
from recovault.vault import format as fmt
from recovault.vault.check import Checker
from recovault.vault.coordination import Coordinator
from recovault.vault.journal import VaultPolicy
from recovault.vault.keys import KdfParams
from recovault.vault.repo import Settings

PASSPHRASE = "correct horse battery staple"
OTHER_PASSPHRASE = "a second key's passphrase, unused"
FAST_KDF = KdfParams(memory_kib=64, iterations=1, lanes=1)
#: Small chunks and packs, so a vault of ~100 kB holds every kind of object and region, and files of many
#: chunks (restored by the C++ engine) beside files of one (restored in Python).
SETTINGS = Settings(min_size=2 << 10, avg_size=4 << 10, max_size=16 << 10, pack_size=64 << 10)
SEALED_HEADER = 30  # version, codec, salt, nonce: docs/vault-format.md §2
GCM_TAG = 16

#: Every kind of object the vault holds (an ec set adds its locations' descriptors).
KINDS = ("config", "key", "pack", "index", "point", "journal", "plan", "session", "lease")
#: What a restored tree holds, per path relative to the target: (type, mode, size, content or link target,
#: mtime, hard-link group).
Fingerprint = Dict[str, Tuple]


# ---- the vault --------------------------------------------------------------------------------------------


@dataclass
class Scene:
    """A small vault with every kind of object: `url` opens it, `roots` are the directories its objects are
    in (one, or the K+M locations of an ec set), `points` what each recovery point restores to."""

    url: str
    roots: List[str]
    points: Dict[str, Fingerprint]
    ec: bool = False
    regions: Dict[str, List["Region"]] = field(default_factory=dict)  # object file -> its regions


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _source(src: str, rng: random.Random) -> None:
    """A few files: text (one chunk, compressed), random data of many chunks, an empty file, a hard link,
    a symlink, a subdirectory."""
    text = b"".join(b"line %d of a text file that compresses well\n" % i for i in range(120))
    _write(os.path.join(src, "small.txt"), text)
    _write(os.path.join(src, "sub", "big.bin"), rng.randbytes(60_000))
    _write(os.path.join(src, "sub", "empty"), b"")
    os.link(os.path.join(src, "sub", "big.bin"), os.path.join(src, "hard.bin"))
    os.symlink("sub/big.bin", os.path.join(src, "sym"))
    os.chmod(os.path.join(src, "small.txt"), 0o640)


def _image(path: str, rng: random.Random) -> None:
    """A sparse 512 KiB image with two blocks of data (a block map of one page)."""
    with open(path, "wb") as f:
        f.truncate(512 << 10)
        f.seek(64 << 10)
        f.write(rng.randbytes(20_000))
        f.seek(300 << 10)
        f.write(b"\x01" * 4096)


def fingerprint(root: str) -> Fingerprint:
    """Every entry under `root` (not root itself): type, mode, size, content or link target, mtime and
    hard-link group, relative path -> tuple."""
    out: Fingerprint = {}
    inodes: Dict[Tuple[int, int], int] = {}
    for dp, dns, fns in os.walk(root):
        dns.sort()
        for name in sorted(dns + fns):
            p = os.path.join(dp, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", 0, 0, os.readlink(p), 0, 0)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode), 0, b"", 0, 0)
            else:
                with open(p, "rb") as f:
                    data = f.read()
                group = inodes.setdefault((st.st_dev, st.st_ino), len(inodes)) if st.st_nlink > 1 else -1
                out[rel] = ("f", stat.S_IMODE(st.st_mode), st.st_size, data, st.st_mtime_ns, group)
    return out


def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _sources(src: str, img: Optional[str]) -> Tuple[Fingerprint, Optional[bytes]]:
    """What the source tree and the image hold now (a restore must give them back)."""
    if img is None:
        return fingerprint(src), None
    with open(img, "rb") as f:
        return fingerprint(src), f.read()


def _restored(vault: "api.Vault", point: str, target: str, src: str, img: Optional[str],
              source: Tuple[Fingerprint, Optional[bytes]]) -> Fingerprint:
    """Restore `point` cleanly; its source must come back (byte for byte, modes, times, links). The whole
    restored tree's fingerprint."""
    shutil.rmtree(target, ignore_errors=True)
    res = api.restore(vault, point, target)
    assert not res["errors"], res["errors"]
    assert fingerprint(_under(target, src)) == source[0], f"the clean restore of {point[:8]} differs from its source"
    if img is not None:
        with open(_under(target, img), "rb") as f:
            assert f.read() == source[1], f"the clean restore of {point[:8]} differs from its image"
    return fingerprint(target)


def make_scene(root: str, seed: int = 13, ec: Optional[Tuple[int, int]] = None) -> Scene:
    """Build the vault under `root`: three backups (files, then a change and an image, then a file of its
    own), a second key, soft delete off and the third point forgotten (journal: policy, add, remove, purge),
    a prune with its default margin, which leaves a pending plan condemning the third point's packs, and a
    backup session and a prune lease as processes killed by kill -9 leave them.
    Each remaining point is restored once and must give its source back."""
    rng = random.Random(seed)
    src, img = os.path.join(root, "src"), os.path.join(root, "img", "disk.img")
    os.makedirs(os.path.dirname(img))
    _source(src, rng)
    if ec:
        roots = [os.path.join(root, f"loc{i + 1}") for i in range(sum(ec))]
        url = f"ec:{ec[0]}+{ec[1]}:" + ",".join(roots)
    else:
        roots = [os.path.join(root, "vault")]
        url = roots[0]
    cache = os.path.join(root, "build-cache")
    api.init_vault(url, PASSPHRASE, settings=SETTINGS, kdf=FAST_KDF, cache_dir=cache).close()
    sources: Dict[str, Tuple[Optional[str], Tuple[Fingerprint, Optional[bytes]]]] = {}
    with api.open_vault(url, PASSPHRASE, cache_dir=cache) as v:
        v.keys.add(OTHER_PASSPHRASE, v.master, kdf=FAST_KDF)
        v.set_policy(VaultPolicy(None, 0))
        first = api.backup(v, [src])
        sources[first.id] = (None, _sources(src, None))
        _write(os.path.join(src, "small.txt"), b"changed\n" * 300)
        _image(img, rng)
        second = api.backup(v, [src], images=[img])
        sources[second.id] = (img, _sources(src, img))
        _write(os.path.join(src, "gone.bin"), rng.randbytes(30_000))
        third = api.backup(v, [src], images=[img])
        v.delete_snapshot(third.id)
        run_prune(v, PruneOptions(), None)
        coord = Coordinator(v.storage, v.sealer)  # what a backup and a prune killed by kill -9 leave behind
        coord.put_session(secrets.token_hex(16), timefmt.now(), [])
        coord.put_lease(secrets.token_hex(16), timefmt.now(), first=True)
    scene = Scene(url, roots, {}, ec=bool(ec))
    with open_fresh(scene) as v:
        for pid, (i, source) in sources.items():
            scene.points[pid] = _restored(v, pid, os.path.join(root, "restore-" + pid[:8]), src, i, source)
        scene.regions = {path: regions_of(scene, path, v) for path in object_files(scene)}
    kinds = {r.kind for rs in scene.regions.values() for r in rs}
    assert set(KINDS) <= kinds, kinds
    return scene


# ---- the objects and their regions ------------------------------------------------------------------------


class Region(NamedTuple):
    """A span of one object file: its kind of object, what the bytes are, [start, end)."""

    kind: str
    what: str
    start: int
    end: int


_KINDS = {fmt.KEYS: "key", fmt.DATA: "pack", fmt.INDEX: "index", fmt.SNAPSHOTS: "point", fmt.JOURNAL: "journal",
          fmt.PLANS: "plan", fmt.SESSIONS: "session", fmt.LOCKS: "lease"}


def object_files(scene: Scene) -> List[str]:
    """Every stored object file of the vault (each location's shards, and descriptors, on an ec set)."""
    out = []
    for root in scene.roots:
        for dp, _dn, fns in os.walk(root):
            out += [os.path.join(dp, f) for f in fns if not f.startswith(".tmp-")]
    return sorted(out)


def kind_of(name: str) -> str:
    if name == fmt.CONFIG:
        return "config"
    if name == erasure.DESCRIPTOR:
        return "ec descriptor"
    for prefix, kind in _KINDS.items():
        if name.startswith(prefix):
            return kind
    raise AssertionError(f"an object of no known kind: {name}")


def _name(scene: Scene, path: str) -> str:
    root = next(r for r in scene.roots if path.startswith(r + os.sep))
    return os.path.relpath(path, root)


def regions_of(scene: Scene, path: str, vault: "api.Vault") -> List[Region]:
    """The regions of one object file; on an ec set, of one shard (its header, blocks and block tags)."""
    name = _name(scene, path)
    kind = kind_of(name)
    with open(path, "rb") as f:
        raw = f.read()
    if scene.ec and kind != "ec descriptor":
        return _shard_regions(kind, name, raw)
    if kind in ("config", "key", "ec descriptor"):
        return _json_regions(kind, raw)
    if kind == "pack":
        return _pack_regions(raw, vault.blobs.read_pack_header(name))
    return _sealed_regions(kind, "", 0, len(raw))


def _sealed_regions(kind: str, prefix: str, start: int, end: int) -> List[Region]:
    """A sealed blob (§2): its header (version, codec, salt, nonce), ciphertext and GCM tag."""
    return [Region(kind, prefix + "sealed header", start, start + SEALED_HEADER),
            Region(kind, prefix + "ciphertext", start + SEALED_HEADER, end - GCM_TAG),
            Region(kind, prefix + "tag", end - GCM_TAG, end)]


def _pack_regions(raw: bytes, entries: Sequence[fmt.BlobEntry]) -> List[Region]:
    """A pack (§6): its blobs (data or tree, as its header says), the sealed header, the trailer."""
    start, hlen = fmt.split_pack(len(raw), raw[-fmt.PACK_TRAILER.size:])
    kinds = {fmt.BLOB_DATA: "data blob", fmt.BLOB_TREE: "tree blob"}
    regions = [Region("pack", kinds[e.type], e.offset, e.offset + e.length) for e in entries]
    regions += _sealed_regions("pack", "header ", start, start + hlen)
    regions.append(Region("pack", "trailer", len(raw) - fmt.PACK_TRAILER.size, len(raw)))
    return regions


def _json_regions(kind: str, raw: bytes) -> List[Region]:
    """A JSON object: one region per top-level field (from its key to the next field), and the syntax
    around them."""
    text = raw.decode()
    doc = json.loads(text)
    spans = sorted((text.index(json.dumps(k) + ":"), k) for k in doc)
    regions = [Region(kind, "syntax", 0, spans[0][0])]
    ends = [s for s, _ in spans[1:]] + [len(text.rstrip()) - 1]
    regions += [Region(kind, f"field {k}", s, e) for (s, k), e in zip(spans, ends)]
    regions.append(Region(kind, "syntax", ends[-1], len(raw)))
    return [r for r in regions if r.end > r.start]


def _shard_regions(kind: str, name: str, raw: bytes) -> List[Region]:
    h = erasure.parse_header(name, raw)
    assert h is not None, name
    regions = [Region(kind, "shard header", 0, erasure.HEADER_SIZE)]
    pos = erasure.HEADER_SIZE
    for j in range(h.blocks()):
        size = min(erasure.BLOCK, h.shard_size - j * erasure.BLOCK)
        regions += [Region(kind, "shard block", pos, pos + size),
                    Region(kind, "shard block tag", pos + size, pos + size + erasure.TAG)]
        pos += size + erasure.TAG
    return [r for r in regions if r.end > r.start]


class Position(NamedTuple):
    path: str
    offset: int
    mask: int  # the byte is XORed with it (1..255)
    region: Region


def positions(scene: Scene, per_kind: int, seed: int) -> List[Position]:
    """A seeded sample: about `per_kind` positions for each kind of object, shared equally by its regions
    (each spread over every object file that has such a region; every byte of a region smaller than its
    share), each with a random non-zero XOR mask."""
    rng = random.Random(seed)
    spans: Dict[str, Dict[str, List[Tuple[str, Region]]]] = defaultdict(lambda: defaultdict(list))
    for path, regions in sorted(scene.regions.items()):
        for r in regions:
            spans[r.kind][r.what].append((path, r))
    out = []
    for kind in sorted(spans):
        share = -(-per_kind // len(spans[kind]))
        for what in sorted(spans[kind]):
            every = [(p, r, o) for p, r in spans[kind][what] for o in range(r.start, r.end)]
            for p, r, o in (every if len(every) <= share else rng.sample(every, share)):
                out.append(Position(p, o, rng.randrange(1, 256), r))
    return out


def scratch(fallback: str) -> str:
    """A new directory for the sweep's vault and restores: on /dev/shm when there is one (a tmpfs: a restore
    creates and removes directories, which costs ~2 ms each on an ext4 root), else under `fallback`."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else fallback
    return tempfile.mkdtemp(prefix="recovault-tamper-", dir=base)


# ---- one flip -----------------------------------------------------------------------------------------------


class Outcome(NamedTuple):
    """How one flip was noticed: `how` is "check" (a problem), "check warning", "restore", or what took care of
    it unreported ("harmless: ...", and on an ec set "read around: ...", "left out: ..."; see _harmless);
    `message` the first thing said (empty when harmless); `restore` what the restores did on their own:
    "error" (a clear error for what the flip touched) or "right" (every point restored exactly: the flip was
    in nothing they read, or was read around); `seconds` the flip's whole cost."""

    position: Position
    how: str
    message: str
    restore: str
    seconds: float


class Finding(AssertionError):
    """A flip that broke the rules: a wrong byte restored without an error, an error that is not one of
    recovault's (a traceback), or a flip nobody reported and nothing proves harmless."""


@contextmanager
def flipped(pos: Position) -> Iterator[None]:
    fd = os.open(pos.path, os.O_RDWR)
    try:
        old = os.pread(fd, 1, pos.offset)
        os.pwrite(fd, bytes([old[0] ^ pos.mask]), pos.offset)
        try:
            yield
        finally:
            os.pwrite(fd, old, pos.offset)
    finally:
        os.close(fd)


@contextmanager
def open_fresh(scene: Scene) -> Iterator["api.Vault"]:
    """The vault as a new host opens it: no agent cache, nothing remembered from an earlier open."""
    with api.open_vault(scene.url, PASSPHRASE, cache_dir="") as v:
        yield v


def _check(scene: Scene) -> Tuple[List[str], List[str]]:
    """(problems, warnings) of `check --read-data`; a vault that does not open is a problem (check's own
    error: the command says it and exits non-zero)."""
    try:
        with open_fresh(scene) as v:
            res = Checker(v).run(read_data=True)
    except RecovaultError as e:
        return [f"{type(e).__name__}: {e}"], []
    return res["problems"], res["warnings"]


def _restore(scene: Scene, work: str) -> List[str]:
    """Restore every point into `work`; what the restores reported (errors). A file restored without an
    error must be exactly what the point holds, and nothing may be left out without an error; a restore
    that stopped with an error may have left files out, but each file it did put in place must be right."""
    said: List[str] = []
    try:
        with open_fresh(scene) as v:
            for pid, want in scene.points.items():
                target = os.path.join(work, pid[:8])
                shutil.rmtree(target, ignore_errors=True)
                try:
                    res = api.restore(v, pid, target)
                except RecovaultError as e:
                    said.append(f"{type(e).__name__}: {e}")
                    _compare(want, fingerprint(target) if os.path.isdir(target) else {}, target, None)
                    continue
                errors = [e["path"] for e in res["errors"]]
                said += [f"{e['path']}: {e['error']}" for e in res["errors"]]
                _compare(want, fingerprint(target) if os.path.isdir(target) else {}, target, errors)
    except RecovaultError as e:
        said.append(f"{type(e).__name__}: {e}")
    return said


def _compare(want: Fingerprint, got: Fingerprint, target: str, errors: Optional[List[str]]) -> None:
    """`got` is `want`, but for the paths `errors` names (and what is under them or above them); `errors`
    None (the restore stopped): only the files in place are compared (a directory's mode is set last)."""
    reported = [os.path.relpath(p, target) for p in errors or ()]

    def excused(rel: str) -> bool:
        return any(rel == r or rel.startswith(r + "/") or r.startswith(rel + "/") for r in reported)

    for rel, v in got.items():
        if errors is None and (v[0] == "d" or rel not in want):
            continue  # a stopped restore leaves directories unfinished (and no temporary file it wrote)
        if errors is None and v[:5] == want[rel][:5]:
            continue  # a hard link's other names may not be in place yet: its own bytes and metadata are right
        if want.get(rel) != v and not excused(rel):
            raise Finding(f"restored {rel} differs from the recovery point, and the restore said nothing of it")
    for rel in want if errors is not None else ():
        if rel not in got and not excused(rel):
            raise Finding(f"{rel} is missing from the restore, and the restore said nothing of it")


def _harmless(scene: Scene, pos: Position) -> str:
    """How an unreported flip is taken care of: "harmless: why" (it changed nothing that matters), "read around:
    why" (an ec shard the layer rejects), "left out: why" (an ec location); empty if nothing proves it."""
    with open(pos.path, "rb") as f:
        raw = f.read()
    flip = bytearray(raw)
    flip[pos.offset] ^= pos.mask
    name = _name(scene, pos.path)
    if pos.region.kind == "ec descriptor":
        return _descriptor_left_out(raw, bytes(flip))
    if scene.ec:
        return _shard_rejected(name, raw, flip, pos)
    if pos.region.kind in ("config", "key"):
        try:
            if _same_meaning(pos.region.kind, json.loads(raw), json.loads(bytes(flip))):
                return "harmless: same JSON document (whitespace, or the case of a hex digit)"
        except ValueError:
            pass
    return ""


def _same_meaning(kind: str, doc: dict, now: object) -> bool:
    if not isinstance(now, dict):
        return False
    if kind == "config":  # the sealed settings are hex, read by bytes.fromhex: case does not matter
        doc, now = dict(doc, settings=doc["settings"].lower()), dict(now, settings=str(now.get("settings")).lower())
    return doc == now


def _descriptor_left_out(raw: bytes, flip: bytes) -> str:
    """An ec location's descriptor: unchanged in meaning, or refused as damaged (the location is then left
    out: reads go around it, writes refuse naming it)."""
    try:
        same = erasure.Descriptor.decode(flip) == erasure.Descriptor.decode(raw)
    except RecovaultError:
        return "left out: the location's descriptor is damaged (reads go around it; writes name it)"
    return "harmless: same descriptor" if same else ""


def _shard_rejected(name: str, raw: bytes, flip: bytearray, pos: Position) -> str:
    """On an ec set: the flipped shard fails the layer's own check (its header, or the block the byte is in),
    so reads treat it as missing and rebuild it from the other shards."""
    h = erasure.parse_header(name, bytes(flip))
    if h is None or h != erasure.parse_header(name, raw):
        return "read around: the shard's header fails its check"
    j = (pos.offset - erasure.HEADER_SIZE) // (erasure.BLOCK + erasure.TAG)
    start = erasure.HEADER_SIZE + j * (erasure.BLOCK + erasure.TAG)
    length = min(erasure.BLOCK, h.shard_size - j * erasure.BLOCK) + erasure.TAG  # the block and its tag
    if erasure.verify_blocks(h, j, j + 1, bytes(flip[start:start + length])) is None:
        return "read around: the shard's block fails its tag"
    return ""


def probe(scene: Scene, pos: Position, work: str) -> Outcome:
    """Flip, check, restore, unflip: the outcome; Finding if the flip broke the rules."""
    t0 = time.monotonic()
    with flipped(pos):
        try:
            problems, warnings = _check(scene)
            said = _restore(scene, work)
        except Finding as e:
            raise Finding(f"{_where(scene, pos)}: {e}") from None
        except Exception as e:  # noqa: BLE001 - anything not recovault's is a finding (a traceback for a user)
            raise Finding(f"{_where(scene, pos)}: {type(e).__name__}: {e}") from e
    for said_once in problems + said + warnings:  # what an operator reads: one line each, saying something
        if not said_once.strip() or "\n" in said_once:
            raise Finding(f"{_where(scene, pos)}: not a one-line message: {said_once!r}")
    if problems:
        how, msg = "check", problems[0]
    elif said:
        how, msg = "restore", said[0]
    elif warnings:
        how, msg = "check warning", warnings[0]
    else:
        why = _harmless(scene, pos)  # the byte is back: the object as stored, and the flip made in memory
        if not why:
            raise Finding(f"{_where(scene, pos)}: neither check nor restore noticed the flip")
        how, msg = why, ""
    return Outcome(pos, how, msg, "error" if said else "right", time.monotonic() - t0)


def _where(scene: Scene, pos: Position) -> str:
    return (f"{_name(scene, pos.path)} ({pos.region.kind}, {pos.region.what}) byte {pos.offset} "
            f"^ {pos.mask:#04x}")


def sweep(scene: Scene, sample: List[Position], work: str,
          on_outcome: Optional[Callable[[Outcome], None]] = None) -> List[Outcome]:
    """Probe every position in turn; the vault is back as it was after each."""
    out = []
    for pos in sample:
        o = probe(scene, pos, work)
        out.append(o)
        if on_outcome:
            on_outcome(o)
    return out


def tally(outcomes: Sequence[Outcome]) -> Dict[Tuple[str, str], Counter]:
    """(kind, region) -> how many flips were noticed each way."""
    out: Dict[Tuple[str, str], Counter] = defaultdict(Counter)
    for o in outcomes:
        out[o.position.region.kind, o.position.region.what][o.how] += 1
    return out
