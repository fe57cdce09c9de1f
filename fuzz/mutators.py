"""A structure-aware mutator for the harnesses whose input is a JSON document (after a mode byte or none).

Byte-level mutation of JSON mostly makes documents that do not parse, which every reader refuses at once;
the bugs are in what a reader does with a document that parses but holds a field of the wrong type, range
or shape. Half the time this mutator parses the input, replaces one value anywhere in it (or drops a key,
or nests it deeply) with one of a few hostile values, and writes it back; otherwise (or when the input does
not parse) it leaves the mutation to libFuzzer (atheris.Mutate).
"""
from __future__ import annotations

import json
import random
from typing import Any, Callable, List, Tuple

import atheris

_HOSTILE: List[Any] = [
    None, True, False, 0, -1, 1, 2 ** 31, 2 ** 63, 2 ** 64 + 1, -(2 ** 63), 1.5, float("inf"), float("nan"),
    "", "x", "0" * 64, "f" * 63, "Z" * 64, "ab" * 16, "../../etc/passwd", "\ud800", "\x00",
    "2026-11-25T14:00:00.000000Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-11-25",
    [], {}, [1, 2], ["0" * 64], [None], {"b64": "@@@"}, {"b64": "aGVsbG8="}, {"a": {"b": {"c": []}}},
]
Path = Tuple[Any, ...]


def _paths(doc: Any, here: Path = ()) -> List[Path]:
    out = [here]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, here + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:16]):
            out += _paths(v, here + (i,))
    return out


def _replace(doc: Any, path: Path, value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


def _mutate(doc: Any, rnd: random.Random) -> Any:
    path = rnd.choice(_paths(doc))
    roll = rnd.random()
    if roll < 0.15 and path:  # drop the key (or list item)
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        del parent[path[-1]]
        return doc
    if roll < 0.3:  # the value in a list, or one of a list of it (shape changes)
        value: Any = doc
        for step in path:
            value = value[step]
        return _replace(doc, path, rnd.choice([[value], {"v": value}, [value] * 3]))
    return _replace(doc, path, rnd.choice(_HOSTILE))


def json_mutator(json_at: int) -> Callable[[bytes, int, int], bytes]:
    """The custom mutator for a harness whose input holds a JSON document from byte `json_at` on."""
    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        rnd = random.Random(seed)
        if rnd.random() < 0.5:
            head, body = data[:json_at], data[json_at:]
            try:
                doc = json.loads(body)
            except (ValueError, RecursionError):
                doc = None
            if doc is not None or body.strip() == b"null":
                if rnd.random() < 0.02:  # nested beyond the parser's recursion limit
                    out = head + b"[" * 1100 + body + b"]" * 1100
                else:
                    out = head + json.dumps(_mutate(doc, rnd)).encode()
                if len(out) <= max_size:
                    return out
        return atheris.Mutate(data, max_size)
    return mutate
