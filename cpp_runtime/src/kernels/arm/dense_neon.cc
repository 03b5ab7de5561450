// aarch64 NEON panel kernel of the dense path. Same chains of fused
// multiply-adds as ../dense_generic.cc (vfmaq_f32 rounds once), so the same
// bits.
//
// Register blocking: 4 activation rows x 16 panel columns = 16 accumulators,
// plus 4 panel vectors (of the 32 q registers); a panel of 32 columns takes
// two sweeps over k.
#include <arm_neon.h>


#include "../dense_common.h"

namespace ondevice::detail {
namespace {

// Named accumulators, not an array (see ../x86/dense_avx2.cc: GCC kept the
// array in memory).
template <int MR>
void rows_x16(const float* a, size_t lda, const float* panel, uint32_t cols, float (*out)[kTileRows]) {
  const float32x4_t zero = vdupq_n_f32(0.0f);
  float32x4_t c00 = zero, c01 = zero, c02 = zero, c03 = zero, c10 = zero, c11 = zero, c12 = zero, c13 = zero;
  float32x4_t c20 = zero, c21 = zero, c22 = zero, c23 = zero, c30 = zero, c31 = zero, c32 = zero, c33 = zero;
  for (uint32_t k = 0; k < cols; ++k) {
    const float* p = panel + size_t(k) * kTileRows;
    const float32x4_t w0 = vld1q_f32(p), w1 = vld1q_f32(p + 4), w2 = vld1q_f32(p + 8), w3 = vld1q_f32(p + 12);
#define ONDEVICE_DENSE_ROW(r)                                        \
  if constexpr (MR > r) {                                            \
    const float32x4_t av = vdupq_n_f32(a[r * lda + k]);              \
    c##r##0 = vfmaq_f32(c##r##0, av, w0);                            \
    c##r##1 = vfmaq_f32(c##r##1, av, w1);                            \
    c##r##2 = vfmaq_f32(c##r##2, av, w2);                            \
    c##r##3 = vfmaq_f32(c##r##3, av, w3);                            \
  }
    ONDEVICE_DENSE_ROW(0)
    ONDEVICE_DENSE_ROW(1)
    ONDEVICE_DENSE_ROW(2)
    ONDEVICE_DENSE_ROW(3)
#undef ONDEVICE_DENSE_ROW
  }
  const float32x4_t acc[4][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23},
                                 {c30, c31, c32, c33}};
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < 4; ++v) vst1q_f32(out[r] + 4 * v, acc[r][v]);
}

template <int MR>
struct NeonBlock {
  static void x16(const float* a, size_t lda, const float* panel, uint32_t cols, float (*out)[kTileRows]) {
    rows_x16<MR>(a, lda, panel, cols, out);
  }
};

}  // namespace

void dense_panel_neon(const float* a, size_t lda, size_t nrows, const float* panel, uint32_t cols, float* c,
                      size_t ldc, uint32_t ncols) {
  dense_panel_blocked<NeonBlock, 4>(a, lda, nrows, panel, cols, c, ldc, ncols);
}

}  // namespace ondevice::detail
