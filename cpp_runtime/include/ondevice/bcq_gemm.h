// y = W_hat x for a bit-plane (BCQ) matrix: the public kernel entry point and
// its variants.
//
//   reference   exact, straightforward: sums +-x per bit-plane in double. The
//               ground truth every other variant is tested against.
//   lut_generic portable C++ of the lookup-table (LUT) algorithm below; the
//               fallback on CPUs without a SIMD variant.
//   lut_avx2    x86-64 AVX2 (vpshufb table lookups), chosen at run time (cpuid).
//   lut_neon    aarch64 NEON (vqtbl1q lookups), chosen at build time.
//
// The LUT algorithm (BiQGEMM / LUT-GEMM / T-MAC idea): for every chunk of 4
// inputs, the 16 possible signed sums +-x0 +-x1 +-x2 +-x3 are computed once
// per activation vector and quantized to int8 with one scale per
// accumulation block; each 4-bit nibble of a bit-plane is then an index into
// that table, so a weight bit costs one table lookup instead of a multiply.
// Lookups are accumulated exactly in integers and scaled once per block by
// alpha * table_scale. All LUT variants perform the same integer sums and the
// same fused float operations in the same order, so they agree bit for bit;
// they differ from `reference` only by the int8 table rounding, which is
// bounded by lut_error_bound().
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ondevice/bitplane_format.h"

namespace ondevice {

enum class KernelVariant { kReference, kLutGeneric, kLutAvx2, kLutNeon };

const char* variant_name(KernelVariant v);
// Throws ArgumentError for an unknown name or a variant this CPU/build lacks.
KernelVariant variant_from_name(const std::string& name);
// Variants compiled into this build and supported by the running CPU.
std::vector<KernelVariant> available_variants();
// The fastest available variant; the environment variable ONDEVICE_KERNEL
// (a variant name) overrides it, for testing and benchmarking.
KernelVariant default_variant();

// Y[b, n] = sum_k W_hat[n, k] * X[b, k] for b < batch (X row-major
// [batch, cols], Y row-major [batch, rows]). `threads` >= 1 splits the output
// rows over that many threads of a shared pool. Throws ArgumentError on
// bad arguments; safe to call concurrently on the same matrix.
// `lut16`: two passes over the planes, the second with tables of what the
// int8 rounding of the first left out (scale / 254), so the table error is
// ~250 times smaller than one int8 pass (~16-bit tables) for twice the
// lookups; the reference variant ignores it.
void bcq_gemm(const BitplaneMatrix& w, const float* x, size_t batch, float* y,
              KernelVariant variant, int threads = 1, bool lut16 = false);

// The dense path of the same product, for many activation rows: each 32-row
// tile of W is expanded to float32 once per call and thread (exactly the
// spec's W_hat, the offset included) and multiplied with every row of X by
// chains of fused multiply-adds in ascending k. The table-building and lookup
// work of the LUT kernels grows with every activation row while the expansion
// does not, so from some tens of rows on (a convolution over frames, a long
// source sentence) this is the faster path; it is also exact up to float
// rounding. The variants agree bit for bit: lut_generic -> std::fma,
// lut_avx2 -> AVX-512F where the CPU has it, else AVX2/FMA, lut_neon -> NEON
// (the reference variant has none: ArgumentError). Rows of X are split over `threads`; each thread holds one
// expanded tile (cols * 32 floats).
// `ldx`: floats from one row of X to the next (0: cols). It may be smaller
// than cols: then consecutive rows overlap, as the frame windows of a strided
// convolution do (kernel = window x stride), and X is read in place instead of
// being copied out window by window; X spans (batch - 1) * ldx + cols floats.
void bcq_gemm_dense(const BitplaneMatrix& w, const float* x, size_t batch, float* y, KernelVariant variant,
                    int threads = 1, size_t ldx = 0);

// BitplaneKernel takes the dense path for products with at least
// dense_min_rows activation rows whose matrix has a tile of at least
// kDenseMinBits bits per weight (the LUT's work grows with the bits, the
// dense path's does not).
inline constexpr uint32_t kDenseMinBits = 3;
// Activation rows from which BitplaneKernel takes the dense path by default.
// Measured (benchmarks/dense_crossover.md, 1 thread, AVX2, a 2-core EPYC):
// the dense path overtakes lut16 from ~24 rows for the speech model's 96x768
// 4-bit convolution and ~64 for 512x512 3-bit, but 2-bit matrices of the
// translation model's sizes need 256-1024 rows or never catch up (the tile
// expansion, ~0.3 ns per weight and plane, is paid per call). 256 takes the
// speech model's frame convolutions (400-6,500 rows: ~2x faster end to end)
// and leaves decoding and short sentences on the LUT kernels.
// ONDEVICE_DENSE_MIN_ROWS overrides it (0: never), for testing and
// benchmarking.
inline constexpr uint32_t kDefaultDenseMinRows = 256;
uint32_t default_dense_min_rows();

// Which kernel runs the bit-plane products of a model.
struct BitplaneKernel {
  // Two int8 table passes (the default: decodes as the exact product does,
  // measured 856/856 identical greedy outputs on test_ui), or one (faster,
  // ~0.1 logit error on the shipped model). The reference variant is exact.
  bool lut16 = true;
  KernelVariant variant = default_variant();
  // Products with at least this many activation rows and a matrix of at
  // least kDenseMinBits bits take bcq_gemm_dense (0: never; ignored by the
  // reference variant).
  uint32_t dense_min_rows = default_dense_min_rows();
  // "lut16" (default: the best variant here) or "lut16_generic/avx2/neon";
  // "lut_generic/avx2/neon" (one int8 pass) or "reference". "" = "lut16".
  // ArgumentError for names unavailable here.
  static BitplaneKernel from_name(const std::string& name);
  std::string name() const;
  // Whether gemm() takes the dense path for this matrix and row count.
  bool takes_dense(const BitplaneMatrix& w, size_t batch) const;
  void gemm(const BitplaneMatrix& w, const float* x, size_t batch, float* y, int threads) const;
};

// Per-row bound on |Y_lut - Y_reference| (before float rounding) for one
// activation vector x: sum over planes and blocks of
// |alpha| * table_scale * 0.5 * (number of 4-input chunks in the block).
std::vector<double> lut_error_bound(const BitplaneMatrix& w, const float* x);

// Information about the running CPU, for reports.
std::string cpu_description();

}  // namespace ondevice
