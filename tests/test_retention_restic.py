"""restic equivalence: recovault.retention keeps what restic's own `forget` keeps.

A restic repository gets ~300 snapshots at irregular local times (two hosts, three sources, some tagged; ISO
week 53, DST changes and month ends included), each made by restic's own `backup --time`. Then, for many
policies and groupings, `restic forget --dry-run --json` says what it keeps and removes per group, and
apply_policy, over recovery points with the same times, hosts, paths and tags, must say the same: the same
points kept in the same order, with the same reasons and counters.

The restic here is Debian's 0.14. It predates two rules of current restic (0.16+), which recovault follows:
the oldest point kept when a rule has count left ("oldest daily snapshot"), and -1 for unlimited. So:
points kept only by "oldest ..." reasons are the one allowed difference (and those reasons are left out of
the comparison), and -1 is compared with restic given a count larger than any group. Both rules are checked
exactly against current restic's own expected results and documentation in test_retention.py.

Speed: every restic command derives its key with scrypt tuned to take 0.5 s. The fixture re-encrypts the
repository's one key file with minimal scrypt parameters (restic reads them from the key file), using
restic's key format (AES-256-CTR + Poly1305-AES over the master key). Nothing else is touched: every snapshot
is written by `restic backup`, every decision made by `restic forget`. Each backup waits 200 ms on its lock,
so a dozen run at once, each in its own copy of the repository (see _backup_all); `restic check` then
passes on the merged repository.
"""
from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

import pytest

from recovault import timefmt
from recovault.retention import Policy, apply_policy, group_points
from recovault.vault.records import RecoveryPoint

ZONE = "Europe/Berlin"
PASSWORD = "retention-test"
BIG = 100_000  # stands for -1 (unlimited) with restic 0.14: more than any group's points or buckets


class Made(NamedTuple):
    local: str  # the --time given ("YYYY-MM-DD HH:MM:SS", local in ZONE)
    host: str
    source: str  # "dir" or "stdin"
    tags: Tuple[str, ...]


def _irregular(rng: random.Random, start: datetime, end: datetime, host: str, source: str,
               tag_choices: Sequence[Tuple[str, ...]] = ((),)) -> List[Made]:
    """Times from start to end with irregular gaps: bursts minutes apart, days, weeks."""
    out, t = [], start
    while t < end:
        gap = rng.choice([timedelta(minutes=rng.randint(1, 59)), timedelta(hours=rng.randint(1, 20)),
                          timedelta(days=rng.randint(1, 6), hours=rng.randint(0, 23)),
                          timedelta(days=rng.randint(7, 40))])
        t += gap + timedelta(seconds=rng.randint(0, 59))
        if t.hour != 2:  # 02:00-03:00 local is missing or doubled on DST days: left to the unit tests
            out.append(Made(t.strftime("%Y-%m-%d %H:%M:%S"), host, source, rng.choice(tag_choices)))
    return out


def _dataset() -> List[Made]:
    rng = random.Random(9)
    made = _irregular(rng, datetime(2020, 11, 1), datetime(2023, 3, 15), "alpha", "dir")
    made += _irregular(rng, datetime(2021, 6, 1), datetime(2023, 1, 10), "alpha", "stdin")
    made += _irregular(rng, datetime(2022, 1, 1), datetime(2023, 2, 20), "beta", "dir",
                       [(), (), ("daily",), ("weekly",), ("x", "y"), ("x",)])
    special = ["2020-12-31 10:00:00", "2021-01-03 23:59:59", "2021-01-04 00:00:01",  # ISO week 2020-W53
               "2021-03-28 01:30:00", "2021-03-28 03:30:00",  # DST starts
               "2021-10-31 01:59:59", "2021-10-31 03:00:00",  # DST ends
               "2022-01-31 23:00:00", "2022-02-28 23:30:00", "2022-03-31 22:00:00", "2022-12-31 23:59:58",
               "2023-01-01 00:00:01"]
    made += [Made(t, "alpha", "dir", ()) for t in special]
    seen = set()
    return [m for m in made if not (m.local in seen or seen.add(m.local))]  # one point per time


def _restic_env(repo: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env.update(RESTIC_REPOSITORY=str(repo), RESTIC_PASSWORD=PASSWORD, TZ=ZONE)
    return env


def _cheap_key(repo: Path) -> None:
    """Re-encrypt the repository's key file with scrypt N=2, r=1, p=1 (restic's key format)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
    from cryptography.hazmat.primitives.poly1305 import Poly1305

    def user_key(doc: Dict[str, Any]) -> Tuple[bytes, bytes]:
        k = Scrypt(salt=base64.b64decode(doc["salt"]), length=64, n=doc["N"], r=doc["r"], p=doc["p"]).derive(
            PASSWORD.encode())
        return k[:32], k[32:]  # AES key; MAC key k||r

    def mac(mac_key: bytes, nonce: bytes, ct: bytes) -> bytes:
        enc = Cipher(algorithms.AES(mac_key[:16]), modes.ECB()).encryptor()
        return Poly1305.generate_tag(mac_key[16:] + enc.update(nonce) + enc.finalize(), ct)

    (path,) = (repo / "keys").iterdir()
    doc = json.loads(path.read_text())
    data = base64.b64decode(doc["data"])
    nonce, ct, tag = data[:16], data[16:-16], data[-16:]
    aes, mk = user_key(doc)
    assert mac(mk, nonce, ct) == tag, "restic key file: MAC mismatch (key format not understood)"
    dec = Cipher(algorithms.AES(aes), modes.CTR(nonce)).decryptor()
    master = dec.update(ct) + dec.finalize()
    doc.update(N=2, r=1, p=1)
    aes, mk = user_key(doc)
    enc = Cipher(algorithms.AES(aes), modes.CTR(nonce)).encryptor()
    ct = enc.update(master) + enc.finalize()
    doc["data"] = base64.b64encode(nonce + ct + mac(mk, nonce, ct)).decode()
    path.chmod(0o600)
    path.write_text(json.dumps(doc))


def _backup(repo: Path, src: Path, m: Made) -> None:
    args = ["restic", "backup", "-q", "--no-cache", "--time", m.local, "--host", m.host]
    args += [a for t in m.tags for a in ("--tag", t)]
    args += [str(src)] if m.source == "dir" else ["--stdin", "--stdin-filename", "dump.sql"]
    res = subprocess.run(args, env=_restic_env(repo), input=b"-- dump --\n" if m.source == "stdin" else None,
                         capture_output=True, timeout=120)
    assert res.returncode == 0, f"restic backup --time {m.local!r}: {res.stderr.decode()}"


def _backup_all(repo: Path, src: Path, made: List[Made], lanes: int = 12) -> None:
    """Every backup by restic, in `lanes` copies of the repository at once (one backup at a time in each:
    restic 0.14 retries for seconds when a concurrent backup's lock vanishes while it checks locks), then
    the lanes' files (content-addressed, under the same key) merged into `repo`."""
    copies = [repo.parent / f"lane{i}" for i in range(lanes)]
    for c in copies:
        shutil.copytree(repo, c)
    with ThreadPoolExecutor(lanes) as pool:
        list(pool.map(lambda i: [_backup(copies[i], src, m) for m in made[i::lanes]], range(lanes)))
    for c in copies:
        for kind in ("data", "index", "snapshots"):
            for f in (c / kind).rglob("*"):
                target = repo / f.relative_to(c)
                if f.is_file() and not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, target)


class Repo(NamedTuple):
    path: Path
    points: List[RecoveryPoint]  # restic's snapshots as recovery points (id = restic's id)
    made: List[Made]
    local_times: Dict[str, str]  # restic id -> the --time it was given


def _restic(repo: Path, *args: str) -> Any:
    res = subprocess.run(["restic", "--no-cache", "--no-lock", *args, "--json"], env=_restic_env(repo),
                         capture_output=True, timeout=120)
    assert res.returncode == 0, f"restic {' '.join(args)}: {res.stderr.decode()}"
    return json.loads(res.stdout)


@pytest.fixture(scope="session")
def restic_repo(tmp_path_factory) -> Repo:
    if shutil.which("restic") is None:
        message = "restic is not installed (Debian: apt-get install restic; .ci/setup installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    base = tmp_path_factory.mktemp("restic")
    repo, src = base / "repo", base / "src"
    src.mkdir()
    (src / "file").write_text("content\n")
    subprocess.run(["restic", "--no-cache", "init", "-q"], env=_restic_env(repo), check=True, capture_output=True)
    _cheap_key(repo)
    made = _dataset()
    _backup_all(repo, src, made)
    subprocess.run(["restic", "--no-cache", "check", "-q"], env=_restic_env(repo), check=True,
                   capture_output=True, timeout=120)
    by_time = {(m.local, m.host): m for m in made}
    points, local_times = [], {}
    for sn in _restic(repo, "snapshots"):
        restic_time = datetime.fromisoformat(sn["time"][:19] + sn["time"][-6:])  # "...+01:00", no fraction
        local = restic_time.strftime("%Y-%m-%d %H:%M:%S")
        assert (local, sn["hostname"]) in by_time
        local_times[sn["id"]] = local
        points.append(RecoveryPoint(time=timefmt.format_time(restic_time), host=sn["hostname"],
                                    paths=sn["paths"], tree=sn["tree"], tags=sn.get("tags") or [], id=sn["id"]))
    assert len(points) == len(made)
    return Repo(repo, points, made, local_times)


def test_the_dataset_is_what_was_asked(restic_repo, tz):
    """Restic recorded every --time as recovault's backup --time reads it (same zone), and the data set
    has the shape the comparison needs."""
    tz(ZONE)
    for p in restic_repo.points:
        assert p.time == timefmt.format_time(timefmt.parse_local(restic_repo.local_times[p.id]))
    assert len(restic_repo.points) >= 250
    assert len(group_points(restic_repo.points)) == 3
    assert {tuple(p.tags) for p in restic_repo.points} >= {(), ("daily",), ("x", "y")}


def _restic_args(policy: Policy) -> List[str]:
    args = []
    for name, value in policy.to_json().items():
        if name == "keep_tags":
            args += [a for tags in value for a in ("--keep-tag", ",".join(tags))]
        else:
            args += ["--" + name.replace("_", "-"), str(BIG if value == -1 else value)]
    return args


def _restic_groups(repo: Repo, policy: Policy, group_by: str) -> Dict[Tuple, Dict[str, Any]]:
    out = _restic(repo.path, "forget", "--dry-run", "--group-by", group_by, *_restic_args(policy))
    return {(g["host"] or "", tuple(sorted(g["paths"] or ())), tuple(sorted(g["tags"] or ()))): g for g in out}


def _only_oldest(matches: Sequence[str]) -> bool:
    return all(m.startswith("oldest ") for m in matches)


POLICIES = [
    {"keep_last": 1}, {"keep_last": 5}, {"keep_last": 60}, {"keep_hourly": 10}, {"keep_hourly": 150},
    {"keep_daily": 7}, {"keep_daily": 30}, {"keep_daily": 400}, {"keep_weekly": 4}, {"keep_weekly": 53},
    {"keep_monthly": 6}, {"keep_monthly": 12}, {"keep_monthly": 40}, {"keep_yearly": 1}, {"keep_yearly": 3},
    {"keep_yearly": 10}, {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12, "keep_yearly": 3},
    {"keep_last": 3, "keep_daily": 3}, {"keep_hourly": 24, "keep_daily": 7, "keep_weekly": 5},
    {"keep_within": "1d"}, {"keep_within": "7d"}, {"keep_within": "36h"}, {"keep_within": "1m"},
    {"keep_within": "1m14d"}, {"keep_within": "1y"}, {"keep_within": "2y1m1d1h"},
    {"keep_within_hourly": "2d"}, {"keep_within_daily": "1m"}, {"keep_within_weekly": "3m"},
    {"keep_within_monthly": "1y"}, {"keep_within_yearly": "5y"},
    {"keep_within_daily": "7d", "keep_within_weekly": "1m", "keep_within_monthly": "1y",
     "keep_within_yearly": "75y"},
    {"keep_tags": ["daily"]}, {"keep_tags": ["x,y"]}, {"keep_tags": ["daily", "y"]},
    {"keep_tags": [""], "keep_last": 2}, {"keep_daily": 5, "keep_tags": ["weekly"], "keep_within": "3d"},
    {"keep_weekly": 2, "keep_within_daily": "10d", "keep_tags": ["x"]},
    # -1 (unlimited): restic 0.14 is given BIG instead
    {"keep_daily": -1}, {"keep_last": -1}, {"keep_monthly": -1, "keep_weekly": 4},
    {"keep_hourly": -1, "keep_within": "2m"},
]


# every policy with restic's default grouping; every fourth with each other grouping
CASES = [(spec, "host,paths") for spec in POLICIES] + \
    [(spec, by) for by in ("host", "", "host,paths,tags", "paths") for spec in POLICIES[::4]]


@pytest.mark.parametrize("spec, group_by", CASES,
                         ids=[f"{json.dumps(s, separators=(',', ':'))}-by:{b}" for s, b in CASES])
def test_same_as_restic_forget(restic_repo, tz, spec, group_by):
    tz(ZONE)
    policy = Policy.from_json(spec)
    unlimited = -1 in spec.values()
    restic = _restic_groups(restic_repo, policy, group_by)
    ours = group_points(restic_repo.points, group_by)
    assert sorted(tuple(g.key) for g in ours) == sorted(restic)
    for group in ours:
        want = restic[tuple(group.key)]
        out = apply_policy(group.points, policy)
        as_014 = [k for k in out.keep if not _only_oldest(k.matches)]  # restic 0.14 has no keep-oldest
        assert [k.point.id for k in as_014] == [s["id"] for s in want["keep"] or []], group.key
        extra_oldest = {k.point.id for k in out.keep} - {k.point.id for k in as_014}
        assert extra_oldest <= {min(group.points, key=lambda p: p.time).id}  # only ever the oldest point
        assert {p.id for p in out.remove} | extra_oldest == {s["id"] for s in want["remove"] or []}
        for k, snap, reason in zip(as_014, want["keep"] or [], want["reasons"] or []):
            assert reason["snapshot"]["time"] == snap["time"]
            assert [m for m in k.matches if not m.startswith("oldest ")] == reason["matches"]
            if not unlimited and not any(m.startswith("oldest ") for m in k.matches):
                assert k.counters.to_json() == reason["counters"], k
