// BLAKE3 AVX2 back end: 8 chunks (or 8 parent nodes) compressed in parallel, one 32-bit state word
// of all 8 lanes per 256-bit register, message words transposed 8x8 on load.
// Compiled with -mavx2 (CMake, x86 only); its functions are called only after blake3.cpp has checked
// that the CPU has AVX2.
#include "blake3_impl.hpp"

#if RECOVAULT_BLAKE3_X86_SIMD

#if !defined(__AVX2__)
#error "blake3_avx2.cpp must be compiled with -mavx2"
#endif

#include <immintrin.h>

namespace recovault::blake3::detail {
namespace {

// 8x8 transposition of 32-bit words: r[i] word j  ->  r[j] word i.
RV_B3_INLINE void transpose8(__m256i r[8]) {
  __m256i u[2][4];
  for (int g = 0; g < 2; ++g) {
    const __m256i ab_lo = _mm256_unpacklo_epi32(r[4 * g + 0], r[4 * g + 1]);
    const __m256i ab_hi = _mm256_unpackhi_epi32(r[4 * g + 0], r[4 * g + 1]);
    const __m256i cd_lo = _mm256_unpacklo_epi32(r[4 * g + 2], r[4 * g + 3]);
    const __m256i cd_hi = _mm256_unpackhi_epi32(r[4 * g + 2], r[4 * g + 3]);
    // Per 128-bit half k: u[g][j] holds column 4k+j of rows 4g..4g+3.
    u[g][0] = _mm256_unpacklo_epi64(ab_lo, cd_lo);
    u[g][1] = _mm256_unpackhi_epi64(ab_lo, cd_lo);
    u[g][2] = _mm256_unpacklo_epi64(ab_hi, cd_hi);
    u[g][3] = _mm256_unpackhi_epi64(ab_hi, cd_hi);
  }
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm256_permute2x128_si256(u[0][j], u[1][j], 0x20);      // low halves: columns 0..3
    r[4 + j] = _mm256_permute2x128_si256(u[0][j], u[1][j], 0x31);  // high halves: columns 4..7
  }
}

// pshufb masks: result byte j of each 32-bit word takes source byte mask[j] (little endian, so a
// right rotation by 8 takes bytes 1,2,3,0 and by 16 takes bytes 2,3,0,1). Plain byte arrays, so
// that no AVX instruction runs during static initialisation (before the CPU check).
alignas(32) constexpr uint8_t ROTR16_MASK[32] = {2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13,
                                                 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13};
alignas(32) constexpr uint8_t ROTR8_MASK[32] = {1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12,
                                                1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12};

struct Avx2Ops {
  using vec = __m256i;
  static constexpr int W = 8;

  static RV_B3_INLINE vec add(vec a, vec b) { return _mm256_add_epi32(a, b); }
  static RV_B3_INLINE vec xor_(vec a, vec b) { return _mm256_xor_si256(a, b); }
  static RV_B3_INLINE vec set1(uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }
  static RV_B3_INLINE vec load_u32(const uint32_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  // Rotations by whole bytes are byte shuffles; the others shift and combine. The shuffle masks
  // are memory operands on purpose: held in registers (where GCC puts intrinsic constants) they
  // take 2 of the 16 registers the 16 state vectors need, and the extra spills cost ~20%.
  static RV_B3_INLINE vec shuffle_mem(vec x, const uint8_t (&mask)[32]) {
    vec r;
    __asm__("vpshufb %2, %1, %0" : "=x"(r) : "x"(x), "m"(*reinterpret_cast<const __m256i*>(mask)));
    return r;
  }
  static RV_B3_INLINE vec rotr16(vec x) { return shuffle_mem(x, ROTR16_MASK); }
  static RV_B3_INLINE vec rotr8(vec x) { return shuffle_mem(x, ROTR8_MASK); }
  static RV_B3_INLINE vec rotr12(vec x) {
    return _mm256_or_si256(_mm256_srli_epi32(x, 12), _mm256_slli_epi32(x, 20));
  }
  static RV_B3_INLINE vec rotr7(vec x) {
    return _mm256_or_si256(_mm256_srli_epi32(x, 7), _mm256_slli_epi32(x, 25));
  }

  static RV_B3_INLINE void load_block(const uint8_t* const in[W], size_t offset, vec m[16]) {
    for (int half = 0; half < 2; ++half) {
      __m256i r[8];
      for (int i = 0; i < 8; ++i)
        r[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in[i] + offset + 32 * half));
#ifdef PF
      if (half == 0) for (int i = 0; i < 8; ++i) _mm_prefetch(reinterpret_cast<const char*>(in[i] + offset + PF), _MM_HINT_T0);
#endif
      transpose8(r);
      for (int j = 0; j < 8; ++j) m[8 * half + j] = r[j];
    }
  }

  static RV_B3_INLINE void store_cvs(const vec h[8], uint8_t* out) {
    __m256i r[8];
    for (int i = 0; i < 8; ++i) r[i] = h[i];
    transpose8(r);
    for (int i = 0; i < 8; ++i) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * i), r[i]);
  }
};

}  // namespace

void hash_chunks_avx2(const uint8_t* in, size_t n, const uint32_t key[8], uint64_t counter,
                      uint32_t flags, uint8_t* out) {
  transposed_chunks<Avx2Ops>(in, n, key, counter, flags, out);
}

void hash_parents_avx2(const uint8_t* in, size_t n, const uint32_t key[8], uint32_t flags,
                       uint8_t* out) {
  transposed_parents<Avx2Ops>(in, n, key, flags, out);
}

}  // namespace recovault::blake3::detail

#endif  // RECOVAULT_BLAKE3_X86_SIMD
