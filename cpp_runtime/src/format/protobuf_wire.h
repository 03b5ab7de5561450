// A bounds-checked reader of the protobuf wire format
// (https://protobuf.dev/programming-guides/encoding/), enough to decode ONNX
// files without linking a protobuf library: the runtime cross-compiles for
// Android/aarch64 with nothing but a C++ toolchain.
//
// Every read checks the remaining length first; any violation (truncation, a
// varint longer than 10 bytes or above 2^64, a length beyond the enclosing
// message, a bad tag, groups nested deeper than the limit) throws
// ondevice::FormatError naming the absolute byte offset. Nothing is copied:
// length-delimited values are returned as views into the caller's buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ondevice {
namespace wire {

enum class WireType : uint8_t {
  kVarint = 0,
  kFixed64 = 1,
  kLen = 2,
  kStartGroup = 3,  // deprecated groups: never written by ONNX, skipped when unknown
  kEndGroup = 4,
  kFixed32 = 5,
};

const char* wire_type_name(WireType t);

// A length-delimited value: bytes inside the parsed buffer.
struct Bytes {
  const uint8_t* data = nullptr;
  size_t size = 0;
  uint64_t offset = 0;  // absolute offset of data[0] in the outermost buffer

  std::string str() const { return std::string(reinterpret_cast<const char*>(data), size); }
};

struct Field {
  uint32_t number = 0;
  WireType type = WireType::kVarint;
  uint64_t offset = 0;  // absolute offset of the tag
};

class Reader {
 public:
  // `base_offset` is the absolute offset of data[0] (for error messages);
  // `depth` counts enclosing messages, which may not exceed `max_depth`.
  Reader(const uint8_t* data, size_t size, uint64_t base_offset = 0, int depth = 0, int max_depth = 32);

  bool done() const { return pos_ == end_; }
  uint64_t offset() const { return base_ + uint64_t(pos_ - begin_); }
  int depth() const { return depth_; }

  // Reads the next tag; false at the end of this message. An end-group tag
  // outside a group is an error (groups are consumed whole by skip()).
  bool next(Field* f);

  // Value readers; each checks that the field's wire type matches.
  uint64_t varint(const Field& f);
  uint32_t fixed32(const Field& f);
  uint64_t fixed64(const Field& f);
  Bytes bytes(const Field& f);
  // An embedded message: a reader over its bytes, one level deeper.
  Reader message(const Field& f);

  // Skips the value of a field of any wire type (unknown fields).
  void skip(const Field& f);

  // Repeated scalars arrive packed (one length-delimited run) or unpacked
  // (one tagged value each); both are accepted, as protobuf parsers must.
  // `out` may not grow beyond `max_values` elements: the check comes before
  // allocating, so a huge packed run costs nothing.
  void append_varints(const Field& f, std::vector<uint64_t>* out, uint64_t max_values);
  void append_fixed32s(const Field& f, std::vector<uint32_t>* out, uint64_t max_values);
  void append_fixed64s(const Field& f, std::vector<uint64_t>* out, uint64_t max_values);

  // Throws FormatError("<what> at byte <offset>").
  [[noreturn]] void fail(const std::string& what, uint64_t at) const;

 private:
  uint64_t raw_varint();
  void expect(const Field& f, WireType t) const;
  void skip_group(const Field& start);
  void check_room(size_t have, uint64_t adding, uint64_t max_values, uint64_t at) const;

  const uint8_t* begin_;
  const uint8_t* pos_;
  const uint8_t* end_;
  uint64_t base_;
  int depth_;
  int max_depth_;
};

}  // namespace wire
}  // namespace ondevice
