// The restore engine: writes many sealed blobs, each read from a pack file at an offset, into one
// destination file or device, on N threads, without Python. Per item: pread the sealed bytes from the
// pack, open the blob (verify, decrypt, decompress) into a per-thread buffer, check its length, and pwrite
// the wanted byte range of the plaintext at its destination offset. Used for image restores (one item per
// block) and for the content of big files.
//
// The first failure (a blob that does not authenticate, a truncated pack, a write error...) stops every
// worker; the result names the failing item and the kind of failure, so the caller can name the block and
// the pack. Messages never contain key material or plaintext.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace recovault {

struct RestoreItem {
  static constexpr uint32_t ZEROS = 0xffffffffu;
  uint32_t pack = ZEROS;       // index into the pack paths; ZEROS: write `length` zero bytes, read nothing
  uint32_t sealed_len = 0;     // bytes of the sealed blob in the pack
  uint64_t pack_offset = 0;    // where the sealed blob starts in the pack
  uint8_t id[32] = {0};        // the blob's ID (bound into its AAD)
  uint64_t dest_offset = 0;    // where the written bytes go in the destination
  uint64_t plain_len = 0;      // the plaintext length the index records (checked)
  uint64_t skip = 0;           // plaintext bytes to skip before writing (a range restore's first block)
  uint64_t length = 0;         // bytes to write: plaintext[skip, skip + length), skip + length <= plain_len
};

struct RestoreOptions {
  unsigned workers = 0;         // 0 = hardware concurrency
  // The destination already reads as zeros where items go (a new or truncated regular file): aligned
  // all-zero 4 KiB blocks of the output (aligned to the destination offset) are skipped, leaving holes,
  // exactly like fsmeta.write_sparse. The caller sets the final size (ftruncate) afterwards.
  bool sparse = false;
  // Hand items to the workers in (pack, offset) order instead of in the given order: packs are then read
  // sequentially (blobs sit in a random order in their packs). Measured on a 2 GB image restore (7,180
  // blocks in 20 packs, 2 cores): 0.72-0.83 s instead of 1.13-1.27 s with the packs not in the page cache;
  // the same (~0.6 s) with them cached. Writes in a random order cost nothing more (delayed allocation).
  bool by_pack = true;
  size_t run_items = 32;        // items a worker takes at a time (consecutive in the chosen order)
  size_t max_open_packs = 128;  // pack descriptors kept open at once (idle ones are closed beyond this)
  // Called on the calling thread about every progress_ms while the workers run, with the bytes written so
  // far (data and zeros); returning false stops the workers (the result is then CANCELLED).
  std::function<bool(uint64_t done)> progress;
  unsigned progress_ms = 250;
  // Format v3 (docs/vault-format.md §2-§3): each writing session seals under its own data key. Given a
  // session salt (a sealed blob's bytes 2..17), fills `key` and returns true for a session whose key the
  // caller resolved; false: the key passed to restore_blobs. Called at most once per salt (from worker
  // threads, one at a time), the answers cached. A blob that does not open under a resolved key is tried
  // under the default key too (a planted session key object never makes data sealed under it unreadable).
  std::function<bool(const uint8_t* salt, uint8_t* key)> session_key;
};

enum class RestoreFailure {
  NONE = 0,
  AUTH,          // the blob did not authenticate (tampered, corrupt, wrong key/id, unknown version or codec)
  CORRUPT,       // it authenticated but its zstd frame is bad (or larger than the recorded length)
  LENGTH,        // its plaintext length differs from the one the index records
  TRUNCATED,     // the pack ends before the blob does
  PACK_MISSING,  // the pack file does not exist (error = ENOENT/ENOTDIR)
  READ,          // cannot open or read the pack (error = errno)
  WRITE,         // cannot write the destination (error = errno: ENOSPC, EDQUOT, EIO...)
  CANCELLED,     // the progress callback asked to stop
  INTERNAL,      // out of memory or another unexpected error
};

const char* restore_failure_name(RestoreFailure f);

struct RestoreResult {
  RestoreFailure failure = RestoreFailure::NONE;
  size_t item = SIZE_MAX;    // index (in the given items) of the failing item
  int error = 0;             // errno for PACK_MISSING / READ / WRITE
  std::string detail;        // why, in words (from the blob layer or strerror); no secrets
  uint64_t data_bytes = 0;   // bytes of blob plaintext put in place (holes left by sparse included)
  uint64_t zero_bytes = 0;   // bytes written by ZEROS items
  uint64_t items_done = 0;
};

// Throws std::invalid_argument for malformed items (a pack index out of range, skip + length past
// plain_len) before anything is read or written; every other failure is reported in the result.
RestoreResult restore_blobs(const uint8_t enc_key[32], int dest_fd, const std::vector<std::string>& packs,
                            const std::vector<RestoreItem>& items, const RestoreOptions& opt);

}  // namespace recovault
