// Portable float kernels and the run-time choice of variant (float_kernels.h).
#include "float_kernels.h"

#include <cstdint>

namespace ondevice::detail {
namespace portable {
#include "float_kernels_impl.inc"
}  // namespace portable

#if defined(ONDEVICE_HAVE_AVX2)
const FloatKernels& float_kernels_avx2();
bool cpu_has_avx2_fma();
#endif

float exp_det(float x) { return portable::exp_det_impl(x); }

void gemm_f32(size_t m, size_t n, size_t k, const float* a, size_t lda, const float* b, size_t ldb, float* c,
              size_t ldc) {
  float_kernels().gemm(m, n, k, a, lda, b, ldb, c, ldc);
}

void softmax_rows(float* x, size_t rows, size_t n) { float_kernels().softmax(x, rows, n); }

void layer_norm_rows(const float* x, float* y, size_t rows, size_t n, const float* scale, const float* bias,
                     float eps, bool relu) {
  float_kernels().layer_norm(x, y, rows, n, scale, bias, eps, relu);
}

void log_sum_exp_rows(const float* x, size_t rows, size_t n, float* out) {
  float_kernels().log_sum_exp(x, rows, n, out);
}

const FloatKernels& float_kernels() {
  static const FloatKernels chosen = [] {
#if defined(ONDEVICE_HAVE_AVX2)
    if (cpu_has_avx2_fma()) return float_kernels_avx2();
#endif
    return FloatKernels{portable::gemm_impl, portable::softmax_impl, portable::layer_norm_impl, portable::log_sum_exp_impl,
#if defined(ONDEVICE_HAVE_NEON)
                        "neon"
#else
                        "portable"
#endif
    };
  }();
  return chosen;
}

}  // namespace ondevice::detail
