#include "recovault/locindex.hpp"

#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

namespace recovault {
namespace {

uint64_t slot_hash(const uint8_t* id) {  // IDs are keyed-hash outputs: their first bytes are uniform
  uint64_t h;
  std::memcpy(&h, id, 8);
  return h;
}

uint32_t le32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }

// vault-format.md §7: version u8, pack count u32; per pack: pack id 32 bytes, entry count u32; per entry:
// type u8, blob id 32 bytes, offset u32, sealed length u32, plaintext length u32 (little-endian).
constexpr size_t PREFIX = 1 + 4, PACK = 32 + 4, ENTRY = 1 + 32 + 4 + 4 + 4;

}  // namespace

void LocationIndex::rehash(size_t cap) {
  std::vector<ChunkId> keys(cap);
  std::vector<BlobLocation> vals(cap);
  std::vector<uint8_t> used(cap, 0);
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (!used_[i]) continue;
    size_t j = slot_hash(keys_[i].data()) & (cap - 1);
    while (used[j]) j = (j + 1) & (cap - 1);
    keys[j] = keys_[i];
    vals[j] = vals_[i];
    used[j] = 1;
  }
  keys_.swap(keys);
  vals_.swap(vals);
  used_.swap(used);
}

uint32_t LocationIndex::pack_number_unlocked(const uint8_t pack_id[32]) {
  ChunkId p;
  std::memcpy(p.data(), pack_id, 32);
  auto it = pack_numbers_.find(p);
  if (it != pack_numbers_.end()) return it->second;
  uint32_t n = static_cast<uint32_t>(packs_.size());
  packs_.push_back(p);
  pack_numbers_.emplace(p, n);
  return n;
}

void LocationIndex::add_unlocked(const uint8_t id[32], const BlobLocation& loc) {
  if ((size_ + 1) * 10 > keys_.size() * 7) rehash(keys_.size() * 2);  // load <= 0.7
  size_t mask = keys_.size() - 1;
  size_t j = slot_hash(id) & mask;
  while (used_[j]) {
    if (std::memcmp(keys_[j].data(), id, 32) == 0) {
      vals_[j] = loc;
      return;
    }
    j = (j + 1) & mask;
  }
  std::memcpy(keys_[j].data(), id, 32);
  vals_[j] = loc;
  used_[j] = 1;
  ++size_;
}

void LocationIndex::add(const uint8_t id[32], const uint8_t pack_id[32], uint8_t type, uint32_t offset,
                        uint32_t length, uint32_t raw_length) {
  std::unique_lock<std::shared_mutex> l(mu_);
  BlobLocation loc;
  loc.pack = pack_number_unlocked(pack_id);
  loc.type = type;
  loc.offset = offset;
  loc.length = length;
  loc.raw_length = raw_length;
  add_unlocked(id, loc);
}

size_t LocationIndex::add_index(const uint8_t* data, size_t len, IdSet* known) {
  // First pass: validate the whole structure, so a malformed index adds nothing.
  if (len < PREFIX) throw std::invalid_argument("index too short");
  if (data[0] != INDEX_VERSION) throw std::invalid_argument("index version " + std::to_string(data[0]) + " is not supported");
  uint32_t npacks = le32(data + 1);
  size_t pos = PREFIX, total = 0;
  for (uint32_t p = 0; p < npacks; ++p) {
    if (len - pos < PACK) throw std::invalid_argument("index truncated");
    uint32_t count = le32(data + pos + 32);
    pos += PACK;
    if ((len - pos) / ENTRY < count) throw std::invalid_argument("index truncated");
    pos += size_t(count) * ENTRY;
    total += count;
  }
  if (pos != len) throw std::invalid_argument("index has trailing bytes");
  std::unique_lock<std::shared_mutex> l(mu_);
  size_t cap = keys_.size();
  while ((size_ + total) * 10 > cap * 7) cap *= 2;
  if (cap != keys_.size()) rehash(cap);
  pos = PREFIX;
  for (uint32_t p = 0; p < npacks; ++p) {
    uint32_t pack = pack_number_unlocked(data + pos);
    uint32_t count = le32(data + pos + 32);
    pos += PACK;
    for (uint32_t i = 0; i < count; ++i, pos += ENTRY) {
      const uint8_t* e = data + pos;
      BlobLocation loc;
      loc.pack = pack;
      loc.type = e[0];
      loc.offset = le32(e + 33);
      loc.length = le32(e + 37);
      loc.raw_length = le32(e + 41);
      add_unlocked(e + 1, loc);
    }
  }
  l.unlock();
  if (known) {
    known->reserve(known->size() + total);
    pos = PREFIX;
    for (uint32_t p = 0; p < npacks; ++p) {
      uint32_t count = le32(data + pos + 32);
      pos += PACK;
      for (uint32_t i = 0; i < count; ++i, pos += ENTRY) known->insert(data + pos + 1);
    }
  }
  return total;
}

bool LocationIndex::find(const uint8_t id[32], BlobLocation& out) const {
  std::shared_lock<std::shared_mutex> l(mu_);
  size_t mask = keys_.size() - 1;
  for (size_t j = slot_hash(id) & mask; used_[j]; j = (j + 1) & mask) {
    if (std::memcmp(keys_[j].data(), id, 32) == 0) {
      out = vals_[j];
      return true;
    }
  }
  return false;
}

ChunkId LocationIndex::pack_id(uint32_t pack) const {
  std::shared_lock<std::shared_mutex> l(mu_);
  if (pack >= packs_.size()) throw std::out_of_range("no such pack number");
  return packs_[pack];
}

size_t LocationIndex::size() const {
  std::shared_lock<std::shared_mutex> l(mu_);
  return size_;
}

void LocationIndex::for_each(
    const std::function<void(const ChunkId&, const ChunkId&, const BlobLocation&)>& fn) const {
  std::shared_lock<std::shared_mutex> l(mu_);
  for (size_t i = 0; i < keys_.size(); ++i)
    if (used_[i]) fn(keys_[i], packs_[vals_[i].pack], vals_[i]);
}

}  // namespace recovault
