"""Paths as recovery points see them: absolute, "/"-separated, components as raw bytes."""
from __future__ import annotations

import os
from typing import Tuple, Union


def split_path(path: Union[str, bytes]) -> Tuple[bytes, ...]:
    """The non-empty components of ``path`` as bytes (``os.fsencode``): "/a//b/" gives (b"a", b"b"),
    "/" gives ()."""
    return tuple(filter(None, os.fsencode(path).split(b"/")))  # per walked entry: filter is 1.6x a genexpr
