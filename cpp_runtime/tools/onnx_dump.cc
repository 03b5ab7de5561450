// ondevice_onnx_dump MODEL.onnx: prints what the runtime's ONNX reader sees in
// a model as canonical JSON (opsets, nodes in order with attributes,
// initializers with data type, dims, byte size and an FNV-1a 64 hash of their
// bytes, graph inputs/outputs, local functions). tests/test_onnx_reader_crosscheck.py
// compares it with the same summary computed from the `onnx` package's parse.
//
// Exit status: 0 on success, 1 when the model is rejected (the reason goes to
// stderr), 2 on bad usage.
#include <cmath>
#include <cstdio>
#include <string>

#include "ondevice/error.h"
#include "ondevice/onnx_model.h"

using namespace ondevice::onnx;

namespace {

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

// Shortest text that reads back as the same float; JSON has no NaN/Inf.
std::string number(float v) {
  if (std::isnan(v)) return "\"nan\"";
  if (std::isinf(v)) return v > 0 ? "\"inf\"" : "\"-inf\"";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", double(v));
  return buf;
}

std::string fnv1a64(const uint8_t* p, uint64_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint64_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  char buf[20];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return quote(buf);
}

template <typename T, typename F>
std::string list(const std::vector<T>& v, F item) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + item(v[i]);
  return out + "]";
}

std::string strings(const std::vector<std::string>& v) { return list(v, quote); }

std::string tensor(const Tensor& t) {
  const char* source = t.source == TensorSource::kRawData ? "raw" : t.source == TensorSource::kTypedData ? "typed" : "external";
  const TensorView v = t.view();
  return "{\"name\": " + quote(t.name) + ", \"data_type\": " + quote(data_type_name(t.data_type)) +
         ", \"dims\": " + list(t.dims, [](int64_t d) { return std::to_string(d); }) +
         ", \"byte_size\": " + std::to_string(v.byte_size) + ", \"source\": " + quote(source) +
         ", \"fnv1a64\": " + fnv1a64(v.data, v.byte_size) + "}";
}

std::string attribute(const Attribute& a) {
  std::string value = "null";
  if (a.ref_attr_name.empty()) {
    switch (a.type) {
      case AttributeType::kFloat: value = number(a.f); break;
      case AttributeType::kInt: value = std::to_string(a.i); break;
      case AttributeType::kString: value = quote(a.s); break;
      case AttributeType::kTensor: value = tensor(*a.t); break;
      case AttributeType::kFloats: value = list(a.floats, number); break;
      case AttributeType::kInts: value = list(a.ints, [](int64_t i) { return std::to_string(i); }); break;
      case AttributeType::kStrings: value = strings(a.strings); break;
      default: break;  // graphs and the other skipped kinds
    }
  }
  return "{\"name\": " + quote(a.name) + ", \"type\": " + quote(attribute_type_name(a.type)) +
         ", \"ref_attr_name\": " + quote(a.ref_attr_name) + ", \"value\": " + value + "}";
}

std::string node(const Node& n) {
  return "{\"op_type\": " + quote(n.op_type) + ", \"domain\": " + quote(n.domain) + ", \"name\": " + quote(n.name) +
         ", \"inputs\": " + strings(n.inputs) + ", \"outputs\": " + strings(n.outputs) +
         ", \"attributes\": " + list(n.attributes, attribute) + "}";
}

std::string value_info(const ValueInfo& v) {
  std::string elem = "null", shape = "null";
  if (v.type_kind == ValueInfo::TypeKind::kTensor) {
    elem = std::to_string(v.elem_type);
    if (v.has_shape)
      shape = list(v.shape, [](const Dimension& d) {
        return d.kind == Dimension::Kind::kValue   ? std::to_string(d.value)
               : d.kind == Dimension::Kind::kParam ? quote(d.param)
                                                   : std::string("null");
      });
  }
  return "{\"name\": " + quote(v.name) + ", \"elem_type\": " + elem + ", \"shape\": " + shape + "}";
}

std::string opsets(const std::vector<OperatorSetId>& v) {
  return list(v, [](const OperatorSetId& o) { return "[" + quote(o.domain) + ", " + std::to_string(o.version) + "]"; });
}

std::string function(const Function& f) {
  return "{\"domain\": " + quote(f.domain) + ", \"name\": " + quote(f.name) + ", \"inputs\": " + strings(f.inputs) +
         ", \"outputs\": " + strings(f.outputs) + ", \"attributes\": " + strings(f.attributes) +
         ", \"attribute_defaults\": " + list(f.attribute_defaults, attribute) +
         ", \"opset_import\": " + opsets(f.opset_import) + ", \"nodes\": " + list(f.nodes, node) + "}";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || argv[1][0] == '-') {
    std::fprintf(stderr, "usage: %s MODEL.onnx\n", argv[0]);
    return 2;
  }
  try {
    const Model m = load_onnx_model(argv[1]);
    const Graph& g = m.graph;
    std::string out = "{\"ir_version\": " + std::to_string(m.ir_version) +
                      ",\n \"producer_name\": " + quote(m.producer_name) +
                      ",\n \"producer_version\": " + quote(m.producer_version) +
                      ",\n \"opset_import\": " + opsets(m.opset_import) +
                      ",\n \"graph\": {\"name\": " + quote(g.name) +
                      ",\n  \"nodes\": " + list(g.nodes, node) +
                      ",\n  \"initializers\": " + list(g.initializers, tensor) +
                      ",\n  \"inputs\": " + list(g.inputs, value_info) +
                      ",\n  \"outputs\": " + list(g.outputs, value_info) + "}" +
                      ",\n \"functions\": " + list(m.functions, function) + "}\n";
    std::fputs(out.c_str(), stdout);
    return 0;
  } catch (const ondevice::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
