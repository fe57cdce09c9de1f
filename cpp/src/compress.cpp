#include "recovault/compress.hpp"

#include <zstd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace recovault::compress {
namespace {

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};

// Compression contexts are expensive to create (hundreds of KiB of tables): one per thread, reused.
ZSTD_CCtx* thread_cctx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxDeleter> c(ZSTD_createCCtx());
  if (!c) throw std::bad_alloc();
  return c.get();
}
ZSTD_DCtx* thread_dctx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxDeleter> c(ZSTD_createDCtx());
  if (!c) throw std::bad_alloc();
  return c.get();
}

}  // namespace

namespace {

// Order-0 entropy, in bits per byte, of 8 samples of 512 bytes spread over the buffer (4 KiB looked at).
double sampled_entropy(const uint8_t* data, size_t len) {
  constexpr size_t SAMPLE = 512, SAMPLES = 8;
  uint32_t hist[256] = {0};
  size_t total = 0;
  size_t step = (len - SAMPLE) / (SAMPLES - 1);
  for (size_t s = 0; s < SAMPLES; ++s) {
    const uint8_t* p = data + s * step;
    for (size_t i = 0; i < SAMPLE; ++i) hist[p[i]]++;
    total += SAMPLE;
  }
  double h = 0;
  for (uint32_t c : hist) {
    if (c) {
      double q = double(c) / double(total);
      h -= q * std::log2(q);
    }
  }
  return h;
}

inline uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Long-distance repeats, sampled. The 8-byte words at every stride-aligned offset go into a hash table;
// then every offset of PROBES regions of `stride` bytes spread over the buffer is looked up. If the bytes
// around a probe region repeat bytes from D earlier, at any distance D and any alignment, exactly one
// offset in the region has its counterpart on a sampled offset, so the repeat is found. Returns how many
// probe regions found one (a region counts once). For a 2 MiB chunk: 4 K inserts and 8 K lookups, most of
// them answered by a 8 KiB bit filter that stays in L1; random data finds none (two equal random 8-byte
// words: ~2^-64 a pair). len > PROBES * 512.
int probe_regions_with_repeats(const uint8_t* data, size_t len) {
  constexpr size_t PROBES = 16, MAX_SAMPLES = 8192, FILTER_BITS = 1 << 16;
  size_t stride = 512;
  while ((len - 8) / stride + 1 > MAX_SAMPLES) stride *= 2;  // chunks above 4 MiB: a coarser grid
  const size_t last = len - 8;  // the last offset an 8-byte word fits at
  const size_t samples = last / stride + 1;
  // Slot: the sample's index + 1 (0 = empty) in the low 16 bits, the call's generation in the high 16: slots
  // of earlier calls are stale, so the table is cleared only when the generation wraps.
  struct Scratch {
    uint32_t table[2 * MAX_SAMPLES] = {};
    uint64_t filter[FILTER_BITS / 64];
    uint32_t gen = 0;
  };
  thread_local std::unique_ptr<Scratch> scratch(new Scratch);
  // Plain pointers and values from here: every use of a thread_local in a shared library is a call.
  uint32_t* const table = scratch->table;
  uint64_t* const filter = scratch->filter;
  const uint32_t gen = scratch->gen = (scratch->gen + 1) & 0xffff ? (scratch->gen + 1) & 0xffff : 1;
  if (gen == 1) std::memset(table, 0, sizeof(scratch->table));  // the generation wrapped: forget every slot
  std::memset(filter, 0, sizeof(scratch->filter));
  size_t mask = 1;
  while (mask < 2 * samples) mask <<= 1;
  mask -= 1;
  auto mix = [](uint64_t w) { return w * 0x9E3779B97F4A7C15ull; };
  auto live = [&](uint32_t slot) { return (slot >> 16) == gen; };
  auto word_of = [&](uint32_t slot) { return load64(data + ((slot & 0xffff) - 1) * stride); };
  for (size_t k = 0; k < samples; ++k) {
    const uint64_t w = load64(data + k * stride), m = mix(w);
    filter[(m >> 48) / 64] |= uint64_t{1} << ((m >> 48) % 64);
    size_t i = (m >> 20) & mask;
    while (live(table[i]) && word_of(table[i]) != w) i = (i + 1) & mask;
    if (!live(table[i])) table[i] = (gen << 16) | static_cast<uint32_t>(k + 1);  // equal words: the first
  }
  auto repeats_at = [&](size_t p) {
    const uint64_t w = load64(data + p), m = mix(w);
    if (!(filter[(m >> 48) / 64] >> ((m >> 48) % 64) & 1)) return false;
    for (size_t i = (m >> 20) & mask; live(table[i]); i = (i + 1) & mask)
      if (word_of(table[i]) == w) return ((table[i] & 0xffff) - 1) * stride != p;
    return false;
  };
  int found = 0;
  const size_t span = (last + 1) / PROBES;  // probe region r starts at r * span: spread over the buffer
  for (size_t r = 0; r < PROBES; ++r) {
    const size_t begin = r * span, end = std::min(begin + stride, last + 1);
    for (size_t p = begin; p < end; ++p) {
      if (repeats_at(p)) {
        ++found;
        break;
      }
    }
  }
  return found;
}

}  // namespace

// Three stages. (1) Order-0 entropy of 8 samples of 512 bytes: text sits below 5.5 bits per byte and most
// binaries below 7, so anything under 7.85 is compressible and we stop there (a few µs). Data that looks
// random byte by byte may still repeat: (2) a block repeated at any distance within the buffer (a file
// copied twice into one chunk, a VM page seen twice) is found by sampled 8-byte words
// (probe_regions_with_repeats, ~10 µs for 2 MiB); (3) short-range repeats (a byte cycle) by a trial zstd
// level-1 compression of a 64 KiB window from the middle (~20-40 µs; all of a buffer up to 64 KiB).
// Stages 2 and 3 are paid only by high-entropy chunks. Truly random/encrypted/compressed data fails all three
// and is stored as is. Sealing still keeps the original whenever the real zstd frame is not smaller.
bool looks_incompressible(const uint8_t* data, size_t len) {
  if (len < 1024) return false;  // small: just compress, it costs nothing
  // 4096 samples of a uniform source give ~7.95 bits; leave margin.
  if (sampled_entropy(data, len) <= 7.85) return false;
  constexpr size_t WINDOW = 64 << 10;  // stage 3 sees all of a buffer this small: stage 2 is for larger
  // Two regions (of 16) inside repeats: about an eighth of the buffer or more repeats, worth a real try.
  if (len > WINDOW && probe_regions_with_repeats(data, len) >= 2) return false;
  size_t n = len < WINDOW ? len : WINDOW;
  const uint8_t* w = data + (len - n) / 2;
  thread_local std::unique_ptr<uint8_t[]> trial(new uint8_t[ZSTD_COMPRESSBOUND(WINDOW)]);
  size_t c = zstd_compress_into(w, n, 1, trial.get(), ZSTD_COMPRESSBOUND(WINDOW));
  return c * 100 > n * 95;  // saves less than 5%: not worth compressing
}

size_t zstd_bound(size_t len) { return ZSTD_compressBound(len); }

size_t zstd_compress_into(const uint8_t* data, size_t len, int level, uint8_t* dst, size_t cap) {
  ZSTD_CCtx* c = thread_cctx();
  ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1);
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 0);  // AES-GCM authenticates the bytes
  size_t n = ZSTD_compress2(c, dst, cap, data, len);
  if (ZSTD_isError(n)) throw std::runtime_error(std::string("zstd compression failed: ") + ZSTD_getErrorName(n));
  return n;
}

size_t zstd_compress(const uint8_t* data, size_t len, int level, std::vector<uint8_t>& out) {
  size_t bound = ZSTD_compressBound(len);
  size_t old = out.size();
  out.resize(old + bound);
  try {
    size_t n = zstd_compress_into(data, len, level, out.data() + old, bound);
    out.resize(old + n);
    return n;
  } catch (...) {
    out.resize(old);
    throw;
  }
}

void zstd_decompress_into(const uint8_t* data, size_t len, uint8_t* out, size_t out_len) {
  size_t n = ZSTD_decompressDCtx(thread_dctx(), out, out_len, data, len);
  if (ZSTD_isError(n)) throw DecompressError(std::string("corrupt zstd frame: ") + ZSTD_getErrorName(n));
  if (n != out_len) throw DecompressError("corrupt zstd frame: decompressed size differs from the recorded size");
}

size_t zstd_frame_size(const uint8_t* data, size_t len, size_t max_size) {
  unsigned long long size = ZSTD_getFrameContentSize(data, len);
  if (size == ZSTD_CONTENTSIZE_ERROR) throw DecompressError("corrupt zstd frame: not a zstd frame");
  if (size == ZSTD_CONTENTSIZE_UNKNOWN) throw DecompressError("zstd frame without a recorded content size");
  if (size > max_size) throw DecompressError("zstd frame claims " + std::to_string(size) + " bytes, more than the limit");
  return static_cast<size_t>(size);
}

std::vector<uint8_t> zstd_decompress(const uint8_t* data, size_t len, size_t max_size) {
  std::vector<uint8_t> out(zstd_frame_size(data, len, max_size));
  zstd_decompress_into(data, len, out.data(), out.size());
  return out;
}

int zstd_max_level() { return ZSTD_maxCLevel(); }
int zstd_min_level() { return ZSTD_minCLevel(); }

}  // namespace recovault::compress
