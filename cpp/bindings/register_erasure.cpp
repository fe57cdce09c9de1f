// Python binding of the Reed-Solomon erasure code (erasure.hpp): core.ErasureCode and core.NotEnoughShards
// (a ValueError with .present and .needed). Shards are any buffer-protocol objects, read without copying;
// results are new bytes objects, filled with the GIL released.
#include <memory>
#include <optional>

#include "common.hpp"
#include "recovault/erasure.hpp"

namespace recovault::py_binding {

namespace {

using erasure::ErasureCode;

// The shards a caller passes: n entries, None for a missing one, every present one of one size.
class ShardViews {
 public:
  ShardViews(const ErasureCode& ec, const py::sequence& shards) {
    if (py::len(shards) != size_t(ec.n()))
      throw py::value_error("expected " + std::to_string(ec.n()) + " shards (None for a missing one), got " +
                            std::to_string(py::len(shards)));
    ptrs_.assign(ec.n(), nullptr);
    for (int i = 0; i < ec.n(); ++i) {
      py::object s = shards[i];
      if (s.is_none()) continue;
      views_.emplace_back(new View(s));
      const View& v = *views_.back();
      if (size_ && *size_ != v.size())
        throw py::value_error("shards differ in size: shard " + std::to_string(i) + " is " +
                              std::to_string(v.size()) + " bytes, the ones before it " + std::to_string(*size_));
      size_ = v.size();
      ptrs_[i] = v.data();
    }
  }
  int present() const { return int(views_.size()); }
  size_t size() const { return size_.value_or(0); }
  const std::vector<const uint8_t*>& ptrs() const { return ptrs_; }

 private:
  std::vector<std::unique_ptr<View>> views_;
  std::vector<const uint8_t*> ptrs_;
  std::optional<size_t> size_;
};

py::bytes new_bytes(size_t n, uint8_t** data) {
  PyObject* o = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(n));
  if (!o) throw py::error_already_set();
  *data = reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(o));
  return py::reinterpret_steal<py::bytes>(o);
}

py::list encode(const ErasureCode& ec, const py::handle& data) {
  View v(data);
  const size_t len = v.size(), s = ec.shard_size(len);
  py::list out(ec.n());
  std::vector<uint8_t*> p(ec.n());
  for (int i = 0; i < ec.n(); ++i) out[i] = new_bytes(s, &p[i]);
  py::gil_scoped_release r;
  for (int i = 0; i < ec.k(); ++i) {
    size_t start = std::min(len, size_t(i) * s), n = std::min(s, len - start);
    if (n) std::memcpy(p[i], v.data() + start, n);
    if (n < s) std::memset(p[i] + n, 0, s - n);
  }
  ec.encode(p.data(), p.data() + ec.k(), s);
  return out;
}

py::list encode_parity(const ErasureCode& ec, const py::sequence& data_shards) {
  if (py::len(data_shards) != size_t(ec.k()))
    throw py::value_error("expected " + std::to_string(ec.k()) + " data shards, got " +
                          std::to_string(py::len(data_shards)));
  py::list padded;  // the k data shards followed by m Nones: ShardViews' form
  for (auto s : data_shards) {
    if (s.is_none()) throw py::value_error("encode_parity needs every data shard, got None");
    padded.append(s);
  }
  for (int i = 0; i < ec.m(); ++i) padded.append(py::none());
  ShardViews shards(ec, padded);
  py::list out(ec.m());
  std::vector<uint8_t*> p(ec.m());
  for (int i = 0; i < ec.m(); ++i) out[i] = new_bytes(shards.size(), &p[i]);
  py::gil_scoped_release r;
  ec.encode(shards.ptrs().data(), p.data(), shards.size());
  return out;
}

py::bytes decode(const ErasureCode& ec, const py::sequence& shard_list, size_t length) {
  ShardViews shards(ec, shard_list);
  if (shards.present() < ec.k()) throw erasure::NotEnoughShards(shards.present(), ec.k());
  const size_t s = ec.shard_size(length);
  if (shards.size() != s)
    throw py::value_error("shards of " + std::to_string(shards.size()) + " bytes cannot hold " +
                          std::to_string(length) + " bytes in " + std::to_string(ec.k()) + " data shards (" +
                          std::to_string(s) + " bytes each)");
  std::vector<int> missing;
  for (int i = 0; i < ec.k(); ++i)
    if (!shards.ptrs()[i]) missing.push_back(i);
  uint8_t* res;
  py::bytes out = new_bytes(length, &res);
  py::gil_scoped_release r;
  // A lost data shard is rebuilt straight into the result, except one that runs past its end (the padded
  // last ones): those go to a scratch buffer first. No buffer is zero-filled.
  std::unique_ptr<uint8_t[]> scratch;
  std::vector<uint8_t*> rebuilt(missing.size());
  size_t partial = 0;
  for (int i : missing) partial += (size_t(i) + 1) * s > length;
  if (partial) scratch.reset(new uint8_t[partial * s]);
  for (size_t j = 0, next = 0; j < missing.size(); ++j) {
    size_t start = size_t(missing[j]) * s;
    rebuilt[j] = start + s <= length ? res + start : scratch.get() + (next++) * s;
  }
  ec.reconstruct(shards.ptrs().data(), s, missing, rebuilt.data());
  for (int i = 0, j = 0; i < ec.k(); ++i) {
    const uint8_t* src = shards.ptrs()[i];
    size_t start = std::min(length, size_t(i) * s), n = std::min(s, length - start);
    if (!src) src = rebuilt[j++];
    if (n && src != res + start) std::memcpy(res + start, src, n);
  }
  return out;
}

py::list reconstruct(const ErasureCode& ec, const py::sequence& shard_list, const std::vector<int>& wanted) {
  ShardViews shards(ec, shard_list);
  for (int w : wanted)
    if (w < 0 || w >= ec.n())
      throw py::value_error("shard index " + std::to_string(w) + " out of range 0.." + std::to_string(ec.n() - 1));
  if (shards.present() < ec.k()) throw erasure::NotEnoughShards(shards.present(), ec.k());
  py::list out(wanted.size());
  std::vector<uint8_t*> p(wanted.size());
  for (size_t j = 0; j < wanted.size(); ++j) out[j] = new_bytes(shards.size(), &p[j]);
  py::gil_scoped_release r;
  ec.reconstruct(shards.ptrs().data(), shards.size(), wanted, p.data());
  return out;
}

}  // namespace

void register_erasure(py::module_& m) {
  static py::exception<erasure::NotEnoughShards> not_enough(m, "NotEnoughShards", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const erasure::NotEnoughShards& e) {
      py::object exc = py::reinterpret_borrow<py::object>(not_enough)(e.what());
      exc.attr("present") = e.present;
      exc.attr("needed") = e.needed;
      PyErr_SetObject(not_enough.ptr(), exc.ptr());
    }
  });

  py::class_<ErasureCode>(m, "ErasureCode", "Reed-Solomon erasure code on ISA-L: k data + m parity shards")
      .def(py::init([](int k, int m) {
             try {
               return new ErasureCode(k, m);
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }), py::arg("k"), py::arg("m"))
      .def_property_readonly("k", &ErasureCode::k)
      .def_property_readonly("m", &ErasureCode::m)
      .def_property_readonly("n", &ErasureCode::n)
      .def_property_readonly("matrix", [](const ErasureCode& ec) { return to_bytes(ec.matrix()); })
      .def("shard_size", &ErasureCode::shard_size, py::arg("length"))
      .def("encode", &encode, py::arg("data"))
      .def("encode_parity", &encode_parity, py::arg("data_shards"))
      .def("decode", &decode, py::arg("shards"), py::arg("length"))
      .def("reconstruct", &reconstruct, py::arg("shards"), py::arg("wanted"))
      .def("__repr__", [](const ErasureCode& ec) {
        return "ErasureCode(" + std::to_string(ec.k()) + ", " + std::to_string(ec.m()) + ")";
      });
  m.attr("ERASURE_MAX_SHARDS") = erasure::MAX_SHARDS;
}

}  // namespace recovault::py_binding
