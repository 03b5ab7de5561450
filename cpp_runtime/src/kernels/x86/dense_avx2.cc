// AVX2 + FMA panel kernel of the dense path (compiled with -mavx2 -mfma;
// called only when cpuid says the CPU has both). Same chains of fused
// multiply-adds as ../dense_generic.cc, so the same bits.
//
// Register blocking: 6 activation rows x 16 panel columns = 12 accumulators,
// plus 2 panel vectors and 1 broadcast (15 of the 16 ymm registers); a panel
// of 32 columns takes two such sweeps over k, the 6 rows' activations staying
// in L1 between them.
#include <immintrin.h>


#include "../dense_common.h"

namespace ondevice::detail {
namespace {

// The accumulators are named variables, not an array: GCC kept an array in
// memory and stored all twelve to the stack on every k (store-bound, 3x slower).
template <int MR>
void rows_x16(const float* a, size_t lda, const float* panel, uint32_t cols, float (*out)[kTileRows]) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 c00 = zero, c01 = zero, c10 = zero, c11 = zero, c20 = zero, c21 = zero;
  __m256 c30 = zero, c31 = zero, c40 = zero, c41 = zero, c50 = zero, c51 = zero;
  for (uint32_t k = 0; k < cols; ++k) {
    const float* p = panel + size_t(k) * kTileRows;
    const __m256 w0 = _mm256_loadu_ps(p), w1 = _mm256_loadu_ps(p + 8);
#define ONDEVICE_DENSE_ROW(r)                                        \
  if constexpr (MR > r) {                                            \
    const __m256 av = _mm256_broadcast_ss(a + r * lda + k);          \
    c##r##0 = _mm256_fmadd_ps(av, w0, c##r##0);                      \
    c##r##1 = _mm256_fmadd_ps(av, w1, c##r##1);                      \
  }
    ONDEVICE_DENSE_ROW(0)
    ONDEVICE_DENSE_ROW(1)
    ONDEVICE_DENSE_ROW(2)
    ONDEVICE_DENSE_ROW(3)
    ONDEVICE_DENSE_ROW(4)
    ONDEVICE_DENSE_ROW(5)
#undef ONDEVICE_DENSE_ROW
  }
  const __m256 acc[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  for (int r = 0; r < MR; ++r) {
    _mm256_storeu_ps(out[r], acc[r][0]);
    _mm256_storeu_ps(out[r] + 8, acc[r][1]);
  }
}

template <int MR>
struct Avx2Block {
  static void x16(const float* a, size_t lda, const float* panel, uint32_t cols, float (*out)[kTileRows]) {
    rows_x16<MR>(a, lda, panel, cols, out);
  }
};

}  // namespace

void dense_panel_avx2(const float* a, size_t lda, size_t nrows, const float* panel, uint32_t cols, float* c,
                      size_t ldc, uint32_t ncols) {
  dense_panel_blocked<Avx2Block, 6>(a, lda, nrows, panel, cols, c, ldc, ncols);
}

}  // namespace ondevice::detail
