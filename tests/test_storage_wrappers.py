"""Storage wrappers (storage/wrappers.py): forwarding, metrics, rate limits, and how open_storage and the CLI
apply them. The local back end's own tests (test_storage.py) run again here through each wrapper."""
from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from typing import Any, List, Optional

import pytest

from recovault.errors import ObjectMissing, StorageError, UsageError
from recovault.storage import LocalStorage, ObjectInfo, Storage, open_storage
from recovault.storage import wrappers
from recovault.storage.limits import Schedule, TransferLimiter, TransferLimits, parse_rate
from recovault.storage.wrappers import LimitedStorage, MetricsStorage, StorageMetrics, StorageWrapper

import test_storage
from test_cli import Cli, api_vault, fails, ok
from test_storage import *  # noqa: F401,F403 - the local back end's tests, run through the wrappers below
from test_storage_limits import FakeClock

KiB, MiB = 1024, 1024 * 1024

# The tests of a store run again; not those about locations (open_storage: no store to wrap), nor the local
# file's path, which a LimitedStorage with a download limit does not give (its own test is below).
for _name, _test in list(vars(test_storage).items()):
    if _name.startswith("test_") and ("store" not in inspect.signature(_test).parameters
                                      or _name == "test_local_path_is_the_object_file"):
        del globals()[_name]


def _fast_limiter() -> TransferLimiter:
    return TransferLimiter(TransferLimits(Schedule(1 << 30, 1 << 30), Schedule(1 << 30, 1 << 30)))


# Through a store whose downloads are limited, an object is not a local file (local_path is None), and a get
# is ranged; LocalStorage reads ranges of data/ objects through descriptors it keeps open (packs are
# content-addressed, never replaced by other bytes), so an overwritten data/ object is not read again. The
# tests that need either run through the other wrappers (test_limited_get_reads_a_replaced_object covers
# replacement of the objects a vault does rewrite).
KINDS = ("metrics", "upload-limited+metrics", "limited", "limited+metrics")


def needs_local_files(test) -> bool:
    return test.__name__ == "test_put_get_roundtrip_and_overwrite" or "local_path(" in inspect.getsource(test)


def pytest_generate_tests(metafunc):
    if "store" in metafunc.fixturenames:
        local = needs_local_files(metafunc.function)
        metafunc.parametrize("store", [k for k in KINDS if not (local and k.startswith("limited"))], indirect=True)


@pytest.fixture
def store(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Storage:
    """The local store behind wrappers; limited ones fetch gets in 5-byte ranges and stream puts 5 bytes a
    read (every range and piece path runs on the small objects of the tests)."""
    monkeypatch.setattr(wrappers, "GET_PIECE", 5)
    s: Storage = LocalStorage(tmp_path / "vault", create=True)
    if "metrics" in request.param:
        s = MetricsStorage(s, StorageMetrics())
    if request.param.startswith("limited"):
        s = LimitedStorage(s, _fast_limiter())
    elif request.param.startswith("upload-limited"):
        s = LimitedStorage(s, TransferLimiter(TransferLimits(upload=Schedule(1 << 30, 1 << 30))))
    return s


def test_limited_get_reads_a_replaced_object(tmp_path, monkeypatch):
    """Objects a vault rewrites in place (keys, sessions, the config) read whole and current through a
    download limit, also when larger than one range."""
    monkeypatch.setattr(wrappers, "GET_PIECE", 5)
    w = LimitedStorage(LocalStorage(tmp_path / "v", create=True), _fast_limiter())
    for name in ("sessions/abc", "keys/k", "config"):
        w.put(name, b"first version")
        assert w.get(name) == b"first version"
        w.put(name, b"the second version")
        assert w.get(name) == b"the second version" and w.get(name, 4, 6) == b"second"


class Recorder(Storage):
    """A back end that records each call it gets (and has put_if_absent, as object stores will)."""

    def __init__(self) -> None:
        self.calls: List[tuple] = []
        self.objects = {"a": b"0123456789" * 1000}

    @property
    def url(self) -> str:
        return "rec://x"

    def put(self, name: str, data: Any) -> None:
        self.calls.append(("put", name, data))
        self.objects[name] = bytes(data)

    def put_if_absent(self, name: str, data: Any) -> bool:
        self.calls.append(("put_if_absent", name))
        if name in self.objects:
            return False
        self.objects[name] = bytes(data)
        return True

    def get(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        self.calls.append(("get", name, offset, length))
        if name not in self.objects:
            raise ObjectMissing(f"no object {name}")
        data = self.objects[name]
        return data[offset:] if length is None else data[offset:offset + length]

    def list(self, prefix: str = "") -> Any:
        self.calls.append(("list", prefix))
        return iter(sorted(n for n in self.objects if n.startswith(prefix)))

    def list_info(self, prefix: str = "") -> Any:
        self.calls.append(("list_info", prefix))
        return iter([ObjectInfo(n, len(d), 1.0) for n, d in sorted(self.objects.items()) if n.startswith(prefix)])

    def stat(self, name: str) -> ObjectInfo:
        self.calls.append(("stat", name))
        if name not in self.objects:
            raise ObjectMissing(f"no object {name}")
        return ObjectInfo(name, len(self.objects[name]), 1.0)

    def delete(self, name: str) -> None:
        self.calls.append(("delete", name))
        if name == "broken":
            raise StorageError("the store is down")
        self.objects.pop(name, None)

    def local_path(self, name: str) -> Optional[str]:
        return "/srv/" + name

    def close(self) -> None:
        self.calls.append(("close",))

    def own_thing(self) -> str:
        return "mine"


@pytest.mark.parametrize("make", [lambda s: StorageWrapper(s), lambda s: MetricsStorage(s, StorageMetrics()),
                                  lambda s: LimitedStorage(s, TransferLimiter())])
def test_every_storage_method_reaches_the_back_end(make):
    """Each public method of the Storage interface (those added later too: the loop reads the class) goes
    to the back end's own version, not to Storage's generic default: list_info is one listing, not a stat
    per name; local_path and close are the back end's."""
    rec = Recorder()
    w = make(rec)
    assert list(w.list_info("")) == list(rec.list_info(""))
    assert rec.calls[0] == ("list_info", "") and not any(c[0] == "stat" for c in rec.calls)
    assert w.local_path("data/x") == "/srv/data/x"  # no download limit: the file is read directly
    w.close()
    assert rec.calls[-1] == ("close",)
    assert w.put_if_absent("new", b"x") is True and rec.calls[-1] == ("put_if_absent", "new")
    assert w.own_thing() == "mine" and w.url == "rec://x" and str(w) == "rec://x"
    for name, value in vars(Storage).items():
        if callable(value) and not name.startswith("_"):
            assert getattr(type(w), name) is not value, f"{name} is Storage's default, not forwarded"
    with pytest.raises(AttributeError):
        w.no_such_thing


def test_metrics_count_requests_bytes_misses_and_errors():
    m = StorageMetrics()
    w = MetricsStorage(Recorder(), m)
    w.put("b", b"x" * 100)
    assert w.get("a", 10, 50) == (b"0123456789" * 5)
    assert len(w.get("a")) == 10000
    with pytest.raises(ObjectMissing):
        w.get("missing")
    with pytest.raises(StorageError):
        w.delete("broken")
    assert sorted(w.list("")) == ["a", "b"]
    assert w.exists("a") and not w.exists("zz")
    snap = m.snapshot()
    assert (snap["put"].requests, snap["put"].bytes, snap["put"].errors) == (1, 100, 0)
    assert (snap["get"].requests, snap["get"].bytes, snap["get"].missing) == (3, 10050, 1)
    assert (snap["delete"].requests, snap["delete"].errors) == (1, 1)
    assert snap["list"].requests == 1 and snap["exists"].requests == 2
    assert m.total("requests") == 8
    assert m.as_dict()["put"] == {"requests": 1, "bytes": 100, "missing": 0, "errors": 0,
                                  "seconds": snap["put"].seconds}


def _limited(rec: Storage, up: Optional[float], down: Optional[float]) -> tuple:
    fc = FakeClock()
    limiter = TransferLimiter(TransferLimits(Schedule(up, up), Schedule(down, down)), clock=fc.clock,
                              wall=fc.wall, sleep=fc.sleep)
    return LimitedStorage(rec, limiter), fc


def test_a_large_put_leaves_smoothly_not_in_one_burst(tmp_path, monkeypatch):
    """A 4 MiB put at 1 MiB/s onto the local store: written piece by piece over 4 s (each write when its
    bytes were paid), the file whole and atomic at the end."""
    local = LocalStorage(tmp_path / "v", create=True)
    w, fc = _limited(local, MiB, None)
    data = os.urandom(4 * MiB)
    writes = []
    real_write = os.write

    def write(fd, buf):
        writes.append((fc.now, len(buf)))
        return real_write(fd, buf)
    monkeypatch.setattr(os, "write", write)
    w.put("data/ab/pack", data)
    assert local.get("data/ab/pack") == data
    assert fc.now == pytest.approx(4, rel=0.03)
    assert sum(n for _, n in writes) == 4 * MiB and max(n for _, n in writes) <= MiB
    by_second = [sum(n for t, n in writes if s <= t < s + 1) for s in range(4)]
    assert all(abs(b - MiB) <= 128 * KiB for b in by_second), by_second  # about 1 MiB in every second


def test_a_put_onto_a_back_end_that_cannot_stream_is_paid_first_and_not_copied():
    rec = Recorder()
    w, fc = _limited(rec, MiB, None)
    data = bytearray(2 * MiB)
    w.put("p", data)
    assert fc.now == pytest.approx(2, rel=0.03)
    assert rec.calls[-1][2] is data  # handed over as it is: no copy of a pack


def test_a_large_get_comes_in_paid_ranges():
    rec = Recorder()
    rec.objects["big"] = os.urandom(5 * MiB + 123)
    w, fc = _limited(rec, None, MiB)
    assert w.get("big") == rec.objects["big"]
    assert fc.now == pytest.approx(5, rel=0.03)
    ranges = [c[2:] for c in rec.calls if c[0] == "get"]
    assert ranges == [(i * MiB, MiB) for i in range(6)]
    rec.calls.clear()
    assert w.get("big", 100, 2 * MiB) == rec.objects["big"][100:100 + 2 * MiB]
    assert [c[2:] for c in rec.calls] == [(100, MiB), (100 + MiB, MiB)]
    assert w.get("a", 5, 3) == b"567"
    with pytest.raises(ValueError):
        w.get("big", -1, None)
    with pytest.raises(ObjectMissing):
        w.get("missing")


def test_paced_reader_pays_every_read_also_after_a_seek():
    """An SDK that retries a request seeks back and sends again: those bytes are paid again."""
    fc = FakeClock()
    bucket = fc.bucket(Schedule(MiB, MiB))
    reader = wrappers.PacedReader(memoryview(bytes(range(256)) * 8192), bucket)  # 2 MiB
    first = reader.read(MiB)
    assert fc.now == pytest.approx(1, rel=0.03) and first == (bytes(range(256)) * 4096)
    assert reader.seek(0) == 0 and reader.tell() == 0
    assert reader.read() == bytes(range(256)) * 8192
    assert fc.now == pytest.approx(3, rel=0.03)
    assert reader.read(10) == b""


def test_put_stream_through_a_limit(tmp_path):
    import io
    local = LocalStorage(tmp_path / "v", create=True)
    w, fc = _limited(local, MiB, None)
    data = os.urandom(3 * MiB)
    w.put_stream("data/x", io.BytesIO(data), len(data))
    assert local.get("data/x") == data and fc.now == pytest.approx(3, rel=0.03)
    with pytest.raises(ValueError, match="ended after"):
        w.put_stream("data/y", io.BytesIO(data[:100]), len(data))
    assert not local.exists("data/y") and test_storage.tmp_files(local.root) == []


def test_download_limit_hides_local_files_upload_limit_does_not(tmp_path):
    local = LocalStorage(tmp_path / "v", create=True)
    assert _limited(local, None, MiB)[0].local_path("data/x") is None  # the restore engine reads via get
    assert _limited(local, MiB, None)[0].local_path("data/x") == str(local.root / "data" / "x")


def test_uploads_and_downloads_have_separate_buckets():
    rec = Recorder()
    rec.objects["big"] = bytes(2 * MiB)
    w, fc = _limited(rec, MiB, None)
    w.get("big")
    assert fc.now == 0  # downloads unlimited
    w.put("x", bytes(MiB))
    assert fc.now == pytest.approx(1, rel=0.03)


def test_storages_of_one_process_share_its_limiter(tmp_path):
    """Two storages opened with limits (a copy's source and target): one upload bucket for both."""
    fc = FakeClock()
    limiter = TransferLimiter(TransferLimits(Schedule(MiB, MiB)), clock=fc.clock, wall=fc.wall, sleep=fc.sleep)
    a = LimitedStorage(Recorder(), limiter)
    b = LimitedStorage(Recorder(), limiter)
    a.put("x", bytes(MiB))
    b.put("x", bytes(MiB))
    assert fc.now == pytest.approx(2, rel=0.03)


@pytest.fixture
def process_config():
    yield wrappers.configure_process
    wrappers.configure_process()
    wrappers.PROCESS_LIMITER.configure(TransferLimits())


def test_open_storage_applies_the_process_configuration(tmp_path, process_config):
    assert type(open_storage(str(tmp_path / "v"), create=True)) is LocalStorage  # nothing configured
    metrics = StorageMetrics()
    process_config(limits=lambda: TransferLimits.from_options(upload=parse_rate("64MiB")), metrics=metrics)
    s = open_storage(str(tmp_path / "v"))
    assert isinstance(s, LimitedStorage) and isinstance(s.inner, MetricsStorage)
    assert s.root == tmp_path / "v"  # the back end's own attributes still answer
    s.put("x", b"abc")
    assert metrics.snapshot()["put"].bytes == 3
    assert wrappers.PROCESS_LIMITER.upload.rate() == 64 * MiB
    process_config(limits=lambda: TransferLimits(), metrics=None)
    assert type(open_storage(str(tmp_path / "v"))) is LocalStorage  # no limit: no wrapper


def test_bad_limits_fail_before_anything_is_opened(tmp_path, process_config):
    def bad() -> TransferLimits:
        raise UsageError("bad limit")
    process_config(limits=bad)
    with pytest.raises(UsageError, match="bad limit"):
        open_storage(str(tmp_path / "new"), create=True)
    assert not (tmp_path / "new").exists()


# -- the command line ----------------------------------------------------------------------------------------

def test_cli_limits_hold_backup_and_restore_to_their_rates(tmp_path):
    """A 3 MiB file backed up at 2MiB (1.5 s at least) and restored at 16Mbit (2 MiB/s: 1.5 s at least), byte
    for byte; the same without limits takes well under that."""
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "vault")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(3 * MiB))
    t = time.monotonic()
    ok(cli("backup", "--vault", vault, "--limit-upload", "2MiB", str(src)))
    assert time.monotonic() - t >= 1.4
    t = time.monotonic()
    ok(cli("restore", "--vault", vault, "latest", "--target", tmp_path / "r",
           env={"RECOVAULT_LIMIT_DOWNLOAD": "16Mbit"}))
    assert time.monotonic() - t >= 1.4
    assert (tmp_path / "r" / str(src).lstrip("/") / "f").read_bytes() == (src / "f").read_bytes()


@pytest.mark.parametrize("args, needle", [
    (["--limit-upload", "20Mb"], "write Mbit for bits or MB for bytes"),
    (["--limit-download", "fast"], "invalid rate 'fast'"),
    (["--limit-upload-work", "0KiB"], "at least 1KiB"),
    (["--work-hours", "Mon-Fri 8-18", "--limit-upload-work", "1MiB"], "invalid work hours"),
    (["--work-hours", "Mon-Fri 08:00-18:00"], "--work-hours needs a rate"),
])
def test_cli_bad_limits_one_message_exit_2(tmp_path, args, needle):
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "vault")
    fails(cli("snapshots", "--vault", vault, *args), 2, needle)
    fails(cli("init", "--vault", tmp_path / "new", *args), 2, needle)
    assert not (tmp_path / "new").exists()


def test_cli_bad_limit_from_the_environment_names_the_variable(tmp_path):
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "vault")
    fails(cli("snapshots", "--vault", vault, env={"RECOVAULT_LIMIT_DOWNLOAD": "9"}), 2,
          "RECOVAULT_LIMIT_DOWNLOAD: invalid rate '9' (a bare number has no unit)")
    fails(cli("snapshots", "--vault", vault, env={"RECOVAULT_WORK_HOURS": "weekdays"}), 2,
          "RECOVAULT_WORK_HOURS: invalid work hours 'weekdays'")
    ok(cli("snapshots", "--vault", vault, env={"RECOVAULT_LIMIT_DOWNLOAD": "9MiB"}))


def test_cli_writes_its_storage_metrics_for_scripts(tmp_path):
    """RECOVAULT_STORAGE_METRICS=FILE: the run's requests and bytes per operation. A first backup puts every
    byte the vault gained; an unchanged re-run puts only its small documents and downloads no pack."""
    import json
    cli = Cli(tmp_path / "home")
    vault = api_vault(tmp_path / "vault")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(2 * MiB))
    out = tmp_path / "metrics.json"

    def size() -> int:
        return sum(f.stat().st_size for f in Path(vault).rglob("*") if f.is_file())
    before = size()
    ok(cli("backup", "--vault", vault, str(src), env={"RECOVAULT_STORAGE_METRICS": str(out)}))
    first = json.loads(out.read_text())
    grown = size() - before
    assert grown - 64 * KiB <= first["put"]["bytes"] <= grown + 64 * KiB  # + what was replaced in place
    assert first["put"]["requests"] >= 3 and first["put"]["errors"] == 0
    ok(cli("backup", "--vault", vault, str(src), env={"RECOVAULT_STORAGE_METRICS": str(out)}))
    again = json.loads(out.read_text())
    assert again["put"]["bytes"] < 32 * KiB
    assert again.get("get", {}).get("bytes", 0) < 64 * KiB
    assert set(again["put"]) == {"requests", "bytes", "missing", "errors", "seconds"}


def test_default_put_stream_reads_whole_then_puts():
    """A back end without a streaming put (object stores until they add one) gets put() with every byte."""
    import io
    rec = Recorder()
    assert not rec.streams_puts and LocalStorage.streams_puts
    data = os.urandom(3 * MiB + 5)
    rec.put_stream("x", io.BufferedReader(io.BytesIO(data), 4096), len(data))
    assert rec.objects["x"] == data and rec.calls[-1][:2] == ("put", "x")
    with pytest.raises(ValueError, match="ended after 10 of 20 bytes"):
        rec.put_stream("y", io.BytesIO(b"0123456789"), 20)
    assert "y" not in rec.objects


# -- the overlay of a dry run ------------------------------------------------------------------------------

def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_overlay_shows_what_was_written_on_top_and_never_writes_below(tmp_path: Path) -> None:
    from recovault.storage.overlay import OverlayStorage
    below = LocalStorage(tmp_path / "below", create=True)
    for name in ("data/aa", "data/bb", "index/cc"):
        below.put(name, name.encode())
    before = _tree(tmp_path / "below")
    top = OverlayStorage(below)
    top.put("data/ab", b"new")
    top.put("data/bb", b"replaced")
    top.delete("data/aa")
    top.delete("index/cc")
    assert not top.put_if_absent("data/bb", b"x") and top.put_if_absent("index/cc", b"again")
    assert list(top.list("data/")) == ["data/ab", "data/bb"]
    assert [(i.name, i.size) for i in top.list_info()] == [("data/ab", 3), ("data/bb", 8), ("index/cc", 5)]
    assert top.get("data/bb", 2, 3) == b"pla" and top.get("index/cc") == b"again"
    with pytest.raises(ObjectMissing):
        top.get("data/aa")
    assert not top.exists("data/aa") and top.stat("data/ab").size == 3
    assert top.deleted == ("data/aa",) and top.written == ("data/ab", "data/bb", "index/cc")
    assert top.local_path("data/bb") is None and not top.can_lock_objects()
    scratch = top._dir
    top.close()
    assert _tree(tmp_path / "below") == before and not os.path.exists(scratch)
    below.close()
