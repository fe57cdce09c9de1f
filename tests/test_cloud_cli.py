"""The command line against vaults in object stores: Azure Blob on Azurite and S3 on moto, both started on
loopback by tests/servers.py. A round trip (init, backup, restore byte for byte, check --read-data), and every
failure the issue names (wrong or missing credentials, a missing container or bucket, a location that does
not parse, a store that is gone): one message naming the store and the operation, its own exit code, and
never a secret (key, SAS signature, secret access key) in any output."""
from __future__ import annotations

import json
import os
import signal
from datetime import datetime, timedelta, timezone
from typing import List

import pytest

from e2e_tree import assert_same, build_tree, restored_root, state
from servers import AZURITE_ACCOUNT, AZURITE_KEY, MOTO_SECRET, free_port, unique_name
from test_cli import FAST_KDF, PASSPHRASE, Cli, fails, json_out, ok

from recovault import api

SECRETS = [AZURITE_KEY, MOTO_SECRET]


def no_secrets(res, *more: str) -> None:
    """Nothing the process said holds a secret (the whole key, or a recognisable piece of it)."""
    said = res.stdout + res.stderr
    for secret in SECRETS + list(more):
        assert secret not in said and secret[5:25] not in said, said


def fast_vault(url: str, tmp_path) -> str:
    """A vault made through the API with a fast KDF (the CLI then unlocks it in milliseconds)."""
    api.init_vault(url, PASSPHRASE, kdf=FAST_KDF, cache_dir=str(tmp_path / "api-cache")).close()
    return url


@pytest.fixture(params=["azure", "s3"])
def cloud(request: pytest.FixtureRequest) -> str:
    """The scheme; the environment points that SDK at its emulator for the test."""
    request.getfixturevalue("azure_env" if request.param == "azure" else "s3_env")
    return request.param


def test_round_trip_from_the_cli(cloud: str, tmp_path) -> None:
    cli = Cli(tmp_path / "home")
    url = f"{cloud}://{unique_name()}/hosts/h1"  # init creates the container or bucket
    src = build_tree(tmp_path / "src", big=False, doc=False)
    expected = state(src)
    results: List = []

    def run(*args):
        res = cli(*args)
        results.append(res)
        return res

    doc = json_out(run("init", "--vault", url, "--json"))
    assert doc["vault"] == url
    fails(run("init", "--vault", url), 11, "already exists")
    snap = json_out(run("backup", "--vault", url, "--json", src))
    assert snap["complete"] is True and snap["stats"]["errors"] == 0 and snap["stats"]["files_new"] > 40
    res = json_out(run("restore", "--vault", url, "--json", "latest", "--target", tmp_path / "out"))
    assert res["errors"] == []
    assert_same(expected, restored_root(tmp_path / "out", src))
    chk = json_out(run("check", "--vault", url, "--json", "--read-data"))
    assert chk["ok"] is True and chk["problems"] == [] and chk["stats"]["packs_read"] == chk["stats"]["packs"] > 0
    again = ok(run("backup", "--vault", url, src))
    assert "0 new, 0 changed" in again.stdout
    for r in results:
        no_secrets(r)


def test_missing_container_or_bucket(cloud: str, tmp_path) -> None:
    cli = Cli(tmp_path / "home")
    url = f"{cloud}://{unique_name('gone')}/v"
    what = "container" if cloud == "azure" else "bucket"
    for args in (("snapshots",), ("backup", tmp_path), ("check",)):
        res = cli(*args, "--vault", url)
        msg = fails(res, 10, url, f"{what} {url.split('/')[2]!r} does not exist")
        no_secrets(res)
        assert msg.count(url) == 1


def test_location_that_does_not_parse(cloud: str, tmp_path) -> None:
    cli = Cli(tmp_path / "home")
    fails(cli("snapshots", "--vault", f"{cloud}://Bad_Name/v"), 2, "invalid vault location", f"{cloud}://")
    fails(cli("init", "--vault", f"{cloud}://ok-name/v?x=1"), 2, "invalid vault location")


def test_an_empty_container_is_no_vault(cloud: str, tmp_path) -> None:
    """A container that exists but holds no vault under the prefix: "no vault", exit 10, nothing written."""
    url = fast_vault(f"{cloud}://{unique_name()}/a", tmp_path)
    cli = Cli(tmp_path / "home")
    fails(cli("snapshots", "--vault", url[:-1] + "b"), 10, "no vault")
    ok(cli("snapshots", "--vault", url))


def test_s3_store_that_is_gone(s3_env, tmp_path) -> None:
    """A server that does not answer (stopped, unreachable): one message after the SDK's retries, exit 19.
    (Azure's default retry policy waits about a minute: test_azure_store_that_is_gone uses a short one.)"""
    cli = Cli(tmp_path / "home")
    dead = f"http://127.0.0.1:{free_port()}"
    res = cli("snapshots", "--vault", f"s3://{unique_name()}/v", env={"AWS_ENDPOINT_URL": dead,
                                                                     "AWS_MAX_ATTEMPTS": "2"})
    fails(res, 19, "s3://", "could not be reached")
    no_secrets(res)


# -- credentials ------------------------------------------------------------------------------------------


def test_s3_endpoint_that_does_not_parse(s3_env, tmp_path) -> None:
    res = Cli(tmp_path / "home")("snapshots", "--vault", "s3://bkt/v", env={"AWS_ENDPOINT_URL": "http://[::1"})
    fails(res, 2, "s3://bkt/v", "AWS configuration")


def test_s3_without_credentials(s3_env, tmp_path) -> None:
    cli = Cli(tmp_path / "home")
    url = fast_vault(f"s3://{unique_name()}/v", tmp_path)
    res = cli("snapshots", "--vault", url, env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None})
    fails(res, 18, url, "no AWS credentials")


def test_azure_wrong_key_and_no_credentials(azure_env, tmp_path) -> None:
    cli = Cli(tmp_path / "home")
    url = fast_vault(f"azure://{unique_name()}/v", tmp_path)
    wrong_key = "V3JvbmdLZXk" + "x" * 77 + "=="
    conn = os.environ["AZURE_STORAGE_CONNECTION_STRING"].replace(AZURITE_KEY, wrong_key)
    res = cli("snapshots", "--vault", url, env={"AZURE_STORAGE_CONNECTION_STRING": conn})
    fails(res, 18, url, "access denied")
    no_secrets(res, wrong_key)
    res = cli("snapshots", "--vault", url, env={"AZURE_STORAGE_CONNECTION_STRING": None})
    fails(res, 2, url, "no Azure credentials", "AZURE_STORAGE_CONNECTION_STRING")
    res = cli("snapshots", "--vault", url, env={"AZURE_STORAGE_CONNECTION_STRING": "AccountKey=;;="})
    fails(res, 2, "AZURE_STORAGE_CONNECTION_STRING")


def test_azure_account_key_and_sas(azure_env, tmp_path) -> None:
    """AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY, or with AZURE_STORAGE_SAS_TOKEN (the endpoint from
    AZURE_STORAGE_BLOB_ENDPOINT). A read-only SAS reads the vault; a backup with it is refused with one
    message, and the SAS's signature appears nowhere."""
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas
    container = unique_name()
    url = fast_vault(f"azure://{container}/v", tmp_path)
    src = build_tree(tmp_path / "src", big=False, doc=False)
    base = {"AZURE_STORAGE_CONNECTION_STRING": None, "AZURE_STORAGE_ACCOUNT": AZURITE_ACCOUNT,
            "AZURE_STORAGE_BLOB_ENDPOINT": azure_env.endpoint}
    cli = Cli(tmp_path / "home")
    ok(cli("backup", "--vault", url, src, env=dict(base, AZURE_STORAGE_KEY=AZURITE_KEY)))
    sas = generate_container_sas(AZURITE_ACCOUNT, container, account_key=AZURITE_KEY,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    signature = dict(p.split("=", 1) for p in sas.split("&"))["sig"]
    read_only = dict(base, AZURE_STORAGE_SAS_TOKEN=sas)
    snaps = json_out(cli("snapshots", "--vault", url, "--json", env=read_only))
    assert len(snaps) == 1  # read and list suffice to restore and check (the README says so)
    assert json_out(cli("check", "--vault", url, "--json", "--read-data", env=read_only))["ok"] is True
    assert json_out(cli("restore", "--vault", url, "--json", "latest", "--target", tmp_path / "out",
                        env=read_only))["errors"] == []
    assert_same(state(src), restored_root(tmp_path / "out", src))
    res = cli("backup", "--vault", url, "--json", src, env=read_only)
    assert res.returncode == 18, res.stderr
    assert "access denied" in json.loads(res.stdout)["error"] and url in json.loads(res.stdout)["error"]
    no_secrets(res, signature, sas)
    # a SAS that may read, write, list and delete in the container but not create containers: init under
    # another prefix of the existing container works (the container is there: nothing to create)
    sas_rwdl = generate_container_sas(AZURITE_ACCOUNT, container, account_key=AZURITE_KEY,
                                      permission=ContainerSasPermissions(read=True, write=True, delete=True,
                                                                         list=True),
                                      expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    res = cli("init", "--vault", f"azure://{container}/w", env=dict(base, AZURE_STORAGE_SAS_TOKEN=sas_rwdl))
    ok(res)
    no_secrets(res, dict(p.split("=", 1) for p in sas_rwdl.split("&"))["sig"])
    res = cli("init", "--vault", f"azure://{unique_name()}/w", env=dict(base, AZURE_STORAGE_SAS_TOKEN=sas_rwdl))
    fails(res, 18, "access denied", "create container")
    res = cli("snapshots", "--vault", url, env=dict(base, AZURE_STORAGE_KEY="not base64 at all!"))
    fails(res, 2, "AZURE_STORAGE_KEY")
    no_secrets(res, "not base64 at all!")


def test_azure_store_that_is_gone(azure_env, monkeypatch) -> None:
    from azure.storage.blob import ExponentialRetry

    from recovault.errors import StoreUnavailable
    from recovault.storage.azure import AzureStorage
    from recovault.storage.objstore import StoreLocation
    dead = f"http://127.0.0.1:{free_port()}/{AZURITE_ACCOUNT}"
    conn = os.environ["AZURE_STORAGE_CONNECTION_STRING"].replace(azure_env.endpoint, dead)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn)
    store = AzureStorage(StoreLocation("azure", "c01", "v/"),
                         retry=ExponentialRetry(initial_backoff=0, increment_base=1, retry_total=1))
    with pytest.raises(StoreUnavailable) as info:
        store.get("config")
    assert str(info.value) == "azure://c01/v: the service could not be reached (after retries) (read config)"
    assert info.value.exit_code == 19


# -- S3 replies moto does not give (it checks no credentials): botocore's Stubber plays the service ---------


def _stubbed_s3(s3_env):
    from botocore.stub import Stubber

    from recovault.storage.objstore import StoreLocation
    from recovault.storage.s3 import S3Storage
    store = S3Storage(StoreLocation("s3", "bkt", "v/"))
    return store, Stubber(store._client)


@pytest.mark.parametrize("code", ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken"])
def test_s3_refused_credentials(s3_env, code: str) -> None:
    from recovault.errors import AccessDenied
    store, stub = _stubbed_s3(s3_env)
    stub.add_client_error("get_object", service_error_code=code, http_status_code=403,
                          service_message=f"the secret {MOTO_SECRET} was wrong")
    with stub, pytest.raises(AccessDenied) as info:
        store.get("config")
    assert str(info.value) == (f"s3://bkt/v: access denied ({code}): check the AWS credentials and what they "
                               "allow (read config)")
    assert info.value.exit_code == 18


@pytest.mark.parametrize("code,status", [("QuotaExceeded", 403), ("XMinioStorageFull", 507), ("Whatever", 507)])
def test_an_s3_compatible_store_out_of_space_or_quota_is_no_space(s3_env, code: str, status: int) -> None:
    """Ceph RGW's bucket quota (403 QuotaExceeded, not a refused credential), MinIO's full drives (507): the
    full-disk error (exit 24), so a job stops as on a full local disk and is run again once there is room."""
    from recovault.errors import NoSpace
    store, stub = _stubbed_s3(s3_env)
    stub.add_client_error("put_object", service_error_code=code, http_status_code=status)
    with stub, pytest.raises(NoSpace) as info:
        store.put("data/00/" + "0" * 64, b"pack")
    assert str(info.value).startswith(f"s3://bkt/v: the store is full or over its quota ({code})")
    assert info.value.exit_code == 24


def test_s3_conditional_create_retries_a_conflict(s3_env) -> None:
    """409 ConditionalRequestConflict: another conditional write of the key was in flight; asked again, the
    service says whether it now exists (412: it does, and this call did not create it)."""
    store, stub = _stubbed_s3(s3_env)
    stub.add_client_error("put_object", service_error_code="ConditionalRequestConflict", http_status_code=409)
    stub.add_client_error("put_object", service_error_code="PreconditionFailed", http_status_code=412)
    stub.add_client_error("put_object", service_error_code="ConditionalRequestConflict", http_status_code=409)
    stub.add_response("put_object", {})
    with stub:
        assert store.put_if_absent("locks/l", b"x") is False
        assert store.put_if_absent("locks/m", b"x") is True
    stub.assert_no_pending_responses()


def test_s3_other_failures_name_the_store(s3_env) -> None:
    from recovault.errors import StorageError, StoreNotFound
    store, stub = _stubbed_s3(s3_env)
    stub.add_client_error("put_object", service_error_code="NoSuchBucket", http_status_code=404)
    stub.add_client_error("put_object", service_error_code="QuotaExceeded", http_status_code=403)
    stub.add_client_error("delete_object", service_error_code="InternalError", http_status_code=500)
    with stub:
        with pytest.raises(StoreNotFound, match=r"^s3://bkt/v: no vault: bucket 'bkt' does not exist"):
            store.put("data/aa/aa", b"x")
        with pytest.raises(StorageError, match=r"^s3://bkt/v: .*QuotaExceeded.* \(write data/aa/aa\)$"):
            store.put("data/aa/aa", b"x")
        with pytest.raises(StorageError, match=r"^s3://bkt/v: request failed \(InternalError, HTTP 500\) "
                                               r"\(delete keys/k\)$"):
            store.delete("keys/k")


def test_azure_default_credential_when_only_the_account_is_set(azure_env, monkeypatch) -> None:
    """AZURE_STORAGE_ACCOUNT alone: DefaultAzureCredential from azure-identity (here a stand-in module);
    without azure-identity, one message listing the variables to set."""
    import sys
    import types

    from recovault.errors import UsageError
    from recovault.storage.azure import container_client

    class FakeCredential:
        def get_token(self, *scopes, **kwargs):
            raise AssertionError("no request is made in this test")

    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "acct")
    monkeypatch.setitem(sys.modules, "azure.identity", types.SimpleNamespace(DefaultAzureCredential=FakeCredential))
    client = container_client("c1")
    assert isinstance(client.credential, FakeCredential) and client.url == "https://acct.blob.core.windows.net/c1"
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # not installed
    with pytest.raises(UsageError, match="AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY"):
        container_client("c1")


def test_container_or_bucket_deleted_mid_run(cloud: str, tmp_path) -> None:
    """The container or bucket vanishes while a vault is open (deleted by someone): every operation then
    says so, naming the store, the container and the operation (exit 10), and deleting is no exception."""
    from recovault.errors import StoreNotFound
    from recovault.storage import open_storage
    name = unique_name()
    store = open_storage(f"{cloud}://{name}/v", create=True)
    store.put("x", b"1")
    store.delete("x")
    if cloud == "azure":
        store._client.delete_container()
    else:
        store._client.delete_bucket(Bucket=name)
    what = "container" if cloud == "azure" else "bucket"
    for op, call in (("write", lambda: store.put("data/aa/aa", b"x")), ("read", lambda: store.get("config")),
                     ("stat", lambda: store.stat("config")), ("list", lambda: list(store.list("data/"))),
                     ("create", lambda: store.put_if_absent("locks/l", b"x")), ("delete", lambda: store.delete("keys/k"))):
        with pytest.raises(StoreNotFound) as info:
            call()
        assert str(info.value).startswith(f"{cloud}://{name}/v: no vault: {what} {name!r} does not exist"), op
        assert f"({op}" in str(info.value) and info.value.exit_code == 10
    store.close()


def test_azure_data_lake_directories_are_not_objects(azure_env, tmp_path) -> None:
    """On a hierarchical-namespace account (Data Lake Gen2) a flat listing also returns each directory, as
    an empty blob with metadata hdi_isfolder=true: it is not one of the vault's objects."""
    from recovault.storage import open_storage
    store = open_storage(f"azure://{unique_name()}/v", create=True)
    store.put("data/3f/3f9a", b"pack")
    for d in ("v/data", "v/data/3f"):
        store._client.upload_blob(d, b"", metadata={"hdi_isfolder": "true"})
    assert list(store.list()) == ["data/3f/3f9a"]
    assert [i.name for i in store.list_info("data")] == ["data/3f/3f9a"]
    store.close()


def test_azurite_stopped_mid_backup_then_back(tmp_path, monkeypatch) -> None:
    """The server stops while a backup uploads its packs: the backup stops with one StoreUnavailable naming
    the store and the operation; with the server back, the vault passes check --read-data, and the next
    backup completes and restores byte for byte."""
    from azure.storage.blob import ExponentialRetry

    from recovault.errors import StoreUnavailable
    from recovault.storage.azure import CONTAINER_NAME, AzureStorage
    from recovault.storage.objstore import parse_location
    from recovault.vault.repo import Settings, Vault
    from servers import run_azurite
    for var in [v for v in os.environ if v.startswith("AZURE_")]:
        monkeypatch.delenv(var)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}").write_bytes(os.urandom(700 << 10))
    port, url = free_port(), f"azure://{unique_name()}/v"
    with run_azurite(tmp_path / "azurite", port) as server:
        for var, value in server.env.items():
            monkeypatch.setenv(var, value)
        api.init_vault(url, PASSPHRASE, kdf=FAST_KDF, cache_dir=str(tmp_path / "c"), settings=Settings(
            min_size=16 << 10, avg_size=64 << 10, max_size=256 << 10, pack_size=1 << 20)).close()
        store = AzureStorage(parse_location(url, CONTAINER_NAME, "container"),
                             retry=ExponentialRetry(initial_backoff=0, increment_base=1, retry_total=1))
        puts = []
        real_put = store.put

        def put_then_die(name, data):
            if name.startswith("data/"):
                puts.append(name)
                if len(puts) == 2:  # stopped (SIGTERM: Azurite, unlike the vault, loses recent state to a kill -9)
                    os.kill(server.pid, signal.SIGTERM)
                    os.waitpid(server.pid, 0)
            real_put(name, data)

        store.put = put_then_die
        vault = Vault.open(store, PASSPHRASE, cache_dir=str(tmp_path / "c"))
        with pytest.raises(StoreUnavailable, match=rf"^backup stopped: .* in {url} failed: {url}: the service "
                                                   r"could not be reached .*\((write|create) "):
            api.backup(vault, [str(src)])
    with run_azurite(tmp_path / "azurite", port):
        cli = Cli(tmp_path / "home")
        assert json_out(cli("check", "--vault", url, "--json", "--read-data"))["ok"] is True
        ok(cli("backup", "--vault", url, src))
        ok(cli("restore", "--vault", url, "latest", "--target", tmp_path / "out"))
        assert_same(state(src), restored_root(tmp_path / "out", src))
