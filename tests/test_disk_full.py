"""A full disk, for real (a small tmpfs), under the vault and under the restore target: backup, copy, repair
--from and restore each stop with one clear message and exit 24 (errors.NoSpace), leave a vault that `check
--read-data` passes, and finish when run again once space is freed."""
from __future__ import annotations

import os
import random
import subprocess
from typing import Dict, Iterator

import pytest

from recovault import api
from recovault.vault.check import Checker
from test_cli import FAST_KDF, PASSPHRASE, Cli, api_vault, fails, object_files, ok

NO_SPACE = 24


class Tmpfs:
    """A tmpfs mounted at `path`, with a filler file that leaves `leave(kib)` free."""

    def __init__(self, path: str, size: str) -> None:
        self.path = path
        self.filler = os.path.join(path, "filler")
        os.makedirs(path)
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True,
                             text=True)
        if res.returncode:
            os.rmdir(path)
            pytest.skip(f"cannot mount a tmpfs here to fill a disk for real ({res.stderr.strip()}): needs root "
                        "or CAP_SYS_ADMIN")

    def leave(self, kib: int) -> None:
        st = os.statvfs(self.path)
        with open(self.filler, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, max(st.f_bavail * st.f_frsize - kib * 1024, 1))

    def free(self) -> None:
        os.remove(self.filler)

    def umount(self) -> None:
        subprocess.run(["umount", "-l", self.path], check=False)


@pytest.fixture
def mounts(tmp_path) -> Iterator[Dict[str, Tmpfs]]:
    made: Dict[str, Tmpfs] = {}

    def mount(name: str, size: str = "8m") -> Tmpfs:
        made[name] = Tmpfs(str(tmp_path / name), size)
        return made[name]
    yield mount  # type: ignore[misc]
    for m in made.values():
        m.umount()


def _src(root: str, seed: int = 5) -> str:
    rng = random.Random(seed)
    src = os.path.join(root, "src")
    os.makedirs(src)
    for i in range(8):
        with open(os.path.join(src, f"f{i}"), "wb") as f:
            f.write(rng.randbytes(300_000))
    return src


def _clean(vault: str, cache: str) -> None:
    with api.open_vault(vault, PASSPHRASE, cache_dir=cache) as v:
        res = Checker(v).run(read_data=True)
    assert res["ok"], res["problems"]


def _same(a: str, b: str) -> None:
    assert sorted(os.listdir(a)) == sorted(os.listdir(b))
    for name in os.listdir(a):
        with open(os.path.join(a, name), "rb") as x, open(os.path.join(b, name), "rb") as y:
            assert x.read() == y.read(), name


def _cli(tmp_path) -> Cli:
    cli = Cli(tmp_path / "home")
    cli.env["RECOVAULT_FROM_PASSPHRASE"] = PASSPHRASE
    return cli


@pytest.mark.parametrize("free_kib", [0, 40, 700])
def test_a_backup_into_a_full_vault_stops_cleanly_and_finishes_once_there_is_space(tmp_path, mounts, free_kib):
    disk = mounts("vault")
    vault = api_vault(os.path.join(disk.path, "v"))
    src = _src(str(tmp_path))
    cli = _cli(tmp_path)
    disk.leave(free_kib)
    fails(cli("backup", src, "--vault", vault), NO_SPACE, "no space left on device")
    _clean(vault, str(tmp_path / "c1"))
    disk.free()
    ok(cli("backup", src, "--vault", vault))
    _clean(vault, str(tmp_path / "c2"))
    ok(cli("restore", "latest", "--target", tmp_path / "out", "--vault", vault))
    _same(src, os.path.join(tmp_path / "out", src.lstrip("/")))


def test_a_restore_onto_a_full_target_stops_cleanly_and_finishes_once_there_is_space(tmp_path, mounts):
    vault = api_vault(tmp_path / "v")
    src = _src(str(tmp_path))
    cli = _cli(tmp_path)
    ok(cli("backup", src, "--vault", vault))
    target = mounts("target", "1m")
    fails(cli("restore", "latest", "--target", target.path, "--vault", vault), NO_SPACE,
          "no space left on the restore target")
    subprocess.run(["mount", "-o", "remount,size=8m", target.path], check=True)
    ok(cli("restore", "latest", "--target", target.path, "--vault", vault))
    _same(src, os.path.join(target.path, src.lstrip("/")))
    _clean(vault, str(tmp_path / "c"))


def test_a_copy_into_a_full_vault_stops_cleanly_and_finishes_once_there_is_space(tmp_path, mounts):
    source = api_vault(tmp_path / "s")
    src = _src(str(tmp_path))
    cli = _cli(tmp_path)
    ok(cli("backup", src, "--vault", source))
    disk = mounts("target")
    target = api_vault(os.path.join(disk.path, "t"))
    disk.leave(500)
    fails(cli("copy", "--from", source, "--to", target), NO_SPACE, "no space left on device")
    _clean(target, str(tmp_path / "c1"))
    disk.free()
    ok(cli("copy", "--from", source, "--to", target))
    _clean(target, str(tmp_path / "c2"))
    ok(cli("restore", "latest", "--target", tmp_path / "out", "--vault", target))
    _same(src, os.path.join(tmp_path / "out", src.lstrip("/")))


def test_a_repair_from_a_replica_into_a_full_vault_stops_cleanly_and_finishes_once_there_is_space(tmp_path, mounts):
    disk = mounts("vault")
    vault = api_vault(os.path.join(disk.path, "v"))
    src = _src(str(tmp_path))
    replica = str(tmp_path / "r")
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        api.backup(v, [src])
        api.init_vault(replica, PASSPHRASE, kdf=FAST_KDF, keys_from=v, cache_dir=str(tmp_path / "rc")).close()
        with api.open_vault(replica, PASSPHRASE, cache_dir=str(tmp_path / "rc")) as r:
            api.copy(v, r)
    os.remove(max(object_files(vault, "data"), key=os.path.getsize))
    cli = _cli(tmp_path)
    disk.leave(100)
    fails(cli("repair", "--from", replica, "--vault", vault), NO_SPACE, "no space left on device")
    disk.free()
    ok(cli("repair", "--from", replica, "--vault", vault))
    _clean(vault, str(tmp_path / "c2"))
    ok(cli("restore", "latest", "--target", tmp_path / "out", "--vault", vault))
    _same(src, os.path.join(tmp_path / "out", src.lstrip("/")))
