"""A path of a recovery point as a byte stream: a file's (or an image's) content, or a directory as a tar
archive (POSIX pax format, via tarfile), for `recovault dump`. Writes only to the stream it is given.

Entries in the archive are named by their path in the recovery point without the leading "/" (as a restore
lays them out under its target), with mode, owner (numbers and recorded names), mtime, symlink targets and
device numbers; sockets are left out (tar cannot hold them), and hard links are stored as separate files.
Every file's data is checked: a chunk missing or of the wrong length fails with CorruptData/ObjectMissing
before the archive claims more bytes than it got.
"""
from __future__ import annotations

import io
import os
import tarfile
from typing import TYPE_CHECKING, BinaryIO, Iterator, List, Optional

from .entries import walk
from .errors import CorruptData, UsageError
from .fsmeta import decode_name

if TYPE_CHECKING:
    from .vault.records import Node
    from .vault.repo import Vault

_TAR_TYPES = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "c": tarfile.CHRTYPE,
              "b": tarfile.BLKTYPE, "p": tarfile.FIFOTYPE}


def pieces(vault: "Vault", node: "Node") -> Iterator[bytes]:
    """The content of a file or image node, piece by piece (a chunk, or an image block; zeros for holes)."""
    if node.image is not None:
        from .jobs.image import ImageMap
        img = ImageMap(vault, node.image)
        for block in range(img.nblocks):
            data = img.read_block(block)
            yield data if data is not None else bytes(img.block_len(block))
        return
    total = 0
    for cid in node.content or ():
        data = vault.read_blob(bytes.fromhex(cid))
        total += len(data)
        yield data
    if total != (node.size or 0):
        raise CorruptData(f"{os.fsdecode(node.name)}: its chunks hold {total} bytes, the tree records {node.size}")


def write_file(vault: "Vault", node: "Node", out: BinaryIO) -> int:
    """Write a file's content to `out`; returns the bytes written."""
    n = 0
    for data in pieces(vault, node):
        out.write(data)
        n += len(data)
    return n


class _Content(io.RawIOBase):
    """A file node's content as a readable stream (what tarfile.addfile copies from)."""

    def __init__(self, it: Iterator[bytes]) -> None:
        self._it = it
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def tar_info(path: bytes, node: "Node") -> Optional[tarfile.TarInfo]:
    """The archive header of an entry (None for a socket: tar has no type for it)."""
    m = node.meta
    kind = "f" if node.image is not None else node.type
    if kind not in _TAR_TYPES:
        return None
    info = tarfile.TarInfo(os.fsdecode(path.lstrip(b"/")) or ".")
    info.type = _TAR_TYPES[kind]
    info.mode, info.uid, info.gid = m.get("m", 0), m.get("u", 0), m.get("g", 0)
    info.uname, info.gname = m.get("un") or "", m.get("gn") or ""
    info.mtime = m.get("mt", 0) / 1e9
    if kind == "f":
        info.size = node.image["size"] if node.image is not None else node.size or 0
    if "lt" in m:
        info.linkname = os.fsdecode(decode_name(m["lt"]))
    if "rd" in m:
        info.devmajor, info.devminor = m["rd"]
    return info


def write_tar(vault: "Vault", path: bytes, node: "Node", out: BinaryIO) -> List[str]:
    """Write the directory `node` (at `path`) and everything beneath it to `out` as a tar stream. Returns the
    paths left out (sockets)."""
    if node.subtree is None:
        raise UsageError(f"{os.fsdecode(path)} is not a directory")
    skipped: List[str] = []
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        if path:
            tar.addfile(tar_info(path, node))  # type: ignore[arg-type]
        for p, n in walk(vault, node.subtree, path):
            info = tar_info(p, n)
            if info is None:
                skipped.append(os.fsdecode(p))
            elif info.type == tarfile.REGTYPE:
                tar.addfile(info, io.BufferedReader(_Content(pieces(vault, n)), 1 << 20))
            else:
                tar.addfile(info)
    return skipped
