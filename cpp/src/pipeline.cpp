#include "recovault/pipeline.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "recovault/blake3.hpp"
#include "recovault/crypto.hpp"
#include "recovault/io.hpp"

namespace recovault {
namespace {

using Buffer = std::vector<uint8_t>;

std::string errno_text(const char* what, int err) { return std::string(what) + ": " + std::strerror(err); }

// Opens a source file for reading without touching its atime where allowed (O_NOATIME needs ownership or
// CAP_FOWNER: EPERM otherwise, then a plain open). Returns -1 with errno set on failure.
int open_source(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  return fd;
}

// The zeros a hole stands for: one process-wide allocation that is never written, so its pages stay the
// kernel's shared zero page; as long as the largest chunk or block (64 MiB).
const uint8_t* zero_bytes() {
  static const uint8_t* const z = static_cast<const uint8_t*>(std::calloc(size_t(64) << 20, 1));
  if (!z) throw std::bad_alloc();
  return z;
}

bool same_time(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

// A stream reader over a path, a descriptor or a callback. For a regular file read whole it also notes
// whether the file changed while it was read, and (with `holes`) lets the caller skip the holes of a
// sparse file (SEEK_DATA/SEEK_HOLE) and chunk them as zeros without reading them.
class StreamReader {
 public:
  StreamReader(Source& s, const PipelineConfig& cfg, bool holes = false) : s_(s), after_read_(cfg.after_read) {
    if (s.kind == Source::PATH) {
      fd_ = open_source(s.path);
      if (fd_ < 0) throw std::runtime_error(errno_text("cannot open", errno));
      own_ = true;
    } else if (s.kind == Source::FD) {
      fd_ = s.fd;
    }
    if (fd_ < 0) return;
    struct stat st;
    if (::fstat(fd_, &st) == 0 && S_ISREG(st.st_mode)) {
      size_hint_ = static_cast<int64_t>(st.st_size);
      if (!s.ranged) watch(st, holes);
    }
    if (s.ranged) {
      ranged_ = true;
      pos_ = s.start;
      remaining_ = s.length >= 0 ? static_cast<uint64_t>(s.length) : UINT64_MAX - s.start;
      if (size_hint_ >= 0)
        size_hint_ = static_cast<int64_t>(std::min<uint64_t>(remaining_, static_cast<uint64_t>(size_hint_) > s.start
                                                                                ? static_cast<uint64_t>(size_hint_) - s.start
                                                                                : 0));
    }
    ::posix_fadvise(fd_, static_cast<off_t>(s.start), 0, POSIX_FADV_SEQUENTIAL);
  }
  ~StreamReader() {
    if (own_) ::close(fd_);
  }
  // Fills up to len bytes (loops over short reads). Returns 0 at EOF (or the end of the range).
  size_t read(uint8_t* buf, size_t len) {
    if (s_.kind == Source::READER) return s_.read(buf, len);
    if (ranged_) len = static_cast<size_t>(std::min<uint64_t>(len, remaining_));
    if (sparse_) len = static_cast<size_t>(std::min<uint64_t>(len, data_end_ > pos_ ? data_end_ - pos_ : 0));
    const bool at_pos = ranged_ || sparse_;
    size_t got = 0;
    while (got < len) {
      ssize_t n = at_pos ? ::pread(fd_, buf + got, len - got, static_cast<off_t>(pos_ + got))
                         : ::read(fd_, buf + got, len - got);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw std::runtime_error(errno_text("read error", errno));
      }
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    if (at_pos) pos_ += got;
    if (ranged_) remaining_ -= got;
    read_ += got;
    if (after_read_ && got) after_read_(s_.path, read_);
    return got;
  }
  // A sparse file: the length of the hole at the read position (0: data there, or the end of the file).
  // The caller chunks that many zeros and calls skip_hole(); the next read() stops where the data does.
  uint64_t hole_at() {
    if (!sparse_) return 0;
    off_t d = ::lseek(fd_, static_cast<off_t>(pos_), SEEK_DATA);
    if (d < 0) {
      if (errno != ENXIO) {  // SEEK_DATA not supported here: read everything, from where we are
        sparse_ = false;
        if (::lseek(fd_, static_cast<off_t>(pos_), SEEK_SET) < 0) throw std::runtime_error(errno_text("seek", errno));
        return 0;
      }
      struct stat st;  // ENXIO: a hole up to the end of the file, or the end itself
      data_end_ = pos_;
      if (::fstat(fd_, &st) != 0 || static_cast<uint64_t>(st.st_size) <= pos_) return 0;
      return static_cast<uint64_t>(st.st_size) - pos_;
    }
    if (static_cast<uint64_t>(d) > pos_) return static_cast<uint64_t>(d) - pos_;
    off_t e = ::lseek(fd_, static_cast<off_t>(pos_), SEEK_HOLE);
    data_end_ = e > d ? static_cast<uint64_t>(e) : UINT64_MAX;
    return 0;
  }
  void skip_hole(uint64_t n) {
    pos_ += n;
    read_ += n;
  }
  // A regular file read to its end: whether it changed meanwhile (size, mtime or ctime moved, or the bytes
  // read are not its size). Its chunks then hold neither the old nor the new content, only what was read.
  bool changed() const {
    if (!watched_) return false;
    struct stat st;
    if (::fstat(fd_, &st) != 0) return true;
    return st.st_size != before_.st_size || !same_time(st.st_mtim, before_.st_mtim) ||
           !same_time(st.st_ctim, before_.st_ctim) ||
           read_ != static_cast<uint64_t>(before_.st_size) - std::min<uint64_t>(start_, before_.st_size);
  }
  // Regular files: their size when opened (-1 otherwise).
  int64_t size_hint() const { return size_hint_ < 0 ? -1 : size_hint_; }

 private:
  void watch(const struct stat& st, bool holes) {
    watched_ = true;
    before_ = st;
    if (s_.kind == Source::FD) {  // read from the descriptor's position on
      off_t cur = ::lseek(fd_, 0, SEEK_CUR);
      start_ = cur > 0 ? static_cast<uint64_t>(cur) : 0;
    }
    // Fewer blocks than the size needs: it has holes. (pread from pos_ = 0: only for our own descriptor.)
    sparse_ = holes && own_ && static_cast<uint64_t>(st.st_blocks) * 512 < static_cast<uint64_t>(st.st_size);
  }

  Source& s_;
  const std::function<void(const std::string&, uint64_t)>& after_read_;
  int fd_ = -1;
  bool own_ = false;
  int64_t size_hint_ = -1;
  bool ranged_ = false, sparse_ = false, watched_ = false;
  uint64_t pos_ = 0, remaining_ = 0, data_end_ = UINT64_MAX, read_ = 0, start_ = 0;
  struct stat before_ {};
};

}  // namespace

void PipelineRun::chunk_id(const PipelineConfig& cfg, const uint8_t* data, size_t len, uint8_t out[32]) {
  if (cfg.id_algo == IdAlgo::Blake3Keyed)
    blake3::keyed_hash(cfg.id_key, data, len, out);
  else
    crypto::hmac_sha256(cfg.id_key, 32, data, len, out);
}

PipelineRun::PipelineRun(const PipelineConfig& cfg, std::shared_ptr<IdSet> known,
                         std::shared_ptr<SealSession> session, std::vector<Source> sources)
    : cfg_(cfg), known_(std::move(known)), session_(std::move(session)), sources_(std::move(sources)),
      state_(sources_.size()) {
  if (!known_ || !session_) throw std::invalid_argument("pipeline needs a known-ID set and a seal session");
  if (cfg_.fixed && (cfg_.block_size < 4096 || cfg_.block_size > (64u << 20)))
    throw std::invalid_argument("fixed block size must be between 4 KiB and 64 MiB");
  if (!cfg_.fixed) {
    Chunker probe(cfg_.chunker, GearTable{});  // validates the parameters
    gear_ = derive_gear_table(cfg_.gear_seed);
  }
  unsigned n = cfg_.workers ? cfg_.workers : std::thread::hardware_concurrency();
  if (n == 0) n = 1;
  size_t max_chunk = cfg_.fixed ? cfg_.block_size : cfg_.chunker.max_size;
  if (cfg_.max_in_flight < 2 * max_chunk + cfg_.read_size) cfg_.max_in_flight = 2 * max_chunk + cfg_.read_size;
  threads_.emplace_back([this] { produce(); });
  for (unsigned i = 0; i < n; ++i) threads_.emplace_back([this] { work(); });
}

PipelineRun::~PipelineRun() {
  cancel();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

void PipelineRun::cancel() {
  std::lock_guard<std::mutex> l(mu_);
  cancelled_ = true;
  cv_work_.notify_all();
  cv_done_.notify_all();
  cv_space_.notify_all();
}

void PipelineRun::fail(std::exception_ptr e) {
  std::lock_guard<std::mutex> l(mu_);
  if (!fatal_) fatal_ = e;
  cancelled_ = true;
  cv_work_.notify_all();
  cv_done_.notify_all();
  cv_space_.notify_all();
}

void PipelineRun::push_job(Job&& j) {
  std::unique_lock<std::mutex> l(mu_);
  cv_space_.wait(l, [&] { return cancelled_ || in_flight_ < cfg_.max_in_flight; });
  if (cancelled_) throw std::runtime_error("cancelled");
  j.seq = next_seq_++;
  in_flight_ += charge(j);
  queue_.push_back(std::move(j));
  cv_work_.notify_one();
}

void PipelineRun::push_end(uint32_t source, uint64_t size, std::string error, bool changed) {
  std::lock_guard<std::mutex> l(mu_);
  Event ev;
  ev.kind = Event::END;
  ev.source = source;
  ev.length = size;
  ev.error = std::move(error);
  ev.changed = changed;
  done_[next_seq_++].events.push_back(std::move(ev));
  cv_done_.notify_all();
}

void PipelineRun::produce() {
  try {
    for (uint32_t i = 0; i < sources_.size(); ++i) {
      {
        std::lock_guard<std::mutex> l(mu_);
        if (cancelled_) break;
      }
      produce_source(i, sources_[i]);
      sources_[i].keepalive.reset();  // drop our reference; jobs hold their own
    }
  } catch (...) {
    std::lock_guard<std::mutex> l(mu_);
    if (!cancelled_ && !fatal_) fatal_ = std::current_exception();
  }
  std::lock_guard<std::mutex> l(mu_);
  producer_done_ = true;
  cv_work_.notify_all();
  cv_done_.notify_all();
}

// Cuts one source into chunk jobs: content-defined cut points (or fixed blocks) over a sliding window of
// reads, holes chunked as zeros without reading them. The window is shared with the jobs cut from it, which
// keep it alive until their workers are done.
class PipelineRun::Cutter {
 public:
  Cutter(PipelineRun& run, uint32_t index) : run_(run), index_(index), fixed_(run.cfg_.block_size) {
    if (!run.cfg_.fixed) chunker_.reset(new Chunker(run.cfg_.chunker, run.gear_));
  }
  uint64_t total() const { return total_; }

  // A source already in memory: cut in place.
  void buffer(const Source& src) {
    scan(src.data, src.len, src.keepalive);
    if (pos_ > start_) emit(src.data + start_, pos_ - start_, src.keepalive);
  }

  // A file, descriptor or stream: read in windows; returns whether the file changed while it was read.
  bool stream(Source& src) {
    const PipelineConfig& cfg = run_.cfg_;
    StreamReader reader(src, cfg, !cfg.fixed);
    // Window size: whole small files in one read (size + 1 to see EOF), big streams in read_size pieces
    // plus room for one pending chunk carried over.
    size_t cap = cfg.read_size + max_chunk();
    int64_t hint = reader.size_hint();
    if (hint >= 0 && static_cast<uint64_t>(hint) + 1 < cap) cap = static_cast<size_t>(hint) + 1;
    buf_ = std::make_shared<Buffer>(cap);
    for (;;) {
      if (uint64_t h = reader.hole_at()) {
        hole(h);
        reader.skip_hole(h);
        continue;
      }
      make_room(1);
      size_t n = reader.read(buf_->data() + filled_, std::min(buf_->size() - filled_, cfg.read_size));
      if (n == 0) break;
      filled_ += n;
      scan(buf_->data(), filled_, buf_);
    }
    if (pos_ > start_) emit(buf_->data() + start_, pos_ - start_, buf_);
    return reader.changed();
  }

 private:
  PipelineRun& run_;
  const uint32_t index_;
  const size_t fixed_;
  std::unique_ptr<Chunker> chunker_;
  uint64_t total_ = 0;        // bytes cut into jobs so far
  uint64_t pending_len_ = 0;  // fixed mode: bytes of the current block seen so far
  std::shared_ptr<Buffer> buf_;
  size_t filled_ = 0, start_ = 0, pos_ = 0;  // window: bytes in it, start of the pending chunk, scanned up to

  size_t max_chunk() const { return run_.cfg_.fixed ? fixed_ : run_.cfg_.chunker.max_size; }

  Job job(size_t len) {
    Job j{};
    j.source = index_;
    j.offset = total_;
    j.len = len;
    j.counter = run_.session_->reserve(1);
    total_ += len;
    return j;
  }
  void emit(const uint8_t* p, size_t len, std::shared_ptr<void> keep) {
    Job j = job(len);
    j.data = p;
    j.keep = std::move(keep);
    run_.push_job(std::move(j));
  }
  void emit_zeros(uint64_t len) {  // a chunk inside a hole: nothing in memory
    Job j = job(static_cast<size_t>(len));
    j.zeros = true;
    run_.push_job(std::move(j));
  }

  // Scans base[pos..end) for cut points, emitting whole chunks that start at start_.
  void scan(const uint8_t* base, size_t end, const std::shared_ptr<void>& keep) {
    while (pos_ < end) {
      size_t n;
      bool cut;
      if (chunker_) {
        n = chunker_->next(base + pos_, end - pos_, &cut);
      } else {
        n = std::min(fixed_ - pending_len_, end - pos_);
        pending_len_ += n;
        cut = pending_len_ == fixed_;
        if (cut) pending_len_ = 0;
      }
      pos_ += n;
      if (cut) {
        emit(base + start_, pos_ - start_, keep);
        start_ = pos_;
      }
    }
  }

  // Room for `need` more bytes: else the pending tail (< max_chunk) moves into a fresh window; chunks
  // already emitted keep the old one alive.
  void make_room(size_t need) {
    if (buf_->size() - filled_ >= need) return;
    size_t ncap = std::max({run_.cfg_.read_size + max_chunk(), (filled_ - start_) * 2, filled_ - start_ + need});
    auto nbuf = std::make_shared<Buffer>(ncap);
    std::memcpy(nbuf->data(), buf_->data() + start_, filled_ - start_);
    filled_ -= start_;
    pos_ -= start_;
    start_ = 0;
    buf_ = std::move(nbuf);
  }

  // A hole of n bytes, chunked as zeros without reading them (the same cut points and chunks as reading
  // its zeros would give). Zeros that share a chunk with data go into the window; chunks of zeros only
  // are emitted without any memory.
  void hole(uint64_t n) {
    while (n > 0) {
      const bool fresh = chunker_->pending() == 0;
      bool cut;
      const uint64_t k = chunker_->next_zeros(n, &cut);  // <= max_chunk unless a whole chunk of zeros
      n -= k;
      if (fresh && cut) {
        emit_zeros(k);
        continue;
      }
      make_room(static_cast<size_t>(k));
      std::memset(buf_->data() + filled_, 0, static_cast<size_t>(k));
      filled_ += static_cast<size_t>(k);
      pos_ = filled_;
      if (cut) {
        emit(buf_->data() + start_, pos_ - start_, buf_);
        start_ = pos_;
      }
    }
  }
};

void PipelineRun::produce_source(uint32_t index, Source& src) {
  if (cfg_.fixed && src.ranged && src.length >= 0 && (src.kind == Source::PATH || src.kind == Source::FD)) {
    produce_read_jobs(index, src);
    return;
  }
  Cutter cutter(*this, index);
  try {
    if (src.kind == Source::BUFFER) {
      cutter.buffer(src);
      push_end(index, cutter.total(), "");
      return;
    }
    if (src.kind == Source::PATH && !src.ranged && !cfg_.fixed && src.size_hint >= 0 &&
        static_cast<uint64_t>(src.size_hint) < cfg_.chunker.min_size) {
      Job j;  // a small file: a worker reads and chunks it whole (many are read in parallel)
      j.source = index;
      j.path = &src.path;
      j.len = static_cast<size_t>(src.size_hint) + 1;
      j.counter = session_->reserve(1);
      push_job(std::move(j));
      return;
    }
    const bool changed = cutter.stream(src);
    push_end(index, cutter.total(), "", changed);
  } catch (const std::exception& e) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (cancelled_) throw;
    }
    push_end(index, cutter.total(), e.what());
  }
}

// Fixed blocks of a ranged source (disk images): the producer only plans reads of read_job_size bytes and
// asks the kernel to read ahead; the workers pread and hash in parallel. On a warm page cache this halves
// the cost of an unchanged block (one copy into a cache-resident buffer, hashed there), and a cold device
// sees several requests in flight.
void PipelineRun::produce_read_jobs(uint32_t index, Source& src) {
  std::shared_ptr<int> holder;  // PATH: our own descriptor, closed when the last job holding it is done
  int fd = src.fd;
  if (src.kind == Source::PATH) {
    fd = open_source(src.path);
    if (fd < 0) {
      push_end(index, 0, errno_text("cannot open", errno));
      return;
    }
    holder = std::shared_ptr<int>(new int(fd), [](int* p) {
      ::close(*p);
      delete p;
    });
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    state_[index].deferred = true;
  }
  const uint64_t fixed = cfg_.block_size;
  const uint64_t length = static_cast<uint64_t>(src.length);
  const uint64_t job = std::max<uint64_t>(fixed, cfg_.read_job_size / fixed * fixed);
  constexpr uint64_t AHEAD = 32u << 20;
  uint64_t advised = 0;
  for (uint64_t off = 0; off < length; off += job) {
    if (off >= advised) {
      uint64_t n = std::min(length - off, AHEAD);
      ::posix_fadvise(fd, static_cast<off_t>(src.start + off), static_cast<off_t>(n), POSIX_FADV_WILLNEED);
      advised = off + n;
    }
    Job j{};
    j.source = index;
    j.offset = off;
    j.len = static_cast<size_t>(std::min(job, length - off));
    j.fd = fd;
    j.file_off = src.start + off;
    j.keep = holder;
    j.counter = session_->reserve((j.len + fixed - 1) / fixed);
    push_job(std::move(j));
  }
  push_end(index, length, "");  // length and error are filled in from state_ when it is emitted
}

void PipelineRun::read_blocks(const Job& j, std::vector<Event>& out) {
  thread_local Buffer buf;
  if (buf.size() < j.len) buf.resize(j.len);
  // Short only if the file shrank since the job was planned: the source's END then says how much was read.
  ssize_t n = io::pread_full(j.fd, buf.data(), j.len, j.file_off);
  std::string error = n < 0 ? errno_text("read error", errno) : std::string();
  size_t got = n < 0 ? 0 : static_cast<size_t>(n);
  if (error.empty()) {
    const size_t fixed = cfg_.block_size;
    for (size_t p = 0, i = 0; p < got; p += fixed, ++i)
      out.push_back(chunk_event(j.source, j.offset + p, buf.data() + p, std::min(fixed, got - p), j.counter + i));
  }
  std::lock_guard<std::mutex> l(mu_);
  SourceState& st = state_[j.source];
  if (error.empty())
    st.read += got;
  else if (st.error.empty())
    st.error = std::move(error);
}

// zeros: the chunk is len zero bytes of a hole (data is null).
Event PipelineRun::chunk_event(uint32_t source, uint64_t offset, const uint8_t* data, size_t len,
                              uint64_t counter, bool zeros) const {
  Event ev;
  ev.kind = Event::CHUNK;
  ev.source = source;
  ev.offset = offset;
  ev.length = len;
  ev.counter = counter;
  if (cfg_.fixed && is_all_zero(data, len)) {
    ev.kind = Event::ZERO;
    return ev;
  }
  if (zeros || is_all_zero(data, len)) {  // one hash per length and run; sealed by next() if new
    ev.zeros = true;
    ev.id = zero_id(len);
    return ev;
  }
  chunk_id(cfg_, data, len, ev.id.data());
  if (!known_->contains(ev.id.data()))
    session_->seal(ev.id.data(), 32, data, len, cfg_.level, cfg_.compress, counter, ev.sealed);
  return ev;
}

// A whole small file, read by a worker. Normally one chunk; if the file grew past min_size since the
// caller looked, it is chunked here like any stream (its extra chunks take fresh nonce counters).
void PipelineRun::small_file(const Job& j, std::vector<Event>& out) const {
  Event end;
  end.kind = Event::END;
  end.source = j.source;
  thread_local Buffer buf;
  size_t len = 0;
  try {
    Source s;
    s.kind = Source::PATH;
    s.path = *j.path;
    StreamReader reader(s, cfg_);
    if (buf.size() < j.len + 1) buf.resize(j.len + 1);
    for (;;) {
      if (len == buf.size()) buf.resize(buf.size() * 2);
      size_t n = reader.read(buf.data() + len, buf.size() - len);
      if (n == 0) break;
      len += n;
    }
    end.changed = reader.changed();
  } catch (const std::exception& e) {
    end.error = e.what();
    out.push_back(std::move(end));
    return;
  }
  if (len > 0 && len < cfg_.chunker.min_size) {
    out.push_back(chunk_event(j.source, 0, buf.data(), len, j.counter));
  } else if (len > 0) {
    Chunker c(cfg_.chunker, gear_);
    size_t start = 0, pos = 0;
    bool first = true;
    while (pos < len) {
      bool cut;
      pos += c.next(buf.data() + pos, len - pos, &cut);
      if (cut || pos == len) {
        uint64_t counter = first ? j.counter : session_->reserve(1);
        first = false;
        out.push_back(chunk_event(j.source, start, buf.data() + start, pos - start, counter));
        start = pos;
      }
    }
  }
  if (buf.size() > (size_t(4) << 20)) Buffer().swap(buf);  // don't keep a grown buffer per thread
  end.length = len;
  out.push_back(std::move(end));
}

ChunkId PipelineRun::zero_id(size_t len) const {
  {
    std::lock_guard<std::mutex> l(zero_mu_);
    auto it = zero_ids_.find(len);
    if (it != zero_ids_.end()) return it->second;
  }
  ChunkId id;
  chunk_id(cfg_, zero_bytes(), len, id.data());
  std::lock_guard<std::mutex> l(zero_mu_);
  if (zero_ids_.size() < 1024) zero_ids_.emplace(len, id);  // zero chunks have few lengths: bounded anyway
  return id;
}

void PipelineRun::work() {
  try {
    for (;;) {
      Job j;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_work_.wait(l, [&] { return cancelled_ || !queue_.empty() || producer_done_; });
        if (cancelled_ || queue_.empty()) return;
        j = std::move(queue_.front());
        queue_.pop_front();
      }
      Done d;
      d.charge = charge(j);
      if (j.path)
        small_file(j, d.events);
      else if (j.fd >= 0)
        read_blocks(j, d.events);
      else
        d.events.push_back(chunk_event(j.source, j.offset, j.data, j.len, j.counter, j.zeros));
      j.keep.reset();
      std::lock_guard<std::mutex> l(mu_);
      done_.emplace(j.seq, std::move(d));
      cv_done_.notify_all();
    }
  } catch (...) {
    fail(std::current_exception());
  }
}

bool PipelineRun::next(std::vector<Event>& out, size_t max_events) {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    if (fatal_) std::rethrow_exception(fatal_);
    if (cancelled_) return false;
    if (!done_.empty() && done_.begin()->first == next_emit_) break;
    if (producer_done_ && next_emit_ == next_seq_) return false;
    cv_done_.wait(l);
  }
  size_t n = 0;
  while (n < max_events && !done_.empty() && done_.begin()->first == next_emit_) {
    auto node = done_.extract(done_.begin());
    Done& d = node.mapped();
    ++next_emit_;
    for (Event& ev : d.events) {
      if (ev.kind == Event::END && state_[ev.source].deferred) {
        ev.length = state_[ev.source].read;
        ev.error = state_[ev.source].error;
      }
    }
    in_flight_ -= d.charge;
    l.unlock();
    for (Event& ev : d.events) {
      if (ev.kind == Event::CHUNK) {
        ev.is_new = known_->insert(ev.id.data());
        if (!ev.is_new) {
          std::vector<uint8_t>().swap(ev.sealed);
        } else if (ev.zeros) {  // sealed here, once, rather than by every worker that met it meanwhile
          session_->seal(ev.id.data(), 32, zero_bytes(), ev.length, cfg_.level, cfg_.compress, ev.counter,
                         ev.sealed);
        } else if (ev.sealed.empty()) {
          throw std::logic_error("the known-ID set lost IDs during a pipeline run (cleared by the caller?)");
        }
      }
      out.push_back(std::move(ev));
      ++n;
    }
    l.lock();
  }
  cv_space_.notify_all();
  return true;
}

}  // namespace recovault
