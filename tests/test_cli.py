"""End-to-end tests of the `recovault` command line, run as a subprocess (`python -m recovault`, the same entry
point as the installed `recovault` script, early key derivation included) against local vaults: JSON
output, exit codes and messages, corruption, kill -9 during a backup, key management.

Every invocation checks that no Python traceback reaches the user. Vaults that are not created by the CLI
itself are made through the API with tiny Argon2id parameters so each command unlocks quickly.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import pytest

import recovault
from recovault import api
from recovault.vault.records import RecoveryPoint
from recovault.jobs.walk import CACHEDIR_SIGNATURE
from recovault.vault import format as fmt
from recovault.vault.keys import KdfParams
from recovault.vault.repo import Settings

from e2e_tree import (
    NON_UTF8_DIR,
    SPARSE_FILES,
    assert_same,
    assert_sparse,
    b,
    build_tree,
    entries,
    flip_byte,
    rand_bytes,
    restored_root,
    state,
    write,
)

PASSPHRASE = "correct horse battery staple"
FAST_KDF = KdfParams(memory_kib=8, iterations=1, lanes=1)
# The directory the recovault package imported here lives in: the subprocesses run the same code.
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(recovault.__file__)))

# Runs the CLI with BackupJob._start (which hands files to the pipeline) patched so that $RV_TEST_VANISH is
# deleted between the walk and the read (as root, a chmod 000 file is still readable).
VANISH_BOOT = r"""
import os, sys
from recovault.jobs import backup as _b
_orig = _b.BackupJob._start
def _patched(self, files, sources=None):
    if os.path.exists(os.environ["RV_TEST_VANISH"]):
        os.unlink(os.environ["RV_TEST_VANISH"])
    return _orig(self, files, sources)
_b.BackupJob._start = _patched
from recovault.cli import main
main()
"""


class Cli:
    """Runs `python -m recovault.cli` with a private HOME (so a private agent cache)."""

    def __init__(self, home, passphrase: Optional[str] = PASSPHRASE) -> None:
        self.home = os.fspath(home)
        os.makedirs(self.home, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECOVAULT_")}
        env["PYTHONPATH"] = PKG_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["HOME"] = self.home
        env["XDG_CACHE_HOME"] = os.path.join(self.home, ".cache")
        if passphrase is not None:
            env["RECOVAULT_PASSPHRASE"] = passphrase
        self.env = env

    def cmd(self, *args, boot: Optional[str] = None) -> List[str]:
        head = [sys.executable, "-c", boot] if boot else [sys.executable, "-m", "recovault"]
        return head + [os.fspath(a) for a in args]

    def __call__(self, *args, env: Optional[Dict[str, Optional[str]]] = None, boot: Optional[str] = None,
                 timeout: float = 120, stdin: Optional[bytes] = None) -> subprocess.CompletedProcess:
        """Run `recovault ARGS`; standard input is /dev/null, or the bytes `stdin`."""
        e = dict(self.env)
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        res = subprocess.run(self.cmd(*args, boot=boot), env=e, capture_output=True, timeout=timeout,
                             **(dict(input=stdin) if stdin is not None else dict(stdin=subprocess.DEVNULL)))
        res.stdout = res.stdout.decode("utf-8", "surrogateescape")
        res.stderr = res.stderr.decode("utf-8", "surrogateescape")
        assert "Traceback" not in res.stderr, res.stderr
        assert "Traceback" not in res.stdout, res.stdout
        return res

    @property
    def cache_dir(self) -> str:
        return os.path.join(self.home, ".cache", "recovault")

# Runs the CLI with every LocalStorage call that touches index/ (or lists a prefix that covers it) written, one
# line each ("list index/", "get index/<id>"), to $RV_TEST_INDEX_LOG.
INDEX_LOG_BOOT = r"""
import os
from recovault.storage.local import LocalStorage
def _logged(method):
    orig = getattr(LocalStorage, method)
    def wrapper(self, name="", *args, **kwargs):
        if name.startswith("index/") or (method == "list" and "index/".startswith(name)):
            with open(os.environ["RV_TEST_INDEX_LOG"], "a") as log:
                log.write(f"{method} {name}\n")
        return orig(self, name, *args, **kwargs)
    return wrapper
for _m in ("get", "list", "stat", "put", "delete", "local_path"):
    setattr(LocalStorage, _m, _logged(_m))
from recovault.cli import main
main()
"""


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, f"exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    return res


def fails(res: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Assert exit `code` and a one-line error message containing every needle; return the message."""
    assert res.returncode == code, f"exit {res.returncode}, expected {code}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    errors = [line for line in res.stderr.splitlines() if line.startswith("recovault: error: ")]
    assert len(errors) == 1, res.stderr
    msg = errors[0]
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    return msg


def json_docs(text: str) -> List[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def json_out(res: subprocess.CompletedProcess) -> Any:
    ok(res)
    return json.loads(res.stdout)


def api_vault(path, settings: Optional[Settings] = None) -> str:
    """A vault made through the API with a fast KDF (the CLI then unlocks it in milliseconds)."""
    location = os.fspath(path)
    beside = location  # the cache goes beside the vault (an ec: set's: beside its first location, not in the cwd)
    if location.lower().startswith("ec:"):
        from recovault.storage.erasure import parse_location
        beside = parse_location(location).locations[0]
    api.init_vault(location, PASSPHRASE, settings=settings or Settings(
        min_size=16 << 10, avg_size=64 << 10, max_size=256 << 10, pack_size=1 << 20), kdf=FAST_KDF,
        cache_dir=beside + "-cache").close()
    return location


def object_files(vault, prefix: str) -> List[str]:
    """Paths of a vault's stored objects under `prefix` (no temp files)."""
    root = os.path.join(os.fspath(vault), prefix)
    out = []
    for dp, _dn, fns in os.walk(root):
        out += [os.path.join(dp, f) for f in fns if not f.startswith(".tmp-")]
    return sorted(out)


# ---------------------------------------------------------------- init, passphrases, vault errors


def test_init(tmp_path):
    cli = Cli(tmp_path / "home")
    vault = tmp_path / "vault"
    msg = fails(cli("init", "--vault", vault, env={"RECOVAULT_PASSPHRASE": "too short"}), 2, "16 characters")
    assert "passphrase" in msg
    assert not os.path.exists(vault / "config")
    fails(cli("init", "--vault", vault, env={"RECOVAULT_PASSPHRASE": None}), 2, "passphrase")
    # chunk sizes the chunker rejects are refused before anything is written
    fails(cli("init", "--vault", vault, "--chunk-min", "70000", "--chunk-avg", "100000", "--chunk-max", "60000"),
          2, "invalid")
    assert not os.path.exists(vault / "config")
    assert not os.path.exists(vault / "keys") or not os.listdir(vault / "keys")

    res = cli("init", "--vault", vault, "--json")
    doc = json_out(res)
    assert len(doc["id"]) == 32 and len(doc["keyid"]) == 32 and doc["vault"].startswith("file://")
    assert res.stderr == ""  # the passphrase-loss warning goes to stderr, and only without --json
    assert os.path.exists(vault / "config") and os.path.exists(vault / "keys" / doc["keyid"])
    fails(cli("init", "--vault", vault), 11, "already exists")
    # RECOVAULT_VAULT replaces --vault; the default Argon2id parameters unlock it
    assert json_out(cli("snapshots", "--json", env={"RECOVAULT_VAULT": os.fspath(vault)})) == []


def test_vault_and_usage_errors(tmp_path):
    cli = Cli(tmp_path / "home")
    fails(cli("snapshots", "--vault", tmp_path / "nowhere"), 10, "no vault")
    os.makedirs(tmp_path / "empty-dir")
    fails(cli("snapshots", "--vault", tmp_path / "empty-dir"), 10, "no vault")
    fails(cli("snapshots"), 2, "--vault")

    vault = api_vault(tmp_path / "vault")
    res = cli("snapshots", "--vault", vault, env={"RECOVAULT_PASSPHRASE": "not the passphrase at all"})
    fails(res, 12, "wrong passphrase")
    assert res.stderr.count("\n") == 1  # one line, nothing else
    res = cli("--json", "snapshots", "--vault", vault, env={"RECOVAULT_PASSPHRASE": "not the passphrase at all"})
    assert res.returncode == 12
    doc = json.loads(res.stdout)  # the error as one JSON document on stdout
    assert doc["exit_code"] == 12 and "wrong passphrase" in doc["error"]

    pf = write(tmp_path / "pass.txt", PASSPHRASE.encode() + b"\n")
    ok(cli("snapshots", "--vault", vault, "--passphrase-file", pf, env={"RECOVAULT_PASSPHRASE": None}))
    fails(cli("snapshots", "--vault", vault, "--passphrase-file", tmp_path / "no-such-file"), 2, "passphrase file")

    res = cli("backup", "--vault", vault)
    assert res.returncode == 2 and ("PATHS" in res.stderr or "nothing to back up" in res.stderr), res.stderr
    fails(cli("backup", "--vault", vault, tmp_path / "does-not-exist"), 2, "does-not-exist")
    fails(cli("restore", "--vault", vault, "latest", "--target", tmp_path / "out"), 16, "no recovery points")
    fails(cli("check", "--vault", vault, "--read-data-subset", "half"), 2, "half")


# ---------------------------------------------------------------- a round trip with --json everywhere


def test_round_trip_json(tmp_path):
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "vault")
    src = build_tree(tmp_path / "src", big=False, doc=True)
    expected = state(src)

    snap = json_out(cli("backup", "--vault", vault, "--json", "--tag", "first", src))
    assert snap["mode"] == "full" and snap["paths"] == [os.fsdecode(src)] and snap["tags"] == ["first"]
    assert snap["complete"] is True and snap["stats"]["files_new"] > 100 and snap["stats"]["errors"] == 0
    sid = snap["id"]

    snaps = json_out(cli("snapshots", "--vault", vault, "--json"))
    assert [s["id"] for s in snaps] == [sid] and snaps[0]["stats"] == snap["stats"]

    listing = json_out(cli("ls", "--vault", vault, "--json", "-R", sid[:8], src))
    by_path = {b(e["path"]): e for e in listing}
    want = {os.path.join(src, rel): rec for rel, rec in expected.items() if rel}
    assert set(by_path) == set(want)
    for p, rec in want.items():
        e = by_path[p]
        assert e["mtime_ns"] == rec["mtime_ns"] and e["uid"] == rec["uid"], p
        if rec["type"] == stat.S_IFREG:
            assert e["type"] == "f" and e["size"] == rec["size"] and e["mode"] == rec["mode"], p
    one = json_out(cli("ls", "--vault", vault, "--json", "latest", os.path.join(src, b"text/t01.txt")))
    assert len(one) == 1 and one[0]["size"] == expected[b"text/t01.txt"]["size"]
    fails(cli("ls", "--vault", vault, "latest", os.path.join(src, b"no-such")), 16, "no-such")
    text = ok(cli("ls", "--vault", vault, "latest", os.path.join(src, b"names"))).stdout  # non-UTF-8 names
    assert "with space" in text and "caf" in text and "-dir" in text

    res = json_out(cli("restore", "--vault", vault, "--json", "--verify", sid[:8], "--target", tmp_path / "out"))
    assert res["snapshot"] == sid and res["errors"] == [] and res["stats"]["verified"] > 100
    out = restored_root(tmp_path / "out", src)
    assert_same(expected, out)
    for rel, size in SPARSE_FILES.items():
        assert_sparse(os.path.join(out, rel), size)

    # "another host": an empty agent cache; restore one folder of the latest point
    other = Cli(tmp_path / "other-home")
    pick = os.path.join(src, NON_UTF8_DIR)
    res = json_out(other("restore", "--vault", vault, "--json", "latest", pick, "--target", tmp_path / "out2"))
    assert res["stats"]["files"] == 1 and res["errors"] == []
    out2 = restored_root(tmp_path / "out2", src)
    assert sorted(rel for rel, _ in entries(out2) if rel) == [b"names", NON_UTF8_DIR, NON_UTF8_DIR + b"/inside.txt"]
    assert state(os.path.join(out2, NON_UTF8_DIR)) == state(os.path.join(src, NON_UTF8_DIR))
    assert os.listdir(other.cache_dir)

    chk = json_out(cli("check", "--vault", vault, "--json", "--read-data"))
    assert chk["ok"] is True and chk["problems"] == []
    assert chk["stats"]["snapshots"] == 1 and chk["stats"]["packs_read"] == chk["stats"]["packs"] > 1
    st = json_out(cli("stats", "--vault", vault, "--json"))
    assert st["snapshots"] == 1 and st["packs"] > 1 and st["blobs"] > 10
    assert 0 < st["stored_bytes"] and st["protected_bytes_latest"] == snap["stats"]["bytes_total"]

    # text output of an unchanged incremental
    res = ok(cli("backup", "--vault", vault, src))
    assert "(incremental)" in res.stdout and "0 new, 0 changed" in res.stdout
    fails(cli("restore", "--vault", vault, "0" * 16, "--target", tmp_path / "x"), 16, "0" * 16)
    fails(cli("restore", "--vault", vault, "latest", "/not/backed/up", "--target", tmp_path / "x"), 16,
          "/not/backed/up")


# ---------------------------------------------------------------- excludes


def test_excludes(tmp_path):
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "vault")
    src = tmp_path / "src"
    for rel in ["keep.txt", "a.tmp", "sub/b.tmp", "sub/keep.log", "node_modules/x.js", "listed.txt",
                "sub/listed.txt", "cache/blob", "cache/deep/er"]:
        write(src / rel, rel.encode())
    write(src / "cache/CACHEDIR.TAG", CACHEDIR_SIGNATURE + b"\n")
    ef = write(tmp_path / "exclude-file", b"# patterns\nlisted.txt\n")
    ok(cli("backup", "--vault", vault, src, "--exclude", "*.tmp", "-e", "node_modules/", "--exclude-file", ef,
           "--exclude-caches"))
    listing = json_out(cli("ls", "--vault", vault, "--json", "-R", "latest", src))
    got = sorted(os.path.relpath(e["path"], os.fspath(src)) for e in listing)
    assert got == ["cache", "cache/CACHEDIR.TAG", "keep.txt", "sub", "sub/keep.log"]


@pytest.mark.parametrize("pattern", ["[z-a]", "a[z-a]b/"])
def test_bad_exclude_pattern_is_a_usage_error(tmp_path, pattern):
    """A pattern that cannot be compiled is refused before anything is written, naming the pattern."""
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "vault")
    src = tmp_path / "src"
    write(src / "f", b"x")
    msg = fails(cli("backup", "--vault", vault, src, "-e", "*.tmp", "-e", pattern), 2, repr(pattern),
                "bad character range")
    assert "internal error" not in msg and "*.tmp" not in msg
    assert object_files(vault, "snapshots") == []


def test_excludes_that_remove_everything_warn(tmp_path):
    """`--exclude '***'` still saves (the named directories, empty), but says so for each one emptied."""
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "vault")
    src, other = tmp_path / "src", tmp_path / "other"
    write(src / "sub/f", b"x")
    write(other / "f.txt", b"y")
    res = ok(cli("backup", "--vault", vault, src, "-e", "***"))
    assert f"recovault: warning: {src}: the exclude patterns removed everything" in res.stderr
    assert json_out(cli("ls", "--vault", vault, "--json", "-R", "latest", src)) == []
    res = ok(cli("backup", "--vault", vault, src, other, "-e", "*.txt"))  # only `other` is emptied
    assert f"warning: {other}: the exclude patterns removed everything" in res.stderr
    assert "warning" not in res.stderr.replace(f"warning: {other}:", "")
    res = ok(cli("backup", "--vault", vault, src, "-e", "*.txt"))  # nothing removed: no word
    assert "warning" not in res.stderr


def test_path_beneath_a_named_symlink_is_refused(tmp_path):
    """`backup s/link s/link/file`: the link is backed up as a link, so nothing can be stored beneath it;
    the command is refused naming both, instead of saving the link as a made-up directory (mtime 1970)."""
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "vault")
    s = tmp_path / "s"
    write(s / "real/file", b"data")
    os.symlink("real", s / "link")
    msg = fails(cli("backup", "--vault", vault, s / "link", s / "link" / "file"), 2, f"{s}/link/file",
                f"beneath {s}/link, a symlink", f"({s}/real)")
    assert object_files(vault, "snapshots") == []
    fails(cli("backup", "--vault", vault, s / "link", "--image", s / "link" / "file"), 2, "a symlink")
    # Each alone is fine: the link as a link; a path beneath it with the link as the directory it leads to.
    ok(cli("backup", "--vault", vault, s / "link"))
    ok(cli("restore", "--vault", vault, "latest", "--target", tmp_path / "r1"))
    assert os.readlink(restored_root(tmp_path / "r1", s / "link")) == b"real"
    ok(cli("backup", "--vault", vault, s / "link" / "file", s / "real"))
    ok(cli("restore", "--vault", vault, "latest", "--target", tmp_path / "r2"))
    link_dir = restored_root(tmp_path / "r2", s / "link")
    assert os.path.isdir(link_dir) and not os.path.islink(link_dir)
    assert os.stat(link_dir).st_mtime_ns == os.stat(s / "real").st_mtime_ns
    assert open(os.path.join(link_dir, b"file"), "rb").read() == b"data"


# ---------------------------------------------------------------- a file that cannot be read


def test_unreadable_file_exit_3(tmp_path):
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "vault")
    src = tmp_path / "src"
    write(src / "ok.txt", b"fine")
    victim = write(src / "dir/victim.txt", b"v" * 100_000)
    res = cli("backup", "--vault", vault, "--json", src, boot=VANISH_BOOT,
              env={"RV_TEST_VANISH": os.fsdecode(victim)})
    msg = fails(res, 3, "could not be read")
    assert os.fsdecode(victim) in res.stderr.replace(msg, "")  # the warning names the file
    snap = json_docs(res.stdout)[0]
    assert [e["path"] for e in snap["errors"]] == [os.fsdecode(victim)] and snap["complete"] is False

    snaps = json_out(cli("snapshots", "--vault", vault, "--json"))
    assert snaps[-1]["errors"] == snap["errors"] and snaps[-1]["stats"]["errors"] == 1
    listing = json_out(cli("ls", "--vault", vault, "--json", "-R", "latest", src))
    assert sorted(os.path.relpath(e["path"], os.fspath(src)) for e in listing) == ["dir", "ok.txt"]
    res = ok(cli("snapshots", "--vault", vault))
    assert "(incomplete)" in res.stdout


# ---------------------------------------------------------------- corruption


@pytest.fixture(scope="module")
def corrupt_base(tmp_path_factory):
    """A vault (fast KDF, small packs) with one recovery point of a small tree; tests corrupt copies of it."""
    base = tmp_path_factory.mktemp("corrupt-base")
    src = base / "src"
    rng = random.Random(5)
    write(src / "big.bin", rand_bytes(rng, 3 << 20))
    write(src / "small.txt", b"small and untouched\n")
    write(src / "mid.bin", rand_bytes(rng, 400_000))
    vault = api_vault(base / "vault")
    with api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(base / "cache")) as v:
        snap = api.backup(v, [os.fspath(src)])
        big_node = v.find_node(snap, os.path.join(os.fspath(src), "big.bin"))
        loc = v.locate(bytes.fromhex(big_node.content[0]))
        tree_packs = {l.pack for l in v.locations.values() if l.type == fmt.BLOB_TREE}
        data_packs = {l.pack for l in v.locations.values() if l.type == fmt.BLOB_DATA}
        assert not (tree_packs & data_packs)
    return SimpleNamespace(base=base, src=src, vault=vault, snap=snap, big_pack=v.pack_name(loc.pack),
                           big_offset=loc.offset + loc.length // 2, expected=state(src))


def corrupt_copy(ns, tmp_path) -> str:
    dst = os.fspath(tmp_path / "vault")
    shutil.copytree(ns.vault, dst)
    return dst


def test_corrupt_data_pack(corrupt_base, tmp_path):
    ns = corrupt_base
    cli = Cli(tmp_path / "home")
    vault = corrupt_copy(ns, tmp_path)
    flip_byte(os.path.join(vault, ns.big_pack), ns.big_offset)
    pack_id = fmt.name_to_id(ns.big_pack)

    res = cli("restore", "--vault", vault, "latest", "--target", tmp_path / "out")
    assert res.returncode != 0
    assert pack_id in res.stderr and "big.bin" in res.stderr and "corrupt" in res.stderr
    out = restored_root(tmp_path / "out", ns.src)
    assert open(os.path.join(out, b"small.txt"), "rb").read() == b"small and untouched\n"

    ok(cli("check", "--vault", vault))  # the structure is intact; only reading the data finds it
    res = cli("check", "--vault", vault, "--read-data", "--json")
    fails(res, 15, "problem")
    report = json_docs(res.stdout)[0]
    assert report["ok"] is False and any(pack_id in p for p in report["problems"])


def test_missing_pack(corrupt_base, tmp_path):
    ns = corrupt_base
    cli = Cli(tmp_path / "home")
    vault = corrupt_copy(ns, tmp_path)
    os.unlink(os.path.join(vault, ns.big_pack))
    pack_id = fmt.name_to_id(ns.big_pack)

    res = cli("check", "--vault", vault)
    fails(res, 15, "missing")
    assert pack_id in res.stdout + res.stderr
    res = cli("restore", "--vault", vault, "latest", "--target", tmp_path / "out")
    assert res.returncode != 0
    assert pack_id in res.stderr and "missing" in res.stderr


def test_corrupt_snapshot(corrupt_base, tmp_path):
    ns = corrupt_base
    cli = Cli(tmp_path / "home")
    vault = corrupt_copy(ns, tmp_path)
    [snapfile] = object_files(vault, "snapshots")
    flip_byte(snapfile, 40)
    fails(cli("snapshots", "--vault", vault), 15, ns.snap.id[:8], "corrupt")
    fails(cli("restore", "--vault", vault, "latest", "--target", tmp_path / "out"), 15, ns.snap.id[:8])
    fails(cli("check", "--vault", vault), 15, ns.snap.id[:8])


def test_corrupt_index(corrupt_base, tmp_path):
    ns = corrupt_base
    cli = Cli(tmp_path / "home")
    vault = corrupt_copy(ns, tmp_path)
    ok(cli("stats", "--vault", vault))  # fills this host's agent cache with the (good) index
    index = object_files(vault, "index")[0]
    flip_byte(index, 100)
    name = fmt.name_to_id(index)
    # another host (no cache) lists the points without reading the index: no index warning
    res = ok(Cli(tmp_path / "other")("snapshots", "--vault", vault))
    assert name not in res.stderr and "warning" not in res.stderr and ns.snap.id[:8] in res.stdout
    # but a command that uses blobs names the damaged index, skips it and reads the packs' headers instead
    res = ok(Cli(tmp_path / "other")("ls", "--vault", vault, "latest"))
    assert name in res.stderr and "warning" in res.stderr
    # this host still works from its cache, but check must look at what the vault stores
    res = cli("check", "--vault", vault)
    fails(res, 15)
    assert name in res.stdout + res.stderr


def test_corrupt_config(corrupt_base, tmp_path):
    ns = corrupt_base
    cli = Cli(tmp_path / "home")
    vault = corrupt_copy(ns, tmp_path)
    cfg = os.path.join(vault, "config")
    raw = open(cfg, "rb").read()
    doc = json.loads(raw)
    pos = raw.index(doc["settings"].encode()) + 20
    flip = raw[:pos] + (b"0" if raw[pos:pos + 1] != b"0" else b"1") + raw[pos + 1:]
    os.chmod(cfg, 0o600)
    open(cfg, "wb").write(flip)
    fails(cli("snapshots", "--vault", vault), 15, "config")
    flip_byte(cfg, 0)  # not JSON any more
    fails(cli("snapshots", "--vault", vault), 15, "config")


def test_corrupt_key_file(corrupt_base, tmp_path):
    ns = corrupt_base
    cli = Cli(tmp_path / "home")
    vault = corrupt_copy(ns, tmp_path)
    [keyfile] = object_files(vault, "keys")
    raw = open(keyfile, "rb").read()
    data = json.loads(raw)["data"].encode()
    pos = raw.index(data) + 10
    open(keyfile, "wb").write(raw[:pos] + (b"A" if raw[pos:pos + 1] != b"A" else b"B") + raw[pos + 1:])
    # an altered ciphertext does not authenticate; the key file's digest tells the edit from a wrong passphrase
    # (a version 1 key file, without digest, reports it as a wrong passphrase: tests/test_keys.py)
    fails(cli("snapshots", "--vault", vault), 15, "key file", fmt.name_to_id(keyfile), "changed after it was written")
    fails(cli("snapshots", "--vault", vault, env={"RECOVAULT_PASSPHRASE": "another passphrase, wrong"}), 15,
          "key file", fmt.name_to_id(keyfile))
    flip_byte(keyfile, 0)
    fails(cli("snapshots", "--vault", vault), 15, "key file", fmt.name_to_id(keyfile))


# ---------------------------------------------------------------- kill -9 during a backup


def test_kill_9_during_backup(tmp_path):
    cli = Cli(tmp_path / "home")
    vault = tmp_path / "vault"
    src = tmp_path / "src"
    for i in range(20):
        write(src / f"part-{i:02d}.bin", random.Random(i).randbytes(8 << 20))
    write(src / "small/a.txt", b"a small file\n")
    json_out(cli("init", "--vault", vault, "--json", "--chunk-min", "65536", "--chunk-avg", "262144",
                 "--chunk-max", "1048576"))

    proc = subprocess.Popen(cli.cmd("backup", "--vault", vault, src), env=cli.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    try:
        while not object_files(vault, "data"):
            assert proc.poll() is None, "the backup ended before any pack was written"
            assert time.monotonic() - t0 < 60
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert object_files(vault, "data") and not object_files(vault, "snapshots")

    report = json_out(cli("check", "--vault", vault, "--json"))
    assert report["ok"] is True and report["problems"] == [] and report["stats"]["snapshots"] == 0
    if not object_files(vault, "index"):  # the killed backup's packs: garbage, a warning only
        assert any("no index lists" in w for w in report["warnings"]), report

    snap = json_out(cli("backup", "--vault", vault, "--json", src))
    assert snap["complete"] is True and snap["stats"]["bytes_read"] == (160 << 20) + 13
    res = json_out(cli("restore", "--vault", vault, "--json", "latest", "--target", tmp_path / "out"))
    assert res["errors"] == []
    assert_same(state(src), restored_root(tmp_path / "out", src))
    report = json_out(cli("check", "--vault", vault, "--json"))
    assert report["ok"] is True


# ---------------------------------------------------------------- keys


def test_key_add_list_passwd_remove(tmp_path):
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "vault")
    p2 = "a second passphrase for the vault"
    p3 = "the replacement of the second one"
    f2 = write(tmp_path / "p2", p2.encode() + b"\n")
    f3 = write(tmp_path / "p3", p3.encode())
    short = write(tmp_path / "short", b"short")
    first = json_out(cli("key", "list", "--vault", vault, "--json"))
    assert len(first) == 1 and first[0]["current"] is True
    k1 = first[0]["keyid"]

    fails(cli("key", "add", "--vault", vault, "--new-passphrase-file", short), 2, "16 characters")
    k2 = json_out(cli("key", "add", "--vault", vault, "--json", "--new-passphrase-file", f2,
                      "--label", "second"))["keyid"]
    keys = {k["keyid"]: k for k in json_out(cli("key", "list", "--vault", vault, "--json"))}
    assert set(keys) == {k1, k2} and keys[k2]["label"] == "second" and keys[k1]["current"]
    ok(cli("snapshots", "--vault", vault, env={"RECOVAULT_PASSPHRASE": p2}))

    k3 = json_out(cli("key", "passwd", "--vault", vault, "--json", "--new-passphrase-file", f3,
                      env={"RECOVAULT_PASSPHRASE": p2}))["keyid"]
    fails(cli("snapshots", "--vault", vault, env={"RECOVAULT_PASSPHRASE": p2}), 12, "wrong passphrase")

    fails(cli("key", "remove", "--vault", vault, k3[:10], env={"RECOVAULT_PASSPHRASE": p3}), 2, "unlocked")
    assert json_out(cli("key", "remove", "--vault", vault, "--json", k1[:10],
                        env={"RECOVAULT_PASSPHRASE": p3})) == {"removed": k1}
    fails(cli("snapshots", "--vault", vault), 12, "wrong passphrase")
    keys = json_out(cli("key", "list", "--vault", vault, "--json", "--passphrase-file", f3))
    assert [(k["keyid"], k["current"], k["label"]) for k in keys] == [(k3, True, "second")]


# ---------------------------------------------------------------- the common options, before or after the command


def test_only_commands_that_use_blobs_read_the_index(tmp_path):
    """Opening a vault does not load the index: listing points and managing keys never list or read index/
    (with many index files that was most of their time); backup, restore, check and ls still load it."""
    vault = api_vault(tmp_path / "vault")
    src = tmp_path / "src"
    write(src / "a.txt", rand_bytes(random.Random(1), 200_000))
    ok(Cli(tmp_path / "h0")("backup", "--vault", vault, src))
    write(src / "b.txt", rand_bytes(random.Random(2), 100_000))
    log = tmp_path / "index.log"
    runs = iter(range(1, 100))

    def index_calls(*args) -> List[str]:
        """The index/ calls of one command, run with a cold agent cache (a fresh home)."""
        if log.exists():
            log.unlink()
        ok(Cli(tmp_path / f"h{next(runs)}")(*args, "--vault", vault, boot=INDEX_LOG_BOOT,
                                            env={"RV_TEST_INDEX_LOG": os.fspath(log)}))
        return log.read_text().splitlines() if log.exists() else []

    def loads_index(calls: List[str]) -> bool:
        return "list index/" in calls and any(c.startswith("get index/") for c in calls)

    assert loads_index(index_calls("backup", src))
    assert index_calls("snapshots") == []
    assert index_calls("snapshots", "--json") == []
    assert index_calls("key", "list") == []
    assert index_calls("key", "add", "--new-passphrase-file", write(tmp_path / "p2", b"another passphrase here")) == []
    assert loads_index(index_calls("ls", "latest"))
    assert loads_index(index_calls("restore", "latest", "--target", tmp_path / "out"))
    assert loads_index(index_calls("check"))
    assert loads_index(index_calls("stats"))


def run_main(argv: List[str], capsys) -> SimpleNamespace:
    """`recovault ARGV` in this process (fast: no interpreter start-up): exit code, stdout, stderr."""
    from recovault.cli import main
    with pytest.raises(SystemExit) as exc:
        main([os.fspath(a) for a in argv])
    out = capsys.readouterr()
    return SimpleNamespace(code=exc.value.code, out=out.out, err=out.err)


@pytest.mark.parametrize("argv, env, named", [
    (["snapshots"], "env", "env"),
    (["--vault", "before", "snapshots"], "env", "before"),
    (["snapshots", "--vault", "after"], "env", "after"),
    (["-r", "before", "snapshots", "-r", "after"], None, "after"),
    (["--vault=before", "snapshots"], None, "before"),
    (["--vault", "before", "key", "list"], "env", "before"),
    (["key", "--vault", "before", "list", "--vault", "after"], "env", "after"),
    (["key", "list", "-r", "after"], "env", "after"),
])
def test_vault_option_before_after_and_env(tmp_path, monkeypatch, capsys, argv, env, named):
    """--vault/-r is accepted before and after the command name; after wins over before, both over
    RECOVAULT_VAULT (whichever is used is the one the error names)."""
    monkeypatch.chdir(tmp_path)
    if env:
        monkeypatch.setenv("RECOVAULT_VAULT", os.fspath(tmp_path / env))
    else:
        monkeypatch.delenv("RECOVAULT_VAULT", raising=False)
    monkeypatch.setenv("RECOVAULT_PASSPHRASE", PASSPHRASE)
    res = run_main(argv, capsys)
    assert res.code == 10 and res.err.startswith("recovault: error: no vault at "), res.err
    assert os.fspath(tmp_path / named) in res.err
    for other in {"env", "before", "after"} - {named}:
        assert os.fspath(tmp_path / other) not in res.err


@pytest.mark.parametrize("argv", [["--json", "snapshots"], ["snapshots", "--json"], ["key", "--json", "list"]])
def test_json_and_passphrase_file_before_or_after(tmp_path, monkeypatch, capsys, argv):
    vault = api_vault(tmp_path / "vault")
    monkeypatch.delenv("RECOVAULT_PASSPHRASE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", os.fspath(tmp_path / "cache"))
    pf = write(tmp_path / "pass.txt", PASSPHRASE.encode() + b"\n")
    res = run_main(["--passphrase-file", pf, "--vault", vault] + argv, capsys)
    assert res.code == 0, res.err
    assert isinstance(json.loads(res.out), list)
    res = run_main(argv + ["--passphrase-file", tmp_path / "missing", "--vault", vault], capsys)
    assert res.code == 2 and json.loads(res.out)["exit_code"] == 2 and "passphrase file" in res.err


def test_cache_dir_option(tmp_path, monkeypatch, capsys):
    vault = api_vault(tmp_path / "vault")
    monkeypatch.setenv("RECOVAULT_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("XDG_CACHE_HOME", os.fspath(tmp_path / "xdg"))
    assert run_main(["--cache-dir", tmp_path / "before", "snapshots", "--vault", vault], capsys).code == 0
    assert run_main(["snapshots", "--vault", vault, "--cache-dir", tmp_path / "after"], capsys).code == 0
    assert os.listdir(tmp_path / "before") and os.listdir(tmp_path / "after")
    assert not os.path.exists(tmp_path / "xdg")


def test_every_command_is_listed_and_loaded_only_when_run():
    """cli.COMMANDS names each command's module; a run imports that one command, and neither --help nor a
    command's parsing imports the vault or the C++ core (start-up time is part of every run)."""
    from recovault.cli import COMMANDS, cli
    import click
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        assert cli.get_command(ctx, name).name == name
    probe = ("import sys\nfrom recovault.cli import cli\n"
             "try:\n    cli.main(sys.argv[1:], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
             "print(' '.join(sorted(m for m in sys.modules if m.startswith(('recovault.', 'rich')))))")
    env = dict(os.environ, PYTHONPATH=PKG_PARENT)
    for argv, cmd_modules in [(["--help"], {f"recovault.cli.{m}" for m in COMMANDS.values()}),
                              (["snapshots", "--help"], {"recovault.cli.snapshots_cmd"}),
                              (["key", "list", "--help"], {"recovault.cli.key_cmd"})]:
        p = subprocess.run([sys.executable, "-c", probe, *argv], env=env, capture_output=True, text=True, timeout=60)
        loaded = set(p.stdout.split("\n")[-2].split())
        assert {m for m in loaded if m.endswith("_cmd")} == cmd_modules, argv
        assert not {m for m in loaded if m.startswith(("recovault.vault", "recovault.core", "recovault._core",
                                                        "recovault.storage", "rich"))}, (argv, loaded)


def test_every_exit_code_is_in_the_readme():
    """Each error class's exit code (and main's 1 and 130) has its entry in the README's exit-code line."""
    import re
    from recovault import errors
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    line = readme[readme.index("Exit codes: "):].split("\n\n")[0]
    documented = {int(c) for c in re.findall(r"(?:: |; )(\d+) \w", " ".join(line.split()))}

    def subclasses(cls):
        return [cls] + [s for c in cls.__subclasses__() for s in subclasses(c)]
    codes = {cls.exit_code for cls in subclasses(errors.RecovaultError)} | {0, 1, 130}
    assert codes <= documented, sorted(codes - documented)


def test_a_point_without_stats_lists(tmp_path, monkeypatch, capsys):
    """A recovery point written by another tool (an import, a newer recovault) may carry no stats: listing
    it and the vault's stats still work (they once stopped with an internal error)."""
    monkeypatch.setenv("RECOVAULT_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    vault = api_vault(tmp_path / "v")
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        tree = v.save_tree([]).hex()
        v.flush()
        sid = v.save_snapshot(RecoveryPoint(time="2026-01-01T00:00:00.000000Z", host="h", paths=["/x"], tree=tree))
    for argv in (["snapshots"], ["stats"]):
        res = run_main(argv + ["--vault", vault], capsys)
        assert res.code == 0, res.err
    assert sid[:8] in run_main(["snapshots", "--vault", vault], capsys).out
