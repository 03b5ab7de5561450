// Format tests: layout arithmetic, the file reader on valid files (f32 and
// f16 scales, with and without offsets), and on every truncation and every
// single-byte corruption of a small file (each must be a FormatError).
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <tuple>

#include "ondevice/bitplane_format.h"
#include "ondevice/error.h"
#include "test_util.h"

using namespace ondevice;

TEST(crc32_known_value) {
  const char* s = "123456789";
  CHECK(crc32(reinterpret_cast<const uint8_t*>(s), 9) == 0xCBF43926u);
}

TEST(half_to_float_values) {
  CHECK(half_to_float(0x3C00) == 1.0f);
  CHECK(half_to_float(0xC000) == -2.0f);
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(half_to_float(0x7BFF) == 65504.0f);
  CHECK(std::isinf(half_to_float(0x7C00)));
  CHECK(std::isnan(half_to_float(0x7E00)));
}

TEST(layout_groups_blocks_and_tiles) {
  std::vector<uint8_t> bits(70, 2);
  bits[69] = 4;  // last tile's max bits
  const BitplaneLayout L = make_layout(70, 2500, 2500, bits.data());
  CHECK(L.groups == 1 && L.kbytes == 313 && L.tiles == 3);
  CHECK(L.tile_bits[0] == 2 && L.tile_bits[2] == 4);
  CHECK(L.plane_bytes() == uint64_t(313) * 32 * (2 + 2 + 4));
  CHECK(L.alpha_count() == uint64_t(32) * (2 + 2 + 4));
  // One group of 2500 inputs: blocks of 128 bytes (1024 inputs), the last partial.
  CHECK(L.blocks.size() == 3);
  CHECK(L.blocks[0].byte_begin == 0 && L.blocks[0].byte_end == 128);
  CHECK(L.blocks[2].byte_begin == 256 && L.blocks[2].byte_end == 313);
  const BitplaneLayout G = make_layout(70, 100, 24, bits.data());
  CHECK(G.groups == 5 && G.kbytes == 13 && G.blocks.size() == 5);
  CHECK(G.blocks[4].byte_begin == 12 && G.blocks[4].byte_end == 13 && G.blocks[4].group == 4);
}

TEST(layout_rejects_bad_arguments) {
  std::vector<uint8_t> bits(4, 2);
  CHECK_THROWS(make_layout(0, 8, 8, bits.data()), ArgumentError);
  CHECK_THROWS(make_layout(4, 0, 8, bits.data()), ArgumentError);
  CHECK_THROWS(make_layout(4, 64, 12, bits.data()), ArgumentError);  // not a multiple of 8
  CHECK_THROWS(make_layout(4, 64, 0, bits.data()), ArgumentError);
  CHECK_THROWS(make_layout(4, 64, 65, bits.data()), ArgumentError);
  bits[2] = 5;
  CHECK_THROWS(make_layout(4, 64, 64, bits.data()), ArgumentError);
  bits[2] = 0;
  CHECK_THROWS(make_layout(4, 64, 64, bits.data()), ArgumentError);
}

TEST(matrix_rejects_inconsistent_contents) {
  std::mt19937 rng(1);
  auto m = testing::make_random_matrix(33, 13, 13, 1, 3, true, rng);
  const BitplaneLayout& L = m.matrix.layout();
  auto rebuild = [&] {
    return BitplaneMatrix(L.rows, L.cols, L.group_size, m.row_bits.data(), L.rows, m.planes.data(),
                          L.plane_bytes(), m.alpha.data(), L.alpha_count(), m.offset.data(), m.offset.size(), nullptr);
  };
  (void)rebuild();
  m.alpha[3] = std::nanf("");
  CHECK_THROWS(rebuild(), ArgumentError);
  m.alpha[3] = 1.0f;
  // Padding bits beyond cols (13 -> the last byte's bits 5..7) must be zero.
  m.planes[L.tile_plane_offset[0] + uint64_t(1) * L.tile_bits[0] * 32] |= 0x80;
  CHECK_THROWS(rebuild(), ArgumentError);
  m.planes[L.tile_plane_offset[0] + uint64_t(1) * L.tile_bits[0] * 32] &= 0x7F;
  // A padding row (row 33.. of tile 1) must have no set bits.
  m.planes[L.tile_plane_offset[1] + 5] = 1;
  CHECK_THROWS(rebuild(), ArgumentError);
  m.planes[L.tile_plane_offset[1] + 5] = 0;
  CHECK_THROWS(BitplaneMatrix(L.rows, L.cols, L.group_size, m.row_bits.data(), L.rows, m.planes.data(),
                              L.plane_bytes() - 1, m.alpha.data(), L.alpha_count(), nullptr, 0, nullptr),
               ArgumentError);
  // A row claiming more bits than its tile stores is caught (layout derived, not trusted).
  std::vector<uint8_t> more_bits = m.row_bits;
  more_bits[0] = 4;
  CHECK_THROWS(BitplaneMatrix(L.rows, L.cols, L.group_size, more_bits.data(), L.rows, m.planes.data(),
                              L.plane_bytes(), m.alpha.data(), L.alpha_count(), nullptr, 0, nullptr),
               ArgumentError);
}

static void check_same(const testing::RandomMatrix& a, const BitplaneMatrix& b, float tol) {
  const BitplaneLayout& L = a.matrix.layout();
  CHECK(b.layout().rows == L.rows && b.layout().cols == L.cols && b.layout().group_size == L.group_size);
  CHECK(b.has_offset() == !a.offset.empty());
  CHECK(std::memcmp(b.planes(), a.planes.data(), L.plane_bytes()) == 0);
  CHECK(std::memcmp(b.row_bits(), a.row_bits.data(), L.rows) == 0);
  for (uint64_t i = 0; i < L.alpha_count(); ++i) CHECK(std::fabs(b.alpha()[i] - a.alpha[i]) <= tol * std::fabs(a.alpha[i]));
  for (uint64_t i = 0; i < a.offset.size(); ++i)
    CHECK(std::fabs(b.offset()[i] - a.offset[i]) <= tol * std::fabs(a.offset[i]) + 1e-7f);
}

TEST(file_round_trip) {
  std::mt19937 rng(2);
  for (bool f16 : {false, true})
    for (bool off : {false, true})
      for (uint32_t cols : {1u, 9u, 64u, 200u}) {
        auto m = testing::make_random_matrix(37, cols, cols >= 64 ? 32 : cols, 1, 4, off, rng);
        auto bytes = std::make_shared<std::vector<uint8_t>>(testing::serialize(m, f16));
        const BitplaneMatrix r = parse_bitplane_file(bytes->data(), bytes->size(), bytes);
        check_same(m, r, f16 ? 1e-3f : 0.0f);
      }
}

TEST(file_every_truncation_and_corruption_is_rejected) {
  std::mt19937 rng(3);
  auto m = testing::make_random_matrix(5, 20, 20, 1, 3, true, rng);
  const std::vector<uint8_t> good = testing::serialize(m, false);
  (void)parse_bitplane_file(good.data(), good.size(), nullptr);
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + n);
    CHECK_THROWS(parse_bitplane_file(cut.data(), cut.size(), nullptr), FormatError);
  }
  for (size_t i = 0; i < good.size(); ++i)
    for (uint8_t flip : {uint8_t(0x01), uint8_t(0x80), uint8_t(0xFF)}) {
      std::vector<uint8_t> bad = good;
      bad[i] ^= flip;
      CHECK_THROWS(parse_bitplane_file(bad.data(), bad.size(), nullptr), FormatError);
    }
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  CHECK_THROWS(parse_bitplane_file(longer.data(), longer.size(), nullptr), FormatError);
  CHECK_THROWS(parse_bitplane_file(nullptr, 0, nullptr), FormatError);
}

namespace {

void put_le(std::vector<uint8_t>& b, size_t pos, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b[pos + i] = uint8_t(v >> (8 * i));
}

// Recomputes both checksums, so that the structural checks behind them are reached.
void fix_checksums(std::vector<uint8_t>& b) {
  put_le(b, 96, b.size(), 8);
  put_le(b, 104, crc32(b.data() + 128, b.size() - 128), 4);
  put_le(b, 108, crc32(b.data(), 108), 4);
}

uint64_t get_le(const std::vector<uint8_t>& b, size_t pos) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(b[pos + i]) << (8 * i);
  return v;
}

}  // namespace

TEST(file_rejects_hostile_headers_with_valid_checksums) {
  std::mt19937 rng(4);
  auto m = testing::make_random_matrix(5, 20, 20, 1, 3, false, rng);
  const std::vector<uint8_t> good = testing::serialize(m, false);
  using Patch = std::vector<std::tuple<size_t, uint64_t, int>>;
  const std::vector<Patch> patches = {
      {{20, 0xFFFFFFFFu, 4}, {24, 0xFFFFFFFFu, 4}},  // cols = group = 2^32-1 (wraps 32-bit layout math)
      {{20, 0xFFFFFFF9u, 4}, {24, 8, 4}},
      {{16, 0xFFFFFFFFu, 4}},
      {{16, 0xFFFFFFFFu, 4}, {40, 0xFFFFFFFFu, 8}},
      {{20, 0xFFFFFFFFu, 4}}, {{24, 7, 4}}, {{24, 0, 4}}, {{48, 1ull << 62, 8}}, {{56, 1ull << 63, 8}},
      {{64, 3, 8}}, {{4, 2, 2}}, {{12, 4, 4}}, {{28, 16, 4}}, {{40, 4, 8}}, {{8, 64, 4}}, {{120, 1, 1}},
      {{48, 256, 8}},  // planes section moved off its canonical place (192)
      {{80, 512, 8}, {88, 4, 8}},  // offset section present but not flagged
  };
  for (const Patch& patch : patches) {
    std::vector<uint8_t> bad = good;
    for (auto [pos, val, n] : patch) put_le(bad, pos, val, n);
    const uint32_t h = crc32(bad.data(), 108);
    put_le(bad, 108, h, 4);
    bool thrown = false;
    try {
      (void)parse_bitplane_file(bad.data(), bad.size(), nullptr);
    } catch (const FormatError&) {
      thrown = true;
    }
    CHECK_MSG(thrown, "patch at offset " << std::get<0>(patch[0]) << " = " << std::get<1>(patch[0]));
  }
}

TEST(file_rejects_structural_corruption_behind_valid_checksums) {
  std::mt19937 rng(6);
  auto m = testing::make_random_matrix(40, 21, 21, 1, 2, true, rng);
  m.row_bits[3] = 1;  // ensure tile 0 has a row with an unused plane
  std::fill(m.planes.begin(), m.planes.end(), 0);
  m.alpha.assign(m.alpha.size(), 0.0f);
  {
    const BitplaneLayout& L = m.matrix.layout();
    const uint32_t q = L.tile_bits[0];
    CHECK(q == 2);
    for (uint32_t r = 0; r < 40; ++r)
      for (uint32_t i = 0; i < m.row_bits[r]; ++i)
        m.alpha[L.tile_alpha_offset[r / 32] + i * 32 + r % 32] = 0.5f;  // one group: [i][j]
  }
  std::vector<uint8_t> good = testing::serialize(m, false);
  fix_checksums(good);
  (void)parse_bitplane_file(good.data(), good.size(), nullptr);
  const uint64_t off_bits = get_le(good, 32), off_planes = get_le(good, 48), off_alpha = get_le(good, 64);
  const uint64_t q0 = 2;
  struct Case {
    const char* what;
    std::function<void(std::vector<uint8_t>&)> edit;
  };
  const std::vector<Case> cases = {
      {"row bits 0", [&](auto& b) { b[off_bits + 1] = 0; }},
      {"row bits 5", [&](auto& b) { b[off_bits + 1] = 5; }},
      {"NaN alpha", [&](auto& b) { put_le(b, off_alpha, 0x7FC00000u, 4); }},
      {"inf alpha", [&](auto& b) { put_le(b, off_alpha + 4, 0x7F800000u, 4); }},
      {"alpha of an unused plane", [&](auto& b) { put_le(b, off_alpha + 4 * (32 + 3), 0x3F800000u, 4); }},
      {"bits in an unused plane", [&](auto& b) { b[off_planes + 32 + 3] = 1; }},
      // Tile 1 (rows 32..63) holds rows 32..39; row 63 (j = 31) is padding.
      {"bits in a padding row", [&](auto& b) { b[off_planes + 3 * q0 * 32 + 31] = 1; }},
      {"padding bits beyond cols", [&](auto& b) { b[off_planes + 2 * q0 * 32 + 0] = 0x80; }},
      {"trailing junk", [&](auto& b) { b.resize(b.size() + 64, 0); }},
      {"nonzero gap byte", [&](auto& b) { b[off_planes - 1] = 1; }},
  };
  for (const Case& c : cases) {
    std::vector<uint8_t> bad = good;
    c.edit(bad);
    fix_checksums(bad);
    bool thrown = false;
    try {
      (void)parse_bitplane_file(bad.data(), bad.size(), nullptr);
    } catch (const FormatError&) {
      thrown = true;
    }
    CHECK_MSG(thrown, c.what);
  }
}

TEST(file_misaligned_buffer_is_read_correctly) {
  std::mt19937 rng(8);
  auto m = testing::make_random_matrix(9, 30, 30, 1, 4, true, rng);
  const std::vector<uint8_t> good = testing::serialize(m, false);
  std::vector<uint8_t> shifted(good.size() + 1);
  std::copy(good.begin(), good.end(), shifted.begin() + 1);
  const BitplaneMatrix r = parse_bitplane_file(shifted.data() + 1, good.size(), nullptr);
  check_same(m, r, 0.0f);
}
