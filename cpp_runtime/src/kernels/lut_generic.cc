// Portable C++ LUT kernel: the algorithm of lut_avx2.cc / lut_neon.cc in plain
// scalar code (same integer sums, same fused float steps in the same order).
#include <cmath>
#include <cstring>

#include "lut_common.h"

namespace ondevice::detail {

void lut_tiles_generic(const BitplaneMatrix& w, const LutActivations& a, float* y, uint32_t tile_begin,
                       uint32_t tile_end) {
  const BitplaneLayout& L = w.layout();
  for (uint32_t t = tile_begin; t < tile_end; ++t) {
    const uint32_t q = L.tile_bits[t];
    const uint8_t* W = w.planes() + L.tile_plane_offset[t];
    const float* A = w.alpha() + L.tile_alpha_offset[t];
    const uint32_t nrows = std::min(kTileRows, L.rows - t * kTileRows);
    for (size_t b = 0; b < a.batch; ++b) {
      const int8_t* T = a.table(b);
      const float* S = a.scales(b);
      float facc[kTileRows] = {};
      for (size_t blk = 0; blk < L.blocks.size(); ++blk) {
        const LutBlock& B = L.blocks[blk];
        int32_t acc[kMaxBits][kTileRows];
        std::memset(acc, 0, sizeof(acc));
        for (uint32_t s = B.byte_begin; s < B.byte_end; ++s) {
          const int8_t* tlo = T + size_t(2 * s) * 16;
          const int8_t* thi = tlo + 16;
          const uint8_t* wp = W + size_t(s) * q * kTileRows;
          for (uint32_t i = 0; i < q; ++i)
            for (uint32_t j = 0; j < kTileRows; ++j) {
              const uint8_t v = wp[i * kTileRows + j];
              acc[i][j] += int32_t(tlo[v & 15]) + int32_t(thi[v >> 4]);
            }
        }
        for (uint32_t i = 0; i < q; ++i) {
          const float* al = A + (size_t(B.group) * q + i) * kTileRows;
          for (uint32_t j = 0; j < kTileRows; ++j) facc[j] = std::fma(float(acc[i][j]), al[j] * S[blk], facc[j]);
        }
      }
      std::memcpy(y + b * L.rows + size_t(t) * kTileRows, facc, nrows * sizeof(float));
    }
  }
}

}  // namespace ondevice::detail
