// The ONNX models the exporter writes, as plain C++ structs.
//
// A dependency-free reader of the subset of onnx.proto the runtime needs
// (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto,
// ValueInfoProto, FunctionProto), decoded straight from the protobuf wire
// format: the runtime must cross-compile for Android/aarch64 with nothing but a
// C++ toolchain, so it links no protobuf library.
//
// Every length, count, index and offset is checked: a truncated, corrupt or
// hostile file throws ondevice::FormatError naming the field path and byte
// offset, never crashes or reads out of bounds.
//
// Tensor bytes are never copied when the file stores them as bytes: raw_data
// points into the model buffer, and ONNX external data points into a read-only
// memory mapping of the weights file, one mapping per file shared by all its
// tensors. Only the typed repeated fields (float_data, int32_data, ...) are
// decoded into a small owned buffer, since their wire encoding is not the
// tensor's memory layout.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ondevice {
namespace onnx {

// TensorProto.DataType (onnx.proto).
enum DataType : int32_t {
  kUndefined = 0,
  kFloat = 1,
  kUint8 = 2,
  kInt8 = 3,
  kUint16 = 4,
  kInt16 = 5,
  kInt32 = 6,
  kInt64 = 7,
  kString = 8,
  kBool = 9,
  kFloat16 = 10,
  kDouble = 11,
  kUint32 = 12,
  kUint64 = 13,
  kComplex64 = 14,
  kComplex128 = 15,
  kBfloat16 = 16,
  kFloat8E4M3FN = 17,
  kFloat8E4M3FNUZ = 18,
  kFloat8E5M2 = 19,
  kFloat8E5M2FNUZ = 20,
  kUint4 = 21,
  kInt4 = 22,
  kFloat4E2M1 = 23,
  kFloat8E8M0 = 24,
  kUint2 = 25,
  kInt2 = 26,
};

// Bits per element of a data type with a fixed-size memory layout; 0 for the
// types this reader does not hold (UNDEFINED, STRING, unknown values).
uint32_t data_type_bits(int32_t data_type);
// "FLOAT", "INT64", ...; "UNKNOWN(<n>)" for values outside onnx.proto.
std::string data_type_name(int32_t data_type);

struct StringStringEntry {
  std::string key;
  std::string value;
};

struct OperatorSetId {
  std::string domain;  // "" is the default ONNX domain ("ai.onnx")
  int64_t version = 0;
};

// A borrowed, read-only view of a tensor's bytes (little-endian, row-major,
// sub-byte types packed as ONNX packs them). Valid while the Tensor it came
// from, or any copy of it, is alive.
struct TensorView {
  std::string name;
  const uint8_t* data = nullptr;  // null only when byte_size is 0
  uint64_t byte_size = 0;         // == ceil(element_count * data_type_bits / 8)
  int32_t data_type = kUndefined;
  std::vector<int64_t> dims;
  uint64_t element_count = 0;

  bool aligned(size_t alignment) const {
    return alignment == 0 || reinterpret_cast<uintptr_t>(data) % alignment == 0;
  }
  // The bytes as T*, after checking that the tensor is `expected` and has
  // T-sized elements, and that the pointer is aligned for T: raw_data inside
  // a protobuf has no alignment, and external data only has the alignment of
  // its offset (the exporter aligns to 64 bytes). Throws FormatError.
  template <typename T>
  const T* as(int32_t expected) const {
    check_as(expected, sizeof(T) * 8, alignof(T));
    return reinterpret_cast<const T*>(data);
  }

 private:
  void check_as(int32_t expected, size_t bits, size_t alignment) const;
};

// Where a tensor's bytes come from.
enum class TensorSource {
  kRawData,    // TensorProto.raw_data (or no data at all for a tensor of 0 elements)
  kTypedData,  // float_data / int32_data / int64_data / double_data / uint64_data, decoded
  kExternal,   // ONNX external data (data_location = EXTERNAL)
};

// Parsed external_data entries (onnx/docs/ExternalData.md).
struct ExternalData {
  std::string location;  // relative to the model file's directory
  uint64_t offset = 0;
  bool has_length = false;  // absent: the data runs to the end of the file
  uint64_t length = 0;
  // Recorded, not verified: verifying would read every page of the weights
  // up front, defeating the lazy mapping. The exporter's manifest carries
  // its own checksums.
  std::string checksum;
};

struct Tensor {
  std::string name;
  int32_t data_type = kUndefined;
  std::vector<int64_t> dims;  // empty: a scalar
  uint64_t element_count = 1;
  uint64_t byte_size = 0;  // what the dims and data type require
  TensorSource source = TensorSource::kRawData;
  std::vector<StringStringEntry> external_data;  // entries as written
  ExternalData external;                         // parsed, when source == kExternal

  // The bytes: in the model buffer (raw_data), in a mapped weights file
  // (external) or in a decoded copy (typed fields); `owner` keeps them alive.
  // Null for external data until resolve_external_data() maps it.
  const uint8_t* data = nullptr;
  std::shared_ptr<const void> owner;

  bool resolved() const { return data != nullptr || byte_size == 0; }
  // Throws FormatError when the tensor's external data is not resolved.
  TensorView view() const;
};

// AttributeProto.AttributeType.
enum class AttributeType : int32_t {
  kUndefined = 0,
  kFloat = 1,
  kInt = 2,
  kString = 3,
  kTensor = 4,
  kGraph = 5,
  kFloats = 6,
  kInts = 7,
  kStrings = 8,
  kTensors = 9,
  kGraphs = 10,
  kSparseTensor = 11,
  kSparseTensors = 12,
  kTypeProto = 13,
  kTypeProtos = 14,
};
const char* attribute_type_name(AttributeType t);

struct Attribute {
  std::string name;
  AttributeType type = AttributeType::kUndefined;
  // In a function body: the attribute takes the value of the calling node's
  // attribute of this name (and holds no value of its own).
  std::string ref_attr_name;
  float f = 0.0f;                    // kFloat
  int64_t i = 0;                     // kInt
  std::string s;                     // kString (bytes)
  std::shared_ptr<Tensor> t;         // kTensor
  std::vector<float> floats;         // kFloats
  std::vector<int64_t> ints;         // kInts
  std::vector<std::string> strings;  // kStrings
  // GRAPH(S), TENSORS, SPARSE_TENSOR(S) and TYPE_PROTO(S): only the type is
  // recorded, the value is skipped; the exporter emits no control flow, and an
  // executor rejects such nodes by their type.
};

struct Node {
  std::string name;
  std::string op_type;
  std::string domain;  // "" is the default ONNX domain
  std::string overload;
  std::vector<std::string> inputs;  // "" is an omitted optional input
  std::vector<std::string> outputs;
  std::vector<Attribute> attributes;

  const Attribute* attribute(const std::string& name) const;  // null if absent
};

struct Dimension {
  enum class Kind { kUnknown, kValue, kParam };
  Kind kind = Kind::kUnknown;
  int64_t value = 0;  // kValue
  std::string param;  // kParam: a symbolic dimension ("batch")
};

struct ValueInfo {
  std::string name;
  enum class TypeKind { kNone, kTensor, kOther };  // kOther: sequence, map, optional, sparse, opaque
  TypeKind type_kind = TypeKind::kNone;
  int32_t elem_type = kUndefined;  // kTensor
  bool has_shape = false;          // false: rank unknown
  std::vector<Dimension> shape;
};

struct Graph {
  std::string name;
  std::vector<Node> nodes;
  std::vector<Tensor> initializers;
  std::vector<ValueInfo> inputs;
  std::vector<ValueInfo> outputs;
};

// A model-local function (FunctionProto): how the custom `ondevice` ops are
// defined in terms of standard ONNX ops.
struct Function {
  std::string name;
  std::string domain;
  std::string overload;
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  std::vector<std::string> attributes;          // attribute names without defaults
  std::vector<Attribute> attribute_defaults;    // attribute_proto: names with default values
  std::vector<Node> nodes;
  std::vector<OperatorSetId> opset_import;
};

struct Model {
  int64_t ir_version = 0;
  std::vector<OperatorSetId> opset_import;
  std::string producer_name;
  std::string producer_version;
  std::string domain;
  int64_t model_version = 0;
  std::vector<StringStringEntry> metadata_props;
  Graph graph;
  std::vector<Function> functions;

  // The imported version of `domain`, or -1 when the model does not import it.
  int64_t opset_version(const std::string& domain) const;
  const Function* function(const std::string& domain, const std::string& name) const;  // null if absent
};

// Bounds on what a file may make the reader allocate or recurse into. The
// defaults fit any model this project exports with a wide margin.
struct ParseLimits {
  uint64_t max_model_bytes = (uint64_t(1) << 31) - 1;  // protobuf's own 2 GiB message limit
  int max_depth = 32;  // nested messages (and skipped groups); ONNX files nest 6 deep
  // Nodes, attributes, tensors, names, dims, attribute list values and typed
  // tensor values (float_data, ...), in total: bounds the heap a file can
  // claim. raw_data and external data are not copied and do not count.
  uint64_t max_items = 1u << 24;
  size_t max_rank = 64;  // dims of one tensor or shape
};

// Parses a serialized ModelProto held in `data`. raw_data tensors point into
// `data`, which `owner` must keep alive; external tensors are left unresolved
// (see resolve_external_data).
Model parse_onnx_model(const uint8_t* data, size_t size, std::shared_ptr<const void> owner,
                       const ParseLimits& limits = ParseLimits());

// Maps the external data of every tensor (initializers, and TENSOR attributes
// of graph and function nodes) read-only, resolving each `location` relative
// to `base_dir`. Rejects absolute locations and ones with a `..` component
// (symbolic links inside base_dir are followed: the directory's owner placed
// them). Each file is mapped once and shared by all its tensors. Checks that
// offset + length lies within the file and that length is what the tensor's
// dims and type require.
//
// A mapped file that is truncated while mapped makes later reads of the lost
// pages raise SIGBUS; the runtime does not guard against weights files being
// rewritten in place under a running process (the exporter writes new files
// and renames them, which leaves existing mappings intact).
void resolve_external_data(Model* model, const std::string& base_dir);

// Reads the `.onnx` file at `path` into memory, parses it and resolves its
// external data relative to the file's directory. Error messages start with
// the path.
Model load_onnx_model(const std::string& path, const ParseLimits& limits = ParseLimits());

}  // namespace onnx
}  // namespace ondevice
