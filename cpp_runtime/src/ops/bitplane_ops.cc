// The `ondevice` domain: BitPlaneMatMul and BitPlaneGather (export/ops/*.md).
//
// The weights must be constants (initializers, memory-mapped): the matrix is
// validated once at load (sizes against the attributes, zero padding, finite
// scales) and then read in place by the LUT kernels on every call.
#include <algorithm>
#include <cstring>
#include <memory>

#include "ondevice/bcq_gemm.h"
#include "ondevice/error.h"
#include "op_kernel.h"

namespace ondevice::ops {
namespace {

// The matrix described by inputs 1..4 (planes, alpha, row_bits, offset) and
// the attributes K, N, group_size, bits.
struct BoundMatrix {
  BitplaneMatrix matrix;
  std::vector<Tensor> keep;  // the constant tensors the matrix points into
};

const Tensor& constant(const NodeSpec& s, size_t i, DType type, const char* what) {
  const onnx::Node& node = *s.node;
  if (i >= node.inputs.size() || node.inputs[i].empty())
    throw FormatError(where(node) + "input " + what + " is missing");
  if (s.constants[i] == nullptr)
    throw FormatError(where(node) + "input " + what + " ('" + node.inputs[i] +
                      "') must be an initializer: the runtime reads bit-plane weights in place");
  const Tensor& t = *s.constants[i];
  if (t.dtype() != type)
    throw FormatError(where(node) + "input " + what + " must be " + dtype_name(type) + ", got " + dtype_name(t.dtype()));
  return t;
}

BoundMatrix bind_matrix(const NodeSpec& s) {
  const onnx::Node& node = *s.node;
  const int64_t k = attr_int_required(node, "K"), n = attr_int_required(node, "N");
  const int64_t gs = attr_int_required(node, "group_size"), bits = attr_int_required(node, "bits");
  if (k < 1 || n < 1 || k > int64_t(kMaxDim) || n > int64_t(kMaxDim))
    throw FormatError(where(node) + "K and N must be in 1.." + std::to_string(kMaxDim));
  if (gs < 1 || gs > k) throw FormatError(where(node) + "group_size must be in 1..K");
  if (bits < 1 || bits > int64_t(kMaxBits)) throw FormatError(where(node) + "bits must be in 1..4");
  BoundMatrix b;
  const Tensor& planes = constant(s, 1, DType::kUint8, "planes");
  const Tensor& alpha = constant(s, 2, DType::kFloat32, "alpha");
  const Tensor& row_bits = constant(s, 3, DType::kUint8, "row_bits");
  const Tensor* offset = nullptr;
  if (node.inputs.size() > 4 && !node.inputs[4].empty()) offset = &constant(s, 4, DType::kFloat32, "offset");
  if (row_bits.numel() != n)
    throw FormatError(where(node) + "row_bits has " + std::to_string(row_bits.numel()) + " entries, N is " +
                      std::to_string(n));
  const uint8_t* rb = row_bits.data<uint8_t>();
  if (n > 0 && int64_t(*std::max_element(rb, rb + n)) != bits)
    throw FormatError(where(node) + "attribute bits is not the maximum of row_bits");
  try {
    b.matrix = BitplaneMatrix(uint32_t(n), uint32_t(k), uint32_t(gs), rb, size_t(n), planes.data<uint8_t>(),
                              size_t(planes.numel()), alpha.data<float>(), size_t(alpha.numel()),
                              offset ? offset->data<float>() : nullptr, offset ? size_t(offset->numel()) : 0,
                              nullptr, /*check_contents=*/true);
  } catch (const ArgumentError& e) {
    throw FormatError(where(node) + "invalid bit-plane matrix: " + e.what());
  }
  b.keep = {planes, alpha, row_bits};
  if (offset) b.keep.push_back(*offset);
  return b;
}

class BitPlaneMatMulKernel : public OpKernel {
 public:
  explicit BitPlaneMatMulKernel(const NodeSpec& s) : node_(*s.node), m_(bind_matrix(s)) {
    if (node_.inputs.size() > 5 && !node_.inputs[5].empty()) {
      bias_ = constant(s, 5, DType::kFloat32, "bias");
      if (bias_.numel() != int64_t(m_.matrix.layout().rows)) throw FormatError(where(node_) + "bias must have N values");
      has_bias_ = true;
    }
  }
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& x = input(node_, in, 0);
    const BitplaneLayout& L = m_.matrix.layout();
    if (x.dtype() != DType::kFloat32) throw ArgumentError(where(node_) + "X must be float32");
    if (x.rank() < 1 || x.shape().back() != int64_t(L.cols))
      throw ArgumentError(where(node_) + "X " + shape_string(x.shape()) + " must end in K = " + std::to_string(L.cols));
    Shape shape = x.shape();
    shape.back() = L.rows;
    out[0] = Tensor::allocate(DType::kFloat32, shape, ctx.pool);
    multiply(x.data<float>(), L.cols, size_t(x.numel() / int64_t(L.cols)), out[0].mutable_data<float>(), ctx);
  }

  // y[b, :] = W_hat x_b + bias for b < batch, where x_b starts at x + b * ldx
  // and holds K floats (ldx < K: overlapping rows, read in place by the dense
  // path and copied out for the LUT kernels, which read contiguous rows).
  void multiply(const float* x, size_t ldx, size_t batch, float* y, const OpContext& ctx) const {
    const BitplaneMatrix& w = m_.matrix;
    const BitplaneLayout& L = w.layout();
    if (ldx == L.cols) {
      ctx.kernel.gemm(w, x, batch, y, ctx.threads);
    } else if (ctx.kernel.takes_dense(w, batch)) {
      bcq_gemm_dense(w, x, batch, y, ctx.kernel.variant, ctx.threads, ldx);
    } else {
      Tensor rows = Tensor::allocate(DType::kFloat32, {int64_t(batch), int64_t(L.cols)}, ctx.pool);
      float* dst = rows.mutable_data<float>();
      for (size_t b = 0; b < batch; ++b) std::memcpy(dst + b * L.cols, x + b * ldx, L.cols * sizeof(float));
      ctx.kernel.gemm(w, dst, batch, y, ctx.threads);
    }
    if (has_bias_) {
      const float* b = bias_.data<float>();
      for (size_t r = 0; r < batch; ++r)
        for (uint32_t j = 0; j < L.rows; ++j) y[r * L.rows + j] += b[j];
    }
  }
  uint32_t cols() const { return m_.matrix.layout().cols; }
  uint32_t rows() const { return m_.matrix.layout().rows; }

 private:
  const onnx::Node& node_;
  BoundMatrix m_;
  Tensor bias_;
  bool has_bias_ = false;
};

// Slice x n -> Concat -> BitPlaneMatMul over a strided convolution's frame
// windows, fused by the executor (FrameWindowParts in op_kernel.h). Input 0 is
// the frames Y [B, T, S]; the other inputs are the BitPlaneMatMul's. Window t
// of batch element b is Y[b, t .. t + n - 1, :] flattened, which is n * S
// consecutive floats of Y: the product reads them in place (row stride S)
// instead of the Concat copying every window out. Anything else (another rank,
// T < n, K != n * S, another type) runs the original nodes one by one, so the
// fused step computes, and rejects, exactly what they did.
class FrameWindowMatMulKernel : public OpKernel {
 public:
  FrameWindowMatMulKernel(const onnx::Node& node, std::unique_ptr<BitPlaneMatMulKernel> mm, FrameWindowParts parts)
      : node_(node), mm_(std::move(mm)), parts_(std::move(parts)) {}
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& y = input(node_, in, 0);
    const int64_t n = int64_t(parts_.window);
    if (y.dtype() == DType::kFloat32 && y.rank() == 3 && y.dim(1) >= n && y.dim(2) * n == int64_t(mm_->cols())) {
      const int64_t batch = y.dim(0), frames = y.dim(1), width = y.dim(2), windows = frames - n + 1;
      out[0] = Tensor::allocate(DType::kFloat32, {batch, windows, int64_t(mm_->rows())}, ctx.pool);
      for (int64_t b = 0; b < batch; ++b)
        mm_->multiply(y.data<float>() + b * frames * width, size_t(width), size_t(windows),
                      out[0].mutable_data<float>() + b * windows * int64_t(mm_->rows()), ctx);
      return;
    }
    std::vector<Tensor> pieces(parts_.slices.size());
    OpInputs concat_in;
    for (size_t i = 0; i < parts_.slices.size(); ++i) {
      OpInputs slice_in = parts_.slice_inputs[i];
      slice_in[0] = &y;
      std::vector<Tensor> o(1);
      parts_.slices[i]->run(slice_in, o, ctx);
      pieces[i] = std::move(o[0]);
      concat_in.push_back(&pieces[i]);
    }
    std::vector<Tensor> x(1);
    parts_.concat->run(concat_in, x, ctx);
    OpInputs mm_in = in;
    mm_in[0] = &x[0];
    mm_->run(mm_in, out, ctx);
  }

 private:
  const onnx::Node& node_;
  std::unique_ptr<BitPlaneMatMulKernel> mm_;
  FrameWindowParts parts_;
};

class BitPlaneGatherKernel : public OpKernel {
 public:
  explicit BitPlaneGatherKernel(const NodeSpec& s) : node_(*s.node), m_(bind_matrix(s)) {}
  void run(const OpInputs& in, std::vector<Tensor>& out, const OpContext& ctx) const override {
    const Tensor& idx = input(node_, in, 0);
    const BitplaneMatrix& w = m_.matrix;
    const BitplaneLayout& L = w.layout();
    const int64_t n = L.rows;
    Shape shape = idx.shape();
    shape.push_back(L.cols);
    out[0] = Tensor::allocate(DType::kFloat32, shape, ctx.pool);
    float* y = out[0].mutable_data<float>();
    for (int64_t i = 0; i < idx.numel(); ++i) {
      int64_t v;
      if (idx.dtype() == DType::kInt64) v = idx.data<int64_t>()[i];
      else if (idx.dtype() == DType::kInt32) v = idx.data<int32_t>()[i];
      else throw ArgumentError(where(node_) + "indices must be int32 or int64");
      if (v < -n || v >= n)
        throw ArgumentError(where(node_) + "index " + std::to_string(v) + " is outside [" + std::to_string(-n) +
                            ", " + std::to_string(n - 1) + "]");
      const uint32_t row = uint32_t(v < 0 ? v + n : v);
      dequantize_row(row, y + i * int64_t(L.cols));
    }
  }

 private:
  // The spec's order: the offset (or 0), then + alpha_i * B_i for i = 0..q-1,
  // rounding after each addition; equals the PyTorch weight bit for bit.
  void dequantize_row(uint32_t row, float* y) const {
    const BitplaneMatrix& w = m_.matrix;
    const BitplaneLayout& L = w.layout();
    const uint32_t q = w.row_bits()[row];
    for (uint32_t g = 0; g < L.groups; ++g) {
      const uint32_t c0 = g * L.group_size, c1 = std::min(L.cols, c0 + L.group_size);
      const float o = w.has_offset() ? w.offset()[uint64_t(row) * L.groups + g] : 0.0f;
      for (uint32_t c = c0; c < c1; ++c) y[c] = o;
      for (uint32_t i = 0; i < q; ++i) {
        const float a = w.scale(row, i, g);
        for (uint32_t c = c0; c < c1; ++c) y[c] = y[c] + (w.bit(row, i, c) ? a : -a);
      }
    }
  }
  const onnx::Node& node_;
  BoundMatrix m_;
};

}  // namespace

std::unique_ptr<OpKernel> make_frame_window_matmul(const onnx::Node& node, std::unique_ptr<OpKernel> matmul,
                                                   FrameWindowParts parts) {
  // The registry's kernel for the node, already bound to its (validated) matrix: taken over, not rebuilt.
  auto* mm = dynamic_cast<BitPlaneMatMulKernel*>(matmul.get());
  if (mm == nullptr) throw FormatError(where(node) + "frame-window fusion of a node that is not a BitPlaneMatMul");
  matmul.release();
  return std::make_unique<FrameWindowMatMulKernel>(node, std::unique_ptr<BitPlaneMatMulKernel>(mm),
                                                   std::move(parts));
}

void register_bitplane_ops(std::map<std::string, KernelFactory>& r) {
  r["ondevice.BitPlaneMatMul"] = [](const NodeSpec& s) -> std::unique_ptr<OpKernel> {
    return std::make_unique<BitPlaneMatMulKernel>(s);
  };
  r["ondevice.BitPlaneGather"] = [](const NodeSpec& s) -> std::unique_ptr<OpKernel> {
    return std::make_unique<BitPlaneGatherKernel>(s);
  };
}

}  // namespace ondevice::ops
