"""Typed records (vault/records.py) against the bytes the format fixes: a tree made of Nodes is byte for byte
the tree written as a JSON dict (docs/vault-format.md §8), so an unchanged directory keeps its tree id and
dedup between recovery points made before and after holds; a RecoveryPoint is stored as the §9 document and
printed (`--json`) as that document plus its id."""
from __future__ import annotations

import base64
import json
import os

import pytest

from recovault import api
from recovault.errors import CorruptData
from recovault.vault import format as fmt
from recovault.vault.records import Node, RecoveryPoint
from recovault.vault.tree import decode_tree, encode_tree

from e2e_tree import write
from test_cli import FAST_KDF as FAST, PASSPHRASE, Cli, api_vault, json_out

CHUNK = "ab" * 32
TREE = "cd" * 32
BAD_UTF8 = b"caf\xe9-\xff.txt"

#: A tree as docs/vault-format.md §8 writes it, one node of each kind, sorted by raw name (b"a.txt" <
#: b"caf\xe9..." < b"disk.img" < b"link" < b"sub" < b"z-future").
OLD_TREE = {"v": 1, "nodes": [
    {"name": "a.txt", "meta": {"t": "f", "m": 420, "u": 0, "g": 0, "un": "root", "gn": "root",
                               "mt": 1732540000000000000, "ct": 1732540000000000001, "sz": 1234, "ino": 12,
                               "dev": 2049, "nl": 1, "x": {"user.k": "dmFs"}},
     "size": 1234, "content": [CHUNK, CHUNK]},
    {"name": {"b64": base64.b64encode(BAD_UTF8).decode()}, "meta": {"t": "f", "m": 384, "sz": 0},
     "size": 0, "content": []},
    {"name": "disk.img", "meta": {"t": "b", "m": 432, "rd": [8, 0]}, "size": 1 << 20,
     "image": {"bs": 65536, "size": 1 << 20, "pages": [TREE]}},
    {"name": "link", "meta": {"t": "l", "m": 511, "lt": {"b64": base64.b64encode(b"\xfe").decode()}}},
    {"name": "sub", "meta": {"t": "d", "m": 493}, "subtree": TREE},
    {"name": "z-future", "meta": {"t": "f"}, "size": 3, "content": [CHUNK], "zz": {"from": "a newer writer"},
     "subtree": None},
]}


def old_encoding(tree) -> bytes:
    """How trees were encoded before they were Nodes (Vault.save_tree of a dict)."""
    return json.dumps(tree, separators=(",", ":"), sort_keys=True).encode()


def test_nodes_round_trip_a_tree_to_identical_bytes():
    raw = old_encoding(OLD_TREE)
    nodes = decode_tree(raw, "tree")
    assert [n.name for n in nodes] == [b"a.txt", BAD_UTF8, b"disk.img", b"link", b"sub", b"z-future"]
    assert nodes[1].content == [] and nodes[2].is_image and nodes[4].is_dir and nodes[3].type == "l"
    assert nodes[5].extra == {"zz": {"from": "a newer writer"}, "subtree": None}  # unknown and null: kept
    assert encode_tree(list(reversed(nodes))) == raw  # sorted by raw name again
    assert [n.to_json() for n in nodes] == OLD_TREE["nodes"]


def test_a_tree_of_nodes_has_the_pinned_bytes():
    """The exact bytes (not only 'what json.dumps gives'): a change of key names, order or spacing fails."""
    nodes = [Node(b"sub", {"t": "d", "m": 493}, subtree=TREE), Node(b"f", {"t": "f", "sz": 2}, 2, [CHUNK])]
    assert encode_tree(nodes) == (
        b'{"nodes":[{"content":["' + CHUNK.encode() + b'"],"meta":{"sz":2,"t":"f"},"name":"f","size":2},'
        b'{"meta":{"m":493,"t":"d"},"name":"sub","subtree":"' + TREE.encode() + b'"}],"v":1}')


def test_backup_trees_are_the_old_encoding_and_keep_their_ids(tmp_path):
    """Every tree a backup stores is the old encoding of its document, so its id is the one the old code
    gave; a tree stored the old way and the same tree saved from Nodes are one blob."""
    src = tmp_path / "src"
    write(src / "plain.txt", b"hello")
    write(os.path.join(os.fsencode(src), BAD_UTF8), b"latin-1 name")
    write(src / "sub" / "deeper.bin", os.urandom(3000))
    os.symlink("plain.txt", src / "link")
    with api.init_vault(str(tmp_path / "v"), PASSPHRASE, kdf=FAST, cache_dir=str(tmp_path / "c")) as v:
        point = api.backup(v, [str(src)])
        todo, seen = [bytes.fromhex(point.tree)], 0
        while todo:
            tree_id = todo.pop()
            raw = v.read_blob(tree_id)
            assert old_encoding(json.loads(raw)) == raw and v.chunk_id(raw) == tree_id
            nodes = v.load_nodes(tree_id)
            assert v.save_tree(nodes) == tree_id  # re-saved from Nodes: the same blob, nothing new
            todo += [bytes.fromhex(n.subtree) for n in nodes if n.subtree]
            seen += 1
        assert seen == len(src.parts) + 1  # the root, each ancestor of src, src, sub
        before = len(v.known)
        old_id = v.save_blob(fmt.BLOB_TREE, old_encoding(OLD_TREE))
        assert v.save_tree(decode_tree(old_encoding(OLD_TREE), "t")) == old_id
        assert len(v.known) == before + 1


POINT_DOC = {"version": 1, "time": "2026-11-25T14:00:00.123456Z", "host": "web1", "username": "root",
             "paths": ["/srv"], "tags": ["t"], "mode": "incremental", "parent": "aa" * 32, "base_full": "bb" * 32,
             "tree": TREE, "excludes": ["*.tmp"], "program": "recovault 0.1.0",
             "stats": {"files_new": 1, "bytes_total": 5}, "errors": [{"path": "/srv/x", "error": "gone"}],
             "complete": False}


@pytest.mark.parametrize("doc", [
    POINT_DOC,
    dict(POINT_DOC, future={"k": [1, 2]}),  # a newer writer's key survives
    {k: v for k, v in POINT_DOC.items() if k not in ("username", "complete", "excludes")},  # gaps stay gaps
])
def test_recovery_point_round_trips_its_document(doc):
    point = RecoveryPoint.from_json(doc, "ee" * 32)
    assert point.to_json(with_id=False) == doc
    assert point.to_json() == dict(doc, id="ee" * 32) and RecoveryPoint.from_json(point.to_json()) == point


def test_a_point_document_without_its_tree_is_corrupt():
    with pytest.raises(CorruptData, match="lacks a required field"):
        RecoveryPoint.from_json({k: v for k, v in POINT_DOC.items() if k != "tree"}, "ee" * 32)


@pytest.mark.parametrize("key,value", [("paths", "/srv"), ("tree", None), ("time", 5), ("host", ["h"]),
                                       ("stats", []), ("errors", {})])
def test_a_point_document_with_a_field_of_the_wrong_type_is_corrupt(key, value):
    """One clear CorruptData when the point is loaded, not a TypeError wherever the field is used."""
    with pytest.raises(CorruptData, match=f"recovery point eeeeeeee: {key} is not"):
        RecoveryPoint.from_json(dict(POINT_DOC, **{key: value}), "ee" * 32)


def test_stored_and_printed_recovery_point_documents(tmp_path):
    """The stored document has exactly the §9 keys (what the old dict held); `snapshots --json` and
    `backup --json` print it with its id."""
    vault = api_vault(tmp_path / "vault")
    write(tmp_path / "src" / "f.txt", b"data")
    cli = Cli(tmp_path / "home")
    printed = json_out(cli("backup", "--vault", vault, "--json", "--tag", "b", "--tag", "a", tmp_path / "src"))
    listed = json_out(cli("snapshots", "--vault", vault, "--json"))
    assert listed == [printed]
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        sid = v.snapshots()[0].id
        stored = json.loads(v.unseal(fmt.AAD_SNAPSHOT, v.storage.get(fmt.SNAPSHOTS + sid), "point"))
    assert stored == {k: x for k, x in printed.items() if k != "id"} and printed["id"] == sid
    assert sorted(stored) == sorted(POINT_DOC) and stored["tags"] == ["a", "b"]
    assert stored["mode"] == "full" and stored["parent"] is None and stored["complete"] is True


def test_a_malformed_node_is_corrupt_data(tmp_path):
    with api.init_vault(str(tmp_path / "v"), PASSPHRASE, kdf=FAST, cache_dir=str(tmp_path / "c")) as v:
        no_meta = v.save_blob(fmt.BLOB_TREE, old_encoding({"v": 1, "nodes": [{"name": "no-meta"}]}))
        a_list = v.save_blob(fmt.BLOB_TREE, b"[1]")
        v.flush()
        with pytest.raises(CorruptData, match="malformed node"):
            v.load_nodes(no_meta)
        with pytest.raises(CorruptData, match="does not parse"):
            v.load_nodes(a_list)
