"""Authenticated metadata and local secrets: the config's plaintext fields, the agent cache's permissions,
a passphrase file others can read, and vault locations with unknown schemes (issue 8)."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from recovault import api
from recovault.errors import CorruptData
from recovault.vault import format as fmt
from recovault.vault.keys import read_passphrase
from recovault.vault.repo import Vault

from test_cli import FAST_KDF, PASSPHRASE, Cli, api_vault, fails, json_out, ok


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


# -- the config's envelope -----------------------------------------------------------------------


@pytest.mark.parametrize("edit", [
    lambda d: {**d, "created": d["created"].replace("20", "19", 1)},
    lambda d: {**d, "owner": "mallory"},
    lambda d: {k: v for k, v in d.items() if k != "created"},
])
def test_edited_config_envelope_is_corrupt(tmp_path: Path, edit) -> None:
    vault = api_vault(tmp_path / "v")
    path = Path(vault) / fmt.CONFIG
    doc = json.loads(path.read_text())
    path.write_text(json.dumps(edit(doc), indent=1))
    with pytest.raises(CorruptData, match="config .*changed after it was written"):
        api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c"))
    fails(Cli(tmp_path / "home")("snapshots", "--vault", vault), 15, "config")


def test_config_without_sealed_envelope_still_opens(tmp_path: Path) -> None:
    """A config written before the envelope was sealed (settings without "envelope", format version 1: the
    envelope came before version 2) opens as before."""
    vault = api_vault(tmp_path / "v")
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        from recovault import core
        settings = v.settings.to_dict()
        doc = json.loads((Path(vault) / fmt.CONFIG).read_text())
        doc["settings"] = core.SealSession(v.master.enc_key).seal(
            fmt.AAD_CONFIG + v.id.encode(), json.dumps(settings).encode()).hex()
        doc["recovault"] = 1
    (Path(vault) / fmt.CONFIG).write_text(json.dumps(doc))
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        assert v.settings.to_dict() == settings


# -- the agent cache is private ------------------------------------------------------------------


def test_agent_cache_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        cache = tmp_path / "cache"
        with api.init_vault(str(tmp_path / "v"), PASSPHRASE, kdf=FAST_KDF, cache_dir=str(cache)) as v:
            (tmp_path / "src").mkdir()
            (tmp_path / "src" / "f").write_bytes(b"x" * 1000)
            api.backup(v, [str(tmp_path / "src")])
    finally:
        os.umask(old)
    paths = [cache] + list(cache.rglob("*"))
    assert any(p.is_file() for p in paths)  # index (and journal) files were cached
    for p in paths:
        assert _mode(p) == (0o700 if p.is_dir() else 0o600), p


def test_open_tightens_an_existing_open_cache(tmp_path: Path) -> None:
    vault = api_vault(tmp_path / "v")
    cache = tmp_path / "cache"
    api.open_vault(vault, PASSPHRASE, cache_dir=str(cache)).close()
    dirs = [cache] + [p for p in cache.rglob("*") if p.is_dir()]
    assert len(dirs) >= 3
    for d in dirs:
        os.chmod(d, 0o755)
    api.open_vault(vault, PASSPHRASE, cache_dir=str(cache)).close()
    assert [_mode(d) for d in dirs] == [0o700] * len(dirs)


# -- a passphrase file others can read -----------------------------------------------------------


@pytest.mark.parametrize("mode, warned", [(0o600, False), (0o400, False), (0o640, True), (0o604, True),
                                          (0o644, True)])
def test_passphrase_file_readable_by_others_warns(tmp_path: Path, mode: int, warned: bool) -> None:
    f = tmp_path / "pw"
    f.write_text(PASSPHRASE + "\n")
    os.chmod(f, mode)
    warnings: list = []
    assert read_passphrase(str(f), on_warning=warnings.append) == PASSPHRASE
    assert bool(warnings) == warned
    if warned:
        assert str(f) in warnings[0] and f"{mode:04o}" in warnings[0]


def test_cli_warns_about_open_passphrase_file(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home", passphrase=None)
    vault = api_vault(tmp_path / "v")
    f = tmp_path / "pw"
    f.write_text(PASSPHRASE)
    os.chmod(f, 0o644)
    res = ok(cli("snapshots", "--vault", vault, "--passphrase-file", f))
    assert f"recovault: warning: passphrase file {f} can be read by other users" in res.stderr
    os.chmod(f, 0o600)
    res = ok(cli("snapshots", "--vault", vault, "--passphrase-file", f))
    assert "warning" not in res.stderr


# -- vault locations -----------------------------------------------------------------------------


@pytest.mark.parametrize("location", ["azur://x", "ec:4+2:/d1", "s3://b"])
def test_cli_refuses_unknown_or_unavailable_schemes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    location: str) -> None:
    cli = Cli(tmp_path / "home")
    monkeypatch.chdir(tmp_path)
    fails(cli("init", "--vault", location), 2, location.split(":")[0])
    assert sorted(os.listdir(tmp_path)) == ["home"]


def test_cli_local_path_with_colon_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    vault = api_vault(tmp_path / "a:b")
    assert json_out(Cli(tmp_path / "home")("snapshots", "--vault", "./a:b", "--json")) == []
    assert Path(vault).is_dir()


def test_vault_open_uses_private_cache_even_when_umask_is_open(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        vault = api_vault(tmp_path / "v")
        v = Vault.open(api.open_storage(vault), PASSPHRASE, cache_dir=str(tmp_path / "cache"))
        v.close()
    finally:
        os.umask(old)
    for p in [tmp_path / "cache"] + list((tmp_path / "cache").rglob("*")):
        assert _mode(p) & 0o077 == 0, p


def test_key_list_marks_version_1_key_files(tmp_path: Path) -> None:
    from test_keys import write_v1_key
    vault = api_vault(tmp_path / "v")
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        old = write_v1_key(v.storage, "an old passphrase, 16+ chars", v.master)
    cli = Cli(tmp_path / "home")
    rows = {r["keyid"]: r for r in json_out(cli("key", "list", "--vault", vault, "--json"))}
    assert rows[old]["authenticated"] is False and rows[old]["hostname"] == "old-host"
    assert [r["authenticated"] for k, r in rows.items() if k != old] == [True]
    text = ok(cli("key", "list", "--vault", vault)).stdout
    [line] = [ln for ln in text.splitlines() if old[:12] in ln]
    assert "version 1 key file: its fields are not authenticated" in line


@pytest.mark.parametrize("field_name", ["created", "hostname", "username", "iterations", "salt"])
def test_cli_edited_key_file_field_exits_15_naming_it(tmp_path: Path, field_name: str) -> None:
    from test_keys import _edit
    vault = api_vault(tmp_path / "v")
    [keyfile] = (Path(vault) / "keys").iterdir()
    keyfile.write_text(_edit(keyfile.read_text(), field_name))
    # (an edited salt may also stop being base64: then "is corrupt: ..." says so)
    msg = fails(Cli(tmp_path / "home")("snapshots", "--vault", vault), 15, f"keys/{keyfile.name}")
    assert "changed after it was written" in msg or "is corrupt" in msg
