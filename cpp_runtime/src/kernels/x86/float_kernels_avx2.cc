// The float kernels compiled for AVX2 (this file gets -mavx2; no -mfma, so no
// contraction either way): same source, same results, wider vectors.
#include <cstdint>

#include "../float_kernels.h"

namespace ondevice::detail {
namespace avx2 {
#include "../float_kernels_impl.inc"
}  // namespace avx2

bool cpu_has_avx2_fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}

const FloatKernels& float_kernels_avx2() {
  static const FloatKernels k{avx2::gemm_impl, avx2::softmax_impl, avx2::layer_norm_impl, avx2::log_sum_exp_impl, "avx2"};
  return k;
}

}  // namespace ondevice::detail
