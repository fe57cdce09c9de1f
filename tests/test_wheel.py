"""The wheelhouse a host without compilers installs from (dist/, built by .ci/wheel, which .ci/setup runs).

recovault's wheel is repaired by auditwheel to a manylinux tag, with libcrypto, libzstd and libisal inside it
(recovault.libs/); dist/ also holds a repaired pyfuse3 wheel (the `fuse` extra) and every runtime dependency.
These tests install it into a fresh venv with `--no-index --only-binary=:all:` (nothing is built, nothing is
fetched: no compiler or network is needed at install time) and run the installed `recovault` there: a backup
and a restore compared byte for byte with the source, and, with the `fuse` extra, a mount. A missing wheel
fails the tests (it is part of setting up), never skips them.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Dict, List, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
SOURCES = ROOT / "python" / "recovault"
PASSPHRASE = "a wheel passphrase, at least sixteen characters"
MiB = 1 << 20
# What a manylinux wheel may take from the host (auditwheel's policies); anything else must be in the wheel.
HOST_LIBS = re.compile(r"^(linux-vdso|ld-linux[-\w.]*|lib(c|m|dl|rt|pthread|stdc\+\+|gcc_s))\.so")


class FreshVenv(NamedTuple):
    root: Path
    python: Path
    recovault: Path
    home: Path

    def env(self) -> Dict[str, str]:
        """The environment of a host that only has this venv: nothing points back at the source tree."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTHON", "RECOVAULT_", "VIRTUAL_ENV", "PIP_"))}
        env.update(HOME=str(self.home), XDG_CACHE_HOME=str(self.home / "cache"), RECOVAULT_PASSPHRASE=PASSPHRASE,
                   PIP_CONFIG_FILE=os.devnull)  # pip reads no configuration: its wheel folders, constraints
        return env

    def run(self, *args, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        p = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=self.env(),
                           cwd=self.home, timeout=timeout)
        if check and p.returncode != 0:
            pytest.fail(f"{' '.join(map(str, args))} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        return p

    def pip_install(self, requirement: str) -> None:
        """pip (the test's own, aimed at this venv) from dist/ alone, wheels alone."""
        self.run(sys.executable, "-m", "pip", "--python", self.python, "install", "-q", "--no-index",
                 "--only-binary=:all:", "--find-links", DIST, requirement)


class BackedUp(NamedTuple):
    vault: Path
    src: Path
    point_id: str


def the_wheel() -> Path:
    found = sorted(DIST.glob("recovault-*.whl"))
    if len(found) != 1:
        pytest.fail(f"expected one recovault wheel in {DIST}, found {[p.name for p in found]}: "
                    "'bash .ci/setup' (or 'bash .ci/wheel' after it) builds it")
    return found[0]


def glibc_version() -> tuple:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    assert name == "glibc"
    return tuple(int(x) for x in version.split(".")[:2])


def test_wheel_is_manylinux_with_libcrypto_libzstd_and_libisal_inside():
    whl = the_wheel()
    tag = re.fullmatch(r"recovault-[^-]+-cp3\d+-cp3\d+-manylinux_(\d+)_(\d+)_(\w+)\.whl", whl.name)
    assert tag, f"{whl.name} carries no manylinux tag: auditwheel did not repair it"
    assert (int(tag[1]), int(tag[2])) <= glibc_version()
    assert tag[3] == os.uname().machine
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        libs = [n for n in names if n.startswith("recovault.libs/")]
        assert any(re.fullmatch(r"recovault\.libs/libcrypto-[0-9a-f]+\.so[.\d]*", n) for n in libs), libs
        assert any(re.fullmatch(r"recovault\.libs/libzstd-[0-9a-f]+\.so[.\d]*", n) for n in libs), libs
        assert any(re.fullmatch(r"recovault\.libs/libisal-[0-9a-f]+\.so[.\d]*", n) for n in libs), libs
        # the wheel is this tree's (rerun .ci/setup after an edit)
        in_wheel = {n[len("recovault/"):]: z.read(n) for n in names
                    if n.startswith("recovault/") and n.endswith(".py")}
    in_tree = {p.relative_to(SOURCES).as_posix(): p.read_bytes() for p in SOURCES.rglob("*.py")}
    assert sorted(in_wheel) == sorted(in_tree), "the wheel is stale: run 'bash .ci/setup'"
    stale = [n for n in in_tree if in_wheel[n] != in_tree[n]]
    assert not stale, f"the wheel is stale ({stale[:3]}...): run 'bash .ci/setup'"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> FreshVenv:
    """A new venv (no pip of its own, nothing inherited) with recovault installed from dist/."""
    the_wheel()
    base = tmp_path_factory.mktemp("wheel")
    home = base / "home"
    home.mkdir()
    root = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    venv = FreshVenv(root, root / "bin" / "python", root / "bin" / "recovault", home)
    venv.pip_install("recovault")  # the one in dist/: the_wheel() checked there is exactly one
    return venv


def build_source(src: Path) -> None:
    rng = random.Random(11)
    files = {
        "empty": b"",
        "small.txt": b"hello from the wheel\n",
        "docs/readme.txt": b"".join(b"line %d of a text that compresses\n" % i for i in range(5000)),
        "data/multi-chunk.bin": rng.randbytes(3 * MiB + 5),
        "data/deeper/page.bin": rng.randbytes(4095),
    }
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "data" / "deeper" / "page.bin").chmod(0o640)
    os.symlink("docs/readme.txt", src / "link")
    (src / "empty-dir").mkdir()


def tree_of(root: Path) -> Dict[str, tuple]:
    """Every entry below root: its kind, mode and content (bytes, or a link's target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                content = os.readlink(p).encode()
            elif stat.S_ISREG(st.st_mode):
                content = p.read_bytes()
            else:
                content = b""
            out[p.relative_to(root).as_posix()] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), content)
    return out


@pytest.fixture(scope="module")
def backed_up(fresh: FreshVenv) -> BackedUp:
    src = fresh.home / "src"
    build_source(src)
    vault = fresh.home / "vault"
    fresh.run(fresh.recovault, "init", "--vault", vault)
    point = json.loads(fresh.run(fresh.recovault, "backup", "--vault", vault, src, "--json").stdout)
    assert point["stats"]["errors"] == 0
    return BackedUp(vault, src, point["id"])


def mapped_libraries(fresh: FreshVenv) -> List[str]:
    """The shared objects a process of the fresh venv maps once recovault's C++ core is loaded."""
    code = ("import recovault, recovault._core\n"
            "print(recovault.__file__)\n"
            "print(*sorted({l.split()[-1] for l in open('/proc/self/maps') if '.so' in l}), sep='\\n')")
    return fresh.run(fresh.python, "-c", code).stdout.split()


def test_installed_core_uses_the_bundled_libraries(fresh: FreshVenv):
    site_lib = fresh.root / "lib"
    lines = mapped_libraries(fresh)
    assert Path(lines[0]).is_relative_to(site_lib), f"recovault imported from {lines[0]}, not the fresh venv"
    libs = [Path(x) for x in lines[1:]]
    bundled = {p.name.split("-")[0] for p in libs if p.parent.name == "recovault.libs" and p.is_relative_to(site_lib)}
    assert {"libcrypto", "libzstd", "libisal"} <= bundled, libs
    assert not [p for p in libs if p.name.startswith("libzstd") and p.parent.name != "recovault.libs"], libs
    # every other library the core needs is one a manylinux host has
    core = next((fresh.root / "lib").rglob("recovault/_core*.so"))
    ldd = subprocess.run(["ldd", str(core)], capture_output=True, text=True, check=True).stdout
    for line in ldd.splitlines():
        name, _, where = line.strip().partition(" => ")
        assert "not found" not in where, ldd
        assert HOST_LIBS.match(os.path.basename(name)) or "/recovault.libs/" in where, f"{name} comes from the host:\n{ldd}"


def test_backup_and_restore_from_the_wheel_byte_for_byte(fresh: FreshVenv, backed_up: BackedUp):
    target = fresh.home / "restore"
    fresh.run(fresh.recovault, "restore", "--vault", backed_up.vault, backed_up.point_id[:12],
              "--target", target, "--verify")
    restored = target / backed_up.src.relative_to("/")
    want = tree_of(backed_up.src)
    assert len(want) == 10
    assert tree_of(restored) == want
    fresh.run(fresh.recovault, "check", "--vault", backed_up.vault, "--read-data")


def test_mount_without_the_fuse_extra_says_how_to_get_it(fresh: FreshVenv, backed_up: BackedUp):
    assert fresh.run(fresh.python, "-c", "import pyfuse3", check=False).returncode != 0, \
        "pyfuse3 is already in the fresh venv: this test must run before test_fuse_extra_mounts_from_the_wheel"
    mnt = fresh.home / "mnt-nofuse"
    mnt.mkdir()
    p = fresh.run(fresh.recovault, "mount", "--vault", backed_up.vault, backed_up.point_id[:12], mnt, check=False)
    assert p.returncode == 2, p.stderr
    assert "recovault[fuse]" in p.stderr
    assert "Traceback" not in p.stderr
    assert not os.path.ismount(mnt)


def fuse_problem() -> str:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (no FUSE in this kernel/container)"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not on PATH (apt-get install fuse3)"
    return ""


def test_fuse_extra_mounts_from_the_wheel(fresh: FreshVenv, backed_up: BackedUp):
    if fuse_problem():  # the machine cannot mount at all (as tests/test_mount.py); the extra is still installed
        fresh.pip_install("recovault[fuse]")
        pytest.skip(fuse_problem())
    fresh.pip_install("recovault[fuse]")
    lib = fresh.run(fresh.python, "-c", "import pyfuse3; print(pyfuse3.__file__)").stdout.strip()
    assert Path(lib).is_relative_to(fresh.root)
    mnt = fresh.home / "mnt"
    mnt.mkdir()
    log = open(fresh.home / "mount.log", "wb")
    proc = subprocess.Popen([str(fresh.recovault), "mount", "--vault", str(backed_up.vault),
                             backed_up.point_id[:12], str(mnt)], stdout=log, stderr=subprocess.STDOUT,
                            env=fresh.env(), cwd=fresh.home)
    log.close()
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mnt):
            assert proc.poll() is None, (fresh.home / "mount.log").read_text(errors="replace")
            assert time.monotonic() < deadline, f"{mnt} did not become a mount point within 20 s"
            time.sleep(0.05)
        assert tree_of(mnt / backed_up.src.relative_to("/")) == tree_of(backed_up.src)
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (fresh.home / "mount.log").read_text(errors="replace")
