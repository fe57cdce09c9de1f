// FastCDC content-defined chunking (Xia et al. 2016/2020) with normalized chunking and cut-point
// skipping, its gear table derived from a secret seed; and a fixed-size block splitter for disk images.
#pragma once
#include <cstddef>
#include <cstdint>

namespace recovault {

struct ChunkerParams {
  uint32_t min_size = 256 * 1024;
  uint32_t avg_size = 512 * 1024;
  uint32_t max_size = 2 * 1024 * 1024;
  int normalization = 2;  // 0..3: mask bits added before / removed after avg_size
};

// 256 x 64-bit gear values. derive_gear_table() expands a 32-byte secret seed with HKDF-SHA256
// (info "recovault/v1/gear"), so cut points reveal nothing to someone who lacks the seed.
struct GearTable {
  uint64_t v[256];
};
GearTable derive_gear_table(const uint8_t seed[32]);

// Streaming chunker: feed bytes in any split; cut points are the same as for the whole stream.
class Chunker {
 public:
  Chunker(const ChunkerParams& p, const GearTable& g);  // throws std::invalid_argument on bad params
  // Scan data[0..len). Returns the number of bytes consumed. If a cut point was found, *cut = true and
  // the returned count ends exactly at the cut (the chunk = all bytes fed since the previous cut, up to
  // and including data[ret-1]); the state is reset for the next chunk. Otherwise *cut = false and
  // ret == len (all consumed, the state carried over).
  size_t next(const uint8_t* data, size_t len, bool* cut);
  // Exactly next() over len zero bytes, without any bytes: the hash of a window of zeros is known, so a run
  // of zeros (a hole of a sparse file) costs at most ~64 steps per chunk whatever its length.
  uint64_t next_zeros(uint64_t len, bool* cut);
  // Bytes fed since the last cut (the pending tail, which is the final chunk at end of stream).
  uint64_t pending() const { return pos_; }
  void reset() { pos_ = 0; hash_ = 0; }
  const ChunkerParams& params() const { return p_; }

 private:
  ChunkerParams p_;
  GearTable g_;
  uint64_t gear_ls_[256];  // gear << 1, for the two-bytes-per-step loop
  uint64_t mask_s_, mask_l_, mask_s_ls_, mask_l_ls_;
  uint64_t pos_ = 0;
  uint64_t hash_ = 0;
};

// True if every byte of data[0..len) is zero (vectorized).
bool is_all_zero(const uint8_t* data, size_t len);

}  // namespace recovault
