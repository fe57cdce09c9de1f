#include "recovault/restore.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <numeric>
#include <stdexcept>
#include <thread>

#include "recovault/blob.hpp"
#include "recovault/chunker.hpp"
#include "recovault/compress.hpp"
#include "recovault/crypto.hpp"
#include "recovault/io.hpp"

namespace recovault {
namespace {

constexpr size_t SPARSE_BLOCK = 4096;  // as fsmeta.SPARSE_BLOCK
constexpr size_t ZEROS_LEN = size_t(256) << 10;
const uint8_t kZeros[ZEROS_LEN] = {};

// A failure of one item, thrown inside a worker and turned into the result.
struct ItemFailure {
  RestoreFailure kind;
  int error;
  std::string detail;
};

[[noreturn]] void fail_errno(RestoreFailure kind, int err) { throw ItemFailure{kind, err, std::strerror(err)}; }

// pwrite all of [p, p + n) at off (a pwrite may write less; EINTR is retried).
void pwrite_all(int fd, const uint8_t* p, size_t n, uint64_t off) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      fail_errno(RestoreFailure::WRITE, errno);
    }
    if (w == 0) fail_errno(RestoreFailure::WRITE, EIO);  // no progress and no error: don't spin
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
}

// fsmeta.write_sparse: skip the all-zero 4 KiB blocks aligned to the destination offset (they stay holes
// in a destination that reads as zeros), write everything else, partial blocks at either end included.
void write_sparse(int fd, const uint8_t* p, size_t n, uint64_t off) {
  size_t pending = 0;  // start of the not-yet-written run
  size_t i = static_cast<size_t>((SPARSE_BLOCK - off % SPARSE_BLOCK) % SPARSE_BLOCK);
  for (; i + SPARSE_BLOCK <= n; i += SPARSE_BLOCK) {
    if (is_all_zero(p + i, SPARSE_BLOCK)) {
      if (pending < i) pwrite_all(fd, p + pending, i - pending, off + pending);
      pending = i + SPARSE_BLOCK;
    }
  }
  if (pending < n) pwrite_all(fd, p + pending, n - pending, off + pending);
}

void write_zeros(int fd, uint64_t n, uint64_t off) {
  while (n > 0) {
    size_t k = static_cast<size_t>(std::min<uint64_t>(n, ZEROS_LEN));
    pwrite_all(fd, kZeros, k, off);
    n -= k;
    off += k;
  }
}

// Pack descriptors for the call: opened on first use (O_RDONLY | O_CLOEXEC), shared by the workers, kept
// open while in use; past max_open, the least recently used idle one is closed first.
class PackFiles {
 public:
  PackFiles(const std::vector<std::string>& paths, size_t max_open)
      : paths_(paths), slots_(paths.size()), max_open_(std::max<size_t>(max_open, 1)) {}
  ~PackFiles() {
    for (Slot& s : slots_)
      if (s.fd >= 0) ::close(s.fd);
  }
  PackFiles(const PackFiles&) = delete;
  PackFiles& operator=(const PackFiles&) = delete;

  // The pack's descriptor, or -errno.
  int acquire(uint32_t i) {
    std::lock_guard<std::mutex> g(mu_);
    Slot& s = slots_[i];
    if (s.fd < 0) {
      while (open_ >= max_open_ && !idle_.empty()) {
        Slot& old = slots_[idle_.front()];
        idle_.pop_front();
        old.idle = false;
        ::close(old.fd);
        old.fd = -1;
        --open_;
      }
      int fd;
      do {
        fd = ::open(paths_[i].c_str(), O_RDONLY | O_CLOEXEC);
      } while (fd < 0 && errno == EINTR);
      if (fd < 0) return -errno;
      s.fd = fd;
      ++open_;
    } else if (s.idle) {
      idle_.erase(s.pos);
      s.idle = false;
    }
    ++s.users;
    return s.fd;
  }
  void release(uint32_t i) {
    std::lock_guard<std::mutex> g(mu_);
    Slot& s = slots_[i];
    if (--s.users == 0) {
      s.pos = idle_.insert(idle_.end(), i);
      s.idle = true;
    }
  }

 private:
  struct Slot {
    int fd = -1;
    unsigned users = 0;
    bool idle = false;
    std::list<uint32_t>::iterator pos;
  };
  const std::vector<std::string>& paths_;
  std::vector<Slot> slots_;
  std::list<uint32_t> idle_;  // open, unused descriptors, least recently used first
  size_t open_ = 0;
  size_t max_open_;
  std::mutex mu_;
};

// A growable buffer that is never zero-filled.
struct Buffer {
  std::unique_ptr<uint8_t[]> p;
  size_t cap = 0;
  uint8_t* get(size_t n) {
    if (n > cap) {
      p.reset(new uint8_t[n]);
      cap = n;
    }
    return p.get();
  }
};

struct LengthMismatch {
  size_t got;
};

class Engine {
 public:
  Engine(const uint8_t key[32], int fd, const std::vector<std::string>& packs, const std::vector<RestoreItem>& items,
         const RestoreOptions& opt)
      : fd_(fd), items_(items), opt_(opt), packs_(packs, opt.max_open_packs) {
    std::memcpy(key_, key, 32);
    if (opt.by_pack) {
      order_.resize(items.size());
      std::iota(order_.begin(), order_.end(), size_t(0));
      std::stable_sort(order_.begin(), order_.end(), [&](size_t a, size_t b) {
        const RestoreItem &x = items[a], &y = items[b];
        return x.pack != y.pack ? x.pack < y.pack : x.pack_offset < y.pack_offset;
      });
    }
  }
  ~Engine() {
    volatile uint8_t* k = key_;
    for (size_t i = 0; i < sizeof(key_); ++i) k[i] = 0;
    for (auto& kv : keys_) {
      if (!kv.second) continue;
      volatile uint8_t* s = kv.second->data();
      for (size_t i = 0; i < 32; ++i) s[i] = 0;
    }
  }

  RestoreResult run() {
    unsigned n = opt_.workers ? opt_.workers : std::max(1u, std::thread::hardware_concurrency());
    size_t run_items = std::max<size_t>(opt_.run_items, 1);
    size_t runs = (items_.size() + run_items - 1) / run_items;
    n = static_cast<unsigned>(std::max<size_t>(1, std::min<size_t>(n, runs)));
    std::vector<std::thread> threads;
    running_ = n;
    try {
      for (unsigned i = 0; i < n; ++i) threads.emplace_back([this] { work(); });
    } catch (const std::exception& e) {  // could not start a thread: stop the ones that did
      fail(SIZE_MAX, RestoreFailure::INTERNAL, 0, std::string("cannot start a restore thread: ") + e.what());
      std::lock_guard<std::mutex> g(mu_);
      running_ -= n - static_cast<unsigned>(threads.size());
    }
    if (opt_.progress) {
      std::unique_lock<std::mutex> lk(mu_);
      while (running_ > 0) {
        if (cv_.wait_for(lk, std::chrono::milliseconds(std::max(1u, opt_.progress_ms)),
                         [this] { return running_ == 0; }))
          break;
        lk.unlock();
        bool go = true;
        try {
          go = opt_.progress(data_bytes_.load() + zero_bytes_.load());
        } catch (...) {
          go = false;
        }
        if (!go) fail(SIZE_MAX, RestoreFailure::CANCELLED, 0, "cancelled");
        lk.lock();
      }
    }
    for (std::thread& t : threads) t.join();
    RestoreResult r;
    {
      std::lock_guard<std::mutex> g(mu_);
      r = result_;
    }
    r.data_bytes = data_bytes_.load();
    r.zero_bytes = zero_bytes_.load();
    r.items_done = items_done_.load();
    return r;
  }

 private:
  uint8_t key_[32];
  int fd_;
  const std::vector<RestoreItem>& items_;
  const RestoreOptions& opt_;
  PackFiles packs_;
  std::vector<size_t> order_;  // by_pack: the order items are handed out; else the given order
  std::atomic<size_t> next_{0};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> data_bytes_{0}, zero_bytes_{0}, items_done_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::mutex keys_mu_;
  std::map<std::array<uint8_t, 16>, std::unique_ptr<std::array<uint8_t, 32>>> keys_;  // salt -> key or null

  // The data key of the blob's session (its salt, bytes 2..17), or nullptr for the default key. The map's
  // entries are never erased, so a pointer stays valid for the engine's life.
  const uint8_t* session_key(const uint8_t* blob, size_t len) {
    if (!opt_.session_key || len < 18) return nullptr;
    std::array<uint8_t, 16> salt;
    std::memcpy(salt.data(), blob + 2, 16);
    std::lock_guard<std::mutex> g(keys_mu_);
    auto found = keys_.find(salt);
    if (found == keys_.end()) {
      auto key = std::make_unique<std::array<uint8_t, 32>>();
      if (!opt_.session_key(salt.data(), key->data())) key.reset();
      found = keys_.emplace(salt, std::move(key)).first;
    }
    return found->second ? found->second->data() : nullptr;
  }
  unsigned running_ = 0;
  RestoreResult result_;

  void fail(size_t item, RestoreFailure kind, int err, std::string detail) {
    std::lock_guard<std::mutex> g(mu_);
    stop_.store(true);
    if (result_.failure != RestoreFailure::NONE) return;  // the first failure is the one reported
    result_.failure = kind;
    result_.item = item;
    result_.error = err;
    result_.detail = std::move(detail);
  }

  void work() {
    Buffer sealed, plain;
    size_t run_items = std::max<size_t>(opt_.run_items, 1);
    size_t total = items_.size();
    while (!stop_.load(std::memory_order_relaxed)) {
      size_t first = next_.fetch_add(run_items);
      if (first >= total) break;
      size_t last = std::min(total, first + run_items);
      for (size_t k = first; k < last && !stop_.load(std::memory_order_relaxed); ++k) {
        size_t idx = order_.empty() ? k : order_[k];
        try {
          one(items_[idx], sealed, plain);
          items_done_.fetch_add(1, std::memory_order_relaxed);
        } catch (const ItemFailure& f) {
          fail(idx, f.kind, f.error, f.detail);
        } catch (const LengthMismatch& m) {
          fail(idx, RestoreFailure::LENGTH, 0,
               "plaintext is " + std::to_string(m.got) + " bytes, the index says " +
                   std::to_string(items_[idx].plain_len));
        } catch (const crypto::AuthenticationError& e) {
          fail(idx, RestoreFailure::AUTH, 0, e.what());
        } catch (const compress::DecompressError& e) {
          fail(idx, RestoreFailure::CORRUPT, 0, e.what());
        } catch (const std::invalid_argument& e) {  // an authentic blob of a version or codec not read here
          fail(idx, RestoreFailure::AUTH, 0, e.what());
        } catch (const std::bad_alloc&) {
          fail(idx, RestoreFailure::INTERNAL, ENOMEM, "out of memory");
        } catch (const std::exception& e) {
          fail(idx, RestoreFailure::INTERNAL, 0, e.what());
        }
      }
    }
    std::lock_guard<std::mutex> g(mu_);
    if (--running_ == 0) cv_.notify_all();
  }

  void one(const RestoreItem& it, Buffer& sealed, Buffer& plain) {
    if (it.pack == RestoreItem::ZEROS) {
      if (!opt_.sparse) write_zeros(fd_, it.length, it.dest_offset);
      zero_bytes_.fetch_add(it.length, std::memory_order_relaxed);
      return;
    }
    uint8_t* buf = sealed.get(std::max<size_t>(it.sealed_len, 1));
    int pfd = packs_.acquire(it.pack);
    if (pfd < 0) {
      int err = -pfd;
      fail_errno(err == ENOENT || err == ENOTDIR ? RestoreFailure::PACK_MISSING : RestoreFailure::READ, err);
    }
    ssize_t r = io::pread_full(pfd, buf, it.sealed_len, it.pack_offset);
    int err = r < 0 ? errno : 0;
    packs_.release(it.pack);
    if (err) fail_errno(RestoreFailure::READ, err);
    size_t got = static_cast<size_t>(r);
    if (got < it.sealed_len)  // the pack ends before the blob does
      throw ItemFailure{RestoreFailure::TRUNCATED, 0,
                        "the pack ends " + std::to_string(it.sealed_len - got) + " bytes before the blob does"};
    // No size limit is needed: alloc refuses any length but the recorded one before memory is allocated.
    uint8_t* out = nullptr;
    auto alloc = [&](size_t n) {
      if (n != it.plain_len) throw LengthMismatch{n};
      out = plain.get(std::max<size_t>(n, 1));
      return out;
    };
    const uint8_t* session = session_key(buf, it.sealed_len);
    if (session == nullptr) {
      open_blob_into(key_, it.id, 32, buf, it.sealed_len, SIZE_MAX, alloc);
    } else {
      try {
        open_blob_into(session, it.id, 32, buf, it.sealed_len, SIZE_MAX, alloc);
      } catch (const crypto::AuthenticationError&) {
        open_blob_into(key_, it.id, 32, buf, it.sealed_len, SIZE_MAX, alloc);
      }
    }
    const uint8_t* p = out + it.skip;
    if (opt_.sparse)
      write_sparse(fd_, p, static_cast<size_t>(it.length), it.dest_offset);
    else
      pwrite_all(fd_, p, static_cast<size_t>(it.length), it.dest_offset);
    data_bytes_.fetch_add(it.length, std::memory_order_relaxed);
  }
};

}  // namespace

const char* restore_failure_name(RestoreFailure f) {
  switch (f) {
    case RestoreFailure::NONE: return "none";
    case RestoreFailure::AUTH: return "auth";
    case RestoreFailure::CORRUPT: return "corrupt";
    case RestoreFailure::LENGTH: return "length";
    case RestoreFailure::TRUNCATED: return "truncated";
    case RestoreFailure::PACK_MISSING: return "pack_missing";
    case RestoreFailure::READ: return "read";
    case RestoreFailure::WRITE: return "write";
    case RestoreFailure::CANCELLED: return "cancelled";
    case RestoreFailure::INTERNAL: return "internal";
  }
  return "internal";
}

RestoreResult restore_blobs(const uint8_t enc_key[32], int dest_fd, const std::vector<std::string>& packs,
                            const std::vector<RestoreItem>& items, const RestoreOptions& opt) {
  for (size_t i = 0; i < items.size(); ++i) {
    const RestoreItem& it = items[i];
    if (it.pack != RestoreItem::ZEROS) {
      if (it.pack >= packs.size())
        throw std::invalid_argument("restore item " + std::to_string(i) + ": pack index out of range");
      if (it.skip > it.plain_len || it.length > it.plain_len - it.skip)
        throw std::invalid_argument("restore item " + std::to_string(i) + ": skip + length exceeds the blob");
    }
  }
  RestoreResult r;
  if (items.empty()) return r;
  Engine e(enc_key, dest_fd, packs, items, opt);
  return e.run();
}

}  // namespace recovault
