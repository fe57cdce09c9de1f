// Python binding of the cryptographic kernels: BLAKE3 (one-shot, incremental, derive_key, SIMD level),
// HMAC-SHA256, HKDF-SHA256, AES-256-GCM and the CSPRNG. crypto::AuthenticationError is
// core.AuthenticationError (a ValueError).
#include "recovault/blake3.hpp"
#include "recovault/crypto.hpp"

#include "common.hpp"

namespace recovault::py_binding {

namespace {

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

}  // namespace

void register_crypto(py::module_& m) {
  py::register_exception<crypto::AuthenticationError>(m, "AuthenticationError", PyExc_ValueError);

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
}

}  // namespace recovault::py_binding
