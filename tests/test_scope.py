"""Scoping recovery points (selection.py, `point_options`): --host/--path/--tag on every command that chooses
points, `latest` per host, `snapshots` with tags and --group-by, `SNAPSHOT:PATH`, relative paths resolved
against the backed-up roots, and their bad input (one message, a distinct exit code). Real vaults in tmp dirs,
trees built here, points at chosen times and hosts with backup --time/--host; the CLI runs in this process."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Dict, List, Sequence

import pytest

from recovault.selection import PointFilter, parse_point_path
from recovault.vault.records import RecoveryPoint

from test_cli import PASSPHRASE, api_vault
from test_forget_cli import Run

ROOT = Path(__file__).resolve().parent.parent


class Env:
    def __init__(self, tmp_path: Path, run: Run) -> None:
        self.tmp, self.run = tmp_path, run

    def src(self, name: str) -> Path:
        d = self.tmp / name
        d.mkdir(exist_ok=True)
        return d

    def backup(self, name: str, when: str, host: str = "web1", tags: Sequence[str] = ()) -> str:
        src = self.src(name)
        (src / "f").write_text(f"{name} {host} {when}")
        args = ["backup", src, "--time", when, "--host", host] + [x for t in tags for x in ("--tag", t)]
        return self.run.json(*args)["id"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch, capsys) -> Env:
    monkeypatch.setenv("RECOVAULT_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("XDG_CACHE_HOME", os.fspath(tmp_path / "cache"))
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setattr(socket, "gethostname", lambda: "web1")  # this host, for `latest`
    return Env(tmp_path, Run(api_vault(tmp_path / "vault"), capsys))


def ids(points: List[Dict[str, Any]]) -> List[str]:
    return [p["id"] for p in points]


@pytest.fixture
def hosts(env: Env) -> Dict[str, str]:
    """Points of two hosts and two paths, some tagged: name -> id, oldest first."""
    return {
        "w1a": env.backup("a", "2025-01-01 10:00:00", "web1", ["daily"]),
        "w2a": env.backup("a", "2025-01-02 10:00:00", "web2", ["daily", "db"]),
        "w1b": env.backup("b", "2025-01-03 10:00:00", "web1"),
        "w2b": env.backup("b", "2025-01-04 10:00:00", "web2", ["weekly"]),
    }


# ---------------------------------------------------------------- the filter itself

def point(host: str = "h", paths: Sequence[str] = ("/a",), tags: Sequence[str] = ()) -> RecoveryPoint:
    return RecoveryPoint(time="2025-01-01T00:00:00.000000Z", host=host, paths=list(paths), tree="00",
                         tags=list(tags))


def test_point_filter_semantics() -> None:
    p = point("web1", ["/a", "/b"], ["x", "y"])
    assert PointFilter()(p) and not PointFilter()
    assert PointFilter(hosts=("web2", "web1"))(p) and not PointFilter(hosts=("web2",))(p)
    assert PointFilter(paths=("/a", "/b"))(p) and not PointFilter(paths=("/a", "/c"))(p)  # every path
    assert PointFilter(tags=("z", "x"))(p)  # any of the lists
    assert PointFilter(tags=("x,y",))(p) and not PointFilter(tags=("x,z",))(p)  # all of one list
    assert PointFilter(tags=("",))(point()) and not PointFilter(tags=("",))(p)  # '' = untagged (restic)
    assert PointFilter(("web1",), ("/a",), ("x",)).describe() == "--host web1 --path /a --tag x"


@pytest.mark.parametrize("text, parsed", [
    ("latest", ("latest", None)), ("1a2b3c", ("1a2b3c", None)), ("latest:/etc/ssh", ("latest", "/etc/ssh")),
    ("1a2B:www/x", ("1a2B", "www/x")), ("latest:", ("latest", "/")), ("nothex:/etc", ("nothex:/etc", None)),
    ("abc:/a:b", ("abc", "/a:b")),
])
def test_parse_point_path(text: str, parsed) -> None:
    assert parse_point_path(text) == parsed


# ---------------------------------------------------------------- snapshots

def test_snapshots_filters(env: Env, hosts: Dict[str, str]) -> None:
    run, a, b = env.run, str(env.src("a")), str(env.src("b"))
    assert ids(run.json("snapshots")) == list(hosts.values())  # no filter: every point, as before
    assert ids(run.json("snapshots", "--host", "web2")) == [hosts["w2a"], hosts["w2b"]]
    assert ids(run.json("snapshots", "--host", "web2", "--host", "web1")) == list(hosts.values())
    assert ids(run.json("snapshots", "--path", b)) == [hosts["w1b"], hosts["w2b"]]
    assert ids(run.json("snapshots", "--path", a, "--host", "web1")) == [hosts["w1a"]]
    assert ids(run.json("snapshots", "--tag", "daily")) == [hosts["w1a"], hosts["w2a"]]
    assert ids(run.json("snapshots", "--tag", "daily,db")) == [hosts["w2a"]]
    assert ids(run.json("snapshots", "--tag", "db", "--tag", "weekly")) == [hosts["w2a"], hosts["w2b"]]
    assert ids(run.json("snapshots", "--tag", "")) == [hosts["w1b"]]
    msg = run.fails(16, "snapshots", "--host", "nosuch")
    assert "no recovery point matches --host nosuch" in msg and "web1, web2" in msg
    run.fails(16, "snapshots", "--tag", "daily", "--path", b)
    res = run("snapshots", "--host", "nosuch", "--json")
    assert res.code == 16 and json.loads(res.out)["exit_code"] == 16


def test_snapshots_shows_tags_and_groups(env: Env, hosts: Dict[str, str]) -> None:
    run = env.run
    text = run("snapshots").out
    assert "tags" in text.splitlines()[0]
    row = next(ln for ln in text.splitlines() if ln.startswith(hosts["w2a"][:8]))
    assert "daily,db" in row
    groups = run.json("snapshots", "--group-by", "host")
    assert [(g["host"], g["paths"], g["tags"]) for g in groups] == [("web1", [], []), ("web2", [], [])]
    assert [ids(g["snapshots"]) for g in groups] == [[hosts["w1a"], hosts["w1b"]], [hosts["w2a"], hosts["w2b"]]]
    by_all = run.json("snapshots", "--group-by", "host,paths", "--tag", "daily")
    assert [(g["host"], g["paths"]) for g in by_all] == [("web1", [str(env.src("a"))]), ("web2", [str(env.src("a"))])]
    assert ids(by_all[0]["snapshots"]) == [hosts["w1a"]]
    text = run("snapshots", "--group-by", "tags").out
    assert "tags daily,db:" in text and "tags weekly:" in text
    assert "unknown grouping option 'colour'" in run.fails(2, "snapshots", "--group-by", "colour")
    run.fails(2, "snapshots", "--group-by", "host", "--deleted")


# ---------------------------------------------------------------- latest

def test_latest_is_this_hosts_when_the_vault_holds_several(env: Env, hosts: Dict[str, str]) -> None:
    run = env.run
    res = run("ls", "latest", "-R", "--json")
    assert res.code == 0, res.err
    # web2's point is newer, but this host is web1: its latest, and stderr says so
    assert str(env.src("b")) in {e["path"] for e in json.loads(res.out)}
    assert f"latest recovery point of this host (web1), {hosts['w1b'][:8]}" in res.err and "2 hosts" in res.err
    doc = run.json("restore", "latest", "--target", env.tmp / "r1")
    assert doc["snapshot"] == hosts["w1b"]
    assert (env.tmp / "r1" / str(env.src("b")).lstrip("/") / "f").read_text() == f"b web1 2025-01-03 10:00:00"
    # --host: the latest of that host; --all-hosts: the latest of any host, no notice
    run.json("restore", "latest", "--host", "web2", "--path", str(env.src("a")), "--target", env.tmp / "r2")
    assert (env.tmp / "r2" / str(env.src("a")).lstrip("/") / "f").read_text() == "a web2 2025-01-02 10:00:00"
    res = run("restore", "latest", "--all-hosts", "--target", env.tmp / "r3")
    assert res.code == 0 and "latest recovery point of this host" not in res.err
    assert (env.tmp / "r3" / str(env.src("b")).lstrip("/") / "f").read_text() == "b web2 2025-01-04 10:00:00"
    # a filter that leaves one host: that host's latest, no notice
    res = run("ls", "latest", "--tag", "weekly")
    assert res.code == 0 and "this host" not in res.err


def test_latest_ambiguous_without_this_host(env: Env, monkeypatch) -> None:
    env.backup("a", "2025-01-01 10:00:00", "web2")
    env.backup("a", "2025-01-02 10:00:00", "web3")
    monkeypatch.setattr(socket, "gethostname", lambda: "laptop")
    msg = env.run.fails(2, "ls", "latest")
    assert "'latest' is ambiguous" in msg and "web2, web3" in msg and "laptop" in msg and "--all-hosts" in msg
    assert env.run("ls", "latest", "--host", "web3").code == 0
    assert env.run("ls", "latest", "--all-hosts").code == 0


def test_latest_of_one_host_is_not_announced(env: Env) -> None:
    env.backup("a", "2025-01-01 10:00:00", "web2")  # not this host, but the only one
    res = env.run("ls", "latest")
    assert res.code == 0 and res.err == ""


def test_ids_and_filters(env: Env, hosts: Dict[str, str]) -> None:
    run = env.run
    assert run.json("ls", hosts["w2a"][:10], "--host", "web2")  # an id the filter keeps
    msg = run.fails(16, "ls", hosts["w2a"][:10], "--host", "web1")
    assert f"recovery point {hosts['w2a'][:8]} (host web2" in msg and "does not match --host web1" in msg
    run.fails(16, "ls", "latest", "--host", "nosuch")
    run.fails(16, "ls", "ffffffffff")


def test_stats_filters(env: Env, hosts: Dict[str, str]) -> None:
    run = env.run
    assert run.json("stats")["snapshots"] == 4
    assert run.json("stats", "--host", "web2")["snapshots"] == 2
    assert run.json("stats", "--tag", "db")["snapshots"] == 1
    run.fails(16, "stats", "--host", "nosuch")


def test_mount_takes_the_filters(env: Env, hosts: Dict[str, str]) -> None:
    """The filters choose the point before anything is mounted: one that matches nothing stops there."""
    mnt = env.src("mnt")
    assert "--host nosuch" in env.run.fails(16, "mount", "--host", "nosuch", "latest", mnt)
    assert not os.listdir(mnt)


# ---------------------------------------------------------------- SNAPSHOT:PATH and relative paths

@pytest.fixture
def tree(env: Env) -> Path:
    src = env.src("srv")
    (src / "www" / "img").mkdir(parents=True)
    (src / "www" / "index.html").write_text("<html>")
    (src / "www" / "img" / "logo.png").write_bytes(b"\x89PNG" * 10)
    os.symlink("www/index.html", src / "home")
    env.run.json("backup", src, "--host", "web1")
    return src


def test_snapshot_path_and_relative_paths(env: Env, tree: Path) -> None:
    run, root = env.run, str(tree)
    listing = [e["path"] for e in run.json("ls", f"latest:{root}/www")]
    assert listing == [f"{root}/www/img", f"{root}/www/index.html"]
    assert [e["path"] for e in run.json("ls", "latest:www")] == listing  # relative: against the backed-up root
    assert [e["path"] for e in run.json("ls", "latest", "www")] == listing
    assert [e["path"] for e in run.json("ls", "latest", "www/img/logo.png")] == [f"{root}/www/img/logo.png"]
    assert [e["path"] for e in run.json("ls", "latest", root.lstrip("/") + "/www")] == listing  # from / still works
    msg = run.fails(16, "ls", "latest:www/nosuch")
    assert "'www/nosuch' is not in recovery point" in msg and f"backed-up paths: {root}" in msg
    run.fails(16, "ls", f"latest:{root}/nosuch")
    run.fails(2, "ls", "latest:www", "www")  # the path twice
    run.json("restore", "latest:www/img", "--target", env.tmp / "r")
    restored = env.tmp / "r" / root.lstrip("/")
    assert (restored / "www" / "img" / "logo.png").read_bytes() == b"\x89PNG" * 10
    assert not (restored / "www" / "index.html").exists()
    run.json("restore", "latest", "www/index.html", "--target", env.tmp / "r2")
    assert (env.tmp / "r2" / root.lstrip("/") / "www" / "index.html").read_text() == "<html>"


def test_relative_path_in_several_roots_is_ambiguous(env: Env) -> None:
    a, b = env.src("a"), env.src("b")
    for d in (a, b):
        (d / "etc").mkdir()
        (d / "etc" / "x").write_text(str(d))
    env.run.json("backup", a, b, "--host", "web1")
    msg = env.run.fails(2, "ls", "latest", "etc")
    assert f"{a}/etc" in msg and f"{b}/etc" in msg
    assert env.run.json("ls", "latest", f"{a}/etc")[0]["path"] == f"{a}/etc/x"


# ---------------------------------------------------------------- ls -l, --recursive, --json

def validate(cmd: str, doc: Any) -> Any:
    """`doc` (a command's real --json output) checked against docs/schemas/<cmd>.json."""
    import jsonschema
    with open(ROOT / "docs" / "schemas" / f"{cmd}.json", encoding="utf-8") as f:
        jsonschema.validate(doc, json.load(f))
    return doc


MTIME = 1714564800  # 2024-05-01 12:00:00 UTC


@pytest.fixture
def owned(env: Env, tree: Path) -> Path:
    """`tree` with chosen modes, owners and times (backed up again)."""
    os.chmod(tree / "www" / "index.html", 0o640)
    os.chmod(tree / "www" / "img", 0o2750)
    os.chown(tree / "www" / "img" / "logo.png", 1234, 5678)
    for p in (tree / "www" / "index.html", tree / "www" / "img" / "logo.png", tree / "www" / "img"):
        os.utime(p, (MTIME, MTIME + 0.5) if p.name == "logo.png" else (MTIME, MTIME))
    env.run.json("backup", tree, "--host", "web1")
    return tree


def test_ls_long(env: Env, owned: Path) -> None:
    root = str(owned)
    text = env.run("ls", "-l", "latest", "www").out.splitlines()
    assert text[0].split() == ["drwxr-s---", "root", "root", "0",
                               "2024-05-01", "12:00:00", f"{root}/www/img"]
    assert text[1].split() == ["-rw-r-----", "root", "root", "6", "2024-05-01", "12:00:00", f"{root}/www/index.html"]
    link = env.run("ls", "--long", "latest", "home").out.split()
    assert link[0] == "lrwxrwxrwx" and link[-3:] == [f"{root}/home", "->", "www/index.html"]
    # a file whose owner has no name here: the numbers
    logo = env.run("ls", "-l", "latest:www/img/logo.png").out.split()
    assert logo[:4] == ["-rw-r--r--", "1234", "5678", "40"] and logo[4:6] == ["2024-05-01", "12:00:00"]


def test_ls_json_and_recursive(env: Env, owned: Path) -> None:
    root = str(owned)
    flat = validate("ls", env.run.json("ls", "latest", "/"))
    assert [e["path"] for e in flat] == [f"/{root.split('/')[1]}"]
    everything = validate("ls", env.run.json("ls", "-R", "latest", root))
    by_path = {e["path"]: e for e in everything}
    assert list(by_path) == [f"{root}/home", f"{root}/www", f"{root}/www/img", f"{root}/www/img/logo.png",
                             f"{root}/www/index.html"]
    assert by_path[f"{root}/home"]["link_target"] == "www/index.html" and by_path[f"{root}/home"]["type"] == "l"
    logo = by_path[f"{root}/www/img/logo.png"]
    assert (logo["uid"], logo["gid"], logo["user"], logo["group"]) == (1234, 5678, None, None)
    assert (logo["mtime"], logo["mtime_ns"]) == ("2024-05-01T12:00:00.500000Z", (MTIME * 10 + 5) * 10 ** 8)
    assert (logo["size"], logo["mode"], logo["type"]) == (40, 0o644, "f")
    index = by_path[f"{root}/www/index.html"]
    assert (index["user"], index["group"], index["mode"], index["link_target"]) == ("root", "root", 0o640, None)
    assert by_path[f"{root}/www/img"]["mode"] == 0o2750
    assert env.run.json("ls", "-l", "-R", "latest", root) == everything  # -l changes the text only
    assert validate("ls", env.run.json("ls", "latest:www/index.html")) == [index]


def test_snapshots_json_matches_its_schema(env: Env, hosts: Dict[str, str]) -> None:
    validate("snapshots", env.run.json("snapshots"))
    validate("snapshots", env.run.json("snapshots", "--group-by", "host,tags"))
    env.run.json("forget", hosts["w1a"], "--allow-empty")
    assert ids(validate("snapshots", env.run.json("snapshots", "--deleted"))) == [hosts["w1a"]]
    assert validate("snapshots", env.run.json("snapshots", "--host", "web2", "--deleted")) == []
