// nanobind bindings: ondevice._core. Thin: argument conversion, GIL release,
// and error translation; all logic lives in the C++ core.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <memory>
#include <optional>

#include "ondevice/bcq_gemm.h"
#include "ondevice/bitplane_format.h"
#include "ondevice/error.h"
#include "ondevice/executor.h"
#include "ondevice/resample.h"
#include "ondevice/translator.h"
#include "ondevice/understander.h"

namespace nb = nanobind;
using namespace ondevice;

namespace {

template <typename T>
using CArray = nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// Returns a new 1-D or 2-D numpy array that owns a copy of `n` elements.
template <typename T>
nb::ndarray<nb::numpy, T> owned_array(const T* src, std::initializer_list<size_t> shape) {
  size_t n = 1;
  for (size_t s : shape) n *= s;
  T* data = new T[n > 0 ? n : 1];
  if (src != nullptr && n > 0) std::memcpy(data, src, n * sizeof(T));
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<T*>(p); });
  return nb::ndarray<nb::numpy, T>(data, shape.size(), shape.begin(), owner);
}

// A quantized matrix built from numpy arrays in the spec layout. It holds
// references to the arrays, so the kernels use them in place.
class Matrix {
 public:
  Matrix(uint32_t rows, uint32_t cols, uint32_t group_size, CArray<uint8_t> row_bits, CArray<uint8_t> planes,
         CArray<float> alpha, std::optional<CArray<float>> offset)
      : row_bits_(row_bits), planes_(planes), alpha_(alpha) {
    if (offset) offset_ = *offset;
    matrix_ = BitplaneMatrix(rows, cols, group_size, row_bits.data(), row_bits.size(), planes.data(), planes.size(),
                             alpha.data(), alpha.size(), offset ? offset->data() : nullptr,
                             offset ? offset->size() : 0, nullptr);
  }

  // path: "lut" (one int8 table pass), "lut16" (two, the runtime's default)
  // or "dense" (bcq_gemm_dense: the expanded weights).
  nb::ndarray<nb::numpy, float> gemm(nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu> x,
                                     const std::string& variant, int threads, const std::string& path) const {
    if (path != "lut" && path != "lut16" && path != "dense")
      throw ArgumentError("path must be 'lut', 'lut16' or 'dense', got '" + path + "'");
    const BitplaneLayout& L = matrix_.layout();
    if (x.shape(1) != L.cols)
      throw ArgumentError("input has " + std::to_string(x.shape(1)) + " features but the matrix has " +
                          std::to_string(L.cols) + " columns");
    const KernelVariant v = variant.empty() ? default_variant() : variant_from_name(variant);
    const size_t batch = x.shape(0);
    auto y = owned_array<float>(nullptr, {batch, size_t(L.rows)});
    {
      nb::gil_scoped_release release;
      if (path == "dense") bcq_gemm_dense(matrix_, x.data(), batch, y.data(), v, threads);
      else bcq_gemm(matrix_, x.data(), batch, y.data(), v, threads, path == "lut16");
    }
    return y;
  }

  std::vector<double> error_bound(CArray<float> x) const {
    if (x.size() != matrix_.layout().cols) throw ArgumentError("x must have cols elements");
    return lut_error_bound(matrix_, x.data());
  }

  const BitplaneLayout& layout() const { return matrix_.layout(); }

 private:
  CArray<uint8_t> row_bits_;
  CArray<uint8_t> planes_;
  CArray<float> alpha_;
  std::optional<CArray<float>> offset_;
  BitplaneMatrix matrix_;
};

// Reads a `.bcq` file with the C++ reader and returns its fields (copies).
nb::dict read_bitplane_file(const std::string& path) {
  BitplaneMatrix m;
  bool alpha_f16;
  {
    nb::gil_scoped_release release;
    m = load_bitplane_file(path, &alpha_f16);
  }
  const BitplaneLayout& L = m.layout();
  nb::dict d;
  d["rows"] = L.rows;
  d["cols"] = L.cols;
  d["group_size"] = L.group_size;
  d["alpha_dtype"] = alpha_f16 ? "float16" : "float32";
  d["row_bits"] = owned_array<uint8_t>(m.row_bits(), {size_t(L.rows)});
  d["planes"] = owned_array<uint8_t>(m.planes(), {size_t(L.plane_bytes())});
  d["alpha"] = owned_array<float>(m.alpha(), {size_t(L.alpha_count())});
  if (m.has_offset())
    d["offset"] = owned_array<float>(m.offset(), {size_t(L.offset_count())});
  else
    d["offset"] = nb::none();
  return d;
}

using AnyArray = nb::ndarray<nb::c_contig, nb::device::cpu>;

// A numpy array viewed as a runtime tensor (no copy; the array must outlive it).
Tensor tensor_from_array(const std::string& name, const AnyArray& a) {
  DType t;
  if (a.dtype() == nb::dtype<float>()) t = DType::kFloat32;
  else if (a.dtype() == nb::dtype<int64_t>()) t = DType::kInt64;
  else if (a.dtype() == nb::dtype<int32_t>()) t = DType::kInt32;
  else if (a.dtype() == nb::dtype<uint8_t>()) t = DType::kUint8;
  else if (a.dtype() == nb::dtype<bool>()) t = DType::kBool;
  else throw ArgumentError("input '" + name + "': unsupported array dtype");
  Shape shape;
  for (size_t d = 0; d < a.ndim(); ++d) shape.push_back(int64_t(a.shape(d)));
  return Tensor::borrowed(t, shape, a.data(), nullptr);
}

// A copy of a runtime tensor as a new numpy array.
nb::object array_from_tensor(const Tensor& t) {
  std::vector<size_t> shape(t.shape().begin(), t.shape().end());
  const size_t bytes = std::max<size_t>(1, t.nbytes());
  uint8_t* data = new uint8_t[bytes];
  if (t.nbytes() > 0) std::memcpy(data, t.raw(), t.nbytes());
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<uint8_t*>(p); });
  nb::dlpack::dtype dt;
  switch (t.dtype()) {
    case DType::kFloat32: dt = nb::dtype<float>(); break;
    case DType::kInt64: dt = nb::dtype<int64_t>(); break;
    case DType::kInt32: dt = nb::dtype<int32_t>(); break;
    case DType::kUint8: dt = nb::dtype<uint8_t>(); break;
    case DType::kBool: dt = nb::dtype<bool>(); break;
  }
  return nb::cast(nb::ndarray<nb::numpy>(data, shape.size(), shape.data(), owner, nullptr, dt));
}

nb::dict stats_dict(const BufferPool::Stats& s) {
  nb::dict d;
  d["heap_allocations"] = s.heap_allocations;
  d["reuses"] = s.reuses;
  d["bytes_held"] = s.bytes_held;
  d["bytes_free"] = s.bytes_free;
  return d;
}

// (op, calls, seconds) tuples, slowest first.
nb::list profile_list(const std::vector<Executor::OpTime>& times) {
  nb::list l;
  for (const Executor::OpTime& t : times) l.append(nb::make_tuple(t.op, t.calls, t.seconds));
  return l;
}

// The graph executor on numpy arrays (tests compare it with onnxruntime).
class PyExecutor {
 public:
  PyExecutor(const std::string& path, int threads, const std::string& kernel) {
    ExecutorOptions o;
    o.threads = threads;
    o.kernel = BitplaneKernel::from_name(kernel);
    nb::gil_scoped_release release;
    exec_ = std::make_unique<Executor>(Executor::load(path, o));
  }
  nb::list run(const nb::dict& feeds) {
    std::vector<AnyArray> keep;
    std::vector<NamedTensor> in;
    for (auto [k, v] : feeds) {
      const std::string name = nb::cast<std::string>(k);
      keep.push_back(nb::cast<AnyArray>(v));
      in.emplace_back(name, tensor_from_array(name, keep.back()));
    }
    std::vector<Tensor> out;
    {
      nb::gil_scoped_release release;
      out = exec_->run(in);
    }
    nb::list r;
    for (const Tensor& t : out) r.append(array_from_tensor(t));
    return r;
  }
  Executor& exec() { return *exec_; }

 private:
  std::unique_ptr<Executor> exec_;
};

TranslateOptions translate_options(int beam_size, float length_penalty, float max_len_a, float max_len_b,
                                   int64_t max_batch_tokens) {
  TranslateOptions o;
  o.beam_size = beam_size;
  o.length_penalty = length_penalty;
  o.max_len_a = max_len_a;
  o.max_len_b = max_len_b;
  o.max_batch_tokens = max_batch_tokens;
  return o;
}

// The native translator. Its methods release the GIL, so Python threads
// sharing one instance translate in parallel.
class PyTranslator {
 public:
  PyTranslator(const std::string& model_dir, int threads, const std::string& kernel, bool verify_checksums) {
    TranslatorOptions o;
    o.threads = threads;
    o.kernel = BitplaneKernel::from_name(kernel);
    o.verify_checksums = verify_checksums;
    nb::gil_scoped_release release;
    t_ = std::make_unique<Translator>(model_dir, o);
  }
  std::vector<std::string> translate_batch(const std::vector<std::string>& sentences, int beam_size,
                                           float length_penalty, float max_len_a, float max_len_b,
                                           int64_t max_batch_tokens) const {
    const TranslateOptions o = translate_options(beam_size, length_penalty, max_len_a, max_len_b, max_batch_tokens);
    nb::gil_scoped_release release;
    return t_->translate_batch(sentences, o);
  }
  std::vector<std::vector<int32_t>> generate(const std::vector<std::vector<int32_t>>& sources, int beam_size,
                                             float length_penalty, float max_len_a, float max_len_b,
                                             int64_t max_batch_tokens) const {
    const TranslateOptions o = translate_options(beam_size, length_penalty, max_len_a, max_len_b, max_batch_tokens);
    nb::gil_scoped_release release;
    return t_->generate(sources, o);
  }
  Translator& get() const { return *t_; }

 private:
  std::unique_ptr<Translator> t_;
};

// The native speech-intent recognizer. understand() releases the GIL, so
// Python threads sharing one instance run in parallel.
class PyUnderstander {
 public:
  PyUnderstander(const std::string& model_dir, int threads, const std::string& kernel, bool verify_checksums,
                 bool speed_ensemble) {
    UnderstanderOptions o;
    o.threads = threads;
    o.kernel = BitplaneKernel::from_name(kernel);
    o.verify_checksums = verify_checksums;
    o.speed_ensemble = speed_ensemble;
    nb::gil_scoped_release release;
    u_ = std::make_unique<Understander>(model_dir, o);
  }
  // {slot: {"label": str, "score": float, "logits": [float, ...]}} for
  // action, object, location (in that order). The labels are the best valid
  // intent when the manifest lists "intents" (joint_decoding), else each
  // slot's arg max.
  nb::dict understand(nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu> pcm) const {
    IntentResult r;
    {
      nb::gil_scoped_release release;
      r = u_->understand(pcm.data(), pcm.shape(0));
    }
    nb::dict d;
    for (const SlotPrediction& p : r.slots) {
      nb::dict s;
      s["label"] = p.label;
      s["score"] = double(p.probability);
      nb::list logits;
      for (float v : p.logits) logits.append(double(v));
      s["logits"] = logits;
      d[p.slot.c_str()] = s;
    }
    return d;
  }
  Understander& get() const { return *u_; }

 private:
  std::unique_ptr<Understander> u_;
};

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "ondevice C++ core: bit-plane (BCQ) format reader and LUT kernels";
  // The base class first: nanobind tries translators newest first, so the two subclasses below
  // keep their own types, and any other ondevice::Error (an internal invariant) is _core.Error,
  // not an untyped RuntimeError.
  nb::exception<Error>(m, "Error", PyExc_RuntimeError);
  nb::exception<FormatError>(m, "FormatError", PyExc_ValueError);
  nb::exception<ArgumentError>(m, "ArgumentError", PyExc_ValueError);

  nb::class_<Matrix>(m, "Matrix")
      .def(nb::init<uint32_t, uint32_t, uint32_t, CArray<uint8_t>, CArray<uint8_t>, CArray<float>,
                    std::optional<CArray<float>>>(),
           nb::arg("rows"), nb::arg("cols"), nb::arg("group_size"), nb::arg("row_bits"), nb::arg("planes"),
           nb::arg("alpha"), nb::arg("offset").none())
      .def("gemm", &Matrix::gemm, nb::arg("x"), nb::arg("variant") = "", nb::arg("threads") = 1,
           nb::arg("path") = "lut",
           "Y = X @ W_hat.T for X float32 [batch, cols] by the LUT kernels (path 'lut' or 'lut16') or the dense "
           "path ('dense'); releases the GIL.")
      .def_static("default_dense_min_rows", &default_dense_min_rows,
                  "Activation rows from which the runtime takes the dense path (ONDEVICE_DENSE_MIN_ROWS overrides).")
      .def("error_bound", &Matrix::error_bound, nb::arg("x"),
           "Per-row bound on |LUT kernel - exact| for one input vector.")
      .def_prop_ro("plane_bytes", [](const Matrix& s) { return s.layout().plane_bytes(); })
      .def_prop_ro("alpha_count", [](const Matrix& s) { return s.layout().alpha_count(); })
      .def_prop_ro("tile_bits", [](const Matrix& s) { return s.layout().tile_bits; });

  m.def("read_bitplane_file", &read_bitplane_file, nb::arg("path"));
  m.def("plane_layout", [](uint32_t rows, uint32_t cols, uint32_t group_size, CArray<uint8_t> row_bits) {
    if (row_bits.size() != rows) throw ArgumentError("row_bits must have one entry per row");
    const BitplaneLayout L = make_layout(rows, cols, group_size, row_bits.data());
    return nb::make_tuple(L.plane_bytes(), L.alpha_count(), L.tile_bits);
  });
  m.def("available_variants", [] {
    std::vector<std::string> names;
    for (KernelVariant v : available_variants()) names.emplace_back(variant_name(v));
    return names;
  });
  m.def("default_variant", [] { return std::string(variant_name(default_variant())); });
  m.def("cpu_description", &cpu_description);
  m.def("default_fuse", &ExecutorOptions::default_fuse,
        "Whether executors fuse node patterns (a strided convolution's frame windows read in place); "
        "ONDEVICE_FUSE=0 turns it off.");

  nb::class_<PyExecutor>(m, "Executor", "Runs one exported ONNX graph with the native kernels")
      .def(nb::init<const std::string&, int, const std::string&>(), nb::arg("path"), nb::arg("threads") = 1,
           nb::arg("kernel") = "")
      .def("run", &PyExecutor::run, nb::arg("feeds"), "outputs (numpy arrays) in output_names order")
      .def_prop_ro("input_names", [](PyExecutor& e) { return e.exec().input_names(); })
      .def_prop_ro("output_names", [](PyExecutor& e) { return e.exec().output_names(); })
      .def("pool_stats", [](PyExecutor& e) { return stats_dict(e.exec().pool_stats()); })
      .def("enable_profiling", [](PyExecutor& e, bool on) { e.exec().enable_profiling(on); })
      .def("profile", [](PyExecutor& e) { return profile_list(e.exec().profile()); })
      .def_static("supported_ops", &Executor::supported_ops);

  nb::class_<PyTranslator>(m, "Translator", "The native translator over an exported model directory")
      .def(nb::init<const std::string&, int, const std::string&, bool>(), nb::arg("model_dir"),
           nb::arg("threads") = 1, nb::arg("kernel") = "", nb::arg("verify_checksums") = true)
      .def("translate_batch", &PyTranslator::translate_batch, nb::arg("sentences"), nb::arg("beam_size") = 4,
           nb::arg("length_penalty") = 1.0f, nb::arg("max_len_a") = 1.2f, nb::arg("max_len_b") = 10.0f,
           nb::arg("max_batch_tokens") = 2048)
      .def("generate", &PyTranslator::generate, nb::arg("sources"), nb::arg("beam_size") = 4,
           nb::arg("length_penalty") = 1.0f, nb::arg("max_len_a") = 1.2f, nb::arg("max_len_b") = 10.0f,
           nb::arg("max_batch_tokens") = 2048)
      .def("encode", [](const PyTranslator& t, const std::string& s) { return t.get().encode(s); })
      .def("decode", [](const PyTranslator& t, const std::vector<int32_t>& ids) { return t.get().decode(ids); })
      .def_prop_ro("source_language", [](const PyTranslator& t) { return t.get().source_language(); })
      .def_prop_ro("target_language", [](const PyTranslator& t) { return t.get().target_language(); })
      .def_prop_ro("max_positions", [](const PyTranslator& t) { return t.get().max_positions(); })
      .def("enable_profiling", [](PyTranslator& t, bool on) { t.get().enable_profiling(on); })
      .def("profile", [](const PyTranslator& t) { return profile_list(t.get().profile()); })
      .def("pool_stats", [](const PyTranslator& t) { return stats_dict(t.get().pool_stats()); });
  m.def(
      "resample",
      [](nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu> x, int64_t orig_rate,
         int64_t new_rate) {
        std::vector<float> y;
        {
          nb::gil_scoped_release release;
          y = resample(x.data(), x.shape(0), orig_rate, new_rate);
        }
        return y;
      },
      nb::arg("x"), nb::arg("orig_rate"), nb::arg("new_rate"),
      "The runtime's resampler (ondevice/resample.h; the speed ensemble uses it): float32 1-D samples "
      "from orig_rate to new_rate Hz, as a list (ondevice.slu.audio.resample computes the same)");
  nb::class_<PyUnderstander>(m, "Understander",
                             "The native speech-intent recognizer over an exported SLU model directory")
      .def(nb::init<const std::string&, int, const std::string&, bool, bool>(), nb::arg("model_dir"),
           nb::arg("threads") = 0, nb::arg("kernel") = "", nb::arg("verify_checksums") = true,
           nb::arg("speed_ensemble") = true,
           "threads: kernel threads per call (0: one per hardware thread); speed_ensemble: run the "
           "manifest's ensemble_rates (understander.h)")
      .def("understand", &PyUnderstander::understand, nb::arg("pcm"),
           "16 kHz mono float32 PCM (1-D) -> {slot: {'label', 'score', 'logits'}} for action, object, "
           "location (labels: the best of the manifest's intents when joint_decoding, else each slot's arg "
           "max); releases the GIL")
      .def_prop_ro("sample_rate", [](const PyUnderstander& u) { return u.get().sample_rate(); })
      .def_prop_ro("min_samples", [](const PyUnderstander& u) { return u.get().min_samples(); })
      .def_prop_ro("max_samples", [](const PyUnderstander& u) { return u.get().max_samples(); })
      .def_prop_ro("threads", [](const PyUnderstander& u) { return u.get().threads(); })
      .def_prop_ro("ensemble_rates", [](const PyUnderstander& u) { return u.get().ensemble_rates(); },
                   "the manifest's ensemble_rates ([] when it lists none)")
      .def_prop_ro("speed_ensemble", [](const PyUnderstander& u) { return u.get().speed_ensemble(); },
                   "whether understand() runs the ensemble rates")
      .def_prop_ro("joint_decoding", [](const PyUnderstander& u) { return u.get().joint_decoding(); },
                   "whether the manifest lists valid intents (understand() decodes over them)")
      .def_prop_ro(
          "intents",
          [](const PyUnderstander& u) {
            nb::list out;
            for (const auto& it : u.get().intents()) out.append(nb::make_tuple(it[0], it[1], it[2]));
            return out;
          },
          "the manifest's valid intents as (action, object, location) tuples; [] when it lists none")
      .def("labels", [](const PyUnderstander& u, const std::string& slot) { return u.get().labels(slot); },
           nb::arg("slot"))
      .def("enable_profiling", [](PyUnderstander& u, bool on) { u.get().enable_profiling(on); })
      .def("profile", [](const PyUnderstander& u) { return profile_list(u.get().profile()); })
      .def("pool_stats", [](const PyUnderstander& u) { return stats_dict(u.get().pool_stats()); });
  m.attr("TILE_ROWS") = kTileRows;
  m.attr("UNDERSTANDER_POOL_KEEP_BYTES") = kUnderstanderPoolKeepBytes;
  m.attr("FORMAT_VERSION") = nb::make_tuple(kFormatVersionMajor, kFormatVersionMinor);
}
