// Python binding of the keyed FastCDC chunker (streaming and one-shot) and the all-zero test.
#include <memory>

#include "common.hpp"

namespace recovault::py_binding {

namespace {

class PyChunker {
 public:
  PyChunker(const py::handle& seed, uint32_t min_size, uint32_t avg_size, uint32_t max_size, int norm) {
    View s(seed);
    need_len(s, 32, "chunker seed");
    c_.reset(new Chunker(chunker_params(min_size, avg_size, max_size, norm), derive_gear_table(s.data())));
  }
  std::vector<uint64_t> cuts(const py::handle& data) {
    View v(data);
    std::vector<uint64_t> out;
    py::gil_scoped_release r;
    size_t pos = 0;
    uint64_t start_pending = c_->pending();
    while (pos < v.size()) {
      bool cut;
      size_t n = c_->next(v.data() + pos, v.size() - pos, &cut);
      pos += n;
      if (cut) {
        out.push_back(start_pending + n);
        start_pending = 0;
      } else {
        start_pending += n;
      }
    }
    return out;
  }
  uint64_t finish() {
    uint64_t n = c_->pending();
    c_->reset();
    return n;
  }
  std::unique_ptr<Chunker> c_;
};

}  // namespace

void register_chunker(py::module_& m) {
  py::class_<PyChunker>(m, "Chunker", "Streaming keyed FastCDC chunker")
      .def(py::init<const py::handle&, uint32_t, uint32_t, uint32_t, int>(), py::arg("seed"),
           py::arg("min_size") = 256 * 1024, py::arg("avg_size") = 512 * 1024, py::arg("max_size") = 2 * 1024 * 1024,
           py::arg("normalization") = 2)
      .def("cuts", &PyChunker::cuts, py::arg("data"))
      .def("finish", &PyChunker::finish);
  m.def("chunk_lengths", [](const py::handle& data, const py::handle& seed, uint32_t min_size, uint32_t avg_size,
                            uint32_t max_size, int norm) {
        PyChunker c(seed, min_size, avg_size, max_size, norm);
        std::vector<uint64_t> out = c.cuts(data);
        uint64_t tail = c.finish();
        if (tail) out.push_back(tail);
        return out;
      }, py::arg("data"), py::arg("seed"), py::arg("min_size") = 256 * 1024, py::arg("avg_size") = 512 * 1024,
      py::arg("max_size") = 2 * 1024 * 1024, py::arg("normalization") = 2);
  m.def("is_all_zero", [](const py::handle& data) {
        View v(data);
        py::gil_scoped_release r;
        return is_all_zero(v.data(), v.size());
      });
}

}  // namespace recovault::py_binding
