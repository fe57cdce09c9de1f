"""Regression tests for what the fuzz harnesses found (fuzz/, docs/reliability.md "Fuzzing"). Each builds the
malformed object with the project's own writer code (sealed under the vault's key where the object is
sealed: the parser behind the tag) and shows the reader now refuses it with the documented error
(CorruptData, exit 15; an unreadable lease or session is taken as held, as the format says), where it
used to fail inside with an internal error (ValueError, TypeError, ZeroDivisionError, OverflowError,
RecursionError)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from recovault import api, core, timefmt
from recovault.errors import CorruptData
from recovault.jobs.image import ImageMap
from recovault.storage import erasure
from recovault.vault import format as fmt
from recovault.vault import envelope, reach
from recovault.vault.coordination import Coordinator, Plan
from recovault.vault.records import Node, RecoveryPoint
from recovault.vault.repo import ConfigEnvelope, Settings

from test_cli import PASSPHRASE, api_vault, run_main

ID = "ab" * 32


@pytest.fixture
def vault(tmp_path, monkeypatch):
    monkeypatch.setenv("RECOVAULT_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("XDG_CACHE_HOME", os.fspath(tmp_path / "xdg"))
    path = api_vault(tmp_path / "vault")
    v = api.open_vault(path, PASSPHRASE, cache_dir=os.fspath(tmp_path / "c"))
    yield path, v
    v.close()


def _point(v, nodes) -> str:
    """A recovery point whose root tree holds `nodes` (encoded as they are: the writer does not check)."""
    tree = v.save_tree(nodes)
    v.flush()
    return v.save_snapshot(RecoveryPoint(time=timefmt.now(), host="h", paths=["/x"], tree=tree.hex()))


MALFORMED_NODES = {
    "subtree not hex": Node(b"d", {"t": "d"}, subtree="d8bf2b'ea" + "0" * 55),
    "subtree a number": Node(b"d", {"t": "d"}, subtree=5),  # type: ignore[arg-type]
    "content not hex": Node(b"f", {"t": "f"}, size=1, content=["zz"]),
    "content a string": Node(b"f", {"t": "f"}, size=1, content=ID),  # type: ignore[arg-type]
    "size negative": Node(b"f", {"t": "f"}, size=-1, content=[]),
    "meta a string": Node(b"f", "f", size=0, content=[]),  # type: ignore[arg-type]
    "image block size 0": Node(b"i", {"t": "f"}, size=10, image={"bs": 0, "size": 10, "pages": [ID]}),
    "image page a number": Node(b"i", {"t": "f"}, size=10, image={"bs": 4096, "size": 10, "pages": [7]}),
    "image without pages": Node(b"i", {"t": "f"}, size=10, image={"bs": 4096, "size": 10}),
}


@pytest.mark.parametrize("what", sorted(MALFORMED_NODES))
def test_a_tree_with_a_malformed_node_is_corrupt(vault, what):
    _, v = vault
    sid = _point(v, [MALFORMED_NODES[what]])
    root = bytes.fromhex(v.load_snapshot(sid).tree)
    with pytest.raises(CorruptData, match="tree node"):
        v.load_nodes(root)
    with pytest.raises(CorruptData):
        reach.referenced(v, [root])  # prune's walk


def test_a_tree_node_named_by_a_lone_surrogate_is_corrupt(vault):
    """A name is a str when it is UTF-8 (§8): "\\ud800" is no file name (UnicodeEncodeError before)."""
    _, v = vault
    tree = v.save_blob(fmt.BLOB_TREE, b'{"nodes":[{"meta":{"t":"f"},"name":"\\ud800"}],"v":1}')
    v.flush()
    with pytest.raises(CorruptData, match="malformed node"):
        v.load_nodes(tree)


def test_check_reports_a_tree_with_a_malformed_node(vault, capsys):
    path, v = vault
    _point(v, [MALFORMED_NODES["subtree not hex"]])
    r = run_main(["--vault", path, "check"], capsys)
    assert r.code == 15, r.err
    assert "internal error" not in r.err and "tree node's subtree is not a tree ID" in r.err


def test_an_image_node_with_block_size_0_never_reaches_the_block_map(vault):
    _, v = vault
    with pytest.raises(ZeroDivisionError):  # what restore and mount did with it
        ImageMap(v, {"bs": 0, "size": 10, "pages": []})
    sid = _point(v, [MALFORMED_NODES["image block size 0"]])
    with pytest.raises(CorruptData):
        v.load_nodes(bytes.fromhex(v.load_snapshot(sid).tree))


def test_a_recovery_point_whose_tree_is_no_tree_id_is_corrupt(vault, capsys):
    path, v = vault
    sid = v.save_snapshot(RecoveryPoint(time=timefmt.now(), host="h", paths=["/x"], tree="not a tree id"))
    with pytest.raises(CorruptData, match="tree is not a tree ID"):
        v.load_snapshot(sid)
    r = run_main(["--vault", path, "check"], capsys)
    assert r.code == 15 and "internal error" not in r.err and sid[:8] in r.err, r.err


@pytest.mark.parametrize("bad", [Settings(min_size=4096, avg_size=2180, max_size=16384),  # the chunker refuses
                                 Settings(level=2 ** 64 + 1)])  # no C int: core.Pipeline refused it (TypeError)
def test_a_config_whose_sealed_settings_are_unusable_is_corrupt(vault, bad, capsys):
    path, v = vault
    config = ConfigEnvelope(v.config.version, v.id, v.config.created)
    v.storage.put(fmt.CONFIG, config.encode(v.master, bad))
    with pytest.raises(CorruptData, match="settings are unusable"):
        api.open_vault(path, PASSPHRASE)
    r = run_main(["--vault", path, "snapshots"], capsys)
    assert r.code == 15 and "internal error" not in r.err, r.err


def test_a_config_whose_sealed_chunker_is_no_object_is_corrupt(vault):
    path, v = vault
    doc = {"recovault": v.config.version, "id": v.id, "created": v.config.created}
    settings = envelope.bind({**Settings().to_dict(), "chunker": "x"}, doc)
    sealed = core.SealSession(v.master.enc_key).seal(fmt.AAD_CONFIG + v.id.encode(), json.dumps(settings).encode())
    v.storage.put(fmt.CONFIG, json.dumps({**doc, "settings": sealed.hex()}).encode())
    with pytest.raises(CorruptData, match="corrupt or was tampered with"):  # AttributeError before
        api.open_vault(path, PASSPHRASE)


DEEP = b"[" * 5000 + b"]" * 5000


@pytest.mark.parametrize("what", ["config", "key file"])
def test_json_nested_too_deeply_is_corrupt_not_a_recursion_error(vault, what, capsys):
    path, v = vault
    name = fmt.CONFIG if what == "config" else fmt.KEYS + v.keyid
    v.storage.put(name, b'{"a": ' + DEEP + b"}")
    r = run_main(["--vault", path, "snapshots"], capsys)
    assert r.code == 15, r.err
    assert "internal error" not in r.err and "RecursionError" not in r.err


def test_an_ec_descriptor_nested_too_deeply_is_damaged():
    with pytest.raises(CorruptData, match="descriptor is damaged"):
        erasure.Descriptor.decode(DEEP)


EC_FORGED_LENGTH = r"""
import sys
sys.path.insert(0, sys.argv[1])
from fixture import DictStorage
from recovault.errors import CorruptData, ObjectMissing
from recovault.storage import erasure
name = "index/" + "ec" * 32
locs = [erasure.Location(f"m{i}", DictStorage(f"m{i}"), "") for i in range(3)]
ec = erasure.ErasureStorage(2, 1, locs)
ec.put(name, b"x" * 1000)
for i, loc in enumerate(locs):  # headers tagged as a writer would (the tag key is the name's), length 2^62
    loc.storage.put(name, erasure._header_bytes(erasure._header(name, 2, 1, i, 1 << 62, bytes(32)))
                    + loc.storage.get(name)[erasure.HEADER_SIZE:])
assert ec.stat(name).size == 1 << 62  # what the headers say
for offset, length in ((0, None), (1 << 61, 100), (10, 10)):
    try:
        ec.get(name, offset, length)
        raise SystemExit("read")
    except (CorruptData, ObjectMissing) as e:
        print(type(e).__name__)
"""


def test_ec_shard_headers_claiming_more_than_was_stored_fail_fast(tmp_path):
    """K shard headers agreeing on a length of 2^62 (anyone who can write the locations can make them): a
    read walked 2^47 blocks that are not there (a hang, then memory exhausted); now it fails at once."""
    script = tmp_path / "forged.py"
    script.write_text(EC_FORGED_LENGTH)
    fuzz_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz")
    proc = subprocess.run([sys.executable, str(script), fuzz_dir], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["CorruptData"] * 3


@pytest.mark.parametrize("field, value", [("k", float("inf")), ("m", 1.5), ("index", "0"), ("set", {})])
def test_an_ec_descriptor_with_a_field_of_the_wrong_type_is_damaged(field, value):
    doc = {"format": "recovault-ec-set", "index": 0, "k": 2, "m": 1, "set": "ab" * 16, "version": 1}
    doc[field] = value
    with pytest.raises(CorruptData, match="descriptor is damaged"):  # OverflowError for an infinite k before
        erasure.Descriptor.decode(json.dumps(doc).encode())


def _coordinator(v) -> Coordinator:
    return Coordinator(v.storage, v.sealer, host="here")


def test_a_lease_whose_expiry_is_no_time_counts_as_held_for_a_term(vault, capsys):
    path, v = vault
    coord = _coordinator(v)
    coord._put(fmt.LOCKS + "cd" * 16, fmt.AAD_LEASE, {"v": 1, "op": "prune", "host": "elsewhere", "pid": 1,
                                                      "started": timefmt.now(), "expires": "soon"})
    held = coord.held_leases()  # ValueError before
    assert [(lease.op, lease.host) for lease in held] == [("?", "?")]
    r = run_main(["--vault", path, "prune"], capsys)
    assert r.code == 17 and "internal error" not in r.err, r.err


@pytest.mark.parametrize("field, value", [("plans", 5), ("plans", [1, 2]), ("pid", float("inf")),
                                          ("pid", 2 ** 64), ("host", ["h"])])
def test_a_session_with_a_malformed_field_is_unreadable(vault, field, value):
    _, v = vault
    coord = _coordinator(v)
    doc = {"v": 1, "host": "elsewhere", "pid": 1, "pid_space": "x", "started": timefmt.now(), "plans": []}
    doc[field] = value
    coord._put(fmt.SESSIONS + "ef" * 16, fmt.AAD_SESSION, doc)
    sessions = coord.sessions()  # OverflowError (pid) before
    assert [(s.host, s.plans) for s in sessions] == [("?", None)]  # holds back every plan
    assert sessions[0].live(0.0, "here") and not sessions[0].has_seen("p")


@pytest.mark.parametrize("time, condemned", [("not a time", [bytes(32)]), (timefmt.now(), [b"\x01"])])
def test_a_plan_with_a_malformed_field_is_damaged(vault, time, condemned):
    _, v = vault
    coord = _coordinator(v)
    coord.put_plan(Plan(time, "h", condemned, b""))
    assert coord.plans() == []  # a plan whose age() raised ValueError, or that condemned no pack ID, before
    assert len(coord.damaged_plans) == 1


def test_a_time_out_of_range_in_utc_does_not_parse():
    with pytest.raises(ValueError, match="out of range"):
        timefmt.parse_time("0001-01-01T00:00:00+01:00")  # format_time raised OverflowError on it
    assert timefmt.parse_time("0001-01-01T00:00:00-01:00").year == 1  # in range in UTC: parses


def test_the_malformed_nodes_encode_as_written(vault):
    """The writer does not check (only readers must refuse): the tests above store what they mean to."""
    _, v = vault
    tree = v.save_tree([MALFORMED_NODES["subtree not hex"]])
    v.flush()
    assert json.loads(v.read_blob(tree))["nodes"][0]["subtree"].startswith("d8bf2b'ea")


def test_a_host_key_file_with_a_lone_surrogate_is_corrupt(tmp_path):
    """Found by fuzzing (harness hostkeys): a host key file whose JSON holds a lone surrogate ("\\ud800", which no
    file recovault writes holds) raised UnicodeEncodeError computing its AAD and digest; it was edited:
    CorruptData."""
    from recovault.errors import CorruptData
    from recovault.vault.hostkeys import HostKeyFile
    doc = {"cipher": "aes-256-gcm", "created": "2026-11-26T00:00:00Z", "data": "AAAA", "digest": "0" * 64,
           "format": "recovault-host-key", "host": "web1\ud800", "hostname": "h", "kdf": "argon2id",
           "kdf_params": {"salt": "AAAAAAAAAAAAAAAAAAAAAA==", "iterations": 1, "lanes": 1, "memory_kib": 8},
           "keyid": "0" * 32, "nonce": "AAAAAAAAAAAAAAAA", "role": "host", "vault": "0" * 32, "version": 1}
    raw = json.dumps(doc).encode()
    with pytest.raises(CorruptData, match="changed after it was written"):
        HostKeyFile.open(raw, "a passphrase of sixteen+ chars", "web1.key")


def test_a_host_key_file_whose_kdf_params_are_no_object_is_no_host_key_file():
    """Found by fuzzing (harness hostkeys): `kdf_params` that is not an object raised AttributeError."""
    from recovault.errors import UsageError
    from recovault.vault.hostkeys import HostKeyFile
    raw = json.dumps({"format": "recovault-host-key", "version": 1, "kdf_params": 7}).encode()
    with pytest.raises(UsageError, match="is not a recovault host key file"):
        HostKeyFile.open(raw, "a passphrase of sixteen+ chars", "web1.key")
