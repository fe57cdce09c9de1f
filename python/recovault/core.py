"""The public Python face of recovault's C++ data path (the ``recovault._core`` extension).

Every function takes any buffer-protocol object (bytes, bytearray, memoryview, numpy arrays) without
copying it and releases the GIL while it works. See ``core.pyi`` for the signatures.
"""
from recovault._core import (  # noqa: F401
    AuthenticationError,
    BLOB_OVERHEAD,
    Blake3,
    Chunker,
    DecompressError,
    END_CHANGED,
    IdSet,
    LocationIndex,
    Pipeline,
    PipelineRun,
    RestoreError,
    SealSession,
    ZSTD_MAX_LEVEL,
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

# Pipeline event kinds: each event is (kind, source_index, offset, length, id, payload).
CHUNK = 0  # payload: the sealed blob if the chunk is new, else None
ZERO = 1  # an all-zero block (fixed-block mode): no id, nothing stored
END = 2  # end of a source: length = bytes read, payload = error text or None, offset = flags:
# END_CHANGED (imported above): a file that changed while it was read (size, mtime or ctime moved, or the bytes
# read differ from its size); its chunks hold what was read
