// Python binding of zstd and the incompressibility estimate. compress::DecompressError is core.DecompressError
// (a ValueError).
#include "common.hpp"

namespace recovault::py_binding {

void register_compress(py::module_& m) {
  py::register_exception<compress::DecompressError>(m, "DecompressError", PyExc_ValueError);

  m.def("zstd_compress", [](const py::handle& data, int level) {
        View v(data);
        if (level < compress::zstd_min_level() || level > compress::zstd_max_level())
          throw py::value_error("zstd level must be between " + std::to_string(compress::zstd_min_level()) +
                                " and " + std::to_string(compress::zstd_max_level()));
        std::vector<uint8_t> out;
        {
          py::gil_scoped_release r;
          compress::zstd_compress(v.data(), v.size(), level, out);
        }
        return to_bytes(out);
      }, py::arg("data"), py::arg("level") = 3);
  m.def("zstd_decompress", [](const py::handle& data, size_t max_size) {
        View v(data);
        size_t n = compress::zstd_frame_size(v.data(), v.size(), max_size);
        PyObject* out = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(n));
        if (!out) throw py::error_already_set();
        py::bytes res = py::reinterpret_steal<py::bytes>(out);
        {
          py::gil_scoped_release r;
          compress::zstd_decompress_into(v.data(), v.size(), reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(out)), n);
        }
        return res;
      }, py::arg("data"), py::arg("max_size") = size_t(1) << 30);
  m.def("looks_incompressible", [](const py::handle& data) {
        View v(data);
        return compress::looks_incompressible(v.data(), v.size());
      });
  m.attr("ZSTD_MAX_LEVEL") = compress::zstd_max_level();
}

}  // namespace recovault::py_binding
