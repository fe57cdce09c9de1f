"""`recovault mount`: a recovery point as a read-only FUSE file system (recovault.mount).

One vault and one recovery point (a source tree, a plain disk image and a small ext4 image) are served by
`python -m recovault.cli mount` for the whole module; the tests read through the mount point and compare
with the sources. The whole module is skipped where FUSE is not usable (no pyfuse3, /dev/fuse or
fusermount3).
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

import recovault

try:
    import pyfuse3  # noqa: F401
    _FUSE_PROBLEM: Optional[str] = None
except ImportError as e:  # pragma: no cover - depends on the machine
    _FUSE_PROBLEM = f"pyfuse3 cannot be imported ({e}); install recovault[fuse]"
if _FUSE_PROBLEM is None and not os.path.exists("/dev/fuse"):
    _FUSE_PROBLEM = "/dev/fuse is missing (no FUSE in this kernel/container)"
if _FUSE_PROBLEM is None and shutil.which("fusermount3") is None:
    _FUSE_PROBLEM = "fusermount3 is not on PATH (apt-get install fuse3)"
if _FUSE_PROBLEM:
    pytest.skip(_FUSE_PROBLEM, allow_module_level=True)

from recovault import api  # noqa: E402
from recovault.jobs.image import restore_image  # noqa: E402
from recovault.mount import _BlobCache  # noqa: E402
from recovault.mount_layout import time_name  # noqa: E402
from recovault.paths import split_path  # noqa: E402
from recovault.timefmt import parse_time  # noqa: E402
from recovault.vault.records import RecoveryPoint  # noqa: E402
from recovault.vault.tree import node_map  # noqa: E402

PASSPHRASE = "correct horse battery staple"
KiB, MiB = 1 << 10, 1 << 20
IMG_BS = 64 << 10
PYTHONPATH = str(Path(recovault.__file__).resolve().parent.parent)
# an ext4 file system image holds a copy of this part of the source tree
EXT4_FILES = [b"big/multi-chunk-5m.bin", b"docs/readme.txt", b"docs/nested/deeper/small.bin", b"empty"]


def rand(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def cli_env(home: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=PYTHONPATH, RECOVAULT_PASSPHRASE=PASSPHRASE, HOME=str(home / "home"),
               XDG_CACHE_HOME=str(home / "xdg-cache"))
    env.pop("RECOVAULT_VAULT", None)
    return env


def run_cli(home: Path, *args, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "recovault.cli", *map(str, args)], capture_output=True,
                       env=cli_env(home), timeout=120)
    if check and p.returncode != 0:
        pytest.fail(f"recovault {' '.join(map(str, args))} exited {p.returncode}:\n"
                    f"{p.stderr.decode(errors='replace')}")
    return p


def build_source(src: Path) -> None:
    """Files of several sizes (several multi-chunk ones with a 256 KiB average chunk), text, an empty file,
    a sparse file, symlinks, a hard link, a non-UTF-8 name, modes and mtimes to compare."""
    files = {
        b"empty": b"",
        b"one-byte": b"x",
        b"page-minus-one.bin": rand(1, 4095),
        b"docs/readme.txt": b"".join(b"line %d of the readme, some text to compress\n" % i for i in range(3000)),
        b"docs/nested/deeper/small.bin": rand(2, 100 * KiB),
        b"big/multi-chunk-3m.bin": rand(3, 3 * MiB),
        b"big/multi-chunk-5m.bin": rand(4, 5 * MiB + 17),
        b"big/repetitive-2m.bin": (rand(5, 64 * KiB) * 32)[: 2 * MiB - 3],
        b"caf\xe9-latin1.txt": b"non-UTF-8 name\n",
    }
    for rel, data in files.items():
        p = os.path.join(os.fsencode(src), rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    with open(os.path.join(os.fsencode(src), b"sparse.bin"), "wb") as f:
        f.truncate(3 * MiB)
        f.seek(MiB + 5)
        f.write(rand(6, 70 * KiB))
    os.makedirs(src / "empty-dir")
    os.link(src / "big" / "multi-chunk-3m.bin", src / "hardlink-to-3m.bin")
    os.symlink("docs/readme.txt", src / "link-relative")
    os.symlink("/etc/hostname-that-does-not-exist", src / "link-dangling")
    os.symlink("nested/deeper", src / "docs" / "link-to-dir")
    os.chmod(src / "one-byte", 0o600)
    os.chmod(src / "page-minus-one.bin", 0o751)
    os.chmod(src / "docs" / "nested", 0o700)
    os.chmod(src / "big" / "multi-chunk-5m.bin", 0o444)
    rng = random.Random(9)
    for dirpath, dirnames, filenames in os.walk(os.fsencode(src), topdown=False):
        for name in filenames + dirnames:
            p = os.path.join(dirpath, name)
            t = 1_500_000_000 * 10**9 + rng.randrange(10**17)
            os.utime(p, ns=(t, t + 123), follow_symlinks=False)
    os.utime(src, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


class Mounted:
    def __init__(self, mnt: Path, src: Path, img: Path, ext4: Optional[Path], vault: str, home: Path,
                 snap_id: str) -> None:
        self.mnt, self.src, self.img, self.ext4, self.vault, self.home, self.snap_id = (
            mnt, src, img, ext4, vault, home, snap_id)

    def view(self, path) -> bytes:
        """The FUSE path of a backed-up absolute path."""
        return os.fsencode(self.mnt) + os.fsencode(os.path.abspath(path))


def start_mount(home: Path, vault: str, snapshot: Optional[str], mnt: Path, *options: str) -> subprocess.Popen:
    """`recovault mount [OPTIONS] [SNAPSHOT] MNT` until MNT is a mount point; stdout and stderr go to
    mount-MNT.log (stdout alone to mount-MNT.out with --json)."""
    log = open(home / f"mount-{mnt.name}.log", "wb")
    out = open(home / f"mount-{mnt.name}.out", "wb") if "--json" in options else log
    args = [*options, *([snapshot] if snapshot else []), str(mnt)]
    proc = subprocess.Popen([sys.executable, "-m", "recovault.cli", "mount", "--vault", vault, *args],
                            stdout=out, stderr=log, env=cli_env(home))
    out.close()
    if not log.closed:
        log.close()
    deadline = time.monotonic() + 10
    while not os.path.ismount(mnt):
        if proc.poll() is not None:
            out = (home / f"mount-{mnt.name}.log").read_text(errors="replace")
            pytest.fail(f"recovault mount exited {proc.returncode} before mounting:\n{out}")
        if time.monotonic() > deadline:
            stop_mount(proc, mnt)
            pytest.fail(f"{mnt} did not become a mount point within 10 s")
        time.sleep(0.05)
    return proc


def stop_mount(proc: subprocess.Popen, mnt: Path) -> None:
    if os.path.ismount(mnt):
        r = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        if r.returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def mounted(tmp_path_factory):
    base = tmp_path_factory.mktemp("mount")
    src = base / "src"
    build_source(src)
    img = base / "disk.img"
    with open(img, "wb") as f:  # a plain disk image: holes, data, a zero run, a partial last block
        f.truncate(6 * MiB + 1000)
        for off, data in [(0, rand(20, 3000)), (MiB + 7, rand(21, 300 * KiB)), (3 * MiB, bytes(200 * KiB)),
                          (6 * MiB, rand(22, 1000))]:
            f.seek(off)
            f.write(data)
    ext4 = None
    if shutil.which("mke2fs"):
        ext4_src = base / "ext4-src"
        for rel in EXT4_FILES:
            s, d = os.path.join(os.fsencode(src), rel), os.path.join(os.fsencode(ext4_src), rel)
            os.makedirs(os.path.dirname(d), exist_ok=True)
            shutil.copyfile(s, d)
        ext4 = base / "fs.img"
        r = subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(ext4_src), str(ext4), "64M"],
                           capture_output=True)
        if r.returncode != 0:
            ext4 = None  # the ext4 tests skip with this reason
            (base / "mke2fs.err").write_bytes(r.stderr)

    vault = str(base / "vault")
    run_cli(base, "init", "--vault", vault, "--chunk-min", "65536", "--chunk-avg", "262144",
            "--chunk-max", "1048576", "--json")
    args = ["backup", "--vault", vault, src, "--image", img, "--image-block-size", str(IMG_BS), "--json"]
    if ext4 is not None:
        args += ["--image", ext4]
    p = run_cli(base, *args)
    snap = json.loads(p.stdout)
    assert snap["stats"]["errors"] == 0

    mnt = base / "mnt"
    mnt.mkdir()
    proc = start_mount(base, vault, snap["id"][:12], mnt)
    try:
        yield Mounted(mnt, src, img, ext4, vault, base, snap["id"])
    finally:
        stop_mount(proc, mnt)
    assert not os.path.ismount(mnt)
    log = (base / f"mount-{mnt.name}.log").read_text(errors="replace")
    assert proc.returncode == 0, f"recovault mount exited {proc.returncode} after fusermount3 -u:\n{log}"
    assert "Traceback" not in log, log


# ---- the tree ------------------------------------------------------------------------------------------
def _walk(root: bytes) -> Dict[bytes, os.stat_result]:
    out = {b"": os.lstat(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = os.lstat(p)
    return out


def test_tree_is_byte_identical(mounted):
    src = os.fsencode(mounted.src)
    view = mounted.view(mounted.src)
    want, got = _walk(src), _walk(view)
    assert sorted(got) == sorted(want)
    for rel, s in want.items():
        g = got[rel]
        where = rel.decode(errors="replace") or "."
        assert stat.S_IFMT(g.st_mode) == stat.S_IFMT(s.st_mode), where
        assert stat.S_IMODE(g.st_mode) == stat.S_IMODE(s.st_mode), f"{where}: mode {g.st_mode:o} != {s.st_mode:o}"
        assert g.st_mtime_ns == s.st_mtime_ns, f"{where}: mtime"
        assert (g.st_uid, g.st_gid) == (s.st_uid, s.st_gid), where
        if stat.S_ISREG(s.st_mode):
            assert g.st_size == s.st_size, where
            with open(os.path.join(src, rel), "rb") as a, open(os.path.join(view, rel), "rb") as b:
                assert b.read() == a.read(), f"{where}: content differs"
        elif stat.S_ISLNK(s.st_mode):
            assert os.readlink(os.path.join(view, rel)) == os.readlink(os.path.join(src, rel)), where
            assert g.st_size == s.st_size, where
    # following a symlink inside the mount
    assert (Path(os.fsdecode(view)) / "link-relative").read_bytes() == (mounted.src / "docs/readme.txt").read_bytes()
    assert sorted(os.listdir(os.path.join(view, b"docs/link-to-dir"))) == [b"small.bin"]
    assert not os.path.exists(os.path.join(view, b"link-dangling"))
    # the ancestors of the backed-up path are there too, and unknown names are ENOENT
    assert os.path.isdir(os.fsencode(mounted.mnt) + os.fsencode(os.path.dirname(mounted.src)))
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(view, b"no-such-file"))


def test_random_reads(mounted):
    rng = random.Random(1)
    names = [b"big/multi-chunk-3m.bin", b"big/multi-chunk-5m.bin", b"big/repetitive-2m.bin",
             b"docs/readme.txt", b"sparse.bin", b"page-minus-one.bin", b"hardlink-to-3m.bin"]
    src, view = os.fsencode(mounted.src), mounted.view(mounted.src)
    for name in names:
        data = Path(os.fsdecode(os.path.join(src, name))).read_bytes()
        fd = os.open(os.path.join(view, name), os.O_RDONLY)
        try:
            for _ in range(40):
                off = rng.randrange(0, len(data) + 100)
                n = rng.choice([1, 7, 4096, 65536 + 3, 300_000, 1 << 20])
                assert os.pread(fd, n, off) == data[off:off + n], f"{name!r} at {off}+{n}"
            assert os.pread(fd, 10, len(data)) == b""
            assert os.pread(fd, 10, len(data) + 12345) == b""
        finally:
            os.close(fd)


def test_concurrent_reads(mounted):
    """Several threads reading different chunks at once (the FUSE server reads on worker threads)."""
    names = [b"big/multi-chunk-3m.bin", b"big/multi-chunk-5m.bin", b"big/repetitive-2m.bin"]
    src, view = os.fsencode(mounted.src), mounted.view(mounted.src)
    datas = {n: Path(os.fsdecode(os.path.join(src, n))).read_bytes() for n in names}
    errors: List[str] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        fds = {n: os.open(os.path.join(view, n), os.O_RDONLY | getattr(os, "O_DIRECT", 0)) for n in names}
        try:
            for _ in range(60):
                n = rng.choice(names)
                off = rng.randrange(0, len(datas[n])) & ~4095
                try:
                    got = os.pread(fds[n], 64 * KiB, off)
                except OSError as e:
                    errors.append(f"{n!r}@{off}: {e}")
                    return
                if got != datas[n][off:off + 64 * KiB]:
                    errors.append(f"{n!r}@{off}: wrong bytes")
        finally:
            for fd in fds.values():
                os.close(fd)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert os.path.ismount(mounted.mnt), "the FUSE server died"


def test_writes_fail(mounted):
    view = mounted.view(mounted.src)
    refused = (errno.EROFS, errno.EACCES, errno.EPERM)
    f = os.path.join(view, b"docs/readme.txt")
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND, os.O_WRONLY | os.O_TRUNC):
        with pytest.raises(OSError) as ei:
            os.close(os.open(f, flags))
        assert ei.value.errno in refused
    attempts = [
        lambda: os.close(os.open(os.path.join(view, b"new-file"), os.O_WRONLY | os.O_CREAT, 0o644)),
        lambda: os.mkdir(os.path.join(view, b"new-dir")),
        lambda: os.unlink(f),
        lambda: os.rename(f, os.path.join(view, b"renamed")),
        lambda: os.chmod(f, 0o777),
        lambda: os.truncate(f, 0),
        lambda: os.symlink(b"x", os.path.join(view, b"new-link")),
        lambda: os.utime(f, ns=(0, 0)),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as ei:
            attempt()
        assert ei.value.errno in refused, ei.value
    assert (mounted.src / "docs/readme.txt").read_bytes() == Path(os.fsdecode(f)).read_bytes()
    assert not os.path.lexists(os.path.join(view, b"new-file"))


def test_statfs_and_listing_of_root(mounted):
    os.statvfs(mounted.mnt)
    top = os.listdir(mounted.mnt)
    assert top == [os.fsdecode(os.path.abspath(mounted.src)).split("/")[1]]


# ---- images --------------------------------------------------------------------------------------------
def test_image_reads_identical_to_restore(mounted):
    view = mounted.view(mounted.img)
    assert os.path.getsize(view) == os.path.getsize(mounted.img)
    assert stat.S_ISREG(os.stat(view).st_mode)
    out = mounted.home / "restored-disk.img"
    v = api.open_vault(mounted.vault, PASSPHRASE, cache_dir=str(mounted.home / "api-cache"))
    try:
        snap = v.find_snapshot(mounted.snap_id)
        nodes = v.load_nodes(bytes.fromhex(snap.tree))
        node = None
        for part in split_path(os.path.abspath(mounted.img)):
            node = node_map(nodes)[part]
            if node.subtree is not None:
                nodes = v.load_nodes(bytes.fromhex(node.subtree))
        restore_image(v, node.image, str(out))
    finally:
        v.close()
    through_fuse = Path(os.fsdecode(view)).read_bytes()
    assert through_fuse == out.read_bytes()
    assert through_fuse == mounted.img.read_bytes()
    rng = random.Random(3)
    data = through_fuse
    fd = os.open(view, os.O_RDONLY)
    try:
        for _ in range(50):
            off = rng.randrange(0, len(data) + 10)
            n = rng.randrange(1, 3 * IMG_BS)
            assert os.pread(fd, n, off) == data[off:off + n]
    finally:
        os.close(fd)


def _need_ext4(mounted) -> None:
    if mounted.ext4 is None:
        err = mounted.home / "mke2fs.err"
        pytest.skip("mke2fs is not installed" if not err.exists() else
                    f"mke2fs -d failed: {err.read_text(errors='replace').strip()}")


def test_extract_file_from_ext4_image_with_debugfs(mounted, tmp_path):
    _need_ext4(mounted)
    if shutil.which("debugfs") is None:
        pytest.skip("debugfs (e2fsprogs) is not installed")
    view = os.fsdecode(mounted.view(mounted.ext4))
    assert os.path.getsize(view) == 64 * MiB
    for rel in (b"big/multi-chunk-5m.bin", b"docs/nested/deeper/small.bin"):
        out = tmp_path / os.path.basename(os.fsdecode(rel))
        r = subprocess.run(["debugfs", "-R", f"dump /{os.fsdecode(rel)} {out}", view], capture_output=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert out.exists(), f"debugfs did not extract /{rel!r}: {r.stderr!r}"
        assert out.read_bytes() == Path(os.fsdecode(os.path.join(os.fsencode(mounted.src), rel))).read_bytes()
    r = subprocess.run(["debugfs", "-R", "ls -p /docs", view], capture_output=True, timeout=60)
    assert r.returncode == 0 and b"readme.txt" in r.stdout


def test_loop_mount_of_ext4_image_through_fuse(mounted, tmp_path):
    _need_ext4(mounted)
    if os.geteuid() != 0:
        pytest.skip("mount -o loop needs root")
    view = os.fsdecode(mounted.view(mounted.ext4))
    mp = tmp_path / "ext4"
    mp.mkdir()
    r = subprocess.run(["mount", "-o", "loop,ro", view, str(mp)], capture_output=True, timeout=60)
    if r.returncode != 0:
        pytest.skip(f"the kernel refused to loop-mount the FUSE-exposed image: "
                    f"{r.stderr.decode(errors='replace').strip()}")
    try:
        for rel in EXT4_FILES:
            got = Path(os.fsdecode(os.path.join(os.fsencode(mp), rel))).read_bytes()
            assert got == Path(os.fsdecode(os.path.join(os.fsencode(mounted.src), rel))).read_bytes(), rel
    finally:
        u = subprocess.run(["umount", str(mp)], capture_output=True, timeout=60)
        if u.returncode != 0:
            subprocess.run(["umount", "-l", str(mp)], capture_output=True, timeout=60)


# ---- the server's blob cache ---------------------------------------------------------------------------
def test_blob_cache_is_thread_safe():
    """FUSE reads run on worker threads: the LRU cache must survive concurrent hits and evictions (an
    exception other than FUSEError in a handler would end pyfuse3's main loop, i.e. the mount)."""

    class FakeVault:
        def read_blob(self, blob_id: bytes) -> bytes:
            return blob_id * 3

    cache = _BlobCache(FakeVault(), max_bytes=12)  # 4 blobs of 3 bytes
    errors: List[str] = []
    stop = time.monotonic() + 1.0

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while time.monotonic() < stop:
                for _ in range(500):
                    k = bytes([rng.randrange(6)])
                    assert cache.get(k) == k * 3
        except Exception as e:  # noqa: BLE001 - any exception is the bug
            errors.append(repr(e))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert len(cache.data) <= 4 and cache.bytes == sum(len(v) for v in cache.data.values()) <= 12


def test_blob_cache_is_bounded_in_bytes():
    class FakeVault:
        def read_blob(self, blob_id: bytes) -> bytes:
            return bytes(int.from_bytes(blob_id, "big"))  # key n -> n bytes

    def key(n: int) -> bytes:
        return n.to_bytes(2, "big")

    cache = _BlobCache(FakeVault(), max_bytes=1000)
    for _ in range(3):
        cache.get(key(300))
    assert cache.bytes == 300 and list(cache.data) == [key(300)]
    for n in (301, 302, 303):  # 1206 bytes: the least recently used (300) goes
        cache.get(key(n))
    assert list(cache.data) == [key(301), key(302), key(303)] and cache.bytes == 906
    cache.get(key(301))  # a hit moves it to the end
    cache.get(key(400))  # 1306: 302 and then 303 go
    assert list(cache.data) == [key(301), key(400)] and cache.bytes == 701
    cache.get(key(5000))  # larger than the whole budget: kept alone
    assert list(cache.data) == [key(5000)] and cache.bytes == 5000


# ---- failures while serving ------------------------------------------------------------------------------
def test_a_failing_call_is_an_eio_reported_through_on_event_never_printed(capfd):
    """A damaged tree fails each call that needs it with EIO (the second too: a failed listing must not
    leave the directory looking empty) and is reported through on_event ("error"); the library prints
    nothing (the CLI shows the events as warnings)."""
    import trio

    from recovault.errors import CorruptData
    from recovault.mount import RecoveryPointFS
    from recovault.vault.records import RecoveryPoint

    class DamagedVault:
        def load_nodes(self, tree_id: bytes):
            raise CorruptData(f"tree {tree_id.hex()[:16]} does not parse")

    events: List = []
    point = RecoveryPoint(time="2026-11-26T00:00:00.000000Z", host="h", paths=["/"], tree="ab" * 32, id="cd" * 32)
    fs = RecoveryPointFS(DamagedVault(), point, on_event=lambda kind, info: events.append((kind, info)))
    for call in (lambda: fs.lookup(pyfuse3.ROOT_INODE, b"etc"), lambda: fs.readdir(pyfuse3.ROOT_INODE, 0, None)):
        with pytest.raises(pyfuse3.FUSEError) as err:
            trio.run(call)
        assert err.value.errno == errno.EIO
    assert [k for k, _ in events] == ["error", "error"]
    assert all("tree abababababababab does not parse" in i["message"] for _, i in events)
    assert events[0][1]["message"].startswith("mount: lookup in inode 1")
    out = capfd.readouterr()
    assert out.out == "" and out.err == ""


# ---- the browsable mount: every recovery point (`recovault mount MOUNTPOINT`) --------------------------------------
ROOT = Path(__file__).resolve().parent.parent


class Browsed:
    def __init__(self, mnt: Path, home: Path, vault: str, src: Path, points: Dict[str, dict], info: dict) -> None:
        self.mnt, self.home, self.vault, self.src, self.points, self.info = mnt, home, vault, src, points, info

    def path(self, rel: str) -> str:
        return os.path.join(str(self.mnt), rel)


@pytest.fixture(scope="module")
def browsed(tmp_path_factory):
    """Three points: web1 twice (tag daily; a.txt changes between them), db once (tags daily and weekly),
    served by `recovault mount --json MNT`."""
    base = tmp_path_factory.mktemp("browse")
    src = base / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "b.bin").write_bytes(rand(30, 300 * KiB))
    vault = str(base / "vault")
    run_cli(base, "init", "--vault", vault, "--json")
    points = {}
    for label, text, host, tags, when in (("web1-old", "v1", "web1", ["daily"], "2026-11-20 08:00:00"),
                                          ("db", "db", "db", ["daily", "weekly"], "2026-11-21 08:00:00"),
                                          ("web1-new", "v2", "web1", ["daily"], "2026-11-22 09:30:15")):
        (src / "a.txt").write_text(text)
        tag_args = [a for t in tags for a in ("--tag", t)]
        p = run_cli(base, "backup", "--vault", vault, "--host", host, *tag_args, "--time", when, src, "--json")
        points[label] = json.loads(p.stdout)
    mnt = base / "mnt"
    mnt.mkdir()
    proc = start_mount(base, vault, None, mnt, "--json")
    try:
        info = json.loads((base / f"mount-{mnt.name}.out").read_text())
        yield Browsed(mnt, base, vault, src, points, info)
    finally:
        stop_mount(proc, mnt)
    log = (base / f"mount-{mnt.name}.log").read_text(errors="replace")
    assert proc.returncode == 0, f"recovault mount exited {proc.returncode} after fusermount3 -u:\n{log}"
    assert "Traceback" not in log, log


def test_browsable_layout_through_the_kernel(browsed):
    name = {k: time_name(RecoveryPoint.from_json(v)) for k, v in browsed.points.items()}
    rel = os.path.abspath(browsed.src).lstrip("/")
    assert sorted(os.listdir(browsed.mnt)) == ["hosts", "ids", "snapshots", "tags"]
    assert sorted(os.listdir(browsed.path("ids"))) == sorted(p["id"][:8] for p in browsed.points.values())
    assert sorted(os.listdir(browsed.path("snapshots"))) == sorted([*name.values(), "latest"])
    assert sorted(os.listdir(browsed.path("hosts"))) == ["db", "web1"]
    assert sorted(os.listdir(browsed.path("hosts/web1"))) == sorted([name["web1-old"], name["web1-new"], "latest"])
    assert os.readlink(browsed.path("hosts/web1/latest")) == name["web1-new"]
    assert os.readlink(browsed.path("hosts/db/latest")) == name["db"]
    assert os.readlink(browsed.path("snapshots/latest")) == name["web1-new"]
    assert sorted(os.listdir(browsed.path("tags"))) == ["daily", "weekly"]
    assert os.readlink(browsed.path("tags/weekly/latest")) == name["db"]
    assert os.readlink(browsed.path("tags/daily/latest")) == name["web1-new"]
    # the points' contents, through latest links, time names and ids
    read = lambda p: Path(browsed.path(p)).read_text()  # noqa: E731
    assert read(f"hosts/web1/latest/{rel}/a.txt") == "v2"
    assert read(f"hosts/web1/{name['web1-old']}/{rel}/a.txt") == "v1"
    assert read(f"tags/weekly/latest/{rel}/a.txt") == "db"
    assert read(f"ids/{browsed.points['web1-old']['id'][:8]}/{rel}/a.txt") == "v1"
    assert Path(browsed.path(f"snapshots/latest/{rel}/sub/b.bin")).read_bytes() == (browsed.src / "sub/b.bin").read_bytes()
    # a point directory carries its time; the layout is read-only
    st = os.stat(browsed.path(f"hosts/db/{name['db']}"))
    assert stat.S_ISDIR(st.st_mode) and st.st_mtime_ns // 10**9 == int(parse_time(browsed.points["db"]["time"]).timestamp())
    with pytest.raises(OSError) as ei:
        os.mkdir(browsed.path("hosts/new"))
    assert ei.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    with pytest.raises(FileNotFoundError):
        os.stat(browsed.path("hosts/no-such-host"))


def test_mount_json_reports_the_mount_and_matches_its_schema(browsed):
    import jsonschema
    schema = json.loads((ROOT / "docs/schemas/mount.json").read_text())
    jsonschema.validate(browsed.info, schema)
    assert browsed.info["mountpoint"] == str(browsed.mnt.resolve())
    assert browsed.info["layout"] == "browse" and browsed.info["snapshot"] is None
    assert [p["id"] for p in browsed.info["points"]] == [browsed.points[k]["id"] for k in ("web1-old", "db", "web1-new")]
    assert all(os.path.isdir(browsed.path(p["dir"])) for p in browsed.info["points"])
    assert os.path.exists(f"/proc/{browsed.info['pid']}"), "pid is not the serving process"
    # one point: the same document, with its id
    mnt = browsed.home / "one"
    mnt.mkdir()
    proc = start_mount(browsed.home, browsed.vault, browsed.points["db"]["id"][:10], mnt, "--json")
    try:
        doc = json.loads((browsed.home / "mount-one.out").read_text())
        jsonschema.validate(doc, schema)
        assert doc["layout"] == "point" and doc["snapshot"] == browsed.points["db"]["id"]
        assert (Path(str(mnt) + os.path.abspath(browsed.src)) / "a.txt").read_text() == "db"
    finally:
        stop_mount(proc, mnt)
    assert proc.returncode == 0


def test_a_mount_point_in_use_exits_20(browsed):
    for args in ([str(browsed.mnt)], ["latest", str(browsed.mnt)]):
        p = run_cli(browsed.home, "mount", "--vault", browsed.vault, *args, check=False)
        assert p.returncode == 20, p.stderr
        err = p.stderr.decode()
        assert "is in use" in err and "fusermount3 -u" in err and "Traceback" not in err
    p = run_cli(browsed.home, "mount", "--vault", browsed.vault, "--json", str(browsed.mnt), check=False)
    assert p.returncode == 20 and json.loads(p.stdout)["exit_code"] == 20
    assert os.listdir(browsed.mnt), "the mount in use was disturbed"


def test_a_dead_fuse_mount_left_behind_is_in_use_too(browsed):
    """A FUSE server killed hard leaves its mount point answering ENOTCONN: mounting there again is refused
    (exit 20, naming fusermount3 -u) rather than failing with the kernel's error text."""
    mnt = browsed.home / "dead"
    mnt.mkdir()
    proc = start_mount(browsed.home, browsed.vault, None, mnt)
    proc.kill()
    proc.wait(timeout=10)
    try:
        with pytest.raises(OSError) as ei:
            os.listdir(mnt)  # (a stat may still be answered from the kernel's attribute cache)
        assert ei.value.errno == errno.ENOTCONN
        p = run_cli(browsed.home, "mount", "--vault", browsed.vault, str(mnt), check=False)
        assert p.returncode == 20, p.stderr
        assert b"server is gone" in p.stderr and b"fusermount3 -u" in p.stderr
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
    assert not os.path.ismount(mnt)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_kill_or_ctrl_c_unmounts_and_ends_cleanly(browsed, sig):
    """`kill PID` (the pid mount --json reports) or Ctrl-C is the operator's way to end a mount, as
    fusermount3 -u is: the mount is undone, exit 0, nothing on stderr but the serving line."""
    mnt = browsed.home / f"sig{int(sig)}"
    mnt.mkdir()
    proc = start_mount(browsed.home, browsed.vault, None, mnt)
    try:
        assert sorted(os.listdir(mnt)) == ["hosts", "ids", "snapshots", "tags"]
        proc.send_signal(sig)
        proc.wait(timeout=20)
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        if proc.poll() is None:
            proc.kill()
    log = (browsed.home / f"mount-{mnt.name}.log").read_text(errors="replace")
    assert proc.returncode == 0, log
    assert not os.path.ismount(mnt)
    assert [line for line in log.splitlines() if not line.startswith("serving ")] == [], log


def test_2000_points_list_through_the_kernel_fast_and_without_a_request(tmp_path, monkeypatch):
    """A vault of 2,000 points (bench/points_bench.make_points): `ls -l` of snapshots/, ids/ and a host's
    directory takes well under a second and costs the mount no storage request at all (the layout comes from
    the point records it listed when it started): the same requests with or without the listings."""
    sys.path.insert(0, str(ROOT / "bench"))
    from points_bench import PASSPHRASE as BENCH_PASSPHRASE, fast_vault, make_points
    vault, cache = str(tmp_path / "vault"), str(tmp_path / "cache")
    with fast_vault(vault, cache) as v:
        make_points(v, 2000)
        v.snapshots()  # into the agent cache: every mount below starts from it
    pw = tmp_path / "pw"
    pw.write_text(BENCH_PASSPHRASE)
    (tmp_path / "home").mkdir()

    def serve(listings: List[str]) -> dict:
        """Mount, run `ls -l` on each of `listings`, unmount; the mount's storage requests per operation."""
        metrics = tmp_path / "metrics.json"
        monkeypatch.setenv("RECOVAULT_STORAGE_METRICS", str(metrics))
        mnt = tmp_path / "mnt"
        mnt.mkdir(exist_ok=True)
        proc = start_mount(tmp_path, vault, None, mnt, "--passphrase-file", str(pw), "--cache-dir", cache)
        try:
            for rel in listings:
                start = time.perf_counter()
                p = subprocess.run(["ls", "-l", str(mnt / rel)], capture_output=True, text=True, timeout=60)
                took = time.perf_counter() - start
                assert p.returncode == 0, p.stderr
                lines = p.stdout.splitlines()[1:]  # after "total N"
                assert len(lines) == {"snapshots": 2001, "ids": 2000, "hosts/web1": 667 + 1}[rel]
                assert took < 3.0, f"ls -l {rel}: {took:.2f} s (about 0.05 s on an idle machine)"
        finally:
            stop_mount(proc, mnt)
        assert proc.returncode == 0
        return {op: counts["requests"] for op, counts in json.loads(metrics.read_text()).items()}

    assert serve(["snapshots", "ids", "hosts/web1"]) == serve([])


def test_mount_with_a_point_and_no_mount_point_says_both_forms(browsed, tmp_path):
    p = subprocess.run([sys.executable, "-m", "recovault.cli", "mount", "--vault", browsed.vault, "latest"],
                       capture_output=True, env=cli_env(browsed.home), cwd=tmp_path, timeout=60)
    assert p.returncode == 2
    err = p.stderr.decode()
    assert "mount point latest does not exist" in err and "recovault mount SNAPSHOT MOUNTPOINT" in err, err
