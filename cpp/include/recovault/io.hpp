// Small POSIX I/O helpers shared by the pipeline and the restore engine.
#pragma once
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>

namespace recovault::io {

// Reads len bytes at off, looping over short reads and EINTR. Returns the count, which is below len only
// at the end of the file, or -1 with errno set.
inline ssize_t pread_full(int fd, uint8_t* buf, size_t len, uint64_t off) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::pread(fd, buf + got, len - got, static_cast<off_t>(off + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(got);
}

}  // namespace recovault::io
