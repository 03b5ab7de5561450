// Float32 kernels of the executor's standard ops: matrix product, softmax and
// layer normalization.
//
// Written so that results do not depend on the instruction set: every output
// element is accumulated in one fixed order, with no fused multiply-add (the
// core builds with -ffp-contract=off) and an exp of our own (exp_det) instead
// of the C library's, whose last bit differs between platforms. The compiler
// vectorizes the inner loops (AVX2 with the x86 variant translation unit,
// NEON on aarch64) without changing any result, so x86-64 and aarch64 builds
// decode identical translations.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ondevice::detail {

// exp(x) in float to within 2 ulp, 0 below exp(-87) (no subnormals);
// identical on every IEEE-754 platform.
float exp_det(float x);

// C[m, n] = sum_k A[m, k] * B[k, n] (row-major, leading dimensions lda, ldb,
// ldc), k ascending for every element.
void gemm_f32(size_t m, size_t n, size_t k, const float* a, size_t lda, const float* b, size_t ldb, float* c,
              size_t ldc);

// In place along rows of length n: x = exp(x - max) / sum.
void softmax_rows(float* x, size_t rows, size_t n);

// y = (x - mean) / sqrt(var + eps) * scale + bias over rows of length n
// (bias may be null); with `relu`, then y = y > 0 ? y : 0 (ONNX Relu).
void layer_norm_rows(const float* x, float* y, size_t rows, size_t n, const float* scale, const float* bias,
                     float eps, bool relu = false);

// out[r] = log(sum_j exp(x[r, j] - max_r)) + max_r for rows of length n
// (-inf for a row of -inf; NaN entries are skipped).
void log_sum_exp_rows(const float* x, size_t rows, size_t n, float* out);

// The variant compiled with AVX2 (x86-64) when the CPU has it, chosen once at
// run time; the same code and the same results as the portable one.
struct FloatKernels {
  void (*gemm)(size_t, size_t, size_t, const float*, size_t, const float*, size_t, float*, size_t);
  void (*softmax)(float*, size_t, size_t);
  void (*layer_norm)(const float*, float*, size_t, size_t, const float*, const float*, float, bool);
  void (*log_sum_exp)(const float*, size_t, size_t, float*);
  const char* name;
};
const FloatKernels& float_kernels();

}  // namespace ondevice::detail
