#include "recovault/compress.hpp"

#include <zstd.h>

#include <cmath>
#include <memory>
#include <string>

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

// Two stages. (1) Order-0 entropy of 8 samples of 512 bytes spread over the buffer (4 KiB looked at):
// text sits below 5.5 bits per byte and most binaries below 7, so anything under 7.85 is compressible and
// we stop there (a few µs). (2) Data that looks random byte by byte may still repeat (a random block copied
// twice, a byte cycle): for it, a trial zstd level-1 compression of a 64 KiB window from the middle decides
// (~40 µs, paid only by high-entropy chunks). Truly random/encrypted/compressed data fails both and is
// stored as is. Sealing still keeps the original whenever the real zstd frame is not smaller.
bool looks_incompressible(const uint8_t* data, size_t len) {
  if (len < 1024) return false;  // small: just compress, it costs nothing
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
  // 4096 samples of a uniform source give ~7.95 bits; leave margin.
  if (h <= 7.85) return false;
  constexpr size_t WINDOW = 64 << 10;
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
