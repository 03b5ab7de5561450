// Neural-network operators on float32: MatMul, Softmax, LayerNormalization,
// ArgMax, ReduceMean.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "../kernels/float_kernels.h"
#include "../runtime/thread_pool.h"
#include "ondevice/error.h"
#include "op_kernel.h"

namespace ondevice::ops {
namespace {

class MatMulKernel : public OpKernel {
 public:
  explicit MatMulKernel(const onnx::Node& node) : node_(node) {}
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& a = input(node_, in, 0);
    const Tensor& b = input(node_, in, 1);
    if (a.dtype() != DType::kFloat32 || b.dtype() != DType::kFloat32)
      throw ArgumentError(where(node_) + "only float32 is supported");
    if (a.rank() < 1 || b.rank() < 1) throw ArgumentError(where(node_) + "scalar operand");
    // numpy matmul: 1-D operands are promoted to matrices and the added
    // dimension dropped from the result.
    Shape as = a.shape(), bs = b.shape();
    const bool a_vec = as.size() == 1, b_vec = bs.size() == 1;
    if (a_vec) as.insert(as.begin(), 1);
    if (b_vec) bs.push_back(1);
    const int64_t m = as[as.size() - 2], k = as.back(), n = bs.back();
    if (bs[bs.size() - 2] != k)
      throw ArgumentError(where(node_) + "shapes " + shape_string(a.shape()) + " and " + shape_string(b.shape()) +
                          " do not multiply");
    const Shape abatch(as.begin(), as.end() - 2), bbatch(bs.begin(), bs.end() - 2);
    const Shape batch = broadcast_shapes(node_, abatch, bbatch);
    Shape shape = batch;
    if (!a_vec) shape.push_back(m);
    if (!b_vec) shape.push_back(n);
    out[0] = Tensor::allocate(DType::kFloat32, shape, ctx.pool);
    const int64_t nb = shape_numel(batch);
    if (shape_numel(shape) == 0) return;
    const std::vector<int64_t> sa = broadcast_strides(abatch, batch), sb = broadcast_strides(bbatch, batch);
    // Offsets of each batch matrix in a and b.
    std::vector<int64_t> oa(static_cast<size_t>(nb)), ob(static_cast<size_t>(nb));
    {
      std::vector<int64_t> idx(batch.size(), 0);
      for (int64_t i = 0; i < nb; ++i) {
        int64_t x = 0, y = 0;
        for (size_t d = 0; d < batch.size(); ++d) {
          x += idx[d] * sa[d];
          y += idx[d] * sb[d];
        }
        oa[size_t(i)] = x * m * k;
        ob[size_t(i)] = y * k * n;
        for (size_t d = batch.size(); d-- > 0;) {
          if (++idx[d] < batch[d]) break;
          idx[d] = 0;
        }
      }
    }
    const float* pa = a.data<float>();
    const float* pb = b.data<float>();
    float* pc = out[0].mutable_data<float>();
    // Work items: (batch, block of rows); ~64k multiply-adds per item at least.
    const int64_t rows_per = std::max<int64_t>(1, std::min<int64_t>(m, 65536 / std::max<int64_t>(1, k * n)));
    const int64_t blocks = (m + rows_per - 1) / rows_per;
    // At least ~32k multiply-adds per thread: a decoder step's attention
    // products (one query row) are far cheaper than waking another thread.
    const size_t grain = size_t(std::max<int64_t>(1, 32768 / std::max<int64_t>(1, rows_per * k * n)));
    detail::parallel_for(size_t(nb * blocks), ctx.threads, [&](size_t w0, size_t w1) {
      for (size_t w = w0; w < w1; ++w) {
        const int64_t bi = int64_t(w) / blocks, r0 = (int64_t(w) % blocks) * rows_per;
        const int64_t r1 = std::min(m, r0 + rows_per);
        detail::gemm_f32(size_t(r1 - r0), size_t(n), size_t(k), pa + oa[size_t(bi)] + r0 * k, size_t(k),
                         pb + ob[size_t(bi)], size_t(n), pc + (bi * m + r0) * n, size_t(n));
      }
    }, grain);
  }

 private:
  const onnx::Node& node_;
};

// outer x n x inner decomposition around `axis`; a copy to rows when inner > 1.
class SoftmaxKernel : public OpKernel {
 public:
  explicit SoftmaxKernel(const onnx::Node& node) : node_(node), axis_(attr_int(node, "axis", -1)) {}
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& x = input(node_, in, 0);
    if (x.dtype() != DType::kFloat32) throw ArgumentError(where(node_) + "only float32 is supported");
    if (x.rank() == 0) throw ArgumentError(where(node_) + "scalar input");
    const size_t axis = size_t(normalize_axis(node_, axis_, int64_t(x.rank())));
    out[0] = Tensor::allocate(DType::kFloat32, x.shape(), ctx.pool);
    int64_t outer = 1, inner = 1;
    const int64_t n = x.dim(axis);
    for (size_t d = 0; d < axis; ++d) outer *= x.dim(d);
    for (size_t d = axis + 1; d < x.rank(); ++d) inner *= x.dim(d);
    const float* p = x.data<float>();
    float* q = out[0].mutable_data<float>();
    if (inner == 1) {
      std::copy(p, p + x.numel(), q);
      detail::parallel_for(size_t(outer), ctx.threads, [&](size_t r0, size_t r1) {
        detail::softmax_rows(q + r0 * size_t(n), r1 - r0, size_t(n));
      }, size_t(std::max<int64_t>(1, 8192 / std::max<int64_t>(1, n))));
      return;
    }
    std::vector<float> row(static_cast<size_t>(n));
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        for (int64_t j = 0; j < n; ++j) row[size_t(j)] = p[(o * n + j) * inner + i];
        detail::softmax_rows(row.data(), 1, size_t(n));
        for (int64_t j = 0; j < n; ++j) q[(o * n + j) * inner + i] = row[size_t(j)];
      }
  }

 private:
  const onnx::Node& node_;
  int64_t axis_;
};

class LayerNormKernel : public OpKernel {
 public:
  explicit LayerNormKernel(const onnx::Node& node)
      : node_(node), axis_(attr_int(node, "axis", -1)), eps_(attr_float(node, "epsilon", 1e-5f)) {
    for (size_t i = 1; i < node.outputs.size(); ++i)
      if (!node.outputs[i].empty()) throw FormatError(where(node) + "the Mean/InvStdDev outputs are not supported");
    if (attr_int(node, "stash_type", 1) != 1) throw FormatError(where(node) + "stash_type must be 1 (float)");
  }
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& x = input(node_, in, 0);
    const Tensor& scale = input(node_, in, 1);
    const Tensor* bias = in.size() > 2 ? in[2] : nullptr;
    if (x.dtype() != DType::kFloat32 || scale.dtype() != DType::kFloat32 ||
        (bias != nullptr && bias->dtype() != DType::kFloat32))
      throw ArgumentError(where(node_) + "only float32 is supported");
    const size_t axis = size_t(normalize_axis(node_, axis_, int64_t(x.rank())));
    int64_t rows = 1, n = 1;
    for (size_t d = 0; d < axis; ++d) rows *= x.dim(d);
    for (size_t d = axis; d < x.rank(); ++d) n *= x.dim(d);
    if (scale.numel() != n || (bias != nullptr && bias->numel() != n))
      throw ArgumentError(where(node_) + "scale/bias size does not match the normalized dimensions");
    out[0] = Tensor::allocate(DType::kFloat32, x.shape(), ctx.pool);
    if (n == 0) return;
    const float* p = x.data<float>();
    float* q = out[0].mutable_data<float>();
    const float* s = scale.data<float>();
    const float* b = bias != nullptr ? bias->data<float>() : nullptr;
    detail::parallel_for(size_t(rows), ctx.threads, [&](size_t r0, size_t r1) {
      detail::layer_norm_rows(p + r0 * size_t(n), q + r0 * size_t(n), r1 - r0, size_t(n), s, b, eps_, relu_);
    }, size_t(std::max<int64_t>(1, 16384 / n)));
  }
  void fuse_relu() { relu_ = true; }

 private:
  const onnx::Node& node_;
  int64_t axis_;
  float eps_;
  bool relu_ = false;  // a Relu reading only this output, fused (graph_fusion.h)
};

}  // namespace

bool fuse_relu_into_layer_norm(OpKernel& kernel) {
  auto* ln = dynamic_cast<LayerNormKernel*>(&kernel);
  if (ln == nullptr) return false;
  ln->fuse_relu();
  return true;
}

namespace {

// ArgMax over one axis (attributes axis, default 0, negative counts from the
// end; keepdims, default 1; select_last_index, default 0) of a float32, int64
// or int32 tensor; int64 indices. Ties give the first index (the last with
// select_last_index = 1), as in onnxruntime. NaN counts as larger than every
// number, as in numpy: the first (last) NaN wins.
class ArgMaxKernel : public OpKernel {
 public:
  explicit ArgMaxKernel(const onnx::Node& node)
      : node_(node), axis_(attr_int(node, "axis", 0)), keepdims_(attr_int(node, "keepdims", 1)),
        last_(attr_int(node, "select_last_index", 0)) {
    check_inputs(node, 1, 1);
    if (keepdims_ != 0 && keepdims_ != 1) throw FormatError(where(node) + "keepdims must be 0 or 1");
    if (last_ != 0 && last_ != 1) throw FormatError(where(node) + "select_last_index must be 0 or 1");
  }
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& x = input(node_, in, 0);
    const size_t axis = size_t(normalize_axis(node_, axis_, int64_t(x.rank())));
    int64_t outer = 1, inner = 1;
    const int64_t n = x.dim(axis);
    for (size_t d = 0; d < axis; ++d) outer *= x.dim(d);
    for (size_t d = axis + 1; d < x.rank(); ++d) inner *= x.dim(d);
    Shape shape = x.shape();
    if (keepdims_) shape[axis] = 1;
    else shape.erase(shape.begin() + std::ptrdiff_t(axis));
    if (x.dtype() != DType::kFloat32 && x.dtype() != DType::kInt64 && x.dtype() != DType::kInt32)
      throw ArgumentError(where(node_) + "unsupported type " + dtype_name(x.dtype()));
    if (n == 0 && outer * inner > 0) throw ArgumentError(where(node_) + "arg max over an empty axis");
    out[0] = Tensor::allocate(DType::kInt64, shape, ctx.pool);
    if (outer * inner == 0) return;
    switch (x.dtype()) {
      case DType::kFloat32: return typed<float>(x, out[0], outer, n, inner);
      case DType::kInt64: return typed<int64_t>(x, out[0], outer, n, inner);
      default: return typed<int32_t>(x, out[0], outer, n, inner);
    }
  }

 private:
  template <typename T>
  static bool nan(T v) {
    if constexpr (std::is_floating_point_v<T>) return std::isnan(v);
    else return false;
  }
  // Whether v replaces the best so far (which comes earlier along the axis).
  template <typename T>
  bool better(T v, T best) const {
    if (last_) return nan(v) || (!nan(best) && v >= best);
    return !nan(best) && (v > best || nan(v));
  }
  template <typename T>
  void typed(const Tensor& x, Tensor& y, int64_t outer, int64_t n, int64_t inner) const {
    const T* p = x.data<T>();
    int64_t* q = y.mutable_data<int64_t>();
    std::vector<T> best(static_cast<size_t>(inner));
    for (int64_t o = 0; o < outer; ++o) {
      const T* po = p + o * n * inner;
      int64_t* qo = q + o * inner;
      for (int64_t i = 0; i < inner; ++i) {
        best[size_t(i)] = po[i];
        qo[i] = 0;
      }
      for (int64_t k = 1; k < n; ++k) {
        const T* row = po + k * inner;
        for (int64_t i = 0; i < inner; ++i)
          if (better(row[i], best[size_t(i)])) {
            best[size_t(i)] = row[i];
            qo[i] = k;
          }
      }
    }
  }
  const onnx::Node& node_;
  int64_t axis_, keepdims_, last_;
};

// ReduceMean, opset 18 form: data (float32) and an optional `axes` input
// (int64 or int32, 1-D; a constant or computed in the graph); attributes
// keepdims (default 1) and noop_with_empty_axes (default 0), each 0 or 1.
// Negative axes count from the end; an axis listed twice is reduced once (as
// onnxruntime). No axes (input omitted or empty): every axis is reduced, or,
// with noop_with_empty_axes = 1, the input is returned as is. The opset-13
// form (an `axes` attribute) is a FormatError.
//
// Summation is deterministic: each output element adds its inputs one by one
// in row-major order (increasing flat input index) into a double, then the
// double sum is divided by the count in double and rounded once to float. No
// threads, no pairwise or vectorized reordering, so every build and ISA gives
// the same bits, and the result is at least as accurate as onnxruntime's float
// sums (the SLU graph averages up to 480,000 audio samples). The mean of an
// empty set (a reduced axis of length 0) is 0, as onnxruntime gives (the ONNX
// spec leaves it undefined; numpy gives NaN).
class ReduceMeanKernel : public OpKernel {
 public:
  explicit ReduceMeanKernel(const onnx::Node& node)
      : node_(node), keepdims_(attr_int(node, "keepdims", 1)), noop_(attr_int(node, "noop_with_empty_axes", 0)) {
    check_inputs(node, 1, 2);
    if (has_attr(node, "axes"))
      throw FormatError(where(node) + "attribute axes is not supported (opset 13 ReduceMean); since opset 18 " +
                        "axes is an input");
    if (keepdims_ != 0 && keepdims_ != 1) throw FormatError(where(node) + "keepdims must be 0 or 1");
    if (noop_ != 0 && noop_ != 1) throw FormatError(where(node) + "noop_with_empty_axes must be 0 or 1");
  }
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& x = input(node_, in, 0);
    if (x.dtype() != DType::kFloat32) throw ArgumentError(where(node_) + "only float32 is supported, got " + dtype_name(x.dtype()));
    const size_t r = x.rank();
    std::vector<bool> reduced(r, false);
    bool any = false;
    if (in.size() > 1 && in[1] != nullptr) {
      const Tensor& a = *in[1];
      if (a.rank() != 1) throw ArgumentError(where(node_) + "axes must be a 1-D tensor, got shape " + shape_string(a.shape()));
      for (int64_t v : int_values(node_, a)) {
        reduced[size_t(normalize_axis(node_, v, int64_t(r)))] = true;
        any = true;
      }
    }
    if (!any) {
      if (noop_) {
        out[0] = x;  // shares the buffer, as Identity does
        return;
      }
      reduced.assign(r, true);
    }
    Shape shape;
    int64_t count = 1;
    for (size_t d = 0; d < r; ++d) {
      if (!reduced[d]) shape.push_back(x.dim(d));
      else {
        count *= x.dim(d);
        if (keepdims_) shape.push_back(1);
      }
    }
    out[0] = Tensor::allocate(DType::kFloat32, shape, ctx.pool);
    const int64_t n_out = out[0].numel();
    float* q = out[0].mutable_data<float>();
    if (n_out == 0) return;
    std::vector<double> acc(static_cast<size_t>(n_out), 0.0);
    const int64_t total = x.numel();
    if (total > 0) {
      // Output stride of each input dimension (0 for the reduced ones).
      std::vector<int64_t> ostride(r, 0);
      for (size_t d = r, s = 1; d-- > 0;)
        if (!reduced[d]) {
          ostride[d] = int64_t(s);
          s *= size_t(x.dim(d));
        }
      const float* p = x.data<float>();
      const int64_t row = r > 0 ? x.dim(r - 1) : 1, rstride = r > 0 ? ostride[r - 1] : 0;
      std::vector<int64_t> idx(r, 0);
      int64_t o = 0;  // output offset of the current row's first element
      for (int64_t i = 0; i < total; i += row) {
        const float* pr = p + i;
        if (rstride == 0) {  // the last axis is reduced: the whole row goes to acc[o]
          double s = acc[size_t(o)];
          for (int64_t k = 0; k < row; ++k) s += double(pr[k]);
          acc[size_t(o)] = s;
        } else {
          for (int64_t k = 0; k < row; ++k) acc[size_t(o + k * rstride)] += double(pr[k]);
        }
        for (size_t d = r > 0 ? r - 1 : 0; d-- > 0;) {  // advance over dims 0..r-2
          o += ostride[d];
          if (++idx[d] < x.dim(d)) break;
          o -= ostride[d] * x.dim(d);
          idx[d] = 0;
        }
      }
    }
    const double c = double(count);
    for (int64_t j = 0; j < n_out; ++j) q[j] = count > 0 ? float(acc[size_t(j)] / c) : 0.0f;
  }

 private:
  const onnx::Node& node_;
  int64_t keepdims_, noop_;
};

template <typename K>
std::unique_ptr<OpKernel> make(const NodeSpec& s) { return std::make_unique<K>(*s.node); }

}  // namespace

void register_nn_ops(std::map<std::string, KernelFactory>& r) {
  r["MatMul"] = make<MatMulKernel>;
  r["Softmax"] = make<SoftmaxKernel>;
  r["LayerNormalization"] = make<LayerNormKernel>;
  r["ArgMax"] = make<ArgMaxKernel>;
  r["ReduceMean"] = make<ReduceMeanKernel>;
}

}  // namespace ondevice::ops
