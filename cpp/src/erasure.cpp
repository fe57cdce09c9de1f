// Reed-Solomon erasure coding on ISA-L (erasure_code.h): the matrix from gf_gen_cauchy1_matrix, the
// multiplication tables from ec_init_tables, the SIMD kernel ec_encode_data (which picks SSE/AVX2/AVX-512 at
// run time), and gf_invert_matrix for decoding.
#include "recovault/erasure.hpp"

#include <isa-l/erasure_code.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace recovault::erasure {

NotEnoughShards::NotEnoughShards(int present_, int needed_)
    : std::runtime_error(std::to_string(present_) + " shard" + (present_ == 1 ? "" : "s") + " present, " +
                         std::to_string(needed_) + " needed"),
      present(present_),
      needed(needed_) {}

ErasureCode::ErasureCode(int k, int m) : k_(k), m_(m) {
  if (k < 1) throw std::invalid_argument("k (data shards) must be at least 1, got " + std::to_string(k));
  if (m < 0) throw std::invalid_argument("m (parity shards) must be at least 0, got " + std::to_string(m));
  if (k + m > MAX_SHARDS)
    throw std::invalid_argument("k + m must be at most " + std::to_string(MAX_SHARDS) + ", got " +
                                std::to_string(k + m));
  matrix_.resize(size_t(n()) * size_t(k));
  gf_gen_cauchy1_matrix(matrix_.data(), n(), k);
  parity_tables_.resize(32 * size_t(k) * size_t(m) + 1);  // +1: never a zero-sized buffer
  if (m > 0) ec_init_tables(k, m, matrix_.data() + size_t(k) * size_t(k), parity_tables_.data());
}

void ErasureCode::encode(const uint8_t* const* data, uint8_t* const* parity, size_t len) const {
  if (m_ == 0 || len == 0) return;
  // ec_encode_data takes an int length: code columns in pieces of at most 1 GiB.
  constexpr size_t PIECE = size_t(1) << 30;
  std::vector<uint8_t*> src(k_), dst(m_);
  for (size_t off = 0; off < len; off += PIECE) {
    size_t piece = std::min(PIECE, len - off);
    for (int i = 0; i < k_; ++i) src[i] = const_cast<uint8_t*>(data[i]) + off;
    for (int i = 0; i < m_; ++i) dst[i] = parity[i] + off;
    ec_encode_data(int(piece), k_, m_, const_cast<uint8_t*>(parity_tables_.data()), src.data(), dst.data());
  }
}

void ErasureCode::reconstruct(const uint8_t* const* shards, size_t len, const std::vector<int>& wanted,
                              uint8_t* const* out) const {
  const size_t k = size_t(k_);
  for (int w : wanted)
    if (w < 0 || w >= n())
      throw std::invalid_argument("shard index " + std::to_string(w) + " out of range 0.." + std::to_string(n() - 1));
  std::vector<int> used;  // the first k present shards: data shards first, so a present data shard is kept
  int present = 0;
  for (int i = 0; i < n(); ++i) {
    if (!shards[i]) continue;
    ++present;
    if (used.size() < k) used.push_back(i);
  }
  if (used.size() < k) throw NotEnoughShards(present, k_);

  // decode = inverse of the k rows of the generator matrix the used shards were made with: data = decode x used.
  std::vector<uint8_t> rows(k * k), decode(k * k);
  for (size_t r = 0; r < k; ++r) std::memcpy(&rows[r * k], &matrix_[size_t(used[r]) * k], k);
  if (gf_invert_matrix(rows.data(), decode.data(), k_) != 0)
    throw std::logic_error("erasure: singular decode matrix (cannot happen with a Cauchy matrix)");

  // One coefficient row per wanted shard that is not simply copied: a data shard's row of decode, a parity
  // shard's generator row times decode.
  std::vector<uint8_t> coeffs;
  std::vector<uint8_t*> dst;
  for (size_t j = 0; j < wanted.size(); ++j) {
    int w = wanted[j];
    if (shards[w]) {
      if (len) std::memcpy(out[j], shards[w], len);
      continue;
    }
    size_t at = coeffs.size();
    coeffs.resize(at + k, 0);
    if (w < k_) {
      std::memcpy(&coeffs[at], &decode[size_t(w) * k], k);
    } else {
      const uint8_t* g = &matrix_[size_t(w) * k];
      for (size_t c = 0; c < k; ++c) {
        uint8_t s = 0;
        for (size_t i = 0; i < k; ++i) s ^= gf_mul(g[i], decode[i * k + c]);
        coeffs[at + c] = s;
      }
    }
    dst.push_back(out[j]);
  }
  if (dst.empty() || len == 0) return;
  int rows_out = int(dst.size());
  std::vector<uint8_t> tables(32 * k * dst.size());
  ec_init_tables(k_, rows_out, coeffs.data(), tables.data());
  std::vector<uint8_t*> src(k);
  constexpr size_t PIECE = size_t(1) << 30;
  std::vector<uint8_t*> dpiece(dst.size());
  for (size_t off = 0; off < len; off += PIECE) {
    size_t piece = std::min(PIECE, len - off);
    for (size_t i = 0; i < k; ++i) src[i] = const_cast<uint8_t*>(shards[used[i]]) + off;
    for (size_t i = 0; i < dst.size(); ++i) dpiece[i] = dst[i] + off;
    ec_encode_data(int(piece), k_, rows_out, tables.data(), src.data(), dpiece.data());
  }
}

}  // namespace recovault::erasure
