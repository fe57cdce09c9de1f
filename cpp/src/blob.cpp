#include "recovault/blob.hpp"

#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include <openssl/crypto.h>

#include "recovault/compress.hpp"
#include "recovault/crypto.hpp"

namespace recovault {
namespace {

constexpr char SUBKEY_INFO[] = "recovault/v1/blob";
constexpr size_t AAD_MAX_ID = 64;

void derive_subkey(const uint8_t master[32], const uint8_t salt[16], uint8_t out[32]) {
  crypto::hkdf_sha256(master, 32, salt, 16, reinterpret_cast<const uint8_t*>(SUBKEY_INFO),
                      sizeof(SUBKEY_INFO) - 1, out, 32);
}

size_t make_aad(const uint8_t* id, size_t id_len, const uint8_t* header, uint8_t* aad) {
  if (id_len > AAD_MAX_ID) throw std::invalid_argument("blob id longer than 64 bytes");
  std::memcpy(aad, id, id_len);
  std::memcpy(aad + id_len, header, BLOB_HEADER_LEN);
  return id_len + BLOB_HEADER_LEN;
}

}  // namespace

SealSession::SealSession(const uint8_t master_key[32], const uint8_t* salt) {
  if (salt)
    std::memcpy(salt_.data(), salt, 16);
  else
    crypto::random_bytes(salt_.data(), 16);
  derive_subkey(master_key, salt_.data(), subkey_.data());
}

SealSession::~SealSession() {
  volatile uint8_t* p = subkey_.data();
  for (size_t i = 0; i < subkey_.size(); ++i) p[i] = 0;
}

void SealSession::seal(const uint8_t* id, size_t id_len, const uint8_t* data, size_t len, int level,
                       compress::Mode mode, uint64_t counter, std::vector<uint8_t>& out) const {
  // Payload: zstd frame or the data itself. The compressed frame is built in a per-thread scratch buffer.
  // Not a std::vector: resizing one zero-fills it, a memset of every block for nothing.
  thread_local std::unique_ptr<uint8_t[]> scratch;
  thread_local size_t scratch_cap = 0;
  const uint8_t* payload = data;
  size_t payload_len = len;
  uint8_t codec = CODEC_STORED;
  if (mode == compress::Mode::Always || (mode == compress::Mode::Auto && !compress::looks_incompressible(data, len))) {
    size_t bound = compress::zstd_bound(len);
    if (scratch_cap < bound) {
      scratch.reset(new uint8_t[bound]);
      scratch_cap = bound;
    }
    size_t n = compress::zstd_compress_into(data, len, level, scratch.get(), bound);
    if (mode == compress::Mode::Always || n < len) {
      payload = scratch.get();
      payload_len = n;
      codec = CODEC_ZSTD;
    }
  }
  out.resize(BLOB_HEADER_LEN + payload_len + crypto::TAG_LEN);
  uint8_t* h = out.data();
  h[0] = BLOB_VERSION;
  h[1] = codec;
  std::memcpy(h + 2, salt_.data(), 16);
  uint8_t* nonce = h + 18;
  std::memset(nonce, 0, 4);
  for (int i = 0; i < 8; ++i) nonce[4 + i] = uint8_t(counter >> (56 - 8 * i));
  uint8_t aad[AAD_MAX_ID + BLOB_HEADER_LEN];
  size_t aad_len = make_aad(id, id_len, h, aad);
  crypto::aes256gcm_encrypt(subkey_.data(), nonce, payload, payload_len, aad, aad_len, h + BLOB_HEADER_LEN);
}

std::vector<uint8_t> open_blob(const uint8_t master_key[32], const uint8_t* id, size_t id_len,
                               const uint8_t* blob, size_t len, size_t max_size) {
  std::vector<uint8_t> out;
  open_blob_into(master_key, id, id_len, blob, len, max_size, [&](size_t n) {
    out.resize(n);
    return out.data();
  });
  return out;
}

void open_blob_into(const uint8_t master_key[32], const uint8_t* id, size_t id_len, const uint8_t* blob,
                    size_t len, size_t max_size, const std::function<uint8_t*(size_t)>& alloc) {
  if (len < BLOB_OVERHEAD) throw crypto::AuthenticationError("blob too short: truncated or corrupt");
  // No header byte is believed before the tag has verified (they are all in the AAD): a flipped version or
  // codec byte is corruption like any other flipped byte. Only an authentic blob can say that its version
  // or codec is one this reader does not know (a newer writer's), which is then a different error.
  const uint8_t version = blob[0], codec = blob[1];
  // Subkeys per (master key, salt), cached per thread: a restore opens thousands of blobs from the same
  // few sessions, and HKDF costs more than opening a small blob.
  // Key material is wiped when the thread ends, and the subkey copy on the stack when this call returns.
  struct CacheEntry {
    uint8_t master[32];
    uint8_t salt[16];
    uint8_t subkey[32];
    bool used;
  };
  struct SubkeyCache {
    CacheEntry entries[8] = {};
    unsigned next_slot = 0;
    ~SubkeyCache() { OPENSSL_cleanse(entries, sizeof(entries)); }
  };
  struct Wipe {
    uint8_t* p;
    size_t n;
    ~Wipe() { OPENSSL_cleanse(p, n); }
  };
  thread_local SubkeyCache cache;
  uint8_t subkey[32];
  Wipe wipe_subkey{subkey, sizeof(subkey)};
  bool hit = false;
  for (CacheEntry& e : cache.entries) {
    if (e.used && std::memcmp(e.salt, blob + 2, 16) == 0 && std::memcmp(e.master, master_key, 32) == 0) {
      std::memcpy(subkey, e.subkey, 32);
      hit = true;
      break;
    }
  }
  if (!hit) {
    derive_subkey(master_key, blob + 2, subkey);
    CacheEntry& e = cache.entries[cache.next_slot++ % 8];
    std::memcpy(e.master, master_key, 32);
    std::memcpy(e.salt, blob + 2, 16);
    std::memcpy(e.subkey, subkey, 32);
    e.used = true;
  }
  uint8_t aad[AAD_MAX_ID + BLOB_HEADER_LEN];
  size_t aad_len = make_aad(id, id_len, blob, aad);
  size_t ct_len = len - BLOB_HEADER_LEN;
  size_t pt_len = ct_len - crypto::TAG_LEN;
  if (version == BLOB_VERSION && codec == CODEC_STORED) {  // decrypt straight into the caller's buffer
    if (pt_len > max_size) throw compress::DecompressError("blob larger than the limit");
    crypto::aes256gcm_decrypt(subkey, blob + 18, blob + BLOB_HEADER_LEN, ct_len, aad, aad_len, alloc(pt_len));
    return;
  }
  // Otherwise decrypt into a reused per-thread buffer (no zero-fill), then decompress into the caller's
  // buffer. The frame header is only trusted after authentication.
  thread_local std::unique_ptr<uint8_t[]> frame;
  thread_local size_t frame_cap = 0;
  constexpr size_t KEEP = size_t(16) << 20;  // don't keep more than this per thread after a huge blob
  if (frame_cap < pt_len || (frame_cap > KEEP && pt_len <= KEEP)) {
    frame.reset(new uint8_t[pt_len ? pt_len : 1]);
    frame_cap = pt_len;
  }
  try {
    crypto::aes256gcm_decrypt(subkey, blob + 18, blob + BLOB_HEADER_LEN, ct_len, aad, aad_len, frame.get());
  } catch (const crypto::AuthenticationError&) {
    if (version == BLOB_VERSION) throw;
    throw crypto::AuthenticationError("blob says format version " + std::to_string(version) +
                                      " and does not authenticate: corrupt or tampered with");
  }
  if (version != BLOB_VERSION)
    throw std::invalid_argument("blob format version " + std::to_string(version) +
                                " is not supported by this recovault (it reads version 1)");
  if (codec != CODEC_ZSTD)
    throw std::invalid_argument("blob codec " + std::to_string(codec) + " is not supported by this recovault");
  size_t n = compress::zstd_frame_size(frame.get(), pt_len, max_size);
  compress::zstd_decompress_into(frame.get(), pt_len, alloc(n), n);
}

}  // namespace recovault
