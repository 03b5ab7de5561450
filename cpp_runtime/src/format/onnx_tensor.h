// TensorProto contents, between the wire reader and ondevice::onnx::Tensor:
// the data fields as they arrived, and the checks and decoding that turn them
// into a tensor (internal to the ONNX reader).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "format/protobuf_wire.h"
#include "ondevice/onnx_model.h"

namespace ondevice {
namespace onnx {
namespace detail {

struct TensorFields {
  bool has_raw_data = false;
  wire::Bytes raw_data;
  std::vector<uint32_t> float_data;   // fixed32 bit patterns
  std::vector<uint64_t> int32_data;   // varints (int32 sign-extended to 64 bits)
  std::vector<uint64_t> int64_data;   // varints
  std::vector<uint64_t> double_data;  // fixed64 bit patterns
  std::vector<uint64_t> uint64_data;  // varints
  uint64_t string_data_count = 0;
  int64_t data_location = 0;  // 0 DEFAULT, 1 EXTERNAL
};

// Checks dims and data type, picks the data source and sizes it: raw_data
// points into the model buffer (`owner`), typed fields are decoded, external
// entries are parsed (their bytes are mapped later). Throws FormatError with
// a message that the caller prefixes with the field path.
void finalize_tensor(TensorFields& fields, Tensor* t, const std::shared_ptr<const void>& owner, size_t max_rank);

}  // namespace detail
}  // namespace onnx
}  // namespace ondevice
