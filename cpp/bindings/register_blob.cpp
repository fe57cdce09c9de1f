// Python binding of sealed blobs: SealSession.seal and open_blob.
#include <memory>

#include "recovault/blob.hpp"

#include "common.hpp"

namespace recovault::py_binding {

void register_blob(py::module_& m) {
  py::class_<SealSession, std::shared_ptr<SealSession>>(m, "SealSession",
      "A sealing session: a fresh random subkey (HKDF of the master key and a random salt) and counter nonces")
      .def(py::init([](const py::handle& key, const py::object& salt) {
             View k(key);
             need_len(k, 32, "master key");
             if (salt.is_none()) return std::make_shared<SealSession>(k.data());
             View s(salt);
             need_len(s, 16, "session salt");
             return std::make_shared<SealSession>(k.data(), s.data());
           }), py::arg("key"), py::arg("salt") = py::none())
      .def_property_readonly("salt", [](const SealSession& s) { return to_bytes(s.salt(), 16); })
      .def("seal", [](SealSession& s, const py::handle& id, const py::handle& data, int level, const std::string& comp) {
        View i(id), v(data);
        compress::Mode mode = compress_mode(comp);
        need_zstd_level(level);
        std::vector<uint8_t> out;
        {
          py::gil_scoped_release r;
          s.seal(i.data(), i.size(), v.data(), v.size(), level, mode, s.reserve(1), out);
        }
        return to_bytes(out);
      }, py::arg("id"), py::arg("data"), py::arg("level") = 3, py::arg("compress") = "auto");
  m.def("open_blob", [](const py::handle& key, const py::handle& id, const py::handle& blob, size_t max_size) {
        View k(key), i(id), b(blob);
        need_len(k, 32, "master key");
        PyObject* out = nullptr;
        try {
          py::gil_scoped_release r;
          // The plaintext goes straight into the bytes object we return (allocated, under the GIL, only
          // once the tag has verified and the size is known).
          open_blob_into(k.data(), i.data(), i.size(), b.data(), b.size(), max_size, [&](size_t n) {
            py::gil_scoped_acquire g;
            out = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(n));
            if (!out) throw std::bad_alloc();
            return reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(out));
          });
        } catch (...) {
          Py_XDECREF(out);  // the GIL is held again here: the release guard ended during unwinding
          throw;
        }
        return py::reinterpret_steal<py::bytes>(out);
      }, py::arg("key"), py::arg("id"), py::arg("blob"), py::arg("max_size") = size_t(1) << 30,
      "Verify, decrypt and decompress a sealed blob bound to `id`");
  m.attr("BLOB_OVERHEAD") = BLOB_OVERHEAD;
}

}  // namespace recovault::py_binding
