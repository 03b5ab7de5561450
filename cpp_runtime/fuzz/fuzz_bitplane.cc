// Fuzz target: the `.bcq` bit-plane file reader (parse_bitplane_file) and the
// matrix it returns.
//
// The format carries two CRC-32s, so almost every mutation of a valid file
// stops at the checksum. Each input is therefore parsed twice: as given, and
// as a copy whose file size and both checksums were recomputed, which takes
// mutations past the checksums into the section, layout and contents checks.
// Any ondevice::Error is an accepted outcome; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "ondevice/bcq_gemm.h"
#include "ondevice/bitplane_format.h"
#include "ondevice/error.h"

namespace {

void put_le(uint8_t* p, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) p[i] = uint8_t(v >> (8 * i));
}

void parse_and_use(const uint8_t* data, size_t size, std::shared_ptr<const void> owner) {
  bool f16 = false;
  ondevice::BitplaneMatrix m;
  try {
    m = ondevice::parse_bitplane_file(data, size, std::move(owner), &f16);
  } catch (const ondevice::Error&) {
    return;
  }
  // A parsed matrix must be readable everywhere its layout says it is.
  const ondevice::BitplaneLayout& L = m.layout();
  float sum = 0.0f;
  for (uint32_t r = 0; r < L.rows; r += 1 + L.rows / 16) {
    const uint32_t bits = m.row_bits()[r];
    for (uint32_t i = 0; i < bits; ++i) {
      for (uint32_t g = 0; g < L.groups; ++g) sum += m.scale(r, i, g);
      for (uint32_t c = 0; c < L.cols; c += 1 + L.cols / 16) sum += m.bit(r, i, c) ? 1.0f : 0.0f;
      sum += m.bit(r, i, L.cols - 1) ? 1.0f : 0.0f;
    }
  }
  // And the kernels, which read planes and scales by the layout alone: the
  // reference product and the default (LUT) kernel on one input row.
  if (uint64_t(L.rows) * L.cols <= (1u << 20)) {
    std::vector<float> x(L.cols), y(L.rows);
    for (uint32_t c = 0; c < L.cols; ++c) x[c] = float(int(c % 7) - 3) * 0.25f;
    ondevice::bcq_gemm(m, x.data(), 1, y.data(), ondevice::KernelVariant::kReference);
    for (float v : y) sum += v;
    ondevice::BitplaneKernel().gemm(m, x.data(), 1, y.data(), 1);
    for (float v : y) sum += v;
  }
  volatile float sink = sum;
  (void)sink;
}

}  // namespace

int fuzz_bitplane(const uint8_t* data, size_t size) {
  auto raw = std::make_shared<std::vector<uint8_t>>(data, data + size);
  parse_and_use(raw->data(), raw->size(), raw);
  if (size >= ondevice::kFileHeaderBytes) {
    auto fixed = std::make_shared<std::vector<uint8_t>>(data, data + size);
    uint8_t* p = fixed->data();
    put_le(p + 96, size, 8);
    put_le(p + 104, ondevice::crc32(p + ondevice::kFileHeaderBytes, size - ondevice::kFileHeaderBytes), 4);
    put_le(p + 108, ondevice::crc32(p, 108), 4);
    parse_and_use(p, size, fixed);
  }
  return 0;
}

#ifdef ONDEVICE_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return fuzz_bitplane(data, size); }
#endif
