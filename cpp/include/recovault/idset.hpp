// A compact set of 32-byte chunk IDs (open addressing, ~48 bytes per ID at the default load).
// IDs are keyed-hash outputs, uniformly distributed, so their first 8 bytes are the hash.
// Thread-safe: concurrent lookups, exclusive inserts.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <shared_mutex>
#include <vector>

namespace recovault {

using ChunkId = std::array<uint8_t, 32>;

class IdSet {
 public:
  IdSet() { rehash(1024); }
  bool contains(const uint8_t* id) const;
  bool insert(const uint8_t* id);  // true if it was absent
  bool erase(const uint8_t* id);   // true if it was present
  size_t size() const;
  void reserve(size_t n);
  void clear();
  // Concatenated 32-byte IDs, in table order.
  std::vector<uint8_t> dump() const;

 private:
  mutable std::shared_mutex mu_;
  std::vector<ChunkId> slots_;
  size_t size_ = 0;
  bool has_zero_ = false;  // the all-zero ID marks empty slots; track it separately
  void rehash(size_t cap);
  bool insert_unlocked(const uint8_t* id);
  bool erase_unlocked(const uint8_t* id);
};

}  // namespace recovault
