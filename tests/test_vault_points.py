"""The recovery-point store: a damaged recovery point is reported through a callback, never printed."""
from __future__ import annotations

import os

import pytest

from recovault import api
from recovault.errors import CorruptData

from e2e_tree import write
from test_cli import PASSPHRASE, api_vault


def test_find_snapshot_reports_damaged_points_through_callbacks_and_never_prints(tmp_path, capfd):
    src = tmp_path / "src"
    write(src / "a.txt", b"one")
    vault = api_vault(tmp_path / "vault")
    events = []
    with api.open_vault(vault, PASSPHRASE, cache_dir=os.fspath(tmp_path / "c"),
                        on_event=lambda kind, info: events.append((kind, info))) as v:
        one = api.backup(v, [os.fspath(src)]).id
        write(src / "a.txt", b"two")
        two = api.backup(v, [os.fspath(src)]).id
        path = tmp_path / "vault" / "snapshots" / two
        path.write_bytes(path.read_bytes()[:-1])
        with pytest.raises(CorruptData, match=two[:8]):
            v.find_snapshot("latest")  # never an older point passed off as latest
        got = []
        assert v.find_snapshot(one[:10], on_corrupt=got.append).id == one
        assert len(got) == 1 and two[:8] in got[0]
        events.clear()
        assert v.find_snapshot(one).id == one  # without on_corrupt: the vault's on_event hears it
        assert [k for k, _ in events] == ["problem"] and two[:8] in events[0][1]["message"]
    out = capfd.readouterr()
    assert out.out == "" and out.err == ""
