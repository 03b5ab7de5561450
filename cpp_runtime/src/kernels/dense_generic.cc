// Portable dense path: the tile expansion shared by every variant and the
// reference panel kernel (one fused multiply-add chain per output element;
// the SIMD variants compute the same chains, several at once).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "dense_common.h"

namespace ondevice::detail {

void dequantize_tile(const BitplaneMatrix& w, uint32_t tile, float* panel) {
  const BitplaneLayout& L = w.layout();
  const uint32_t q = L.tile_bits[tile];
  const uint32_t nrows = std::min(kTileRows, L.rows - tile * kTileRows);
  const uint8_t* W = w.planes() + L.tile_plane_offset[tile];
  const float* A = w.alpha() + L.tile_alpha_offset[tile];
  // One byte column (8 inputs x 32 rows, 1 KiB of the panel) at a time, all its planes while it is
  // in L1. Group boundaries are multiples of 8 (or the whole row), so a byte column has one group.
  for (uint32_t s = 0; s < L.kbytes; ++s) {
    const uint32_t k0 = 8 * s, kn = std::min(8u, L.cols - k0), g = k0 / L.group_size;
    float col[8][kTileRows];
    float start[kTileRows] = {};
    if (w.has_offset())
      for (uint32_t j = 0; j < nrows; ++j) start[j] = w.offset()[(uint64_t(tile) * kTileRows + j) * L.groups + g];
    for (uint32_t b = 0; b < 8; ++b) std::memcpy(col[b], start, sizeof(start));
    for (uint32_t i = 0; i < q; ++i) {
      // +alpha where the bit is 1, -alpha where it is 0: alpha's sign bit flipped by integer ops
      // (exact, and the loop vectorizes; a float select of two loads does not)
      uint32_t al[kTileRows];
      std::memcpy(al, A + (size_t(g) * q + i) * kTileRows, sizeof(al));
      const uint8_t* bytes = W + (size_t(s) * q + i) * kTileRows;
      for (uint32_t b = 0; b < 8; ++b)
        for (uint32_t j = 0; j < kTileRows; ++j) {
          const uint32_t u = al[j] ^ (((~uint32_t(bytes[j]) >> b) & 1u) << 31);
          float v;
          std::memcpy(&v, &u, 4);
          col[b][j] = col[b][j] + v;
        }
    }
    std::memcpy(panel + size_t(k0) * kTileRows, col, kn * sizeof(col[0]));
  }
}

void dense_panel_generic(const float* a, size_t lda, size_t rows, const float* panel, uint32_t cols, float* c,
                         size_t ldc, uint32_t ncols) {
  for (size_t m = 0; m < rows; ++m) {
    const float* am = a + m * lda;
    float acc[kTileRows] = {};
    for (uint32_t k = 0; k < cols; ++k) {
      const float av = am[k];
      const float* p = panel + size_t(k) * kTileRows;
      for (uint32_t j = 0; j < kTileRows; ++j) acc[j] = std::fma(av, p[j], acc[j]);
    }
    std::memcpy(c + m * ldc, acc, ncols * sizeof(float));
  }
}

}  // namespace ondevice::detail
