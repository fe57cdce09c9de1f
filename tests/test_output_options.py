"""The common options --quiet and --verbose, before or after the command name."""
from __future__ import annotations

import json
import os

import pytest

from test_cli import PASSPHRASE, api_vault, run_main


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("RECOVAULT_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("XDG_CACHE_HOME", os.fspath(tmp_path / "xdg"))
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a\n")
    (src / "sub" / "b.txt").write_text("b\n")
    return api_vault(tmp_path / "vault"), src, tmp_path


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_names_the_vault_and_each_file(env, capsys, where):
    vault, src, tmp = env
    argv = ["backup", "--vault", vault, src]
    res = run_main(["-v"] + argv if where == "before" else argv + ["--verbose"], capsys)
    assert res.code == 0, res.err
    assert "recovault: opened vault " in res.err
    for f in ("a.txt", "sub/b.txt"):
        assert f"recovault: backing up {src / f}" in res.err.splitlines()
    res = run_main(["restore", "--vault", vault, "latest", "--target", tmp / "out", "-v"], capsys)
    assert res.code == 0 and "recovault: restoring " in res.err


def test_without_verbose_no_file_lines(env, capsys):
    vault, src, _ = env
    res = run_main(["backup", "--vault", vault, src], capsys)
    assert res.code == 0 and "backing up" not in res.err and "opened vault" not in res.err
    assert "recovery point" in res.out


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_prints_only_errors_warnings_and_json(env, capsys, where):
    vault, src, tmp = env
    argv = ["backup", "--vault", vault, src]
    res = run_main(["-q"] + argv if where == "before" else argv + ["--quiet"], capsys)
    assert res.code == 0 and res.out == "" and res.err == ""
    res = run_main(["snapshots", "--vault", vault, "-q", "--json"], capsys)  # the document still comes
    assert res.code == 0 and len(json.loads(res.out)) == 1
    res = run_main(["restore", "--vault", vault, "nope", "--target", tmp / "o", "-q"], capsys)
    assert res.code == 16 and res.err.startswith("recovault: error: ")  # errors are never quiet
    res = run_main(["backup", "--vault", vault, src, "-q", "-v"], capsys)
    assert res.code == 0 and res.out == "" and res.err == ""  # --quiet wins over --verbose
