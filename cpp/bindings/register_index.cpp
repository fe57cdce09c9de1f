// Python binding of the in-memory indexes: IdSet (known chunk IDs) and LocationIndex (where each blob is).
#include <memory>

#include "recovault/idset.hpp"
#include "recovault/locindex.hpp"

#include "common.hpp"

namespace recovault::py_binding {

void register_index(py::module_& m) {
  py::class_<IdSet, std::shared_ptr<IdSet>>(m, "IdSet", "Compact set of 32-byte chunk IDs")
      .def(py::init<>())
      .def("add", [](IdSet& s, const py::handle& id) {
        View v(id);
        need_len(v, 32, "chunk ID");
        return s.insert(v.data());
      })
      .def("__contains__", [](const IdSet& s, const py::handle& id) {
        View v(id);
        return v.size() == 32 && s.contains(v.data());
      })
      .def("__len__", &IdSet::size)
      .def("update", [](IdSet& s, const py::handle& ids) {
        View v(ids);
        if (v.size() % 32) throw py::value_error("concatenated chunk IDs: length must be a multiple of 32");
        py::gil_scoped_release r;
        s.reserve(s.size() + v.size() / 32);
        size_t added = 0;
        for (size_t i = 0; i < v.size(); i += 32) added += s.insert(v.data() + i);
        return added;
      }, "Add concatenated 32-byte IDs; returns how many were new")
      .def("discard", [](IdSet& s, const py::handle& id) {
        View v(id);
        return v.size() == 32 && s.erase(v.data());
      }, "Remove one ID if present; returns whether it was")
      .def("difference_update", [](IdSet& s, const py::handle& ids) {
        View v(ids);
        if (v.size() % 32) throw py::value_error("concatenated chunk IDs: length must be a multiple of 32");
        py::gil_scoped_release r;
        size_t removed = 0;
        for (size_t i = 0; i < v.size(); i += 32) removed += s.erase(v.data() + i);
        return removed;
      }, "Remove concatenated 32-byte IDs; returns how many were present")
      .def("dump", [](const IdSet& s) { return to_bytes(s.dump()); }, "All IDs, concatenated")
      .def("clear", &IdSet::clear);

  py::class_<LocationIndex, std::shared_ptr<LocationIndex>>(m, "LocationIndex",
      "Where each blob is: 32-byte blob ID -> (pack id, type, offset, sealed length, plaintext length)")
      .def(py::init<>())
      .def("add", [](LocationIndex& ix, const py::handle& id, const py::handle& pack, uint8_t type, uint32_t offset,
                     uint32_t length, uint32_t raw_length) {
        View i(id), p(pack);
        need_len(i, 32, "blob ID");
        need_len(p, 32, "pack ID");
        ix.add(i.data(), p.data(), type, offset, length, raw_length);
      }, py::arg("id"), py::arg("pack"), py::arg("type"), py::arg("offset"), py::arg("length"), py::arg("raw_length"))
      .def("add_index", [](LocationIndex& ix, const py::handle& plain, std::shared_ptr<IdSet> known) {
        View v(plain);
        py::gil_scoped_release r;
        return ix.add_index(v.data(), v.size(), known.get());
      }, py::arg("plain"), py::arg("known") = nullptr,
         "Add every entry of an index file's plaintext (and its IDs to `known`); ValueError if malformed")
      .def("get", [](const LocationIndex& ix, const py::handle& id) -> py::object {
        View i(id);
        BlobLocation loc;
        if (i.size() != 32 || !ix.find(i.data(), loc)) return py::none();
        ChunkId pack = ix.pack_id(loc.pack);
        return py::make_tuple(to_bytes(pack.data(), 32), loc.type, loc.offset, loc.length, loc.raw_length);
      }, "(pack id, type, offset, sealed length, plaintext length), or None")
      .def("__contains__", [](const LocationIndex& ix, const py::handle& id) {
        View i(id);
        BlobLocation loc;
        return i.size() == 32 && ix.find(i.data(), loc);
      })
      .def("__len__", &LocationIndex::size)
      .def("items", [](const LocationIndex& ix) {
        py::list out;
        ix.for_each([&](const ChunkId& id, const ChunkId& pack, const BlobLocation& loc) {
          out.append(py::make_tuple(to_bytes(id.data(), 32), to_bytes(pack.data(), 32), loc.type, loc.offset,
                                    loc.length, loc.raw_length));
        });
        return out;
      }, "Every (blob id, pack id, type, offset, sealed length, plaintext length)");
}

}  // namespace recovault::py_binding
