// Reader and layout arithmetic of the bit-plane format (docs/bitplane-format.md).
#include "ondevice/bitplane_format.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>

#include "format/mapped_file.h"
#include "ondevice/error.h"

namespace ondevice {
namespace {

std::string str(uint64_t v) { return std::to_string(v); }

template <typename T>
T read_le(const uint8_t* p) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= T(p[i]) << (8 * i);
  return v;
}

}  // namespace

BitplaneLayout make_layout(uint32_t rows, uint32_t cols, uint32_t group_size,
                           const uint8_t* row_bits) {
  if (rows == 0 || cols == 0) throw ArgumentError("matrix must have at least one row and one column");
  if (rows > kMaxDim || cols > kMaxDim)
    throw ArgumentError("matrix " + str(rows) + "x" + str(cols) + " exceeds the maximum dimension " + str(kMaxDim));
  if (group_size == 0 || group_size > cols)
    throw ArgumentError("group_size must be in 1.." + str(cols) + " (cols), got " + str(group_size));
  if (group_size != cols && group_size % 8 != 0)
    throw ArgumentError("group_size must be a multiple of 8 or equal to cols (" + str(cols) +
                        "), got " + str(group_size));
  if (row_bits == nullptr) throw ArgumentError("row_bits is required");
  BitplaneLayout L;
  L.rows = rows;
  L.cols = cols;
  L.group_size = group_size;
  L.groups = uint32_t((uint64_t(cols) + group_size - 1) / group_size);
  L.kbytes = uint32_t((uint64_t(cols) + 7) / 8);
  L.tiles = uint32_t((uint64_t(rows) + kTileRows - 1) / kTileRows);
  L.tile_bits.assign(L.tiles, 0);
  for (uint32_t r = 0; r < rows; ++r) {
    if (row_bits[r] < 1 || row_bits[r] > kMaxBits)
      throw ArgumentError("row " + str(r) + " has " + str(row_bits[r]) + " bits; must be 1..4");
    uint8_t& tb = L.tile_bits[r / kTileRows];
    tb = std::max(tb, row_bits[r]);
  }
  L.tile_plane_offset.resize(L.tiles + 1);
  L.tile_alpha_offset.resize(L.tiles + 1);
  L.tile_plane_offset[0] = 0;
  L.tile_alpha_offset[0] = 0;
  for (uint32_t t = 0; t < L.tiles; ++t) {
    L.tile_plane_offset[t + 1] = L.tile_plane_offset[t] + uint64_t(L.kbytes) * L.tile_bits[t] * kTileRows;
    L.tile_alpha_offset[t + 1] = L.tile_alpha_offset[t] + uint64_t(L.groups) * L.tile_bits[t] * kTileRows;
  }
  const uint32_t block_bytes = kMaxBlockInputs / 8;
  for (uint32_t g = 0; g < L.groups; ++g) {
    const uint64_t col_begin = uint64_t(g) * group_size;
    const uint64_t col_end = std::min<uint64_t>(col_begin + group_size, cols);
    const uint32_t b_begin = uint32_t(col_begin / 8);
    const uint32_t b_end = uint32_t((col_end + 7) / 8);
    for (uint32_t b = b_begin; b < b_end; b += block_bytes)
      L.blocks.push_back({b, std::min(b + block_bytes, b_end), g});
  }
  return L;
}

BitplaneMatrix::BitplaneMatrix(uint32_t rows, uint32_t cols, uint32_t group_size, const uint8_t* row_bits,
                               size_t row_bits_len, const uint8_t* planes, size_t planes_len, const float* alpha,
                               size_t alpha_len, const float* offset, size_t offset_len,
                               std::shared_ptr<const void> owner, bool check_contents)
    : row_bits_(row_bits), planes_(planes), alpha_(alpha), offset_(offset), owner_(std::move(owner)) {
  if (row_bits_len != rows)
    throw ArgumentError("row_bits has " + str(row_bits_len) + " entries, expected " + str(rows));
  layout_ = make_layout(rows, cols, group_size, row_bits);
  const BitplaneLayout& L = layout_;
  if (planes_len != L.plane_bytes())
    throw ArgumentError("planes have " + str(planes_len) + " bytes, the layout needs " + str(L.plane_bytes()));
  if (alpha_len != L.alpha_count())
    throw ArgumentError("alpha has " + str(alpha_len) + " values, the layout needs " + str(L.alpha_count()));
  if (offset != nullptr && offset_len != L.offset_count())
    throw ArgumentError("offset has " + str(offset_len) + " values, expected rows*groups = " +
                        str(L.offset_count()));
  if (L.plane_bytes() > 0 && planes == nullptr) throw ArgumentError("planes pointer is null");
  if (alpha == nullptr) throw ArgumentError("alpha pointer is null");
  if (!check_contents) return;

  for (uint64_t i = 0; i < L.alpha_count(); ++i)
    if (!std::isfinite(alpha[i])) throw ArgumentError("alpha[" + str(i) + "] is not finite");
  if (offset != nullptr)
    for (uint64_t i = 0; i < L.offset_count(); ++i)
      if (!std::isfinite(offset[i])) throw ArgumentError("offset[" + str(i) + "] is not finite");

  const uint8_t pad_mask = (L.cols % 8) ? uint8_t(0xFFu << (L.cols % 8)) : 0;
  for (uint32_t t = 0; t < L.tiles; ++t) {
    const uint32_t q = L.tile_bits[t];
    std::array<uint8_t, kTileRows> rb{};
    bool uniform = true;
    for (uint32_t j = 0; j < kTileRows; ++j) {
      const uint32_t r = t * kTileRows + j;
      rb[j] = r < L.rows ? row_bits[r] : 0;
      uniform = uniform && rb[j] == q;
    }
    const uint8_t* tp = planes + L.tile_plane_offset[t];
    const float* ta = alpha + L.tile_alpha_offset[t];
    if (!uniform) {
      for (uint32_t s = 0; s < L.kbytes; ++s)
        for (uint32_t i = 0; i < q; ++i)
          for (uint32_t j = 0; j < kTileRows; ++j)
            if (i >= rb[j] && tp[(uint64_t(s) * q + i) * kTileRows + j] != 0)
              throw ArgumentError("tile " + str(t) + " row " + str(j) + " plane " + str(i) +
                                  " is beyond the row's bits but holds set bits");
      for (uint32_t g = 0; g < L.groups; ++g)
        for (uint32_t i = 0; i < q; ++i)
          for (uint32_t j = 0; j < kTileRows; ++j)
            if (i >= rb[j] && ta[(uint64_t(g) * q + i) * kTileRows + j] != 0.0f)
              throw ArgumentError("tile " + str(t) + " row " + str(j) + " plane " + str(i) +
                                  " is beyond the row's bits but has a non-zero alpha");
    }
    if (pad_mask) {
      const uint8_t* last = tp + uint64_t(L.kbytes - 1) * q * kTileRows;
      for (uint32_t k = 0; k < q * kTileRows; ++k)
        if (last[k] & pad_mask) throw ArgumentError("padding bits beyond cols must be zero (tile " + str(t) + ")");
    }
  }
}

bool BitplaneMatrix::bit(uint32_t row, uint32_t plane, uint32_t col) const {
  const BitplaneLayout& L = layout_;
  const uint32_t t = row / kTileRows, j = row % kTileRows, q = L.tile_bits[t];
  const uint8_t byte = planes_[L.tile_plane_offset[t] + (uint64_t(col / 8) * q + plane) * kTileRows + j];
  return (byte >> (col % 8)) & 1u;
}

float BitplaneMatrix::scale(uint32_t row, uint32_t plane, uint32_t group) const {
  const BitplaneLayout& L = layout_;
  const uint32_t t = row / kTileRows, j = row % kTileRows, q = L.tile_bits[t];
  return alpha_[L.tile_alpha_offset[t] + (uint64_t(group) * q + plane) * kTileRows + j];
}

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h >> 15) << 31;
  const uint32_t exp = (h >> 10) & 0x1F;
  const uint32_t man = h & 0x3FF;
  float mag;
  if (exp == 0) {
    mag = std::ldexp(float(man), -24);
  } else if (exp == 31) {
    mag = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    mag = std::ldexp(float(man | 0x400), int(exp) - 25);
  }
  uint32_t bits;
  std::memcpy(&bits, &mag, 4);
  bits |= sign;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

namespace {

struct Section {
  uint64_t offset;
  uint64_t size;
};

// Holds a parsed file's widened float16 scales next to the file's owner.
struct WidenedStorage {
  std::shared_ptr<const void> file_owner;
  std::vector<float> alpha;
  std::vector<float> offset;
};

}  // namespace

BitplaneMatrix parse_bitplane_file(const uint8_t* data, size_t size, std::shared_ptr<const void> owner,
                                   bool* alpha_f16) {
  if (data == nullptr || size < kFileHeaderBytes)
    throw FormatError("not a bit-plane file: " + str(size) + " bytes is shorter than the " +
                      str(kFileHeaderBytes) + "-byte header");
  if (std::memcmp(data, "ODBQ", 4) != 0) throw FormatError("not a bit-plane file: bad magic (expected ODBQ)");
  const uint16_t major = read_le<uint16_t>(data + 4);
  const uint16_t minor = read_le<uint16_t>(data + 6);
  if (major != kFormatVersionMajor)
    throw FormatError("unsupported bit-plane format version " + str(major) + "." + str(minor) +
                      " (this build reads " + str(kFormatVersionMajor) + ".x)");
  if (read_le<uint32_t>(data + 108) != crc32(data, 108)) throw FormatError("header checksum mismatch: file is corrupt");
  if (read_le<uint32_t>(data + 8) != kFileHeaderBytes) throw FormatError("unexpected header size");
  const uint32_t flags = read_le<uint32_t>(data + 12);
  if (flags & ~(kFlagHasOffset | kFlagAlphaF16)) throw FormatError("unknown flags " + str(flags));
  const uint32_t rows = read_le<uint32_t>(data + 16);
  const uint32_t cols = read_le<uint32_t>(data + 20);
  const uint32_t group_size = read_le<uint32_t>(data + 24);
  if (read_le<uint32_t>(data + 28) != kTileRows) throw FormatError("unsupported tile size");
  const Section sec_bits{read_le<uint64_t>(data + 32), read_le<uint64_t>(data + 40)};
  const Section sec_planes{read_le<uint64_t>(data + 48), read_le<uint64_t>(data + 56)};
  const Section sec_alpha{read_le<uint64_t>(data + 64), read_le<uint64_t>(data + 72)};
  const Section sec_offset{read_le<uint64_t>(data + 80), read_le<uint64_t>(data + 88)};
  const uint64_t file_size = read_le<uint64_t>(data + 96);
  if (file_size != size)
    throw FormatError("file is " + str(size) + " bytes but its header says " + str(file_size) +
                      " (truncated or padded)");
  for (size_t i = 112; i < kFileHeaderBytes; ++i)
    if (data[i] != 0) throw FormatError("reserved header bytes must be zero");
  const bool has_offset = flags & kFlagHasOffset;
  const bool f16 = flags & kFlagAlphaF16;
  if (alpha_f16 != nullptr) *alpha_f16 = f16;
  // Sections must sit exactly where the spec puts them (canonical files only):
  // in order, each at the next multiple of 64, gaps zero, nothing after.
  auto align = [](uint64_t v) { return (v + kSectionAlign - 1) / kSectionAlign * kSectionAlign; };
  auto check_section = [&](const Section& s, uint64_t expected_offset, const char* name) {
    if (s.offset != expected_offset || s.offset > size || s.size > size - s.offset)
      throw FormatError(std::string(name) + " section is not where the format puts it, or lies outside the file");
  };
  check_section(sec_bits, kFileHeaderBytes, "row_bits");
  check_section(sec_planes, align(sec_bits.offset + sec_bits.size), "planes");
  check_section(sec_alpha, align(sec_planes.offset + sec_planes.size), "alpha");
  uint64_t end = sec_alpha.offset + sec_alpha.size;
  if (has_offset) {
    check_section(sec_offset, align(end), "offset");
    end = sec_offset.offset + sec_offset.size;
  } else if (sec_offset.offset != 0 || sec_offset.size != 0) {
    throw FormatError("offset section present but not flagged");
  }
  if (end != size) throw FormatError("file has " + str(size - std::min<uint64_t>(end, size)) + " unexpected trailing bytes");
  const Section sections[] = {sec_bits, sec_planes, sec_alpha, sec_offset};
  for (int i = 0; i + 1 < (has_offset ? 4 : 3); ++i)
    for (uint64_t k = sections[i].offset + sections[i].size; k < sections[i + 1].offset; ++k)
      if (data[k] != 0) throw FormatError("nonzero byte in the alignment gap at offset " + str(k));
  if (read_le<uint32_t>(data + 104) != crc32(data + kFileHeaderBytes, size - kFileHeaderBytes))
    throw FormatError("payload checksum mismatch: file is corrupt");
  if (sec_bits.size != rows) throw FormatError("row_bits section size does not match rows");

  // Bound the layout by the file size before building it (rows are bounded by
  // the row_bits section; this bounds cols), so hostile headers cost nothing.
  if (cols == 0 || rows > kMaxDim || cols > kMaxDim ||
      (uint64_t(cols) + 7) / 8 * kTileRows * ((uint64_t(rows) + kTileRows - 1) / kTileRows) > size)
    throw FormatError("header dimensions " + str(rows) + "x" + str(cols) + " do not fit in the file");
  BitplaneLayout layout;
  try {
    layout = make_layout(rows, cols, group_size, data + sec_bits.offset);
  } catch (const ArgumentError& e) {
    throw FormatError(std::string("invalid matrix header: ") + e.what());
  }
  const uint64_t elt = f16 ? 2 : 4;
  if (sec_planes.size != layout.plane_bytes()) throw FormatError("planes section size does not match the layout");
  if (sec_alpha.size != layout.alpha_count() * elt) throw FormatError("alpha section size does not match the layout");
  if (has_offset && sec_offset.size != layout.offset_count() * elt)
    throw FormatError("offset section size does not match rows*groups");

  auto widened = std::make_shared<WidenedStorage>();
  widened->file_owner = std::move(owner);
  const float* alpha;
  const float* offset = nullptr;
  auto widen = [&](const Section& s, uint64_t n, std::vector<float>& out) -> const float* {
    out.resize(n);
    for (uint64_t i = 0; i < n; ++i) out[i] = half_to_float(read_le<uint16_t>(data + s.offset + 2 * i));
    return out.data();
  };
  auto aligned_f32 = [&](const Section& s, uint64_t n, std::vector<float>& out) -> const float* {
    // Little-endian hosts use the bytes in place when the buffer keeps them
    // aligned (sections are 64-byte aligned in the file); otherwise copy.
    const uint16_t probe = 1;
    uint8_t first;
    std::memcpy(&first, &probe, 1);
    if (first == 1 && reinterpret_cast<uintptr_t>(data + s.offset) % alignof(float) == 0)
      return reinterpret_cast<const float*>(data + s.offset);
    out.resize(n);
    for (uint64_t i = 0; i < n; ++i) {
      uint32_t u = read_le<uint32_t>(data + s.offset + 4 * i);
      std::memcpy(&out[i], &u, 4);
    }
    return out.data();
  };
  alpha = f16 ? widen(sec_alpha, layout.alpha_count(), widened->alpha)
              : aligned_f32(sec_alpha, layout.alpha_count(), widened->alpha);
  if (has_offset)
    offset = f16 ? widen(sec_offset, layout.offset_count(), widened->offset)
                 : aligned_f32(sec_offset, layout.offset_count(), widened->offset);
  const uint64_t alpha_n = layout.alpha_count(), offset_n = has_offset ? layout.offset_count() : 0;
  try {
    return BitplaneMatrix(rows, cols, group_size, data + sec_bits.offset, rows, data + sec_planes.offset,
                          sec_planes.size, alpha, alpha_n, offset, offset_n, widened, true);
  } catch (const ArgumentError& e) {
    throw FormatError(std::string("invalid matrix contents: ") + e.what());
  }
}

BitplaneMatrix load_bitplane_file(const std::string& path, bool* alpha_f16) {
  const auto buffer = read_whole_file(path);
  try {
    return parse_bitplane_file(buffer->data(), buffer->size(), buffer, alpha_f16);
  } catch (const FormatError& e) {
    throw FormatError(path + ": " + e.what());
  }
}

}  // namespace ondevice
