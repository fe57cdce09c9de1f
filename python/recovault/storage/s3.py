"""A vault in S3 or an S3-compatible store: ``s3://BUCKET[/PREFIX]`` (boto3, the ``s3`` extra).

Credentials, region and endpoint come from boto3's own chain: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and the shared config files, SSO, instance
and container roles; ``AWS_REGION`` / ``AWS_DEFAULT_REGION``; ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``) for MinIO, Ceph and emulators. Retries are botocore's "standard" mode (timeouts, 5xx,
throttling); checksums are botocore's (CRC on uploads where the service takes them). ``put_if_absent`` is a
``PutObject`` with ``If-None-Match: *`` (S3 has honoured it since 2024; a store that ignores it would
overwrite, see docs/vault-format.md §1).

On a bucket with S3 Object Lock enabled (``can_lock_objects``), ``lock_new_objects`` gives each later put of
the named prefixes a COMPLIANCE retention (nobody, the bucket owner included, can delete that version or
shorten its lock), and ``delete`` (once the bucket was asked, as every writer and prune does through
``Vault.prepare_write``) deletes the object's versions (a plain delete in a versioned bucket only adds a delete
marker and frees nothing): a version still locked raises ``ObjectLocked``.
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

from ..errors import (AccessDenied, NoSpace, ObjectLocked, ObjectMissing, StorageError, StoreNotFound, StoreUnavailable,
                      UsageError)
from .base import ObjectInfo
from .objstore import POOL_SIZE, ObjectStore, StoreLocation, parse_location

__all__ = ["S3Storage", "open_s3"]

#: Bucket names: 3-63 lowercase letters, digits, dots and hyphens, starting and ending alphanumeric.
BUCKET_NAME = re.compile(r"(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
           "AllAccessDisabled", "AccountProblem", "403", "401"}
_MISSING = {"NoSuchKey", "404", "NotFound"}
#: A store out of space or over its quota: S3-compatible stores say so (Ceph RGW's QuotaExceeded, MinIO's
#: XMinioStorageFull, HTTP 507 Insufficient Storage); AWS itself has no capacity limit.
_FULL = {"QuotaExceeded", "XMinioStorageFull", "507"}
_CONFLICT_RETRIES = 5  # 409 ConditionalRequestConflict: another conditional write of the key is in flight
#: The Object Lock mode of the retention recovault gives: COMPLIANCE (GOVERNANCE could be lifted by anyone
#: allowed s3:BypassGovernanceRetention).
LOCK_MODE = "COMPLIANCE"


class S3Storage(ObjectStore):
    """The vault under ``where.prefix`` in bucket ``where.container``. ``create`` makes the bucket if it is
    missing (in the session's region). ``attempts`` replaces botocore's default of 3 (tests use 1)."""

    def __init__(self, where: StoreLocation, create: bool = False, *, attempts: Optional[int] = None,
                 list_page_size: Optional[int] = None) -> None:
        super().__init__(where)
        retries: Dict[str, Any] = {"mode": "standard"}
        if attempts is not None:
            retries["total_max_attempts"] = attempts
        config = Config(retries=retries, max_pool_connections=POOL_SIZE, connect_timeout=20, read_timeout=60)
        try:
            self._session = boto3.session.Session()
            self._client = self._session.client("s3", config=config)
        except ProfileNotFound:
            raise UsageError(f"{self.url}: the AWS profile named by AWS_PROFILE does not exist") from None
        except (BotoCoreError, ValueError) as exc:  # ValueError: an endpoint URL that does not parse
            raise UsageError(f"{self.url}: the AWS configuration (AWS_* variables, ~/.aws) is not usable "
                             f"({type(exc).__name__})") from None
        self._page = list_page_size
        self._lockable: Optional[bool] = None  # the bucket has Object Lock enabled (asked once)
        self._lock: Optional[Tuple[int, Tuple[str, ...]]] = None  # (days, prefixes) of lock_new_objects
        if create:
            self._create_bucket()

    def _create_bucket(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.where.container)
            return
        except (ClientError, BotoCoreError) as exc:
            err = self._error(exc, "create bucket", "")
            if not isinstance(err, StoreNotFound):
                raise err from exc
        region = self._client.meta.region_name
        args: Dict[str, Any] = {"Bucket": self.where.container}
        if region and region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**args)
        except ClientError as exc:
            if self._code(exc) not in ("BucketAlreadyOwnedByYou",):
                raise self._error(exc, "create bucket", "") from exc
        except BotoCoreError as exc:
            raise self._error(exc, "create bucket", "") from exc

    # -- errors -------------------------------------------------------------------------------------------

    @staticmethod
    def _code(exc: ClientError) -> str:
        return str(exc.response.get("Error", {}).get("Code", "")) or str(
            exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))

    def _error(self, exc: Exception, op: str, name: str) -> StorageError:
        """One message naming the store and ``op``; never botocore's own text (it may quote a signed URL)."""
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return AccessDenied(self._message("no AWS credentials found: set AWS_ACCESS_KEY_ID and "
                                              "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE", op, name))
        if isinstance(exc, BotoConnectionError):
            return StoreUnavailable(self._message("the service could not be reached (after retries)", op, name))
        if not isinstance(exc, ClientError):
            return StorageError(self._message(f"request failed ({type(exc).__name__})", op, name))
        code = self._code(exc)
        if code == "NoSuchBucket" or (code in ("404", "NotFound") and op in ("create bucket",)):
            return StoreNotFound(self._message(f"no vault: bucket {self.where.container!r} does not exist "
                                               "(init creates it)", op, name))
        if code in _MISSING:
            return ObjectMissing(self._message("object missing", op, name))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _FULL or status == 507:
            return NoSpace(self._message(f"the store is full or over its quota ({code}): free space or raise "
                                         "the quota, then run the job again", op, name))
        if code in _DENIED:
            return AccessDenied(self._message(f"access denied ({code}): check the AWS credentials and what "
                                              "they allow", op, name))
        return StorageError(self._message(f"request failed ({code}{f', HTTP {status}' if status else ''})",
                                          op, name))

    def _missing_or_no_bucket(self, exc: ClientError, op: str, name: str) -> StorageError:
        """A HEAD 404 carries no body: tell a missing object from a missing bucket by asking for the bucket."""
        err = self._error(exc, op, name)
        if isinstance(err, ObjectMissing):
            try:
                self._client.head_bucket(Bucket=self.where.container)
            except ClientError as bucket_exc:
                if self._code(bucket_exc) in ("404", "NoSuchBucket", "NotFound"):
                    return StoreNotFound(self._message(f"no vault: bucket {self.where.container!r} does not "
                                                       "exist (init creates it)", op, name))
            except BotoCoreError:
                pass
        return err

    # -- Object Lock ---------------------------------------------------------------------------------------

    def can_lock_objects(self) -> bool:
        """Whether the bucket has Object Lock enabled (GetBucketObjectLockConfiguration; credentials that may
        not ask are taken for "no")."""
        if self._lockable is None:
            try:
                conf = self._client.get_object_lock_configuration(Bucket=self.where.container)
                self._lockable = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
            except ClientError as exc:
                if self._code(exc) not in ("ObjectLockConfigurationNotFoundError", "404", "NotImplemented") \
                        and not isinstance(self._error(exc, "lock configuration", ""), AccessDenied):
                    raise self._error(exc, "lock configuration", "") from exc
                self._lockable = False
            except BotoCoreError as exc:
                raise self._error(exc, "lock configuration", "") from exc
        return self._lockable

    def lock_new_objects(self, days: int, prefixes: Tuple[str, ...]) -> bool:
        if not self.can_lock_objects():
            return False
        self._lock = (days, tuple(prefixes))
        return True

    def _lock_args(self, name: str) -> Dict[str, Any]:
        """The retention of a put of ``name``: none, or LOCK_MODE until ``days`` from now."""
        if self._lock is None or not name.startswith(self._lock[1]):
            return {}
        until = datetime.now(timezone.utc) + timedelta(days=self._lock[0])
        return {"ObjectLockMode": LOCK_MODE, "ObjectLockRetainUntilDate": until}

    def _versions(self, key: str) -> List[str]:
        """The version ids (delete markers too) of exactly ``key``."""
        out: List[str] = []
        pages = self._client.get_paginator("list_object_versions").paginate(Bucket=self.where.container, Prefix=key)
        for page in pages:
            for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
                if v["Key"] == key:
                    out.append(v["VersionId"])
        return out

    def _delete_versions(self, name: str) -> None:
        """Delete every version of ``name``; ObjectLocked (naming until when) for one still locked."""
        key = self._key(name)
        try:
            for version in self._versions(key):
                try:
                    self._client.delete_object(Bucket=self.where.container, Key=key, VersionId=version)
                except ClientError as exc:
                    until = self._locked_until(key, version) if self._code(exc) in _DENIED else None
                    if until is not None:
                        raise ObjectLocked(self._message(f"locked until {until.isoformat()} (S3 Object Lock)",
                                                         "delete", name)) from exc
                    raise
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "delete", name) from exc

    def _locked_until(self, key: str, version: str) -> Optional[datetime]:
        try:
            head = self._client.head_object(Bucket=self.where.container, Key=key, VersionId=version)
        except (ClientError, BotoCoreError):
            return None
        until = head.get("ObjectLockRetainUntilDate")
        return until if until is not None and until > datetime.now(timezone.utc) else None

    # -- the Storage interface --------------------------------------------------------------------------

    def put(self, name: str, data: Union[bytes, bytearray, memoryview]) -> None:
        key = self._key(name)
        try:
            self._client.put_object(Bucket=self.where.container, Key=key, Body=bytes(data), **self._lock_args(name))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "write", name) from exc

    def put_if_absent(self, name: str, data: Union[bytes, bytearray, memoryview]) -> bool:
        key = self._key(name)
        body = bytes(data)
        for attempt in range(_CONFLICT_RETRIES):
            try:
                self._client.put_object(Bucket=self.where.container, Key=key, Body=body, IfNoneMatch="*",
                                        **self._lock_args(name))
                return True
            except ClientError as exc:
                code = self._code(exc)
                if code in ("PreconditionFailed", "412"):
                    return False
                if code not in ("ConditionalRequestConflict", "409") or attempt + 1 == _CONFLICT_RETRIES:
                    raise self._error(exc, "create", name) from exc
                time.sleep(0.05 * (attempt + 1))
            except BotoCoreError as exc:
                raise self._error(exc, "create", name) from exc
        raise AssertionError("unreachable")

    def _get_range(self, key: str, name: str, offset: int, length: Optional[int]) -> bytes:
        ranged = {} if offset == 0 and length is None else {  # a whole object: no Range, botocore checks its checksum
            "Range": f"bytes={offset}-{'' if length is None else offset + length - 1}"}
        try:
            reply = self._client.get_object(Bucket=self.where.container, Key=key, **ranged)
            return reply["Body"].read()
        except ClientError as exc:
            if self._code(exc) in ("InvalidRange", "416"):  # exists; the range starts at or past its end
                return b""
            raise self._error(exc, "read", name) from exc
        except BotoCoreError as exc:
            raise self._error(exc, "read", name) from exc

    def _list(self, key_prefix: str) -> Iterator[Tuple[str, int, float]]:
        paging: Dict[str, Any] = {"PageSize": self._page} if self._page else {}
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.where.container, Prefix=key_prefix, PaginationConfig=paging)
        try:
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield obj["Key"], obj["Size"], obj["LastModified"].timestamp()
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "list", key_prefix) from exc

    def stat(self, name: str) -> ObjectInfo:
        try:
            head = self._client.head_object(Bucket=self.where.container, Key=self._key(name))
        except ClientError as exc:
            raise self._missing_or_no_bucket(exc, "stat", name) from exc
        except BotoCoreError as exc:
            raise self._error(exc, "stat", name) from exc
        return ObjectInfo(name=name, size=head["ContentLength"], mtime=head["LastModified"].timestamp())

    def delete(self, name: str) -> None:
        if self._lockable:  # asked (lock_new_objects): versioned, a plain delete would only hide the object
            self._delete_versions(name)
            return
        try:
            self._client.delete_object(Bucket=self.where.container, Key=self._key(name))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "delete", name) from exc

    def close(self) -> None:
        self._client.close()


def open_s3(location: str, create: bool) -> S3Storage:
    """The opener registered for ``s3://``."""
    return S3Storage(parse_location(location, BUCKET_NAME, "bucket"), create)
