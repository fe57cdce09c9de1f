#include "recovault/crypto.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include <cstring>
#include <limits>
#include <memory>
#include <string>

namespace recovault::crypto {
namespace {

[[noreturn]] void fail(const char* what) {
  unsigned long e = ERR_get_error();
  char buf[256] = {0};
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  throw std::runtime_error(std::string("OpenSSL ") + what + " failed" + (e ? std::string(": ") + buf : ""));
}

struct CtxDeleter {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CtxDeleter>;

// One cipher context per thread, reused: EVP_CIPHER_CTX_new + init costs more than a small blob.
EVP_CIPHER_CTX* thread_ctx() {
  thread_local CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx) fail("EVP_CIPHER_CTX_new");
  return ctx.get();
}

int to_int(size_t n) {
  if (n > static_cast<size_t>(std::numeric_limits<int>::max())) throw std::length_error("buffer larger than 2 GiB");
  return static_cast<int>(n);
}

// EVP_*Update takes int lengths: feed in slices of at most 1 GiB.
template <class F>
void update_in_slices(const uint8_t* in, size_t len, uint8_t* out, F&& update) {
  constexpr size_t SLICE = size_t(1) << 30;
  while (len > 0) {
    size_t n = len < SLICE ? len : SLICE;
    update(out, in, static_cast<int>(n));
    in += n;
    out += n;
    len -= n;
  }
}

}  // namespace

void aes256gcm_encrypt(const uint8_t key[KEY_LEN], const uint8_t nonce[NONCE_LEN], const uint8_t* pt,
                       size_t len, const uint8_t* aad, size_t aad_len, uint8_t* out) {
  EVP_CIPHER_CTX* c = thread_ctx();
  int n = 0;
  if (EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), nullptr, key, nonce) != 1) fail("AES-GCM init");
  if (aad_len && EVP_EncryptUpdate(c, nullptr, &n, aad, to_int(aad_len)) != 1) fail("AES-GCM aad");
  update_in_slices(pt, len, out, [&](uint8_t* o, const uint8_t* i, int k) {
    if (EVP_EncryptUpdate(c, o, &n, i, k) != 1) fail("AES-GCM encrypt");
  });
  if (EVP_EncryptFinal_ex(c, out + len, &n) != 1) fail("AES-GCM final");
  if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, out + len) != 1) fail("AES-GCM tag");
}

void aes256gcm_decrypt(const uint8_t key[KEY_LEN], const uint8_t nonce[NONCE_LEN], const uint8_t* in,
                       size_t in_len, const uint8_t* aad, size_t aad_len, uint8_t* out) {
  if (in_len < TAG_LEN) throw AuthenticationError("ciphertext shorter than the 16-byte tag");
  size_t len = in_len - TAG_LEN;
  EVP_CIPHER_CTX* c = thread_ctx();
  int n = 0;
  if (EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), nullptr, key, nonce) != 1) fail("AES-GCM init");
  if (aad_len && EVP_DecryptUpdate(c, nullptr, &n, aad, to_int(aad_len)) != 1) fail("AES-GCM aad");
  update_in_slices(in, len, out, [&](uint8_t* o, const uint8_t* i, int k) {
    if (EVP_DecryptUpdate(c, o, &n, i, k) != 1) fail("AES-GCM decrypt");
  });
  uint8_t tag[TAG_LEN];
  std::memcpy(tag, in + len, TAG_LEN);
  if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) != 1) fail("AES-GCM set tag");
  uint8_t scratch[16];
  if (EVP_DecryptFinal_ex(c, scratch, &n) != 1) {
    ERR_clear_error();
    if (len) std::memset(out, 0, len);
    throw AuthenticationError("authentication failed: the data is corrupt, tampered with, or the key is wrong");
  }
}

void hkdf_sha256(const uint8_t* ikm, size_t ikm_len, const uint8_t* salt, size_t salt_len,
                 const uint8_t* info, size_t info_len, uint8_t* out, size_t out_len) {
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> p(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr),
                                                                EVP_PKEY_CTX_free);
  static const uint8_t zero = 0;
  if (!p || EVP_PKEY_derive_init(p.get()) != 1 || EVP_PKEY_CTX_set_hkdf_md(p.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_key(p.get(), ikm, to_int(ikm_len)) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_salt(p.get(), salt_len ? salt : &zero, to_int(salt_len)) != 1 ||
      (info_len && EVP_PKEY_CTX_add1_hkdf_info(p.get(), info, to_int(info_len)) != 1))
    fail("HKDF setup");
  size_t n = out_len;
  if (EVP_PKEY_derive(p.get(), out, &n) != 1 || n != out_len) fail("HKDF derive");
}

void hmac_sha256(const uint8_t* key, size_t key_len, const uint8_t* data, size_t len, uint8_t out[32]) {
  unsigned int n = 32;
  if (!HMAC(EVP_sha256(), key, to_int(key_len), data, len, out, &n) || n != 32) fail("HMAC-SHA256");
}

void random_bytes(uint8_t* out, size_t len) {
  if (RAND_bytes(out, to_int(len)) != 1) fail("RAND_bytes");
}

}  // namespace recovault::crypto
