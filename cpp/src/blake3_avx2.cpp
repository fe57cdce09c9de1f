// BLAKE3 AVX2 back end: 8 chunks (or 8 parent nodes) compressed in parallel, one 32-bit state word
// of all 8 lanes per 256-bit register, message words transposed on load.
//
// Whole chunks (the hot path) go through hash8_chunks(): the 16-block loop written as one inline
// assembly block, because GCC's register allocation of the intrinsics version (16 state vectors in
// 16 registers, plus temporaries) costs ~15% of the throughput. Parent nodes (1 block each, ~6% of
// the work) use the intrinsics template transposed_hash<Avx2Ops> shared with the AVX-512 back end,
// which keeps that template exercised on AVX2-only machines.
//
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

// ---- hash8_chunks: 8 whole chunks, one inline assembly loop over the 16 blocks ---------------------
//
// Registers (AT&T syntax, `op src2, src1, dst`): state word i of the 8 lanes in %ymm<i> for
// i = 0..7 and 9..15; state word 8 lives in memory (Hash8Scratch::v8) so that %ymm8 is free as the
// temporary of the shift-based rotations. The chaining value stays in %ymm0..7 from one block to the
// next (the feed-forward h = v[0..7] ^ v[8..15] lands there). The 16 transposed message vectors of
// the current block are in Hash8Scratch::m, used as memory operands.
//
// Each round is two half-G steps on the four columns, then two on the four diagonals, the four G's
// of a step interleaved instruction by instruction:
//   columns   G(v0, v4, v8, v12)  G(v1, v5, v9, v13)  G(v2, v6, v10, v14)  G(v3, v7, v11, v15)
//   diagonals G(v0, v5, v10, v15) G(v1, v6, v11, v12) G(v2, v7, v8, v13)   G(v3, v4, v9, v14)
// so v8 is the `c` of the first column G and of the third diagonal G.

struct alignas(32) Hash8Scratch {
  __m256i m[16];  // offset 0: message vectors of the current block
  __m256i v8;     // offset 512
  __m256i lo;     // offset 544: counter low words of the 8 lanes
  __m256i hi;     // offset 576: counter high words
  __m256i h[8];   // offset 608: the resulting chaining values (transposed)
};
static_assert(offsetof(Hash8Scratch, v8) == 512 && offsetof(Hash8Scratch, lo) == 544 &&
                  offsetof(Hash8Scratch, hi) == 576 && offsetof(Hash8Scratch, h) == 608,
              "the assembly below hard-codes these offsets");

// IV[0..3] and the block length, broadcast by the assembly.
constexpr uint32_t HASH8_CONSTS[5] = {IV[0], IV[1], IV[2], IV[3], static_cast<uint32_t>(BLOCK_LEN)};

#define RV_B3_V8 "512(%[st])"

// a += m[k] for the four a's (v0..v3).
#define RV_B3_ADD_MSG(k0, k1, k2, k3)            \
  "vpaddd " #k0 "*32(%[st]), %%ymm0, %%ymm0\n\t" \
  "vpaddd " #k1 "*32(%[st]), %%ymm1, %%ymm1\n\t" \
  "vpaddd " #k2 "*32(%[st]), %%ymm2, %%ymm2\n\t" \
  "vpaddd " #k3 "*32(%[st]), %%ymm3, %%ymm3\n\t"

// %ymm<r> = rotate right by SR (SL = 32 - SR), through %ymm8.
#define RV_B3_ROTR(r, SR, SL)                     \
  "vpsrld $" #SR ", %%ymm" #r ", %%ymm8\n\t"      \
  "vpslld $" #SL ", %%ymm" #r ", %%ymm" #r "\n\t" \
  "vpor %%ymm8, %%ymm" #r ", %%ymm" #r "\n\t"

// Half a G on the columns: a += m + b; d = (d ^ a) >>> R1; c += d; b = (b ^ c) >>> R2, where
// (R1, R2) = (16, 12) with MASK = rotr16 for the first half and (8, 7) with rotr8 for the second.
#define RV_B3_COLUMNS(k0, k1, k2, k3, MASK, SR, SL)            \
  RV_B3_ADD_MSG(k0, k1, k2, k3)                                \
  "vpaddd %%ymm4, %%ymm0, %%ymm0\n\t"                          \
  "vpaddd %%ymm5, %%ymm1, %%ymm1\n\t"                          \
  "vpaddd %%ymm6, %%ymm2, %%ymm2\n\t"                          \
  "vpaddd %%ymm7, %%ymm3, %%ymm3\n\t"                          \
  "vpxor %%ymm0, %%ymm12, %%ymm12\n\t"                         \
  "vpxor %%ymm1, %%ymm13, %%ymm13\n\t"                         \
  "vpxor %%ymm2, %%ymm14, %%ymm14\n\t"                         \
  "vpxor %%ymm3, %%ymm15, %%ymm15\n\t"                         \
  "vpshufb " MASK ", %%ymm12, %%ymm12\n\t"                     \
  "vpshufb " MASK ", %%ymm13, %%ymm13\n\t"                     \
  "vpshufb " MASK ", %%ymm14, %%ymm14\n\t"                     \
  "vpshufb " MASK ", %%ymm15, %%ymm15\n\t"                     \
  "vpaddd " RV_B3_V8 ", %%ymm12, %%ymm8\n\t"                   \
  "vpaddd %%ymm13, %%ymm9, %%ymm9\n\t"                         \
  "vpaddd %%ymm14, %%ymm10, %%ymm10\n\t"                       \
  "vpaddd %%ymm15, %%ymm11, %%ymm11\n\t"                       \
  "vpxor %%ymm8, %%ymm4, %%ymm4\n\t"                           \
  "vpxor %%ymm9, %%ymm5, %%ymm5\n\t"                           \
  "vpxor %%ymm10, %%ymm6, %%ymm6\n\t"                          \
  "vpxor %%ymm11, %%ymm7, %%ymm7\n\t"                          \
  "vmovdqa %%ymm8, " RV_B3_V8 "\n\t"                           \
  RV_B3_ROTR(4, SR, SL) RV_B3_ROTR(5, SR, SL) RV_B3_ROTR(6, SR, SL) RV_B3_ROTR(7, SR, SL)

// The same on the diagonals: b = (v5, v6, v7, v4), c = (v10, v11, v8, v9), d = (v15, v12, v13, v14).
#define RV_B3_DIAGONALS(k0, k1, k2, k3, MASK, SR, SL)          \
  RV_B3_ADD_MSG(k0, k1, k2, k3)                                \
  "vpaddd %%ymm5, %%ymm0, %%ymm0\n\t"                          \
  "vpaddd %%ymm6, %%ymm1, %%ymm1\n\t"                          \
  "vpaddd %%ymm7, %%ymm2, %%ymm2\n\t"                          \
  "vpaddd %%ymm4, %%ymm3, %%ymm3\n\t"                          \
  "vpxor %%ymm0, %%ymm15, %%ymm15\n\t"                         \
  "vpxor %%ymm1, %%ymm12, %%ymm12\n\t"                         \
  "vpxor %%ymm2, %%ymm13, %%ymm13\n\t"                         \
  "vpxor %%ymm3, %%ymm14, %%ymm14\n\t"                         \
  "vpshufb " MASK ", %%ymm15, %%ymm15\n\t"                     \
  "vpshufb " MASK ", %%ymm12, %%ymm12\n\t"                     \
  "vpshufb " MASK ", %%ymm13, %%ymm13\n\t"                     \
  "vpshufb " MASK ", %%ymm14, %%ymm14\n\t"                     \
  "vpaddd %%ymm15, %%ymm10, %%ymm10\n\t"                       \
  "vpaddd %%ymm12, %%ymm11, %%ymm11\n\t"                       \
  "vpaddd " RV_B3_V8 ", %%ymm13, %%ymm8\n\t"                   \
  "vpaddd %%ymm14, %%ymm9, %%ymm9\n\t"                         \
  "vpxor %%ymm10, %%ymm5, %%ymm5\n\t"                          \
  "vpxor %%ymm11, %%ymm6, %%ymm6\n\t"                          \
  "vpxor %%ymm8, %%ymm7, %%ymm7\n\t"                           \
  "vpxor %%ymm9, %%ymm4, %%ymm4\n\t"                           \
  "vmovdqa %%ymm8, " RV_B3_V8 "\n\t"                           \
  RV_B3_ROTR(5, SR, SL) RV_B3_ROTR(6, SR, SL) RV_B3_ROTR(7, SR, SL) RV_B3_ROTR(4, SR, SL)

// One round; s0..s15 = SCHEDULE.idx[r] (literal numbers, checked against SCHEDULE below).
#define RV_B3_ROUND(s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15) \
  RV_B3_COLUMNS(s0, s2, s4, s6, "%[r16]", 12, 20)                                         \
  RV_B3_COLUMNS(s1, s3, s5, s7, "%[r8]", 7, 25)                                           \
  RV_B3_DIAGONALS(s8, s10, s12, s14, "%[r16]", 12, 20)                                    \
  RV_B3_DIAGONALS(s9, s11, s13, s15, "%[r8]", 7, 25)
#define RV_B3_ROUND_X(row) RV_B3_ROUND(row)

#define RV_B3_SCHED0 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
#define RV_B3_SCHED1 2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8
#define RV_B3_SCHED2 3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1
#define RV_B3_SCHED3 10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6
#define RV_B3_SCHED4 12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4
#define RV_B3_SCHED5 9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7
#define RV_B3_SCHED6 11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13

constexpr uint8_t ASM_SCHEDULE[7][16] = {{RV_B3_SCHED0}, {RV_B3_SCHED1}, {RV_B3_SCHED2}, {RV_B3_SCHED3},
                                         {RV_B3_SCHED4}, {RV_B3_SCHED5}, {RV_B3_SCHED6}};
constexpr bool asm_schedule_ok() {
  for (int r = 0; r < 7; ++r)
    for (int i = 0; i < 16; ++i)
      if (ASM_SCHEDULE[r][i] != SCHEDULE.idx[r][i]) return false;
  return true;
}
static_assert(asm_schedule_ok(), "RV_B3_SCHEDn must equal SCHEDULE");

// Software prefetch, once per lane and block: the same block of the chunk two groups ahead (16 KiB
// further in contiguous input), so that inputs streamed from memory arrive in time (measured +20-30%
// on 16 MiB; the hardware prefetchers alone do not follow 8 interleaved 1 KiB streams that well). A
// prefetch never faults, so running past the end of the input is harmless.
#define RV_B3_PREFETCH "prefetcht0 16384(%[tmp],%[off])\n\t"

// Message words 4q..4q+3 (bytes 16q..16q+15 of the block at offset %[off]) of the 8 lanes into
// m[4q..4q+3]. Row i (register %ymm<8+i>, i < 4) gets lane i's 4 words in its low half and lane
// 4+i's in its high half; a 4x4 transposition inside each half then gives word 4q+j of lanes
// 0..3 | 4..7, which is exactly the lane order of the state vectors. PF: RV_B3_PREFETCH or "".
#define RV_B3_LOAD_ROW(i, reg, q, PF)                                                    \
  "mov " #i "*8(%[in]), %[tmp]\n\t"                                                      \
  "vmovdqu " #q "*16(%[tmp],%[off]), %%xmm" #reg "\n\t"                                  \
  PF                                                                                     \
  "mov (" #i "+4)*8(%[in]), %[tmp]\n\t"                                                  \
  "vinserti128 $1, " #q "*16(%[tmp],%[off]), %%ymm" #reg ", %%ymm" #reg "\n\t"          \
  PF
#define RV_B3_MESSAGE_QUARTER(q, PF)                                                       \
  RV_B3_LOAD_ROW(0, 8, q, PF)                                                            \
  RV_B3_LOAD_ROW(1, 9, q, PF)                                                            \
  RV_B3_LOAD_ROW(2, 10, q, PF)                                                           \
  RV_B3_LOAD_ROW(3, 11, q, PF)                                                           \
  "vpunpckldq %%ymm9, %%ymm8, %%ymm12\n\t"                                               \
  "vpunpckhdq %%ymm9, %%ymm8, %%ymm13\n\t"                                               \
  "vpunpckldq %%ymm11, %%ymm10, %%ymm14\n\t"                                             \
  "vpunpckhdq %%ymm11, %%ymm10, %%ymm15\n\t"                                             \
  "vpunpcklqdq %%ymm14, %%ymm12, %%ymm8\n\t"                                             \
  "vpunpckhqdq %%ymm14, %%ymm12, %%ymm9\n\t"                                             \
  "vpunpcklqdq %%ymm15, %%ymm13, %%ymm10\n\t"                                            \
  "vpunpckhqdq %%ymm15, %%ymm13, %%ymm11\n\t"                                            \
  "vmovdqa %%ymm8, (4*" #q "+0)*32(%[st])\n\t"                                           \
  "vmovdqa %%ymm9, (4*" #q "+1)*32(%[st])\n\t"                                           \
  "vmovdqa %%ymm10, (4*" #q "+2)*32(%[st])\n\t"                                          \
  "vmovdqa %%ymm11, (4*" #q "+3)*32(%[st])\n\t"

// 8 chunks: in[i] points at lane i's 1024 bytes; lane i's chunk counter is hi[i]:lo[i]. Writes the
// 8 chaining values to out (8 * 32 bytes).
void hash8_chunks(const uint8_t* const in[8], const uint32_t key[8], const uint32_t lo[8],
                  const uint32_t hi[8], uint32_t flags, uint8_t* out) {
  uint32_t block_flags[BLOCKS_PER_CHUNK];
  for (size_t b = 0; b < BLOCKS_PER_CHUNK; ++b)
    block_flags[b] = flags | (b == 0 ? CHUNK_START : 0) | (b + 1 == BLOCKS_PER_CHUNK ? CHUNK_END : 0);
  Hash8Scratch sc;
  sc.lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo));
  sc.hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi));
  size_t blocks = BLOCKS_PER_CHUNK;
  size_t off = 0;
  const uint32_t* fl = block_flags;
  const uint8_t* tmp;
  __asm__ volatile(
      // h = key, in every lane
      "vpbroadcastd 0(%[key]), %%ymm0\n\t"
      "vpbroadcastd 4(%[key]), %%ymm1\n\t"
      "vpbroadcastd 8(%[key]), %%ymm2\n\t"
      "vpbroadcastd 12(%[key]), %%ymm3\n\t"
      "vpbroadcastd 16(%[key]), %%ymm4\n\t"
      "vpbroadcastd 20(%[key]), %%ymm5\n\t"
      "vpbroadcastd 24(%[key]), %%ymm6\n\t"
      "vpbroadcastd 28(%[key]), %%ymm7\n\t"
      "1:\n\t"
      RV_B3_MESSAGE_QUARTER(0, RV_B3_PREFETCH)
      RV_B3_MESSAGE_QUARTER(1, "")
      RV_B3_MESSAGE_QUARTER(2, "")
      RV_B3_MESSAGE_QUARTER(3, "")
      // v8..v15 = IV[0..3], counter low, counter high, block length, flags
      "vpbroadcastd 0(%[cst]), %%ymm8\n\t"
      "vmovdqa %%ymm8, " RV_B3_V8 "\n\t"
      "vpbroadcastd 4(%[cst]), %%ymm9\n\t"
      "vpbroadcastd 8(%[cst]), %%ymm10\n\t"
      "vpbroadcastd 12(%[cst]), %%ymm11\n\t"
      "vmovdqa 544(%[st]), %%ymm12\n\t"
      "vmovdqa 576(%[st]), %%ymm13\n\t"
      "vpbroadcastd 16(%[cst]), %%ymm14\n\t"
      "vpbroadcastd (%[fl]), %%ymm15\n\t"
      RV_B3_ROUND_X(RV_B3_SCHED0)
      RV_B3_ROUND_X(RV_B3_SCHED1)
      RV_B3_ROUND_X(RV_B3_SCHED2)
      RV_B3_ROUND_X(RV_B3_SCHED3)
      RV_B3_ROUND_X(RV_B3_SCHED4)
      RV_B3_ROUND_X(RV_B3_SCHED5)
      RV_B3_ROUND_X(RV_B3_SCHED6)
      // h = v[0..7] ^ v[8..15]
      "vpxor " RV_B3_V8 ", %%ymm0, %%ymm0\n\t"
      "vpxor %%ymm9, %%ymm1, %%ymm1\n\t"
      "vpxor %%ymm10, %%ymm2, %%ymm2\n\t"
      "vpxor %%ymm11, %%ymm3, %%ymm3\n\t"
      "vpxor %%ymm12, %%ymm4, %%ymm4\n\t"
      "vpxor %%ymm13, %%ymm5, %%ymm5\n\t"
      "vpxor %%ymm14, %%ymm6, %%ymm6\n\t"
      "vpxor %%ymm15, %%ymm7, %%ymm7\n\t"
      "add $64, %[off]\n\t"
      "add $4, %[fl]\n\t"
      "dec %[blocks]\n\t"
      "jnz 1b\n\t"
      "vmovdqa %%ymm0, 608(%[st])\n\t"
      "vmovdqa %%ymm1, 640(%[st])\n\t"
      "vmovdqa %%ymm2, 672(%[st])\n\t"
      "vmovdqa %%ymm3, 704(%[st])\n\t"
      "vmovdqa %%ymm4, 736(%[st])\n\t"
      "vmovdqa %%ymm5, 768(%[st])\n\t"
      "vmovdqa %%ymm6, 800(%[st])\n\t"
      "vmovdqa %%ymm7, 832(%[st])\n\t"
      : [blocks] "+r"(blocks), [off] "+r"(off), [fl] "+r"(fl), [tmp] "=&r"(tmp)
      : [st] "r"(&sc), [in] "r"(in), [key] "r"(key), [cst] "r"(HASH8_CONSTS),
        [r16] "m"(*reinterpret_cast<const __m256i*>(ROTR16_MASK)),
        [r8] "m"(*reinterpret_cast<const __m256i*>(ROTR8_MASK))
      : "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
        "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
  __m256i r[8];
  for (int i = 0; i < 8; ++i) r[i] = sc.h[i];
  transpose8(r);
  for (int i = 0; i < 8; ++i) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * i), r[i]);
}

#undef RV_B3_V8
#undef RV_B3_ADD_MSG
#undef RV_B3_ROTR
#undef RV_B3_COLUMNS
#undef RV_B3_DIAGONALS
#undef RV_B3_ROUND
#undef RV_B3_ROUND_X
#undef RV_B3_PREFETCH
#undef RV_B3_LOAD_ROW
#undef RV_B3_MESSAGE_QUARTER

// ---- intrinsics operations for transposed_hash<> (parent nodes) ------------------------------------

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

  static void hash_chunk_group(const uint8_t* const in[W], const uint32_t key[8],
                               const uint32_t lo[W], const uint32_t hi[W], uint32_t flags,
                               uint8_t* out) {
    hash8_chunks(in, key, lo, hi, flags, out);
  }
};

}  // namespace

void hash_chunks_avx2(const uint8_t* const* chunks, size_t n, const uint32_t key[8],
                      uint64_t counter, uint32_t flags, uint8_t* out) {
  transposed_chunks<Avx2Ops>(chunks, n, key, counter, flags, out);
}

void hash_parents_avx2(const uint8_t* in, size_t n, const uint32_t key[8], uint32_t flags,
                       uint8_t* out) {
  transposed_parents<Avx2Ops>(in, n, key, flags, out);
}

}  // namespace recovault::blake3::detail

#endif  // RECOVAULT_BLAKE3_X86_SIMD
