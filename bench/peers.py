#!/usr/bin/env python3
"""recovault beside restic and borg on the same data, in one run.

Corpora (built under --work, default /var/tmp/recovault-peers):
  tree   a copy of /usr/share and /usr/include (many small files)
  big    one multi-GB file (a tar of real system files, repeated to --big-gb)
  image  an ext4 image built with mke2fs -d from a real tree, then changed in place (clustered and
         scattered writes) between backups
  small  200,000 small files (400 directories of 500 random files of 10-2,000 bytes): per-file costs,
         and restore memory (it must follow the tree's depth, not its file count)
For each corpus and tool: initial backup, unchanged re-run, re-run after changes, restore, vault size and
peak memory (max RSS of the tool's process). Ratios are what matter: the machine is noisy, so all tools
run in the same session on the same warm page cache.

Usage:  .venv/bin/python bench/peers.py [--corpora tree,big,image,small] [--big-gb 2] [--image-gb 2] [--json out.json]
Needs: restic and borgbackup (apt-get install restic borgbackup), e2fsprogs (mke2fs).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

PASS = "peers benchmark passphrase 0123456789"
ROOT = Path(__file__).resolve().parent.parent
RECOVAULT = [str(ROOT / ".venv/bin/recovault")] if (ROOT / ".venv/bin/recovault").exists() else ["recovault"]


def run(cmd, env=None, cwd=None, stdin=None):
    """Run a command; return (seconds, max RSS in MiB). Raises on failure."""
    e = dict(os.environ, **(env or {}))
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=e, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         stdin=stdin)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({code}): {err[-2000:]}")
    return dt, ru.ru_maxrss / 1024


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Tool:
    name = ""

    def __init__(self, work: Path):
        self.repo = work / f"repo-{self.name}"
        shutil.rmtree(self.repo, ignore_errors=True)


class Recovault(Tool):
    name = "recovault"
    env = {"RECOVAULT_PASSPHRASE": PASS}

    def init(self):
        run(RECOVAULT + ["init", "--vault", str(self.repo)], self.env)

    def backup(self, src: Path, image: bool = False):
        return run(RECOVAULT + ["backup", "--vault", str(self.repo)] + (["--image"] if image else []) + [str(src)],
                   self.env)

    def restore(self, src: Path, target: Path, image: bool = False):
        if image:
            return run(RECOVAULT + ["restore", "--vault", str(self.repo), "latest", "--to", str(target / "image")],
                       self.env)
        return run(RECOVAULT + ["restore", "--vault", str(self.repo), "latest", "--target", str(target)], self.env)

    def restored_path(self, src: Path, target: Path, image: bool = False) -> Path:
        return target / "image" if image else target / str(src).lstrip("/")


class Restic(Tool):
    name = "restic"
    env = {"RESTIC_PASSWORD": PASS, "RESTIC_CACHE_DIR": "/var/tmp/recovault-peers/restic-cache"}

    def init(self):
        run(["restic", "init", "--repo", str(self.repo)], self.env)

    def backup(self, src: Path, image: bool = False):
        return run(["restic", "backup", "--repo", str(self.repo), str(src)], self.env)

    def restore(self, src: Path, target: Path, image: bool = False):
        return run(["restic", "restore", "--repo", str(self.repo), "latest", "--target", str(target)], self.env)

    def restored_path(self, src: Path, target: Path, image: bool = False) -> Path:
        return target / str(src).lstrip("/")


class Borg(Tool):
    name = "borg"
    env = {"BORG_PASSPHRASE": PASS, "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
           "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}
    n = 0

    def init(self):
        run(["borg", "init", "--encryption=repokey-blake2", str(self.repo)], self.env)

    def backup(self, src: Path, image: bool = False):
        self.n += 1
        return run(["borg", "create", f"{self.repo}::a{self.n}", str(src)], self.env)

    def restore(self, src: Path, target: Path, image: bool = False):
        target.mkdir(parents=True, exist_ok=True)
        return run(["borg", "extract", f"{self.repo}::a{self.n}"], self.env, cwd=target)

    def restored_path(self, src: Path, target: Path, image: bool = False) -> Path:
        return target / str(src).lstrip("/")


def same(a: Path, b: Path) -> bool:
    return subprocess.run(["diff", "-rq", "--no-dereference", str(a), str(b)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0 if a.is_dir() else \
        subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


# ---- corpora -----------------------------------------------------------------------------------
def make_tree(work: Path, dirs=("/usr/share", "/usr/include"), name: str = "tree") -> Path:
    """A copy of real system directories (`cp -a`), made once under `work`."""
    src = work / name
    if not src.exists():
        src.mkdir(parents=True)
        for d in dirs:
            subprocess.run(["cp", "-a", d, str(src / Path(d).name)], check=True)
    return src


def change_tree(src: Path, rng: random.Random) -> None:
    files = sorted(p for p in src.rglob("*") if p.is_file() and not p.is_symlink())
    for p in rng.sample(files, min(200, len(files))):
        with open(p, "ab") as f:
            f.write(b"recovault peers change\n")
    (src / "new-file.bin").write_bytes(os.urandom(4 << 20))


def make_small(work: Path, dirs: int = 400, per_dir: int = 500) -> Path:
    src = work / "small"
    if not src.exists():
        rng = random.Random(1)
        for d in range(dirs):
            sub = src / f"d{d:03d}"
            sub.mkdir(parents=True)
            for f in range(per_dir):
                (sub / f"f{f:03d}.txt").write_bytes(rng.randbytes(rng.randint(10, 2000)))
    return src


def change_small(src: Path, rng: random.Random) -> None:
    for d in rng.sample(sorted(src.iterdir()), 20):
        (d / "changed.txt").write_bytes(rng.randbytes(1000))


def make_big(work: Path, gb: float) -> Path:
    src = work / "big"
    target = int(gb * (1 << 30))
    f = src / "big.tar"
    if not f.exists() or f.stat().st_size < target:
        src.mkdir(parents=True, exist_ok=True)
        tar = work / "usr.tar"
        if not tar.exists():
            subprocess.run(["tar", "cf", str(tar), "--exclude=/usr/share/doc", "/usr/lib", "/usr/share"],
                           check=False, stderr=subprocess.DEVNULL)
        with open(f, "wb") as out, open(tar, "rb") as t:
            while out.tell() < target:
                t.seek(0)
                while out.tell() < target:
                    block = t.read(8 << 20)
                    if not block:
                        break
                    out.write(block)
    return src


def change_file(path: Path, rng: random.Random, clustered: int, scattered: int) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        start = rng.randrange(0, max(1, size - (64 << 20)))
        f.seek(start)
        f.write(os.urandom(clustered))
        for _ in range(scattered):
            f.seek(rng.randrange(0, size - 4096) & ~4095)
            f.write(os.urandom(4096))


def make_image(work: Path, gb: float) -> Path:
    src = work / "image"
    img = src / "disk.img"
    if not img.exists():
        src.mkdir(parents=True, exist_ok=True)
        content = make_tree(work)
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(content), str(img), f"{int(gb * 1024)}M"],
                       check=True)
    return src


# ---- the run ----------------------------------------------------------------------------------
def bench_corpus(name: str, src: Path, work: Path, tools, change, image: bool = False):
    results = {}
    rng = random.Random(42)
    backup_src = src / "disk.img" if image else src
    for T in tools:
        tool = T(work)
        tool.init()
        r = {}
        r["initial_s"], r["initial_rss_mib"] = tool.backup(backup_src, image)
        r["unchanged_s"], _ = tool.backup(backup_src, image)
        results[tool.name] = r
    # the same change for every tool: copy the source state, change once, and back up with each
    change(src, rng)
    for T in tools:
        tool = T.__new__(T)  # the same repository as above (no __init__: it would wipe it)
        tool.repo = work / f"repo-{T.name}"
        tool.n = 2
        r = results[T.name]
        before = du(tool.repo)
        r["changed_s"], r["changed_rss_mib"] = tool.backup(backup_src, image)
        r["changed_added_mb"] = (du(tool.repo) - before) / 1e6
        target = work / f"restore-{T.name}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        r["restore_s"], r["restore_rss_mib"] = tool.restore(backup_src, target, image)
        r["restore_ok"] = same(backup_src, tool.restored_path(backup_src, target, image))
        shutil.rmtree(target, ignore_errors=True)
        r["vault_mb"] = du(tool.repo) / 1e6
    data_mb = (du(src) if not image else (src / "disk.img").stat().st_size) / 1e6
    for r in results.values():
        r["initial_mb_s"] = data_mb / r["initial_s"]
    return {"corpus": name, "data_mb": data_mb, "results": results}


def ratios(res):
    r = res["results"]
    rv, rs, bg = r["recovault"], r.get("restic"), r.get("borg")
    out = {}
    if rs:
        out["initial_vs_restic_x"] = rs["initial_s"] / rv["initial_s"]
        out["unchanged_time_vs_restic"] = rv["unchanged_s"] / rs["unchanged_s"]
        out["changed_time_vs_restic"] = rv["changed_s"] / rs["changed_s"]
        out["changed_added_vs_restic"] = rv["changed_added_mb"] / max(rs["changed_added_mb"], 1e-9)
        out["restore_vs_restic_x"] = rs["restore_s"] / rv["restore_s"]
        out["vault_size_vs_restic"] = rv["vault_mb"] / rs["vault_mb"]
        out["peak_rss_vs_restic"] = rv["initial_rss_mib"] / rs["initial_rss_mib"]
        out["restore_rss_vs_restic"] = rv["restore_rss_mib"] / rs["restore_rss_mib"]
    if bg:
        out["initial_vs_borg_x"] = bg["initial_s"] / rv["initial_s"]
    return out


def table(all_res) -> str:
    lines = []
    for res in all_res:
        lines.append(f"\n### {res['corpus']} ({res['data_mb']:.0f} MB)\n")
        lines.append("| tool | initial s (MB/s) | unchanged s | after changes s (+MB) | restore s | vault MB | "
                     "peak RSS MiB backup / restore | restore ok |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for name, r in res["results"].items():
            lines.append(f"| {name} | {r['initial_s']:.2f} ({r['initial_mb_s']:.0f}) | {r['unchanged_s']:.2f} | "
                         f"{r['changed_s']:.2f} (+{r['changed_added_mb']:.1f}) | {r['restore_s']:.2f} | "
                         f"{r['vault_mb']:.0f} | {r['initial_rss_mib']:.0f} / {r['restore_rss_mib']:.0f} | {r['restore_ok']} |")
        lines.append("\nratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in ratios(res).items()))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/var/tmp/recovault-peers")
    ap.add_argument("--corpora", default="tree,big,image")
    ap.add_argument("--tools", default="recovault,restic,borg")
    ap.add_argument("--big-gb", type=float, default=2.0)
    ap.add_argument("--image-gb", type=float, default=2.0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    tools = [{"recovault": Recovault, "restic": Restic, "borg": Borg}[t] for t in a.tools.split(",")]
    for t in tools:
        if t is not Recovault and shutil.which(t.name) is None:
            sys.exit(f"{t.name} is not installed: apt-get install restic borgbackup")
    all_res = []
    for c in a.corpora.split(","):
        if c == "tree":
            src = make_tree(work)
            res = bench_corpus("tree: /usr/share + /usr/include", src, work, tools, change_tree)
        elif c == "big":
            src = make_big(work, a.big_gb)
            res = bench_corpus(f"big: one {a.big_gb:g} GB file", src, work, tools,
                               lambda s, rng: change_file(s / "big.tar", rng, 16 << 20, 200))
        elif c == "image":
            src = make_image(work, a.image_gb)
            res = bench_corpus(f"image: {a.image_gb:g} GB ext4 image (mke2fs -d)", src, work, tools,
                               lambda s, rng: change_file(s / "disk.img", rng, 16 << 20, 200), image=True)
        elif c == "small":
            res = bench_corpus("small: 200,000 small files", make_small(work), work, tools, change_small)
        else:
            sys.exit(f"unknown corpus {c}")
        all_res.append(res)
        print(table([res]), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(all_res, indent=1))


if __name__ == "__main__":
    main()
