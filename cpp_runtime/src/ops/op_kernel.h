// The interface between the executor and the operator implementations.
//
// Each supported operator registers a factory that turns one graph node (with
// whatever of its inputs are constants at load time) into an OpKernel; the
// kernel checks shapes and types on every call and throws ArgumentError with
// the node's name when they are wrong. A factory throws FormatError naming the
// node for what is wrong with the node itself (input count, attributes). Files: elementwise_ops.cc, shape_ops.cc,
// nn_ops.cc, bitplane_ops.cc.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ondevice/bcq_gemm.h"
#include "ondevice/onnx_model.h"
#include "ondevice/tensor.h"

namespace ondevice::ops {

struct OpContext {
  BufferPool* pool = nullptr;
  int threads = 1;
  BitplaneKernel kernel;
};

// Inputs of one call; nullptr for omitted optional inputs.
using OpInputs = std::vector<const Tensor*>;

class OpKernel {
 public:
  virtual ~OpKernel() = default;
  // Fills `outputs` (already sized to the node's output count).
  virtual void run(const OpInputs& inputs, std::vector<Tensor>& outputs, const OpContext& ctx) const = 0;
};

// What a factory sees: the node, and its inputs that are constants (nullptr
// for the others and for omitted ones).
struct NodeSpec {
  const onnx::Node* node = nullptr;
  std::vector<const Tensor*> constants;
};

using KernelFactory = std::unique_ptr<OpKernel> (*)(const NodeSpec&);

// "Add", "ondevice.BitPlaneMatMul", ... -> factory.
const std::map<std::string, KernelFactory>& registry();
std::string op_key(const onnx::Node& node);

// Registration, one function per operator file.
void register_elementwise_ops(std::map<std::string, KernelFactory>& r);
void register_shape_ops(std::map<std::string, KernelFactory>& r);
void register_nn_ops(std::map<std::string, KernelFactory>& r);
void register_bitplane_ops(std::map<std::string, KernelFactory>& r);

// A strided convolution over frames as the exporter writes it: Slice nodes
// taking Y[:, i : T - n + 1 + i, :] for i < n, a Concat of them on the last
// axis (the n-frame windows) and a BitPlaneMatMul of that. The executor
// (runtime/graph_fusion.cc) replaces the three by one step that multiplies the
// windows in place; it hands over the original kernels (and the Slices'
// constant inputs, slot 0 left for Y), which the fused step runs instead
// whenever its input is not such a Y.
struct FrameWindowParts {
  size_t window = 0;
  std::vector<std::unique_ptr<OpKernel>> slices;
  std::vector<OpInputs> slice_inputs;
  std::unique_ptr<OpKernel> concat;
};
// `matmul`: the BitPlaneMatMul kernel the registry made for `node` (taken over).
std::unique_ptr<OpKernel> make_frame_window_matmul(const onnx::Node& node, std::unique_ptr<OpKernel> matmul,
                                                   FrameWindowParts parts);

// Makes a LayerNormalization kernel (the registry's) apply ONNX Relu to its
// output in the same pass (graph_fusion.h); false, and nothing changed, for
// any other kernel.
bool fuse_relu_into_layer_norm(OpKernel& kernel);

// -- helpers shared by the operator files

// "<op> node '<name>': " for error messages.
std::string where(const onnx::Node& node);
int64_t attr_int(const onnx::Node& node, const std::string& name, int64_t fallback);
int64_t attr_int_required(const onnx::Node& node, const std::string& name);
float attr_float(const onnx::Node& node, const std::string& name, float fallback);
std::vector<int64_t> attr_ints(const onnx::Node& node, const std::string& name);
bool has_attr(const onnx::Node& node, const std::string& name);

// A required input: throws ArgumentError naming the node when absent.
const Tensor& input(const onnx::Node& node, const OpInputs& in, size_t i);
// Load-time arity check: FormatError naming the node unless it lists between
// `min` and `max` inputs and none of the first `min` (the required ones) is
// omitted.
void check_inputs(const onnx::Node& node, size_t min, size_t max);
// The values of an int64 (or int32) tensor, e.g. a shape or axes input.
std::vector<int64_t> int_values(const onnx::Node& node, const Tensor& t);
// Normalizes `axis` in [-rank, rank) (or [-rank-1, rank] with `plus_one`).
int64_t normalize_axis(const onnx::Node& node, int64_t axis, int64_t rank, bool plus_one = false);
// Numpy broadcasting of two shapes; ArgumentError when incompatible.
Shape broadcast_shapes(const onnx::Node& node, const Shape& a, const Shape& b);
// Row-major strides of `shape` as seen from an output of rank `out_rank`
// (0 for broadcast dimensions).
std::vector<int64_t> broadcast_strides(const Shape& shape, const Shape& out);

}  // namespace ondevice::ops
