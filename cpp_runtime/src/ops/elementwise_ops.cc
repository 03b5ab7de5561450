// Element-wise operators with numpy broadcasting: Add, Sub, Mul, Div, Equal,
// Where, Not, Relu, Sin, Cos, Sqrt, Cast.
#include <array>
#include <cmath>
#include <limits>
#include <type_traits>

#include "ondevice/error.h"
#include "op_kernel.h"

namespace ondevice::ops {
namespace {

// Calls body(out_offset, in_offsets, inner_count, inner_strides) for every run
// of the output's last dimension.
template <size_t N, typename Body>
void broadcast_loop(const Shape& out, const std::array<std::vector<int64_t>, N>& strides, Body body) {
  const int64_t total = shape_numel(out);
  if (total == 0) return;
  std::array<int64_t, N> off{}, inner{};
  if (out.empty()) {
    body(int64_t(0), off, int64_t(1), inner);
    return;
  }
  const size_t r = out.size();
  for (size_t k = 0; k < N; ++k) inner[k] = strides[k][r - 1];
  const int64_t n = out[r - 1];
  std::vector<int64_t> idx(r, 0);
  for (int64_t o = 0; o < total; o += n) {
    body(o, off, n, inner);
    for (size_t d = r - 1; d-- > 0;) {  // advance the counter over dims 0..r-2
      ++idx[d];
      for (size_t k = 0; k < N; ++k) off[k] += strides[k][d];
      if (idx[d] < out[d]) break;
      for (size_t k = 0; k < N; ++k) off[k] -= strides[k][d] * out[d];
      idx[d] = 0;
    }
  }
}

template <typename T, typename F>
void binary_typed(const Tensor& a, const Tensor& b, Tensor& y, const Shape& out, F f) {
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  auto* py = y.mutable_data<decltype(f(T(), T()))>();
  if (a.shape() == out && b.shape() == out) {
    for (int64_t i = 0; i < y.numel(); ++i) py[i] = f(pa[i], pb[i]);
    return;
  }
  std::array<std::vector<int64_t>, 2> s = {broadcast_strides(a.shape(), out), broadcast_strides(b.shape(), out)};
  broadcast_loop<2>(out, s, [&](int64_t o, const std::array<int64_t, 2>& off, int64_t n,
                                const std::array<int64_t, 2>& in) {
    const T* xa = pa + off[0];
    const T* xb = pb + off[1];
    auto* yo = py + o;
    if (in[0] == 1 && in[1] == 1) {
      for (int64_t i = 0; i < n; ++i) yo[i] = f(xa[i], xb[i]);
    } else if (in[0] == 1 && in[1] == 0) {
      const T vb = xb[0];
      for (int64_t i = 0; i < n; ++i) yo[i] = f(xa[i], vb);
    } else {
      for (int64_t i = 0; i < n; ++i) yo[i] = f(xa[i * in[0]], xb[i * in[1]]);
    }
  });
}

enum class BinOp { kAdd, kSub, kMul, kDiv, kEqual };

// Integer Add/Sub/Mul wrap around in two's complement (as numpy, and in
// practice onnxruntime's compiled loops) instead of overflowing, which would
// be undefined behaviour.
template <typename T>
T wrap_add(T a, T b) {
  if constexpr (std::is_integral_v<T>) return T(std::make_unsigned_t<T>(a) + std::make_unsigned_t<T>(b));
  else return a + b;
}
template <typename T>
T wrap_sub(T a, T b) {
  if constexpr (std::is_integral_v<T>) return T(std::make_unsigned_t<T>(a) - std::make_unsigned_t<T>(b));
  else return a - b;
}
template <typename T>
T wrap_mul(T a, T b) {
  if constexpr (std::is_integral_v<T>) return T(std::make_unsigned_t<T>(a) * std::make_unsigned_t<T>(b));
  else return a * b;
}
// Float: IEEE division (x/0 is inf or nan). Integer: truncates toward zero
// (the ONNX spec, onnxruntime); the divisor was checked for zeros, and
// lowest / -1 wraps to lowest instead of trapping.
template <typename T>
T divide(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    if (b == T(-1)) return wrap_sub(T(0), a);
    return T(a / b);
  } else {
    return a / b;
  }
}

class BinaryKernel : public OpKernel {
 public:
  BinaryKernel(const onnx::Node& node, BinOp op) : node_(node), op_(op) { check_inputs(node, 2, 2); }
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& a = input(node_, in, 0);
    const Tensor& b = input(node_, in, 1);
    if (a.dtype() != b.dtype())
      throw ArgumentError(where(node_) + "input types differ: " + dtype_name(a.dtype()) + " and " + dtype_name(b.dtype()));
    const Shape shape = broadcast_shapes(node_, a.shape(), b.shape());
    const DType ty = op_ == BinOp::kEqual ? DType::kBool : a.dtype();
    switch (a.dtype()) {
      case DType::kFloat32: return dispatch<float>(a, b, out[0], shape, ty, ctx);
      case DType::kInt64: return dispatch<int64_t>(a, b, out[0], shape, ty, ctx);
      case DType::kInt32: return dispatch<int32_t>(a, b, out[0], shape, ty, ctx);
      case DType::kBool:
        if (op_ == BinOp::kEqual) return dispatch<bool>(a, b, out[0], shape, ty, ctx);
        break;
      default: break;
    }
    throw ArgumentError(where(node_) + "unsupported type " + dtype_name(a.dtype()));
  }

 private:
  template <typename T>
  void dispatch(const Tensor& a, const Tensor& b, Tensor& y, const Shape& shape, DType ty, const OpContext& ctx) const {
    if constexpr (std::is_integral_v<T>) {
      // Every element of b takes part when the output is not empty.
      if (op_ == BinOp::kDiv && shape_numel(shape) > 0) {
        const T* pb = b.data<T>();
        for (int64_t i = 0; i < b.numel(); ++i)
          if (pb[i] == T(0)) throw ArgumentError(where(node_) + "integer division by zero");
      }
    }
    y = Tensor::allocate(ty, shape, ctx.pool);
    if constexpr (std::is_same_v<T, bool>) {
      binary_typed<T>(a, b, y, shape, [](T u, T v) { return bool(u == v); });
    } else {
      switch (op_) {
        case BinOp::kAdd: return binary_typed<T>(a, b, y, shape, [](T u, T v) { return wrap_add(u, v); });
        case BinOp::kSub: return binary_typed<T>(a, b, y, shape, [](T u, T v) { return wrap_sub(u, v); });
        case BinOp::kMul: return binary_typed<T>(a, b, y, shape, [](T u, T v) { return wrap_mul(u, v); });
        case BinOp::kDiv: return binary_typed<T>(a, b, y, shape, [](T u, T v) { return divide(u, v); });
        case BinOp::kEqual: return binary_typed<T>(a, b, y, shape, [](T u, T v) { return bool(u == v); });
      }
    }
  }
  const onnx::Node& node_;
  BinOp op_;
};

class WhereKernel : public OpKernel {
 public:
  explicit WhereKernel(const onnx::Node& node) : node_(node) { check_inputs(node, 3, 3); }
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& c = input(node_, in, 0);
    const Tensor& x = input(node_, in, 1);
    const Tensor& y = input(node_, in, 2);
    if (c.dtype() != DType::kBool) throw ArgumentError(where(node_) + "condition must be bool");
    if (x.dtype() != y.dtype()) throw ArgumentError(where(node_) + "X and Y types differ");
    const Shape shape = broadcast_shapes(node_, broadcast_shapes(node_, c.shape(), x.shape()), y.shape());
    out[0] = Tensor::allocate(x.dtype(), shape, ctx.pool);
    switch (x.dtype()) {
      case DType::kFloat32: return typed<float>(c, x, y, out[0], shape);
      case DType::kInt64: return typed<int64_t>(c, x, y, out[0], shape);
      case DType::kInt32: return typed<int32_t>(c, x, y, out[0], shape);
      case DType::kUint8: return typed<uint8_t>(c, x, y, out[0], shape);
      case DType::kBool: return typed<bool>(c, x, y, out[0], shape);
    }
  }

 private:
  template <typename T>
  void typed(const Tensor& c, const Tensor& x, const Tensor& y, Tensor& o, const Shape& shape) const {
    const bool* pc = c.data<bool>();
    const T* px = x.data<T>();
    const T* py = y.data<T>();
    T* po = o.mutable_data<T>();
    std::array<std::vector<int64_t>, 3> s = {broadcast_strides(c.shape(), shape), broadcast_strides(x.shape(), shape),
                                             broadcast_strides(y.shape(), shape)};
    broadcast_loop<3>(shape, s, [&](int64_t off, const std::array<int64_t, 3>& io, int64_t n,
                                    const std::array<int64_t, 3>& st) {
      for (int64_t i = 0; i < n; ++i)
        po[off + i] = pc[io[0] + i * st[0]] ? px[io[1] + i * st[1]] : py[io[2] + i * st[2]];
    });
  }
  const onnx::Node& node_;
};

enum class UnOp { kNot, kRelu, kSin, kCos, kSqrt };

class UnaryKernel : public OpKernel {
 public:
  UnaryKernel(const onnx::Node& node, UnOp op) : node_(node), op_(op) { check_inputs(node, 1, 1); }
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& x = input(node_, in, 0);
    const DType want = op_ == UnOp::kNot ? DType::kBool : DType::kFloat32;
    if (x.dtype() != want) throw ArgumentError(where(node_) + "expected " + dtype_name(want) + " input");
    out[0] = Tensor::allocate(want, x.shape(), ctx.pool);
    const int64_t n = x.numel();
    if (op_ == UnOp::kNot) {
      const bool* p = x.data<bool>();
      bool* q = out[0].mutable_data<bool>();
      for (int64_t i = 0; i < n; ++i) q[i] = !p[i];
      return;
    }
    const float* p = x.data<float>();
    float* q = out[0].mutable_data<float>();
    switch (op_) {
      case UnOp::kRelu:
        for (int64_t i = 0; i < n; ++i) q[i] = p[i] > 0.0f ? p[i] : 0.0f;
        break;
      // In double, then rounded: the result is the correctly rounded float in
      // all but vanishingly rare cases, so x86-64 and aarch64 builds agree.
      case UnOp::kSin:
        for (int64_t i = 0; i < n; ++i) q[i] = float(std::sin(double(p[i])));
        break;
      case UnOp::kCos:
        for (int64_t i = 0; i < n; ++i) q[i] = float(std::cos(double(p[i])));
        break;
      // IEEE sqrt is correctly rounded on every ISA: the same bits everywhere.
      // Negative input gives NaN, -0 gives -0, +inf gives +inf.
      case UnOp::kSqrt:
        for (int64_t i = 0; i < n; ++i) q[i] = std::sqrt(p[i]);
        break;
      default: break;
    }
  }

 private:
  const onnx::Node& node_;
  UnOp op_;
};

template <typename From, typename To>
void convert(const Tensor& x, Tensor& y) {
  const From* p = x.data<From>();
  To* q = y.mutable_data<To>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    if constexpr (std::is_same_v<To, bool>) {
      q[i] = p[i] != From(0);
    } else if constexpr (std::is_floating_point_v<From> && !std::is_floating_point_v<To>) {
      // ONNX leaves out-of-range float->int casts undefined; saturate instead of UB.
      const double v = std::isnan(p[i]) ? 0.0 : std::trunc(double(p[i]));
      const double lo = double(std::numeric_limits<To>::lowest()), hi = double(std::numeric_limits<To>::max());
      q[i] = v <= lo ? std::numeric_limits<To>::lowest() : v >= hi ? std::numeric_limits<To>::max() : To(v);
    } else {
      q[i] = To(p[i]);
    }
  }
}

template <typename From>
void convert_from(const Tensor& x, Tensor& y) {
  switch (y.dtype()) {
    case DType::kFloat32: return convert<From, float>(x, y);
    case DType::kInt64: return convert<From, int64_t>(x, y);
    case DType::kInt32: return convert<From, int32_t>(x, y);
    case DType::kUint8: return convert<From, uint8_t>(x, y);
    case DType::kBool: return convert<From, bool>(x, y);
  }
}

class CastKernel : public OpKernel {
 public:
  explicit CastKernel(const onnx::Node& node)
      : node_(node), to_(dtype_from_onnx(int32_t(attr_int_required(node, "to")))) {}
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& x = input(node_, in, 0);
    out[0] = Tensor::allocate(to_, x.shape(), ctx.pool);
    switch (x.dtype()) {
      case DType::kFloat32: return convert_from<float>(x, out[0]);
      case DType::kInt64: return convert_from<int64_t>(x, out[0]);
      case DType::kInt32: return convert_from<int32_t>(x, out[0]);
      case DType::kUint8: return convert_from<uint8_t>(x, out[0]);
      case DType::kBool: return convert_from<bool>(x, out[0]);
    }
  }

 private:
  const onnx::Node& node_;
  DType to_;
};

template <BinOp Op>
std::unique_ptr<OpKernel> make_binary(const NodeSpec& s) { return std::make_unique<BinaryKernel>(*s.node, Op); }
template <UnOp Op>
std::unique_ptr<OpKernel> make_unary(const NodeSpec& s) { return std::make_unique<UnaryKernel>(*s.node, Op); }

}  // namespace

void register_elementwise_ops(std::map<std::string, KernelFactory>& r) {
  r["Add"] = make_binary<BinOp::kAdd>;
  r["Sub"] = make_binary<BinOp::kSub>;
  r["Mul"] = make_binary<BinOp::kMul>;
  r["Div"] = make_binary<BinOp::kDiv>;
  r["Equal"] = make_binary<BinOp::kEqual>;
  r["Where"] = [](const NodeSpec& s) -> std::unique_ptr<OpKernel> { return std::make_unique<WhereKernel>(*s.node); };
  r["Not"] = make_unary<UnOp::kNot>;
  r["Relu"] = make_unary<UnOp::kRelu>;
  r["Sin"] = make_unary<UnOp::kSin>;
  r["Cos"] = make_unary<UnOp::kCos>;
  r["Sqrt"] = make_unary<UnOp::kSqrt>;
  r["Cast"] = [](const NodeSpec& s) -> std::unique_ptr<OpKernel> { return std::make_unique<CastKernel>(*s.node); };
}

}  // namespace ondevice::ops
