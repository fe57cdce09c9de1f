"""backup --time (api.backup(time=...)): a recovery point records a given local time, as restic's --time,
stored in the one stored form (UTC, timefmt); anything else is a usage error before any work."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from recovault import api, timefmt
from recovault.errors import UsageError

from test_cli import PASSPHRASE, Cli, api_vault, fails, json_out


@pytest.fixture
def vault(tmp_path):
    path = api_vault(tmp_path / "vault")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    with api.open_vault(path, PASSPHRASE, cache_dir=path + "-cache") as v:
        yield v, str(src)


@pytest.mark.parametrize("zone, given, stored", [
    ("UTC", "2024-02-29 13:14:15", "2024-02-29T13:14:15.000000Z"),
    ("Europe/Berlin", "2024-02-29 13:14:15", "2024-02-29T12:14:15.000000Z"),   # CET, +1
    ("Europe/Berlin", "2024-07-01 00:30:00", "2024-06-30T22:30:00.000000Z"),   # CEST, +2
    ("America/New_York", "2024-12-31 23:59:59", "2025-01-01T04:59:59.000000Z"),
])
def test_api_backup_records_the_given_local_time(tz, vault, zone, given, stored):
    tz(zone)
    v, src = vault
    point = api.backup(v, [src], time=given)
    assert point.time == stored
    assert [p.time for p in api.snapshots(v)] == [stored]


def test_api_backup_takes_a_datetime(tz, vault):
    tz("Europe/Berlin")
    v, src = vault
    aware = datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-3)))
    assert api.backup(v, [src], time=aware).time == "2020-01-02T06:04:05.000006Z"
    assert api.backup(v, [src], time=datetime(2020, 1, 2, 3, 4, 5)).time == "2020-01-02T02:04:05.000000Z"
    assert [p.time for p in api.snapshots(v)] == ["2020-01-02T02:04:05.000000Z", "2020-01-02T06:04:05.000006Z"]


@pytest.mark.parametrize("bad", ["2024-02-30 10:00:00", "2024-02-29", "2024-02-29T10:00:00", "yesterday",
                                 "2024-2-9 1:2:3", "2024-02-29 24:00:00", " 2024-02-29 10:00:00", 1700000000])
def test_api_backup_refuses_a_bad_time(vault, bad):
    v, src = vault
    with pytest.raises(UsageError, match="--time"):
        api.backup(v, [src], time=bad)
    assert api.snapshots(v) == []


def test_cli_backup_time(tmp_path):
    cli = Cli(tmp_path / "home")
    path = api_vault(tmp_path / "vault")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    env = {"TZ": "Asia/Kolkata"}
    doc = json_out(cli("backup", "--vault", path, "--json", "--time", "2023-06-15 08:00:00", src, env=env))
    assert doc["time"] == "2023-06-15T02:30:00.000000Z"
    assert timefmt.parse_time(doc["time"]) == datetime(2023, 6, 15, 2, 30, tzinfo=timezone.utc)
    fails(cli("backup", "--vault", path, "--time", "2023-13-01 00:00:00", src, env=env), 2,
          "--time", "'2023-13-01 00:00:00' is not a valid time")
    fails(cli("backup", "--vault", path, "--time", "15/06/2023", src, env=env), 2,
          "YYYY-MM-DD HH:MM:SS")
    points = json_out(cli("snapshots", "--vault", path, "--json", env=env))
    assert [p["time"] for p in points] == ["2023-06-15T02:30:00.000000Z"]
