// Internal: the dense path of the bit-plane product (bcq_gemm_dense in
// ondevice/bcq_gemm.h). A 32-row tile of the matrix is expanded to float32
// once (a "panel") and multiplied with every activation row; each variant's
// panel kernel beside the portable one below.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "ondevice/bitplane_format.h"

namespace ondevice::detail {

// panel[k * 32 + j] = W_hat[32 t + j, k] for k < cols, j < 32, exactly as the
// spec writes it: the offset (or 0), then + alpha_i * B_i for every plane i of
// the tile in ascending order, rounding after each addition (unused planes and
// padding rows have zero bits and scales and add -0.0, which changes nothing;
// padding rows are 0). Equals BitPlaneGather's rows and the PyTorch weight bit
// for bit. One portable implementation: every variant reads the same panel.
void dequantize_tile(const BitplaneMatrix& w, uint32_t tile, float* panel);

// C[m, j] = sum_k A[m, k] * panel[k, j] for m < rows, j < ncols (<= 32), each
// element one chain of fused multiply-adds in ascending k starting from +0.0:
// c = fma(A[m, k], panel[k, j], c). fma rounds once, so every implementation
// of this order gives the same bits (std::fma, vfmadd, vfmaq).
using DensePanelKernel = void (*)(const float* a, size_t lda, size_t rows, const float* panel, uint32_t cols,
                                  float* c, size_t ldc, uint32_t ncols);

void dense_panel_generic(const float* a, size_t lda, size_t rows, const float* panel, uint32_t cols, float* c,
                         size_t ldc, uint32_t ncols);
#if defined(ONDEVICE_HAVE_AVX2)
void dense_panel_avx2(const float* a, size_t lda, size_t rows, const float* panel, uint32_t cols, float* c,
                      size_t ldc, uint32_t ncols);
// The lut_avx2 variant's dense path uses this one instead where the CPU (and
// OS) support AVX-512F (cpu_has_avx512f): the same bits, twice the width.
void dense_panel_avx512(const float* a, size_t lda, size_t rows, const float* panel, uint32_t cols, float* c,
                        size_t ldc, uint32_t ncols);
bool cpu_has_avx512f();
#endif
#if defined(ONDEVICE_HAVE_NEON)
void dense_panel_neon(const float* a, size_t lda, size_t rows, const float* panel, uint32_t cols, float* c,
                      size_t ldc, uint32_t ncols);
#endif

// Shared by the vector panel kernels, which compute 16 panel columns of MR
// activation rows at a time: Block<MR>::x16(a, lda, panel, cols, out) writes
// out[r][0..16) for r < MR. dense_panel_blocked sweeps the rows in blocks of
// MR (the remainder by smaller blocks), runs one or two 16-column blocks per
// 32-column tile and stores the first ncols columns. Block is each variant's
// own type in an unnamed namespace, so each instantiation stays in the
// translation unit compiled with its ISA's flags.
template <template <int> class Block, int MR>
inline void dense_rows_blocked(const float* a, size_t lda, const float* panel, uint32_t cols, float* c, size_t ldc,
                               uint32_t ncols) {
  float tmp[MR][kTileRows];
  Block<MR>::x16(a, lda, panel, cols, tmp);
  if (ncols > 16) {
    float hi[MR][kTileRows];
    Block<MR>::x16(a, lda, panel + 16, cols, hi);
    for (int r = 0; r < MR; ++r) std::memcpy(tmp[r] + 16, hi[r], 16 * sizeof(float));
  }
  for (int r = 0; r < MR; ++r) std::memcpy(c + r * ldc, tmp[r], ncols * sizeof(float));
}

template <template <int> class Block, int MR>
inline void dense_tail_blocked(size_t left, const float* a, size_t lda, const float* panel, uint32_t cols, float* c,
                               size_t ldc, uint32_t ncols) {
  if constexpr (MR > 0) {
    if (left == MR) dense_rows_blocked<Block, MR>(a, lda, panel, cols, c, ldc, ncols);
    else dense_tail_blocked<Block, MR - 1>(left, a, lda, panel, cols, c, ldc, ncols);
  }
}

template <template <int> class Block, int MR>
inline void dense_panel_blocked(const float* a, size_t lda, size_t nrows, const float* panel, uint32_t cols, float* c,
                                size_t ldc, uint32_t ncols) {
  size_t m = 0;
  for (; m + MR <= nrows; m += MR) dense_rows_blocked<Block, MR>(a + m * lda, lda, panel, cols, c + m * ldc, ldc, ncols);
  dense_tail_blocked<Block, MR - 1>(nrows - m, a + m * lda, lda, panel, cols, c + m * ldc, ldc, ncols);
}

}  // namespace ondevice::detail
