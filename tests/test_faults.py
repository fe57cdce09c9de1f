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
    plan = parse_plan("seed=7, rate=0.5,kinds=eio+torn,ops=put,after=3,kill=9,delay=0,rule=torn@put:index/#2")
    assert plan == FaultPlan(7, 0.5, frozenset({"eio", "torn"}), frozenset({"put"}), 3, 9, 0.0,
                             (FaultRule("torn", "put", "index/", 2),))
    assert not plan.may_fault("get") and plan.may_fault("put")
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


@pytest.fixture(scope="module")
def small_vault(tmp_path_factory):
    """A vault with one recovery point of a few files (made once; tests copy it)."""
    import os
    import random

    from recovault import api
    from test_cli import PASSPHRASE, api_vault
    root = tmp_path_factory.mktemp("fv")
    src = root / "src"
    src.mkdir()
    rng = random.Random(5)
    tree = {f"f{i}": rng.randbytes(120_000) for i in range(5)}
    for name, data in tree.items():
        (src / name).write_bytes(data)
    vault = api_vault(root / "v")
    with api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(root / "c")) as v:
        point = api.backup(v, [os.fspath(src)])
    return root, point.id, tree


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
