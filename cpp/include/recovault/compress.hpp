// zstd compression with a fast incompressibility test.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace recovault::compress {

struct DecompressError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Whether sealing compresses: Never; Always (a zstd frame even when it is larger); Auto (skip data that
// looks_incompressible, and keep the original whenever the zstd frame is not smaller).
enum class Mode { Never, Always, Auto };

// Cheap estimate (a few µs per MiB): samples the input and returns true when it is almost surely
// incompressible (already compressed, encrypted or random), so compressing it would waste time.
bool looks_incompressible(const uint8_t* data, size_t len);

// Appends a zstd frame (content size recorded) of data to out. Returns the frame size.
size_t zstd_compress(const uint8_t* data, size_t len, int level, std::vector<uint8_t>& out);
// The same into caller memory of at least zstd_bound(len) bytes (no zero-fill of the destination).
size_t zstd_compress_into(const uint8_t* data, size_t len, int level, uint8_t* dst, size_t cap);
size_t zstd_bound(size_t len);
// Decompresses one frame whose content size must be recorded and <= max_size. Throws DecompressError.
std::vector<uint8_t> zstd_decompress(const uint8_t* data, size_t len, size_t max_size);
void zstd_decompress_into(const uint8_t* data, size_t len, uint8_t* out, size_t out_len);
// The content size recorded in a frame; throws DecompressError if absent, invalid, or above max_size.
size_t zstd_frame_size(const uint8_t* data, size_t len, size_t max_size);
int zstd_max_level();
int zstd_min_level();

}  // namespace recovault::compress
