"""Disk images, block devices and streams (recovault.jobs.image; `backup --image/--stdin`,
`restore --to/--image/--range`).

Every restore is compared byte for byte with the source image (or a saved copy of the version the
recovery point was made from). Images are sparse files built with truncate + writes at offsets; the
1 GiB one holds only a few MiB of data, so nothing here writes or reads much.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import pytest

import recovault
import recovault.jobs.image as image_mod
from recovault import api
from recovault.errors import CorruptData, ObjectMissing, RecovaultError, StorageError, TargetFull, UsageError
from recovault.jobs.image import PAGE_BLOCKS, ImageMap, backup_image, restore_image
from recovault.paths import split_path
from recovault.vault import format as fmt
from recovault.vault.check import Checker
from recovault.vault.keys import KdfParams
from recovault.vault.records import Node, RecoveryPoint
from recovault.vault.repo import Settings
from recovault.vault.tree import node_map

PASSPHRASE = "correct horse battery staple"
FAST_KDF = KdfParams(memory_kib=64, iterations=1, lanes=1)
BS = 64 << 10  # image block size used throughout
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
PYTHONPATH = str(Path(recovault.__file__).resolve().parent.parent)


# ---- helpers ------------------------------------------------------------------------------------------
def rand(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def make_image(path, size: int, writes: Iterable[Tuple[int, bytes]] = ()) -> str:
    """A (sparse) image: `size` bytes of holes, then each (offset, data) written in place."""
    path = str(path)
    with open(path, "wb") as f:
        f.truncate(size)
    fd = os.open(path, os.O_WRONLY)
    try:
        for off, data in writes:
            os.pwrite(fd, data, off)
    finally:
        os.close(fd)
    return path


def extents(path) -> List[Tuple[int, int]]:
    """Data extents (start, end) of a file, by SEEK_DATA/SEEK_HOLE."""
    out = []
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        off = 0
        while off < size:
            try:
                d = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            h = min(os.lseek(fd, d, os.SEEK_HOLE), size)
            out.append((d, h))
            off = h
    finally:
        os.close(fd)
    return out


def assert_same_bytes(got_path, want) -> None:
    """`got_path` holds exactly `want` (bytes or a path). Big sparse files are compared over the union of
    both files' data extents (outside it both read as zeros), small ones in full."""
    got_path = str(got_path)
    if isinstance(want, (bytes, bytearray)):
        assert os.path.getsize(got_path) == len(want)
        data = Path(got_path).read_bytes()
        if data != want:
            first = next(i for i, (x, y) in enumerate(zip(data, want)) if x != y)
            pytest.fail(f"{got_path} differs from the source at byte {first}")
        return
    want = str(want)
    size = os.path.getsize(want)
    assert os.path.getsize(got_path) == size, f"{got_path}: size {os.path.getsize(got_path)} != {size}"
    if size <= 64 * MiB:
        ranges = [(0, size)]
    else:
        ranges = []
        for a, b in sorted(extents(got_path) + extents(want)):
            if ranges and a <= ranges[-1][1]:
                ranges[-1] = (ranges[-1][0], max(ranges[-1][1], b))
            else:
                ranges.append((a, b))
    with open(got_path, "rb") as g, open(want, "rb") as w:
        for a, b in ranges:
            g.seek(a)
            w.seek(a)
            pos = a
            while pos < b:
                n = min(8 * MiB, b - pos)
                x, y = g.read(n), w.read(n)
                if x != y:
                    first = pos + next(i for i, (p, q) in enumerate(zip(x, y)) if p != q)
                    pytest.fail(f"{got_path} differs from {want} at byte {first}")
                pos += n


def sparse_copy(src, dst) -> str:
    """Copy a sparse file keeping its holes (its data extents only)."""
    size = os.path.getsize(src)
    with open(dst, "wb") as f:
        f.truncate(size)
    fi, fo = os.open(str(src), os.O_RDONLY), os.open(str(dst), os.O_WRONLY)
    try:
        for a, b in extents(src):
            os.pwrite(fo, os.pread(fi, b - a, a), a)
    finally:
        os.close(fi)
        os.close(fo)
    return str(dst)


def image_node(vault, snap, path) -> Node:
    nodes = vault.load_nodes(bytes.fromhex(snap.tree))
    parts = split_path(os.path.abspath(path))
    node = None
    for i, part in enumerate(parts):
        node = node_map(nodes)[part]
        if i < len(parts) - 1:
            nodes = vault.load_nodes(bytes.fromhex(node.subtree))
    assert node is not None and node.image is not None, f"{path} is not an image in the recovery point"
    return node


def image_desc(vault, snap, path) -> Dict:
    return image_node(vault, snap, path).image


def backup_img(vault, path, **kw) -> Dict:
    kw.setdefault("image_block_size", BS)
    return api.backup(vault, [], images=[str(path)], **kw)


def restore_to(vault, snap, path, dest, **kw) -> Dict:
    return restore_image(vault, image_desc(vault, snap, path), str(dest), **kw)


@pytest.fixture
def vault(tmp_path):
    v = api.init_vault(str(tmp_path / "vault"), PASSPHRASE, kdf=FAST_KDF, cache_dir=str(tmp_path / "cache"))
    yield v
    v.close()


def cli_env(tmp_path) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=PYTHONPATH, RECOVAULT_PASSPHRASE=PASSPHRASE, HOME=str(tmp_path / "home"),
               XDG_CACHE_HOME=str(tmp_path / "xdg-cache"))
    env.pop("RECOVAULT_VAULT", None)
    return env


def run_cli(tmp_path, *args, input: Optional[bytes] = None, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "recovault.cli", *map(str, args)], input=input,
                       capture_output=True, env=cli_env(tmp_path), timeout=120)
    if check and p.returncode != 0:
        pytest.fail(f"recovault {' '.join(map(str, args))} exited {p.returncode}:\n"
                    f"{p.stderr.decode(errors='replace')}")
    return p


# ---- image shapes --------------------------------------------------------------------------------------
def _shapes() -> Dict[str, Tuple[int, List[Tuple[int, bytes]]]]:
    return {
        # holes between data, data not block-aligned, data straddling block boundaries
        "holes": (16 * MiB, [(0, rand(1, 4 * KiB)), (3 * MiB + 100, rand(2, 200 * KiB)),
                             (9 * MiB - 7, rand(3, 70 * KiB)), (16 * MiB - 5000, rand(4, 5000))]),
        # explicitly written zero runs (allocated, not holes), some inside data blocks
        "zero-runs": (8 * MiB, [(0, bytes(2 * MiB)), (2 * MiB, rand(5, MiB)), (3 * MiB, bytes(3 * MiB)),
                                (6 * MiB + 10 * KiB, bytes(20 * KiB)), (7 * MiB, rand(6, 30 * KiB))]),
        "random": (6 * MiB, [(0, rand(7, 6 * MiB))]),
        # size not a multiple of the block size: a partial last block, with data in it
        "partial-last-block": (5 * BS + 1234, [(0, rand(8, 100)), (5 * BS, rand(9, 1234))]),
        "partial-last-block-hole": (3 * BS + 777, [(BS, rand(10, BS))]),
        "empty": (0, []),
        "smaller-than-a-block": (1000, [(0, rand(11, 1000))]),
        "one-byte": (1, [(0, b"\x01")]),
        "only-holes": (4 * MiB + 3, []),
    }


@pytest.mark.parametrize("shape", list(_shapes()))
def test_image_shapes_restore_identical(vault, tmp_path, shape):
    size, writes = _shapes()[shape]
    img = make_image(tmp_path / f"{shape}.img", size, writes)
    src = Path(img).read_bytes()
    snap = backup_img(vault, img)
    assert snap.stats["bytes_total"] == size
    desc = image_desc(vault, snap, img)
    assert desc["size"] == size and desc["bs"] == BS
    assert len(desc["pages"]) == -(-(-(-size // BS)) // PAGE_BLOCKS)

    # the block map: all-zero blocks and holes are the zero id, every other block is its chunk id
    m = ImageMap(vault, desc)
    for blk in range(m.nblocks):
        data = src[blk * BS:(blk + 1) * BS]
        want = None if data.count(0) == len(data) else vault.chunk_id(data)
        assert m.block_id(blk) == want, f"block {blk}"
    nonzero = sum(1 for blk in range(m.nblocks) if m.block_id(blk) is not None)
    assert snap.stats["chunks_new"] == len({m.block_id(b) for b in range(m.nblocks)} - {None})
    assert nonzero <= m.nblocks

    # ImageMap.read of arbitrary ranges (what FUSE reads use)
    rng = random.Random(size)
    for _ in range(20):
        a = rng.randrange(0, size + 10)
        n = rng.randrange(0, 3 * BS)
        assert m.read(a, n) == src[a:a + n]

    # restore with a new file and over an existing (bigger, non-zero) file
    out = tmp_path / "out.img"
    st = restore_to(vault, snap, img, out, verify=True)
    assert_same_bytes(out, src)
    assert st["bytes_written"] <= size
    Path(out).write_bytes(b"\xaa" * (size + 3 * BS + 17))
    restore_to(vault, snap, img, out)
    assert_same_bytes(out, src)

    # and through a whole-recovery-point restore (the image lands at target/<absolute path>)
    res = api.restore(vault, snap.id, str(tmp_path / "target"), verify=True)
    assert res["errors"] == []
    assert_same_bytes(str(tmp_path / "target") + img, src)


def test_zero_runs_cost_nothing(vault, tmp_path):
    img = make_image(tmp_path / "z.img", 4 * MiB, [(0, bytes(4 * MiB))])  # allocated, all zeros
    assert os.stat(img).st_blocks * 512 >= 4 * MiB
    snap = backup_img(vault, img)
    assert snap.stats["chunks_new"] == 0
    assert snap.stats["bytes_added"] == 0
    m = ImageMap(vault, image_desc(vault, snap, img))
    assert all(m.block_id(b) is None for b in range(m.nblocks))
    out = tmp_path / "out.img"
    restore_to(vault, snap, img, out)
    assert_same_bytes(out, img)
    assert os.stat(out).st_blocks == 0  # all-zero blocks come back as holes


# ---- incremental ---------------------------------------------------------------------------------------
def test_incremental_reads_data_only_and_stores_changed_blocks(vault, tmp_path):
    size = 1 * GiB
    rng = random.Random(42)
    starts = sorted(rng.sample(range(0, size // MiB - 1), 8))
    writes = [(s * MiB + 4096 * rng.randrange(0, 16), rand(100 + i, MiB)) for i, s in enumerate(starts)]
    img = make_image(tmp_path / "big.img", size, writes)
    data_bytes = sum(len(d) for _, d in writes)
    assert data_bytes == 8 * MiB

    s1 = backup_img(vault, img)
    # holes are never read: only the data extents, widened to whole blocks
    assert data_bytes <= s1.stats["bytes_read"] <= data_bytes + 2 * BS * len(writes)
    assert s1.stats["bytes_total"] == size
    v1 = sparse_copy(img, tmp_path / "v1.img")

    # random 4 KiB writes inside the data: only the touched blocks are new
    touched = set()
    fd = os.open(img, os.O_WRONLY)
    try:
        for i in range(25):
            off, data = writes[rng.randrange(len(writes))]
            at = off + 4096 * rng.randrange(0, len(data) // 4096)
            os.pwrite(fd, rand(1000 + i, 4096), at)
            touched.add(at // BS)
    finally:
        os.close(fd)
    s2 = backup_img(vault, img)
    st = s2.stats
    assert s2.mode == "incremental" and s2.parent == s1.id
    assert 0 < st["chunks_new"] <= len(touched)
    assert st["bytes_added"] <= len(touched) * (BS + 1024)  # incompressible blocks, plus blob overhead
    assert data_bytes <= st["bytes_read"] <= data_bytes + 2 * BS * len(writes)

    # a third run with nothing changed adds nothing
    s3 = backup_img(vault, img)
    assert s3.stats["chunks_new"] == 0 and s3.stats["bytes_added"] == 0

    # each recovery point restores its own version
    out = tmp_path / "out.img"
    restore_to(vault, s2, img, out)
    assert_same_bytes(out, img)
    restore_to(vault, s1, img, out)  # the older point, over the newer restore
    assert_same_bytes(out, v1)
    assert os.stat(out).st_blocks * 512 <= data_bytes + 2 * BS * len(writes)


def test_growth_shrink_and_replacement(vault, tmp_path):
    img = str(tmp_path / "disk.img")
    versions: List[Tuple[Dict, bytes]] = []

    make_image(img, 6 * MiB + 123, [(0, rand(1, MiB)), (4 * MiB, rand(2, 300 * KiB))])
    versions.append((backup_img(vault, img), Path(img).read_bytes()))

    with open(img, "r+b") as f:  # grow: a hole, then new data at the end
        f.truncate(11 * MiB + 4567)
        f.seek(11 * MiB)
        f.write(rand(3, 4567))
        f.seek(100)
        f.write(b"changed")
    versions.append((backup_img(vault, img), Path(img).read_bytes()))

    with open(img, "r+b") as f:  # shrink into the middle of a block
        f.truncate(2 * MiB + 999)
    versions.append((backup_img(vault, img), Path(img).read_bytes()))

    with open(img, "r+b") as f:  # shrink to less than one block
        f.truncate(300)
    versions.append((backup_img(vault, img), Path(img).read_bytes()))

    # replaced by a different image (a new inode at the same path)
    other = make_image(tmp_path / "other.img", 3 * MiB + 1, [(MiB, rand(4, 2 * MiB + 1))])
    os.replace(other, img)
    versions.append((backup_img(vault, img), Path(img).read_bytes()))

    with open(img, "r+b") as f:  # and emptied
        f.truncate(0)
    versions.append((backup_img(vault, img), b""))

    assert [s.mode for s, _ in versions] == ["full"] + ["incremental"] * (len(versions) - 1)
    sizes = [image_desc(vault, s, img)["size"] for s, _ in versions]
    assert sizes == [len(d) for _, d in versions]

    # every point, oldest first and in a shuffled order, over whatever the last restore left
    out = tmp_path / "out.img"
    order = list(range(len(versions))) + random.Random(5).sample(range(len(versions)), len(versions))
    for i in order:
        snap, want = versions[i]
        restore_to(vault, snap, img, out)
        assert_same_bytes(out, want)

    # also through api.restore of each whole recovery point
    for i, (snap, want) in enumerate(versions):
        res = api.restore(vault, snap.id, str(tmp_path / f"t{i}"))
        assert res["errors"] == []
        assert_same_bytes(str(tmp_path / f"t{i}") + img, want)


def test_restore_is_sparse_where_source_had_holes(vault, tmp_path):
    img = make_image(tmp_path / "sparse.img", 64 * MiB,
                     [(0, rand(1, 256 * KiB)), (20 * MiB, rand(2, 512 * KiB)), (63 * MiB, rand(3, MiB))])
    src_blocks = os.stat(img).st_blocks
    snap = backup_img(vault, img)
    out = tmp_path / "out.img"
    restore_to(vault, snap, img, out)
    assert_same_bytes(out, img)
    st = os.stat(out)
    assert st.st_size == 64 * MiB
    # allocated no more than the source (plus a little rounding), far less than the apparent size
    assert st.st_blocks * 512 <= src_blocks * 512 + 2 * BS
    assert st.st_blocks * 512 < 4 * MiB
    # and each hole of the source that spans a whole block is a hole in the restore
    out_ext = extents(out)
    for a, b in [(256 * KiB, 20 * MiB), (20 * MiB + 512 * KiB, 63 * MiB)]:
        for x, y in out_ext:
            assert y <= a or x >= b, f"restored file has data at {x}..{y} inside the source hole {a}..{b}"

    res = api.restore(vault, snap.id, str(tmp_path / "t"))
    assert res["errors"] == []
    t = str(tmp_path / "t") + img
    assert_same_bytes(t, img)
    assert os.stat(t).st_blocks * 512 <= src_blocks * 512 + 2 * BS


# ---- the CLI: restore --to, --range, --verify, --target ------------------------------------------------
def _range_image(base: Path) -> str:
    """Data blocks with all-zero 4 KiB pages inside them, a zero block, holes, a partial last block."""
    blk_with_zero_pages = rand(1, BS)
    blk_with_zero_pages = blk_with_zero_pages[:8192] + bytes(16384) + blk_with_zero_pages[24576:]
    base.mkdir(exist_ok=True)
    return make_image(base / "disk.img", 10 * BS + 3000,
                      [(0, rand(2, BS)), (BS, blk_with_zero_pages), (2 * BS, bytes(BS)), (5 * BS, rand(3, 2 * BS)),
                       (10 * BS, rand(4, 3000))])


@pytest.fixture
def cli_vault(tmp_path):
    """A vault (made with fast KDF parameters through the API) holding one recovery point of an image."""
    v = api.init_vault(str(tmp_path / "vault"), PASSPHRASE, kdf=FAST_KDF, cache_dir=str(tmp_path / "cache"))
    img = _range_image(tmp_path / "src")
    snap = backup_img(v, img)
    v.close()
    return str(tmp_path / "vault"), img, snap


def test_cli_restore_to_file_and_verify(tmp_path, cli_vault):
    vault, img, snap = cli_vault
    out = tmp_path / "out.img"
    p = run_cli(tmp_path, "restore", "--vault", vault, "latest", "--to", out, "--verify")
    assert b"verified" in p.stdout
    assert subprocess.run(["cmp", img, str(out)]).returncode == 0
    # --image naming it explicitly, a recovery point by id prefix, --json output; over the first restore
    out.write_bytes(b"\xa5" * (20 * BS))
    p = run_cli(tmp_path, "restore", "--vault", vault, snap.id[:10], "--to", out, "--image", img, "--json")
    res = json.loads(p.stdout)
    assert res["snapshot"] == snap.id and res["to"] == str(out)
    assert subprocess.run(["cmp", img, str(out)]).returncode == 0
    assert_same_bytes(out, img)
    # SNAPSHOT:PATH names the image as --image does
    out.write_bytes(b"\xa5" * (20 * BS))
    p = run_cli(tmp_path, "restore", "--vault", vault, f"{snap.id[:10]}:{img}", "--to", out, "--json")
    assert json.loads(p.stdout)["image"] == str(img)
    assert_same_bytes(out, img)


RANGES = [(0, 10 * BS + 3000), (BS + 100, 3 * BS + 5), (BS + 8192, BS + 24576), (BS + 4096, BS + 28672),
          (2 * BS - 1, 6 * BS + 1), (7 * BS, 10 * BS + 2999), (10 * BS + 1, 10 * BS + 3000), (123, 123)]


@pytest.mark.parametrize("start,end", RANGES)
def test_restore_range_into_existing_file(vault, tmp_path, start, end):
    img = _range_image(tmp_path / "src")
    snap = backup_img(vault, img)
    size = os.path.getsize(img)
    out = tmp_path / "dest.img"
    old = b"\xa5" * (size + 5000)  # a pre-existing destination of non-zero bytes, longer than the image
    out.write_bytes(old)
    restore_to(vault, snap, img, out, byte_range=(start, end), verify=True)
    got = out.read_bytes()
    src = Path(img).read_bytes()
    assert len(got) == len(old)
    assert got[start:end] == src[start:end], "the range does not hold the image's bytes (zeros must be written)"
    assert got[:start] == old[:start] and got[end:] == old[end:], "bytes outside the range were touched"


def _flip(path, offset: int, value: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(value)


@pytest.mark.parametrize("workers", [1, 2])
def test_verify_image_detects_every_kind_of_difference(vault, tmp_path, workers):
    """verify_image hashes whole blocks in the pipeline and compares edges byte for byte: each kind of
    difference (a data block changed, data lost to zeros, data where the image has a zero block or a hole,
    a partial edge block changed, a short destination) is found, for a whole image and for ranges."""
    from recovault.jobs.image import ImageMap, verify_image
    img = _range_image(tmp_path / "src")
    snap = backup_img(vault, img)
    m = ImageMap(vault, image_desc(vault, snap, img))
    size = os.path.getsize(img)
    good = tmp_path / "good.img"
    restore_to(vault, snap, img, good)
    verify_image(m, str(good), 0, size, workers)  # identical: passes
    for start, end in RANGES:
        verify_image(m, str(good), start, end, workers)
    cases = {
        "data block changed": (5 * BS + 777, b"X", 0, size),
        "data lost to zeros": (0, bytes(BS), 0, size),
        "data in a zero block": (2 * BS + 5, b"\x01", 0, size),
        "data in a hole": (8 * BS, b"\x01", 0, size),
        "partial last block": (10 * BS + 2999, b"!", 0, size),
        "edge of a range": (BS + 150, b"?", BS + 100, 3 * BS + 5),
        "inside a range": (2 * BS + 10, b"?", BS + 100, 3 * BS + 5),
    }
    for what, (off, value, a, b) in cases.items():
        bad = tmp_path / "bad.img"
        bad.write_bytes(good.read_bytes())
        if bad.read_bytes()[off:off + len(value)] == value:
            value = bytes([value[0] ^ 0xFF]) + value[1:]
        _flip(bad, off, value)
        with pytest.raises(CorruptData, match="differs from the recovery point"):
            verify_image(m, str(bad), a, b, workers)
        verify_image(m, str(bad), 0, 0, workers)  # an empty range compares nothing
    holed = tmp_path / "holed.img"  # a hole punched where the image has data: read as zeros, must differ
    holed.write_bytes(good.read_bytes())
    subprocess.run(["fallocate", "--punch-hole", "--offset", str(5 * BS), "--length", str(BS), str(holed)],
                   check=True)
    with pytest.raises(CorruptData, match="differs from the recovery point"):
        verify_image(m, str(holed), 0, size, workers)
    short = tmp_path / "short.img"
    short.write_bytes(good.read_bytes()[:7 * BS])
    with pytest.raises(CorruptData, match="differs from the recovery point"):
        verify_image(m, str(short), 0, size, workers)


def test_restore_range_new_file_and_bad_ranges(vault, tmp_path):
    img = _range_image(tmp_path / "src")
    snap = backup_img(vault, img)
    size = os.path.getsize(img)
    src = Path(img).read_bytes()
    out = tmp_path / "new.img"
    restore_to(vault, snap, img, out, byte_range=(BS, 6 * BS), verify=True)
    got = out.read_bytes()
    assert got[BS:6 * BS] == src[BS:6 * BS]
    assert len(got) <= 6 * BS and got[:BS] == bytes(BS)  # nothing before the range was written
    for bad, why in [((size - 1, size + 1), "outside the image"), ((10, 5), "ends before it starts"),
                     ((-1, 3), "outside the image")]:
        dest = tmp_path / "bad.img"
        with pytest.raises(UsageError, match=why):
            restore_to(vault, snap, img, dest, byte_range=bad)
        assert not dest.exists(), f"range {bad}: a rejected range created the destination"


def test_cli_restore_range(tmp_path, cli_vault):
    vault, img, _ = cli_vault
    size = os.path.getsize(img)
    out = tmp_path / "dest.img"
    old = b"\xa5" * (size + 5000)
    out.write_bytes(old)
    start, end = BS + 100, 6 * BS + 1  # unaligned; spans zero pages, a zero block and holes
    run_cli(tmp_path, "restore", "--vault", vault, "latest", "--to", out, "--range", f"{start}:{end}", "--verify")
    assert subprocess.run(["cmp", "-i", f"{start}:{start}", "-n", str(end - start), img, str(out)]).returncode == 0
    got = out.read_bytes()
    assert got[:start] == old[:start] and got[end:] == old[end:], "bytes outside the range were touched"
    # hex bounds are accepted (int(x, 0)); a range outside the image is a usage error that writes nothing
    dest = tmp_path / "bad.img"
    p = run_cli(tmp_path, "restore", "--vault", vault, "latest", "--to", dest, "--range", f"0x10:{size + 1}",
                check=False)
    assert p.returncode == 2 and b"range" in p.stderr, p.stderr
    assert not dest.exists()


def test_cli_restore_target_places_image_under_its_path(tmp_path, cli_vault):
    vault, img, snap = cli_vault
    target = tmp_path / "restore-here"
    run_cli(tmp_path, "restore", "--vault", vault, "latest", "--target", target, "--verify")
    placed = Path(str(target) + os.path.abspath(img))
    assert placed.is_file()
    assert_same_bytes(placed, img)
    assert stat.S_IMODE(os.stat(placed).st_mode) == stat.S_IMODE(os.stat(img).st_mode)
    assert os.stat(placed).st_mtime_ns == os.stat(img).st_mtime_ns
    # only the image, selected by its path (API)
    v = api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "cache"))
    try:
        res = api.restore(v, "latest", str(tmp_path / "restore-2"), [img], verify=True)
    finally:
        v.close()
    assert res["errors"] == [] and res["stats"]["verified"] == 1
    assert_same_bytes(str(tmp_path / "restore-2") + os.path.abspath(img), img)


def test_cli_backup_image(tmp_path):
    vault = str(tmp_path / "vault")
    api.init_vault(vault, PASSPHRASE, kdf=FAST_KDF, cache_dir=str(tmp_path / "cache")).close()
    img = make_image(tmp_path / "d.img", 3 * MiB + 5, [(MiB, rand(1, MiB))])
    p = run_cli(tmp_path, "backup", "--vault", vault, "--image", img, "--image-block-size", str(BS), "--json")
    snap = json.loads(p.stdout)
    assert snap["paths"] == [img] and snap["stats"]["bytes_read"] <= MiB + 2 * BS
    v = api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "cache"))
    try:
        point = RecoveryPoint.from_json(snap)  # the printed document is the record's, with its id
        assert point == v.find_snapshot(snap["id"])
        assert image_desc(v, point, img)["bs"] == BS
        out = tmp_path / "o.img"
        restore_to(v, point, img, out)
    finally:
        v.close()
    assert_same_bytes(out, img)


def test_an_image_named_twice_is_backed_up_once(vault, tmp_path):
    img = make_image(tmp_path / "t.img", MiB, [(0, rand(62, MiB))])
    snap = api.backup(vault, [], images=[img, str(tmp_path / "." / "t.img")], image_block_size=BS)
    assert snap.paths == [img] and snap.stats["files_new"] == 1 and snap.stats["bytes_read"] == MiB


def test_an_image_inside_a_backed_up_directory_is_stored_once_as_an_image(vault, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"hello")
    img = make_image(src / "disk.img", MiB, [(0, rand(63, MiB))])
    snap = api.backup(vault, [str(src)], images=[img], image_block_size=BS)
    assert snap.stats["files_new"] == 2 and snap.stats["bytes_read"] == MiB + 5
    assert image_node(vault, snap, img).image is not None
    res = api.restore(vault, snap.id, str(tmp_path / "r"))
    assert not res["errors"]
    assert (tmp_path / "r" / str(src).lstrip("/") / "a.txt").read_bytes() == b"hello"
    assert_same_bytes(tmp_path / "r" / img.lstrip("/"), img)
    # again unchanged, then with the image changed: the directory keeps its image each time
    again = api.backup(vault, [str(src)], images=[img])
    assert again.stats["bytes_read"] == 0 and image_node(vault, again, img).image is not None
    with open(img, "r+b") as f:
        f.write(b"changed")
    third = api.backup(vault, [str(src)], images=[img])
    assert third.stats["chunks_new"] == 1 and image_node(vault, third, img).image is not None
    res = api.restore(vault, third.id, str(tmp_path / "r3"))
    assert not res["errors"]
    assert_same_bytes(tmp_path / "r3" / img.lstrip("/"), img)


def test_an_image_restored_deeper_than_path_max_under_a_target_is_verified(vault, tmp_path):
    """An image under --target whose restored path passes PATH_MAX: written and verified through the
    descriptor the restore opened beneath the target (nothing is opened by that path)."""
    long = "i" * 200
    src = tmp_path.joinpath(*[f"{i}{long}" for i in range(8)])  # the image's own path stays under PATH_MAX
    src.mkdir(parents=True)
    data = rand(64, 3 * BS + 100)
    img = make_image(src / "disk.img", len(data), [(0, data)])
    snap = api.backup(vault, [], images=[img], image_block_size=BS)
    target = tmp_path.joinpath("t", *[f"{i}{long}" for i in range(12)])
    target.mkdir(parents=True)
    assert len(str(target)) + len(img) > 4096
    res = api.restore(vault, snap.id, str(target), verify=True)
    assert res["errors"] == [] and res["stats"]["files"] == 1 and res["stats"]["verified"] == 1
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    for part in img.lstrip("/").split("/"):
        nfd = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | (0 if part == "disk.img" else os.O_DIRECTORY), dir_fd=fd)
        os.close(fd)
        fd = nfd
    with os.fdopen(fd, "rb") as f:
        assert f.read() == data


@pytest.mark.parametrize("bs", [-5, 1000, 65537, 128 << 20])
def test_bad_image_block_sizes_are_usage_errors(vault, tmp_path, bs):
    img = make_image(tmp_path / "b.img", MiB, [(0, rand(61, MiB))])
    with pytest.raises(UsageError, match="image block size"):
        api.backup(vault, [], images=[img], image_block_size=bs)
    assert vault.snapshots() == []


def test_cli_refuses_what_is_not_an_image(tmp_path):
    """A directory (its lseek END is a huge hash offset), a character device or a FIFO is not an image: one
    clear usage error, nothing stored."""
    vault = str(tmp_path / "vault")
    api.init_vault(vault, PASSPHRASE, kdf=FAST_KDF, cache_dir=str(tmp_path / "cache")).close()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, hint in [(tmp_path, "a directory"), ("/dev/null", "--stdin"), (fifo, "--stdin")]:
        p = run_cli(tmp_path, "backup", "--vault", vault, "--image", path, check=False)
        err = p.stderr.decode()
        assert p.returncode == 2 and "not a regular file or block device" in err and hint in err, err
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "cache")) as v:
        with pytest.raises(UsageError, match="not a regular file or block device"):  # the job's own check
            backup_image(v, "/dev/zero")
    v = api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "cache"))
    try:
        assert v.snapshots() == []
    finally:
        v.close()


# ---- block devices -------------------------------------------------------------------------------------
@pytest.fixture
def loop_device(tmp_path):
    """A loop device over a 4 MiB + 512 file filled with 0xee; skips when loop devices are not allowed."""
    if shutil.which("losetup") is None:
        pytest.skip("losetup is not installed")
    backing = tmp_path / "loop-backing"
    backing.write_bytes(b"\xee" * (4 * MiB + 512))
    p = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
    if p.returncode != 0 or not p.stdout.strip():
        pytest.skip(f"cannot set up a loop device (losetup -f --show: {p.stderr.strip() or p.returncode}); "
                    "needs root and /dev/loop-control")
    dev = p.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def test_restore_onto_block_device(tmp_path, loop_device):
    dev = loop_device
    dev_size = os.path.getsize(tmp_path / "loop-backing")
    vault = str(tmp_path / "vault")
    v = api.init_vault(vault, PASSPHRASE, kdf=FAST_KDF, cache_dir=str(tmp_path / "cache"))
    # zero blocks, holes and zero pages inside data blocks must all become zeros over the old 0xee bytes
    size = 3 * MiB + 4096 + 100
    img = make_image(tmp_path / "disk.img", size,
                     [(0, rand(1, 8192)), (16384, bytes(BS)), (MiB, rand(2, 3 * BS)), (size - 100, rand(3, 100))])
    snap = backup_img(v, img)
    v.close()
    run_cli(tmp_path, "restore", "--vault", vault, "latest", "--to", dev, "--verify")
    with open(dev, "rb") as f:
        got = f.read(dev_size)
    assert got[:size] == Path(img).read_bytes(), "the device does not hold the image"
    assert got[size:] == b"\xee" * (dev_size - size), "bytes after the image were touched"

    # a device in use (here held exclusively by another descriptor, as a mount holds it) is refused
    busy = os.open(dev, os.O_RDONLY | os.O_EXCL)
    try:
        p = run_cli(tmp_path, "restore", "--vault", vault, "latest", "--to", dev, check=False)
        assert p.returncode == 2 and b"is in use" in p.stderr, p.stderr
    finally:
        os.close(busy)

    v = api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "cache"))
    try:
        # a range onto the device
        fd = os.open(dev, os.O_WRONLY)
        try:
            os.pwrite(fd, b"\x11" * size, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        st = restore_to(v, snap, img, dev, byte_range=(BS - 10, MiB + BS), verify=True)
        assert st["zero_blocks"] >= 1
        with open(dev, "rb") as f:
            got = f.read(dev_size)
        src = Path(img).read_bytes()
        assert got[BS - 10:MiB + BS] == src[BS - 10:MiB + BS]
        assert got[:BS - 10] == b"\x11" * (BS - 10) and got[MiB + BS:size] == b"\x11" * (size - MiB - BS)

        # back up the device itself as an image, and restore it to a file
        s2 = api.backup(v, [], images=[dev], image_block_size=BS)
        node = image_node(v, s2, dev)
        assert node.size == dev_size
        out = tmp_path / "dev-copy.img"
        restore_image(v, node.image, str(out))
        assert_same_bytes(out, got)
        # under --target, a device's image comes back as a regular file
        res = api.restore(v, s2.id, str(tmp_path / "t"))
        assert res["errors"] == []
        assert stat.S_ISREG(os.stat(str(tmp_path / "t") + dev).st_mode)
        assert_same_bytes(str(tmp_path / "t") + dev, got)

        # a device smaller than the image is refused
        big = make_image(tmp_path / "big.img", dev_size + BS, [(0, b"x")])
        s3 = backup_img(v, big)
        with pytest.raises(UsageError, match="smaller"):
            restore_to(v, s3, big, dev)
    finally:
        v.close()


# ---- corruption ----------------------------------------------------------------------------------------
def test_corrupted_block_is_detected(tmp_path):
    vault = str(tmp_path / "vault")
    cache = str(tmp_path / "cache")
    v = api.init_vault(vault, PASSPHRASE, kdf=FAST_KDF, cache_dir=cache)
    img = make_image(tmp_path / "disk.img", 2 * MiB, [(0, rand(1, 2 * MiB))])
    backup_img(v, img)
    # a data blob (an image block) and its place in its pack
    blob_id, loc = next((i, l) for i, l in v.locations.items() if l.type == fmt.BLOB_DATA)
    pack_name = v.pack_name(loc.pack)
    v.close()
    pack = Path(vault, *pack_name.split("/"))
    assert pack.is_file()
    os.chmod(pack, 0o644)
    raw = bytearray(pack.read_bytes())
    raw[loc.offset + loc.length // 2] ^= 0x40
    pack.write_bytes(bytes(raw))

    p = run_cli(tmp_path, "restore", "--vault", vault, "latest", "--to", tmp_path / "out.img", check=False)
    assert p.returncode != 0
    err = p.stderr.decode()
    assert loc.pack.hex() in err and blob_id.hex()[:16] in err, err
    assert "Traceback" not in err

    p = run_cli(tmp_path, "check", "--vault", vault, "--read-data", check=False)
    assert p.returncode != 0
    assert loc.pack.hex() in p.stdout.decode() + p.stderr.decode()

    v = api.open_vault(vault, PASSPHRASE, cache_dir=cache)
    try:
        # a whole-point restore reports the damaged image (naming the pack) instead of crashing
        res = api.restore(v, "latest", str(tmp_path / "t"))
        assert len(res["errors"]) == 1 and loc.pack.hex() in res["errors"][0]["error"]
        # the structure alone is intact: without reading data, check passes
        assert Checker(v).run()["ok"]
    finally:
        v.close()


# ---- streams -------------------------------------------------------------------------------------------
def test_stdin_stream_roundtrip_and_dedup(tmp_path):
    vault = str(tmp_path / "vault")
    cache = str(tmp_path / "cache")
    api.init_vault(vault, PASSPHRASE, kdf=FAST_KDF, cache_dir=cache).close()
    rng = random.Random(7)
    data = b"".join(rng.randbytes(MiB) if i % 3 else (b"INSERT INTO t VALUES (%d);\n" % i) * 40000
                    for i in range(20))[:20_000_000]
    p = run_cli(tmp_path, "backup", "--vault", vault, "--stdin", "--stdin-name", "db/dump.sql", "--json",
                input=data)
    s1 = json.loads(p.stdout)
    assert s1["paths"] == ["/db/dump.sql"]
    assert s1["stats"]["bytes_read"] == len(data) and s1["stats"]["bytes_total"] == len(data)
    assert s1["stats"]["bytes_added"] > 5_000_000

    p = run_cli(tmp_path, "backup", "--vault", vault, "--stdin", "--stdin-name", "db/dump.sql", "--json",
                input=data)
    s2 = json.loads(p.stdout)
    assert s2["stats"]["bytes_read"] == len(data)
    assert s2["stats"]["chunks_new"] == 0 and s2["stats"]["bytes_added"] == 0

    v = api.open_vault(vault, PASSPHRASE, cache_dir=cache)
    try:
        for snap in (s1, s2):
            target = tmp_path / snap["id"][:8]
            res = api.restore(v, snap["id"], str(target), verify=True)
            assert res["errors"] == [] and res["stats"]["verified"] == 1
            out = target / "db" / "dump.sql"
            assert out.is_file()
            assert out.read_bytes() == data
    finally:
        v.close()


# ---- the pipeline is deterministic whatever the worker count ------------------------------------------
def test_block_map_same_on_one_and_two_workers(vault, tmp_path):
    # 3 pages of block map (PAGE_BLOCKS blocks each) with data scattered over them
    size = 2 * PAGE_BLOCKS * BS + 5 * BS + 321
    rng = random.Random(3)
    writes = [(rng.randrange(0, size - 300 * KiB), rand(i, rng.randrange(1, 300 * KiB))) for i in range(40)]
    writes.append((size - 321, rand(99, 321)))
    img = make_image(tmp_path / "w.img", size, writes)
    s2 = backup_img(vault, img, workers=2, mode="full")
    s1 = backup_img(vault, img, workers=1, mode="full")
    d1, d2 = image_desc(vault, s1, img), image_desc(vault, s2, img)
    assert len(d1["pages"]) == 3
    assert d1["pages"] == d2["pages"]
    assert d1 == d2
    # and both equal a block map computed independently, block by block
    m = ImageMap(vault, d1)
    with open(img, "rb") as f:
        for a, b in extents(img):
            for blk in range(a // BS, -(-b // BS)):
                f.seek(blk * BS)
                data = f.read(BS)
                want = None if data.count(0) == len(data) else vault.chunk_id(data)
                assert m.block_id(blk) == want, f"block {blk}"
    data_blocks = {blk for a, b in extents(img) for blk in range(a // BS, -(-b // BS))}
    assert all(m.block_id(blk) is None for blk in range(m.nblocks) if blk not in data_blocks)
    # a separate backup_image call on 2 workers gives the same descriptor too
    desc, _ = backup_image(vault, img, block_size=BS, workers=2)
    assert desc == d1
    out = tmp_path / "out.img"
    restore_image(vault, d2, str(out), workers=2)
    assert_same_bytes(out, img)


def test_unchanged_image_file_keeps_its_map_without_being_read(vault, tmp_path):
    img = make_image(tmp_path / "u.img", 4 << 20, [(0, rand(31, 1 << 20)), (3 << 20, rand(32, 12345))])
    first = api.backup(vault, [], images=[img], image_block_size=65536)
    again = api.backup(vault, [], images=[img], image_block_size=65536)
    assert again.stats["bytes_read"] == 0 and again.stats["files_unmodified"] == 1
    assert image_desc(vault, again, img) == image_desc(vault, first, img)
    with open(img, "r+b") as f:  # a write moves mtime/ctime: the image is read again, changes found
        f.seek(2 << 20)
        f.write(b"changed")
    third = api.backup(vault, [], images=[img], image_block_size=65536)
    assert third.stats["bytes_read"] > 0 and third.stats["chunks_new"] == 1
    restore_to(vault, third, img, tmp_path / "r.img")
    assert (tmp_path / "r.img").read_bytes() == open(img, "rb").read()
    full = api.backup(vault, [], images=[img], image_block_size=65536, mode="full")  # full trusts nothing
    assert full.stats["bytes_read"] > 0


def test_block_size_default_and_kept_from_the_previous_point(vault, tmp_path):
    from recovault.jobs.image import DEFAULT_BLOCK_SIZE, MAX_MAP_BLOCKS, default_block_size
    assert default_block_size(0) == DEFAULT_BLOCK_SIZE == 64 << 10
    assert default_block_size(DEFAULT_BLOCK_SIZE * MAX_MAP_BLOCKS) == DEFAULT_BLOCK_SIZE
    assert default_block_size(DEFAULT_BLOCK_SIZE * MAX_MAP_BLOCKS + 1) == 2 * DEFAULT_BLOCK_SIZE
    assert default_block_size(1 << 60) == 64 << 20
    img = make_image(tmp_path / "b.img", 4 << 20, [(0, rand(41, 4 << 20))])
    first = api.backup(vault, [], images=[img])
    assert image_desc(vault, first, img)["bs"] == 64 << 10
    big = api.backup(vault, [], images=[img], image_block_size=256 << 10, mode="full")
    assert image_desc(vault, big, img)["bs"] == 256 << 10 and big.stats["chunks_new"] == 16
    with open(img, "r+b") as f:
        f.seek(1 << 20)
        f.write(b"changed")
    # without --image-block-size, later backups (incremental, and full) keep the size of the previous point:
    # only the changed block is new
    inc = api.backup(vault, [], images=[img])
    assert image_desc(vault, inc, img)["bs"] == 256 << 10 and inc.stats["chunks_new"] == 1
    full = api.backup(vault, [], images=[img], mode="full")
    assert image_desc(vault, full, img)["bs"] == 256 << 10 and full.stats["chunks_new"] == 0
    restore_to(vault, full, img, tmp_path / "r.img")
    assert (tmp_path / "r.img").read_bytes() == open(img, "rb").read()


def test_image_that_shrinks_while_read_fails_clearly(vault, tmp_path, monkeypatch):
    """An image truncated between planning and reading must not be recorded with zeros for its lost end."""
    img = make_image(tmp_path / "s.img", 4 << 20, [(0, rand(51, 4 << 20))])
    real = type(vault).pipeline

    class Shrinking:
        def __init__(self, pipe):
            self.pipe = pipe

        def run(self, sources):
            os.truncate(img, 3 << 20)  # after the data ranges were planned, before they are read
            return self.pipe.run(sources)

    monkeypatch.setattr(type(vault), "pipeline", lambda self, **kw: Shrinking(real(self, **kw)))
    with pytest.raises(RecovaultError, match="shrank while it was being read"):
        api.backup(vault, [], images=[img])


def test_progress_events_cover_an_image_backup_and_restore(vault, tmp_path):
    """The CLI's progress bar is driven by these events: an image is one file of its data extents' bytes,
    advanced block batch by block batch; a restore to a file reports the bytes it writes."""
    img = _range_image(tmp_path / "src")
    events = []
    snap = api.backup(vault, [], images=[img], image_block_size=BS,
                      progress=lambda kind, info: events.append((kind, dict(info))))
    more = [i for k, i in events if k == "more"]
    assert more == [{"files": 1, "bytes": snap.stats["bytes_read"]}]
    assert sum(i["bytes"] for k, i in events if k == "bytes") == snap.stats["bytes_read"] > 0
    assert [i["path"] for k, i in events if k == "file"] == [img]
    events.clear()
    st = restore_to(vault, snap, img, tmp_path / "r.img", progress=lambda kind, info: events.append((kind, info)))
    assert events[0][0] == "plan" and events[-1][0] == "file"
    assert sum(i["bytes"] for k, i in events if k == "bytes") == st["bytes_written"] > 0


# ---- the C++ restore engine, from pack files and from fetched packs ----------------------------------------


class PathCounter:
    """Counts the blocks the engine restores (items handed to core.restore_blobs) and the ranged gets that
    fetch packs that are not local files for it (packfetch.PackCache)."""

    def __init__(self, monkeypatch) -> None:
        from recovault.packfetch import PackCache
        self.engine = self.fetched = 0
        run_engine, get = image_mod._run_engine, PackCache._get

        def counted_engine(batch, *a, **kw):
            self.engine += batch.data_blocks
            return run_engine(batch, *a, **kw)

        def counted_get(cache, *a):
            self.fetched += 1
            return get(cache, *a)

        monkeypatch.setattr(image_mod, "_run_engine", counted_engine)
        monkeypatch.setattr(PackCache, "_get", counted_get)


def no_local_paths(monkeypatch, vault, keep=lambda name: False) -> None:
    """The storage answers local_path like an object store (None), except for names `keep` accepts."""
    local = vault.storage.local_path
    monkeypatch.setattr(vault.storage, "local_path", lambda name: local(name) if keep(name) else None)


def restore_both(vault, desc, tmp_path, monkeypatch, prepare=None, **kw):
    """Restore from the pack files, then as from an object store (packs fetched); returns both destination
    paths with their stats."""
    outs = []
    for engine in (True, False):  # engine: packs read from their files; else fetched into memory first
        out = tmp_path / ("engine.img" if engine else "fetched.img")
        if prepare:
            prepare(out)
        with monkeypatch.context() as mp:
            count = PathCounter(mp)
            if not engine:
                no_local_paths(mp, vault)
            st = restore_image(vault, desc, str(out), **kw)
        assert count.engine == st["blocks"] and bool(count.fetched) == (not engine and st["blocks"] > 0), \
            "the wrong path ran"
        outs.append((out, st))
    return outs


@pytest.mark.parametrize("shape", list(_shapes()))
def test_engine_from_pack_files_and_from_fetched_packs_restores_the_same_file(vault, tmp_path, monkeypatch,
                                                                             shape):
    size, writes = _shapes()[shape]
    img = make_image(tmp_path / f"{shape}.img", size, writes)
    desc = image_desc(vault, backup_img(vault, img), img)
    (eng, st_e), (py, st_p) = restore_both(vault, desc, tmp_path, monkeypatch)
    assert_same_bytes(eng, img)
    assert_same_bytes(py, img)
    assert st_e == st_p
    assert extents(eng) == extents(py), "fetched packs left holes elsewhere than pack files"
    assert os.stat(eng).st_blocks == os.stat(py).st_blocks


@pytest.mark.parametrize("start,end", RANGES + [(0, 10 * BS + 3000), (3 * BS - 5, 3 * BS + 5)])
def test_engine_ranges_over_an_existing_file_from_files_and_fetched(vault, tmp_path, monkeypatch, start, end):
    img = _range_image(tmp_path / "src")
    desc = image_desc(vault, backup_img(vault, img), img)
    size = os.path.getsize(img)
    old = rand(77, size + 5000)  # random old bytes: zeros from the image must overwrite them
    want = bytearray(old)
    want[start:end] = Path(img).read_bytes()[start:end]
    outs = restore_both(vault, desc, tmp_path, monkeypatch, prepare=lambda p: p.write_bytes(old),
                        byte_range=(start, end))
    for out, _ in outs:
        assert out.read_bytes() == bytes(want)
    assert outs[0][1] == outs[1][1]


def test_engine_batches_with_local_and_fetched_packs_mixed(tmp_path, monkeypatch):
    """Many small packs, small engine batches, and only some packs local: each batch goes to the engine,
    reading local packs from their files and fetching the others; the output is the image either way."""
    v = api.init_vault(str(tmp_path / "vault"), PASSPHRASE, kdf=FAST_KDF, cache_dir=str(tmp_path / "cache"),
                       settings=Settings(pack_size=200 * KiB))
    try:
        rng = random.Random(8)
        size = 300 * BS + 999
        writes = [(rng.randrange(0, size - 3 * BS), rand(i, rng.randrange(1, 3 * BS))) for i in range(60)]
        img = make_image(tmp_path / "many.img", size, writes)
        desc = image_desc(v, backup_img(v, img), img)
        assert len({l.pack for l in v.locations.values() if l.type == fmt.BLOB_DATA}) > 20
        monkeypatch.setattr(image_mod, "ENGINE_BATCH", 7)
        count = PathCounter(monkeypatch)
        no_local_paths(monkeypatch, v, keep=lambda name: int(name[-1], 16) % 4 != 0)
        out = tmp_path / "out.img"
        st = restore_image(v, desc, str(out), verify=True)
        assert_same_bytes(out, img)
        assert count.fetched > 0 and count.engine == st["blocks"]
        # and a range into an existing file, across batches of both kinds
        out.write_bytes(b"\x5a" * size)
        restore_image(v, desc, str(out), byte_range=(BS // 2, size - 7), verify=True)
        got, src = out.read_bytes(), Path(img).read_bytes()
        assert got[BS // 2:size - 7] == src[BS // 2:size - 7]
        assert got[:BS // 2] == b"\x5a" * (BS // 2) and got[size - 7:] == b"\x5a" * 7
    finally:
        v.close()


def test_engine_reports_progress_in_bytes(vault, tmp_path):
    size, writes = _shapes()["holes"]
    img = make_image(tmp_path / "p.img", size, writes)
    desc = image_desc(vault, backup_img(vault, img), img)
    events = []
    st = restore_image(vault, desc, str(tmp_path / "out.img"), progress=lambda kind, info: events.append((kind, info)))
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["plan", "more"] and kinds[-1] == "file" and set(kinds[2:-1]) == {"bytes"}
    written = sum(info["bytes"] for kind, info in events if kind == "bytes")
    assert written == st["bytes_written"] == events[1][1]["bytes"]  # the total announced is what gets written


def _damage(tmp_path, how):
    """A vault with one image backed up, then one data blob's pack damaged `how`; returns what to expect."""
    vault = str(tmp_path / "vault")
    cache = str(tmp_path / "cache")
    v = api.init_vault(vault, PASSPHRASE, kdf=FAST_KDF, cache_dir=cache)
    img = make_image(tmp_path / "disk.img", 2 * MiB + 100, [(0, rand(1, 2 * MiB + 100))])
    snap = backup_img(v, img)
    desc = image_desc(v, snap, img)
    m = ImageMap(v, desc)
    block = 17
    blob_id = m.block_id(block)
    loc = v.locate(blob_id)
    name = v.pack_name(loc.pack)
    v.close()
    pack = Path(vault, *name.split("/"))
    os.chmod(pack, 0o644)
    raw = bytearray(pack.read_bytes())
    if how == "tamper":
        raw[loc.offset + loc.length // 3] ^= 0x02
        pack.write_bytes(bytes(raw))
    elif how == "truncate":  # cut inside the last blob of the pack, so that one is cut short
        last = max((l for l in v.locations.values() if l.pack == loc.pack), key=lambda l: l.offset)
        blob_id = next(i for i, l in v.locations.items() if l == last)
        block = next(b for b in range(m.nblocks) if m.block_id(b) == blob_id)
        pack.write_bytes(bytes(raw[:last.offset + last.length - 100]))
    else:
        pack.unlink()
    return vault, cache, desc, block, blob_id, name


@pytest.mark.parametrize("engine", [True, False])
def test_tampered_block_named_from_pack_files_and_fetched(tmp_path, monkeypatch, engine):
    vault, cache, desc, block, blob_id, name = _damage(tmp_path, "tamper")
    v = api.open_vault(vault, PASSPHRASE, cache_dir=cache)
    try:
        if not engine:
            no_local_paths(monkeypatch, v)
        with pytest.raises(CorruptData) as ei:
            restore_image(v, desc, str(tmp_path / "out.img"))
    finally:
        v.close()
    msg = str(ei.value)
    assert name in msg and blob_id.hex()[:16] in msg and "tampered" in msg, msg
    assert f"(image block {block})" in msg, msg


@pytest.mark.parametrize("engine", [True, False])
def test_truncated_and_missing_pack_are_named(tmp_path, monkeypatch, engine):
    vault, cache, desc, block, blob_id, name = _damage(tmp_path / "t", "truncate")
    v = api.open_vault(vault, PASSPHRASE, cache_dir=cache)
    if not engine:
        no_local_paths(monkeypatch, v)
    try:
        with pytest.raises(CorruptData, match="truncated") as ei:
            restore_image(v, desc, str(tmp_path / "out.img"))
        assert name in str(ei.value) and blob_id.hex()[:16] in str(ei.value) and f"block {block}" in str(ei.value)
    finally:
        v.close()
    vault, cache, desc, block, blob_id, name = _damage(tmp_path / "m", "missing")
    v = api.open_vault(vault, PASSPHRASE, cache_dir=cache)
    if not engine:
        no_local_paths(monkeypatch, v)
    try:
        with pytest.raises(ObjectMissing, match="missing") as ei:
            restore_image(v, desc, str(tmp_path / "out.img"))
        assert name in str(ei.value)
    finally:
        v.close()


@pytest.mark.parametrize("engine", [True, False])
def test_full_target_is_one_storage_error(tmp_path, monkeypatch, small_tmpfs, engine):
    vault = str(tmp_path / "vault")
    v = api.init_vault(vault, PASSPHRASE, kdf=FAST_KDF, cache_dir=str(tmp_path / "cache"))
    try:
        img = make_image(tmp_path / "disk.img", 4 * MiB, [(0, rand(1, 3 * MiB))])
        snap = backup_img(v, img)
        desc = image_desc(v, snap, img)
        if not engine:
            no_local_paths(monkeypatch, v)
        out = small_tmpfs / "out.img"
        with pytest.raises(TargetFull, match="no space left on the restore target") as ei:
            restore_image(v, desc, str(out))
        assert str(out) in str(ei.value) and isinstance(ei.value, StorageError)
        # inside a whole recovery point restore, the restore stops with restore.py's one message
        with pytest.raises(StorageError, match="no space left on the restore target"):
            api.restore(v, snap.id, str(small_tmpfs / "t"))
    finally:
        v.close()
    if engine:  # and the CLI: one line, a full disk's own exit code (errors.NoSpace, 24), no traceback
        p = run_cli(tmp_path, "restore", "--vault", vault, "latest", "--to", small_tmpfs / "cli.img", check=False)
        err = p.stderr.decode()
        assert p.returncode == TargetFull.exit_code == 24 and "no space left on the restore target" in err, err
        assert "Traceback" not in err
