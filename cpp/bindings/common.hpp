// What every binding file shares: buffer-protocol views, bytes results, argument checks, and the
// register_* function of each area (module.cpp calls them in order). Only cpp/bindings/ knows Python.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "recovault/chunker.hpp"
#include "recovault/compress.hpp"

namespace recovault::py_binding {

namespace py = pybind11;

// A read-only, C-contiguous view of any buffer-protocol object (bytes, bytearray, memoryview, numpy).
class View {
 public:
  explicit View(const py::handle& obj) {
    if (PyObject_GetBuffer(obj.ptr(), &v_, PyBUF_SIMPLE) != 0) {
      PyErr_Clear();
      throw py::type_error(std::string("expected a C-contiguous bytes-like object, got ") +
                           Py_TYPE(obj.ptr())->tp_name);
    }
  }
  ~View() { PyBuffer_Release(&v_); }
  View(const View&) = delete;
  View& operator=(const View&) = delete;
  const uint8_t* data() const { return static_cast<const uint8_t*>(v_.buf); }
  size_t size() const { return static_cast<size_t>(v_.len); }

 private:
  Py_buffer v_;
};

inline py::bytes to_bytes(const uint8_t* p, size_t n) { return py::bytes(reinterpret_cast<const char*>(p), n); }
inline py::bytes to_bytes(const std::vector<uint8_t>& v) { return to_bytes(v.data(), v.size()); }

inline void need_len(const View& v, size_t n, const char* what) {
  if (v.size() != n)
    throw py::value_error(std::string(what) + " must be " + std::to_string(n) + " bytes, got " +
                          std::to_string(v.size()));
}

inline void need_zstd_level(int level) {
  if (level < compress::zstd_min_level() || level > compress::zstd_max_level())
    throw py::value_error("zstd level out of range");
}

// Python's compress= strings.
inline compress::Mode compress_mode(const std::string& m) {
  if (m == "never" || m == "none") return compress::Mode::Never;
  if (m == "always") return compress::Mode::Always;
  if (m == "auto") return compress::Mode::Auto;
  throw py::value_error("compress must be 'auto', 'always' or 'never'");
}

inline ChunkerParams chunker_params(uint32_t min_size, uint32_t avg_size, uint32_t max_size, int norm) {
  ChunkerParams p;
  p.min_size = min_size;
  p.avg_size = avg_size;
  p.max_size = max_size;
  p.normalization = norm;
  return p;
}

// One per area, each in its own register_<area>.cpp.
void register_crypto(py::module_& m);    // BLAKE3, HMAC, HKDF, AES-GCM, random bytes; AuthenticationError
void register_compress(py::module_& m);  // zstd, looks_incompressible; DecompressError
void register_chunker(py::module_& m);   // Chunker, chunk_lengths, is_all_zero
void register_index(py::module_& m);     // IdSet, LocationIndex
void register_blob(py::module_& m);      // SealSession, open_blob
void register_restore(py::module_& m);   // restore_blobs; RestoreError
void register_pipeline(py::module_& m);  // Pipeline, PipelineRun
void register_erasure(py::module_& m);   // ErasureCode; NotEnoughShards

}  // namespace recovault::py_binding
