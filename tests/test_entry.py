"""The `recovault` entry point's early key derivation (recovault._entry, vault.keys.derive_early): it must
speed up the unlock without ever changing its outcome."""
from __future__ import annotations

import os
import threading

import pytest

from recovault import _entry
from recovault.errors import WrongPassphrase
from recovault.storage import open_storage
from recovault.vault import keys
from recovault.vault.keys import KdfParams, KeyStore, MasterKeys, derive_early
from recovault.vault.repo import Vault

PASS = "correct horse battery staple"
OTHER = "another passphrase entirely"
KDF = KdfParams(memory_kib=1024, iterations=1, lanes=1)


@pytest.fixture
def vault_dir(tmp_path):
    d = tmp_path / "vault"
    Vault.create(open_storage(str(d), create=True), PASS, kdf=KDF).close()
    yield str(d)
    keys._early.clear()


def test_option_glance():
    o = _entry._option
    assert o(["backup", "--vault", "/v", "/src"], "--vault", "-r") == "/v"
    assert o(["-r", "/v", "snapshots"], "--vault", "-r") == "/v"
    assert o(["backup", "--vault=/v"], "--vault", "-r") == "/v"
    assert o(["backup", "--", "--vault", "/v"], "--vault", "-r") is None
    assert o(["backup", "--vault"], "--vault", "-r") is None


def test_unlock_takes_the_early_key(vault_dir, monkeypatch):
    calls = []
    real = KdfParams._derive
    monkeypatch.setattr(KdfParams, "_derive", lambda self, p, s: calls.append(threading.current_thread().name) or real(self, p, s))
    assert derive_early(open_storage(vault_dir), PASS)
    v = Vault.open(open_storage(vault_dir), PASS)
    v.close()
    assert calls == ["recovault-early-kdf"]  # derived once, in the early thread
    assert not keys._early


def test_a_wrong_guess_is_never_used(vault_dir, monkeypatch):
    # early derivation with another passphrase: the unlock with the right one derives again and works;
    # the unlock with the early (wrong) one fails as it would have without it.
    assert derive_early(open_storage(vault_dir), OTHER)
    Vault.open(open_storage(vault_dir), PASS).close()
    with pytest.raises(WrongPassphrase):
        Vault.open(open_storage(vault_dir), OTHER)
    assert not keys._early


def test_a_failed_early_derivation_falls_back(vault_dir, monkeypatch):
    real = KdfParams._derive
    state = {"n": 0}

    def flaky(self, p, s):
        state["n"] += 1
        if threading.current_thread().name == "recovault-early-kdf":
            raise MemoryError("no memory for Argon2id")
        return real(self, p, s)

    monkeypatch.setattr(KdfParams, "_derive", flaky)
    assert derive_early(open_storage(vault_dir), PASS)
    Vault.open(open_storage(vault_dir), PASS).close()
    assert state["n"] == 2


def test_first_key_file_is_the_one_tried_first(vault_dir):
    st = open_storage(vault_dir)
    v = Vault.open(st, PASS)
    second = KeyStore(st).add(OTHER, v.master, kdf=KDF)
    v.close()
    assert derive_early(st, OTHER)
    # whichever file is listed first got the early derivation (with OTHER); unlock tries that file first,
    # so it consumes the early result whether it opens that file or not, and still finds the right key
    master, keyid = KeyStore(st).unlock(OTHER)
    assert keyid == second and isinstance(master, MasterKeys)
    assert not keys._early


def test_entry_glance_is_silent_on_any_problem(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECOVAULT_PASSPHRASE", PASS)
    _entry._start_early_key_derivation(["snapshots", "--vault", str(tmp_path / "nothing-here")])
    _entry._start_early_key_derivation(["snapshots", "--vault", "s3://bucket/x"])
    _entry._start_early_key_derivation(["snapshots", "--vault", str(tmp_path), "--passphrase-file", str(tmp_path / "missing")])
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert not keys._early


def test_a_passphrase_pipe_is_left_for_the_command(vault_dir, tmp_path, monkeypatch):
    """--passphrase-file <(...) is a pipe that can be read once: the early glance must not consume it."""
    monkeypatch.delenv("RECOVAULT_PASSPHRASE", raising=False)
    fifo = tmp_path / "pass.fifo"
    os.mkfifo(fifo)
    _entry._start_early_key_derivation(["snapshots", "--vault", vault_dir, "--passphrase-file", str(fifo)])
    assert not keys._early  # it did not open the FIFO (opening it would have blocked until a writer came)
    regular = tmp_path / "pass.txt"
    regular.write_text(PASS + "\n")
    _entry._start_early_key_derivation(["snapshots", "--vault", vault_dir, "--passphrase-file", str(regular)])
    assert len(keys._early) == 1
    Vault.open(open_storage(vault_dir), PASS).close()
    assert not keys._early


def test_cli_with_a_passphrase_from_process_substitution(vault_dir, tmp_path):
    import shutil
    import subprocess
    import sys
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    import recovault
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOVAULT_")}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(recovault.__file__)))
    env["HOME"] = str(tmp_path)
    cmd = f'"{sys.executable}" -m recovault snapshots --vault "{vault_dir}" --passphrase-file <(printf %s "{PASS}")'
    p = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_recovault_alone_prints_its_help(tmp_path):
    import subprocess
    import sys
    import recovault
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOVAULT_")}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(recovault.__file__)))
    p = subprocess.run([sys.executable, "-m", "recovault"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.startswith("Usage: recovault") and "error" not in p.stderr
    assert "backup" in p.stderr and p.stdout == ""


def test_the_glance_looks_for_the_cli_options():
    """_entry reads --vault/-r, RECOVAULT_VAULT and --passphrase-file before click is imported: they must be
    the CLI's common options (a renamed option or a new envvar there must be glanced at here too)."""
    from recovault.cli.context import COMMON_OPTIONS
    opts = {attr: (names, kw) for names, attr, kw in COMMON_OPTIONS}
    assert opts["location"][0] == ("--vault", "-r") and opts["location"][1].get("envvar") == "RECOVAULT_VAULT"
    assert opts["passphrase_file"][0] == ("--passphrase-file",)
    assert opts["passphrase_file"][1].get("envvar") == "RECOVAULT_PASSPHRASE_FILE"  # glanced at: see below
    assert opts["passphrase_command"][0] == ("--passphrase-command",)
    assert opts["passphrase_command"][1].get("envvar") == "RECOVAULT_PASSPHRASE_COMMAND"
    argv = ["key", "--passphrase-file", "/p", "list", "-r", "/v"]  # both anywhere on the command line
    assert _entry._option(argv, *opts["location"][0]) == "/v"
    assert _entry._option(argv, *opts["passphrase_file"][0]) == "/p"


@pytest.mark.parametrize("argv, env, derives", [
    (["snapshots", "-r", "{v}"], {"RECOVAULT_PASSPHRASE_FILE": "{f}"}, True),
    (["snapshots", "-r", "{v}", "--passphrase-file", "{f}"], {"RECOVAULT_PASSPHRASE_COMMAND": "false"}, True),
    (["snapshots", "-r", "{v}", "--passphrase-command", "cat {f}"], {"RECOVAULT_PASSPHRASE": PASS}, False),
    (["snapshots", "-r", "{v}"], {"RECOVAULT_PASSPHRASE_COMMAND": "cat {f}", "RECOVAULT_PASSPHRASE": PASS}, False),
    (["snapshots", "-r", "{v}", "--passphrase-file", "-"], {"RECOVAULT_PASSPHRASE": PASS}, False),
    (["snapshots", "-r", "{v}"], {"RECOVAULT_PASSPHRASE_FILE": "-"}, False),
])
def test_the_glance_follows_the_passphrase_sources(vault_dir, tmp_path, monkeypatch, argv, env, derives):
    """A passphrase file from the environment is derived from early; standard input and a command never are
    (each can be read or run only once, and a command wins over RECOVAULT_PASSPHRASE)."""
    f = tmp_path / "pass"
    f.write_text(PASS + "\n")
    for k in ("RECOVAULT_PASSPHRASE", "RECOVAULT_PASSPHRASE_FILE", "RECOVAULT_PASSPHRASE_COMMAND", "RECOVAULT_VAULT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v.format(f=f))
    seen = []
    monkeypatch.setattr(keys, "derive_early", lambda storage, passphrase: seen.append(passphrase))
    monkeypatch.setattr("sys.stdin", None)  # reading standard input would fail the glance loudly here
    _entry._start_early_key_derivation([a.format(v=vault_dir, f=f) for a in argv])
    assert seen == ([PASS] if derives else [])
