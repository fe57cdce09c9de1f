// Python binding of the parallel pipeline: Pipeline (configuration) and PipelineRun (batches of events:
// core.PipelineEvent named tuples).
#include <cstring>
#include <memory>

#include "recovault/pipeline.hpp"

#include "common.hpp"

namespace recovault::py_binding {

namespace {

// END events carry flags where other events have their offset.
constexpr uint64_t END_CHANGED = 1;  // the file changed while it was read

// The class of events: recovault.core registers its PipelineEvent (a NamedTuple) at import; nullptr gives
// plain tuples. An event is allocated and filled exactly as tuple.__new__ fills a tuple subclass, so naming
// its fields costs nothing per event. Held for the life of the process.
PyTypeObject* event_type = nullptr;

void set_event_type(const py::handle& cls) {
  if (cls.is_none()) {
    event_type = nullptr;
    return;
  }
  if (!PyType_Check(cls.ptr()) || !PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(cls.ptr()), &PyTuple_Type) ||
      reinterpret_cast<PyTypeObject*>(cls.ptr())->tp_basicsize != PyTuple_Type.tp_basicsize)
    throw py::type_error("the event type must be a tuple subclass without instance attributes (a NamedTuple)");
  event_type = reinterpret_cast<PyTypeObject*>(cls.inc_ref().ptr());
}

py::object make_event(int kind, uint64_t source, uint64_t offset, uint64_t length, py::object id, py::object payload) {
  py::object items[6] = {py::int_(kind), py::int_(source), py::int_(offset), py::int_(length), std::move(id),
                         std::move(payload)};
  PyObject* ev = event_type ? event_type->tp_alloc(event_type, 6) : PyTuple_New(6);
  if (!ev) throw py::error_already_set();
  for (int i = 0; i < 6; i++) PyTuple_SET_ITEM(ev, i, items[i].release().ptr());
  return py::reinterpret_steal<py::object>(ev);
}

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
        offset = e.changed ? END_CHANGED : 0;  // END: flags in the offset field
        if (!e.error.empty()) payload = py::str(e.error);
      }
      out.append(make_event(static_cast<int>(e.kind), e.source, offset, e.length, std::move(id), std::move(payload)));
    }
    return out;
  }
};

class PyPipeline {
 public:
  PipelineConfig cfg;
  py::object after_read = py::none();  // the test hook cfg.after_read calls, kept alive by every run
  std::shared_ptr<IdSet> known;
  std::shared_ptr<SealSession> session;

  std::unique_ptr<PyRun> run(const py::iterable& sources, const py::object& sizes) {
    auto r = std::make_unique<PyRun>();
    if (!after_read.is_none()) r->readers.push_back(after_read);
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
}  // namespace

void register_pipeline(py::module_& m) {
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
             need_zstd_level(level);
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
      })
      .def("_set_after_read", [](PyPipeline& p, const py::object& fn) {
        p.after_read = fn;
        if (fn.is_none()) {
          p.cfg.after_read = nullptr;
          return;
        }
        PyObject* f = fn.ptr();  // alive while the pipeline or a run (PyRun::readers) holds it
        p.cfg.after_read = [f](const std::string& path, uint64_t bytes_read) {
          py::gil_scoped_acquire g;
          try {
            py::reinterpret_borrow<py::object>(f)(py::bytes(path), bytes_read);
          } catch (py::error_already_set& e) {
            throw std::runtime_error(std::string("after_read hook: ") + e.what());
          }
        };
      }, py::arg("fn"),
      "Test hook: fn(path: bytes, bytes_read: int) after every read of a file source, on the reading thread "
      "(so a test can change a file at a chosen point); None removes it");
  m.attr("END_CHANGED") = END_CHANGED;
  m.def("_set_event_type", &set_event_type, py::arg("cls"),
        "The tuple subclass PipelineRun events are made of (recovault.core.PipelineEvent); None: plain tuples");
}

}  // namespace recovault::py_binding
