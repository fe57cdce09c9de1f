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

def test_snapshots_filters(env: Env, hosts: Dict[str, str], monkeypatch) -> None:
    run, a, b = env.run, str(env.src("a")), str(env.src("b"))
    assert ids(run.json("snapshots")) == list(hosts.values())  # no filter: every point, as before
    assert ids(run.json("snapshots", "--host", "web2")) == [hosts["w2a"], hosts["w2b"]]
    assert ids(run.json("snapshots", "--host", "web2", "--host", "web1")) == list(hosts.values())
    assert ids(run.json("snapshots", "--path", b)) == [hosts["w1b"], hosts["w2b"]]
    assert ids(run.json("snapshots", "--path", a, "--host", "web1")) == [hosts["w1a"]]
    assert ids(run.json("snapshots", "--path", b + "/")) == [hosts["w1b"], hosts["w2b"]]  # as backup records it
    monkeypatch.chdir(env.tmp)
    assert ids(run.json("snapshots", "--path", "b")) == [hosts["w1b"], hosts["w2b"]]
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
    assert "tags daily,db:" in text and "tags weekly:" in text and "tags (none):" in text
    assert run("snapshots", "--group-by", "").out.startswith("all points:\n")
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
    assert [e["path"] for e in run.json("ls", "latest", ".")] == [f"{root}/home", f"{root}/www"]
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
                               "2024-05-01", "12:00:00Z", f"{root}/www/img"]
    assert text[1].split() == ["-rw-r-----", "root", "root", "6", "2024-05-01", "12:00:00Z", f"{root}/www/index.html"]
    link = env.run("ls", "--long", "latest", "home").out.split()
    assert link[0] == "lrwxrwxrwx" and link[-3:] == [f"{root}/home", "->", "www/index.html"]
    # a file whose owner has no name here: the numbers
    logo = env.run("ls", "-l", "latest:www/img/logo.png").out.split()
    assert logo[:4] == ["-rw-r--r--", "1234", "5678", "40"] and logo[4:6] == ["2024-05-01", "12:00:00Z"]


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


# ---------------------------------------------------------------- diff

def test_diff(env: Env) -> None:
    src = env.src("d")
    for name, data in (("same", b"s" * 1000), ("gone", b"g" * 3000), ("edit", b"e" * 2000), ("chmod", b"c"),
                       ("touch", b"t"), ("moved", os.urandom(5000)), ("becomes_dir", b"x")):
        (src / name).write_bytes(data)
    (src / "olddir").mkdir()
    (src / "olddir" / "inner").write_bytes(b"i" * 700)
    os.symlink("same", src / "link")
    first = env.run.json("backup", src, "--host", "web1")["id"]
    (src / "gone").unlink()
    (src / "new").write_bytes(b"n" * 4000)
    (src / "edit").write_bytes(b"E" * 2500)
    os.chmod(src / "chmod", 0o600)
    os.utime(src / "touch", (MTIME, MTIME))
    (src / "sub").mkdir()
    os.rename(src / "moved", src / "sub" / "moved")
    (src / "becomes_dir").unlink()
    (src / "becomes_dir").mkdir()
    (src / "becomes_dir" / "child").write_bytes(b"child")
    (src / "olddir" / "inner").unlink()
    (src / "olddir").rmdir()
    (src / "link").unlink()
    os.symlink("edit", src / "link")
    second = env.run.json("backup", src, "--host", "web1")["id"]
    doc = validate("diff", env.run.json("diff", first, second))
    root = str(src)
    got = {(ch["modifier"], ch["path"]) for ch in doc["changes"]}
    assert got == {("-", f"{root}/gone"), ("+", f"{root}/new"), ("M", f"{root}/edit"), ("U", f"{root}/chmod"),
                   ("U", f"{root}/touch"), ("-", f"{root}/moved"), ("+", f"{root}/sub"),
                   ("+", f"{root}/sub/moved"), ("T", f"{root}/becomes_dir"), ("+", f"{root}/becomes_dir/child"),
                   ("-", f"{root}/olddir"), ("-", f"{root}/olddir/inner"), ("M", f"{root}/link")}
    assert [ch["path"] for ch in doc["changes"]] == sorted(ch["path"] for ch in doc["changes"])
    st = doc["stats"]
    assert (st["added"], st["removed"], st["modified"], st["type_changed"], st["metadata"]) == (4, 4, 2, 1, 2)
    # the moved file's data is in both: only the new, edited and removed bytes count (1: becomes_dir's)
    assert st["bytes_added"] == 4000 + 2500 + len(b"child") and st["bytes_removed"] == 3000 + 2000 + 700 + 1
    assert (doc["before"], doc["after"], doc["path_before"], doc["path_after"]) == (first, second, "/", "/")
    chmod = next(ch for ch in doc["changes"] if ch["path"].endswith("/chmod"))
    assert (chmod["before"]["mode"], chmod["after"]["mode"]) == (0o644, 0o600)
    link = next(ch for ch in doc["changes"] if ch["path"].endswith("/link"))
    assert (link["before"]["link_target"], link["after"]["link_target"]) == ("same", "edit")
    text = env.run("diff", first, second).out
    assert f"+    {root}/sub/\n" in text and f"M    {root}/edit\n" in text and f"T    {root}/becomes_dir/\n" in text
    assert "added: 4, removed: 4, modified: 2, type changed: 1, metadata only: 2" in text
    # a path, relative or in SNAPSHOT:PATH form; the same point twice: nothing
    sub = env.run.json("diff", first, second, "sub")
    assert [(ch["modifier"], ch["path"]) for ch in sub["changes"]] == [("+", f"{root}/sub"), ("+", f"{root}/sub/moved")]
    assert sub["stats"]["bytes_added"] == 5000
    assert env.run.json("diff", f"{first[:8]}:edit", "latest:edit")["stats"]["modified"] == 1
    same = env.run.json("diff", first, first)
    assert same["changes"] == [] and same["stats"]["bytes_added"] == 0
    assert "nosuch" in env.run.fails(16, "diff", first, second, "nosuch")
    env.run.fails(2, "diff", f"{first}:edit", second, "edit")
    env.run.fails(16, "diff", first, "latest", "--host", "web2")


# ---------------------------------------------------------------- find

def test_find(env: Env, monkeypatch) -> None:
    src = env.src("f")
    (src / "etc").mkdir()
    (src / "etc" / "app.conf").write_text("one")
    (src / "etc" / "notes.txt").write_text("x")
    os.utime(src / "etc" / "app.conf", (MTIME, MTIME))
    p1 = env.run.json("backup", src, "--host", "web1", "--time", "2025-01-01 10:00:00")["id"]
    (src / "etc" / "db.conf").write_text("two!")
    p2 = env.run.json("backup", src, "--host", "web1", "--time", "2025-01-02 10:00:00")["id"]
    (src / "etc" / "app.conf").unlink()
    p3 = env.run.json("backup", src, "--host", "web2", "--time", "2025-01-03 10:00:00", "--tag", "t")["id"]
    # find never reads file data (the files' contents here are no JSON, trees are)
    from recovault.vault.repo import Vault
    read_blob, reads = Vault.read_blob, []

    def only_trees(self, blob_id, *a, **kw):
        data = read_blob(self, blob_id, *a, **kw)
        reads.append(data)
        return data
    monkeypatch.setattr(Vault, "read_blob", only_trees)
    doc = validate("find", env.run.json("find", "*.conf"))
    assert reads and all(json.loads(data) is not None for data in reads)
    assert len(reads) == len(set(reads))  # a subtree met again at the same path is not read again
    root = str(src)
    assert [(d["snapshot"], [m["path"] for m in d["matches"]]) for d in doc] == [
        (p1, [f"{root}/etc/app.conf"]), (p2, [f"{root}/etc/app.conf", f"{root}/etc/db.conf"]),
        (p3, [f"{root}/etc/db.conf"])]
    app = doc[0]["matches"][0]
    assert (app["size"], app["mtime"], app["type"]) == (3, "2024-05-01T12:00:00.000000Z", "f")
    assert (doc[2]["host"], doc[2]["tags"], doc[2]["time"]) == ("web2", ["t"], "2025-01-03T10:00:00.000000Z")
    assert [d["snapshot"] for d in env.run.json("find", "app.conf", "--host", "web1")] == [p1, p2]
    assert [d["snapshot"] for d in env.run.json("find", "*.conf", "--newest", "1")] == [p3]
    assert [d["snapshot"] for d in env.run.json("find", "*.conf", "--oldest", "2")] == [p1, p2]
    assert [d["snapshot"] for d in env.run.json("find", "*.conf", "--tag", "t")] == [p3]
    # a pattern with a "/" matches whole paths
    assert [len(d["matches"]) for d in env.run.json("find", f"{root}/etc/*")] == [2, 3, 2]
    assert env.run.json("find", "etc/*.conf") == []
    assert env.run.json("find", "nothing*") == []
    text = env.run("find", "db.conf").out
    assert f"recovery point {p2[:8]} of 2025-01-02 10:00:00Z (host web1):" in text
    assert "2 matching entries in 2 of 3 recovery points searched" in text
    env.run.fails(16, "find", "*", "--host", "nosuch")
    env.run.fails(2, "find", "*", "--newest", "1", "--oldest", "1")
    env.run.fails(2, "find", "*", "--newest", "0")


# ---------------------------------------------------------------- dump

def run_binary(env: Env, *argv: Any, stdout: Any = None) -> "subprocess.CompletedProcess":
    import subprocess
    import sys
    e = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__import__("recovault").__file__)))
    return subprocess.run([sys.executable, "-m", "recovault", *map(os.fspath, argv), "--vault", env.run.vault],
                          env=e, stdin=subprocess.DEVNULL, stdout=stdout if stdout is not None else subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=120)


def test_dump_file_and_directory(env: Env, owned: Path) -> None:
    import io
    import tarfile
    root = str(owned)
    big = os.urandom(300_000)  # several chunks
    (owned / "www" / "big.bin").write_bytes(big)
    env.run.json("backup", owned, "--host", "web1")
    res = run_binary(env, "dump", "latest", "www/big.bin")
    assert res.returncode == 0, res.stderr and res.stdout == big
    assert res.stdout == big
    assert run_binary(env, "dump", f"latest:{root}/www/index.html").stdout == b"<html>"
    res = run_binary(env, "dump", "latest:www")
    assert res.returncode == 0, res.stderr
    with tarfile.open(fileobj=io.BytesIO(res.stdout), mode="r:") as tar:
        members = {m.name: m for m in tar.getmembers()}
        rel = root.lstrip("/")
        assert list(members) == [f"{rel}/www", f"{rel}/www/big.bin", f"{rel}/www/img", f"{rel}/www/img/logo.png",
                                 f"{rel}/www/index.html"]
        assert tar.extractfile(members[f"{rel}/www/big.bin"]).read() == big
        logo = members[f"{rel}/www/img/logo.png"]
        assert tar.extractfile(logo).read() == b"\x89PNG" * 10
        assert (logo.uid, logo.gid, logo.mode, logo.mtime) == (1234, 5678, 0o644, MTIME + 0.5)
        img = members[f"{rel}/www/img"]
        assert img.isdir() and img.mode == 0o2750
        index = members[f"{rel}/www/index.html"]
        assert (index.uname, index.mode, index.size) == ("root", 0o640, 6)
    res = run_binary(env, "dump", "latest", root)
    with tarfile.open(fileobj=io.BytesIO(res.stdout), mode="r:") as tar:
        link = tar.getmember(f"{rel}/home")
        assert link.issym() and link.linkname == "www/index.html"


def test_dump_bad_input(env: Env, tree: Path) -> None:
    import pty
    assert "nosuch" in env.run.fails(16, "dump", "latest:www/nosuch")
    env.run.fails(2, "dump", "latest")  # no path
    res = env.run("dump", "latest:www/index.html", "--json")  # the data is the output: no JSON
    assert res.code == 2 and json.loads(res.out)["exit_code"] == 2 and "no --json" in res.err
    env.run.fails(2, "dump", "latest:www", "www")  # the path twice
    env.run.fails(2, "dump", "latest", "home")  # a symlink
    env.run.fails(16, "dump", "latest", "www/index.html", "--host", "nosuch")
    leader, follower = pty.openpty()
    try:
        res = run_binary(env, "dump", "latest", "www", stdout=follower)
    finally:
        os.close(follower)
        os.close(leader)
    assert res.returncode == 2
    assert b"is a directory: dump writes it as a tar archive, not to a terminal" in res.stderr


def test_diff_and_dump_of_an_image(env: Env) -> None:
    """Images: diff counts the changed blocks' bytes; dump writes the image's bytes, holes as zeros."""
    img = env.tmp / "disk.img"
    bs = 64 << 10
    blocks = [os.urandom(bs) for _ in range(3)]
    with open(img, "wb") as f:
        f.write(blocks[0])
        f.seek(2 * bs)  # a hole
        f.write(blocks[2])
    first = env.run.json("backup", "--image", img, "--host", "web1")["id"]
    res = run_binary(env, "dump", "latest", img)
    assert res.returncode == 0, res.stderr
    assert res.stdout == blocks[0] + bytes(bs) + blocks[2]
    with open(img, "r+b") as f:
        f.seek(bs)
        f.write(blocks[1])  # the hole gets data
    second = env.run.json("backup", "--image", img, "--host", "web1")["id"]
    doc = validate("diff", env.run.json("diff", first, second))
    assert [(ch["modifier"], ch["path"]) for ch in doc["changes"]] == [("M", str(img))]
    st = doc["stats"]
    # the new block, and the block maps' pages (one each: a page holds many blocks)
    assert st["blobs_added"] == 2 and st["blobs_removed"] == 1
    assert st["bytes_added"] == bs + 3 * 32 and st["bytes_removed"] == 3 * 32
