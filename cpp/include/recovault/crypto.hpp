// Cryptographic primitives on OpenSSL's libcrypto (EVP): AES-256-GCM, HKDF-SHA256, HMAC-SHA256, CSPRNG.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>

namespace recovault::crypto {

constexpr size_t KEY_LEN = 32;
constexpr size_t NONCE_LEN = 12;
constexpr size_t TAG_LEN = 16;

struct AuthenticationError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// out must hold len + TAG_LEN bytes: ciphertext followed by the 16-byte tag.
void aes256gcm_encrypt(const uint8_t key[KEY_LEN], const uint8_t nonce[NONCE_LEN], const uint8_t* pt,
                       size_t len, const uint8_t* aad, size_t aad_len, uint8_t* out);
// in = ciphertext || tag (in_len >= TAG_LEN); out must hold in_len - TAG_LEN bytes.
// Throws AuthenticationError if the tag does not verify (out is then zeroed).
void aes256gcm_decrypt(const uint8_t key[KEY_LEN], const uint8_t nonce[NONCE_LEN], const uint8_t* in,
                       size_t in_len, const uint8_t* aad, size_t aad_len, uint8_t* out);

void hkdf_sha256(const uint8_t* ikm, size_t ikm_len, const uint8_t* salt, size_t salt_len,
                 const uint8_t* info, size_t info_len, uint8_t* out, size_t out_len);
void hmac_sha256(const uint8_t* key, size_t key_len, const uint8_t* data, size_t len, uint8_t out[32]);
void random_bytes(uint8_t* out, size_t len);

}  // namespace recovault::crypto
