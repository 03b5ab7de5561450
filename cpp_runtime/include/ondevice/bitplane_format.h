// The packed bit-plane (BCQ) weight format: layout arithmetic, an in-memory
// view, and the reader of `.bcq` files.
//
// The normative specification is docs/bitplane-format.md; this header and
// ondevice/bitplane.py (the Python packer/writer) implement exactly that text.
// In short: W[n,k] ~= offset[n,g] + sum_i alpha[n,i,g] * B[n,i,k], B in {-1,+1},
// stored as bit-planes in a kernel-native tiled layout (32 rows per tile) so
// that the LUT kernels read the planes in place, without repacking.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ondevice {

inline constexpr uint32_t kTileRows = 32;        // rows per tile
inline constexpr uint32_t kMaxBits = 4;          // bit-planes per row: 1..4
inline constexpr uint32_t kMaxBlockInputs = 1024;  // LUT accumulation block (see spec)
inline constexpr uint32_t kSectionAlign = 64;    // file sections start at multiples of this
inline constexpr uint32_t kFileHeaderBytes = 128;
inline constexpr uint16_t kFormatVersionMajor = 1;
inline constexpr uint16_t kFormatVersionMinor = 0;
inline constexpr uint32_t kFlagHasOffset = 1u << 0;
inline constexpr uint32_t kFlagAlphaF16 = 1u << 1;
// Largest rows / cols accepted: keeps every layout product far from overflow
// (and is beyond any Transformer matrix).
inline constexpr uint32_t kMaxDim = 1u << 28;

// A run of input bytes (8 inputs each) that the LUT kernels accumulate in
// 16-bit integers before scaling: never crosses a group boundary and never
// holds more than kMaxBlockInputs inputs.
struct LutBlock {
  uint32_t byte_begin;
  uint32_t byte_end;
  uint32_t group;
};

// Everything that follows from (rows, cols, group_size, row_bits): where each
// tile's planes and scales live, and the accumulation blocks.
struct BitplaneLayout {
  uint32_t rows = 0;
  uint32_t cols = 0;
  uint32_t group_size = 0;  // effective: multiple of 8, or == cols (one group)
  uint32_t groups = 0;      // ceil(cols / group_size)
  uint32_t kbytes = 0;      // ceil(cols / 8): bytes of one plane of one row
  uint32_t tiles = 0;       // ceil(rows / 32)
  std::vector<uint8_t> tile_bits;          // max row bits within each tile
  std::vector<uint64_t> tile_plane_offset;  // byte offset of each tile's planes (+1 end entry)
  std::vector<uint64_t> tile_alpha_offset;  // float offset of each tile's scales (+1 end entry)
  std::vector<LutBlock> blocks;

  uint64_t plane_bytes() const { return tile_plane_offset.back(); }
  uint64_t alpha_count() const { return tile_alpha_offset.back(); }
  uint64_t offset_count() const { return uint64_t(rows) * groups; }
};

// Computes and validates the layout; throws ArgumentError when the arguments
// cannot describe a matrix (zero or oversized dimensions, bits outside 1..4,
// bad group size). All arithmetic is 64-bit.
BitplaneLayout make_layout(uint32_t rows, uint32_t cols, uint32_t group_size,
                           const uint8_t* row_bits);

// A quantized matrix: the layout plus pointers to its four arrays. The arrays
// are borrowed; `owner` keeps whatever holds them alive (a mapped file, a
// Python object, a heap buffer).
class BitplaneMatrix {
 public:
  BitplaneMatrix() = default;
  // Derives the layout from (rows, cols, group_size, row_bits), validates the
  // array sizes against it and (optionally, O(size)) the contents: finite
  // scales, zero unused planes and padding, as the spec demands. Throws
  // ArgumentError.
  BitplaneMatrix(uint32_t rows, uint32_t cols, uint32_t group_size, const uint8_t* row_bits,
                 size_t row_bits_len, const uint8_t* planes, size_t planes_len, const float* alpha,
                 size_t alpha_len, const float* offset, size_t offset_len,
                 std::shared_ptr<const void> owner, bool check_contents = true);

  const BitplaneLayout& layout() const { return layout_; }
  const uint8_t* row_bits() const { return row_bits_; }
  const uint8_t* planes() const { return planes_; }
  const float* alpha() const { return alpha_; }
  const float* offset() const { return offset_; }  // nullptr when absent
  bool has_offset() const { return offset_ != nullptr; }

  // Element accessors in spec terms (used by the reference kernel and tests).
  bool bit(uint32_t row, uint32_t plane, uint32_t col) const;
  float scale(uint32_t row, uint32_t plane, uint32_t group) const;

 private:
  BitplaneLayout layout_;
  const uint8_t* row_bits_ = nullptr;
  const uint8_t* planes_ = nullptr;
  const float* alpha_ = nullptr;
  const float* offset_ = nullptr;
  std::shared_ptr<const void> owner_;
};

// Parses a `.bcq` file image. Every length, offset and checksum is checked;
// any violation throws FormatError and nothing is read out of bounds. The
// planes are used in place (zero-copy); scales stored as float16 are widened
// into memory owned by the returned matrix.
// `alpha_f16`, if given, receives whether the file stores float16 scales.
BitplaneMatrix parse_bitplane_file(const uint8_t* data, size_t size,
                                   std::shared_ptr<const void> owner, bool* alpha_f16 = nullptr);

// Reads a whole file into memory and parses it (the file may change on disk
// afterwards without affecting the returned matrix).
BitplaneMatrix load_bitplane_file(const std::string& path, bool* alpha_f16 = nullptr);

// CRC-32 (ISO-HDLC, the zlib/PNG polynomial) used by the file format.
uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc = 0);

// IEEE half -> float, exact for every half value including subnormals.
float half_to_float(uint16_t h);

}  // namespace ondevice
