"""A restore never creates, writes, removes or changes the metadata of anything outside its target: not
through symlinks already in the target (at its top or nested), not through symlinks or hard links the
recovery point itself restores. Also: the overwrite rules, --delete, and files that fail part way.
"""
from __future__ import annotations

import dataclasses
import os
import stat
from typing import Dict, List

import pytest

from recovault import api
from recovault.errors import TargetFull
from recovault.restore import RestoreJob
from recovault.vault.keys import KdfParams
from recovault.vault.repo import Settings
from recovault.vault.records import Node

from test_cli import Cli, api_vault, fails, ok

PASSPHRASE = "correct horse battery staple"
FAST_KDF = KdfParams(memory_kib=8, iterations=1, lanes=1)
IS_ROOT = os.geteuid() == 0
MTIME = 1_600_000_000 * 10**9  # the recovered files' mtime


def new_vault(base):
    settings = Settings(min_size=16 << 10, avg_size=64 << 10, max_size=256 << 10, pack_size=1 << 20)
    return api.init_vault(str(base / "vault"), PASSPHRASE, settings=settings, kdf=FAST_KDF,
                          cache_dir=str(base / "cache"))


def write(path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    os.utime(path, ns=(MTIME, MTIME))


def inside(target, path) -> "os.PathLike[str]":
    """Where absolute `path` of the source lands under `target`."""
    return target / str(path).lstrip("/")


def snapshot_of(tmp_path, src, **kw):
    v = new_vault(tmp_path)
    snap = api.backup(v, [str(src)], **kw)
    return v, snap


def restore(v, snap, target, **kw) -> Dict:
    """RestoreJob with only the arguments every version of it takes (so these tests run on old code too)."""
    return RestoreJob(v, snap, str(target), **kw).run()


def outside_tree(tmp_path):
    out = tmp_path / "outside"
    out.mkdir()
    os.chmod(out, 0o755)
    os.utime(out, ns=(10**9, 10**9))
    return out


def listing(path) -> List[str]:
    return sorted(os.listdir(path))


# ---------------------------------------------------------------- escapes


def sub_linked_outside(tmp_path):
    """The issue's repro: the point has <src>/sub/f.txt; the target holds TGT/<src>/sub -> outside."""
    src = tmp_path / "src"
    write(src / "sub" / "f.txt", b"hello\n")
    v, snap = snapshot_of(tmp_path, src)
    out = outside_tree(tmp_path)
    tgt = tmp_path / "tgt"
    inside(tgt, src).mkdir(parents=True)
    os.symlink(out, inside(tgt, src / "sub"))
    return v, snap, src, out, tgt


def test_a_nested_symlink_in_the_target_is_not_followed(tmp_path):
    v, snap, src, out, tgt = sub_linked_outside(tmp_path)
    restore(v, snap, tgt)
    assert listing(out) == []
    sub = inside(tgt, src / "sub")
    assert stat.S_ISDIR(os.lstat(sub).st_mode)  # the link was replaced by the point's directory
    assert (sub / "f.txt").read_bytes() == b"hello\n"


def test_a_symlink_at_the_top_of_the_target_is_not_followed(tmp_path):
    src = tmp_path / "src"
    write(src / "f.txt", b"hello\n")
    v, snap = snapshot_of(tmp_path, src)
    out = outside_tree(tmp_path)
    tgt = tmp_path / "tgt"
    tgt.mkdir()
    top = str(src).lstrip("/").split("/")[0]  # "tmp"
    os.symlink(out, tgt / top)
    restore(v, snap, tgt)
    assert listing(out) == []
    assert stat.S_ISDIR(os.lstat(tgt / top).st_mode)
    assert inside(tgt, src / "f.txt").read_bytes() == b"hello\n"


@pytest.mark.parametrize("overwrite", ["if-changed", "always", "if-newer", "never"])
def test_a_symlink_to_a_file_where_the_point_has_a_file_is_not_written_through(tmp_path, overwrite):
    src = tmp_path / "src"
    write(src / "f.txt", b"hello\n", 0o600)
    v, snap = snapshot_of(tmp_path, src)
    out = outside_tree(tmp_path)
    victim = out / "victim"
    write(victim, b"hello\n", 0o644)  # same size and mtime as the point's file: "unchanged" if followed
    os.utime(victim, ns=(MTIME - 10**9, MTIME - 10**9) if overwrite == "if-newer" else (MTIME, MTIME))
    before = os.stat(victim)
    tgt = tmp_path / "tgt"
    inside(tgt, src).mkdir(parents=True)
    os.symlink(victim, inside(tgt, src / "f.txt"))
    RestoreJob(v, snap, str(tgt), overwrite=overwrite).run()
    after = os.stat(victim)
    assert victim.read_bytes() == b"hello\n"
    assert (after.st_mode, after.st_mtime_ns, after.st_ino) == (before.st_mode, before.st_mtime_ns, before.st_ino)
    f = inside(tgt, src / "f.txt")
    if overwrite in ("never", "if-newer"):  # (if-newer: the link itself, made just now, is newer)
        assert os.path.islink(f)  # kept as it is: neither replaced nor followed
    else:
        assert not os.path.islink(f) and f.read_bytes() == b"hello\n"
        assert stat.S_IMODE(os.lstat(f).st_mode) == 0o600


def test_directory_metadata_is_not_applied_through_a_symlink(tmp_path):
    src = tmp_path / "src"
    write(src / "d" / "f.txt", b"x")
    os.chmod(src / "d", 0o700)
    os.utime(src / "d", ns=(MTIME, MTIME))
    v, snap = snapshot_of(tmp_path, src)
    out = outside_tree(tmp_path)
    if IS_ROOT:
        os.chown(out, 12345, 12345)
    before = os.stat(out)
    tgt = tmp_path / "tgt"
    inside(tgt, src).mkdir(parents=True)
    os.symlink(out, inside(tgt, src / "d"))
    restore(v, snap, tgt)
    after = os.stat(out)
    assert (after.st_mode, after.st_mtime_ns, after.st_uid, after.st_gid) == \
        (before.st_mode, before.st_mtime_ns, before.st_uid, before.st_gid)
    d = os.lstat(inside(tgt, src / "d"))
    assert stat.S_ISDIR(d.st_mode) and stat.S_IMODE(d.st_mode) == 0o700 and d.st_mtime_ns == MTIME


def _crafted_point(v, snap, top_nodes: List[Dict]):
    """A recovery point whose root holds `top_nodes` (their JSON, saved as a tree of the vault, as a backup
    would)."""
    tree_id = v.save_tree([Node.from_json(n) for n in top_nodes])
    v.flush()
    return dataclasses.replace(snap, id="c" * 64, tree=tree_id.hex())


def _file_node(v, snap, name: str) -> Node:
    """The node of file `name` in the root tree of `snap` (a point of one flat directory)."""
    node = v.load_nodes(bytes.fromhex(snap.tree))[0]
    while node.subtree is not None:  # down the source path's ancestors to the backed-up directory
        nodes = v.load_nodes(bytes.fromhex(node.subtree))
        named = {n.name: n for n in nodes}
        if os.fsencode(name) in named:
            return named[os.fsencode(name)]
        node = nodes[0]
    raise KeyError(name)


def test_a_symlink_the_point_restores_is_not_used_by_a_later_entry(tmp_path):
    # A (crafted or damaged) point holding "a" twice: first a symlink to outside, then a directory with a file.
    src = tmp_path / "src"
    write(src / "f", b"payload")
    v, snap = snapshot_of(tmp_path, src)
    out = outside_tree(tmp_path)
    f = _file_node(v, snap, "f")
    sub = v.save_tree([f])
    nodes = [{"name": "a", "meta": {"t": "l", "lt": str(out), "m": 0o777}},
             {"name": "a", "meta": {"t": "d", "m": 0o755}, "subtree": sub.hex()}]
    crafted = _crafted_point(v, snap, nodes)
    tgt = tmp_path / "tgt"
    restore(v, crafted, tgt)
    assert listing(out) == []
    assert stat.S_ISDIR(os.lstat(tgt / "a").st_mode) and (tgt / "a" / "f").read_bytes() == b"payload"


def test_a_hard_link_is_never_made_to_a_file_outside_the_target(tmp_path):
    src = tmp_path / "src"
    write(src / "d" / "a", b"linked")
    (src / "e").mkdir()
    os.link(src / "d" / "a", src / "e" / "b")
    v, snap = snapshot_of(tmp_path, src)
    out = outside_tree(tmp_path)
    tgt = tmp_path / "tgt"
    inside(tgt, src).mkdir(parents=True)
    os.symlink(out, inside(tgt, src / "d"))  # the first name's directory leads outside
    res = restore(v, snap, tgt)
    assert res["errors"] == []
    assert listing(out) == []
    a, b = os.lstat(inside(tgt, src / "d" / "a")), os.lstat(inside(tgt, src / "e" / "b"))
    assert (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) and a.st_nlink == 2
    assert inside(tgt, src / "e" / "b").read_bytes() == b"linked"


@pytest.mark.parametrize("overwrite", ["if-changed", "always", "if-newer"])
def test_a_hard_link_in_the_target_to_a_file_outside_is_not_written_through(tmp_path, overwrite):
    # TGT/f is another name of outside/victim, with the point's size and mtime: keeping it and applying the
    # point's metadata would change the outside file too. It is replaced instead, and the victim untouched.
    src = tmp_path / "src"
    write(src / "f", b"point's", 0o600)
    os.utime(src / "f", ns=(MTIME + 10**9, MTIME + 10**9))
    v, snap = snapshot_of(tmp_path, src)
    out = outside_tree(tmp_path)
    victim = out / "victim"
    write(victim, b"victim!", 0o644)
    os.utime(victim, ns=(MTIME + 10**9, MTIME + 10**9) if overwrite == "if-changed" else (MTIME, MTIME))
    tgt = tmp_path / "tgt"
    inside(tgt, src).mkdir(parents=True)
    os.link(victim, inside(tgt, src / "f"))
    RestoreJob(v, snap, str(tgt), overwrite=overwrite).run()
    assert victim.read_bytes() == b"victim!" and stat.S_IMODE(os.stat(victim).st_mode) == 0o644
    assert os.stat(victim).st_nlink == 1
    assert inside(tgt, src / "f").read_bytes() == b"point's"


def test_merged_usr_links_are_kept_and_never_lead_outside(tmp_path):
    # Restoring / onto a merged-/usr system: the point and the target both hold bin -> usr/bin.
    src = tmp_path / "root"
    write(src / "usr" / "bin" / "tool", b"#!/bin/sh\n", 0o755)
    os.symlink("usr/bin", src / "bin")
    os.symlink("usr/lib", src / "lib")
    (src / "usr" / "lib").mkdir()
    v, snap = snapshot_of(tmp_path, src)
    out = outside_tree(tmp_path)
    tgt = tmp_path / "tgt"
    (inside(tgt, src) / "usr" / "bin").mkdir(parents=True)
    os.symlink("usr/bin", inside(tgt, src / "bin"))
    os.symlink(out, inside(tgt, src / "lib"))  # the same name, another target: replaced, not followed
    ino = os.lstat(inside(tgt, src / "bin")).st_ino
    res = restore(v, snap, tgt)
    assert res["errors"] == []
    assert os.readlink(inside(tgt, src / "bin")) == "usr/bin"
    assert os.lstat(inside(tgt, src / "bin")).st_ino == ino  # the same link, kept
    assert os.readlink(inside(tgt, src / "lib")) == "usr/lib"
    assert inside(tgt, src / "bin" / "tool").read_bytes() == b"#!/bin/sh\n"
    assert listing(out) == []


# ---------------------------------------------------------------- files that fail


def test_a_restore_whose_files_partly_fail_exits_3(tmp_path):
    src = tmp_path / "src"
    write(src / "good.txt", b"good")
    write(src / "bad.txt", b"bad")
    vault = api_vault(tmp_path / "vault")
    cli = Cli(tmp_path / "home")
    ok(cli("backup", "--vault", vault, src))
    tgt = tmp_path / "tgt"
    (inside(tgt, src) / "bad.txt" / "in-the-way").mkdir(parents=True)  # a directory where the point has a file
    res = cli("restore", "--vault", vault, "latest", "--target", tgt)
    fails(res, 3, "1 file(s) could not be restored")
    assert "bad.txt: cannot replace what the target holds there: Is a directory" in res.stderr
    assert inside(tgt, src / "good.txt").read_bytes() == b"good"


def test_a_file_cut_short_by_a_full_target_is_not_left_looking_complete(tmp_path, small_tmpfs):
    src = tmp_path / "src"
    write(src / "big.bin", os.urandom(3 << 20))
    v, snap = snapshot_of(tmp_path, src)
    with pytest.raises(TargetFull):
        restore(v, snap, small_tmpfs)
    d = inside(small_tmpfs, src)
    assert not os.path.lexists(d / "big.bin")
    assert listing(d) == []  # and no temporary file left behind


def _swap_for_symlink(dir_fd: int, name: bytes, to) -> None:
    """What a process with write access to the target could do: put a symlink where a restored file is."""
    os.unlink(name, dir_fd=dir_fd)
    os.symlink(os.fsencode(to), name, dir_fd=dir_fd)


def test_verify_reads_the_file_it_wrote_not_a_symlink_swapped_in_afterwards(tmp_path, monkeypatch):
    """verify re-reads what the restore wrote, even when the file's name in the target has since become a
    symlink (here to a file outside that differs: read by path, the restored file would seem wrong)."""
    src = tmp_path / "src"
    write(src / "f.txt", b"restored\n" * 1000)
    v, snap = snapshot_of(tmp_path, src)
    decoy = outside_tree(tmp_path) / "decoy"
    write(decoy, b"elsewhere\n" * 1000)
    tgt = tmp_path / "tgt"
    verify_queued = RestoreJob._verify_queued

    def swap_then_verify(job: RestoreJob) -> None:
        if os.path.isfile(inside(tgt, src / "f.txt")) and not os.path.islink(inside(tgt, src / "f.txt")):
            fd = os.open(inside(tgt, src), os.O_RDONLY | os.O_DIRECTORY)
            _swap_for_symlink(fd, b"f.txt", decoy)
            os.close(fd)
        verify_queued(job)

    monkeypatch.setattr(RestoreJob, "_verify_queued", swap_then_verify)
    res = restore(v, snap, tgt, verify=True)
    assert os.readlink(inside(tgt, src / "f.txt")) == str(decoy)  # the swap did happen before verify
    assert res["errors"] == [] and res["stats"]["verified"] == 1
    assert decoy.read_bytes() == b"elsewhere\n" * 1000


@pytest.mark.parametrize("swap", ["symlink", "hard link"])
def test_verify_never_reads_what_was_swapped_in_right_after_the_write(tmp_path, monkeypatch, swap):
    """A symlink (or a hard link to a file outside) put in place of a restored file before verify opened it
    (just after its rename) is not read: verify says the file is no longer the one restored, though the
    file outside holds the very same bytes, and a path-based verify would have passed."""
    src = tmp_path / "src"
    write(src / "f.txt", b"restored\n" * 1000)
    write(src / "g.txt", b"untouched\n")
    v, snap = snapshot_of(tmp_path, src)
    decoy = outside_tree(tmp_path) / "decoy"
    write(decoy, b"restored\n" * 1000)
    rename = os.rename

    def rename_then_swap(a, b, *, src_dir_fd=None, dst_dir_fd=None):
        rename(a, b, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        if b == b"f.txt" and swap == "symlink":
            _swap_for_symlink(dst_dir_fd, b, decoy)
        elif b == b"f.txt":
            os.unlink(b, dir_fd=dst_dir_fd)
            os.link(decoy, b, dst_dir_fd=dst_dir_fd)

    monkeypatch.setattr(os, "rename", rename_then_swap)
    tgt = tmp_path / "tgt"
    res = restore(v, snap, tgt, verify=True)
    assert os.path.islink(inside(tgt, src / "f.txt")) == (swap == "symlink")
    assert res["stats"]["verified"] == 1  # g.txt
    there = "a symlink" if swap == "symlink" else "another file"
    assert [(e["path"], e["error"]) for e in res["errors"]] == [
        (str(inside(tgt, src / "f.txt")), f"verify: cannot read back: {there} is there now, not the restored file")]
    assert decoy.read_bytes() == b"restored\n" * 1000


def test_verify_leaves_the_restored_times_as_restored(tmp_path):
    """verify reads files back without touching their atime (O_NOATIME): a restored file keeps the times the
    restore gave it (a plain read would move its atime, older than its ctime, to now)."""
    src = tmp_path / "src"
    write(src / "f.txt", b"restored\n" * 1000)
    v, snap = snapshot_of(tmp_path, src)
    res = restore(v, snap, tmp_path / "tgt", verify=True)
    assert res["errors"] == [] and res["stats"]["verified"] == 1
    st = os.stat(inside(tmp_path / "tgt", src / "f.txt"))
    assert (st.st_atime_ns, st.st_mtime_ns) == (MTIME, MTIME)

# ---------------------------------------------------------------- overwrite rules, --delete


def _point_and_target(tmp_path):
    """A point of src (same.txt, other.txt, new.txt); a target holding same.txt (other content, the point's
    size and mtime, mode 0644), other.txt (other size), old.txt (not in the point)."""
    src = tmp_path / "src"
    write(src / "same.txt", b"point", 0o600)
    write(src / "other.txt", b"point", 0o600)
    write(src / "new.txt", b"point", 0o600)
    v, snap = snapshot_of(tmp_path, src)
    tgt = tmp_path / "tgt"
    d = inside(tgt, src)
    write(d / "same.txt", b"THERE", 0o644)
    write(d / "other.txt", b"there, longer", 0o644)
    write(d / "old.txt", b"extra", 0o644)
    return v, snap, tgt, d


def _contents(d) -> Dict[str, bytes]:
    return {n: (d / n).read_bytes() for n in listing(d)}


def test_overwrite_if_changed_is_the_default_and_keeps_unchanged_files(tmp_path):
    v, snap, tgt, d = _point_and_target(tmp_path)
    res = api.restore(v, "latest", str(tgt))
    assert _contents(d) == {"new.txt": b"point", "old.txt": b"extra", "other.txt": b"point", "same.txt": b"THERE"}
    assert stat.S_IMODE(os.stat(d / "same.txt").st_mode) == 0o600  # kept, with the point's metadata
    assert res["stats"]["skipped"] == 1


def test_overwrite_always_replaces_every_file(tmp_path):
    v, snap, tgt, d = _point_and_target(tmp_path)
    api.restore(v, "latest", str(tgt), overwrite="always")
    assert _contents(d) == {"new.txt": b"point", "old.txt": b"extra", "other.txt": b"point", "same.txt": b"point"}


def test_overwrite_if_newer_replaces_only_older_files(tmp_path):
    v, snap, tgt, d = _point_and_target(tmp_path)
    os.utime(d / "same.txt", ns=(MTIME - 10**9, MTIME - 10**9))  # older than the point's: replaced
    os.utime(d / "other.txt", ns=(MTIME + 10**9, MTIME + 10**9))  # newer: kept
    api.restore(v, "latest", str(tgt), overwrite="if-newer")
    assert _contents(d) == {"new.txt": b"point", "old.txt": b"extra", "other.txt": b"there, longer",
                            "same.txt": b"point"}
    assert stat.S_IMODE(os.stat(d / "other.txt").st_mode) == 0o644  # kept untouched


def test_overwrite_never_keeps_every_existing_file(tmp_path):
    v, snap, tgt, d = _point_and_target(tmp_path)
    res = api.restore(v, "latest", str(tgt), overwrite="never")
    assert _contents(d) == {"new.txt": b"point", "old.txt": b"extra", "other.txt": b"there, longer",
                            "same.txt": b"THERE"}
    assert stat.S_IMODE(os.stat(d / "same.txt").st_mode) == 0o644
    assert res["stats"]["skipped"] == 2


def test_overwrite_never_refuses_a_symlink_where_the_point_has_a_directory(tmp_path):
    v, snap, src, out, tgt = sub_linked_outside(tmp_path)
    res = api.restore(v, "latest", str(tgt), overwrite="never")
    assert [e["path"] for e in res["errors"]] == [str(inside(tgt, src / "sub"))]
    assert "--overwrite never" in res["errors"][0]["error"]
    assert os.path.islink(inside(tgt, src / "sub")) and listing(out) == []


def test_an_unknown_overwrite_mode_or_delete_with_to_is_a_usage_error(tmp_path):
    vault = api_vault(tmp_path / "vault")
    cli = Cli(tmp_path / "home")
    src = tmp_path / "src"
    write(src / "f", b"x")
    ok(cli("backup", "--vault", vault, src))
    res = cli("restore", "--vault", vault, "latest", "--target", tmp_path / "t", "--overwrite", "sometimes")
    assert res.returncode == 2 and "sometimes" in res.stderr
    fails(cli("restore", "--vault", vault, "latest", "--to", tmp_path / "img", "--delete"), 2, "--target only")


def test_delete_removes_what_the_point_does_not_hold_only_inside_the_restored_paths(tmp_path):
    src = tmp_path / "src"
    write(src / "a" / "keep.txt", b"a")
    write(src / "b" / "keep.txt", b"b")
    v, snap = snapshot_of(tmp_path, src)
    out = outside_tree(tmp_path)
    write(out / "precious", b"precious")
    tgt = tmp_path / "tgt"
    a, b = inside(tgt, src / "a"), inside(tgt, src / "b")
    write(a / "extra.txt", b"x")
    write(a / "extra-dir" / "deep" / "f", b"x")
    os.symlink(out, a / "extra-link")  # removed as a link: what it points to stays
    write(b / "extra.txt", b"x")  # b is not restored: left alone
    res = api.restore(v, "latest", str(tgt), [str(src / "a")], delete=True)
    assert res["errors"] == [] and res["stats"]["deleted"] == 3
    assert listing(a) == ["keep.txt"]
    assert listing(b) == ["extra.txt"]
    assert (out / "precious").read_bytes() == b"precious"
    api.restore(v, "latest", str(tgt), delete=True)  # the whole point: b's extra goes too
    assert listing(b) == ["keep.txt"]
    assert listing(out) == ["precious"]


# ---------------------------------------------------------------- streaming


def test_streamed_restore_applies_each_directorys_metadata_after_its_files(tmp_path, monkeypatch):
    # With one file per run and one directory waiting at most, every directory is finished while the pool
    # still works on others: its times must still be the recovery point's (set after its last file).
    import recovault.restore.job as restore_mod
    monkeypatch.setattr(restore_mod, "RUN_FILES", 1)
    monkeypatch.setattr(restore_mod, "MAX_OPEN_DIRS", 1)
    src = tmp_path / "src"
    dirs = [src / f"d{i}" / f"e{j}" for i in range(4) for j in range(3)]
    for n, d in enumerate(dirs):
        for k in range(5):
            write(d / f"f{k}", b"%d-%d" % (n, k))
    for d in dirs + [p.parent for p in dirs]:
        os.chmod(d, 0o750)
        os.utime(d, ns=(MTIME, MTIME))
    v, snap = snapshot_of(tmp_path, src)
    tgt = tmp_path / "tgt"
    res = api.restore(v, "latest", str(tgt), verify=True)
    assert res["errors"] == [] and res["stats"]["files"] == 60 and res["stats"]["verified"] == 60
    for n, d in enumerate(dirs):
        out = inside(tgt, d)
        assert [(out / f"f{k}").read_bytes() for k in range(5)] == [b"%d-%d" % (n, k) for k in range(5)]
        for p in (out, out.parent):
            st = os.lstat(p)
            assert (st.st_mtime_ns, stat.S_IMODE(st.st_mode)) == (MTIME, 0o750), p
