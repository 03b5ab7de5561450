// ModelProto -> ondevice::onnx::Model, decoded from the protobuf wire format.
//
// Field numbers are those of onnx/onnx.proto (checked against the copy that
// ships with the onnx 1.23 Python package; protobuf field numbers are never
// reused, so older files decode the same). Unknown fields are skipped, as
// protobuf parsers do, so files from newer ONNX versions still load; fields
// this runtime cannot honour (sparse initializers, segmented tensors) are
// rejected rather than silently dropped. A singular message field that
// appears twice (which protobuf would merge) is rejected: no writer emits it.
#include <cstring>
#include <limits>
#include <new>
#include <utility>

#include "format/onnx_tensor.h"
#include "format/protobuf_wire.h"
#include "ondevice/error.h"
#include "ondevice/onnx_model.h"

namespace ondevice {
namespace onnx {

using wire::Field;
using wire::Reader;

const char* attribute_type_name(AttributeType t) {
  switch (t) {
    case AttributeType::kUndefined: return "UNDEFINED";
    case AttributeType::kFloat: return "FLOAT";
    case AttributeType::kInt: return "INT";
    case AttributeType::kString: return "STRING";
    case AttributeType::kTensor: return "TENSOR";
    case AttributeType::kGraph: return "GRAPH";
    case AttributeType::kFloats: return "FLOATS";
    case AttributeType::kInts: return "INTS";
    case AttributeType::kStrings: return "STRINGS";
    case AttributeType::kTensors: return "TENSORS";
    case AttributeType::kGraphs: return "GRAPHS";
    case AttributeType::kSparseTensor: return "SPARSE_TENSOR";
    case AttributeType::kSparseTensors: return "SPARSE_TENSORS";
    case AttributeType::kTypeProto: return "TYPE_PROTO";
    case AttributeType::kTypeProtos: return "TYPE_PROTOS";
  }
  return "UNKNOWN";
}

const Attribute* Node::attribute(const std::string& n) const {
  for (const Attribute& a : attributes)
    if (a.name == n) return &a;
  return nullptr;
}

int64_t Model::opset_version(const std::string& d) const {
  for (const OperatorSetId& o : opset_import)
    if (o.domain == d || (d.empty() && o.domain == "ai.onnx") || (d == "ai.onnx" && o.domain.empty()))
      return o.version;
  return -1;
}

const Function* Model::function(const std::string& d, const std::string& n) const {
  for (const Function& f : functions)
    if (f.domain == d && f.name == n) return &f;
  return nullptr;
}

namespace {

// Walks one ModelProto. The field path ("graph.node[3].attribute[0].t") is
// kept on an explicit stack that is deliberately not unwound on errors, so the
// top-level handler can say where the failure happened.
class Parser {
 public:
  Parser(std::shared_ptr<const void> owner, const ParseLimits& limits) : owner_(std::move(owner)), limits_(limits) {}

  Model model(Reader r);
  std::string where() const;

 private:
  void enter(const char* name, int64_t index = -1) { path_.push_back({name, index}); }
  void leave() { path_.pop_back(); }
  [[noreturn]] void fail(const Reader& r, const std::string& what, uint64_t at) const { r.fail(what, at); }
  void count(const Reader& r, uint64_t n = 1) {
    items_ += n;
    if (items_ > limits_.max_items)
      r.fail("more than " + std::to_string(limits_.max_items) + " items (nodes, names, values) in the model",
             r.offset());
  }

  std::string string(Reader& r, const Field& f) {
    count(r);
    return r.bytes(f).str();
  }
  int64_t int64(Reader& r, const Field& f) { return int64_t(r.varint(f)); }
  // Repeated scalars, appended within what is left of the item budget.
  void varints(Reader& r, const Field& f, std::vector<uint64_t>* out) {
    const size_t before = out->size();
    r.append_varints(f, out, before + (limits_.max_items - items_));
    count(r, out->size() - before);
  }
  void fixed32s(Reader& r, const Field& f, std::vector<uint32_t>* out) {
    const size_t before = out->size();
    r.append_fixed32s(f, out, before + (limits_.max_items - items_));
    count(r, out->size() - before);
  }
  void fixed64s(Reader& r, const Field& f, std::vector<uint64_t>* out) {
    const size_t before = out->size();
    r.append_fixed64s(f, out, before + (limits_.max_items - items_));
    count(r, out->size() - before);
  }
  int32_t int32(Reader& r, const Field& f) {
    const int64_t v = int64_t(r.varint(f));
    if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max()) fail(r, "value " + std::to_string(v) + " does not fit in int32", f.offset);
    return int32_t(v);
  }
  void once(Reader& r, const Field& f, bool* seen, const char* name) {
    if (*seen) fail(r, std::string("duplicate field '") + name + "'", f.offset);
    *seen = true;
  }

  OperatorSetId opset(Reader r);
  StringStringEntry entry(Reader r);
  void tensor(Reader r, Tensor* t);
  void attribute(Reader r, Attribute* a);
  void node(Reader r, Node* n);
  void value_info(Reader r, ValueInfo* v);
  void type_proto(Reader r, ValueInfo* v);
  void tensor_type(Reader r, ValueInfo* v);
  void shape(Reader r, ValueInfo* v);
  void graph(Reader r, Graph* g);
  void function(Reader r, Function* fn);

  struct PathEntry {
    const char* name;
    int64_t index;
  };
  std::vector<PathEntry> path_;
  std::shared_ptr<const void> owner_;
  const ParseLimits& limits_;
  uint64_t items_ = 0;
};

std::string Parser::where() const {
  std::string s = "ModelProto";
  for (const PathEntry& e : path_) {
    s += '.';
    s += e.name;
    if (e.index >= 0) s += "[" + std::to_string(e.index) + "]";
  }
  return s;
}

OperatorSetId Parser::opset(Reader r) {
  OperatorSetId o;
  Field f;
  while (r.next(&f)) {
    switch (f.number) {
      case 1: o.domain = string(r, f); break;
      case 2: o.version = int64(r, f); break;
      default: r.skip(f);
    }
  }
  return o;
}

StringStringEntry Parser::entry(Reader r) {
  StringStringEntry e;
  Field f;
  while (r.next(&f)) {
    switch (f.number) {
      case 1: e.key = string(r, f); break;
      case 2: e.value = string(r, f); break;
      default: r.skip(f);
    }
  }
  return e;
}

void Parser::tensor(Reader r, Tensor* t) {
  detail::TensorFields fields;
  const uint64_t start = r.offset();
  std::vector<uint64_t> dims;
  Field f;
  while (r.next(&f)) {
    switch (f.number) {
      case 1:
        enter("dims");
        varints(r, f, &dims);
        leave();
        break;
      case 2: enter("data_type"); t->data_type = int32(r, f); leave(); break;
      case 3: fail(r, "segmented tensors (TensorProto.segment) are not supported", f.offset);
      case 4: enter("float_data"); fixed32s(r, f, &fields.float_data); leave(); break;
      case 5: enter("int32_data"); varints(r, f, &fields.int32_data); leave(); break;
      case 6: enter("string_data"); (void)string(r, f); ++fields.string_data_count; leave(); break;
      case 7: enter("int64_data"); varints(r, f, &fields.int64_data); leave(); break;
      case 8: enter("name"); t->name = string(r, f); leave(); break;
      case 9:
        enter("raw_data");
        fields.raw_data = r.bytes(f);  // zero-copy: stays in the model buffer
        fields.has_raw_data = true;
        leave();
        break;
      case 10: enter("double_data"); fixed64s(r, f, &fields.double_data); leave(); break;
      case 11: enter("uint64_data"); varints(r, f, &fields.uint64_data); leave(); break;
      case 13:
        enter("external_data", int64_t(t->external_data.size()));
        count(r);
        t->external_data.push_back(entry(r.message(f)));
        leave();
        break;
      case 14: enter("data_location"); fields.data_location = int64(r, f); leave(); break;
      default: r.skip(f);
    }
  }
  if (dims.size() > limits_.max_rank)
    fail(r, "tensor of rank " + std::to_string(dims.size()) + " exceeds the limit of " +
                std::to_string(limits_.max_rank),
         start);
  t->dims.reserve(dims.size());
  for (uint64_t d : dims) t->dims.push_back(int64_t(d));
  try {
    detail::finalize_tensor(fields, t, owner_, limits_.max_rank);
  } catch (const FormatError& e) {
    fail(r, std::string("tensor '") + t->name + "': " + e.what(), start);
  }
}

void Parser::attribute(Reader r, Attribute* a) {
  const uint64_t start = r.offset();
  bool seen_t = false;
  Field f;
  while (r.next(&f)) {
    switch (f.number) {
      case 1: a->name = string(r, f); break;
      case 21: a->ref_attr_name = string(r, f); break;
      case 20: {
        const int64_t v = int64(r, f);
        if (v < 0 || v > 14) fail(r, "unknown attribute type " + std::to_string(v), f.offset);
        a->type = AttributeType(v);
        break;
      }
      case 2: {
        const uint32_t bits = r.fixed32(f);
        std::memcpy(&a->f, &bits, 4);
        break;
      }
      case 3: a->i = int64(r, f); break;
      case 4: a->s = string(r, f); break;
      case 5:
        once(r, f, &seen_t, "t");
        enter("t");
        a->t = std::make_shared<Tensor>();
        tensor(r.message(f), a->t.get());
        leave();
        break;
      case 7: {
        std::vector<uint32_t> bits;
        fixed32s(r, f, &bits);
        for (uint32_t b : bits) {
          float v;
          std::memcpy(&v, &b, 4);
          a->floats.push_back(v);
        }
        break;
      }
      case 8: {
        std::vector<uint64_t> v;
        varints(r, f, &v);
        for (uint64_t x : v) a->ints.push_back(int64_t(x));
        break;
      }
      case 9: a->strings.push_back(string(r, f)); break;
      // 6 g, 10 tensors, 11 graphs, 14 tp, 15 type_protos, 22 sparse_tensor,
      // 23 sparse_tensors: skipped whole; the type says what they were.
      default: r.skip(f);
    }
  }
  if (a->name.empty()) fail(r, "attribute without a name", start);
  if (a->type == AttributeType::kUndefined) fail(r, "attribute '" + a->name + "' has no type", start);
  if (a->type == AttributeType::kTensor && a->ref_attr_name.empty() && !a->t)
    fail(r, "TENSOR attribute '" + a->name + "' holds no tensor", start);
}

void Parser::node(Reader r, Node* n) {
  Field f;
  while (r.next(&f)) {
    switch (f.number) {
      case 1: n->inputs.push_back(string(r, f)); break;
      case 2: n->outputs.push_back(string(r, f)); break;
      case 3: n->name = string(r, f); break;
      case 4: n->op_type = string(r, f); break;
      case 7: n->domain = string(r, f); break;
      case 8: n->overload = string(r, f); break;
      case 5:
        enter("attribute", int64_t(n->attributes.size()));
        count(r);
        n->attributes.emplace_back();
        attribute(r.message(f), &n->attributes.back());
        leave();
        break;
      default: r.skip(f);
    }
  }
  if (n->op_type.empty()) fail(r, "node without an op_type", r.offset());
}

void Parser::shape(Reader r, ValueInfo* v) {
  v->has_shape = true;
  Field f;
  while (r.next(&f)) {
    if (f.number != 1) {
      r.skip(f);
      continue;
    }
    enter("dim", int64_t(v->shape.size()));
    count(r);
    if (v->shape.size() >= limits_.max_rank)
      fail(r, "shape rank exceeds the limit of " + std::to_string(limits_.max_rank), f.offset);
    Dimension d;
    Reader dr = r.message(f);
    Field g;
    while (dr.next(&g)) {
      // dim_value and dim_param form a oneof: the last one present wins.
      if (g.number == 1) {
        d.kind = Dimension::Kind::kValue;
        d.value = int64(dr, g);
        d.param.clear();
      } else if (g.number == 2) {
        d.kind = Dimension::Kind::kParam;
        d.param = string(dr, g);
        d.value = 0;
      } else {
        dr.skip(g);
      }
    }
    v->shape.push_back(std::move(d));
    leave();
  }
}

void Parser::tensor_type(Reader r, ValueInfo* v) {
  bool seen_shape = false;
  Field f;
  while (r.next(&f)) {
    switch (f.number) {
      case 1: v->elem_type = int32(r, f); break;
      case 2:
        once(r, f, &seen_shape, "shape");
        enter("shape");
        shape(r.message(f), v);
        leave();
        break;
      default: r.skip(f);
    }
  }
}

void Parser::type_proto(Reader r, ValueInfo* v) {
  Field f;
  while (r.next(&f)) {
    switch (f.number) {
      case 1:
        if (v->type_kind != ValueInfo::TypeKind::kNone) fail(r, "TypeProto holds more than one type", f.offset);
        v->type_kind = ValueInfo::TypeKind::kTensor;
        enter("tensor_type");
        tensor_type(r.message(f), v);
        leave();
        break;
      case 4: case 5: case 7: case 8: case 9:  // sequence, map, opaque, sparse tensor, optional
        if (v->type_kind != ValueInfo::TypeKind::kNone) fail(r, "TypeProto holds more than one type", f.offset);
        v->type_kind = ValueInfo::TypeKind::kOther;
        r.skip(f);
        break;
      default: r.skip(f);
    }
  }
}

void Parser::value_info(Reader r, ValueInfo* v) {
  bool seen_type = false;
  Field f;
  while (r.next(&f)) {
    switch (f.number) {
      case 1: v->name = string(r, f); break;
      case 2:
        once(r, f, &seen_type, "type");
        enter("type");
        type_proto(r.message(f), v);
        leave();
        break;
      default: r.skip(f);
    }
  }
}

void Parser::graph(Reader r, Graph* g) {
  Field f;
  while (r.next(&f)) {
    switch (f.number) {
      case 1:
        enter("node", int64_t(g->nodes.size()));
        count(r);
        g->nodes.emplace_back();
        node(r.message(f), &g->nodes.back());
        leave();
        break;
      case 2: g->name = string(r, f); break;
      case 5:
        enter("initializer", int64_t(g->initializers.size()));
        count(r);
        g->initializers.emplace_back();
        tensor(r.message(f), &g->initializers.back());
        leave();
        break;
      case 11:
      case 12: {
        std::vector<ValueInfo>& list = f.number == 11 ? g->inputs : g->outputs;
        enter(f.number == 11 ? "input" : "output", int64_t(list.size()));
        count(r);
        list.emplace_back();
        value_info(r.message(f), &list.back());
        leave();
        break;
      }
      case 15: fail(r, "sparse initializers are not supported", f.offset);
      default: r.skip(f);  // doc_string, value_info, quantization_annotation, metadata_props
    }
  }
}

void Parser::function(Reader r, Function* fn) {
  Field f;
  while (r.next(&f)) {
    switch (f.number) {
      case 1: fn->name = string(r, f); break;
      case 4: fn->inputs.push_back(string(r, f)); break;
      case 5: fn->outputs.push_back(string(r, f)); break;
      case 6: fn->attributes.push_back(string(r, f)); break;
      case 11:
        enter("attribute_proto", int64_t(fn->attribute_defaults.size()));
        count(r);
        fn->attribute_defaults.emplace_back();
        attribute(r.message(f), &fn->attribute_defaults.back());
        leave();
        break;
      case 7:
        enter("node", int64_t(fn->nodes.size()));
        count(r);
        fn->nodes.emplace_back();
        node(r.message(f), &fn->nodes.back());
        leave();
        break;
      case 9:
        enter("opset_import", int64_t(fn->opset_import.size()));
        count(r);
        fn->opset_import.push_back(opset(r.message(f)));
        leave();
        break;
      case 10: fn->domain = string(r, f); break;
      case 13: fn->overload = string(r, f); break;
      default: r.skip(f);
    }
  }
  if (fn->name.empty()) fail(r, "function without a name", r.offset());
}

Model Parser::model(Reader r) {
  Model m;
  bool seen_graph = false;
  Field f;
  while (r.next(&f)) {
    switch (f.number) {
      case 1: m.ir_version = int64(r, f); break;
      case 2: m.producer_name = string(r, f); break;
      case 3: m.producer_version = string(r, f); break;
      case 4: m.domain = string(r, f); break;
      case 5: m.model_version = int64(r, f); break;
      case 7:
        once(r, f, &seen_graph, "graph");
        enter("graph");
        graph(r.message(f), &m.graph);
        leave();
        break;
      case 8:
        enter("opset_import", int64_t(m.opset_import.size()));
        count(r);
        m.opset_import.push_back(opset(r.message(f)));
        leave();
        break;
      case 14:
        enter("metadata_props", int64_t(m.metadata_props.size()));
        count(r);
        m.metadata_props.push_back(entry(r.message(f)));
        leave();
        break;
      case 25:
        enter("functions", int64_t(m.functions.size()));
        count(r);
        m.functions.emplace_back();
        function(r.message(f), &m.functions.back());
        leave();
        break;
      default: r.skip(f);  // doc_string, training_info, configuration
    }
  }
  if (!seen_graph) fail(r, "model has no graph", r.offset());
  for (size_t i = 0; i < m.opset_import.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (m.opset_import[i].domain == m.opset_import[j].domain)
        fail(r, "opset_import lists domain '" + m.opset_import[i].domain + "' twice", r.offset());
  return m;
}

}  // namespace

Model parse_onnx_model(const uint8_t* data, size_t size, std::shared_ptr<const void> owner, const ParseLimits& limits) {
  if (data == nullptr && size != 0) throw FormatError("ONNX model: null buffer");
  if (uint64_t(size) > limits.max_model_bytes)
    throw FormatError("ONNX model of " + std::to_string(size) + " bytes exceeds the limit of " +
                      std::to_string(limits.max_model_bytes));
  Parser p(std::move(owner), limits);
  try {
    return p.model(Reader(data, size, 0, 0, limits.max_depth));
  } catch (const FormatError& e) {
    throw FormatError("invalid ONNX model: " + p.where() + ": " + e.what());
  } catch (const std::bad_alloc&) {
    throw FormatError("invalid ONNX model: " + p.where() + ": out of memory while parsing");
  }
}

}  // namespace onnx
}  // namespace ondevice
