"""Make tests/data/v1_vault.tar.gz: a format-v1 vault written by recovault as it was before format version 2
(commit 9348cc0, the parent of the format-2 work), for tests/test_migrate.py. The committed tarball is what the
test uses (it proves that the bytes an older recovault really wrote open and upgrade); this script documents
how it was made and can make another one (with new random keys and ids) from a checkout of that commit:

    git worktree add /tmp/v1 9348cc0 && cd /tmp/v1 && bash .ci/setup
    .venv/bin/python tests/data/make_v1_vault.py tests/data/v1_vault.tar.gz

Run with a newer recovault it would make a v2 vault, and it refuses to: the point is today's bytes.

The tarball holds:
- ``vault/``: the vault (passphrase PASSPHRASE, a cheap KDF so tests open it fast, small chunks and packs);
- ``trees/<label>/``: the source tree as it was at each backup (a file, a directory, a relative symlink,
  a hard link), to compare restores with byte for byte;
- ``manifest.json``: per recovery point its label, id, time, host, whether the journal logs it and whether
  it was removed; the absolute path the tree was backed up from (``source``), the vault id.

Recovery points, oldest first:
- ``pre``: written as a recovault older than the journal did: the point is stored, no journal entry is written
  (the backup runs with ``Journal.append`` replaced by a no-op, so nothing else differs);
- ``a``, ``b``, ``c``: ordinary backups, each logged by an "add" entry (``a``'s entry has no ``prev``: it is
  the first, as on a vault whose older points predate the journal);
- ``b`` is then removed with ``Vault.delete_snapshot`` (a "remove" entry, then the object is deleted).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from recovault import api
from recovault.vault.keys import KdfParams
from recovault.vault.repo import Settings

PASSPHRASE = "fixture passphrase, v1 vault"
FAST = KdfParams(memory_kib=8, iterations=1, lanes=1)
SMALL = Settings(min_size=16 << 10, avg_size=64 << 10, max_size=256 << 10, pack_size=1 << 20)
HOST = "v1-fixture-host"
SOURCE = "/tmp/recovault-v1-fixture/src"  # backed up from here; recorded in every point's paths
MTIME = 1_700_000_000  # fixed mtimes: the trees compare equal after a restore


def write_tree(root: Path, version: int) -> None:
    """The source tree of backup number `version`: file.txt changes each time, dir/ grows, link.txt is a
    relative symlink to file.txt, dir/hard.txt a hard link of dir/same.txt."""
    if root.exists():
        shutil.rmtree(root)
    (root / "dir").mkdir(parents=True)
    (root / "file.txt").write_bytes(b"version %d of the file\n" % version * 50)
    (root / "dir" / "same.txt").write_bytes(b"unchanged in every version\n" * 20)
    for i in range(version + 1):
        (root / "dir" / f"n{i}.bin").write_bytes(bytes((i * 7 + j) % 251 for j in range(3000 + i)))
    os.link(root / "dir" / "same.txt", root / "dir" / "hard.txt")
    os.symlink("file.txt", root / "link.txt")
    for p in sorted(root.rglob("*"), reverse=True) + [root]:
        os.utime(p, (MTIME, MTIME), follow_symlinks=False)


def backup(v, label: str, version: int, trees: Path, journaled: bool = True) -> dict:
    src = Path(SOURCE)
    write_tree(src, version)
    shutil.copytree(src, trees / label, symlinks=True)  # hard links become copies: compare content only
    time = f"2024-05-0{version + 1} 12:00:00"
    if journaled:
        point = api.backup(v, [str(src)], host=HOST, time=time, workers=1)
    else:
        append = v.journal.append
        v.journal.append = lambda *a, **k: ""  # what a recovault older than the journal did: no entry
        try:
            point = api.backup(v, [str(src)], host=HOST, time=time, workers=1)
        finally:
            v.journal.append = append
    return {"label": label, "id": point.id, "time": point.time, "host": HOST, "journaled": journaled,
            "removed": False}


def main(out: str) -> None:
    from recovault.vault import format as fmt
    if getattr(fmt, "FORMAT_VERSION", None) != 1 or hasattr(fmt, "VAULT_FORMAT"):  # v2 code: fmt.VAULT_FORMAT
        sys.exit("run this with recovault at commit 9348cc0 (format version 1): see the docstring")
    work = Path(tempfile.mkdtemp(prefix="v1-fixture-"))
    try:
        vault, trees, cache = work / "vault", work / "trees", work / "cache"
        trees.mkdir()
        points = []
        with api.init_vault(str(vault), PASSPHRASE, settings=SMALL, kdf=FAST, cache_dir=str(cache)) as v:
            vault_id = v.id
            points.append(backup(v, "pre", 0, trees, journaled=False))
            for n, label in enumerate("abc", start=1):
                points.append(backup(v, label, n, trees))
            v.delete_snapshot(points[2]["id"])
            points[2]["removed"] = True
        manifest = {"passphrase": PASSPHRASE, "source": SOURCE, "vault_id": vault_id, "points": points,
                    "made_by": "tests/data/make_v1_vault.py at commit 9348cc0 (format version 1)"}
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        with tarfile.open(out, "w:gz") as tar:
            for name in ("manifest.json", "vault", "trees"):
                tar.add(work / name, arcname=name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(Path(SOURCE).parent, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "v1_vault.tar.gz")
