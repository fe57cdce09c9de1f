#include "recovault/idset.hpp"

#include <cstring>
#include <mutex>

namespace recovault {
namespace {

bool is_zero(const uint8_t* id) {
  static const uint8_t z[32] = {0};
  return std::memcmp(id, z, 32) == 0;
}
uint64_t slot_hash(const uint8_t* id) {
  uint64_t h;
  std::memcpy(&h, id, 8);
  return h;
}

}  // namespace

bool IdSet::contains(const uint8_t* id) const {
  std::shared_lock lock(mu_);
  if (is_zero(id)) return has_zero_;
  size_t mask = slots_.size() - 1;
  for (size_t i = slot_hash(id) & mask;; i = (i + 1) & mask) {
    const ChunkId& s = slots_[i];
    if (is_zero(s.data())) return false;
    if (std::memcmp(s.data(), id, 32) == 0) return true;
  }
}

bool IdSet::insert_unlocked(const uint8_t* id) {
  if (is_zero(id)) {
    bool was = has_zero_;
    has_zero_ = true;
    if (!was) ++size_;
    return !was;
  }
  if ((size_ + 1) * 4 > slots_.size() * 3) rehash(slots_.size() * 2);
  size_t mask = slots_.size() - 1;
  for (size_t i = slot_hash(id) & mask;; i = (i + 1) & mask) {
    ChunkId& s = slots_[i];
    if (is_zero(s.data())) {
      std::memcpy(s.data(), id, 32);
      ++size_;
      return true;
    }
    if (std::memcmp(s.data(), id, 32) == 0) return false;
  }
}

bool IdSet::insert(const uint8_t* id) {
  std::unique_lock lock(mu_);
  return insert_unlocked(id);
}

// Linear probing without tombstones: after emptying a slot, later members of its probe run are shifted
// back into the hole when their home slot does not lie (cyclically) between the hole and themselves.
bool IdSet::erase_unlocked(const uint8_t* id) {
  if (is_zero(id)) {
    bool was = has_zero_;
    has_zero_ = false;
    if (was) --size_;
    return was;
  }
  size_t mask = slots_.size() - 1;
  size_t i = slot_hash(id) & mask;
  for (;; i = (i + 1) & mask) {
    if (is_zero(slots_[i].data())) return false;
    if (std::memcmp(slots_[i].data(), id, 32) == 0) break;
  }
  size_t hole = i;
  for (size_t j = (hole + 1) & mask; !is_zero(slots_[j].data()); j = (j + 1) & mask) {
    size_t home = slot_hash(slots_[j].data()) & mask;
    // j's entry may move into the hole unless its home lies in (hole, j] (cyclically).
    bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (!stays) {
      slots_[hole] = slots_[j];
      hole = j;
    }
  }
  slots_[hole] = ChunkId{};
  --size_;
  return true;
}

bool IdSet::erase(const uint8_t* id) {
  std::unique_lock lock(mu_);
  return erase_unlocked(id);
}

size_t IdSet::size() const {
  std::shared_lock lock(mu_);
  return size_;
}

void IdSet::reserve(size_t n) {
  std::unique_lock lock(mu_);
  size_t cap = slots_.size();
  while (n * 4 > cap * 3) cap *= 2;
  if (cap != slots_.size()) rehash(cap);
}

void IdSet::clear() {
  std::unique_lock lock(mu_);
  size_ = 0;
  has_zero_ = false;
  slots_.assign(1024, ChunkId{});
}

void IdSet::rehash(size_t cap) {
  std::vector<ChunkId> old;
  old.swap(slots_);
  slots_.assign(cap, ChunkId{});
  size_t mask = cap - 1;
  for (const ChunkId& s : old) {
    if (is_zero(s.data())) continue;
    for (size_t i = slot_hash(s.data()) & mask;; i = (i + 1) & mask) {
      if (is_zero(slots_[i].data())) {
        slots_[i] = s;
        break;
      }
    }
  }
}

std::vector<uint8_t> IdSet::dump() const {
  std::shared_lock lock(mu_);
  std::vector<uint8_t> out;
  out.reserve(size_ * 32);
  if (has_zero_) out.insert(out.end(), 32, 0);
  for (const ChunkId& s : slots_)
    if (!is_zero(s.data())) out.insert(out.end(), s.begin(), s.end());
  return out;
}

}  // namespace recovault
