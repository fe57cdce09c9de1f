"""The public Python face of recovault's C++ data path (the ``recovault._core`` extension).

Every function takes any buffer-protocol object (bytes, bytearray, memoryview, numpy arrays) without
copying it and releases the GIL while it works. See ``core.pyi`` for the signatures.

What crosses the binding as a row of fields is a NamedTuple defined here: pipeline events
(``PipelineEvent``, made by the C++ side as instances of this class, at the cost of a plain tuple) and the
items of ``restore_blobs`` (``RestoreItem``: any 8-tuple is accepted, this names its fields).
"""
from typing import NamedTuple, Optional, Union

from recovault._core import (  # noqa: F401
    AuthenticationError,
    BLOB_OVERHEAD,
    Blake3,
    Chunker,
    DecompressError,
    END_CHANGED,
    ERASURE_MAX_SHARDS,
    ErasureCode,
    IdSet,
    LocationIndex,
    NotEnoughShards,
    Pipeline,
    PipelineRun,
    RestoreError,
    SealSession,
    ZSTD_MAX_LEVEL,
    _set_event_type,
    aes_gcm_decrypt,
    aes_gcm_encrypt,
    blake3,
    blake3_derive_key,
    blake3_set_simd,
    blake3_simd,
    chunk_lengths,
    hkdf_sha256,
    hmac_sha256,
    is_all_zero,
    looks_incompressible,
    open_blob,
    random_bytes,
    restore_blobs,
    zstd_compress,
    zstd_decompress,
)

# Pipeline event kinds (PipelineEvent.kind).
CHUNK = 0  # payload: the sealed blob if the chunk is new, else None
ZERO = 1  # an all-zero block (fixed-block mode): no id, nothing stored
END = 2  # end of a source: length = bytes read, payload = error text or None, offset = flags:
# END_CHANGED (imported above): a file that changed while it was read (size, mtime or ctime moved, or the bytes
# read differ from its size); its chunks hold what was read


class PipelineEvent(NamedTuple):
    """One event of a ``PipelineRun`` batch, in source order (see CHUNK, ZERO, END above)."""

    kind: int
    source: int  # index of the source in the run
    offset: int  # CHUNK/ZERO: where the chunk starts in the source; END: flags (END_CHANGED)
    length: int  # CHUNK/ZERO: the chunk's length; END: bytes read
    id: Optional[bytes]  # CHUNK: the chunk ID
    payload: Union[bytes, str, None]  # CHUNK: the sealed blob if new; END: the error text, if any


_set_event_type(PipelineEvent)


class RestoreItem(NamedTuple):
    """One item of ``restore_blobs``: write bytes [skip, skip + length) of a blob's plaintext at ``dest``, or
    ``length`` zeros when ``pack`` is -1 (or None)."""

    pack: Optional[int]  # index into the call's pack paths, or -1/None for zeros
    pack_offset: int  # where the sealed blob starts in the pack
    sealed_length: int
    id: bytes  # the blob's ID (32 zero bytes for zeros)
    dest: int  # destination offset
    raw_length: int  # the blob's plaintext length
    skip: int  # plaintext bytes to skip
    length: int  # bytes to write
