// Python binding of the restore engine: core.restore_blobs and core.RestoreError.
#include <cstring>

#include "recovault/restore.hpp"

#include "common.hpp"

namespace recovault::py_binding {

namespace {

struct RestoreErrorTag {};

// (pack index or -1 for zeros, pack offset, sealed length, id, dest offset, plaintext length, skip, length)
std::vector<RestoreItem> restore_items(const py::sequence& seq) {
  std::vector<RestoreItem> out(seq.size());
  size_t i = 0;
  for (py::handle h : seq) {
    if (!py::isinstance<py::tuple>(h) || PyTuple_GET_SIZE(h.ptr()) != 8)
      throw py::value_error("a restore item is (pack, pack_offset, sealed_len, id, dest_offset, plain_len, skip, "
                            "length)");
    py::tuple t = py::reinterpret_borrow<py::tuple>(h);
    RestoreItem& it = out[i++];
    long long pack = t[0].is_none() ? -1 : t[0].cast<long long>();
    it.dest_offset = t[4].cast<uint64_t>();
    it.length = t[7].cast<uint64_t>();
    if (pack < 0) continue;  // zeros: nothing to read
    if (pack >= static_cast<long long>(RestoreItem::ZEROS)) throw py::value_error("restore item: bad pack index");
    it.pack = static_cast<uint32_t>(pack);
    it.pack_offset = t[1].cast<uint64_t>();
    it.sealed_len = t[2].cast<uint32_t>();
    View id(t[3]);
    need_len(id, 32, "blob id");
    std::memcpy(it.id, id.data(), 32);
    it.plain_len = t[5].cast<uint64_t>();
    it.skip = t[6].cast<uint64_t>();
  }
  return out;
}

}  // namespace

void register_restore(py::module_& m) {
  static py::exception<RestoreErrorTag> restore_exc(m, "RestoreError", PyExc_Exception);
  m.def("restore_blobs", [](const py::handle& key, int fd, const py::sequence& packs, const py::sequence& items,
                            unsigned workers, bool sparse, bool by_pack, size_t run_items, const py::object& progress,
                            const py::object& session_key) {
        View k(key);
        need_len(k, 32, "master key");
        std::vector<std::string> paths;
        py::object fsencode = py::module_::import("os").attr("fsencode");
        for (py::handle p : packs) paths.push_back(fsencode(p).cast<std::string>());
        std::vector<RestoreItem> its = restore_items(items);
        RestoreOptions opt;
        opt.workers = workers;
        opt.sparse = sparse;
        opt.by_pack = by_pack;
        if (run_items) opt.run_items = run_items;
        // Format v3: session_key(salt) -> a 32-byte key or None, called from a worker thread with the GIL
        // taken. An exception in it counts as None (the default key is tried; a real failure then says so).
        if (!session_key.is_none()) {
          opt.session_key = [&session_key](const uint8_t* salt, uint8_t* key) {
            py::gil_scoped_acquire g;
            try {
              py::object r = session_key(py::bytes(reinterpret_cast<const char*>(salt), 16));
              if (r.is_none()) return false;
              View v(r);
              if (v.size() != 32) return false;
              std::memcpy(key, v.data(), 32);
              return true;
            } catch (const py::error_already_set&) {
              return false;
            } catch (const std::exception&) {
              return false;
            }
          };
        }
        // Every tick (on this thread, GIL taken for a moment): Ctrl-C and the caller's progress callback.
        PyObject *etype = nullptr, *evalue = nullptr, *etb = nullptr;
        opt.progress = [&](uint64_t done) {
          py::gil_scoped_acquire g;
          if (PyErr_CheckSignals() == 0 && !progress.is_none()) {
            PyObject* r = PyObject_CallFunction(progress.ptr(), "K", static_cast<unsigned long long>(done));
            Py_XDECREF(r);
          }
          if (!PyErr_Occurred()) return true;
          PyErr_Fetch(&etype, &evalue, &etb);
          return false;
        };
        RestoreResult res;
        {
          py::gil_scoped_release r;
          res = restore_blobs(k.data(), fd, paths, its, opt);
        }
        if (etype) {  // a KeyboardInterrupt or the progress callback's exception: re-raise it as it was
          PyErr_Restore(etype, evalue, etb);
          throw py::error_already_set();
        }
        if (res.failure != RestoreFailure::NONE) {
          const char* kind = restore_failure_name(res.failure);
          py::object e = py::reinterpret_borrow<py::object>(restore_exc)(std::string(kind) + ": " + res.detail);
          e.attr("kind") = kind;
          e.attr("index") = res.item == SIZE_MAX ? py::object(py::none()) : py::object(py::int_(res.item));
          e.attr("errno") = res.error;
          e.attr("detail") = res.detail;
          e.attr("data_bytes") = res.data_bytes;
          PyErr_SetObject(restore_exc.ptr(), e.ptr());
          throw py::error_already_set();
        }
        py::dict out;
        out["data_bytes"] = res.data_bytes;
        out["zero_bytes"] = res.zero_bytes;
        out["items"] = res.items_done;
        return out;
      }, py::arg("key"), py::arg("fd"), py::arg("packs"), py::arg("items"), py::arg("workers") = 0,
      py::arg("sparse") = false, py::arg("by_pack") = true, py::arg("run_items") = 0,
      py::arg("progress") = py::none(), py::arg("session_key") = py::none(),
      "Write blobs read from pack files into fd on `workers` threads (GIL released): each item is (index in "
      "packs or -1 for zeros, offset in the pack, sealed length, id, destination offset, plaintext length, "
      "bytes to skip, bytes to write). sparse: leave aligned all-zero 4 KiB blocks as holes. Raises "
      "RestoreError (kind, index, errno, detail) on the first failure; returns byte counts. session_key(salt): "
      "the data key of a format v3 session (16-byte salt -> 32 bytes, or None for `key`).");
}

}  // namespace recovault::py_binding
