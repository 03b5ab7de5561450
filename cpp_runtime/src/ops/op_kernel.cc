// The operator registry and the helpers the operator files share.
#include "op_kernel.h"

#include <algorithm>

#include "ondevice/error.h"

namespace ondevice::ops {

const std::map<std::string, KernelFactory>& registry() {
  static const std::map<std::string, KernelFactory> r = [] {
    std::map<std::string, KernelFactory> m;
    register_elementwise_ops(m);
    register_shape_ops(m);
    register_nn_ops(m);
    register_bitplane_ops(m);
    return m;
  }();
  return r;
}

std::string op_key(const onnx::Node& node) {
  if (node.domain.empty() || node.domain == "ai.onnx") return node.op_type;
  return node.domain + "." + node.op_type;
}

std::string where(const onnx::Node& node) {
  return op_key(node) + " node '" + node.name + "': ";
}

bool has_attr(const onnx::Node& node, const std::string& name) { return node.attribute(name) != nullptr; }

int64_t attr_int(const onnx::Node& node, const std::string& name, int64_t fallback) {
  const onnx::Attribute* a = node.attribute(name);
  if (a == nullptr) return fallback;
  if (a->type != onnx::AttributeType::kInt) throw FormatError(where(node) + "attribute " + name + " is not an int");
  return a->i;
}

int64_t attr_int_required(const onnx::Node& node, const std::string& name) {
  if (!has_attr(node, name)) throw FormatError(where(node) + "missing attribute " + name);
  return attr_int(node, name, 0);
}

float attr_float(const onnx::Node& node, const std::string& name, float fallback) {
  const onnx::Attribute* a = node.attribute(name);
  if (a == nullptr) return fallback;
  if (a->type != onnx::AttributeType::kFloat) throw FormatError(where(node) + "attribute " + name + " is not a float");
  return a->f;
}

std::vector<int64_t> attr_ints(const onnx::Node& node, const std::string& name) {
  const onnx::Attribute* a = node.attribute(name);
  if (a == nullptr) return {};
  if (a->type != onnx::AttributeType::kInts) throw FormatError(where(node) + "attribute " + name + " is not ints");
  return a->ints;
}

const Tensor& input(const onnx::Node& node, const OpInputs& in, size_t i) {
  if (i >= in.size() || in[i] == nullptr) throw ArgumentError(where(node) + "input " + std::to_string(i) + " missing");
  return *in[i];
}

void check_inputs(const onnx::Node& node, size_t min, size_t max) {
  const size_t n = node.inputs.size();
  if (n < min || n > max)
    throw FormatError(where(node) + "has " + std::to_string(n) + " inputs, expected " +
                      (min == max ? std::to_string(min) : std::to_string(min) + ".." + std::to_string(max)));
  for (size_t i = 0; i < min; ++i)
    if (node.inputs[i].empty()) throw FormatError(where(node) + "required input " + std::to_string(i) + " is omitted");
}

std::vector<int64_t> int_values(const onnx::Node& node, const Tensor& t) {
  if (t.numel() > 4096) throw ArgumentError(where(node) + "integer list input too long");
  std::vector<int64_t> v(size_t(t.numel()));
  if (t.dtype() == DType::kInt64) {
    std::copy(t.data<int64_t>(), t.data<int64_t>() + t.numel(), v.begin());
  } else if (t.dtype() == DType::kInt32) {
    std::copy(t.data<int32_t>(), t.data<int32_t>() + t.numel(), v.begin());
  } else {
    throw ArgumentError(where(node) + "expected an int64 tensor, got " + dtype_name(t.dtype()));
  }
  return v;
}

int64_t normalize_axis(const onnx::Node& node, int64_t axis, int64_t rank, bool plus_one) {
  const int64_t r = plus_one ? rank + 1 : rank;
  if (axis < -r || axis >= r)
    throw ArgumentError(where(node) + "axis " + std::to_string(axis) + " out of range for rank " + std::to_string(rank));
  return axis < 0 ? axis + r : axis;
}

Shape broadcast_shapes(const onnx::Node& node, const Shape& a, const Shape& b) {
  const size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    const int64_t da = i + a.size() >= r ? a[i + a.size() - r] : 1;
    const int64_t db = i + b.size() >= r ? b[i + b.size() - r] : 1;
    if (da != db && da != 1 && db != 1)
      throw ArgumentError(where(node) + "shapes " + shape_string(a) + " and " + shape_string(b) +
                          " cannot be broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::vector<int64_t> broadcast_strides(const Shape& shape, const Shape& out) {
  std::vector<int64_t> s(out.size(), 0);
  int64_t stride = 1;
  for (size_t k = 0; k < shape.size(); ++k) {
    const size_t i = shape.size() - 1 - k;
    const size_t o = out.size() - 1 - k;
    s[o] = shape[i] == 1 ? 0 : stride;
    stride *= shape[i];
  }
  return s;
}

}  // namespace ondevice::ops
