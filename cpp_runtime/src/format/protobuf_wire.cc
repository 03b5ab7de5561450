// Protobuf wire-format reader (see protobuf_wire.h).
#include "format/protobuf_wire.h"

#include <cstring>

#include "ondevice/error.h"

namespace ondevice {
namespace wire {

namespace {
constexpr uint32_t kMaxFieldNumber = (1u << 29) - 1;
}

const char* wire_type_name(WireType t) {
  switch (t) {
    case WireType::kVarint: return "varint";
    case WireType::kFixed64: return "fixed64";
    case WireType::kLen: return "length-delimited";
    case WireType::kStartGroup: return "start-group";
    case WireType::kEndGroup: return "end-group";
    case WireType::kFixed32: return "fixed32";
  }
  return "invalid";
}

Reader::Reader(const uint8_t* data, size_t size, uint64_t base_offset, int depth, int max_depth)
    : begin_(data), pos_(data), end_(data + size), base_(base_offset), depth_(depth), max_depth_(max_depth) {
  if (data == nullptr && size != 0) fail("null buffer", base_offset);
  if (depth > max_depth) fail("messages nested deeper than " + std::to_string(max_depth) + " levels", base_offset);
}

void Reader::fail(const std::string& what, uint64_t at) const {
  throw FormatError(what + " at byte " + std::to_string(at));
}

uint64_t Reader::raw_varint() {
  const uint64_t at = offset();
  uint64_t v = 0;
  for (int i = 0; i < 10; ++i) {
    if (pos_ == end_) fail("truncated varint", at);
    const uint8_t b = *pos_++;
    // The 10th byte holds bit 63 only; anything more does not fit in 64 bits.
    if (i == 9 && b > 1) fail("varint does not fit in 64 bits", at);
    v |= uint64_t(b & 0x7F) << (7 * i);
    if ((b & 0x80) == 0) return v;
  }
  fail("varint longer than 10 bytes", at);
}

bool Reader::next(Field* f) {
  if (pos_ == end_) return false;
  const uint64_t at = offset();
  const uint64_t tag = raw_varint();
  const uint64_t number = tag >> 3;
  const uint32_t type = uint32_t(tag & 7);
  if (number == 0 || number > kMaxFieldNumber) fail("invalid field number " + std::to_string(number), at);
  if (type > 5) fail("invalid wire type " + std::to_string(type) + " (field " + std::to_string(number) + ")", at);
  f->number = uint32_t(number);
  f->type = WireType(type);
  f->offset = at;
  if (f->type == WireType::kEndGroup) fail("end-group tag without a matching start-group", at);
  return true;
}

void Reader::expect(const Field& f, WireType t) const {
  if (f.type != t)
    fail("field " + std::to_string(f.number) + " has wire type " + wire_type_name(f.type) + ", expected " +
             wire_type_name(t),
         f.offset);
}

uint64_t Reader::varint(const Field& f) {
  expect(f, WireType::kVarint);
  return raw_varint();
}

uint32_t Reader::fixed32(const Field& f) {
  expect(f, WireType::kFixed32);
  if (end_ - pos_ < 4) fail("truncated fixed32", offset());
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(pos_[i]) << (8 * i);
  pos_ += 4;
  return v;
}

uint64_t Reader::fixed64(const Field& f) {
  expect(f, WireType::kFixed64);
  if (end_ - pos_ < 8) fail("truncated fixed64", offset());
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(pos_[i]) << (8 * i);
  pos_ += 8;
  return v;
}

Bytes Reader::bytes(const Field& f) {
  expect(f, WireType::kLen);
  const uint64_t at = offset();
  const uint64_t len = raw_varint();
  const uint64_t remaining = uint64_t(end_ - pos_);
  if (len > remaining)
    fail("length " + std::to_string(len) + " exceeds the " + std::to_string(remaining) +
             " bytes left in the enclosing message (field " + std::to_string(f.number) + ")",
         at);
  Bytes b{pos_, size_t(len), offset()};
  pos_ += len;
  return b;
}

Reader Reader::message(const Field& f) {
  const Bytes b = bytes(f);
  return Reader(b.data, b.size, b.offset, depth_ + 1, max_depth_);
}

void Reader::skip(const Field& f) {
  switch (f.type) {
    case WireType::kVarint: (void)raw_varint(); return;
    case WireType::kFixed64: (void)fixed64(f); return;
    case WireType::kFixed32: (void)fixed32(f); return;
    case WireType::kLen: (void)bytes(f); return;
    case WireType::kStartGroup: skip_group(f); return;
    case WireType::kEndGroup: break;
  }
  fail("unexpected end-group tag", f.offset);
}

// Groups nest by tags, not lengths, so skipping one means scanning its fields.
// A stack of open group numbers (bounded by the depth limit) replaces
// recursion, so hostile nesting cannot exhaust the call stack.
void Reader::skip_group(const Field& start) {
  if (depth_ + 1 > max_depth_) fail("groups nested deeper than " + std::to_string(max_depth_) + " levels", start.offset);
  std::vector<uint32_t> open{start.number};
  while (!open.empty()) {
    if (pos_ == end_) fail("truncated group (field " + std::to_string(open.back()) + ")", start.offset);
    const uint64_t at = offset();
    const uint64_t tag = raw_varint();
    const uint64_t number = tag >> 3;
    const uint32_t type = uint32_t(tag & 7);
    if (number == 0 || number > kMaxFieldNumber) fail("invalid field number " + std::to_string(number), at);
    const Field g{uint32_t(number), WireType(type), at};
    switch (type) {
      case 0: (void)raw_varint(); break;
      case 1: (void)fixed64(g); break;
      case 2: (void)bytes(g); break;
      case 3:
        if (depth_ + int(open.size()) + 1 > max_depth_)
          fail("groups nested deeper than " + std::to_string(max_depth_) + " levels", at);
        open.push_back(uint32_t(number));
        break;
      case 4:
        if (number != open.back())
          fail("end-group tag " + std::to_string(number) + " does not match start-group " +
                   std::to_string(open.back()),
               at);
        open.pop_back();
        break;
      case 5: (void)fixed32(g); break;
      default: fail("invalid wire type " + std::to_string(type), at);
    }
  }
}

void Reader::check_room(size_t have, uint64_t adding, uint64_t max_values, uint64_t at) const {
  if (have > max_values || adding > max_values - have)
    fail("repeated field holds more than " + std::to_string(max_values) + " values", at);
}

void Reader::append_varints(const Field& f, std::vector<uint64_t>* out, uint64_t max_values) {
  if (f.type == WireType::kVarint) {
    check_room(out->size(), 1, max_values, f.offset);
    out->push_back(raw_varint());
    return;
  }
  const Bytes b = bytes(f);
  Reader packed(b.data, b.size, b.offset, depth_, max_depth_);
  // Each varint ends in one byte without the high bit: count them first.
  uint64_t n = 0;
  for (size_t i = 0; i < b.size; ++i) n += (b.data[i] & 0x80) == 0;
  check_room(out->size(), n, max_values, b.offset);
  while (!packed.done()) out->push_back(packed.raw_varint());
}

void Reader::append_fixed32s(const Field& f, std::vector<uint32_t>* out, uint64_t max_values) {
  if (f.type == WireType::kFixed32) {
    check_room(out->size(), 1, max_values, f.offset);
    out->push_back(fixed32(f));
    return;
  }
  const Bytes b = bytes(f);
  if (b.size % 4 != 0) fail("packed fixed32 run of " + std::to_string(b.size) + " bytes is not a multiple of 4", b.offset);
  check_room(out->size(), b.size / 4, max_values, b.offset);
  for (size_t i = 0; i < b.size; i += 4) {
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) v |= uint32_t(b.data[i + k]) << (8 * k);
    out->push_back(v);
  }
}

void Reader::append_fixed64s(const Field& f, std::vector<uint64_t>* out, uint64_t max_values) {
  if (f.type == WireType::kFixed64) {
    check_room(out->size(), 1, max_values, f.offset);
    out->push_back(fixed64(f));
    return;
  }
  const Bytes b = bytes(f);
  if (b.size % 8 != 0) fail("packed fixed64 run of " + std::to_string(b.size) + " bytes is not a multiple of 8", b.offset);
  check_room(out->size(), b.size / 8, max_values, b.offset);
  for (size_t i = 0; i < b.size; i += 8) {
    uint64_t v = 0;
    for (int k = 0; k < 8; ++k) v |= uint64_t(b.data[i + k]) << (8 * k);
    out->push_back(v);
  }
}

}  // namespace wire
}  // namespace ondevice
