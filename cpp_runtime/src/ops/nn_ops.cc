// Neural-network operators on float32: MatMul, Softmax, LayerNormalization.
#include <algorithm>

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
      detail::layer_norm_rows(p + r0 * size_t(n), q + r0 * size_t(n), r1 - r0, size_t(n), s, b, eps_);
    }, size_t(std::max<int64_t>(1, 16384 / n)));
  }

 private:
  const onnx::Node& node_;
  int64_t axis_;
  float eps_;
};

template <typename K>
std::unique_ptr<OpKernel> make(const NodeSpec& s) { return std::make_unique<K>(*s.node); }

}  // namespace

void register_nn_ops(std::map<std::string, KernelFactory>& r) {
  r["MatMul"] = make<MatMulKernel>;
  r["Softmax"] = make<SoftmaxKernel>;
  r["LayerNormalization"] = make<LayerNormKernel>;
}

}  // namespace ondevice::ops
