// Where each blob of a vault is: blob ID -> (pack, offset, sealed length, plaintext length, type), loaded
// from the vault's index files (vault-format.md §7). A compact open-addressing table (75-110 bytes a blob
// against ~300 for Python objects), so a vault of millions of blobs (a multi-TB disk image) is indexed in
// memory cheaply and an index file is parsed without a Python object per entry.
// Thread-safe: concurrent lookups, exclusive inserts.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <shared_mutex>
#include <vector>

#include "recovault/idset.hpp"

namespace recovault {

struct BlobLocation {
  uint32_t pack = 0;        // pack number, see LocationIndex::pack_id
  uint32_t offset = 0;      // where the sealed blob starts in the pack
  uint32_t length = 0;      // sealed length
  uint32_t raw_length = 0;  // plaintext length
  uint8_t type = 0;         // 0 data, 1 tree
};

class LocationIndex {
 public:
  LocationIndex() { rehash(1024); }
  // Adds a blob's location, or replaces the one recorded (a blob stored again in another pack).
  void add(const uint8_t id[32], const uint8_t pack_id[32], uint8_t type, uint32_t offset, uint32_t length,
           uint32_t raw_length);
  // Parses the plaintext of an index file and adds every entry; returns how many. Throws
  // std::invalid_argument if it is malformed, before adding anything.
  // With `known`, every blob ID is also inserted there.
  size_t add_index(const uint8_t* data, size_t len, IdSet* known = nullptr);
  bool find(const uint8_t id[32], BlobLocation& out) const;
  ChunkId pack_id(uint32_t pack) const;
  size_t size() const;
  // Every (blob ID, its pack's ID, location), in table order. fn must not call back into the index.
  void for_each(const std::function<void(const ChunkId&, const ChunkId&, const BlobLocation&)>& fn) const;

  static constexpr uint8_t INDEX_VERSION = 1;

 private:
  mutable std::shared_mutex mu_;
  std::vector<ChunkId> keys_;
  std::vector<BlobLocation> vals_;
  std::vector<uint8_t> used_;
  size_t size_ = 0;
  std::vector<ChunkId> packs_;
  std::map<ChunkId, uint32_t> pack_numbers_;
  void rehash(size_t cap);
  uint32_t pack_number_unlocked(const uint8_t pack_id[32]);
  void add_unlocked(const uint8_t id[32], const BlobLocation& loc);
};

}  // namespace recovault
