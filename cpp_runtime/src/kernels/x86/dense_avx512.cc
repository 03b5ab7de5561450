// AVX-512F panel kernel of the dense path (compiled with -mavx512f; called
// only when cpuid says the CPU and the OS support it, from the lut_avx2
// variant's dense path). Same chains of fused multiply-adds as
// ../dense_generic.cc (one per output element, ascending k, from +0.0), so the
// same bits as every other panel kernel.
//
// Register blocking: 12 activation rows x the whole 32-column panel row
// (two zmm) = 24 accumulators, plus 2 panel vectors and 1 broadcast (27 of the
// 32 zmm registers): per k, 14 loads feed 24 16-wide fmas, where the AVX2
// kernel's 8 loads feed 12 8-wide ones.
#include <immintrin.h>

#include <cstring>

#include "../dense_common.h"

namespace ondevice::detail {
namespace {

// Named accumulators, not an array (see dense_avx2.cc: GCC kept an array in memory).
template <int MR>
void rows_x32(const float* a, size_t lda, const float* panel, uint32_t cols, float* c, size_t ldc, uint32_t ncols) {
  const __m512 zero = _mm512_setzero_ps();
  __m512 c00 = zero, c01 = zero, c10 = zero, c11 = zero, c20 = zero, c21 = zero, c30 = zero, c31 = zero;
  __m512 c40 = zero, c41 = zero, c50 = zero, c51 = zero, c60 = zero, c61 = zero, c70 = zero, c71 = zero;
  __m512 c80 = zero, c81 = zero, c90 = zero, c91 = zero, cA0 = zero, cA1 = zero, cB0 = zero, cB1 = zero;
  for (uint32_t k = 0; k < cols; ++k) {
    const float* p = panel + size_t(k) * kTileRows;
    const __m512 w0 = _mm512_loadu_ps(p), w1 = _mm512_loadu_ps(p + 16);
#define ONDEVICE_DENSE_ROW(r, n)                                     \
  if constexpr (MR > r) {                                            \
    const __m512 av = _mm512_set1_ps(a[r * lda + k]);                \
    c##n##0 = _mm512_fmadd_ps(av, w0, c##n##0);                      \
    c##n##1 = _mm512_fmadd_ps(av, w1, c##n##1);                      \
  }
    ONDEVICE_DENSE_ROW(0, 0)
    ONDEVICE_DENSE_ROW(1, 1)
    ONDEVICE_DENSE_ROW(2, 2)
    ONDEVICE_DENSE_ROW(3, 3)
    ONDEVICE_DENSE_ROW(4, 4)
    ONDEVICE_DENSE_ROW(5, 5)
    ONDEVICE_DENSE_ROW(6, 6)
    ONDEVICE_DENSE_ROW(7, 7)
    ONDEVICE_DENSE_ROW(8, 8)
    ONDEVICE_DENSE_ROW(9, 9)
    ONDEVICE_DENSE_ROW(10, A)
    ONDEVICE_DENSE_ROW(11, B)
#undef ONDEVICE_DENSE_ROW
  }
  const __m512 acc[12][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51},
                             {c60, c61}, {c70, c71}, {c80, c81}, {c90, c91}, {cA0, cA1}, {cB0, cB1}};
  for (int r = 0; r < MR; ++r) {
    float* out = c + r * ldc;
    if (ncols == kTileRows) {
      _mm512_storeu_ps(out, acc[r][0]);
      _mm512_storeu_ps(out + 16, acc[r][1]);
    } else {
      float tmp[kTileRows];
      _mm512_storeu_ps(tmp, acc[r][0]);
      _mm512_storeu_ps(tmp + 16, acc[r][1]);
      std::memcpy(out, tmp, ncols * sizeof(float));
    }
  }
}

template <int MR>
void tail(size_t left, const float* a, size_t lda, const float* panel, uint32_t cols, float* c, size_t ldc,
          uint32_t ncols) {
  if constexpr (MR > 0) {
    if (left == MR) rows_x32<MR>(a, lda, panel, cols, c, ldc, ncols);
    else tail<MR - 1>(left, a, lda, panel, cols, c, ldc, ncols);
  }
}

}  // namespace

void dense_panel_avx512(const float* a, size_t lda, size_t nrows, const float* panel, uint32_t cols, float* c,
                        size_t ldc, uint32_t ncols) {
  constexpr int kMR = 12;
  size_t m = 0;
  for (; m + kMR <= nrows; m += kMR) rows_x32<kMR>(a + m * lda, lda, panel, cols, c + m * ldc, ldc, ncols);
  tail<kMR - 1>(nrows - m, a + m * lda, lda, panel, cols, c + m * ldc, ldc, ncols);
}

}  // namespace ondevice::detail
