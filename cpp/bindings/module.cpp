// recovault._core: the C++ core (cpp/include/recovault) as a Python extension. One binding file per area
// (register_<area>.cpp, as boost-histogram lays out its bindings), sharing common.hpp. Buffers are taken
// through the buffer protocol without copying; long operations release the GIL.
#include <malloc.h>

#include "common.hpp"

PYBIND11_MODULE(_core, m) {
#ifdef M_MMAP_THRESHOLD
  // The data path allocates and frees chunk-sized buffers (up to a few MiB) constantly. glibc serves those
  // with fresh mmap()s whose every page faults on first touch (measured: AES-GCM on 1 MiB buffers 2.3 -> 3.3
  // GB/s, sealing 0.6 -> 2.7 GB/s when they come from the heap instead). Larger buffers (read windows,
  // packs) still get their own mappings, so they go back to the kernel when freed.
  mallopt(M_MMAP_THRESHOLD, 16 << 20);
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
#endif
  m.doc() = "recovault's C++ data path: BLAKE3, FastCDC, zstd, AES-256-GCM, HKDF, the parallel pipeline, Reed-Solomon erasure coding";
  using namespace recovault::py_binding;
  // Classes before the functions and classes whose signatures name them (IdSet, SealSession: Pipeline).
  register_crypto(m);
  register_compress(m);
  register_chunker(m);
  register_index(m);
  register_blob(m);
  register_restore(m);
  register_pipeline(m);
  register_erasure(m);
}
