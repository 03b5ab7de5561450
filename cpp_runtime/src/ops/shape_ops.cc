// Data-movement operators: Identity, Shape, Reshape, Unsqueeze, Squeeze,
// Transpose, Concat, Gather, Slice, CumSum, Pad.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "ondevice/error.h"
#include "op_kernel.h"

namespace ondevice::ops {
namespace {

class IdentityKernel : public OpKernel {
 public:
  explicit IdentityKernel(const onnx::Node& node) : node_(node) {}
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext&) const override {
    out[0] = input(node_, in, 0);  // shares the buffer: nothing writes an input
  }

 private:
  const onnx::Node& node_;
};

class ShapeKernel : public OpKernel {
 public:
  explicit ShapeKernel(const onnx::Node& node)
      : node_(node), start_(attr_int(node, "start", 0)), end_(attr_int(node, "end", INT64_MAX)),
        has_end_(has_attr(node, "end")) {}
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Shape& s = input(node_, in, 0).shape();
    const int64_t r = int64_t(s.size());
    auto clamp = [r](int64_t v) { return std::clamp<int64_t>(v < 0 ? v + r : v, 0, r); };
    const int64_t b = clamp(start_), e = has_end_ ? clamp(end_) : r;
    const int64_t n = std::max<int64_t>(0, e - b);
    out[0] = Tensor::allocate(DType::kInt64, {n}, ctx.pool);
    for (int64_t i = 0; i < n; ++i) out[0].mutable_data<int64_t>()[i] = s[size_t(b + i)];
  }

 private:
  const onnx::Node& node_;
  int64_t start_, end_;
  bool has_end_;
};

class ReshapeKernel : public OpKernel {
 public:
  explicit ReshapeKernel(const onnx::Node& node) : node_(node), allowzero_(attr_int(node, "allowzero", 0) != 0) {}
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext&) const override {
    const Tensor& x = input(node_, in, 0);
    std::vector<int64_t> spec = int_values(node_, input(node_, in, 1));
    Shape shape(spec.size());
    int64_t known = 1;
    int infer = -1;
    for (size_t i = 0; i < spec.size(); ++i) {
      int64_t d = spec[i];
      if (d == 0 && !allowzero_) {
        if (i >= x.rank()) throw ArgumentError(where(node_) + "0 in shape refers past the input's rank");
        d = x.dim(i);
      }
      if (d == -1) {
        if (infer >= 0) throw ArgumentError(where(node_) + "more than one -1 in shape");
        infer = int(i);
        continue;
      }
      if (d < 0) throw ArgumentError(where(node_) + "negative dimension in shape");
      shape[i] = d;
      known = shape_numel({known, d});
    }
    if (infer >= 0) {
      if (known == 0 || x.numel() % known != 0)
        throw ArgumentError(where(node_) + "cannot infer -1 reshaping " + shape_string(x.shape()));
      shape[size_t(infer)] = x.numel() / known;
    }
    if (shape_numel(shape) != x.numel())
      throw ArgumentError(where(node_) + "cannot reshape " + shape_string(x.shape()) + " to " + shape_string(shape));
    out[0] = x.reshaped(shape);
  }

 private:
  const onnx::Node& node_;
  bool allowzero_;
};

class UnsqueezeKernel : public OpKernel {
 public:
  UnsqueezeKernel(const onnx::Node& node, bool squeeze) : node_(node), squeeze_(squeeze) {}
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext&) const override {
    const Tensor& x = input(node_, in, 0);
    std::vector<int64_t> axes;
    if (in.size() > 1 && in[1] != nullptr) axes = int_values(node_, *in[1]);
    const int64_t r = int64_t(x.rank());
    Shape shape;
    if (squeeze_) {
      std::vector<bool> drop(size_t(r), false);
      if (axes.empty()) {
        for (int64_t i = 0; i < r; ++i) drop[size_t(i)] = x.dim(size_t(i)) == 1;
      }
      for (int64_t a : axes) {
        const int64_t i = normalize_axis(node_, a, r);
        if (x.dim(size_t(i)) != 1) throw ArgumentError(where(node_) + "cannot squeeze a dimension that is not 1");
        drop[size_t(i)] = true;
      }
      for (int64_t i = 0; i < r; ++i)
        if (!drop[size_t(i)]) shape.push_back(x.dim(size_t(i)));
    } else {
      const int64_t outr = r + int64_t(axes.size());
      std::vector<bool> ins(size_t(outr), false);
      for (int64_t a : axes) {
        const int64_t i = normalize_axis(node_, a, outr);
        if (ins[size_t(i)]) throw ArgumentError(where(node_) + "repeated axis");
        ins[size_t(i)] = true;
      }
      size_t k = 0;
      for (int64_t i = 0; i < outr; ++i) shape.push_back(ins[size_t(i)] ? 1 : x.dim(k++));
    }
    out[0] = x.reshaped(shape);
  }

 private:
  const onnx::Node& node_;
  bool squeeze_;
};

// Copies `src` (shape `in`) into `dst` with dimensions permuted by `perm`.
void transpose_bytes(const uint8_t* src, uint8_t* dst, const Shape& in, const std::vector<int64_t>& perm,
                     size_t elem) {
  const size_t r = in.size();
  std::vector<int64_t> in_stride(r, 1);
  for (size_t i = r; i-- > 1;) in_stride[i - 1] = in_stride[i] * in[i];
  Shape out(r);
  std::vector<int64_t> st(r);
  for (size_t i = 0; i < r; ++i) {
    out[i] = in[size_t(perm[i])];
    st[i] = in_stride[size_t(perm[i])];
  }
  const int64_t total = shape_numel(out);
  if (total == 0) return;
  if (r == 0) {
    std::memcpy(dst, src, elem);
    return;
  }
  const int64_t n = out[r - 1];
  const int64_t inner = st[r - 1];
  std::vector<int64_t> idx(r, 0);
  int64_t off = 0;
  for (int64_t o = 0; o < total; o += n) {
    if (inner == 1) {
      std::memcpy(dst + o * elem, src + off * elem, size_t(n) * elem);
    } else if (elem == 4) {
      const float* s = reinterpret_cast<const float*>(src) + off;
      float* d = reinterpret_cast<float*>(dst) + o;
      for (int64_t i = 0; i < n; ++i) d[i] = s[i * inner];
    } else {
      for (int64_t i = 0; i < n; ++i) std::memcpy(dst + (o + i) * elem, src + (off + i * inner) * elem, elem);
    }
    for (size_t d = r - 1; d-- > 0;) {
      ++idx[d];
      off += st[d];
      if (idx[d] < out[d]) break;
      off -= st[d] * out[d];
      idx[d] = 0;
    }
  }
}

class TransposeKernel : public OpKernel {
 public:
  explicit TransposeKernel(const onnx::Node& node) : node_(node), perm_(attr_ints(node, "perm")) {}
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& x = input(node_, in, 0);
    const size_t r = x.rank();
    std::vector<int64_t> perm = perm_;
    if (perm.empty()) {
      for (size_t i = 0; i < r; ++i) perm.push_back(int64_t(r - 1 - i));
    }
    if (perm.size() != r) throw ArgumentError(where(node_) + "perm does not match the input's rank");
    std::vector<bool> seen(r, false);
    Shape shape(r);
    for (size_t i = 0; i < r; ++i) {
      if (perm[i] < 0 || perm[i] >= int64_t(r) || seen[size_t(perm[i])])
        throw ArgumentError(where(node_) + "perm is not a permutation");
      seen[size_t(perm[i])] = true;
      shape[i] = x.dim(size_t(perm[i]));
    }
    out[0] = Tensor::allocate(x.dtype(), shape, ctx.pool);
    transpose_bytes(static_cast<const uint8_t*>(x.raw()),
                    static_cast<uint8_t*>(const_cast<void*>(out[0].raw())), x.shape(), perm, dtype_size(x.dtype()));
  }

 private:
  const onnx::Node& node_;
  std::vector<int64_t> perm_;
};

class ConcatKernel : public OpKernel {
 public:
  explicit ConcatKernel(const onnx::Node& node) : node_(node), axis_(attr_int_required(node, "axis")) {}
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& first = input(node_, in, 0);
    const int64_t r = int64_t(first.rank());
    const size_t axis = size_t(normalize_axis(node_, axis_, r));
    Shape shape = first.shape();
    shape[axis] = 0;
    for (size_t k = 0; k < in.size(); ++k) {
      const Tensor& t = input(node_, in, k);
      if (t.dtype() != first.dtype() || int64_t(t.rank()) != r)
        throw ArgumentError(where(node_) + "inputs differ in type or rank");
      for (size_t d = 0; d < size_t(r); ++d)
        if (d != axis && t.dim(d) != first.dim(d))
          throw ArgumentError(where(node_) + "shapes " + shape_string(first.shape()) + " and " +
                              shape_string(t.shape()) + " differ outside the axis");
      shape[axis] += t.dim(axis);
    }
    out[0] = Tensor::allocate(first.dtype(), shape, ctx.pool);
    const size_t elem = dtype_size(first.dtype());
    int64_t outer = 1, inner = 1;
    for (size_t d = 0; d < axis; ++d) outer *= shape[d];
    for (size_t d = axis + 1; d < size_t(r); ++d) inner *= shape[d];
    uint8_t* dst = static_cast<uint8_t*>(const_cast<void*>(out[0].raw()));
    const size_t row = size_t(shape[axis] * inner) * elem;
    size_t at = 0;
    for (size_t k = 0; k < in.size(); ++k) {
      const Tensor& t = *in[k];
      const size_t chunk = size_t(t.dim(axis) * inner) * elem;
      if (chunk == 0) continue;
      const uint8_t* src = static_cast<const uint8_t*>(t.raw());
      for (int64_t o = 0; o < outer; ++o) std::memcpy(dst + size_t(o) * row + at, src + size_t(o) * chunk, chunk);
      at += chunk;
    }
  }

 private:
  const onnx::Node& node_;
  int64_t axis_;
};

// Gather on any axis (negative counts from the end): the output is
// data.shape[:axis] + indices.shape + data.shape[axis+1:]; int32 or int64
// indices, negative ones counting from the end, out of range: ArgumentError.
class GatherKernel : public OpKernel {
 public:
  explicit GatherKernel(const onnx::Node& node) : node_(node), axis_(attr_int(node, "axis", 0)) { check_inputs(node, 2, 2); }
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& data = input(node_, in, 0);
    const Tensor& idx = input(node_, in, 1);
    if (data.rank() < 1) throw ArgumentError(where(node_) + "data must have rank >= 1");
    const size_t axis = size_t(normalize_axis(node_, axis_, int64_t(data.rank())));
    const int64_t n = data.dim(axis);
    const std::vector<int64_t> ids = gather_ids(idx, n);
    Shape shape(data.shape().begin(), data.shape().begin() + std::ptrdiff_t(axis));
    shape.insert(shape.end(), idx.shape().begin(), idx.shape().end());
    int64_t outer = 1, inner = 1;
    for (size_t d = 0; d < axis; ++d) outer *= data.dim(d);
    for (size_t d = axis + 1; d < data.rank(); ++d) {
      shape.push_back(data.dim(d));
      inner *= data.dim(d);
    }
    out[0] = Tensor::allocate(data.dtype(), shape, ctx.pool);
    if (out[0].numel() == 0) return;
    const size_t row = size_t(inner) * dtype_size(data.dtype());
    const uint8_t* src = static_cast<const uint8_t*>(data.raw());
    uint8_t* dst = static_cast<uint8_t*>(const_cast<void*>(out[0].raw()));
    for (int64_t o = 0; o < outer; ++o)
      for (size_t i = 0; i < ids.size(); ++i, dst += row)
        std::memcpy(dst, src + (size_t(o * n) + size_t(ids[i])) * row, row);
  }

 private:
  std::vector<int64_t> gather_ids(const Tensor& idx, int64_t n) const {
    std::vector<int64_t> ids(size_t(idx.numel()));
    for (size_t i = 0; i < ids.size(); ++i) {
      int64_t v = idx.dtype() == DType::kInt64 ? idx.data<int64_t>()[i]
                  : idx.dtype() == DType::kInt32 ? idx.data<int32_t>()[i]
                                                 : throw ArgumentError(where(node_) + "indices must be int32/int64");
      if (v < -n || v >= n) throw ArgumentError(where(node_) + "index " + std::to_string(v) + " out of range [" +
                                                std::to_string(-n) + ", " + std::to_string(n - 1) + "]");
      ids[i] = v < 0 ? v + n : v;
    }
    return ids;
  }
  const onnx::Node& node_;
  int64_t axis_;
};

// Copies `count` elements of E bytes, `step` elements apart in `src`, to `dst`.
template <size_t E>
void copy_strided(uint8_t* dst, const uint8_t* src, int64_t count, int64_t step) {
  for (int64_t i = 0; i < count; ++i) std::memcpy(dst + size_t(i) * E, src + (i * step) * int64_t(E), E);
}

// Slice, opset 10+ form: starts, ends and the optional axes and steps are
// inputs (constants or computed values, e.g. from Shape), int64 or int32, 1-D
// and of one length. Any element type. As the ONNX spec (opset 13) and
// onnxruntime: negative starts/ends count from the end of the axis; starts
// are then clamped to [0, dim] (step > 0) or [0, dim - 1] (step < 0), ends to
// [0, dim] or [-1, dim - 1] (so, unlike numpy, x[-5::-1] of 3 elements is
// [x0]); steps may be negative but not 0; an axis may appear once; an empty
// range gives a dimension of 0. As onnxruntime, an end of INT64_MAX or
// INT32_MAX means "past the last element in the step's direction" (numpy's
// None), for negative steps too; INT64_MIN clamps to the beginning.
class SliceKernel : public OpKernel {
 public:
  explicit SliceKernel(const onnx::Node& node) : node_(node) {
    check_inputs(node, 3, 5);
    for (const char* a : {"starts", "ends", "axes"})
      if (has_attr(node, a))
        throw FormatError(where(node) + "attribute " + a + " is not supported (opset 1 Slice); since opset 10 " +
                          "starts, ends and axes are inputs");
  }
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& x = input(node_, in, 0);
    const std::vector<int64_t> starts = list(in, 1, "starts"), ends = list(in, 2, "ends");
    const size_t n = starts.size();
    if (ends.size() != n) throw ArgumentError(where(node_) + "starts and ends differ in length");
    const int64_t r = int64_t(x.rank());
    std::vector<int64_t> axes, steps;
    if (in.size() > 3 && in[3] != nullptr) {
      axes = list(in, 3, "axes");
      if (axes.size() != n) throw ArgumentError(where(node_) + "axes and starts differ in length");
    } else {
      for (size_t i = 0; i < n; ++i) axes.push_back(int64_t(i));
    }
    if (in.size() > 4 && in[4] != nullptr) {
      steps = list(in, 4, "steps");
      if (steps.size() != n) throw ArgumentError(where(node_) + "steps and starts differ in length");
    } else {
      steps.assign(n, 1);
    }
    Shape shape = x.shape();
    std::vector<int64_t> begin(size_t(r), 0), step(size_t(r), 1);
    std::vector<bool> seen(size_t(r), false);
    for (size_t i = 0; i < n; ++i) {
      const size_t a = size_t(normalize_axis(node_, axes[i], r));
      if (seen[a]) throw ArgumentError(where(node_) + "axis " + std::to_string(a) + " is sliced twice");
      seen[a] = true;
      const int64_t st = steps[i], dim = x.dim(a);
      if (st == 0) throw ArgumentError(where(node_) + "step 0");
      if (dim == 0) continue;  // stays empty
      int64_t b = starts[i], e = ends[i];
      if (b < 0) b += dim;  // dim > 0: no overflow, even from INT64_MIN
      if (e == INT64_MAX || e == INT32_MAX) e = st > 0 ? dim : -1;  // "to the end", either way (onnxruntime)
      else if (e < 0) e += dim;
      const int64_t lo = st > 0 ? 0 : -1, hi = st > 0 ? dim : dim - 1;
      b = std::clamp<int64_t>(b, 0, hi);
      e = std::clamp<int64_t>(e, lo, hi);
      // |st| as unsigned (st may be INT64_MIN); the distance is at most dim + 1.
      const uint64_t mag = st > 0 ? uint64_t(st) : uint64_t(0) - uint64_t(st);
      const int64_t dist = st > 0 ? e - b : b - e;
      const int64_t count = dist <= 0 ? 0 : int64_t((uint64_t(dist) + mag - 1) / mag);
      shape[a] = count;
      begin[a] = count > 0 ? b : 0;
      step[a] = count > 1 ? st : 1;  // |st| < dim when it is ever applied: no overflow below
    }
    bool whole = true;
    for (size_t d = 0; d < size_t(r); ++d) whole = whole && begin[d] == 0 && step[d] == 1 && shape[d] == x.dim(d);
    if (whole) {
      out[0] = x;  // shares the buffer, as Identity does
      return;
    }
    const int64_t total = shape_numel(shape);
    const size_t rr = size_t(r);  // >= 1 here: a scalar is always whole
    std::vector<int64_t> istride(rr, 1), inc(rr);
    for (size_t d = rr; d-- > 1;) istride[d - 1] = istride[d] * x.dim(d);
    int64_t off = 0;
    for (size_t d = 0; d < rr; ++d) {
      off += begin[d] * istride[d];
      inc[d] = step[d] * istride[d];
    }
    if (total > 0 && contiguous(x.shape(), shape, step)) {
      // One run of the input's bytes (e.g. frames [1:] of [1, T, C]): a view, no copy. Nothing
      // writes an op's inputs, and the view keeps the buffer alive.
      out[0] = x.view(shape, off);
      return;
    }
    out[0] = Tensor::allocate(x.dtype(), shape, ctx.pool);
    if (total == 0) return;
    const size_t elem = dtype_size(x.dtype());
    const uint8_t* src = static_cast<const uint8_t*>(x.raw());
    uint8_t* dst = static_cast<uint8_t*>(const_cast<void*>(out[0].raw()));
    const int64_t row = shape[rr - 1], last = step[rr - 1];
    std::vector<int64_t> idx(rr, 0);
    for (int64_t o = 0; o < total; o += row) {
      uint8_t* q = dst + size_t(o) * elem;
      const uint8_t* p = src + off * int64_t(elem);
      if (last == 1) {
        std::memcpy(q, p, size_t(row) * elem);
      } else {
        switch (elem) {
          case 1: copy_strided<1>(q, p, row, last); break;
          case 4: copy_strided<4>(q, p, row, last); break;
          case 8: copy_strided<8>(q, p, row, last); break;
          default: throw ArgumentError(where(node_) + "unsupported element size");
        }
      }
      for (size_t d = rr - 1; d-- > 0;) {  // advance the counter over dims 0..r-2
        ++idx[d];
        off += inc[d];
        if (idx[d] < shape[d]) break;
        off -= inc[d] * shape[d];
        idx[d] = 0;
      }
    }
  }

 private:
  // Whether the slice is one contiguous run of the row-major input: every axis after the last
  // restricted one whole, that axis stepping by 1 (or taking one element), every axis before it
  // of output size 1.
  static bool contiguous(const Shape& in, const Shape& out, const std::vector<int64_t>& step) {
    size_t last = 0;
    bool any = false;
    for (size_t d = 0; d < in.size(); ++d)
      if (out[d] != in[d]) last = d, any = true;
    if (!any) return false;  // whole along every axis but with an offset or step: not here
    if (step[last] != 1 && out[last] != 1) return false;
    for (size_t d = last + 1; d < in.size(); ++d)
      if (step[d] != 1) return false;
    for (size_t d = 0; d < last; ++d)
      if (out[d] != 1) return false;
    return true;
  }

  std::vector<int64_t> list(const OpInputs& in, size_t i, const char* what) const {
    const Tensor& t = input(node_, in, i);
    if (t.rank() != 1) throw ArgumentError(where(node_) + what + " must be a 1-D tensor, got shape " + shape_string(t.shape()));
    return int_values(node_, t);
  }
  const onnx::Node& node_;
};

class CumSumKernel : public OpKernel {
 public:
  explicit CumSumKernel(const onnx::Node& node)
      : node_(node), exclusive_(attr_int(node, "exclusive", 0) != 0), reverse_(attr_int(node, "reverse", 0) != 0) {}
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& x = input(node_, in, 0);
    const std::vector<int64_t> a = int_values(node_, input(node_, in, 1));
    if (a.size() != 1) throw ArgumentError(where(node_) + "axis must be a scalar");
    const size_t axis = size_t(normalize_axis(node_, a[0], int64_t(x.rank())));
    out[0] = Tensor::allocate(x.dtype(), x.shape(), ctx.pool);
    switch (x.dtype()) {
      case DType::kInt64: return typed<int64_t>(x, out[0], axis);
      case DType::kInt32: return typed<int32_t>(x, out[0], axis);
      case DType::kFloat32: return typed<float>(x, out[0], axis);
      default: throw ArgumentError(where(node_) + "unsupported type");
    }
  }

 private:
  template <typename T>
  void typed(const Tensor& x, Tensor& y, size_t axis) const {
    int64_t outer = 1, inner = 1;
    const int64_t n = x.dim(axis);
    for (size_t d = 0; d < axis; ++d) outer *= x.dim(d);
    for (size_t d = axis + 1; d < x.rank(); ++d) inner *= x.dim(d);
    const T* p = x.data<T>();
    T* q = y.mutable_data<T>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        T acc = T(0);
        for (int64_t k = 0; k < n; ++k) {
          const int64_t kk = reverse_ ? n - 1 - k : k;
          const int64_t at = (o * n + kk) * inner + i;
          if (exclusive_) {
            q[at] = acc;
            acc = add(acc, p[at]);
          } else {
            acc = add(acc, p[at]);
            q[at] = acc;
          }
        }
      }
  }
  template <typename T>
  static T add(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      return T(std::make_unsigned_t<T>(a) + std::make_unsigned_t<T>(b));  // wraps, no UB
    } else {
      return a + b;
    }
  }
  const onnx::Node& node_;
  bool exclusive_, reverse_;
};

// Pad, mode "constant" with non-negative pads (the exporter pads an odd
// d_model's sinusoidal embedding by one zero column).
class PadKernel : public OpKernel {
 public:
  explicit PadKernel(const onnx::Node& node) : node_(node) {
    const onnx::Attribute* mode = node.attribute("mode");
    if (mode != nullptr && mode->s != "constant")
      throw FormatError(where(node) + "only mode 'constant' is supported, not '" + mode->s + "'");
  }
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& x = input(node_, in, 0);
    const std::vector<int64_t> pads = int_values(node_, input(node_, in, 1));
    const int64_t r = int64_t(x.rank());
    std::vector<int64_t> axes;
    if (in.size() > 3 && in[3] != nullptr) {
      for (int64_t a : int_values(node_, *in[3])) axes.push_back(normalize_axis(node_, a, r));
    } else {
      for (int64_t a = 0; a < r; ++a) axes.push_back(a);
    }
    if (pads.size() != 2 * axes.size()) throw ArgumentError(where(node_) + "pads must have 2 values per axis");
    std::vector<int64_t> begin(size_t(r), 0), end(size_t(r), 0);
    for (size_t i = 0; i < axes.size(); ++i) {
      if (pads[i] < 0 || pads[i + axes.size()] < 0) throw ArgumentError(where(node_) + "negative pads are not supported");
      begin[size_t(axes[i])] = pads[i];
      end[size_t(axes[i])] = pads[i + axes.size()];
    }
    Shape shape = x.shape();
    for (size_t d = 0; d < shape.size(); ++d) shape[d] += begin[d] + end[d];
    out[0] = Tensor::allocate(x.dtype(), shape, ctx.pool);
    const size_t elem = dtype_size(x.dtype());
    uint8_t* dst = static_cast<uint8_t*>(const_cast<void*>(out[0].raw()));
    // Fill with the constant (zero by default), then copy the input block in.
    std::vector<uint8_t> value(elem, 0);
    if (in.size() > 2 && in[2] != nullptr) {
      const Tensor& c = *in[2];
      if (c.dtype() != x.dtype() || c.numel() != 1) throw ArgumentError(where(node_) + "constant_value must be one value of X's type");
      std::memcpy(value.data(), c.raw(), elem);
    }
    for (int64_t i = 0; i < out[0].numel(); ++i) std::memcpy(dst + size_t(i) * elem, value.data(), elem);
    if (x.numel() == 0) return;
    const size_t rr = size_t(r);
    if (rr == 0) {
      std::memcpy(dst, x.raw(), elem);
      return;
    }
    std::vector<int64_t> ostride(rr, 1);
    for (size_t d = rr; d-- > 1;) ostride[d - 1] = ostride[d] * shape[d];
    const int64_t inner = x.dim(rr - 1);
    const uint8_t* src = static_cast<const uint8_t*>(x.raw());
    std::vector<int64_t> idx(rr, 0);
    for (int64_t o = 0; o < x.numel(); o += inner) {
      int64_t off = begin[rr - 1];
      for (size_t d = 0; d + 1 < rr; ++d) off += (idx[d] + begin[d]) * ostride[d];
      std::memcpy(dst + size_t(off) * elem, src + size_t(o) * elem, size_t(inner) * elem);
      for (size_t d = rr - 1; d-- > 0;) {
        if (++idx[d] < x.dim(d)) break;
        idx[d] = 0;
      }
    }
  }

 private:
  const onnx::Node& node_;
};

template <typename K>
std::unique_ptr<OpKernel> make(const NodeSpec& s) { return std::make_unique<K>(*s.node); }

}  // namespace

void register_shape_ops(std::map<std::string, KernelFactory>& r) {
  r["Identity"] = make<IdentityKernel>;
  r["Shape"] = make<ShapeKernel>;
  r["Reshape"] = make<ReshapeKernel>;
  r["Unsqueeze"] = [](const NodeSpec& s) -> std::unique_ptr<OpKernel> {
    return std::make_unique<UnsqueezeKernel>(*s.node, false);
  };
  r["Squeeze"] = [](const NodeSpec& s) -> std::unique_ptr<OpKernel> {
    return std::make_unique<UnsqueezeKernel>(*s.node, true);
  };
  r["Transpose"] = make<TransposeKernel>;
  r["Concat"] = make<ConcatKernel>;
  r["Gather"] = make<GatherKernel>;
  r["Slice"] = make<SliceKernel>;
  r["CumSum"] = make<CumSumKernel>;
  r["Pad"] = make<PadKernel>;
}

}  // namespace ondevice::ops
