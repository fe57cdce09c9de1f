"""Format version 2 and the upgrade from v1, tested against a v1 vault made by the recovault before the bump
(tests/data/v1_vault.tar.gz, made by tests/data/make_v1_vault.py; see its docstring for what it holds).

A v1 vault opens and reads as it is (nothing written); a writing command (backup, repair, migrate) upgrades
it first: every recovery point gets a journal entry, then the config says version 2. A kill -9 between the
two steps leaves a vault that opens and upgrades on the next try; a newer format is refused with one message.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from recovault import api
from recovault.errors import CorruptData, UsageError
from recovault.vault import format as fmt

from test_cli import Cli, api_vault, fails, json_out, ok

FIXTURE = Path(__file__).parent / "data" / "v1_vault.tar.gz"

# Runs the CLI with Vault._write_config (step 2 of the upgrade: the config put) replaced by a kill -9 of the
# process itself: the process dies after step 1 (journal entries) and before the config changes.
KILL_BEFORE_CONFIG_BOOT = r"""
import os, signal
from recovault.vault import repo
repo.Vault._write_config = lambda self, config: os.kill(os.getpid(), signal.SIGKILL)
from recovault.cli import main
main()
"""


class V1:
    """The extracted fixture: its vault, the source trees per label, and the manifest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.vault = str(root / "vault")
        self.manifest = json.loads((root / "manifest.json").read_text())
        self.passphrase = self.manifest["passphrase"]
        self.points = {p["label"]: p for p in self.manifest["points"]}

    def live(self) -> List[str]:
        return [p["id"] for p in self.manifest["points"] if not p["removed"]]

    def cli(self, home: Path) -> Cli:
        return Cli(home, passphrase=self.passphrase)

    def files(self) -> Dict[str, bytes]:
        """Every object of the vault, by name, with its bytes."""
        return {str(p.relative_to(self.vault)): p.read_bytes() for p in Path(self.vault).rglob("*") if p.is_file()}

    def config(self) -> dict:
        return json.loads((Path(self.vault) / fmt.CONFIG).read_text())


@pytest.fixture
def v1(tmp_path: Path) -> V1:
    with tarfile.open(FIXTURE) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.11.4 (and 3.8.17 ...)
        tar.extractall(tmp_path / "v1", **safe)
    return V1(tmp_path / "v1")


def tree_state(root: Path) -> Dict[str, Tuple]:
    """Per relative path: its type and content (bytes, or a symlink's target) and a file's mtime."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(root))
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("l", os.readlink(p))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("d",)
        else:
            out[rel] = ("f", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns)
    return out


def restored(target: Path, source: str) -> Path:
    return target / source.lstrip("/")


def journal_states(vault: str, passphrase: str, cache: Path) -> Dict[str, bool]:
    with api.open_vault(vault, passphrase, cache_dir=str(cache)) as v:
        v.journal.refresh()
        return {sid: st.live for sid, st in v.journal.states().items()}


def test_fixture_is_v1_and_small() -> None:
    assert FIXTURE.stat().st_size < 200_000
    with tarfile.open(FIXTURE) as tar:
        config = json.loads(tar.extractfile("vault/config").read())  # type: ignore[union-attr]
    assert config["recovault"] == 1


def test_v1_vault_opens_and_reads_without_writing(v1: V1, tmp_path: Path) -> None:
    before = v1.files()
    with api.open_vault(v1.vault, v1.passphrase, cache_dir=str(tmp_path / "cache")) as v:
        assert v.format_version == 1
        assert [p.id for p in v.snapshots()] == v1.live()
        for label in ("pre", "a", "c"):
            point = v1.points[label]
            target = tmp_path / f"r-{label}"
            api.restore(v, point["id"], str(target))
            root = restored(target, v1.manifest["source"])
            assert tree_state(root) == tree_state(v1.root / "trees" / label), label
            assert (root / "dir" / "same.txt").stat().st_ino == (root / "dir" / "hard.txt").stat().st_ino
    cli = v1.cli(tmp_path / "home")
    assert [s["id"] for s in json_out(cli("snapshots", "--vault", v1.vault, "--json"))] == v1.live()
    listing = ok(cli("ls", "--vault", v1.vault, v1.points["c"]["id"][:8], v1.manifest["source"])).stdout
    for name in ("file.txt", "link.txt", "dir"):
        assert name in listing
    ok(cli("check", "--vault", v1.vault, "--read-data"))
    assert v1.files() == before  # reading a v1 vault writes nothing: an old recovault still opens it


def test_migrate_upgrades_once(v1: V1, tmp_path: Path) -> None:
    cli = v1.cli(tmp_path / "home")
    res = json_out(cli("migrate", "--vault", v1.vault, "--json"))
    assert res == {"from_version": 1, "to_version": 2, "adopted": [v1.points["pre"]["id"]],
                   "config_rewritten": True}
    config = v1.config()
    assert config["recovault"] == 2 and config["id"] == v1.manifest["vault_id"]
    after = v1.files()
    again = ok(cli("migrate", "--vault", v1.vault))
    assert "nothing to do" in again.stdout and "notice" not in again.stderr
    assert v1.files() == after  # the second run is a no-op
    states = journal_states(v1.vault, v1.passphrase, tmp_path / "cache")
    assert states == {p["id"]: not p["removed"] for p in v1.manifest["points"]}
    checked = json_out(cli("check", "--vault", v1.vault, "--read-data", "--json"))
    assert checked["ok"] and checked["warnings"] == [], checked
    with api.open_vault(v1.vault, v1.passphrase, cache_dir=str(tmp_path / "cache")) as v:
        assert v.format_version == 2 and [p.id for p in v.snapshots()] == v1.live()


def test_backup_upgrades_a_v1_vault_with_one_notice(v1: V1, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "new.txt").write_bytes(b"after the upgrade\n" * 100)
    cli = v1.cli(tmp_path / "home")
    res = ok(cli("backup", "--vault", v1.vault, str(src), "--json"))
    notices = [line for line in res.stderr.splitlines() if line.startswith("recovault: notice: ")]
    assert len(notices) == 1 and "from format version 1 to 2" in notices[0], res.stderr
    new_id = json.loads(res.stdout)["id"]
    assert v1.config()["recovault"] == 2
    states = journal_states(v1.vault, v1.passphrase, tmp_path / "cache")
    assert states == {**{p["id"]: not p["removed"] for p in v1.manifest["points"]}, new_id: True}
    checked = json_out(cli("check", "--vault", v1.vault, "--read-data", "--json"))
    assert checked["ok"] and checked["warnings"] == [], checked
    second = ok(cli("backup", "--vault", v1.vault, str(src)))
    assert "notice" not in second.stderr
    target = tmp_path / "r"
    ok(cli("restore", "--vault", v1.vault, v1.points["pre"]["id"], "--target", str(target)))
    assert tree_state(restored(target, v1.manifest["source"])) == tree_state(v1.root / "trees" / "pre")


def test_api_write_open_upgrades_with_a_notice_event(v1: V1, tmp_path: Path) -> None:
    events: List[Tuple[str, dict]] = []
    with api.open_vault(v1.vault, v1.passphrase, cache_dir=str(tmp_path / "c"),
                        on_event=lambda kind, info: events.append((kind, info)), write=True) as v:
        assert v.format_version == 2
    assert [k for k, _ in events] == ["notice"]
    report = events[0][1]["upgrade"]
    assert (report.from_version, report.to_version, report.adopted) == (1, 2, [v1.points["pre"]["id"]])


def test_kill_9_between_the_upgrade_steps(v1: V1, tmp_path: Path) -> None:
    cli = v1.cli(tmp_path / "home")
    config_before = (Path(v1.vault) / fmt.CONFIG).read_bytes()
    res = cli("migrate", "--vault", v1.vault, boot=KILL_BEFORE_CONFIG_BOOT)
    assert res.returncode == -signal.SIGKILL, res.stderr
    # step 1 happened (the pre-journal point is logged), step 2 did not: still a valid v1 vault
    assert (Path(v1.vault) / fmt.CONFIG).read_bytes() == config_before
    assert journal_states(v1.vault, v1.passphrase, tmp_path / "c")[v1.points["pre"]["id"]] is True
    assert [s["id"] for s in json_out(cli("snapshots", "--vault", v1.vault, "--json"))] == v1.live()
    res = json_out(cli("migrate", "--vault", v1.vault, "--json"))
    assert res == {"from_version": 1, "to_version": 2, "adopted": [], "config_rewritten": True}
    checked = json_out(cli("check", "--vault", v1.vault, "--json"))
    assert checked["ok"] and checked["warnings"] == [], checked


def test_new_vault_is_v2_and_layout_versions_stay_1(tmp_path: Path) -> None:
    vault = api_vault(tmp_path / "v")
    assert json.loads((Path(vault) / fmt.CONFIG).read_text())["recovault"] == fmt.VAULT_FORMAT == 2
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(5000))
    with api.open_vault(vault, "correct horse battery staple", cache_dir=str(tmp_path / "c")) as v:
        assert v.format_version == 2
        api.backup(v, [str(src)])
        index_name = next(iter(v.storage.list(fmt.INDEX)))
        plain = v.blobs.open_index_file(index_name, v.storage.get(index_name))
        header = v.read_pack_header(next(iter(v.storage.list(fmt.DATA))))  # decodes only a version-1 header
    assert plain[0] == fmt.INDEX_VERSION == 1  # the index layout did not change with the vault format
    assert header and fmt.PACK_HEADER_VERSION == 1


def _set_config(vault: str, **fields) -> None:
    path = Path(vault) / fmt.CONFIG
    doc = json.loads(path.read_text())
    doc.update(fields)
    path.write_text(json.dumps(doc))


def test_newer_format_is_refused_with_one_message(tmp_path: Path) -> None:
    vault = api_vault(tmp_path / "v")
    _set_config(vault, recovault=4)  # 3 is read since issue 14 (host keys)
    cli = Cli(tmp_path / "home")
    for args in (("snapshots",), ("backup", str(tmp_path)), ("migrate",)):
        fails(cli(*args, "--vault", vault), 2, "format version 4", "newer recovault")
    with pytest.raises(UsageError, match="format version 4"):
        api.open_vault(vault, "wrong passphrase: not even asked", cache_dir=str(tmp_path / "c"))
    _set_config(vault, recovault="2")
    fails(cli("snapshots", "--vault", vault), 15, "config", "corrupt")


def test_relabelled_config_is_refused(v1: V1, tmp_path: Path) -> None:
    """Editing the version in the plaintext either way is caught: an upgraded config cannot be passed off as
    v1 (to let an old writer in), and a v1 config without a sealed envelope cannot claim v2."""
    cli = v1.cli(tmp_path / "home")
    ok(cli("migrate", "--vault", v1.vault))
    _set_config(v1.vault, recovault=1)
    fails(cli("snapshots", "--vault", v1.vault), 15, "recovault", "do not match the sealed copy")
    vault = api_vault(tmp_path / "v")
    with api.open_vault(vault, "correct horse battery staple", cache_dir=str(tmp_path / "c")) as v:
        from recovault import core
        sealed = core.SealSession(v.master.enc_key).seal(fmt.AAD_CONFIG + v.id.encode(),
                                                        json.dumps(v.settings.to_dict()).encode())
    _set_config(vault, settings=sealed.hex())  # no envelope in the sealed settings, as before v2
    with pytest.raises(CorruptData, match="claims format version 2 but does not authenticate it"):
        api.open_vault(vault, "correct horse battery staple", cache_dir=str(tmp_path / "c"))


def test_repair_from_a_replica_dry_run_leaves_a_v1_vault_as_it_is(v1: V1, tmp_path: Path) -> None:
    """A dry run opens for reading: the upgrade a real run would do first happens only in its scratch view."""
    replica = str(tmp_path / "replica")
    shutil.copytree(v1.vault, replica)
    before = v1.files()
    cli = v1.cli(tmp_path / "home")
    cli.env["RECOVAULT_FROM_PASSPHRASE"] = v1.passphrase
    res = ok(cli("repair", "--from", replica, "--vault", v1.vault, "--dry-run"))
    assert "a real run would first upgrade the vault" in res.stderr, res.stderr
    assert "would restore 0 blob(s)" in res.stdout, res.stdout
    assert v1.files() == before and v1.config()["recovault"] == 1
