// Sealed blobs: the unit of encrypted storage (a chunk, a tree, an index, a pack header).
//
// Layout (see docs/vault-format.md):
//   [0]      version = 1
//   [1]      codec   (0 = stored, 1 = zstd)
//   [2..17]  session salt (16 bytes, random per SealSession)
//   [18..29] nonce (12 bytes: 4 zero bytes + 64-bit big-endian counter, unique within the session)
//   [30..]   AES-256-GCM(subkey, nonce, payload, aad = id || blob[0..29]) || 16-byte tag
// subkey = HKDF-SHA256(ikm = master key, salt = session salt, info = "recovault/v1/blob").
// The id (a chunk ID or an object name hash) is bound through the AAD, so a blob can't be moved to
// another id; nonce reuse is impossible by construction: a fresh random subkey per session, counter nonces.
#pragma once
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "recovault/compress.hpp"

namespace recovault {

constexpr size_t BLOB_HEADER_LEN = 30;
constexpr size_t BLOB_OVERHEAD = BLOB_HEADER_LEN + 16;
constexpr uint8_t BLOB_VERSION = 1;
constexpr uint8_t CODEC_STORED = 0;
constexpr uint8_t CODEC_ZSTD = 1;

class SealSession {
 public:
  // salt: nullptr = random (normal use); a fixed salt only for reproducible tests.
  SealSession(const uint8_t master_key[32], const uint8_t* salt = nullptr);
  ~SealSession();
  // Reserve n consecutive nonce counters; returns the first.
  uint64_t reserve(uint64_t n) { return counter_.fetch_add(n); }
  // Seal with an explicit counter (from reserve()), compressing with zstd at `level` as `mode` says.
  void seal(const uint8_t* id, size_t id_len, const uint8_t* data, size_t len, int level, compress::Mode mode,
            uint64_t counter, std::vector<uint8_t>& out) const;
  const uint8_t* salt() const { return salt_.data(); }

 private:
  std::array<uint8_t, 16> salt_;
  std::array<uint8_t, 32> subkey_;
  std::atomic<uint64_t> counter_{0};
};

// Open a sealed blob: verify, decrypt, decompress. max_size bounds the plaintext.
// Throws crypto::AuthenticationError (the tag does not verify: any flipped byte, the header's included),
// compress::DecompressError, std::invalid_argument (an authentic blob of a version or codec not read here).
std::vector<uint8_t> open_blob(const uint8_t master_key[32], const uint8_t* id, size_t id_len,
                               const uint8_t* blob, size_t len, size_t max_size);
// The same, writing the plaintext into memory the caller provides: alloc(n) is called once, after the tag
// verified, with the plaintext size, and returns where to put it (no zero-fill, no extra copy).
void open_blob_into(const uint8_t master_key[32], const uint8_t* id, size_t id_len, const uint8_t* blob,
                    size_t len, size_t max_size, const std::function<uint8_t*(size_t)>& alloc);

}  // namespace recovault
