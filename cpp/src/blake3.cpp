// BLAKE3 (https://github.com/BLAKE3-team/BLAKE3-specs), written from the specification: the portable
// compression function, the chunk state, the chaining-value stack, extendable output, and the run-time
// choice of the back end (portable / AVX2 / AVX-512) for hashing many chunks and parents at once.
#include "recovault/blake3.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

#include "blake3_impl.hpp"

namespace recovault::blake3 {

using namespace detail;

namespace {

// ---- portable compression function ---------------------------------------------------------------

inline uint32_t load_le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

inline void store_le32(uint8_t* p, uint32_t w) {
  p[0] = static_cast<uint8_t>(w);
  p[1] = static_cast<uint8_t>(w >> 8);
  p[2] = static_cast<uint8_t>(w >> 16);
  p[3] = static_cast<uint8_t>(w >> 24);
}

inline void load_words(const uint8_t* p, uint32_t* w, size_t n) {
  for (size_t i = 0; i < n; ++i) w[i] = load_le32(p + 4 * i);
}

inline void store_words(uint8_t* p, const uint32_t* w, size_t n) {
  for (size_t i = 0; i < n; ++i) store_le32(p + 4 * i, w[i]);
}

inline uint32_t rotr32(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

RV_B3_INLINE void g(uint32_t& a, uint32_t& b, uint32_t& c, uint32_t& d, uint32_t x, uint32_t y) {
  a = a + b + x;
  d = rotr32(d ^ a, 16);
  c = c + d;
  b = rotr32(b ^ c, 12);
  a = a + b + y;
  d = rotr32(d ^ a, 8);
  c = c + d;
  b = rotr32(b ^ c, 7);
}

template <int R>
RV_B3_INLINE void round_fn(uint32_t v[16], const uint32_t m[16]) {
  constexpr const uint8_t* s = SCHEDULE.idx[R];
  g(v[0], v[4], v[8], v[12], m[s[0]], m[s[1]]);
  g(v[1], v[5], v[9], v[13], m[s[2]], m[s[3]]);
  g(v[2], v[6], v[10], v[14], m[s[4]], m[s[5]]);
  g(v[3], v[7], v[11], v[15], m[s[6]], m[s[7]]);
  g(v[0], v[5], v[10], v[15], m[s[8]], m[s[9]]);
  g(v[1], v[6], v[11], v[12], m[s[10]], m[s[11]]);
  g(v[2], v[7], v[8], v[13], m[s[12]], m[s[13]]);
  g(v[3], v[4], v[9], v[14], m[s[14]], m[s[15]]);
}

// Runs the 7 rounds; leaves the 16 state words in v.
RV_B3_INLINE void compress_rounds(const uint32_t cv[8], const uint8_t block[BLOCK_LEN],
                                  uint32_t block_len, uint64_t counter, uint32_t flags,
                                  uint32_t v[16]) {
  uint32_t m[16];
  load_words(block, m, 16);
  for (int i = 0; i < 8; ++i) v[i] = cv[i];
  v[8] = IV[0];
  v[9] = IV[1];
  v[10] = IV[2];
  v[11] = IV[3];
  v[12] = static_cast<uint32_t>(counter);
  v[13] = static_cast<uint32_t>(counter >> 32);
  v[14] = block_len;
  v[15] = flags;
  round_fn<0>(v, m);
  round_fn<1>(v, m);
  round_fn<2>(v, m);
  round_fn<3>(v, m);
  round_fn<4>(v, m);
  round_fn<5>(v, m);
  round_fn<6>(v, m);
}

// Compression that keeps only the new chaining value (first 8 output words). cv is updated in place.
void compress_cv(uint32_t cv[8], const uint8_t block[BLOCK_LEN], uint32_t block_len,
                 uint64_t counter, uint32_t flags) {
  uint32_t v[16];
  compress_rounds(cv, block, block_len, counter, flags, v);
  for (int i = 0; i < 8; ++i) cv[i] = v[i] ^ v[i + 8];
}

// Full 64-byte extended output of one compression (used for root output / XOF).
void compress_xof(const uint32_t cv[8], const uint8_t block[BLOCK_LEN], uint32_t block_len,
                  uint64_t counter, uint32_t flags, uint8_t out[BLOCK_LEN]) {
  uint32_t v[16];
  compress_rounds(cv, block, block_len, counter, flags, v);
  for (int i = 0; i < 8; ++i) {
    store_le32(out + 4 * i, v[i] ^ v[i + 8]);
    store_le32(out + 32 + 4 * i, v[i + 8] ^ cv[i]);
  }
}

// ---- dispatch --------------------------------------------------------------------------------------

enum Level : int { LEVEL_PORTABLE = 0, LEVEL_AVX2 = 1, LEVEL_AVX512 = 2 };
constexpr const char* LEVEL_NAMES[3] = {"portable", "avx2", "avx512"};

struct Backend {
  HashChunksFn chunks;
  HashParentsFn parents;
};

#if RECOVAULT_BLAKE3_X86_SIMD
constexpr Backend BACKENDS[3] = {{hash_chunks_portable, hash_parents_portable},
                                 {hash_chunks_avx2, hash_parents_avx2},
                                 {hash_chunks_avx512, hash_parents_avx512}};
#else
constexpr Backend BACKENDS[1] = {{hash_chunks_portable, hash_parents_portable}};
#endif

#if RECOVAULT_BLAKE3_X86_SIMD
// Known-answer self-test of a SIMD back end against the portable code, run once before the back end is
// first chosen: 33 keyed chunks (full vector widths plus a remainder) and 37 parent nodes. A back end that
// disagrees (a CPU or compiler defect; the AVX-512 path could only be checked under emulation where it
// was written) is never used, so a wrong hash can never reach a vault.
bool backend_agrees(const Backend& b) {
  constexpr size_t N = 33, P = 37;
  static uint8_t data[N * CHUNK_LEN];
  for (size_t i = 0; i < sizeof data; ++i) data[i] = static_cast<uint8_t>((i * 131u + (i >> 8) * 7u) & 0xff);
  const uint8_t* chunks[N];
  for (size_t i = 0; i < N; ++i) chunks[i] = data + i * CHUNK_LEN;
  uint32_t key[8];
  for (int i = 0; i < 8; ++i) key[i] = 0x9E3779B9u * static_cast<uint32_t>(i + 1);
  uint8_t want[N * OUT_LEN], got[N * OUT_LEN];
  hash_chunks_portable(chunks, N, key, 5, KEYED_HASH, want);
  b.chunks(chunks, N, key, 5, KEYED_HASH, got);
  if (std::memcmp(want, got, sizeof want) != 0) return false;
  uint8_t pw[P * OUT_LEN], pg[P * OUT_LEN];
  hash_parents_portable(data, P, key, KEYED_HASH, pw);
  b.parents(data, P, key, KEYED_HASH, pg);
  return std::memcmp(pw, pg, sizeof pw) == 0;
}
#endif

int detect_best_level() {
#if RECOVAULT_BLAKE3_X86_SIMD
  __builtin_cpu_init();
  // __builtin_cpu_supports also requires the OS to save the wider registers (XCR0).
  const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      backend_agrees(BACKENDS[LEVEL_AVX512]))
    return LEVEL_AVX512;
  if (avx2 && backend_agrees(BACKENDS[LEVEL_AVX2])) return LEVEL_AVX2;
#endif
  return LEVEL_PORTABLE;
}

int best_level() {
  static const int best = detect_best_level();  // thread-safe one-time initialisation
  return best;
}

// The only mutable global: the level in use (-1: not chosen yet, i.e. the best one).
std::atomic<int> g_level{-1};

int current_level() {
  const int l = g_level.load(std::memory_order_relaxed);
  return l >= 0 ? l : best_level();
}

const Backend& backend() { return BACKENDS[current_level()]; }

// ---- tree helpers ------------------------------------------------------------------------------------

// Most whole chunks hashed as one batch by Hasher::update (their CVs: 8 KiB on the stack).
constexpr size_t BATCH_MAX_CHUNKS = 256;
// A batch splits into at most one subtree per bit on the way up and one per bit on the way down.
constexpr size_t BATCH_MAX_SUBTREES = 2 * 9;

// The complete subtrees that a batch of chunks [counter, counter + n) splits into, left to right:
// each is a power of two of chunks, starting at a multiple of its size (the shape the BLAKE3 tree
// gives it), largest possible first. Their sizes rise and then fall.
struct Forest {
  size_t count;
  uint64_t start[BATCH_MAX_SUBTREES];  // first chunk of each subtree
  alignas(64) uint8_t cvs[BATCH_MAX_CHUNKS * OUT_LEN];  // subtree i's CV at cvs + 32 * i
};

// Hashes n (<= BATCH_MAX_CHUNKS) whole chunks, chunks[i] being chunk `counter + i`, and reduces them
// to the CVs of their subtrees. All chunks go through the back end at once, then each level of
// parents of all subtrees at once. None of the nodes is a root (input follows the batch).
void hash_forest(const Backend& be, const uint8_t* const* chunks, size_t n, const uint32_t key[8],
                 uint64_t counter, uint32_t flags, Forest& f) {
  be.chunks(chunks, n, key, counter, flags, f.cvs);
  size_t cur[BATCH_MAX_SUBTREES];  // current number of CVs of each subtree
  f.count = 0;
  uint64_t pos = counter;
  size_t left = n;
  while (left > 0) {
    size_t size = size_t{1} << (63 - __builtin_clzll(left));  // largest power of two <= left
    const uint64_t align = pos & (~pos + 1);                  // lowest set bit (0 for pos 0)
    if (align != 0 && align < size) size = static_cast<size_t>(align);
    f.start[f.count] = pos;
    cur[f.count] = size;
    ++f.count;
    pos += size;
    left -= size;
  }
  // Level by level. The subtrees not yet reduced to one CV are the largest ones, so (sizes rise then
  // fall) they are consecutive, and so are their CVs, in pairs: one back-end call per level.
  for (;;) {
    size_t first = 0;
    while (first < f.count && cur[first] == 1) ++first;
    if (first == f.count) break;
    size_t last = first, cvs = 0;
    while (last < f.count && cur[last] > 1) cvs += cur[last++];
    uint8_t* base = f.cvs + first * OUT_LEN;  // subtrees before `first` have one CV each
    be.parents(base, cvs / 2, key, flags, base);
    std::memmove(base + cvs / 2 * OUT_LEN, base + cvs * OUT_LEN, (f.count - last) * OUT_LEN);
    for (size_t i = first; i < last; ++i) cur[i] /= 2;
  }
}

// The inputs of a node's last compression, kept so that it can produce either the node's chaining
// value or, with ROOT, any part of the extendable output (block counter = output block index).
struct Output {
  uint32_t cv[8];
  uint8_t block[BLOCK_LEN];
  uint32_t block_len;
  uint64_t counter;
  uint32_t flags;

  void chaining_value(uint8_t out[OUT_LEN]) const {
    uint32_t h[8];
    std::memcpy(h, cv, sizeof h);
    compress_cv(h, block, block_len, counter, flags);
    store_words(out, h, 8);
  }

  void root_bytes(uint8_t* out, size_t len, uint64_t seek) const {
    uint64_t block_index = seek / BLOCK_LEN;
    size_t skip = static_cast<size_t>(seek % BLOCK_LEN);
    uint8_t tmp[BLOCK_LEN];
    while (len > 0) {
      const size_t take = std::min(BLOCK_LEN - skip, len);
      if (skip == 0 && take == BLOCK_LEN) {
        compress_xof(cv, block, block_len, block_index, flags | ROOT, out);
      } else {
        compress_xof(cv, block, block_len, block_index, flags | ROOT, tmp);
        std::memcpy(out, tmp + skip, take);
      }
      out += take;
      len -= take;
      skip = 0;
      ++block_index;
    }
  }
};

Output parent_output(const uint8_t left_right[2 * OUT_LEN], const uint32_t key[8], uint32_t flags) {
  Output o;
  std::memcpy(o.cv, key, sizeof o.cv);
  std::memcpy(o.block, left_right, BLOCK_LEN);
  o.block_len = BLOCK_LEN;
  o.counter = 0;
  o.flags = flags | PARENT;
  return o;
}

void key_words(const uint8_t key[KEY_LEN], uint32_t out[8]) { load_words(key, out, 8); }

}  // namespace

// ---- portable back end -------------------------------------------------------------------------------

namespace detail {

void hash_chunks_portable(const uint8_t* const* chunks, size_t n, const uint32_t key[8],
                          uint64_t counter, uint32_t flags, uint8_t* out) {
  for (size_t c = 0; c < n; ++c) {
    uint32_t h[8];
    std::memcpy(h, key, sizeof h);
    for (size_t b = 0; b < BLOCKS_PER_CHUNK; ++b) {
      uint32_t f = flags;
      if (b == 0) f |= CHUNK_START;
      if (b + 1 == BLOCKS_PER_CHUNK) f |= CHUNK_END;
      compress_cv(h, chunks[c] + b * BLOCK_LEN, BLOCK_LEN, counter + c, f);
    }
    store_words(out + c * OUT_LEN, h, 8);
  }
}

void hash_parents_portable(const uint8_t* in, size_t n, const uint32_t key[8], uint32_t flags,
                           uint8_t* out) {
  for (size_t i = 0; i < n; ++i) {
    uint32_t h[8];
    std::memcpy(h, key, sizeof h);
    compress_cv(h, in, BLOCK_LEN, 0, flags | PARENT);  // reads the whole block before...
    store_words(out, h, 8);                              // ...writing (out may alias in)
    in += BLOCK_LEN;
    out += OUT_LEN;
  }
}

}  // namespace detail

// ---- Hasher ----------------------------------------------------------------------------------------

Hasher::Hasher() { init(IV, 0); }

Hasher::Hasher(const uint8_t key[KEY_LEN]) {
  uint32_t k[8];
  key_words(key, k);
  init(k, KEYED_HASH);
}

Hasher Hasher::derive_key(std::string_view context) {
  Hasher ctx;
  ctx.init(IV, DERIVE_KEY_CONTEXT);
  ctx.update(reinterpret_cast<const uint8_t*>(context.data()), context.size());
  uint8_t context_key[KEY_LEN];
  ctx.finalize(context_key, KEY_LEN);
  uint32_t k[8];
  key_words(context_key, k);
  Hasher h;
  h.init(k, DERIVE_KEY_MATERIAL);
  return h;
}

void Hasher::init(const uint32_t key[8], uint32_t flags) {
  std::memcpy(key_, key, sizeof key_);
  flags_ = flags;
  reset();
}

void Hasher::reset() {
  chunk_counter_ = 0;
  buf_len_ = 0;
  cv_stack_len_ = 0;
}

// Merges the top of the stack until it holds one CV per 1 bit of total_chunks. Called only when it
// is known that input follows those chunks, so none of the merged nodes can be the root.
void Hasher::merge_cv_stack(uint64_t total_chunks) {
  const size_t want = static_cast<size_t>(__builtin_popcountll(total_chunks));
  while (cv_stack_len_ > want) {
    uint8_t* left = cv_stack_ + (cv_stack_len_ - 2) * OUT_LEN;  // left CV then right CV: a block
    hash_parents_portable(left, 1, key_, flags_, left);
    --cv_stack_len_;
  }
}

// Pushes the CV of a complete subtree that starts at chunk `chunk_counter` (a multiple of the
// subtree's size), after merging the subtrees that precede it.
void Hasher::push_cv(const uint8_t cv[OUT_LEN], uint64_t chunk_counter) {
  merge_cv_stack(chunk_counter);
  std::memcpy(cv_stack_ + cv_stack_len_ * OUT_LEN, cv, OUT_LEN);
  ++cv_stack_len_;
}

// The current chunk (buf_) stays raw until it is known not to be the last one: then it is hashed
// with the back end, together with the whole chunks that follow it in the input.
void Hasher::update(const uint8_t* data, size_t len) {
  if (len == 0) return;
  bool buffered_full = false;
  if (buf_len_ > 0 || len <= CHUNK_LEN) {
    const size_t take = std::min(CHUNK_LEN - buf_len_, len);
    std::memcpy(buf_ + buf_len_, data, take);
    buf_len_ = static_cast<uint16_t>(buf_len_ + take);
    data += take;
    len -= take;
    if (len == 0) {
      merge_cv_stack(chunk_counter_);  // input follows the stacked chunks: see finalize()
      return;
    }
    buffered_full = true;  // buf_ holds a whole chunk and more input follows
  }
  // Whole chunks in batches, always leaving at least one byte: the last chunk may be the root.
  const Backend& be = backend();
  Forest forest;
  const uint8_t* chunks[BATCH_MAX_CHUNKS];
  while (buffered_full || len > CHUNK_LEN) {
    size_t n = (len - 1) / CHUNK_LEN + (buffered_full ? 1 : 0);
    // End batches at multiples of BATCH_MAX_CHUNKS when possible, so they split into few subtrees.
    const size_t to_boundary = BATCH_MAX_CHUNKS - static_cast<size_t>(chunk_counter_ % BATCH_MAX_CHUNKS);
    if (n > to_boundary) n = to_boundary;
    size_t i = 0;
    if (buffered_full) chunks[i++] = buf_;
    for (; i < n; ++i) {
      chunks[i] = data;
      data += CHUNK_LEN;
      len -= CHUNK_LEN;
    }
    hash_forest(be, chunks, n, key_, chunk_counter_, flags_, forest);
    for (size_t t = 0; t < forest.count; ++t) push_cv(forest.cvs + t * OUT_LEN, forest.start[t]);
    chunk_counter_ += n;
    buffered_full = false;
  }
  // The rest (1..CHUNK_LEN bytes) is the new current chunk. Input now follows every CV on the stack:
  // merge it down to one CV per 1 bit of the chunk counter, so finalize() can fold right to left.
  std::memcpy(buf_, data, len);
  buf_len_ = static_cast<uint16_t>(len);
  merge_cv_stack(chunk_counter_);
}

void Hasher::finalize(uint8_t* out, size_t out_len, uint64_t seek) const {
  if (out_len == 0) return;
  // The current chunk: all blocks but the last, then the last one (possibly partial, possibly
  // empty for empty input) as the output.
  Output o;
  std::memcpy(o.cv, key_, sizeof o.cv);
  const size_t blocks = buf_len_ == 0 ? 1 : (buf_len_ + BLOCK_LEN - 1) / BLOCK_LEN;
  for (size_t b = 0; b + 1 < blocks; ++b)
    compress_cv(o.cv, buf_ + b * BLOCK_LEN, BLOCK_LEN, chunk_counter_, flags_ | (b == 0 ? CHUNK_START : 0));
  const size_t last_len = buf_len_ - (blocks - 1) * BLOCK_LEN;
  std::memset(o.block, 0, BLOCK_LEN);
  std::memcpy(o.block, buf_ + (blocks - 1) * BLOCK_LEN, last_len);
  o.block_len = static_cast<uint32_t>(last_len);
  o.counter = chunk_counter_;
  o.flags = flags_ | CHUNK_END | (blocks == 1 ? CHUNK_START : 0);
  // The stack holds one CV per 1 bit of chunk_counter_ (largest subtree first): folding it from
  // the top builds the right spine of the tree; the last parent is the root.
  for (size_t i = cv_stack_len_; i-- > 0;) {
    uint8_t block[BLOCK_LEN];
    std::memcpy(block, cv_stack_ + i * OUT_LEN, OUT_LEN);
    o.chaining_value(block + OUT_LEN);
    o = parent_output(block, key_, flags_);
  }
  o.root_bytes(out, out_len, seek);
}

// ---- one-shot and level selection ------------------------------------------------------------------

void hash(const uint8_t* data, size_t len, uint8_t out[OUT_LEN]) {
  Hasher h;
  h.update(data, len);
  h.finalize(out, OUT_LEN);
}

void keyed_hash(const uint8_t key[KEY_LEN], const uint8_t* data, size_t len, uint8_t out[OUT_LEN]) {
  Hasher h(key);
  h.update(data, len);
  h.finalize(out, OUT_LEN);
}

const char* simd_name() { return LEVEL_NAMES[current_level()]; }

const char* set_simd(std::string_view level) {
  int want;
  if (level == "auto") {
    want = best_level();
  } else if (level == "portable") {
    want = LEVEL_PORTABLE;
  } else if (level == "avx2") {
    want = LEVEL_AVX2;
  } else if (level == "avx512") {
    want = LEVEL_AVX512;
  } else {
    throw std::invalid_argument("blake3 SIMD level must be 'portable', 'avx2', 'avx512' or 'auto', not '" +
                                std::string(level) + "'");
  }
  g_level.store(std::min(want, best_level()), std::memory_order_relaxed);
  return simd_name();
}

}  // namespace recovault::blake3
