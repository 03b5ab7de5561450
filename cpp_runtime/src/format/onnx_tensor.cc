// ONNX tensors: data type table, size checks, typed-field decoding, views.
#include "format/onnx_tensor.h"

#include <cstring>
#include <limits>

#include "ondevice/error.h"

// Tensor bytes are handed to kernels as they lie in the file, and ONNX stores
// them little-endian; both targets (x86-64, aarch64) are little-endian.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the ONNX reader exposes little-endian file bytes in place; big-endian hosts are not supported"
#endif

namespace ondevice {
namespace onnx {

uint32_t data_type_bits(int32_t dt) {
  switch (dt) {
    case kBool: case kUint8: case kInt8: case kFloat8E4M3FN: case kFloat8E4M3FNUZ: case kFloat8E5M2:
    case kFloat8E5M2FNUZ: case kFloat8E8M0:
      return 8;
    case kUint16: case kInt16: case kFloat16: case kBfloat16: return 16;
    case kFloat: case kInt32: case kUint32: return 32;
    case kInt64: case kUint64: case kDouble: case kComplex64: return 64;
    case kComplex128: return 128;
    case kUint4: case kInt4: case kFloat4E2M1: return 4;
    case kUint2: case kInt2: return 2;
    default: return 0;  // UNDEFINED, STRING, FLOAT6 (packing not handled), unknown
  }
}

std::string data_type_name(int32_t dt) {
  static const char* const names[] = {
      "UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16", "INT16", "INT32", "INT64", "STRING", "BOOL",
      "FLOAT16", "DOUBLE", "UINT32", "UINT64", "COMPLEX64", "COMPLEX128", "BFLOAT16", "FLOAT8E4M3FN",
      "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "UINT4", "INT4", "FLOAT4E2M1", "FLOAT8E8M0",
      "UINT2", "INT2", "FLOAT6E2M3", "FLOAT6E3M2"};
  if (dt >= 0 && size_t(dt) < sizeof(names) / sizeof(names[0])) return names[dt];
  return "UNKNOWN(" + std::to_string(dt) + ")";
}

void TensorView::check_as(int32_t expected, size_t bits, size_t alignment) const {
  if (data_type != expected)
    throw FormatError("tensor '" + name + "' is " + data_type_name(data_type) + ", expected " +
                      data_type_name(expected));
  if (data_type_bits(expected) != bits)
    throw FormatError("tensor '" + name + "': " + data_type_name(expected) + " elements are not " +
                      std::to_string(bits) + "-bit");
  if (!aligned(alignment))
    throw FormatError("tensor '" + name + "': data is not aligned to " + std::to_string(alignment) +
                      " bytes (its offset in the file is not a multiple of the element size)");
}

TensorView Tensor::view() const {
  if (!resolved())
    throw FormatError("tensor '" + name + "': external data in '" + external.location + "' is not resolved");
  TensorView v;
  v.name = name;
  v.data = byte_size ? data : nullptr;
  v.byte_size = byte_size;
  v.data_type = data_type;
  v.dims = dims;
  v.element_count = element_count;
  return v;
}

namespace detail {
namespace {

std::string str(uint64_t v) { return std::to_string(v); }

// Strict decimal: digits only, no sign or spaces, no overflow.
uint64_t parse_decimal(const std::string& key, const std::string& s) {
  if (s.empty() || s.size() > 20) throw FormatError("external_data '" + key + "' is not a decimal number: '" + s + "'");
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') throw FormatError("external_data '" + key + "' is not a decimal number: '" + s + "'");
    const uint64_t d = uint64_t(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10)
      throw FormatError("external_data '" + key + "' overflows 64 bits: '" + s + "'");
    v = v * 10 + d;
  }
  return v;
}

void parse_external(Tensor* t) {
  bool seen_location = false, seen_offset = false, seen_length = false, seen_checksum = false, seen_basepath = false;
  auto once = [](bool& seen, const std::string& key) {
    if (seen) throw FormatError("external_data key '" + key + "' appears twice");
    seen = true;
  };
  for (const StringStringEntry& e : t->external_data) {
    if (e.key == "location") {
      once(seen_location, e.key);
      t->external.location = e.value;
    } else if (e.key == "offset") {
      once(seen_offset, e.key);
      t->external.offset = parse_decimal(e.key, e.value);
    } else if (e.key == "length") {
      once(seen_length, e.key);
      t->external.length = parse_decimal(e.key, e.value);
      t->external.has_length = true;
    } else if (e.key == "checksum") {
      once(seen_checksum, e.key);
      t->external.checksum = e.value;
    } else if (e.key == "basepath") {
      // Written by some onnx tools; like onnx.load, locations resolve against
      // the model's directory regardless.
      once(seen_basepath, e.key);
    }
    // Other keys are ignored, as onnx.load ignores them.
  }
  if (t->external.location.empty()) throw FormatError("external data without a 'location'");
  if (t->external.has_length && t->external.length != t->byte_size)
    throw FormatError("external_data length " + str(t->external.length) + " does not match the " +
                      str(t->byte_size) + " bytes that dims and data type require");
}

// How a typed field encodes a data type: which field, and the valid range of
// each stored value (signed or unsigned, or a bit pattern accepted either way).
enum class Field { kNone, kFloat, kInt32, kInt64, kDouble, kUint64 };
Field typed_field_for(int32_t dt) {
  switch (dt) {
    case kFloat: case kComplex64: return Field::kFloat;
    case kInt32: case kInt16: case kInt8: case kUint16: case kUint8: case kBool: case kFloat16: case kBfloat16:
    case kFloat8E4M3FN: case kFloat8E4M3FNUZ: case kFloat8E5M2: case kFloat8E5M2FNUZ: case kFloat8E8M0:
      return Field::kInt32;
    case kInt64: return Field::kInt64;
    case kDouble: case kComplex128: return Field::kDouble;
    case kUint32: case kUint64: return Field::kUint64;
    default: return Field::kNone;  // sub-byte types store packed values; only raw_data is read for them
  }
}

const char* field_name(Field f) {
  switch (f) {
    case Field::kFloat: return "float_data";
    case Field::kInt32: return "int32_data";
    case Field::kInt64: return "int64_data";
    case Field::kDouble: return "double_data";
    case Field::kUint64: return "uint64_data";
    case Field::kNone: break;
  }
  return "none";
}

// Range of an int32_data value for a narrower type: [lo, hi].
void int32_range(int32_t dt, int64_t* lo, int64_t* hi) {
  switch (dt) {
    case kInt32: *lo = std::numeric_limits<int32_t>::min(); *hi = std::numeric_limits<int32_t>::max(); return;
    case kInt16: *lo = -32768; *hi = 32767; return;
    case kInt8: *lo = -128; *hi = 127; return;
    case kUint16: *lo = 0; *hi = 65535; return;
    case kUint8: *lo = 0; *hi = 255; return;
    case kBool: *lo = 0; *hi = 1; return;
    case kFloat16: case kBfloat16: *lo = -32768; *hi = 65535; return;  // 16-bit pattern, either sign convention
    default: *lo = -128; *hi = 255; return;                             // 8-bit float patterns
  }
}

void put_le(uint8_t* p, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = uint8_t(v >> (8 * i));
}

void decode_typed(TensorFields& f, Field which, Tensor* t) {
  const Field expected = typed_field_for(t->data_type);
  if (which != expected)
    throw FormatError(std::string("data type ") + data_type_name(t->data_type) + " cannot be stored in " +
                      field_name(which) + (expected == Field::kNone ? " (use raw_data)" : ""));
  const bool complex = t->data_type == kComplex64 || t->data_type == kComplex128;
  const uint64_t want = t->element_count * (complex ? 2 : 1);
  uint64_t have = 0;
  switch (which) {
    case Field::kFloat: have = f.float_data.size(); break;
    case Field::kInt32: have = f.int32_data.size(); break;
    case Field::kInt64: have = f.int64_data.size(); break;
    case Field::kDouble: have = f.double_data.size(); break;
    case Field::kUint64: have = f.uint64_data.size(); break;
    case Field::kNone: break;
  }
  if (have != want)
    throw FormatError(std::string(field_name(which)) + " holds " + str(have) + " values, dims require " + str(want));
  auto buf = std::make_shared<std::vector<uint8_t>>(size_t(t->byte_size));
  uint8_t* out = buf->data();
  const size_t esize = data_type_bits(t->data_type) / 8 / (complex ? 2 : 1);
  for (uint64_t k = 0; k < want; ++k) {
    uint64_t v = 0;
    switch (which) {
      case Field::kFloat: v = f.float_data[k]; break;
      case Field::kInt64: v = f.int64_data[k]; break;
      case Field::kDouble: v = f.double_data[k]; break;
      case Field::kUint64:
        v = f.uint64_data[k];
        if (t->data_type == kUint32 && v > 0xFFFFFFFFu)
          throw FormatError("uint64_data[" + str(k) + "] = " + str(v) + " is out of range for UINT32");
        break;
      case Field::kInt32: {
        const int64_t s = int64_t(f.int32_data[k]);
        int64_t lo, hi;
        int32_range(t->data_type, &lo, &hi);
        if (s < lo || s > hi)
          throw FormatError("int32_data[" + str(k) + "] = " + std::to_string(s) + " is out of range for " +
                            data_type_name(t->data_type));
        v = uint64_t(s);
        break;
      }
      case Field::kNone: break;
    }
    put_le(out + k * esize, v, esize);
  }
  t->source = TensorSource::kTypedData;
  t->data = buf->empty() ? nullptr : buf->data();
  t->owner = std::move(buf);
}

}  // namespace

void finalize_tensor(TensorFields& f, Tensor* t, const std::shared_ptr<const void>& owner, size_t max_rank) {
  const uint32_t bits = data_type_bits(t->data_type);
  if (bits == 0) throw FormatError("unsupported tensor data type " + data_type_name(t->data_type));
  if (t->dims.size() > max_rank)
    throw FormatError("tensor of rank " + str(t->dims.size()) + " exceeds the limit of " + str(max_rank));
  // Element count and byte size, bounded well below 2^64 so that later
  // arithmetic (offset + size, count * width) cannot overflow either.
  constexpr uint64_t kMaxBytes = uint64_t(1) << 62;
  uint64_t count = 1;
  bool zero = false;
  for (size_t k = 0; k < t->dims.size(); ++k) {
    const int64_t d = t->dims[k];
    if (d < 0) throw FormatError("dims[" + str(k) + "] = " + std::to_string(d) + " is negative");
    if (d == 0) zero = true;
    else if (!zero && count > kMaxBytes / uint64_t(d)) throw FormatError("tensor has too many elements");
    else if (!zero) count *= uint64_t(d);
  }
  if (zero) count = 0;
  if (count > kMaxBytes / bits) throw FormatError("tensor has too many elements");
  const uint64_t total_bits = count * bits;
  t->element_count = count;
  t->byte_size = total_bits / 8 + (total_bits % 8 != 0);

  const int typed = int(!f.float_data.empty()) + int(!f.int32_data.empty()) + int(!f.int64_data.empty()) +
                    int(!f.double_data.empty()) + int(!f.uint64_data.empty());
  if (f.string_data_count) throw FormatError("string_data is not supported");
  if (f.data_location != 0 && f.data_location != 1)
    throw FormatError("invalid data_location " + std::to_string(f.data_location));
  if (f.data_location == 1) {
    if (f.has_raw_data || typed) throw FormatError("tensor has external data and also data in the file");
    t->source = TensorSource::kExternal;
    parse_external(t);
    return;  // mapped by resolve_external_data()
  }
  if (!t->external_data.empty()) throw FormatError("external_data entries on a tensor whose data_location is not EXTERNAL");
  if (f.has_raw_data && typed) throw FormatError("tensor has both raw_data and typed data fields");
  if (typed > 1) throw FormatError("tensor has more than one typed data field");
  if (f.has_raw_data || typed == 0) {
    const uint64_t have = f.has_raw_data ? f.raw_data.size : 0;
    if (have != t->byte_size)
      throw FormatError(std::string(f.has_raw_data ? "raw_data has " : "tensor has no data: ") + str(have) +
                        " bytes, dims and data type " + data_type_name(t->data_type) + " require " +
                        str(t->byte_size));
    t->source = TensorSource::kRawData;
    t->data = have ? f.raw_data.data : nullptr;
    t->owner = owner;
    return;
  }
  const Field which = !f.float_data.empty()   ? Field::kFloat
                      : !f.int32_data.empty() ? Field::kInt32
                      : !f.int64_data.empty() ? Field::kInt64
                      : !f.double_data.empty() ? Field::kDouble
                                               : Field::kUint64;
  decode_typed(f, which, t);
}

}  // namespace detail
}  // namespace onnx
}  // namespace ondevice
