// Reed-Solomon erasure coding on ISA-L: k data shards + m parity shards, any k of the k+m rebuild the rest.
//
// The code is systematic: the generator matrix is [I_k ; C] with C the m x k Cauchy matrix
// C[r][c] = 1 / ((k + r) XOR c) in GF(2^8) modulo x^8+x^4+x^3+x^2+1 (0x11d), ISA-L's gf_gen_cauchy1_matrix.
// Every k x k submatrix of it is invertible, so any k shards decode, for every k+m <= 255.
// The matrix is part of the on-disk format (docs/vault-format.md §12): shards written by one version must
// decode in the next, so it never changes without a new format version.
//
// Bytes at one offset of the k+m shards form one codeword ("column"), independent of every other offset, so
// a slice [a, b) of any k shards rebuilds the slice [a, b) of the others (ranged reads).
//
// Corruption is not detected here: a shard given is believed. The storage layer checksums each shard and
// passes a corrupt one as missing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace recovault::erasure {

// Fewer than k shards present: nothing can be rebuilt.
struct NotEnoughShards : std::runtime_error {
  NotEnoughShards(int present, int needed);
  int present, needed;
};

constexpr int MAX_SHARDS = 255;  // k + m

class ErasureCode {
 public:
  // k >= 1, m >= 0, k + m <= MAX_SHARDS; else std::invalid_argument.
  ErasureCode(int k, int m);
  int k() const { return k_; }
  int m() const { return m_; }
  int n() const { return k_ + m_; }

  // The size of each shard of an object of `length` bytes: ceil(length / k). Data shard i holds the object's
  // bytes [i*S, (i+1)*S); the last data shards are zero-padded past the end.
  size_t shard_size(size_t length) const { return (length + size_t(k_) - 1) / size_t(k_); }

  // Computes the m parity shards (each `len` bytes) of k data shards (each `len` bytes).
  void encode(const uint8_t* const* data, uint8_t* const* parity, size_t len) const;

  // shards: n pointers, nullptr for a missing shard, each present one `len` bytes. Writes each shard in
  // `wanted` (indexes 0..n-1, data or parity, present or not) to the matching `out` buffer (`len` bytes).
  // Uses the first k present shards. Throws NotEnoughShards when fewer than k are present,
  // std::invalid_argument for an index out of range.
  void reconstruct(const uint8_t* const* shards, size_t len, const std::vector<int>& wanted,
                   uint8_t* const* out) const;

  // The generator matrix, n rows of k coefficients (row-major): rows 0..k-1 the identity.
  const std::vector<uint8_t>& matrix() const { return matrix_; }

 private:
  int k_, m_;
  std::vector<uint8_t> matrix_;  // n x k
  std::vector<uint8_t> parity_tables_;  // ec_init_tables of the m parity rows: 32 * k * m bytes
};

}  // namespace recovault::erasure
