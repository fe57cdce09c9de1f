"""A vault in Azure Blob Storage: ``azure://CONTAINER[/PREFIX]`` (azure-storage-blob, the ``azure`` extra).

Credentials, in this order (the Azure CLI's variables):

* ``AZURE_STORAGE_CONNECTION_STRING`` (account, key or SAS, and endpoint in one; Azurite's form too);
* ``AZURE_STORAGE_ACCOUNT`` with ``AZURE_STORAGE_KEY`` (shared key) or ``AZURE_STORAGE_SAS_TOKEN`` (a SAS);
* ``AZURE_STORAGE_ACCOUNT`` alone: ``DefaultAzureCredential`` (managed identity, ``az login``, workload
  identity...) when azure-identity is installed.

``AZURE_STORAGE_BLOB_ENDPOINT`` replaces ``https://ACCOUNT.blob.core.windows.net`` for the last two (a
sovereign cloud, a private endpoint, an emulator). Retries (exponential, on timeouts, 5xx, 408/429/503),
connection pooling and per-request MD5 of uploads are the SDK's own. Writes are single atomic requests (or a
block list committed in one request for a large object); ``put_if_absent`` is an upload with
``If-None-Match: *``.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, TypeVar, Union

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerClient, ExponentialRetry

from ..errors import AccessDenied, ObjectMissing, StorageError, StoreNotFound, StoreUnavailable, UsageError
from .base import ObjectInfo
from .objstore import POOL_SIZE, ObjectStore, StoreLocation, parse_location

__all__ = ["AzureStorage", "open_azure"]

#: Container names: 3-63 lowercase letters, digits and single hyphens, starting and ending alphanumeric.
CONTAINER_NAME = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_T = TypeVar("_T")

_NO_CREDENTIALS = ("no Azure credentials: set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with "
                   "AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN (or AZURE_STORAGE_ACCOUNT alone, signed in, with "
                   "azure-identity installed)")


def _credential(account: str) -> Any:
    key = os.environ.get("AZURE_STORAGE_KEY")
    if key:
        try:
            base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise UsageError("AZURE_STORAGE_KEY is not an account key (base64)") from None
        return {"account_name": account, "account_key": key}
    sas = os.environ.get("AZURE_STORAGE_SAS_TOKEN")
    if sas:
        from azure.core.credentials import AzureSasCredential
        return AzureSasCredential(sas.lstrip("?"))
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise UsageError(_NO_CREDENTIALS) from None
    return DefaultAzureCredential()


def _transport() -> Any:
    """The SDK's requests transport with a pool for parallel transfers (requests keeps 10 connections per
    host: more threads than that open and throw away a connection per request, with a warning each)."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    session = requests.Session()
    for scheme in ("http://", "https://"):
        session.mount(scheme, requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE))
    return RequestsTransport(session=session, session_owner=True)


def container_client(container: str, **options: Any) -> ContainerClient:
    """A client for ``container`` with the credentials of the environment (see the module); ``options`` go
    to the SDK (retry_policy, connection_timeout...)."""
    conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if conn:
        try:
            return ContainerClient.from_connection_string(conn, container, **options)
        except (ValueError, AzureError):
            raise UsageError("AZURE_STORAGE_CONNECTION_STRING is not a valid connection string") from None
    account = os.environ.get("AZURE_STORAGE_ACCOUNT")
    if not account:
        raise UsageError(_NO_CREDENTIALS)
    endpoint = os.environ.get("AZURE_STORAGE_BLOB_ENDPOINT") or f"https://{account}.blob.core.windows.net"
    return ContainerClient(endpoint.rstrip("/"), container, credential=_credential(account), **options)


class AzureStorage(ObjectStore):
    """The vault under ``where.prefix`` in container ``where.container``. ``create`` makes the container if
    it is missing. ``retry`` replaces the SDK's default policy (tests use a short one)."""

    def __init__(self, where: StoreLocation, create: bool = False, *, retry: Optional[ExponentialRetry] = None,
                 list_page_size: Optional[int] = None) -> None:
        super().__init__(where)
        options: Dict[str, Any] = {"connection_timeout": 20, "transport": _transport()}
        if retry is not None:
            options["retry_policy"] = retry
        try:
            self._client = container_client(where.container, **options)
        except UsageError as exc:
            raise UsageError(f"{self.url}: {exc}") from None
        self._page = list_page_size
        if create:
            self._create_container()

    def _create_container(self) -> None:
        try:
            self._call("create container", "", self._client.create_container)
        except StorageError as exc:
            if isinstance(exc.__cause__, ResourceExistsError):
                return  # there already: fine
            if isinstance(exc, AccessDenied) and self._listable():
                return  # there already, and these credentials (a container SAS) may use it but not create one
            raise

    def _listable(self) -> bool:
        try:
            next(iter(self._client.list_blobs(results_per_page=1)), None)
        except AzureError:
            return False
        return True

    # -- errors -------------------------------------------------------------------------------------------

    def _call(self, op: str, name: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``fn(*args, **kwargs)`` with the SDK's errors turned into one message naming the store and ``op``;
        never the SDK's own text (it may quote a SAS or a signed URL)."""
        try:
            return fn(*args, **kwargs)
        except AzureError as exc:
            raise self._error(exc, op, name) from exc

    def _error(self, exc: AzureError, op: str, name: str) -> StorageError:
        code = getattr(exc, "error_code", None) or ""
        status = getattr(exc, "status_code", None)
        if code in ("ContainerNotFound", "ContainerBeingDeleted"):
            return StoreNotFound(self._message(f"no vault: container {self.where.container!r} does not exist "
                                               "(init creates it)", op, name))
        if isinstance(exc, ResourceNotFoundError) and code in ("BlobNotFound", ""):
            return ObjectMissing(self._message("object missing", op, name))
        if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
            return AccessDenied(self._message(f"access denied ({code or status}): check the Azure credentials "
                                              "and what they allow", op, name))
        if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
            return StoreUnavailable(self._message("the service could not be reached (after retries)", op, name))
        if isinstance(exc, ResourceExistsError):
            return StorageError(self._message(f"already exists ({code})", op, name))
        detail = f"{code or type(exc).__name__}{f', HTTP {status}' if status else ''}"
        return StorageError(self._message(f"request failed ({detail})", op, name))

    # -- the Storage interface --------------------------------------------------------------------------

    def put(self, name: str, data: Union[bytes, bytearray, memoryview]) -> None:
        self._call("write", name, self._client.upload_blob, self._key(name), bytes(data), overwrite=True,
                   validate_content=True)

    def put_if_absent(self, name: str, data: Union[bytes, bytearray, memoryview]) -> bool:
        key = self._key(name)
        try:
            self._client.upload_blob(key, bytes(data), overwrite=False, validate_content=True)
        except ResourceExistsError:
            return False
        except HttpResponseError as exc:
            if exc.status_code in (409, 412) and exc.error_code not in ("ContainerBeingDeleted",):
                return False
            raise self._error(exc, "create", name) from exc
        except AzureError as exc:
            raise self._error(exc, "create", name) from exc
        return True

    def _get_range(self, key: str, name: str, offset: int, length: Optional[int]) -> bytes:
        try:
            return self._client.download_blob(key, offset=offset, length=length).readall()
        except HttpResponseError as exc:
            if exc.status_code == 416:  # the object exists; the range starts at or past its end
                return b""
            raise self._error(exc, "read", name) from exc
        except AzureError as exc:
            raise self._error(exc, "read", name) from exc

    def _list(self, key_prefix: str) -> Iterator[Tuple[str, int, float]]:
        pages = self._call("list", key_prefix, self._client.list_blobs, name_starts_with=key_prefix or None,
                           results_per_page=self._page, include=["metadata"])
        it = iter(pages)
        while True:
            blob = self._call("list", key_prefix, next, it, None)
            if blob is None:
                return
            if (blob.metadata or {}).get("hdi_isfolder") == "true":
                continue  # a directory of a hierarchical-namespace (Data Lake Gen2) account, not an object
            yield blob.name, blob.size, blob.last_modified.timestamp()

    def stat(self, name: str) -> ObjectInfo:
        props = self._call("stat", name, self._client.get_blob_client(self._key(name)).get_blob_properties)
        return ObjectInfo(name=name, size=props.size, mtime=props.last_modified.timestamp())

    def delete(self, name: str) -> None:
        key = self._key(name)
        try:
            self._client.delete_blob(key)
        except ResourceNotFoundError as exc:
            if exc.error_code in ("ContainerNotFound",):
                raise self._error(exc, "delete", name) from exc
        except AzureError as exc:
            raise self._error(exc, "delete", name) from exc

    def close(self) -> None:
        self._client.close()


def open_azure(location: str, create: bool) -> AzureStorage:
    """The opener registered for ``azure://``."""
    return AzureStorage(parse_location(location, CONTAINER_NAME, "container"), create)
