// BLAKE3, written from the specification (https://github.com/BLAKE3-team/BLAKE3-specs).
// Portable code plus SSE4.1-free x86 SIMD paths (AVX2: 8 chunks at once, AVX-512: 16 chunks at once),
// chosen at run time by CPU detection. Pure C++, no Python.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace recovault::blake3 {

constexpr size_t OUT_LEN = 32;
constexpr size_t KEY_LEN = 32;
constexpr size_t BLOCK_LEN = 64;
constexpr size_t CHUNK_LEN = 1024;
constexpr size_t MAX_DEPTH = 54;

// Incremental hasher. update() may be called any number of times with any split of the input;
// the result equals hashing the concatenation at once.
class Hasher {
 public:
  Hasher();                                  // plain hash mode
  explicit Hasher(const uint8_t key[KEY_LEN]);  // keyed hash mode
  static Hasher derive_key(std::string_view context);  // derive_key mode (KDF), feed key material via update()

  void update(const uint8_t* data, size_t len);
  // Extendable output: out_len bytes starting at output position `seek`. Does not change the state.
  void finalize(uint8_t* out, size_t out_len, uint64_t seek = 0) const;
  void reset();

 private:
  uint32_t key_[8];         // key words: IV, the key, or the derived context key
  uint32_t flags_;          // mode flag: 0, KEYED_HASH, DERIVE_KEY_CONTEXT or DERIVE_KEY_MATERIAL
  uint64_t chunk_counter_;  // index of the current chunk
  uint8_t buf_[CHUNK_LEN];  // the current chunk, raw (hashed once known not to be the last)
  uint16_t buf_len_;
  // chaining-value stack: CVs of complete subtrees left of the current chunk, largest first
  uint8_t cv_stack_len_;
  uint8_t cv_stack_[(MAX_DEPTH + 1) * OUT_LEN];
  void init(const uint32_t key[8], uint32_t flags);
  void merge_cv_stack(uint64_t total_chunks);
  void push_cv(const uint8_t cv[OUT_LEN], uint64_t chunk_counter);
};

// One-shot helpers (fast path: whole input at once, SIMD over many chunks).
void hash(const uint8_t* data, size_t len, uint8_t out[OUT_LEN]);
void keyed_hash(const uint8_t key[KEY_LEN], const uint8_t* data, size_t len, uint8_t out[OUT_LEN]);

// SIMD level in use: "avx512", "avx2" or "portable".
const char* simd_name();
// Restrict the SIMD level (for tests and benchmarks): "portable", "avx2", "avx512" or "auto".
// A level the CPU lacks falls back to the best one it has. Returns the level now in use.
const char* set_simd(std::string_view level);

}  // namespace recovault::blake3
