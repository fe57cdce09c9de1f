"""The hard-link table shared by backup and restore (recovault.hardlinks)."""
from __future__ import annotations

import os

from recovault.hardlinks import HardLinks
from recovault.jobs.walk import walk


def test_first_name_of_each_inode(tmp_path):
    for name in ("one", "three"):
        (tmp_path / name).write_bytes(b"x")
    os.link(tmp_path / "three", tmp_path / "three-2")
    os.link(tmp_path / "three", tmp_path / "three-3")
    t: HardLinks[str] = HardLinks(forget=True)
    firsts = {e.relpath: t.see((e.st.st_dev, e.st.st_ino), e.st.st_nlink, e.path) for e in walk([str(tmp_path)])
              if not os.path.isdir(e.path)}
    root = os.path.abspath(str(tmp_path))
    assert firsts["one"] is None
    names = sorted(k for k in firsts if k.startswith("three"))
    assert firsts[names[0]] is None
    assert firsts[names[1]] == firsts[names[2]] == root + "/" + names[0]
    assert len(t) == 0  # all names of each inode seen: forgotten


def test_kept_unless_forget_and_discard():
    keep: HardLinks[str] = HardLinks()
    assert keep.see((1, 2), 2, "a") is None
    assert keep.see((1, 2), 2, "b") == "a"
    assert keep.get((1, 2)) == "a" and len(keep) == 1  # a backup looks the first name up again at the end
    assert keep.see((1, 3), 1, "single") is None and keep.get((1, 3)) is None  # one name: not tracked
    t: HardLinks[str] = HardLinks(forget=True)
    assert t.see((1, 2), 3, "/x/one") is None and len(t) == 1
    t.discard((1, 2))
    assert t.see((1, 2), 3, "/x/two") is None  # after discard the next name becomes the first
    assert t.see((1, 2), 3, "/x/three") == "/x/two"
