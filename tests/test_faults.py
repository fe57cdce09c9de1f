"""The fault-injecting storage (storage/faults.py): each kind of fault does what it says, seeded and by rule,
and the CLI takes a plan from RECOVAULT_FAULTS (a bad one refused)."""
from __future__ import annotations

import pytest

from recovault.errors import StorageError, StoreUnavailable, UsageError
from recovault.storage import LocalStorage, open_storage
from recovault.storage.faults import ENV, FaultPlan, FaultRule, FaultStorage, parse_plan


def _store(tmp_path, **plan):
    return FaultStorage(LocalStorage(tmp_path / "s", create=True), FaultPlan(**plan))


def test_each_kind_of_fault(tmp_path):
    rules = tuple(FaultRule(kind, op, name) for kind, op, name in [
        ("eio", "put", "a"), ("enospc", "put", "b"), ("timeout", "get", "c"), ("torn", "put", "d"),
        ("lostack", "put", "e"), ("lostack", "delete", "f"), ("torn", "put_if_absent", "g"), ("eio", "stat", "h")])
    s = _store(tmp_path, rules=rules)
    inner = s.inner
    with pytest.raises(StorageError, match="input/output error.*injected"):
        s.put("a", b"x" * 10)
    assert not inner.exists("a")
    with pytest.raises(StorageError, match="no space left"):
        s.put("b", b"x")
    assert not inner.exists("b")
    inner.put("c", b"data")
    with pytest.raises(StoreUnavailable, match="timed out"):
        s.get("c")
    with pytest.raises(StorageError, match="part way"):
        s.put("d", b"0123456789")
    assert inner.get("d") == b"01234"  # the prefix stayed
    with pytest.raises(StoreUnavailable, match="connection reset"):
        s.put("e", b"whole")
    assert inner.get("e") == b"whole"  # the write happened
    inner.put("f", b"1")
    with pytest.raises(StoreUnavailable):
        s.delete("f")
    assert not inner.exists("f")
    with pytest.raises(StorageError):
        s.put_if_absent("g", b"abcd")
    assert inner.get("g") == b"ab"
    with pytest.raises(StorageError):
        s.exists("h")
    s.put("z", b"fine")  # no rule: untouched
    assert s.get("z") == b"fine" and s.local_path("z") is None  # reads may fail: they go through get


def test_nth_rule_and_seeded_random_faults(tmp_path):
    s = _store(tmp_path, rules=(FaultRule("eio", "put", "x/", nth=2),))
    s.put("x/1", b"1")
    with pytest.raises(StorageError):
        s.put("x/2", b"2")
    s.put("x/3", b"3")
    s.put("y", b"y")
    s = _store(tmp_path, rules=(FaultRule("eio", "put", "x/", nth=1), FaultRule("eio", "put", "x/", nth=2)))
    for i in (1, 2):  # each rule counts every call it matches, also one another rule failed
        with pytest.raises(StorageError):
            s.put(f"x/{i}", b"")
    s.put("x/3", b"3")

    def outcomes(seed):
        st = _store(tmp_path / str(seed), seed=seed, rate=0.3, kinds=frozenset({"eio", "lostack"}), after=2)
        out = []
        for i in range(60):
            try:
                st.put(f"o{i}", b"v")
                out.append("ok")
            except StorageError as exc:
                out.append(type(exc).__name__)
        return out

    a, b, c = outcomes(1), outcomes(1), outcomes(2)
    assert a == b and a != c  # the seed fixes the faults
    assert a[:2] == ["ok", "ok"]  # `after` spares the first calls
    assert {"ok", "StorageError", "StoreUnavailable"} == set(a)
    assert 8 < a.count("ok") < 55


def test_parse_plan_and_environment(tmp_path, monkeypatch):
    plan = parse_plan("seed=7, rate=0.5,kinds=eio+torn,ops=put,after=3,kill=9,delay=0,"
                      "rule=torn@put:index/#2,rule=eio@get#3+")
    assert plan == FaultPlan(7, 0.5, frozenset({"eio", "torn"}), frozenset({"put"}), 3, 9, 0.0,
                             (FaultRule("torn", "put", "index/", 2), FaultRule("eio", "get", "", 3, True)))
    assert not plan.may_fault("stat") and plan.may_fault("put") and plan.may_fault("get")  # get: by its rule
    for bad in ("rate=2", "kinds=eio+fire", "seed", "bogus=1", "rule=torn@get", "kill=0", "ops=put+x"):
        with pytest.raises(UsageError, match=ENV):
            parse_plan(bad)
    monkeypatch.setenv(ENV, "rule=eio@put:k")
    s = open_storage(str(tmp_path / "v"), create=True)
    assert isinstance(s, FaultStorage)
    with pytest.raises(StorageError):
        s.put("k", b"1")
    monkeypatch.setenv(ENV, "")
    assert not isinstance(open_storage(str(tmp_path / "v")), FaultStorage)


def make_small_vault(root):
    """A vault with one recovery point of a few files, under `root` (a pathlib.Path): (root, id, tree)."""
    import os
    import random

    from recovault import api
    from test_cli import PASSPHRASE, api_vault
    src = root / "src"
    src.mkdir(parents=True)
    rng = random.Random(5)
    tree = {f"f{i}": rng.randbytes(120_000) for i in range(5)}
    for name, data in tree.items():
        (src / name).write_bytes(data)
    vault = api_vault(root / "v")
    with api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(root / "c")) as v:
        point = api.backup(v, [os.fspath(src)])
    return root, point.id, tree


@pytest.fixture(scope="module")
def small_vault(tmp_path_factory):
    """make_small_vault once for the module; tests copy it."""
    return make_small_vault(tmp_path_factory.mktemp("fv"))


def _copy_vault(small_vault, tmp_path):
    import shutil
    root, pid, tree = small_vault
    shutil.copytree(root / "v", tmp_path / "v")
    return str(tmp_path / "v"), pid, tree, str(root / "src")


@pytest.mark.parametrize("rule,code", [("timeout@get:index/", 19), ("eio@get:journal/", 13),
                                       ("eio@get:snapshots/", 13), ("timeout@get:data/", 19)])
def test_check_stops_on_a_storage_error_rather_than_reporting_damage(small_vault, tmp_path, rule, code):
    """A read that fails (the store timed out, an I/O error) is no evidence of damage: check stops with
    that error, never calls the object damaged nor sends the operator to `repair`."""
    from test_cli import Cli, fails, ok
    vault, *_ = _copy_vault(small_vault, tmp_path)
    cli = Cli(tmp_path / "home")
    ok(cli("check", "--read-data", "--vault", vault))  # the agent cache is warm: what check reads itself fails
    msg = fails(cli("check", "--read-data", "--vault", vault, env={ENV: "rule=" + rule}), code, "injected fault")
    assert "damaged" not in msg and "problem" not in msg and "repair" not in msg
    ok(cli("check", "--read-data", "--vault", vault))


#: Seeds of the random-fault runs in CI (bench/faults.py runs many more).
SEEDS = range(3)
#: Storage exit codes a command under faults may end with (errors.py): 13 storage, 14 missing, 19 unavailable,
#: 24 no space.
STORE_CODES = (13, 14, 19, 24)


def _outcome(res) -> None:
    """Success, or one clear message with a storage exit code (never an internal error or a traceback)."""
    if res.returncode:
        errors = [line for line in res.stderr.splitlines() if line.startswith("recovault: error: ")]
        assert res.returncode in STORE_CODES and len(errors) == 1, (res.returncode, res.stderr)
        assert "injected fault" in errors[0] and "internal error" not in errors[0], errors[0]


def _restored(target: str, src: str, tree) -> bool:
    import os
    inner = os.path.join(target, src.lstrip("/"))
    for name, data in tree.items():
        with open(os.path.join(inner, name), "rb") as f:
            assert f.read() == data, name  # never a wrong byte
    return True


def faulted_round(small_vault, tmp_path, seed: int, rate: float = 0.06):
    """Backup, restore, check, forget and prune of a copy of `small_vault`, each under seeded random faults of
    every kind, each followed by a clean `check --read-data`; then a clean backup, check and restore. Returns
    each faulted command's exit code."""
    import os

    from test_cli import Cli, json_out, ok
    vault, pid, tree, src = _copy_vault(small_vault, tmp_path)
    cli = Cli(tmp_path / "home")
    plan = {ENV: f"seed={seed},rate={rate},delay=0.001"}
    with open(os.path.join(tmp_path, "new"), "wb") as f:  # a second source: the backup has packs to store
        f.write(os.urandom(300_000))
    runs = [("backup", src, str(tmp_path / "new")), ("restore", pid, "--target", str(tmp_path / "r")),
            ("check", "--read-data"), ("forget", "--allow-empty", pid),
            ("prune", "--margin", "0", "--max-unused", "0%")]
    codes = {}
    for args in runs:
        res = cli(*args, "--vault", vault, env=plan)
        _outcome(res)
        codes[args[0]] = res.returncode
        if args[0] == "restore" and res.returncode == 0:
            _restored(str(tmp_path / "r"), src, tree)
        if args[0] == "forget":
            back = cli("undelete", pid, "--vault", vault)  # the point stays for the checks below
            assert back.returncode == 0 or (back.returncode == 2 and "is not deleted" in back.stderr), back.stderr
        ok(cli("check", "--read-data", "--vault", vault))
    ok(cli("backup", src, str(tmp_path / "new"), "--vault", vault))
    assert json_out(cli("check", "--read-data", "--json", "--vault", vault))["ok"]
    ok(cli("restore", pid, "--target", str(tmp_path / "r2"), "--vault", vault))
    assert _restored(str(tmp_path / "r2"), src, tree)
    return codes


@pytest.mark.parametrize("seed", SEEDS)
def test_backup_restore_check_prune_under_random_faults(small_vault, tmp_path, seed):
    """Each command under seeded random faults of every kind either succeeds or fails with one storage
    message; afterwards (and after a clean rerun of a failed backup) `check --read-data` finds no damage and
    the first point restores byte for byte."""
    codes = faulted_round(small_vault, tmp_path, seed)
    assert set(codes) == {"backup", "restore", "check", "forget", "prune"}


@pytest.mark.parametrize("rule", ["torn@put:index/", "torn@put:snapshots/", "torn@put:journal/",
                                  "lostack@put:snapshots/"])
def test_a_failed_write_leaves_nothing_check_calls_damaged(small_vault, tmp_path, rule):
    """A backup whose write of an index file, a recovery point or a journal entry fails part way (the store
    kept a prefix under the name) or whose acknowledgement is lost stops with one message, and withdraws what
    it may have left: `check --read-data` passes, and the next backup succeeds."""
    import os

    from test_cli import Cli, fails, ok
    vault, pid, tree, src = _copy_vault(small_vault, tmp_path)
    cli = Cli(tmp_path / "home")
    with open(os.path.join(tmp_path, "new"), "wb") as f:
        f.write(os.urandom(200_000))
    res = cli("backup", src, str(tmp_path / "new"), "--vault", vault, env={ENV: "rule=" + rule})
    assert res.returncode in STORE_CODES, res.stderr
    fails(res, res.returncode, "injected fault")
    ok(cli("check", "--read-data", "--vault", vault))
    ok(cli("backup", src, str(tmp_path / "new"), "--vault", vault))
    ok(cli("check", "--read-data", "--vault", vault))


def _file_data_packs(vault: str, pid: str, cache: str):
    """The packs of `vault` that hold no tree of point `pid` (in the small vault: the files' data)."""
    from recovault import api
    from test_cli import PASSPHRASE
    with api.open_vault(vault, PASSPHRASE, cache_dir=cache) as v:
        trees = v.pack_name(v.blobs.locate(bytes.fromhex(v.find_snapshot(pid).tree)).pack)
        return [name for name in v.storage.list("data/") if name != trees]


@pytest.mark.parametrize("kind,code", [("eio", 13), ("timeout", 19)])
def test_restore_reports_a_storage_failure_as_such_not_as_corrupt_data(small_vault, tmp_path, kind, code):
    """Pack reads that fail (an I/O error, a timeout) leave files unrestored: the restore ends with the
    storage's own error and exit code, not "vault data is corrupt" (exit 15); run again, it restores all."""
    from test_cli import Cli, fails, ok
    vault, pid, tree, src = _copy_vault(small_vault, tmp_path)
    packs = _file_data_packs(vault, pid, str(tmp_path / "c"))
    assert packs
    cli = Cli(tmp_path / "home")
    plan = ",".join(f"rule={kind}@get:{name}" for name in packs)  # the trees read, every file's data not
    res = cli("restore", pid, "--target", str(tmp_path / "r"), "--vault", vault, env={ENV: plan})
    msg = fails(res, code, "could not be restored", "the storage failed", "injected fault", "run the restore again")
    assert "corrupt" not in msg
    ok(cli("restore", pid, "--target", str(tmp_path / "r"), "--vault", vault))
    assert _restored(str(tmp_path / "r"), src, tree)


@pytest.mark.parametrize("rule", ["torn@put:locks/", "lostack@put:locks/"])
def test_a_prune_whose_lease_write_failed_does_not_hold_the_lease(small_vault, tmp_path, rule):
    """A prune whose first write of its lease fails (torn, or its acknowledgement lost) stops, and takes the
    lease back: the next prune runs at once, not "another prune holds the vault's lease" (exit 17) for a
    lease term."""
    from test_cli import Cli, fails, ok
    vault, *_ = _copy_vault(small_vault, tmp_path)
    cli = Cli(tmp_path / "home")
    res = cli("prune", "--margin", "0", "--vault", vault, env={ENV: "rule=" + rule})
    fails(res, res.returncode, "injected fault", "locks/")
    ok(cli("prune", "--margin", "0", "--vault", vault))
