"""Storage that refuses deletion and overwrite (issue 14, docs/security.md, docs/vault-format.md §10.2): the
create-only session protocol, and backups with such storage where it is enforced: an append-only local
directory (chattr +a), a create-only Azure SAS (Azurite), S3 credentials without s3:DeleteObject (moto with
IAM enforced), and S3 Object Lock retention (moto)."""
from __future__ import annotations

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
from test_backup_restore import PASSPHRASE, new_vault, open_vault


class CreateOnly(LocalStorage):
    """A local directory that refuses, as a create-only credential does, to replace or delete an object."""

    def put(self, name: str, data: Union[bytes, bytearray, memoryview]) -> None:
        if self.exists(name):
            raise AccessDenied(f"refused: {name} exists")
        super().put(name, data)

    def delete(self, name: str) -> None:
        raise AccessDenied(f"refused: delete {name}")


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
