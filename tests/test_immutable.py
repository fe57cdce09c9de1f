"""Storage that refuses deletion and overwrite (issue 14, docs/security.md, docs/vault-format.md §10.2): the
create-only session protocol, and backups with such storage where it is enforced: an append-only local
directory (chattr +a), a create-only Azure SAS (Azurite), S3 credentials without s3:DeleteObject (moto with
IAM enforced), and S3 Object Lock retention (moto)."""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Union

import pytest

from recovault import api
from recovault.errors import AccessDenied
from recovault.jobs.prune import PruneOptions, run_prune
from recovault.storage import LocalStorage, Storage
from recovault.vault import format as fmt
from recovault.vault.coordination import Coordinator, Plan, WriterSession
from servers import AZURITE_ACCOUNT, AZURITE_KEY, free_port, run_moto, unique_name
from test_backup_restore import FAST_KDF, PASSPHRASE, new_vault, open_vault, small_settings


class CreateOnly(LocalStorage):
    """A local directory that refuses, as a create-only credential does, to replace or delete an object."""

    def put(self, name: str, data: Union[bytes, bytearray, memoryview]) -> None:
        if self.exists(name):
            raise AccessDenied(f"refused: {name} exists")
        super().put(name, data)

    def delete(self, name: str) -> None:
        raise AccessDenied(f"refused: delete {name}")


def test_lock_period_is_soft_delete_plus_what_retention_keeps():
    from recovault.retention import Duration, Policy
    from recovault.vault.immutability import MAX_LOCK_DAYS, lock_days
    assert lock_days(None, 14) == 14
    assert lock_days(Policy(keep_daily=7), 14) == 21
    assert lock_days(Policy(keep_last=5, keep_weekly=4), 0) == 28  # keep_last keeps by count: no time
    assert lock_days(Policy(keep_within=Duration(years=1), keep_monthly=6), 30) == 366 + 30
    assert lock_days(Policy(keep_within_daily=Duration(days=3, hours=1)), 0) == 4
    assert lock_days(Policy(keep_hourly=30), 0) == 2
    assert lock_days(None, 0) == 1  # never an object with no lock at all
    assert lock_days(Policy(keep_yearly=-1), 14) == MAX_LOCK_DAYS


def session_objects(storage: Storage):
    return sorted(storage.list(fmt.SESSIONS))


@pytest.fixture
def vault(tmp_path):
    with new_vault(tmp_path) as v:
        yield v


def test_create_only_session_writes_new_objects_and_prune_reads_and_removes_them(vault):
    """On storage that refuses overwrite and delete, a writer's puts are new objects and its end is an
    object; a prune reads the session from its newest object and deletes them all once it has ended."""
    refusing = CreateOnly(vault.storage.root)
    coord = Coordinator(vault.storage, vault.sealer)
    plan = Plan("2026-01-01T00:00:00.000000Z", "h", [os.urandom(32)], os.urandom(64))
    coord.put_plan(plan)
    w = WriterSession(Coordinator(refusing, vault.sealer), heartbeat=0.05)
    w.open()
    assert w.create_only  # learned from the refused overwrite
    time.sleep(0.3)
    names = session_objects(vault.storage)
    assert names[0] == fmt.SESSIONS + w.name and len(names) >= 4  # the registration, the plans, heartbeats
    (s,) = coord.sessions()
    assert s.name == w.name and s.plans == [plan.name] and s.live(coord.storage_now(), coord.host)
    assert s.objects == names
    w.block_plans()
    assert coord.sessions()[0].plans is None  # the newest object wins
    w.close()
    (s,) = coord.sessions()
    assert s.ended and not s.live(coord.storage_now(), coord.host)
    assert fmt.SESSIONS + w.name + "-end" in s.objects
    run_prune(vault, PruneOptions())
    assert session_objects(vault.storage) == []


def test_a_session_object_copied_to_another_name_is_not_believed(vault):
    """An end object copied under another session's name (anyone with create rights can copy) does not
    end that session: each create-only object names its session and seq inside its sealed document."""
    refusing = CreateOnly(vault.storage.root)
    a = WriterSession(Coordinator(refusing, vault.sealer), heartbeat=3600, create_only=True)
    b = WriterSession(Coordinator(refusing, vault.sealer), heartbeat=3600, create_only=True)
    a.open()
    b.open()
    a.close()
    ended = vault.storage.get(fmt.SESSIONS + a.name + "-end")
    vault.storage.put(fmt.SESSIONS + b.name + "-end", ended)
    coord = Coordinator(vault.storage, vault.sealer)
    sessions = {s.name: s for s in coord.sessions()}
    assert sessions[a.name].ended and not sessions[b.name].ended
    assert sessions[b.name].live(coord.storage_now(), coord.host)
    b.close()
    # An end object alone that does not open ends nothing, and goes once it is as old as a dead session's.
    vault.storage.put(fmt.SESSIONS + "c" * 32 + "-end", ended)
    (c,) = [s for s in coord.sessions() if s.name == "c" * 32]
    assert not c.ended and c.plans is None and c.live(coord.storage_now(), coord.host)
    assert not c.live(coord.storage_now() + 16 * 60, coord.host)


def test_v2_protocol_kept_where_the_storage_allows_it(vault):
    w = WriterSession(Coordinator(vault.storage, vault.sealer), heartbeat=0.05)
    w.open()
    time.sleep(0.2)
    assert not w.create_only and session_objects(vault.storage) == [fmt.SESSIONS + w.name]
    w.close()
    assert session_objects(vault.storage) == []


def test_a_deletion_refused_at_the_end_stores_the_end(vault):
    """S3 credentials without s3:DeleteObject may overwrite: the v2 puts work, the deletion at the end is
    refused, and the session ends with its end object rather than being left to time out."""
    class NoDelete(LocalStorage):
        def delete(self, name: str) -> None:
            raise AccessDenied(f"refused: delete {name}")
    w = WriterSession(Coordinator(NoDelete(vault.storage.root), vault.sealer), heartbeat=3600)
    w.open()
    assert not w.create_only
    w.close()
    assert w.create_only
    assert session_objects(vault.storage) == [fmt.SESSIONS + w.name, fmt.SESSIONS + w.name + "-end"]
    coord = Coordinator(vault.storage, vault.sealer)
    (s,) = coord.sessions()
    assert s.ended and not s.live(coord.storage_now(), coord.host)


# ---- per store: a backup with storage that refuses deletion, then the admin's prune and restore ----------
def make_tree(root: Path) -> Path:
    src = root / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(300_000))
    (src / "sub" / "b.txt").write_bytes(b"hello immutable storage\n" * 2000)
    return src


def read_tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_restores(vault, point, src: Path, target: Path) -> None:
    api.restore(vault, point.id, str(target))
    restored = target / src.relative_to("/") if (target / src.relative_to("/")).exists() else target
    assert read_tree(restored) == read_tree(src)


def assert_session_ended_create_only(storage: Storage) -> None:
    """One session, in the create-only protocol: its registration, later puts, and its end."""
    names = [n.rsplit("/", 1)[1] for n in session_objects(storage)]
    ids = {n[:32] for n in names}
    assert len(ids) == 1 and names[0] in ids and names[-1].endswith("-end") and len(names) >= 2, names


def chattr(flag: str, *paths: Path) -> None:
    """Set or clear the append-only attribute (as root: CAP_LINUX_IMMUTABLE). Fails the test, with the
    reason, where the file system or the process cannot (this suite's machines can: ext4, root)."""
    done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"chattr {flag} failed (needs ext4/xfs/btrfs and CAP_LINUX_IMMUTABLE): {done.stderr}",
                    pytrace=False)


def append_only_dirs(vault_dir: Path):
    """What the admin prepares (docs/security.md): every directory a backup writes into exists, and is
    append-only, the 256 pack directories included (a directory a host made itself would not be)."""
    for sub in ("data", "index", "snapshots", "journal", "sessions"):
        (vault_dir / sub).mkdir(exist_ok=True)
    for i in range(256):
        (vault_dir / "data" / f"{i:02x}").mkdir(exist_ok=True)
    return [vault_dir] + [p for p in vault_dir.rglob("*") if p.is_dir() and not p.name.startswith(".tmp-")]


def test_local_append_only_directory(tmp_path):
    """A backup into a vault whose directories are append-only (chattr +a): it stores its point, replaces and
    deletes nothing (the file system refuses both), leaves no temp file behind; the admin, with the attribute
    lifted, prunes the session objects away and restores byte for byte."""
    src = make_tree(tmp_path)
    with new_vault(tmp_path) as admin:
        api.backup(admin, [str(src)])
    vault_dir = tmp_path / "vault"
    dirs = append_only_dirs(vault_dir)
    chattr("+a", *dirs)
    try:
        (src / "c.bin").write_bytes(os.urandom(200_000))
        with open_vault(vault_dir, tmp_path / "cache-host") as host:
            point = api.backup(host, [str(src)])
            some_pack = next(iter(host.storage.list(fmt.DATA)))
            with pytest.raises(AccessDenied, match="append-only"):
                host.storage.delete(some_pack)
            with pytest.raises(AccessDenied, match="append-only"):
                host.storage.put(some_pack, b"garbage")
            with pytest.raises(PermissionError):
                os.unlink(vault_dir / some_pack)
        # A process without CAP_LINUX_IMMUTABLE (any non-root user) cannot lift the attribute either.
        drop = ["setpriv", "--bounding-set=-linux_immutable", "--inh-caps=-linux_immutable"]
        lifted = subprocess.run(drop + ["chattr", "-a", str(vault_dir / "data")], capture_output=True, text=True)
        assert lifted.returncode != 0 and "not permitted" in lifted.stderr
        assert [p.name for p in vault_dir.rglob(".tmp-*")] == [".tmp-staging"]  # and it is empty
        assert not list((vault_dir / ".tmp-staging").iterdir())
        assert_session_ended_create_only(LocalStorage(vault_dir))
    finally:
        chattr("-a", *dirs)
    with open_vault(vault_dir, tmp_path / "cache-admin") as admin:
        result = run_prune(admin, PruneOptions())
        assert result.sessions_removed == 1 and session_objects(admin.storage) == []
        assert_restores(admin, point, src, tmp_path / "restored")


def init_at(url: str, cache: Path):
    return api.init_vault(url, PASSPHRASE, settings=small_settings(), kdf=FAST_KDF, cache_dir=str(cache))


def host_backup_refused_deletes(url: str, tmp_path: Path, src: Path, overwrite_refused: bool = True):
    """The host's backup (with the environment's restricted credentials): it stores its point; deleting (and,
    `overwrite_refused`, replacing) an object are refused by the store. Returns the point."""
    (src / "c.bin").write_bytes(os.urandom(200_000))
    with api.open_vault(url, PASSPHRASE, cache_dir=str(tmp_path / "cache-host")) as host:
        point = api.backup(host, [str(src)])
        some_pack = next(iter(host.storage.list(fmt.DATA)))
        with pytest.raises(AccessDenied):
            host.storage.delete(some_pack)
        if overwrite_refused:
            with pytest.raises(AccessDenied):
                host.storage.put(some_pack, b"garbage")
        assert_session_ended_create_only(host.storage)
    return point


def admin_prunes_and_restores(url: str, tmp_path: Path, src: Path, point) -> None:
    with api.open_vault(url, PASSPHRASE, cache_dir=str(tmp_path / "cache-admin")) as admin:
        result = run_prune(admin, PruneOptions())
        assert result.sessions_removed == 1 and session_objects(admin.storage) == []
        assert_restores(admin, point, src, tmp_path / "restored")


def test_azure_create_only_sas(azure_env, monkeypatch, tmp_path):
    """A container SAS with read, create and list permissions only (no write: no overwrite; no delete), which
    Azurite enforces: the host backs up with it; the admin (account key) prunes and restores."""
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas
    container = unique_name()
    url = f"azure://{container}/v"
    src = make_tree(tmp_path)
    with init_at(url, tmp_path / "cache-admin") as admin:
        api.backup(admin, [str(src)])
    sas = generate_container_sas(AZURITE_ACCOUNT, container, account_key=AZURITE_KEY,
                                 permission=ContainerSasPermissions(read=True, create=True, list=True),
                                 expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))
    admin_env = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", AZURITE_ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", sas)
    monkeypatch.setenv("AZURE_STORAGE_BLOB_ENDPOINT", azure_env.endpoint)
    point = host_backup_refused_deletes(url, tmp_path, src)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", admin_env)
    admin_prunes_and_restores(url, tmp_path, src, point)


#: What a host may do in the bucket: read, write new objects (and, S3 being S3, replace them), list; no
#: s3:DeleteObject.
HOST_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:GetBucketLocation"]


@pytest.fixture
def moto_iam(monkeypatch, tmp_path):
    """A private moto server that enforces IAM (after the 6 unauthenticated requests that create an admin
    user, allowed s3:*, and a host user, allowed HOST_ACTIONS): yields {"admin": env, "host": env}."""
    import boto3
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "6")
    for var in [v for v in os.environ if v.startswith("AWS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config-none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials-none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    work = tmp_path / "moto"
    work.mkdir()
    with run_moto(work, free_port()) as server:
        iam = boto3.client("iam", endpoint_url=server.endpoint, region_name="us-east-1",
                           aws_access_key_id="AKIASETUP", aws_secret_access_key="setup")
        envs = {}
        for user, actions in (("admin", ["s3:*"]), ("host", HOST_ACTIONS)):
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="vault", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            envs[user] = {"AWS_ENDPOINT_URL": server.endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                          "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        yield envs


def use_env(monkeypatch, env: dict) -> None:
    for var, value in env.items():
        monkeypatch.setenv(var, value)


def test_s3_credentials_without_delete(moto_iam, monkeypatch, tmp_path):
    """IAM credentials without s3:DeleteObject (moto enforces the policy): the host backs up; its deletions
    are refused (its session ends with an end object); the admin prunes and restores. (s3:PutObject also
    replaces: only versioning or Object Lock keeps what it replaced, docs/security.md.)"""
    url = f"s3://{unique_name()}/v"
    src = make_tree(tmp_path)
    use_env(monkeypatch, moto_iam["admin"])
    with init_at(url, tmp_path / "cache-admin") as admin:
        api.backup(admin, [str(src)])
    use_env(monkeypatch, moto_iam["host"])
    point = host_backup_refused_deletes(url, tmp_path, src, overwrite_refused=False)  # PutObject replaces
    use_env(monkeypatch, moto_iam["admin"])
    admin_prunes_and_restores(url, tmp_path, src, point)


def test_s3_object_lock(s3_env, tmp_path):
    """On a bucket with Object Lock, each pack, recovery point and journal entry gets a COMPLIANCE retention
    of the vault's lock period (soft-delete period + what the retention policy keeps); index files do not.
    Nobody deletes a locked object, the admin included; prune skips and reports the locked ones, and the
    vault stays whole: check passes, warning of the purged point's locked object (it once reported the blobs
    of that point, which prune had rightly dropped from the index, as lost)."""
    import boto3
    from recovault.retention import Policy
    from recovault.vault.journal import VaultPolicy
    bucket = unique_name()
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    url = f"s3://{bucket}/v"
    src = make_tree(tmp_path)
    with api.init_vault(url, PASSPHRASE, settings=small_settings(), kdf=FAST_KDF, soft_delete_days=0,
                        cache_dir=str(tmp_path / "cache")) as v:
        v.set_policy(VaultPolicy(Policy(keep_daily=2), 0))  # lock: 0 + 2 days
        entries = set(v.storage.list(fmt.JOURNAL))
        first = api.backup(v, [str(src)])
        assert v.lock_days == 2
        (added,) = set(v.storage.list(fmt.JOURNAL)) - entries
        for name in (next(iter(v.storage.list(fmt.DATA))), fmt.SNAPSHOTS + first.id, added):
            head = s3.head_object(Bucket=bucket, Key="v/" + name)
            assert head["ObjectLockMode"] == "COMPLIANCE"
            left = head["ObjectLockRetainUntilDate"] - datetime.datetime.now(datetime.timezone.utc)
            assert datetime.timedelta(days=2) - datetime.timedelta(minutes=5) < left <= datetime.timedelta(days=2)
        assert "ObjectLockMode" not in s3.head_object(Bucket=bucket, Key="v/" + next(iter(v.storage.list(fmt.INDEX))))
        first_packs = set(v.storage.list(fmt.DATA))
        with pytest.raises(AccessDenied, match="locked until"):
            v.storage.delete(sorted(first_packs)[0])
        (src / "a.bin").write_bytes(os.urandom(300_000))  # the first point's own chunks become garbage
        second = api.backup(v, [str(src)])
        api.forget(v, ids=[first.id])  # soft delete off: purged at once, its object locked: left
        assert v.storage.exists(fmt.SNAPSHOTS + first.id)
        result = run_prune(v, PruneOptions(margin=0))
        locked = {o.name for o in result.locked}
        assert fmt.SNAPSHOTS + first.id in locked and locked & first_packs
        assert all("locked until" in o.message for o in result.locked)
        assert locked <= set(v.storage.list("")), "a locked object is still stored"
        assert result.to_json()["locked"]
        from recovault.cli.prune_cmd import _text
        assert f"{len(result.locked)} object(s) still locked" in _text(result)
        assert_restores(v, second, src, tmp_path / "restored")
        from recovault.vault.check import Checker  # the purged point's object, locked, is no damage
        report = Checker(v).run(read_data=True)
        assert report["ok"], report["problems"]
        assert any(first.id[:8] in w and "locked" in w for w in report["warnings"]), report["warnings"]


def test_s3_object_lock_on_an_erasure_coded_set(s3_env, tmp_path):
    """An ec:2+1 set whose three locations are prefixes of a bucket with Object Lock: every shard of every
    pack, point and journal entry is locked for the lock period at each location; deleting a locked object
    is refused before any shard goes (the vault stays whole), prune skips and reports it, and the point
    restores."""
    import boto3
    from recovault.errors import AccessDenied
    from recovault.retention import Policy
    from recovault.vault.journal import VaultPolicy
    bucket = unique_name()
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    url = "ec:2+1:" + ",".join(f"s3://{bucket}/l{i}" for i in range(3))
    src = make_tree(tmp_path)
    with api.init_vault(url, PASSPHRASE, settings=small_settings(), kdf=FAST_KDF, soft_delete_days=0,
                        cache_dir=str(tmp_path / "cache")) as v:
        v.set_policy(VaultPolicy(Policy(keep_daily=3), 0))
        first = api.backup(v, [str(src)])
        assert v.storage.can_lock_objects() and v.lock_days == 3
        pack = next(iter(v.storage.list(fmt.DATA)))
        for name in (pack, fmt.SNAPSHOTS + first.id):
            for i in range(3):
                head = s3.head_object(Bucket=bucket, Key=f"l{i}/{name}")
                assert head["ObjectLockMode"] == "COMPLIANCE", (i, name)
                left = head["ObjectLockRetainUntilDate"] - datetime.datetime.now(datetime.timezone.utc)
                assert datetime.timedelta(days=3) - datetime.timedelta(minutes=5) < left <= datetime.timedelta(days=3)
        with pytest.raises(AccessDenied, match="locked until"):
            v.storage.delete(pack)
        assert all(s3.head_object(Bucket=bucket, Key=f"l{i}/{pack}") for i in range(3))  # no shard went
        (src / "a.bin").write_bytes(os.urandom(300_000))
        second = api.backup(v, [str(src)])
        api.forget(v, ids=[first.id])
        from recovault.vault.check import Checker
        pre = Checker(v).run(read_data=True)
        assert pre["ok"], ("before prune", pre["problems"])
        result = run_prune(v, PruneOptions(margin=0))
        print("PRUNE", result.to_json())
        assert fmt.SNAPSHOTS + first.id in {o.name for o in result.locked}
        report = Checker(v).run(read_data=True)
        assert report["ok"] and report["shards"]["clean"], (report["problems"], report["shards"])
        assert_restores(v, second, src, tmp_path / "restored")


def test_a_failed_put_is_left_where_deletion_is_refused(tmp_path):
    """A put that fails after the store kept the object (a lost acknowledgement) cannot be withdrawn on
    create-only storage: the put's own error is raised, and the object stays (content-addressed garbage
    that check reports and prune removes)."""
    from recovault.errors import StorageError
    from recovault.storage.base import put_or_withdraw

    class LostAck(CreateOnly):
        def put(self, name, data):
            super().put(name, data)
            raise StorageError("connection reset by peer")
    store = LostAck(tmp_path)
    with pytest.raises(StorageError, match="connection reset"):
        put_or_withdraw(store, "data/00/" + "0" * 64, b"pack")
    assert store.get("data/00/" + "0" * 64) == b"pack"


def test_s3_object_lock_with_a_host_key(s3_env, tmp_path):
    """A host key cannot open the journal's policy entries: on a bucket with Object Lock it locks its packs
    and recovery point for the lock period the admin publishes in the signed keyring: the default's (14 days of
    soft delete) when the key is made, the new policy's (keep_daily 30 + 14 days) once the admin sets one, and
    the backup works."""
    import boto3
    from recovault.retention import Policy
    from recovault.vault.journal import DEFAULT_SOFT_DELETE_DAYS
    bucket = unique_name()
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    url = f"s3://{bucket}/v"
    src = make_tree(tmp_path)
    host_pass = "host passphrase of web1 " * 2

    def locked_for(point) -> datetime.timedelta:
        head = s3.head_object(Bucket=bucket, Key="v/" + fmt.SNAPSHOTS + point.id)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        return head["ObjectLockRetainUntilDate"] - datetime.datetime.now(datetime.timezone.utc)
    with api.init_vault(url, PASSPHRASE, settings=small_settings(), kdf=FAST_KDF,
                        cache_dir=str(tmp_path / "cache")) as v:
        api.add_host_key(v, "web1", host_pass, str(tmp_path / "web1.key"), kdf=FAST_KDF)
    with api.open_vault(url, host_pass, key_file=str(tmp_path / "web1.key"), cache_dir=str(tmp_path / "hc")) as h:
        point = api.backup(h, [str(src)])
        assert h.lock_days == DEFAULT_SOFT_DELETE_DAYS
    days = datetime.timedelta(days=DEFAULT_SOFT_DELETE_DAYS)
    assert days - datetime.timedelta(minutes=5) < locked_for(point) <= days
    with api.open_vault(url, PASSPHRASE, cache_dir=str(tmp_path / "cache")) as v:
        api.set_policy(v, Policy(keep_daily=30))
    (src / "later.txt").write_bytes(b"a later file" * 100)
    with api.open_vault(url, host_pass, key_file=str(tmp_path / "web1.key"), cache_dir=str(tmp_path / "hc")) as h:
        later = api.backup(h, [str(src)])
        assert h.lock_days == 30 + DEFAULT_SOFT_DELETE_DAYS
    days = datetime.timedelta(days=30 + DEFAULT_SOFT_DELETE_DAYS)
    assert days - datetime.timedelta(minutes=5) < locked_for(later) <= days
    with api.open_vault(url, PASSPHRASE, cache_dir=str(tmp_path / "cache")) as v:
        assert_restores(v, later, src, tmp_path / "restored-later")
