// BLAKE3 AVX-512 back end: the AVX2 back end widened to 16 lanes (one 32-bit state word of 16
// chunks or parent nodes per 512-bit register), message words transposed 16x16 on load, and the
// native 32-bit rotate (vprord) for all four rotations.
// Compiled with -mavx512f -mavx512vl (CMake, x86 only); its functions are called only after
// blake3.cpp has checked that the CPU has AVX2, AVX-512F and AVX-512VL.
#include "blake3_impl.hpp"

#if RECOVAULT_BLAKE3_X86_SIMD

#if !defined(__AVX512F__) || !defined(__AVX512VL__)
#error "blake3_avx512.cpp must be compiled with -mavx512f -mavx512vl"
#endif

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_epi32(), which -W(maybe-)uninitialized
// wrongly reports once they are inlined (GCC bug 105593). Nothing here reads undefined values.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

namespace recovault::blake3::detail {
namespace {

// 8x8 transposition of 32-bit words in 256-bit registers (as in the AVX2 back end).
RV_B3_INLINE void transpose8(__m256i r[8]) {
  __m256i u[2][4];
  for (int g = 0; g < 2; ++g) {
    const __m256i ab_lo = _mm256_unpacklo_epi32(r[4 * g + 0], r[4 * g + 1]);
    const __m256i ab_hi = _mm256_unpackhi_epi32(r[4 * g + 0], r[4 * g + 1]);
    const __m256i cd_lo = _mm256_unpacklo_epi32(r[4 * g + 2], r[4 * g + 3]);
    const __m256i cd_hi = _mm256_unpackhi_epi32(r[4 * g + 2], r[4 * g + 3]);
    u[g][0] = _mm256_unpacklo_epi64(ab_lo, cd_lo);
    u[g][1] = _mm256_unpackhi_epi64(ab_lo, cd_lo);
    u[g][2] = _mm256_unpacklo_epi64(ab_hi, cd_hi);
    u[g][3] = _mm256_unpackhi_epi64(ab_hi, cd_hi);
  }
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm256_permute2x128_si256(u[0][j], u[1][j], 0x20);
    r[4 + j] = _mm256_permute2x128_si256(u[0][j], u[1][j], 0x31);
  }
}

// 16x16 transposition of 32-bit words: r[i] word j  ->  r[j] word i.
RV_B3_INLINE void transpose16(__m512i r[16]) {
  // Step 1, within each 128-bit lane k and each group g of four rows: u[g][j] holds column 4k+j of
  // rows 4g..4g+3 (same as the AVX2 transposition, on four lanes instead of two).
  __m512i u[4][4];
  for (int g = 0; g < 4; ++g) {
    const __m512i ab_lo = _mm512_unpacklo_epi32(r[4 * g + 0], r[4 * g + 1]);
    const __m512i ab_hi = _mm512_unpackhi_epi32(r[4 * g + 0], r[4 * g + 1]);
    const __m512i cd_lo = _mm512_unpacklo_epi32(r[4 * g + 2], r[4 * g + 3]);
    const __m512i cd_hi = _mm512_unpackhi_epi32(r[4 * g + 2], r[4 * g + 3]);
    u[g][0] = _mm512_unpacklo_epi64(ab_lo, cd_lo);
    u[g][1] = _mm512_unpackhi_epi64(ab_lo, cd_lo);
    u[g][2] = _mm512_unpacklo_epi64(ab_hi, cd_hi);
    u[g][3] = _mm512_unpackhi_epi64(ab_hi, cd_hi);
  }
  // Step 2: for each j, a 4x4 transposition of 128-bit lanes: column 4k+j's lane g = u[g][j]'s lane k.
  // _mm512_shuffle_i32x4(a, b, imm): lanes 0,1 from a and lanes 2,3 from b, chosen by the 2-bit
  // fields of imm. 0x44 = (a0 a1 b0 b1), 0xEE = (a2 a3 b2 b3), 0x88 = (a0 a2 b0 b2), 0xDD = (a1 a3 b1 b3).
  for (int j = 0; j < 4; ++j) {
    const __m512i p01_lo = _mm512_shuffle_i32x4(u[0][j], u[1][j], 0x44);  // u0.0 u0.1 u1.0 u1.1
    const __m512i p01_hi = _mm512_shuffle_i32x4(u[0][j], u[1][j], 0xEE);  // u0.2 u0.3 u1.2 u1.3
    const __m512i p23_lo = _mm512_shuffle_i32x4(u[2][j], u[3][j], 0x44);  // u2.0 u2.1 u3.0 u3.1
    const __m512i p23_hi = _mm512_shuffle_i32x4(u[2][j], u[3][j], 0xEE);  // u2.2 u2.3 u3.2 u3.3
    r[0 + j] = _mm512_shuffle_i32x4(p01_lo, p23_lo, 0x88);   // u0.0 u1.0 u2.0 u3.0: column j
    r[4 + j] = _mm512_shuffle_i32x4(p01_lo, p23_lo, 0xDD);   // u0.1 u1.1 u2.1 u3.1: column 4+j
    r[8 + j] = _mm512_shuffle_i32x4(p01_hi, p23_hi, 0x88);   // u0.2 u1.2 u2.2 u3.2: column 8+j
    r[12 + j] = _mm512_shuffle_i32x4(p01_hi, p23_hi, 0xDD);  // u0.3 u1.3 u2.3 u3.3: column 12+j
  }
}

struct Avx512Ops {
  using vec = __m512i;
  static constexpr int W = 16;

  static RV_B3_INLINE vec add(vec a, vec b) { return _mm512_add_epi32(a, b); }
  static RV_B3_INLINE vec xor_(vec a, vec b) { return _mm512_xor_si512(a, b); }
  static RV_B3_INLINE vec set1(uint32_t x) { return _mm512_set1_epi32(static_cast<int>(x)); }
  static RV_B3_INLINE vec load_u32(const uint32_t* p) { return _mm512_loadu_si512(p); }
  static RV_B3_INLINE vec rotr16(vec x) { return _mm512_ror_epi32(x, 16); }
  static RV_B3_INLINE vec rotr12(vec x) { return _mm512_ror_epi32(x, 12); }
  static RV_B3_INLINE vec rotr8(vec x) { return _mm512_ror_epi32(x, 8); }
  static RV_B3_INLINE vec rotr7(vec x) { return _mm512_ror_epi32(x, 7); }

  // Also prefetches the same block of the chunk two groups ahead (32 KiB further in contiguous
  // input), as the AVX2 back end does; a prefetch never faults.
  static RV_B3_INLINE void load_block(const uint8_t* const in[W], size_t offset, vec m[16]) {
    for (int i = 0; i < 16; ++i) {
      m[i] = _mm512_loadu_si512(in[i] + offset);
      _mm_prefetch(reinterpret_cast<const char*>(in[i] + offset + 2 * W * CHUNK_LEN), _MM_HINT_T0);
    }
    transpose16(m);
  }

  // h[w] holds word w of the 16 CVs: transpose lanes 0..7 and 8..15 separately as 8x8 blocks.
  static RV_B3_INLINE void store_cvs(const vec h[8], uint8_t* out) {
    __m256i lo[8], hi[8];
    for (int w = 0; w < 8; ++w) {
      lo[w] = _mm512_castsi512_si256(h[w]);
      hi[w] = _mm512_extracti64x4_epi64(h[w], 1);
    }
    transpose8(lo);
    transpose8(hi);
    for (int i = 0; i < 8; ++i) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * i), lo[i]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * (8 + i)), hi[i]);
    }
  }

  static void hash_chunk_group(const uint8_t* const in[W], const uint32_t key[8],
                               const uint32_t lo[W], const uint32_t hi[W], uint32_t flags,
                               uint8_t* out);
};

void Avx512Ops::hash_chunk_group(const uint8_t* const in[W], const uint32_t key[8],
                                 const uint32_t lo[W], const uint32_t hi[W], uint32_t flags,
                                 uint8_t* out) {
  transposed_hash<Avx512Ops>(in, BLOCKS_PER_CHUNK, key, lo, hi, flags, CHUNK_START, CHUNK_END, out);
}

}  // namespace

void hash_chunks_avx512(const uint8_t* const* chunks, size_t n, const uint32_t key[8],
                        uint64_t counter, uint32_t flags, uint8_t* out) {
  transposed_chunks<Avx512Ops>(chunks, n, key, counter, flags, out);
}

void hash_parents_avx512(const uint8_t* in, size_t n, const uint32_t key[8], uint32_t flags,
                         uint8_t* out) {
  transposed_parents<Avx512Ops>(in, n, key, flags, out);
}

}  // namespace recovault::blake3::detail

#endif  // RECOVAULT_BLAKE3_X86_SIMD
