#include <cstdio>
#include <cstring>
#include <exception>

#include <sys/stat.h>

#include "ondevice/bcq_gemm.h"
#include "test_util.h"

namespace testing {

std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

std::string repo_file(const std::string& relative) {
  const std::string here = __FILE__, suffix = "cpp_runtime/tests/test_main.cc";
  if (here.size() < suffix.size() || here.compare(here.size() - suffix.size(), suffix.size(), suffix) != 0) return "";
  const std::string candidate = here.substr(0, here.size() - suffix.size()) + relative;
  struct stat st {};
  return ::stat(candidate.c_str(), &st) == 0 ? candidate : std::string();
}

RandomMatrix make_random_matrix(uint32_t rows, uint32_t cols, uint32_t group_size, uint32_t min_bits,
                                uint32_t max_bits, bool with_offset, std::mt19937& rng) {
  RandomMatrix m;
  std::uniform_int_distribution<uint32_t> bits_dist(min_bits, max_bits);
  m.row_bits.resize(rows);
  for (auto& b : m.row_bits) b = uint8_t(bits_dist(rng));
  ondevice::BitplaneLayout L = ondevice::make_layout(rows, cols, group_size, m.row_bits.data());
  m.planes.assign(L.plane_bytes(), 0);
  m.alpha.assign(L.alpha_count(), 0.0f);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  std::normal_distribution<float> nd(0.0f, 0.3f);
  for (uint32_t r = 0; r < rows; ++r) {
    const uint32_t t = r / ondevice::kTileRows, j = r % ondevice::kTileRows, q = L.tile_bits[t];
    for (uint32_t i = 0; i < m.row_bits[r]; ++i) {
      for (uint32_t k = 0; k < cols; ++k)
        if (rng() & 1u) m.planes[L.tile_plane_offset[t] + (uint64_t(k / 8) * q + i) * ondevice::kTileRows + j] |=
              uint8_t(1u << (k % 8));
      for (uint32_t g = 0; g < L.groups; ++g)
        m.alpha[L.tile_alpha_offset[t] + (uint64_t(g) * q + i) * ondevice::kTileRows + j] =
            u(rng) / float(1u << (2 * i));
    }
  }
  if (with_offset) {
    m.offset.resize(L.offset_count());
    for (auto& o : m.offset) o = nd(rng);
  }
  const uint64_t np = L.plane_bytes(), na = L.alpha_count(), no = m.offset.size();
  m.matrix = ondevice::BitplaneMatrix(rows, cols, group_size, m.row_bits.data(), rows, m.planes.data(), np,
                                      m.alpha.data(), na, with_offset ? m.offset.data() : nullptr, no, nullptr);
  return m;
}

namespace {
void put(std::vector<uint8_t>& out, size_t pos, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out[pos + i] = uint8_t(v >> (8 * i));
}
uint16_t float_to_half(float f) {  // round-to-nearest for the test values (normal range)
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int exp = int((x >> 23) & 0xFF) - 127 + 15;
  if (((x >> 23) & 0xFF) == 0) return uint16_t(sign);
  uint32_t man = x & 0x7FFFFFu;
  uint32_t h = (uint32_t(exp) << 10) | (man >> 13);
  const uint32_t rem = man & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return uint16_t(sign | h);
}
}  // namespace

std::vector<uint8_t> serialize(const RandomMatrix& m, bool alpha_f16) {
  const ondevice::BitplaneLayout& L = m.matrix.layout();
  const size_t elt = alpha_f16 ? 2 : 4;
  auto align = [](size_t v) { return (v + 63) / 64 * 64; };
  const size_t off_bits = 128;
  const size_t off_planes = align(off_bits + L.rows);
  const size_t off_alpha = align(off_planes + L.plane_bytes());
  const size_t off_offset = align(off_alpha + L.alpha_count() * elt);
  const bool has_off = !m.offset.empty();
  const size_t end = has_off ? off_offset + m.offset.size() * elt : off_alpha + L.alpha_count() * elt;
  std::vector<uint8_t> out(end, 0);
  std::memcpy(out.data(), "ODBQ", 4);
  put(out, 4, 1, 2);
  put(out, 6, 0, 2);
  put(out, 8, 128, 4);
  put(out, 12, (has_off ? 1 : 0) | (alpha_f16 ? 2 : 0), 4);
  put(out, 16, L.rows, 4);
  put(out, 20, L.cols, 4);
  put(out, 24, L.group_size, 4);
  put(out, 28, 32, 4);
  put(out, 32, off_bits, 8);
  put(out, 40, L.rows, 8);
  put(out, 48, off_planes, 8);
  put(out, 56, L.plane_bytes(), 8);
  put(out, 64, off_alpha, 8);
  put(out, 72, L.alpha_count() * elt, 8);
  put(out, 80, has_off ? off_offset : 0, 8);
  put(out, 88, has_off ? m.offset.size() * elt : 0, 8);
  put(out, 96, end, 8);
  std::memcpy(out.data() + off_bits, m.row_bits.data(), L.rows);
  std::memcpy(out.data() + off_planes, m.planes.data(), L.plane_bytes());
  auto put_floats = [&](size_t pos, const std::vector<float>& v) {
    for (size_t i = 0; i < v.size(); ++i) {
      if (alpha_f16) {
        put(out, pos + 2 * i, float_to_half(v[i]), 2);
      } else {
        uint32_t u;
        std::memcpy(&u, &v[i], 4);
        put(out, pos + 4 * i, u, 4);
      }
    }
  };
  put_floats(off_alpha, m.alpha);
  if (has_off) put_floats(off_offset, m.offset);
  put(out, 104, ondevice::crc32(out.data() + 128, end - 128), 4);
  put(out, 108, ondevice::crc32(out.data(), 108), 4);
  return out;
}

}  // namespace testing

int main(int argc, char** argv) {
  const char* filter = argc > 1 ? argv[1] : nullptr;
  int passed = 0, failed = 0;
  std::printf("ondevice C++ tests on %s\n", ondevice::cpu_description().c_str());
  for (const auto& t : testing::registry()) {
    if (filter && std::strstr(t.name, filter) == nullptr) continue;
    try {
      t.fn();
      ++passed;
      std::printf("PASS %s\n", t.name);
    } catch (const testing::Failure& f) {
      ++failed;
      std::printf("FAIL %s\n  %s\n", t.name, f.message.c_str());
    } catch (const std::exception& e) {
      ++failed;
      std::printf("FAIL %s\n  unexpected exception: %s\n", t.name, e.what());
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
