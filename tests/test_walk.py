"""Tests for recovault.jobs.walk: order, exclusion, CACHEDIR.TAG, one_file_system, errors, hard links."""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time

import pytest

from recovault.errors import UsageError
from recovault.jobs.walk import (
    CACHEDIR_SIGNATURE,
    ExcludeRules,
    has_cache_tag,
    walk,
)

IS_ROOT = os.geteuid() == 0


def mk(root, *relpaths, data=b"x"):
    """Create files (or dirs, for names ending in "/") under root; names may be bytes."""
    for rel in relpaths:
        p = os.path.join(os.fsencode(str(root)), os.fsencode(rel))
        if p.endswith(b"/"):
            os.makedirs(p, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)


def rels(root, rules=None, **kw):
    return [e.relpath for e in walk([str(root)], rules, **kw)]


@pytest.fixture
def tree(tmp_path):
    r = tmp_path / "root"
    mk(r, "b.txt", "a/x.txt", "a/y/z.txt", "empty/", "c/", "c/d/", "A.txt")
    os.symlink("a", r / "link-to-dir")
    os.symlink("/nonexistent/target", r / "dangling")
    os.link(r / "b.txt", r / "c" / "hard")
    os.mkfifo(r / "fifo")
    return r


def test_walk_tree_order_and_types(tree):
    entries = list(walk([str(tree)]))
    assert [e.relpath for e in entries] == [
        "", "A.txt", "a", "a/x.txt", "a/y", "a/y/z.txt", "b.txt", "c", "c/d", "c/hard",
        "dangling", "empty", "fifo", "link-to-dir",
    ]
    by = {e.relpath: e for e in entries}
    root = os.path.abspath(str(tree))
    assert all(e.root == root for e in entries)
    assert all(e.path == (root if not e.relpath else root + "/" + e.relpath) for e in entries)
    assert by[""].is_dir and by["empty"].is_dir and by["c/d"].is_dir
    assert by["link-to-dir"].is_symlink and not by["link-to-dir"].is_dir  # not followed
    assert by["dangling"].is_symlink
    assert stat.S_ISFIFO(by["fifo"].st.st_mode)
    assert by["b.txt"].is_file and by["b.txt"].st.st_nlink == 2
    assert by["a/y/z.txt"].name == "z.txt" and by[""].name == "root"
    assert "relpath='a'" in repr(by["a"])
    # the lstat is the real one
    assert by["a/x.txt"].st.st_ino == os.lstat(tree / "a" / "x.txt").st_ino


def test_order_is_by_name_bytes(tmp_path):
    # code-point order would put "é" (U+00E9) before the surrogate-escaped byte 0x80 (U+DC80);
    # byte order puts 0x80 before 0xC3 0xA9.
    names = ["é", b"\x80", "Z", "a", "a.b", "a0", b"\xff\xfe", "\u2603", "_"]
    mk(tmp_path, *names)
    got = [os.fsencode(r) for r in rels(tmp_path)[1:]]
    assert got == sorted(os.fsencode(n) for n in names)


def test_non_utf8_names(tmp_path):
    mk(tmp_path, b"dir\xff/file\xfe", b"caf\xe9")
    entries = list(walk([str(tmp_path)]))
    assert [os.fsencode(e.relpath) for e in entries[1:]] == [b"caf\xe9", b"dir\xff", b"dir\xff/file\xfe"]
    for e in entries:  # paths are surrogate-escaped str usable with os functions
        assert os.lstat(e.path).st_ino == e.st.st_ino


def test_deterministic(tree):
    a = [(e.path, e.st.st_ino) for e in walk([str(tree)])]
    b = [(e.path, e.st.st_ino) for e in walk([str(tree)])]
    assert a == b


def test_deep_tree_no_recursion_limit(tmp_path):
    p = str(tmp_path)
    for _ in range(300):  # deeper than the lowered recursion limit, shallow enough for rmtree
        p = os.path.join(p, "d")
        os.mkdir(p)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(150)
    try:
        n = len(rels(tmp_path))
    finally:
        sys.setrecursionlimit(limit)
    assert n == 301


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_paths_beyond_path_max(tmp_path):
    """Depth is not limited by PATH_MAX: the walk lists through directory descriptors, and each entry can
    be reached through ``Entry.at``; no descriptor is left open, even when the walk is abandoned."""
    name = "d" * 250
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(20):  # 20 * 251 bytes
        os.mkdir(name, dir_fd=fd)
        nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.close(fd)
    before = open_fds()
    errors = []
    got = list(walk([str(tmp_path)], on_error=lambda p, e: errors.append((p, e))))
    assert errors == [] and len(got) == 22 and len(got[-1].path) > 5000
    assert got[-1].relpath == "/".join([name] * 20 + ["f"]) and got[-1].is_file
    assert open_fds() == before
    w = iter(walk([str(tmp_path)]))
    for e in w:
        if len(e.path) > 4096:
            name_, dir_fd = e.at
            assert name_ == name and os.stat(name_, dir_fd=dir_fd, follow_symlinks=False).st_ino == e.st.st_ino
            break
    w.close()
    assert open_fds() == before


def test_directory_swapped_for_a_symlink_is_not_followed(tmp_path):
    mk(tmp_path, "a/inside", "elsewhere/secret")
    errors = []
    got = []
    for e in walk([str(tmp_path)], on_error=lambda p, e: errors.append((p, e))):
        got.append(e.relpath)
        if e.relpath == "a":  # yielded, not yet opened: make it a link to elsewhere
            os.rename(tmp_path / "a", tmp_path / "a-old")
            os.symlink("elsewhere", tmp_path / "a")
    assert got == ["", "a", "elsewhere", "elsewhere/secret"]
    assert [p for p, _ in errors] == [str(tmp_path / "a")] and errors[0][1].errno in (errno.ENOTDIR, errno.ELOOP)


def test_roots_file_symlink_missing_nested_duplicate(tmp_path):
    mk(tmp_path, "top/f", "top/sub/g", "other/h")
    os.symlink("top", tmp_path / "rootlink")
    errors = []
    w = walk(
        [str(tmp_path / "top"), str(tmp_path / "top" / "sub"), str(tmp_path / "top/sub/../sub"),
         str(tmp_path / "missing"), str(tmp_path / "other" / "h"), str(tmp_path / "rootlink")],
        on_error=lambda p, e: errors.append((p, e)),
    )
    got = [(e.root, e.relpath) for e in w]
    t = str(tmp_path)
    assert got == [
        (t + "/other/h", ""),
        (t + "/rootlink", ""),  # a symlink root is not followed
        (t + "/top", ""), (t + "/top", "f"),  # top/sub is skipped here ...
        (t + "/top/sub", ""), (t + "/top/sub", "g"),  # ... and walked once as its own root
    ]
    assert w.roots_missing == [t + "/missing"]
    assert w.error_count == 1 and errors[0][0] == t + "/missing"
    assert isinstance(errors[0][1], FileNotFoundError)


def test_relative_root_is_made_absolute(tmp_path, monkeypatch):
    mk(tmp_path, "d/f")
    monkeypatch.chdir(tmp_path)
    entries = list(walk(["d"]))
    assert [e.path for e in entries] == [str(tmp_path / "d"), str(tmp_path / "d" / "f")]
    assert next(iter(walk(["d"]))).relpath == ""
    w = walk(["d"])
    assert next(w).path == str(tmp_path / "d")


# ---------------------------------------------------------------- exclusion


def test_exclude_patterns(tmp_path):
    mk(tmp_path, "a.log", "keep.log", "sub/b.log", "sub/keep.log", "top.txt", "sub/top.txt",
       "cache/x", "sub/cache/y", "sub/cachefile", "file-named-cache/cache",
       "dir/keep", "dir/other", "dir/nested/z", "var/tmp/t", "other/var/tmp/t2", "z.tmp/inner")
    rules = ExcludeRules(["*.log", "!keep.log", "/top.txt", "cache/", "dir/*", "!dir/keep", "var/tmp", "*.tmp"])
    assert rels(tmp_path, rules) == [
        "", "dir", "dir/keep", "file-named-cache", "file-named-cache/cache", "keep.log", "other", "other/var",
        "other/var/tmp", "other/var/tmp/t2", "sub", "sub/cachefile", "sub/keep.log", "sub/top.txt", "var",
    ]


def test_excluded_dir_cannot_be_reincluded(tmp_path):
    mk(tmp_path, "dir/keep", "dir/other")
    assert rels(tmp_path, ExcludeRules(["dir/", "!dir/keep"])) == [""]


def test_double_star_and_root_never_excluded(tmp_path):
    mk(tmp_path, "a/b/c/z", "a/z", "q/z")
    assert rels(tmp_path, ExcludeRules(["a/**/z"])) == ["", "a", "a/b", "a/b/c", "q", "q/z"]
    assert rels(tmp_path, ExcludeRules(["*"])) == [""]
    assert rels(tmp_path / "q" / "z", ExcludeRules(["z"])) == [""]


def test_roots_emptied_by_patterns(tmp_path):
    mk(tmp_path, "a/x.tmp", "a/sub/y.tmp", "b/keep", "b/z.tmp", "empty/")
    roots = [str(tmp_path / d) for d in ("a", "b", "empty")]
    w = walk(roots, ExcludeRules(["*.tmp", "sub/"]))
    assert [e.path for e in w] == roots[:2] + [roots[1] + "/keep", roots[2]]
    assert w.roots_emptied == [roots[0]]  # b kept a file; empty had nothing to exclude
    w = walk(roots, ExcludeRules(["***"]))
    list(w)
    assert w.roots_emptied == roots[:2]


def test_exclude_non_utf8_pattern(tmp_path):
    mk(tmp_path, b"caf\xe9", "cafe")
    assert rels(tmp_path, ExcludeRules([os.fsdecode(b"caf\xe9")])) == ["", "cafe"]


def test_excluded_api_and_prefilter():
    r = ExcludeRules(["*.o", "!keep.o", "build/"])
    assert r.has_patterns
    assert r.excluded("x.o", False) and not r.excluded("keep.o", False)
    assert r.excluded("a/build", True) and not r.excluded("a/build", False)
    assert not r.excluded("", True)
    assert not ExcludeRules(["# only a comment", ""]).has_patterns
    assert not ExcludeRules().excluded("anything", False)
    neg_only = ExcludeRules(["!x"])
    assert neg_only.has_patterns and not neg_only.excluded("x", False) and not neg_only.excluded("y", False)
    # without the prefilter the answers are the same
    r2 = ExcludeRules(["*.o", "!keep.o", "build/"])
    r2._prefilter = None
    for p, d in [("x.o", False), ("keep.o", False), ("a/build", True), ("a/build", False), ("q", False)]:
        assert r.excluded(p, d) == r2.excluded(p, d)


def test_exclude_file(tmp_path):
    mk(tmp_path / "t", "a.bak", "b.txt", "#hash", "c.tmp", "sub/d.bak", "sub/e")
    ef = tmp_path / "excludes"
    ef.write_bytes(b"# comment line\n\n*.bak\r\n\\#hash\n   # not a comment: leading spaces matter\nsub/e\n")
    ef2 = tmp_path / "more"
    ef2.write_bytes(b"*.tmp")  # no trailing newline
    rules = ExcludeRules.from_options(["!sub/d.bak"], [str(ef), str(ef2)], exclude_caches=False)
    # command-line patterns come first, so the file's "*.bak" overrides the earlier "!sub/d.bak"
    assert rels(tmp_path / "t", rules) == ["", "b.txt", "sub"]
    rules = ExcludeRules.from_options([], [str(ef)], False)
    assert "c.tmp" in rels(tmp_path / "t", rules)


def test_exclude_file_missing(tmp_path):
    with pytest.raises(UsageError):
        ExcludeRules.from_options([], [str(tmp_path / "nope")], False)


# ---------------------------------------------------------------- CACHEDIR.TAG


def test_cachedir_tag(tmp_path):
    mk(tmp_path, "good/junk", "good/sub/deep", "bad/junk", "plain/junk", "linked/junk", "short/junk")
    (tmp_path / "good" / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE + b"\n# created by x\n")
    (tmp_path / "bad" / "CACHEDIR.TAG").write_bytes(b"Signature: 00000000000000000000000000000000\n")
    (tmp_path / "short" / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE[:-1])
    os.symlink("../good/CACHEDIR.TAG", tmp_path / "linked" / "CACHEDIR.TAG")
    assert has_cache_tag(str(tmp_path / "good")) and not has_cache_tag(str(tmp_path / "bad"))
    assert not has_cache_tag(str(tmp_path / "linked")) and not has_cache_tag(str(tmp_path / "plain"))
    got = rels(tmp_path, ExcludeRules(exclude_caches=True))
    assert got == [
        "", "bad", "bad/CACHEDIR.TAG", "bad/junk", "good", "good/CACHEDIR.TAG",
        "linked", "linked/CACHEDIR.TAG", "linked/junk", "plain", "plain/junk",
        "short", "short/CACHEDIR.TAG", "short/junk",
    ]
    assert "good/junk" in rels(tmp_path, ExcludeRules(exclude_caches=False))
    # patterns still apply to the tag itself; a tagged root keeps only its tag too
    assert "good/CACHEDIR.TAG" not in rels(tmp_path, ExcludeRules(["CACHEDIR.TAG"], exclude_caches=True))
    assert rels(tmp_path / "good", ExcludeRules(exclude_caches=True)) == ["", "CACHEDIR.TAG"]


def test_cachedir_tag_fifo_does_not_block(tmp_path):
    mk(tmp_path, "d/junk")
    os.mkfifo(tmp_path / "d" / "CACHEDIR.TAG")
    assert "d/junk" in rels(tmp_path, ExcludeRules(exclude_caches=True))


# ---------------------------------------------------------------- one_file_system


@pytest.fixture
def mounted_tree(tmp_path):
    if not IS_ROOT:
        pytest.skip("mounting needs root")
    mk(tmp_path, "r/before", "r/mnt/", "r/zafter")
    mnt = tmp_path / "r" / "mnt"
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "rvtest", str(mnt)], capture_output=True)
    if res.returncode != 0:
        src = tmp_path / "bindsrc"
        src.mkdir()
        res = subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True)
        if res.returncode != 0:
            pytest.skip("cannot mount here: " + res.stderr.decode(errors="replace").strip())
    try:
        if os.lstat(mnt).st_dev == os.lstat(tmp_path / "r").st_dev:
            pytest.skip("the mount did not get its own st_dev")
        mk(mnt, "inside/file")
        yield tmp_path / "r"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_one_file_system(mounted_tree):
    assert rels(mounted_tree, one_file_system=True) == ["", "before", "mnt", "zafter"]
    assert rels(mounted_tree) == ["", "before", "mnt", "mnt/inside", "mnt/inside/file", "zafter"]
    # a root on the other file system is walked fully: one_file_system is per root
    assert rels(mounted_tree / "mnt", one_file_system=True) == ["", "inside", "inside/file"]
    got = [(e.root, e.relpath) for e in walk([str(mounted_tree), str(mounted_tree / "mnt")], one_file_system=True)]
    r = str(mounted_tree)
    assert got == [(r, ""), (r, "before"), (r, "zafter"), (r + "/mnt", ""), (r + "/mnt", "inside"),
                   (r + "/mnt", "inside/file")]


# ---------------------------------------------------------------- errors


def listed_path(p) -> str:
    """The directory os.scandir is asked to list (the walk passes a directory descriptor)."""
    return os.readlink(f"/proc/self/fd/{p}") if isinstance(p, int) else os.path.abspath(os.fspath(p))


def test_unreadable_directory(tree, monkeypatch):
    real = os.scandir
    bad = os.path.abspath(str(tree / "a"))

    def scandir(path="."):
        if listed_path(path) == bad:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    errors = []
    w = walk([str(tree)], on_error=lambda p, e: errors.append((p, e)))
    got = [e.relpath for e in w]
    assert "a" in got and "a/x.txt" not in got and "b.txt" in got and "link-to-dir" in got
    assert [p for p, _ in errors] == [bad] and isinstance(errors[0][1], PermissionError)
    assert w.error_count == 1 and w.roots_missing == []


def test_error_while_listing_keeps_partial(tree, monkeypatch):
    real = os.scandir
    bad = os.path.abspath(str(tree / "a" / "y"))

    class Failing:
        def __init__(self, it):
            self.it = it
            self.n = 0

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.it.close()

        def __iter__(self):
            return self

        def __next__(self):
            if self.n == 1:
                raise OSError(errno.EIO, "Input/output error")
            self.n += 1
            return next(self.it)

    monkeypatch.setattr(os, "scandir", lambda p=".": Failing(real(p)) if listed_path(p) == bad else real(p))
    errors = []
    got = [e.relpath for e in walk([str(tree)], on_error=lambda p, e: errors.append(p))]
    assert "a/y/z.txt" in got and errors == [bad]


def test_vanished_file(tmp_path):
    mk(tmp_path, "a/f", "b", "c")
    errors = []
    got = []
    for e in walk([str(tmp_path)], on_error=lambda p, e: errors.append((p, e))):
        got.append(e.relpath)
        if e.relpath == "a":  # the root was listed already; "b" goes away before it is stat'ed
            os.unlink(tmp_path / "b")
    assert got == ["", "a", "a/f", "c"]
    assert errors[0][0] == str(tmp_path / "b") and isinstance(errors[0][1], FileNotFoundError)


def test_on_error_can_abort(tmp_path):
    def boom(path, exc):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        list(walk([str(tmp_path / "missing")], on_error=boom))


def test_errors_without_callback_are_counted(tmp_path):
    w = walk([str(tmp_path / "missing"), str(tmp_path)])
    assert [e.relpath for e in w] == [""]
    assert w.error_count == 1 and w.roots_missing == [str(tmp_path / "missing")]


# ---------------------------------------------------------------- speed (informational)


@pytest.mark.skipif(not os.environ.get("RECOVAULT_WALK_BENCH"), reason="set RECOVAULT_WALK_BENCH=1")
def test_walk_speed_usr(capsys):
    rules = ExcludeRules(["*.pyc", "__pycache__/", "/share/doc/"])
    for label, r in (("no patterns", None), ("3 patterns", rules)):
        t0 = time.perf_counter()
        n = sum(1 for _ in walk(["/usr"], r))
        dt = time.perf_counter() - t0
        with capsys.disabled():
            print(f"\nwalk /usr ({label}): {n} entries in {dt:.2f}s = {n / dt:,.0f} entries/s")


def test_prefilter_agrees_with_pathspec():
    import random

    import pathspec

    rng = random.Random(1234)
    pool = ["*.o", "!keep.o", "build/", "/top", "a/b", "**/x/y", "c*/", "?q", "d[ab]", "e[!x]f", "!*.c",
            "s/**", "*", "!a", "lit\\*", "[!z]", "sub/*.h", "x.y/", "*~", "#c", "dot.d", "\\!bang"]
    comps = ["a", "b", "x", "y", "keep.o", "m.o", "build", "top", "c1", "zq", "da", "exf", "e/f", "s", "lit*",
             "z", "x.y", "f.c", "f~", "!bang", "dot.d", "dotxd", "sub", "h.h"]
    for _ in range(300):
        pats = rng.sample(pool, rng.randint(1, 6))
        rules = ExcludeRules(pats)
        spec = pathspec.GitIgnoreSpec.from_lines(pats)
        for _ in range(40):
            parts = "/".join(rng.choice(comps) for _ in range(rng.randint(1, 4))).split("/")
            parents_ok = all(not spec.match_file("/".join(parts[:i]) + "/") for i in range(1, len(parts)))
            if not parents_ok:
                continue
            rel = "/".join(parts)
            for is_dir in (False, True):
                want = bool(spec.match_file(rel + "/" if is_dir else rel))
                assert rules.excluded(rel, is_dir) == want, (pats, rel, is_dir)
