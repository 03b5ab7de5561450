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

  nb::ndarray<nb::numpy, float> gemm(nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu> x,
                                     const std::string& variant, int threads) const {
    const BitplaneLayout& L = matrix_.layout();
    if (x.shape(1) != L.cols)
      throw ArgumentError("input has " + std::to_string(x.shape(1)) + " features but the matrix has " +
                          std::to_string(L.cols) + " columns");
    const KernelVariant v = variant.empty() ? default_variant() : variant_from_name(variant);
    const size_t batch = x.shape(0);
    auto y = owned_array<float>(nullptr, {batch, size_t(L.rows)});
    {
      nb::gil_scoped_release release;
      bcq_gemm(matrix_, x.data(), batch, y.data(), v, threads);
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

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "ondevice C++ core: bit-plane (BCQ) format reader and LUT kernels";
  nb::exception<FormatError>(m, "FormatError", PyExc_ValueError);
  nb::exception<ArgumentError>(m, "ArgumentError", PyExc_ValueError);

  nb::class_<Matrix>(m, "Matrix")
      .def(nb::init<uint32_t, uint32_t, uint32_t, CArray<uint8_t>, CArray<uint8_t>, CArray<float>,
                    std::optional<CArray<float>>>(),
           nb::arg("rows"), nb::arg("cols"), nb::arg("group_size"), nb::arg("row_bits"), nb::arg("planes"),
           nb::arg("alpha"), nb::arg("offset").none())
      .def("gemm", &Matrix::gemm, nb::arg("x"), nb::arg("variant") = "", nb::arg("threads") = 1,
           "Y = X @ W_hat.T for X float32 [batch, cols]; releases the GIL.")
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
  m.attr("TILE_ROWS") = kTileRows;
  m.attr("FORMAT_VERSION") = nb::make_tuple(kFormatVersionMajor, kFormatVersionMinor);
}
