// The parallel backup pipeline: sources (paths, descriptors, reader callbacks, memory buffers) are read
// and chunked by one producer thread; chunk hashing and compress+seal run on N worker threads; events
// come out in a deterministic order (source by source, chunk by chunk), whatever the worker count.
//
// Duplicate data costs only chunking and hashing: a worker seals a chunk only if its ID is not in the
// `known` set. The emitter (the caller of next()) is the single authority that decides "new": the first
// emitted occurrence of an ID is new and is inserted into `known`; later ones are not. The caller must
// therefore store every new sealed blob it receives.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "recovault/blob.hpp"
#include "recovault/chunker.hpp"
#include "recovault/idset.hpp"

namespace recovault {

enum class IdAlgo { Blake3Keyed, HmacSha256 };

struct PipelineConfig {
  ChunkerParams chunker;
  bool fixed = false;               // fixed-size blocks instead of content-defined chunks
  uint32_t block_size = 1 << 20;    // fixed mode block size
  IdAlgo id_algo = IdAlgo::Blake3Keyed;
  uint8_t id_key[32] = {0};
  uint8_t gear_seed[32] = {0};
  int level = 3;                    // zstd level
  compress::Mode compress = compress::Mode::Auto;
  unsigned workers = 0;             // 0 = hardware concurrency
  size_t max_in_flight = 256u << 20;  // bytes read but not yet emitted
  size_t read_size = 8u << 20;        // read() size for large streams
  size_t read_job_size = 1u << 20;    // fixed mode, ranged sources: bytes one worker preads at a time
  // Called after every read of a file source (path or descriptor) with the bytes read so far: a test hook,
  // so that a test can change a file at a chosen point of its reading. Runs on the reading thread.
  std::function<void(const std::string& path, uint64_t bytes_read)> after_read;
};

// Reads up to len bytes into buf; returns the count, 0 at end of stream. Throws std::runtime_error.
using ReadFn = std::function<size_t(uint8_t* buf, size_t len)>;

struct Source {
  enum Kind { PATH, FD, READER, BUFFER } kind = PATH;
  std::string path;
  int fd = -1;       // FD: read from here, not closed
  ReadFn read;
  const uint8_t* data = nullptr;  // BUFFER: zero-copy view, kept alive by `keepalive`
  size_t len = 0;
  std::shared_ptr<void> keepalive;
  // PATH/FD: read only [start, start + length) with pread (length < 0: to the end). Event offsets are
  // relative to `start`. Used for the data extents of sparse disk images.
  bool ranged = false;
  // PATH: the size the caller saw (-1: unknown). A file smaller than the chunker's min_size is one chunk,
  // so a worker reads it whole: small files are then opened and read in parallel.
  int64_t size_hint = -1;
  uint64_t start = 0;
  int64_t length = -1;
};

struct Event {
  enum Kind : uint8_t { CHUNK = 0, ZERO = 1, END = 2 };
  Kind kind = CHUNK;
  uint32_t source = 0;
  uint64_t offset = 0;  // CHUNK/ZERO: where the chunk starts in the source
  uint64_t length = 0;  // CHUNK/ZERO: chunk length; END: bytes read from the source
  ChunkId id{};
  bool is_new = false;
  bool zeros = false;           // CHUNK: all-zero data (its blob is sealed by the emitter, if new)
  uint64_t counter = 0;         // CHUNK: the nonce counter reserved for its blob
  bool changed = false;         // END: the file changed while it was read (size, mtime or ctime moved, or
                                // the bytes read differ from its size): the chunks hold what was read
  std::vector<uint8_t> sealed;  // CHUNK with is_new: the sealed blob
  std::string error;            // END: empty on success, else why the source failed
};

class PipelineRun {
 public:
  PipelineRun(const PipelineConfig& cfg, std::shared_ptr<IdSet> known, std::shared_ptr<SealSession> session,
              std::vector<Source> sources);
  ~PipelineRun();
  PipelineRun(const PipelineRun&) = delete;
  PipelineRun& operator=(const PipelineRun&) = delete;

  // Appends up to max_events events in order, blocking until at least one is ready.
  // Returns false when the run is complete (nothing appended). Rethrows a worker's fatal error.
  bool next(std::vector<Event>& out, size_t max_events);
  void cancel();

  // Computes a chunk ID with the configured algorithm and key.
  static void chunk_id(const PipelineConfig& cfg, const uint8_t* data, size_t len, uint8_t out[32]);

 private:
  // A unit of work for a worker: either a chunk already cut by the producer (data != nullptr), or a whole
  // small file the worker reads and chunks itself (path set), so that many small files are opened and read
  // in parallel instead of one after another by the producer.
  struct Job {
    uint64_t seq = 0;
    uint64_t counter = 0;
    uint32_t source = 0;
    uint64_t offset = 0;
    const uint8_t* data = nullptr;
    size_t len = 0;        // bytes charged against max_in_flight
    std::shared_ptr<void> keep;
    const std::string* path = nullptr;  // small-file job
    // Read job (fixed blocks of a ranged source): the worker preads [file_off, file_off + len) of fd
    // itself and cuts it into blocks, so reading is spread over the workers and each block is hashed while
    // it is still in the worker's cache. Counters counter .. counter + blocks - 1 are reserved for it.
    int fd = -1;
    uint64_t file_off = 0;
    bool zeros = false;  // a chunk of a hole: len zero bytes, none in memory
  };
  // What the workers learned about a source read by read jobs; its END event is completed from this
  // when it is emitted (all its jobs are done by then, since events leave in order).
  struct SourceState {
    bool deferred = false;
    uint64_t read = 0;
    std::string error;
  };
  struct Done {
    std::vector<Event> events;
    size_t charge = 0;
  };

  PipelineConfig cfg_;
  std::shared_ptr<IdSet> known_;
  std::shared_ptr<SealSession> session_;
  std::vector<Source> sources_;
  std::vector<SourceState> state_;  // guarded by mu_
  GearTable gear_;

  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_, cv_space_;
  std::deque<Job> queue_;
  std::map<uint64_t, Done> done_;
  uint64_t next_emit_ = 0, next_seq_ = 0;
  size_t in_flight_ = 0;
  bool producer_done_ = false;
  bool cancelled_ = false;
  std::exception_ptr fatal_;
  std::vector<std::thread> threads_;
  mutable std::mutex zero_mu_;
  mutable std::map<size_t, ChunkId> zero_ids_;  // the ID of an all-zero chunk, by length: hashed once a run

  class Cutter;  // cuts one source into chunk jobs (pipeline.cpp)

  void produce();
  void produce_source(uint32_t index, Source& src);
  void work();
  Event chunk_event(uint32_t source, uint64_t offset, const uint8_t* data, size_t len, uint64_t counter,
                    bool zeros = false) const;
  ChunkId zero_id(size_t len) const;
  void small_file(const Job& j, std::vector<Event>& out) const;
  void read_blocks(const Job& j, std::vector<Event>& out);
  void produce_read_jobs(uint32_t index, Source& src);
  void push_job(Job&& j);                     // blocks while too much is in flight
  // What a job counts against max_in_flight: its bytes in memory (a hole's chunk holds none; a token
  // amount keeps the queue of them bounded).
  static size_t charge(const Job& j) { return j.zeros ? 4096 : j.len; }
  void push_end(uint32_t source, uint64_t size, std::string error, bool changed = false);
  void fail(std::exception_ptr e);
};

}  // namespace recovault
