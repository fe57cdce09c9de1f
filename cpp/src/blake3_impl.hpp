// Internal to the BLAKE3 implementation (blake3.cpp, blake3_avx2.cpp, blake3_avx512.cpp): constants
// from the specification, the entry points of the back ends, and the lane-parallel ("transposed")
// compression loop shared by the SIMD back ends. Not part of the public API.
//
// Linkage rule: this header is included by translation units compiled with different instruction-set
// flags. Everything it *defines* therefore has internal linkage (constexpr variables, functions and
// templates in an unnamed namespace), so that an out-of-line copy emitted by the AVX-512 unit can never
// be picked by the linker for the portable one. The SIMD files must not instantiate standard-library
// templates for the same reason (only intrinsics, memcpy and plain code).
#pragma once
#include <cstddef>
#include <cstdint>

#include "recovault/blake3.hpp"

// SIMD back ends exist only on x86-64 (LP64; GCC or Clang: CPU detection with
// __builtin_cpu_supports, inline assembly in the AVX2 back end), and only when the build compiles
// blake3_avx2.cpp and blake3_avx512.cpp (CMake defines RECOVAULT_X86=1 exactly then). Anywhere else
// the two files compile to nothing and the portable code is used.
#if defined(RECOVAULT_X86) && defined(__x86_64__) && !defined(__ILP32__) && \
    (defined(__GNUC__) || defined(__clang__))
#define RECOVAULT_BLAKE3_X86_SIMD 1
#else
#define RECOVAULT_BLAKE3_X86_SIMD 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define RV_B3_INLINE inline __attribute__((always_inline))
#else
#define RV_B3_INLINE inline
#endif

namespace recovault::blake3::detail {

// Initial chaining value (same constants as SHA-256's IV).
constexpr uint32_t IV[8] = {0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
                            0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u};

// Domain-separation flags (spec, table 3).
constexpr uint32_t CHUNK_START = 1u << 0;
constexpr uint32_t CHUNK_END = 1u << 1;
constexpr uint32_t PARENT = 1u << 2;
constexpr uint32_t ROOT = 1u << 3;
constexpr uint32_t KEYED_HASH = 1u << 4;
constexpr uint32_t DERIVE_KEY_CONTEXT = 1u << 5;
constexpr uint32_t DERIVE_KEY_MATERIAL = 1u << 6;

constexpr size_t BLOCKS_PER_CHUNK = CHUNK_LEN / BLOCK_LEN;

// Message schedule: the spec permutes the 16 message words after every round with
// PERMUTATION (new word i = old word PERMUTATION[i]); SCHEDULE.idx[r][i] is therefore the index of
// the original message word used at position i in round r.
constexpr uint8_t PERMUTATION[16] = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8};
struct Schedule {
  uint8_t idx[7][16];
};
static constexpr Schedule make_schedule() {
  Schedule s{};
  for (int i = 0; i < 16; ++i) s.idx[0][i] = static_cast<uint8_t>(i);
  for (int r = 1; r < 7; ++r)
    for (int i = 0; i < 16; ++i) s.idx[r][i] = s.idx[r - 1][PERMUTATION[i]];
  return s;
}
constexpr Schedule SCHEDULE = make_schedule();

// ---- back-end entry points ---------------------------------------------------------------------
// hash_chunks: hashes n whole chunks (CHUNK_LEN bytes at chunks[i]); chunk i uses chunk counter
//   `counter + i`. Writes the n chaining values (n * OUT_LEN bytes) to `out`. None is a root.
// hash_parents: hashes n parent nodes; parent i's block is the 64 bytes in[64*i .. 64*i+64) (left
//   child CV then right child CV). Writes n chaining values to `out`. None is a root. `out` may equal
//   `in` (each output is written only after the inputs that it overlaps were read).
// `flags` is the mode flag (0, KEYED_HASH or DERIVE_KEY_MATERIAL/CONTEXT); the back ends add
// CHUNK_START / CHUNK_END / PARENT themselves.
using HashChunksFn = void (*)(const uint8_t* const* chunks, size_t n, const uint32_t key[8],
                              uint64_t counter, uint32_t flags, uint8_t* out);
using HashParentsFn = void (*)(const uint8_t* in, size_t n, const uint32_t key[8], uint32_t flags,
                               uint8_t* out);

void hash_chunks_portable(const uint8_t* const* chunks, size_t n, const uint32_t key[8],
                          uint64_t counter, uint32_t flags, uint8_t* out);
void hash_parents_portable(const uint8_t* in, size_t n, const uint32_t key[8], uint32_t flags,
                           uint8_t* out);

#if RECOVAULT_BLAKE3_X86_SIMD
// Defined in blake3_avx2.cpp / blake3_avx512.cpp. Call only after the CPU check in blake3.cpp.
void hash_chunks_avx2(const uint8_t* const* chunks, size_t n, const uint32_t key[8],
                      uint64_t counter, uint32_t flags, uint8_t* out);
void hash_parents_avx2(const uint8_t* in, size_t n, const uint32_t key[8], uint32_t flags,
                       uint8_t* out);
void hash_chunks_avx512(const uint8_t* const* chunks, size_t n, const uint32_t key[8],
                        uint64_t counter, uint32_t flags, uint8_t* out);
void hash_parents_avx512(const uint8_t* in, size_t n, const uint32_t key[8], uint32_t flags,
                         uint8_t* out);
#endif

namespace {

// ---- lane-parallel compression shared by the SIMD back ends --------------------------------------
// `Ops` describes one vector width W (8 for AVX2, 16 for AVX-512):
//   using vec;  static constexpr int W;
//   add(a,b), xor_(a,b), set1(u32), load_u32(const uint32_t* p)  (W words),
//   rotr16/rotr12/rotr8/rotr7(a)  (rotate each 32-bit lane right),
//   load_block(const uint8_t* const in[W], size_t offset, vec m[16])  (m[j] = word j of the 64-byte
//     block at in[lane] + offset, for every lane: a transposition),
//   store_cvs(const vec h[8], uint8_t* out)  (lane i's 8 words to out + 32*i: the inverse transposition),
//   hash_chunk_group(const uint8_t* const in[W], key, lo, hi, flags, out)  (W whole chunks: either
//     transposed_hash<Ops>(in, BLOCKS_PER_CHUNK, ..., CHUNK_START, CHUNK_END, out) or a faster
//     equivalent).
// State word i of all W independent compressions lives in one vector v[i].

// The G function on one (a, b, c, d) quadruple of state vectors. The message word is added before
// b: b is the last value computed by the previous step.
template <class Ops, class V = typename Ops::vec>
RV_B3_INLINE void g(V& a, V& b, V& c, V& d, const V& x, const V& y) {
  a = Ops::add(Ops::add(a, x), b);
  d = Ops::rotr16(Ops::xor_(d, a));
  c = Ops::add(c, d);
  b = Ops::rotr12(Ops::xor_(b, c));
  a = Ops::add(Ops::add(a, y), b);
  d = Ops::rotr8(Ops::xor_(d, a));
  c = Ops::add(c, d);
  b = Ops::rotr7(Ops::xor_(b, c));
}

// One round: G on the four columns, then on the four diagonals, message words per SCHEDULE[R].
// The G's are written one after the other, not interleaved: with 16 registers for 16 state vectors
// (AVX2) interleaving makes GCC spill far more, and the out-of-order core finds the parallelism
// between the independent G's by itself.
template <class Ops, int R, class V = typename Ops::vec>
RV_B3_INLINE void transposed_round(V v[16], const V m[16]) {
  constexpr const uint8_t* s = SCHEDULE.idx[R];
  g<Ops>(v[0], v[4], v[8], v[12], m[s[0]], m[s[1]]);
  g<Ops>(v[1], v[5], v[9], v[13], m[s[2]], m[s[3]]);
  g<Ops>(v[2], v[6], v[10], v[14], m[s[4]], m[s[5]]);
  g<Ops>(v[3], v[7], v[11], v[15], m[s[6]], m[s[7]]);
  g<Ops>(v[0], v[5], v[10], v[15], m[s[8]], m[s[9]]);
  g<Ops>(v[1], v[6], v[11], v[12], m[s[10]], m[s[11]]);
  g<Ops>(v[2], v[7], v[8], v[13], m[s[12]], m[s[13]]);
  g<Ops>(v[3], v[4], v[9], v[14], m[s[14]], m[s[15]]);
}

// W independent inputs of `nblocks` full 64-byte blocks each (lane i reads in[i]); lane i uses the
// 64-bit counter ctr_hi[i]:ctr_lo[i] for all its blocks. The first block gets flags|flags_start, the
// last flags|flags_end. Writes the W resulting chaining values (W * 32 bytes) to out.
template <class Ops>
void transposed_hash(const uint8_t* const* in, size_t nblocks, const uint32_t key[8],
                     const uint32_t* ctr_lo, const uint32_t* ctr_hi, uint32_t flags,
                     uint32_t flags_start, uint32_t flags_end, uint8_t* out) {
  using V = typename Ops::vec;
  V h[8];
  for (int i = 0; i < 8; ++i) h[i] = Ops::set1(key[i]);
  const V lo = Ops::load_u32(ctr_lo);
  const V hi = Ops::load_u32(ctr_hi);
  const V blen = Ops::set1(static_cast<uint32_t>(BLOCK_LEN));
  const V iv0 = Ops::set1(IV[0]), iv1 = Ops::set1(IV[1]), iv2 = Ops::set1(IV[2]),
          iv3 = Ops::set1(IV[3]);
  uint32_t block_flags = flags | flags_start;
  for (size_t b = 0; b < nblocks; ++b) {
    if (b + 1 == nblocks) block_flags |= flags_end;
    V m[16];
    Ops::load_block(in, b * BLOCK_LEN, m);
    V v[16] = {h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7],
               iv0,  iv1,  iv2,  iv3,  lo,   hi,   blen, Ops::set1(block_flags)};
    transposed_round<Ops, 0>(v, m);
    transposed_round<Ops, 1>(v, m);
    transposed_round<Ops, 2>(v, m);
    transposed_round<Ops, 3>(v, m);
    transposed_round<Ops, 4>(v, m);
    transposed_round<Ops, 5>(v, m);
    transposed_round<Ops, 6>(v, m);
    for (int i = 0; i < 8; ++i) h[i] = Ops::xor_(v[i], v[i + 8]);
    block_flags = flags;
  }
  Ops::store_cvs(h, out);
}

// Drivers for hash_chunks / hash_parents: full groups of W, then a padded group (unused lanes
// re-read lane 0's input, their output is dropped) when at least two inputs remain, and the
// portable code for a single leftover input.
template <class Ops>
void transposed_chunks(const uint8_t* const* chunks, size_t n, const uint32_t key[8],
                       uint64_t counter, uint32_t flags, uint8_t* out) {
  constexpr int W = Ops::W;
  const uint8_t* ptr[W];
  uint32_t lo[W], hi[W];
  while (n >= 2) {
    const size_t take = n < static_cast<size_t>(W) ? n : static_cast<size_t>(W);
    for (int i = 0; i < W; ++i) {
      const size_t lane = static_cast<size_t>(i) < take ? static_cast<size_t>(i) : 0;
      ptr[i] = chunks[lane];
      const uint64_t c = counter + lane;
      lo[i] = static_cast<uint32_t>(c);
      hi[i] = static_cast<uint32_t>(c >> 32);
    }
    if (take == static_cast<size_t>(W)) {
      Ops::hash_chunk_group(ptr, key, lo, hi, flags, out);
    } else {
      alignas(64) uint8_t tmp[W * OUT_LEN];
      Ops::hash_chunk_group(ptr, key, lo, hi, flags, tmp);
      for (size_t i = 0; i < take * OUT_LEN; ++i) out[i] = tmp[i];
    }
    chunks += take;
    out += take * OUT_LEN;
    counter += take;
    n -= take;
  }
  if (n == 1) hash_chunks_portable(chunks, 1, key, counter, flags, out);
}

template <class Ops>
void transposed_parents(const uint8_t* in, size_t n, const uint32_t key[8], uint32_t flags,
                        uint8_t* out) {
  constexpr int W = Ops::W;
  const uint8_t* ptr[W];
  uint32_t zero[W];
  for (int i = 0; i < W; ++i) zero[i] = 0;
  while (n >= 2) {
    const size_t take = n < static_cast<size_t>(W) ? n : static_cast<size_t>(W);
    for (int i = 0; i < W; ++i)
      ptr[i] = in + (static_cast<size_t>(i) < take ? static_cast<size_t>(i) : 0) * BLOCK_LEN;
    // Always through a buffer: `out` may alias `in`. Output i goes to out + 32*i <= in + 64*i, and
    // groups run in order, so writing after the group's loads never clobbers unread input.
    alignas(64) uint8_t tmp[W * OUT_LEN];
    transposed_hash<Ops>(ptr, 1, key, zero, zero, flags | PARENT, 0, 0, tmp);
    for (size_t i = 0; i < take * OUT_LEN; ++i) out[i] = tmp[i];
    in += take * BLOCK_LEN;
    out += take * OUT_LEN;
    n -= take;
  }
  if (n == 1) hash_parents_portable(in, 1, key, flags, out);
}

}  // namespace
}  // namespace recovault::blake3::detail
