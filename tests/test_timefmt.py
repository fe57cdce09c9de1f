"""Stored times (recovault.timefmt): one form everywhere (RFC 3339, UTC, microseconds, "Z"), and reading
accepts what earlier versions wrote."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from recovault import api, timefmt
from recovault.vault.keys import KdfParams

STORED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")


def test_now_is_the_stored_form():
    before = datetime.now(timezone.utc)
    text = timefmt.now()
    assert STORED.match(text) and len(text) == 27
    assert before - timedelta(seconds=1) <= timefmt.parse_time(text) <= datetime.now(timezone.utc)


def test_format_converts_to_utc():
    cest = timezone(timedelta(hours=2))
    assert timefmt.format_time(datetime(2026, 7, 1, 14, 0, 0, 5, tzinfo=cest)) == "2026-07-01T12:00:00.000005Z"


@pytest.mark.parametrize("text, want", [
    ("2026-11-25T14:00:00Z", datetime(2026, 11, 25, 14, 0, 0, tzinfo=timezone.utc)),  # key files until now
    ("2026-11-25T14:00:00.123456Z", datetime(2026, 11, 25, 14, 0, 0, 123456, tzinfo=timezone.utc)),
    ("2026-11-25T16:00:00.123+02:00", datetime(2026, 11, 25, 14, 0, 0, 123000, tzinfo=timezone.utc)),
])
def test_parse_reads_every_stored_form(text, want):
    assert timefmt.parse_time(text) == want
    assert timefmt.parse_time(timefmt.format_time(want)) == want


@pytest.mark.parametrize("text", ["", "yesterday", "2026-11-25T14:00:00", "2026-13-25T14:00:00Z"])
def test_parse_refuses_what_is_not_a_time(text):
    with pytest.raises(ValueError):
        timefmt.parse_time(text)


def test_stored_forms_sort_in_time_order():
    times = [datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=m)
             for m in (0, 1, 999_999, 1_000_000, 86_400_000_000)]
    texts = [timefmt.format_time(t) for t in times]
    assert sorted(texts) == texts


def test_one_form_in_config_key_files_and_recovery_points(tmp_path):
    """The config's and key file's `created` and a recovery point's `time` are all written the one way
    (key files had whole seconds, recovery points microseconds)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    with api.init_vault(str(tmp_path / "v"), "correct horse battery staple", cache_dir=str(tmp_path / "c"),
                        kdf=KdfParams(memory_kib=8, iterations=1, lanes=1)) as v:
        snap = api.backup(v, [str(src)])
        (key,) = v.keys.list()
    config = json.loads((tmp_path / "v" / "config").read_text())
    for text in (config["created"], key.created, snap.time):
        assert STORED.match(text), text


def test_a_year_before_1000_is_written_with_four_digits_and_reads_back():
    """strftime's %Y writes year 5 as "5": the stored form is always 27 characters (vault-format §9), and
    what format_time writes parse_time reads."""
    want = datetime(5, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    text = timefmt.format_time(want)
    assert text == "0005-01-02T03:04:05.000006Z" and len(text) == 27
    assert timefmt.parse_time(text) == want
