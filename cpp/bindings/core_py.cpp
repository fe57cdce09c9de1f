// The one thin binding: exposes the C++ core (cpp/include/recovault) to Python as recovault._core.
// Buffers are taken through the buffer protocol without copying; long operations release the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <malloc.h>

#include <cstring>
#include <memory>
#include <string>

#include "recovault/blake3.hpp"
#include "recovault/blob.hpp"
#include "recovault/chunker.hpp"
#include "recovault/compress.hpp"
#include "recovault/crypto.hpp"
#include "recovault/idset.hpp"
#include "recovault/locindex.hpp"
#include "recovault/pipeline.hpp"
#include "recovault/restore.hpp"

namespace py = pybind11;
using namespace recovault;

namespace {

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

py::bytes to_bytes(const uint8_t* p, size_t n) { return py::bytes(reinterpret_cast<const char*>(p), n); }
py::bytes to_bytes(const std::vector<uint8_t>& v) { return to_bytes(v.data(), v.size()); }

void need_len(const View& v, size_t n, const char* what) {
  if (v.size() != n)
    throw py::value_error(std::string(what) + " must be " + std::to_string(n) + " bytes, got " +
                          std::to_string(v.size()));
}

int compress_mode(const std::string& m) {
  if (m == "never" || m == "none") return 0;
  if (m == "always") return 1;
  if (m == "auto") return 2;
  throw py::value_error("compress must be 'auto', 'always' or 'never'");
}

ChunkerParams chunker_params(uint32_t min_size, uint32_t avg_size, uint32_t max_size, int norm) {
  ChunkerParams p;
  p.min_size = min_size;
  p.avg_size = avg_size;
  p.max_size = max_size;
  p.normalization = norm;
  return p;
}

// ---- BLAKE3 ---------------------------------------------------------------------------------
class PyBlake3 {
 public:
  explicit PyBlake3(const py::object& key) {
    if (key.is_none()) {
      h_ = blake3::Hasher();
    } else {
      View k(key);
      need_len(k, 32, "BLAKE3 key");
      h_ = blake3::Hasher(k.data());
    }
  }
  explicit PyBlake3(blake3::Hasher h) : h_(std::move(h)) {}
  PyBlake3& update(const py::handle& data) {
    View v(data);
    py::gil_scoped_release r;
    h_.update(v.data(), v.size());
    return *this;
  }
  py::bytes digest(size_t length, uint64_t seek) const {
    std::string out(length, '\0');
    h_.finalize(reinterpret_cast<uint8_t*>(&out[0]), length, seek);
    return py::bytes(out);
  }
  blake3::Hasher h_;
};

// ---- streaming chunker ----------------------------------------------------------------------
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

// ---- the pipeline ---------------------------------------------------------------------------
class PyRun {
 public:
  std::unique_ptr<PipelineRun> run;
  std::vector<std::unique_ptr<View>> views;  // buffer sources, released with the run
  std::vector<py::object> readers;
  bool finished = false;

  ~PyRun() { close(); }
  void close() {
    if (run) {
      py::gil_scoped_release r;
      run.reset();
    }
    views.clear();
    readers.clear();
  }
  py::list next_batch(size_t max_events) {
    py::list out;
    if (finished || !run) throw py::stop_iteration();
    std::vector<Event> evs;
    bool more;
    {
      py::gil_scoped_release r;
      more = run->next(evs, max_events);
    }
    if (!more) {
      finished = true;
      close();
      throw py::stop_iteration();
    }
    for (Event& e : evs) {
      py::object id = py::none(), payload = py::none();
      uint64_t offset = e.offset;
      if (e.kind == Event::CHUNK) {
        id = to_bytes(e.id.data(), 32);
        if (e.is_new) payload = to_bytes(e.sealed);
      } else if (e.kind == Event::END) {
        offset = 0;
        if (!e.error.empty()) payload = py::str(e.error);
      }
      out.append(py::make_tuple(static_cast<int>(e.kind), e.source, offset, e.length, id, payload));
    }
    return out;
  }
};

class PyPipeline {
 public:
  PipelineConfig cfg;
  std::shared_ptr<IdSet> known;
  std::shared_ptr<SealSession> session;

  std::unique_ptr<PyRun> run(const py::iterable& sources, const py::object& sizes) {
    auto r = std::make_unique<PyRun>();
    std::vector<Source> srcs;
    std::vector<int64_t> hints;
    if (!sizes.is_none()) hints = sizes.cast<std::vector<int64_t>>();
    for (py::handle item : sources) {
      Source s;
      py::handle h = item;
      if (py::isinstance<py::tuple>(item)) {  // (path or fd, start, length): a byte range, read with pread
        py::tuple t = py::reinterpret_borrow<py::tuple>(item);
        if (t.size() != 3) throw py::value_error("a ranged source is (path_or_fd, start, length)");
        h = t[0];
        try {
          s.start = t[1].cast<uint64_t>();
          s.length = t[2].cast<int64_t>();
        } catch (const py::cast_error&) {
          throw py::value_error("a ranged source's start must be an integer >= 0 and its length an integer");
        }
        s.ranged = true;
        if (!(py::isinstance<py::str>(h) || py::hasattr(h, "__fspath__") || py::isinstance<py::int_>(h)))
          throw py::type_error("a ranged source must name a path or a file descriptor");
      }
      if (py::isinstance<py::str>(h) || py::hasattr(h, "__fspath__")) {
        s.kind = Source::PATH;
        py::object p = py::module_::import("os").attr("fsencode")(h);
        s.path = p.cast<std::string>();
      } else if (py::isinstance<py::int_>(h)) {
        s.kind = Source::FD;
        s.fd = h.cast<int>();
      } else if (py::hasattr(h, "readinto")) {
        s.kind = Source::READER;
        py::object f = py::reinterpret_borrow<py::object>(h);
        r->readers.push_back(f);
        PyObject* fp = f.ptr();
        s.read = [fp](uint8_t* buf, size_t len) -> size_t {
          py::gil_scoped_acquire g;
          try {
            py::object mv = py::reinterpret_steal<py::object>(
                PyMemoryView_FromMemory(reinterpret_cast<char*>(buf), static_cast<Py_ssize_t>(len), PyBUF_WRITE));
            py::object n;
            try {
              n = py::reinterpret_borrow<py::object>(fp).attr("readinto")(mv);
            } catch (...) {
              mv.attr("release")();
              throw;
            }
            mv.attr("release")();  // the reader must not keep a view of our buffer
            if (n.is_none()) throw std::runtime_error("non-blocking reader returned no data");
            long long k = n.cast<long long>();
            if (k < 0 || static_cast<size_t>(k) > len) throw std::runtime_error("readinto returned a bad count");
            return static_cast<size_t>(k);
          } catch (py::error_already_set& e) {
            throw std::runtime_error(std::string("read error: ") + e.what());
          }
        };
      } else {
        auto v = std::make_unique<View>(h);
        s.kind = Source::BUFFER;
        s.data = v->data();
        s.len = v->size();
        r->views.push_back(std::move(v));
      }
      if (s.kind == Source::PATH && srcs.size() < hints.size()) s.size_hint = hints[srcs.size()];
      srcs.push_back(std::move(s));
    }
    if (!hints.empty() && hints.size() != srcs.size())
      throw py::value_error("sizes must give one size per source");
    r->run.reset(new PipelineRun(cfg, known, session, std::move(srcs)));
    return r;
  }
};

// ---- the restore engine -----------------------------------------------------------------------
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

PYBIND11_MODULE(_core, m) {
#ifdef M_MMAP_THRESHOLD
  // The data path allocates and frees chunk-sized buffers (up to a few MiB) constantly. glibc serves those
  // with fresh mmap()s whose every page faults on first touch (measured: AES-GCM on 1 MiB buffers 2.3 -> 3.3
  // GB/s, sealing 0.6 -> 2.7 GB/s when they come from the heap instead). Larger buffers (read windows,
  // packs) still get their own mappings, so they go back to the kernel when freed.
  mallopt(M_MMAP_THRESHOLD, 16 << 20);
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
#endif
  m.doc() = "recovault's C++ data path: BLAKE3, FastCDC, zstd, AES-256-GCM, HKDF, and the parallel pipeline";

  static py::exception<crypto::AuthenticationError> auth_exc(m, "AuthenticationError", PyExc_ValueError);
  static py::exception<compress::DecompressError> dec_exc(m, "DecompressError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const crypto::AuthenticationError& e) {
      PyErr_SetString(auth_exc.ptr(), e.what());
    } catch (const compress::DecompressError& e) {
      PyErr_SetString(dec_exc.ptr(), e.what());
    }
  });

  // BLAKE3
  m.def("blake3", [](const py::handle& data, const py::object& key) {
        View v(data);
        uint8_t out[32];
        if (key.is_none()) {
          py::gil_scoped_release r;
          blake3::hash(v.data(), v.size(), out);
        } else {
          View k(key);
          need_len(k, 32, "BLAKE3 key");
          py::gil_scoped_release r;
          blake3::keyed_hash(k.data(), v.data(), v.size(), out);
        }
        return to_bytes(out, 32);
      }, py::arg("data"), py::arg("key") = py::none(), "BLAKE3 hash (keyed with a 32-byte key) -> 32 bytes");
  py::class_<PyBlake3>(m, "Blake3", "Incremental BLAKE3 hasher with extendable output")
      .def(py::init<const py::object&>(), py::arg("key") = py::none())
      .def("update", &PyBlake3::update, py::arg("data"), py::return_value_policy::reference_internal)
      .def("digest", &PyBlake3::digest, py::arg("length") = 32, py::arg("seek") = 0)
      .def("hexdigest", [](const PyBlake3& h, size_t length) {
        std::string d = h.digest(length, 0);
        static const char* hx = "0123456789abcdef";
        std::string s;
        for (unsigned char c : d) { s += hx[c >> 4]; s += hx[c & 15]; }
        return s;
      }, py::arg("length") = 32);
  m.def("blake3_derive_key", [](const std::string& context, const py::handle& material, size_t length) {
        View v(material);
        blake3::Hasher h = blake3::Hasher::derive_key(context);
        h.update(v.data(), v.size());
        std::string out(length, '\0');
        h.finalize(reinterpret_cast<uint8_t*>(&out[0]), length);
        return py::bytes(out);
      }, py::arg("context"), py::arg("material"), py::arg("length") = 32);
  m.def("blake3_simd", &blake3::simd_name);
  m.def("blake3_set_simd", [](const std::string& level) { return std::string(blake3::set_simd(level)); });

  // MAC, KDF, AEAD
  m.def("hmac_sha256", [](const py::handle& key, const py::handle& data) {
        View k(key), v(data);
        uint8_t out[32];
        py::gil_scoped_release r;
        crypto::hmac_sha256(k.data(), k.size(), v.data(), v.size(), out);
        py::gil_scoped_acquire a;
        return to_bytes(out, 32);
      }, py::arg("key"), py::arg("data"));
  m.def("hkdf_sha256", [](const py::handle& ikm, const py::handle& salt, const py::handle& info, size_t length) {
        View k(ikm), s(salt), i(info);
        if (length == 0 || length > 255 * 32) throw py::value_error("HKDF-SHA256 length must be 1..8160");
        std::string out(length, '\0');
        crypto::hkdf_sha256(k.data(), k.size(), s.data(), s.size(), i.data(), i.size(),
                            reinterpret_cast<uint8_t*>(&out[0]), length);
        return py::bytes(out);
      }, py::arg("ikm"), py::arg("salt") = py::bytes(), py::arg("info") = py::bytes(), py::arg("length") = 32);
  m.def("aes_gcm_encrypt", [](const py::handle& key, const py::handle& nonce, const py::handle& pt, const py::handle& aad) {
        View k(key), n(nonce), p(pt), a(aad);
        need_len(k, 32, "AES-256-GCM key");
        need_len(n, 12, "AES-GCM nonce");
        PyObject* out = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(p.size() + 16));
        if (!out) throw py::error_already_set();
        py::bytes res = py::reinterpret_steal<py::bytes>(out);
        uint8_t* o = reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(out));
        {
          py::gil_scoped_release r;
          crypto::aes256gcm_encrypt(k.data(), n.data(), p.data(), p.size(), a.data(), a.size(), o);
        }
        return res;
      }, py::arg("key"), py::arg("nonce"), py::arg("plaintext"), py::arg("aad") = py::bytes(),
      "AES-256-GCM: returns ciphertext || 16-byte tag");
  m.def("aes_gcm_decrypt", [](const py::handle& key, const py::handle& nonce, const py::handle& ct, const py::handle& aad) {
        View k(key), n(nonce), c(ct), a(aad);
        need_len(k, 32, "AES-256-GCM key");
        need_len(n, 12, "AES-GCM nonce");
        if (c.size() < 16) throw crypto::AuthenticationError("ciphertext shorter than the 16-byte tag");
        PyObject* out = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(c.size() - 16));
        if (!out) throw py::error_already_set();
        py::bytes res = py::reinterpret_steal<py::bytes>(out);
        uint8_t* o = reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(out));
        {
          py::gil_scoped_release r;
          crypto::aes256gcm_decrypt(k.data(), n.data(), c.data(), c.size(), a.data(), a.size(), o);
        }
        return res;
      }, py::arg("key"), py::arg("nonce"), py::arg("ciphertext"), py::arg("aad") = py::bytes(),
      "AES-256-GCM: verifies and decrypts ciphertext || tag; raises AuthenticationError");
  m.def("random_bytes", [](size_t n) {
        std::string out(n, '\0');
        crypto::random_bytes(reinterpret_cast<uint8_t*>(&out[0]), n);
        return py::bytes(out);
      });

  // zstd
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

  // chunking
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

  // sets of chunk IDs
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

  // sealed blobs
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
        int mode = compress_mode(comp);
        if (level < compress::zstd_min_level() || level > compress::zstd_max_level())
          throw py::value_error("zstd level out of range");
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

  // the restore engine
  static py::exception<RestoreErrorTag> restore_exc(m, "RestoreError", PyExc_Exception);
  m.def("restore_blobs", [](const py::handle& key, int fd, const py::sequence& packs, const py::sequence& items,
                            unsigned workers, bool sparse, bool by_pack, size_t run_items, const py::object& progress) {
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
      py::arg("progress") = py::none(),
      "Write blobs read from pack files into fd on `workers` threads (GIL released): each item is (index in "
      "packs or -1 for zeros, offset in the pack, sealed length, id, destination offset, plaintext length, "
      "bytes to skip, bytes to write). sparse: leave aligned all-zero 4 KiB blocks as holes. Raises "
      "RestoreError (kind, index, errno, detail) on the first failure; returns byte counts.");

  py::class_<PyRun>(m, "PipelineRun")
      .def("__iter__", [](PyRun& r) -> PyRun& { return r; }, py::return_value_policy::reference_internal)
      .def("__next__", &PyRun::next_batch, py::arg("max_events") = 4096)
      .def("next_batch", &PyRun::next_batch, py::arg("max_events") = 4096)
      .def("close", &PyRun::close)
      .def("__enter__", [](PyRun& r) -> PyRun& { return r; }, py::return_value_policy::reference_internal)
      .def("__exit__", [](PyRun& r, py::args) { r.close(); });

  py::class_<PyPipeline>(m, "Pipeline")
      .def(py::init([](const py::handle& id_key, const py::handle& gear_seed, std::shared_ptr<IdSet> known,
                       std::shared_ptr<SealSession> session, uint32_t min_size, uint32_t avg_size, uint32_t max_size,
                       int normalization, uint32_t fixed_block, const std::string& id_algo, int level,
                       const std::string& comp, unsigned workers, size_t max_in_flight) {
             auto p = std::make_unique<PyPipeline>();
             View k(id_key), g(gear_seed);
             need_len(k, 32, "chunk-ID key");
             need_len(g, 32, "chunker seed");
             std::memcpy(p->cfg.id_key, k.data(), 32);
             std::memcpy(p->cfg.gear_seed, g.data(), 32);
             p->cfg.chunker = chunker_params(min_size, avg_size, max_size, normalization);
             if (fixed_block) {
               p->cfg.fixed = true;
               p->cfg.block_size = fixed_block;
             } else {
               Chunker probe(p->cfg.chunker, GearTable{});  // raises ValueError on bad sizes
             }
             if (id_algo == "blake3")
               p->cfg.id_algo = IdAlgo::Blake3Keyed;
             else if (id_algo == "hmac-sha256")
               p->cfg.id_algo = IdAlgo::HmacSha256;
             else
               throw py::value_error("id_algo must be 'blake3' or 'hmac-sha256'");
             if (level < compress::zstd_min_level() || level > compress::zstd_max_level())
               throw py::value_error("zstd level out of range");
             p->cfg.level = level;
             p->cfg.compress = compress_mode(comp);
             p->cfg.workers = workers;
             if (max_in_flight) p->cfg.max_in_flight = max_in_flight;
             if (!known || !session) throw py::value_error("known and session are required");
             p->known = known;
             p->session = session;
             return p;
           }),
           py::arg("id_key"), py::arg("gear_seed"), py::arg("known"), py::arg("session"),
           py::arg("min_size") = 256 * 1024, py::arg("avg_size") = 512 * 1024, py::arg("max_size") = 2 * 1024 * 1024,
           py::arg("normalization") = 2, py::arg("fixed_block") = 0, py::arg("id_algo") = "blake3",
           py::arg("level") = 3, py::arg("compress") = "auto", py::arg("workers") = 0, py::arg("max_in_flight") = 0)
      .def("run", &PyPipeline::run, py::arg("sources"), py::arg("sizes") = py::none(),
           "Process sources (paths, fds, readable file objects, buffers; (path_or_fd, start, length) ranges); "
           "iterate batches of events. `sizes`: the file sizes the caller saw, one per source (-1: unknown); "
           "files smaller than min_size are then read by the workers in parallel")
      .def("chunk_id", [](const PyPipeline& p, const py::handle& data) {
        View v(data);
        uint8_t out[32];
        {
          py::gil_scoped_release r;
          PipelineRun::chunk_id(p.cfg, v.data(), v.size(), out);
        }
        return to_bytes(out, 32);
      });
}
