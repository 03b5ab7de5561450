// Kernel tests: every variant against the reference (within the LUT error
// bound) and every SIMD variant against the portable LUT kernel (bit for
// bit), on random shapes including odd sizes, q = 1..4, mixed bits per row,
// groups, offsets, batch 1..8 and several thread counts.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "kernels/lut_common.h"
#include "kernels/dense_common.h"
#include "ondevice/bcq_gemm.h"
#include "ondevice/error.h"
#include "test_util.h"

using namespace ondevice;

namespace {

std::vector<float> run(const BitplaneMatrix& w, const std::vector<float>& x, size_t batch, KernelVariant v,
                       int threads) {
  std::vector<float> y(batch * w.layout().rows, -1234.5f);
  bcq_gemm(w, x.data(), batch, y.data(), v, threads);
  return y;
}

std::vector<float> random_x(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(n);
  for (auto& v : x) v = nd(rng);
  return x;
}

// W_hat[r, k] in double, straight from the spec's element definition.
double spec_weight(const BitplaneMatrix& w, uint32_t r, uint32_t k) {
  const uint32_t g = k / w.layout().group_size;
  double wk = w.has_offset() ? w.offset()[uint64_t(r) * w.layout().groups + g] : 0.0;
  for (uint32_t i = 0; i < w.row_bits()[r]; ++i) wk += (w.bit(r, i, k) ? 1.0 : -1.0) * w.scale(r, i, g);
  return wk;
}

// Dense dequantization straight from the spec's element definition.
double dense_dot(const BitplaneMatrix& w, uint32_t r, const float* x) {
  double acc = 0.0;
  for (uint32_t k = 0; k < w.layout().cols; ++k) acc += spec_weight(w, r, k) * x[k];
  return acc;
}

struct Shape {
  uint32_t rows, cols, group, min_bits, max_bits;
  bool offset;
  size_t batch;
};

void check_shape(const Shape& s, std::mt19937& rng) {
  auto m = testing::make_random_matrix(s.rows, s.cols, s.group, s.min_bits, s.max_bits, s.offset, rng);
  const BitplaneMatrix& w = m.matrix;
  const auto x = random_x(s.batch * s.cols, rng);
  std::ostringstream what;
  what << s.rows << "x" << s.cols << " g" << s.group << " bits" << s.min_bits << "-" << s.max_bits
       << (s.offset ? " offset" : "") << " batch" << s.batch;
  const auto ref = run(w, x, s.batch, KernelVariant::kReference, 1);
  for (size_t b = 0; b < s.batch; ++b)
    for (uint32_t r = 0; r < s.rows; ++r) {
      const double d = dense_dot(w, r, x.data() + b * s.cols);
      CHECK_MSG(std::fabs(ref[b * s.rows + r] - d) <= 1e-5 * (1.0 + std::fabs(d)), what.str());
    }
  const auto generic = run(w, x, s.batch, KernelVariant::kLutGeneric, 1);
  for (size_t b = 0; b < s.batch; ++b) {
    const auto bound = lut_error_bound(w, x.data() + b * s.cols);
    for (uint32_t r = 0; r < s.rows; ++r) {
      const double err = std::fabs(double(generic[b * s.rows + r]) - ref[b * s.rows + r]);
      const double slack = 1e-5 * (1.0 + std::fabs(ref[b * s.rows + r])) + 1e-3 * bound[r];
      CHECK_MSG(err <= bound[r] + slack, what.str() << " row " << r << " err " << err << " bound " << bound[r]);
    }
  }
  for (KernelVariant v : available_variants()) {
    if (v == KernelVariant::kReference) continue;
    for (int threads : {1, 3}) {
      const auto y = run(w, x, s.batch, v, threads);
      CHECK_MSG(std::memcmp(y.data(), generic.data(), y.size() * sizeof(float)) == 0,
                what.str() << " variant " << variant_name(v) << " threads " << threads << " differs from lut_generic");
    }
  }
}

}  // namespace

TEST(kernels_match_reference_on_random_shapes) {
  std::mt19937 rng(42);
  const uint32_t rows[] = {1, 5, 31, 32, 33, 70};
  const uint32_t cols[] = {1, 7, 8, 9, 63, 130, 1031, 2100};
  int n = 0;
  for (uint32_t r : rows)
    for (uint32_t c : cols) {
      std::vector<uint32_t> groups = {c};
      for (uint32_t g : {8u, 24u, 64u, 128u})
        if (g < c) groups.push_back(g);
      for (uint32_t g : groups) {
        const uint32_t q = 1 + (n % 4);
        const bool mixed = n % 5 == 0;
        check_shape({r, c, g, mixed ? 1 : q, q, n % 3 == 0, size_t(1 + n % 8)}, rng);
        ++n;
      }
    }
  CHECK(n > 100);
}

TEST(kernels_every_bit_width_and_batch) {
  std::mt19937 rng(7);
  for (uint32_t q = 1; q <= 4; ++q)
    for (size_t batch = 1; batch <= 8; ++batch) check_shape({67, 515, 128, q, q, batch % 2 == 0, batch}, rng);
}

TEST(lut_error_is_small_relative_to_output) {
  // The int8 tables cost little accuracy: relative RMS error vs the reference
  // stays well below the BCQ quantization error itself (tens of percent).
  std::mt19937 rng(9);
  auto m = testing::make_random_matrix(256, 1024, 128, 2, 2, false, rng);
  const auto x = random_x(1024, rng);
  const auto ref = run(m.matrix, x, 1, KernelVariant::kReference, 1);
  const auto y = run(m.matrix, x, 1, default_variant(), 1);
  double num = 0, den = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    num += (y[i] - ref[i]) * double(y[i] - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  CHECK_MSG(std::sqrt(num / den) < 0.01, "relative RMS error " << std::sqrt(num / den));
}

namespace {

// The dense path's result computed from the spec's element definition in the
// documented order: W_hat[r, k] = offset (or 0) + alpha_i * B_i for i < q_r,
// rounded after each addition, then one fma chain over ascending k per output.
std::vector<float> dense_expected(const BitplaneMatrix& w, const std::vector<float>& x, size_t batch) {
  const BitplaneLayout& L = w.layout();
  std::vector<float> wt(size_t(L.rows) * L.cols);
  for (uint32_t r = 0; r < L.rows; ++r)
    for (uint32_t k = 0; k < L.cols; ++k) {
      const uint32_t g = k / L.group_size;
      float v = w.has_offset() ? w.offset()[uint64_t(r) * L.groups + g] : 0.0f;
      for (uint32_t i = 0; i < w.row_bits()[r]; ++i) {
        const float a = w.scale(r, i, g);
        v = v + (w.bit(r, i, k) ? a : -a);
      }
      wt[size_t(r) * L.cols + k] = v;
    }
  std::vector<float> y(batch * L.rows);
  for (size_t b = 0; b < batch; ++b)
    for (uint32_t r = 0; r < L.rows; ++r) {
      float acc = 0.0f;
      for (uint32_t k = 0; k < L.cols; ++k) acc = std::fma(x[b * L.cols + k], wt[size_t(r) * L.cols + k], acc);
      y[b * L.rows + r] = acc;
    }
  return y;
}

// sum_k |W_hat[r, k] x_k| (double, from the spec's element definition).
double abs_dot(const BitplaneMatrix& w, uint32_t r, const float* x) {
  double acc = 0.0;
  for (uint32_t k = 0; k < w.layout().cols; ++k) acc += std::fabs(spec_weight(w, r, k) * x[k]);
  return acc;
}

std::vector<float> run_dense(const BitplaneMatrix& w, const std::vector<float>& x, size_t batch, KernelVariant v,
                             int threads) {
  std::vector<float> y(batch * w.layout().rows, -1234.5f);
  bcq_gemm_dense(w, x.data(), batch, y.data(), v, threads);
  return y;
}

}  // namespace

TEST(dense_path_is_the_spec_product_on_random_shapes) {
  // Bit for bit the documented fma order (portable variant), every SIMD
  // variant identical to it at any thread count, and within float rounding of
  // the double-precision reference; odd sizes, partial tiles, groups,
  // offsets, mixed bits per row, batches around the register blocking (6 / 4).
  std::mt19937 rng(11);
  const uint32_t rows[] = {1, 5, 31, 32, 33, 70};
  const uint32_t cols[] = {1, 7, 8, 9, 63, 130, 1031};
  int n = 0;
  for (uint32_t r : rows)
    for (uint32_t c : cols)
      for (uint32_t g : {c, 8u, 64u}) {
        if (g > c) continue;
        const uint32_t q = 1 + (n % 4);
        auto m = testing::make_random_matrix(r, c, g, n % 5 == 0 ? 1 : q, q, n % 3 == 0, rng);
        const size_t batch = size_t(1 + (n * 7) % 40);
        const auto x = random_x(batch * c, rng);
        std::ostringstream what;
        what << r << "x" << c << " g" << g << " q" << q << " batch" << batch;
        const auto expected = dense_expected(m.matrix, x, batch);
        const auto generic = run_dense(m.matrix, x, batch, KernelVariant::kLutGeneric, 1);
        CHECK_MSG(std::memcmp(generic.data(), expected.data(), generic.size() * sizeof(float)) == 0,
                  what.str() << ": portable dense path differs from the spec's order");
        const auto ref = run(m.matrix, x, batch, KernelVariant::kReference, 1);
        for (size_t i = 0; i < ref.size(); ++i) {
          // a chain of c fmas: |error| <= c * 2^-24 * sum_k |x_k w_k| (plus the weights' own rounding)
          const size_t b = i / r;
          const double mag = abs_dot(m.matrix, uint32_t(i % r), x.data() + b * c);
          CHECK_MSG(std::fabs(double(generic[i]) - ref[i]) <= (c + 8) * 6e-8 * mag + 1e-30,
                    what.str() << " element " << i << ": " << generic[i] << " vs " << ref[i]);
        }
        for (KernelVariant v : available_variants()) {
          if (v == KernelVariant::kReference) continue;
          for (int threads : {1, 2, 3}) {
            const auto y = run_dense(m.matrix, x, batch, v, threads);
            CHECK_MSG(std::memcmp(y.data(), generic.data(), y.size() * sizeof(float)) == 0,
                      what.str() << " dense " << variant_name(v) << " threads " << threads << " differs");
          }
        }
        ++n;
      }
  CHECK(n > 80);
}

TEST(dense_panel_kernels_equal_the_portable_one) {
  // Each x86 panel kernel on its own (the lut_avx2 variant's dense path runs only one of them on a
  // given CPU: AVX-512F where there is, AVX2 elsewhere): bit for bit the portable fma chains, on
  // row counts around both register blockings (6 and 12), odd k, partial tiles (ncols < 32).
#if defined(ONDEVICE_HAVE_AVX2)
  std::mt19937 rng(15);
  std::vector<std::pair<const char*, detail::DensePanelKernel>> kernels;
  if (std::find(available_variants().begin(), available_variants().end(), KernelVariant::kLutAvx2) !=
      available_variants().end())
    kernels.emplace_back("avx2", detail::dense_panel_avx2);
  if (detail::cpu_has_avx512f()) kernels.emplace_back("avx512", detail::dense_panel_avx512);
  else std::printf("  (no AVX-512F here: the AVX-512 panel kernel is not tested on this CPU)\n");
  for (uint32_t cols : {1u, 7u, 130u, 1031u})
    for (size_t rows : {1, 5, 6, 11, 12, 13, 25, 40})
      for (uint32_t ncols : {32u, 17u, 5u}) {
        const auto a = random_x(rows * (cols + 3), rng);
        const auto panel = random_x(size_t(cols) * kTileRows, rng);
        std::vector<float> want(rows * 40, -7.0f);
        detail::dense_panel_generic(a.data(), cols + 3, rows, panel.data(), cols, want.data(), 40, ncols);
        for (const auto& k : kernels) {
          std::vector<float> got(rows * 40, -7.0f);
          k.second(a.data(), cols + 3, rows, panel.data(), cols, got.data(), 40, ncols);
          CHECK_MSG(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0,
                    k.first << " cols " << cols << " rows " << rows << " ncols " << ncols);
        }
      }
#endif
}

TEST(dense_path_reads_overlapping_rows_in_place) {
  // ldx < cols: row b of X starts ldx floats after row b - 1 (a convolution's
  // frame windows, kernel = window x stride). Same bits as the product of the
  // rows copied out one by one, for every variant, thread count, and window.
  std::mt19937 rng(14);
  int n = 0;
  for (uint32_t stride : {1u, 3u, 5u, 16u, 47u})
    for (uint32_t window : {2u, 3u})
      for (size_t batch : {1, 2, 7, 40}) {
        const uint32_t cols = window * stride, rows = 1 + uint32_t(rng() % 70);
        auto m = testing::make_random_matrix(rows, cols, std::min(cols, 16u), 1 + n % 4, 1 + n % 4, n % 2 == 0, rng);
        const auto frames = random_x((batch - 1) * stride + cols, rng);
        std::vector<float> copied(batch * cols);
        for (size_t b = 0; b < batch; ++b)
          std::memcpy(copied.data() + b * cols, frames.data() + b * stride, cols * sizeof(float));
        for (KernelVariant v : available_variants()) {
          if (v == KernelVariant::kReference) continue;
          const auto want = run_dense(m.matrix, copied, batch, v, 1);
          for (int threads : {1, 2}) {
            std::vector<float> y(batch * rows, -1234.5f);
            bcq_gemm_dense(m.matrix, frames.data(), batch, y.data(), v, threads, stride);
            CHECK_MSG(std::memcmp(y.data(), want.data(), y.size() * sizeof(float)) == 0,
                      variant_name(v) << " stride " << stride << " window " << window << " batch " << batch);
          }
        }
        ++n;
      }
  CHECK(n == 40);
}

TEST(bitplane_kernel_takes_the_dense_path_from_its_threshold) {
  std::mt19937 rng(12);
  auto m = testing::make_random_matrix(45, 200, 64, 3, 3, true, rng);
  BitplaneKernel k;
  k.dense_min_rows = 8;
  for (size_t batch : {1, 7, 8, 50}) {
    const auto x = random_x(batch * 200, rng);
    std::vector<float> y(batch * 45);
    k.gemm(m.matrix, x.data(), batch, y.data(), 2);
    std::vector<float> want(batch * 45);
    if (batch >= 8) bcq_gemm_dense(m.matrix, x.data(), batch, want.data(), k.variant, 1);
    else bcq_gemm(m.matrix, x.data(), batch, want.data(), k.variant, 1, k.lut16);
    CHECK_MSG(std::memcmp(y.data(), want.data(), y.size() * sizeof(float)) == 0, "batch " << batch);
  }
  {  // 2 bits per weight: the LUT kernels whatever the rows
    auto m2 = testing::make_random_matrix(45, 200, 64, 1, 2, false, rng);
    const auto x = random_x(50 * 200, rng);
    std::vector<float> y(50 * 45), want(50 * 45);
    k.gemm(m2.matrix, x.data(), 50, y.data(), 1);
    bcq_gemm(m2.matrix, x.data(), 50, want.data(), k.variant, 1, k.lut16);
    CHECK(std::memcmp(y.data(), want.data(), y.size() * sizeof(float)) == 0);
  }
  k.dense_min_rows = 0;  // never
  const auto x = random_x(50 * 200, rng);
  std::vector<float> y(50 * 45), want(50 * 45);
  k.gemm(m.matrix, x.data(), 50, y.data(), 1);
  bcq_gemm(m.matrix, x.data(), 50, want.data(), k.variant, 1, k.lut16);
  CHECK(std::memcmp(y.data(), want.data(), y.size() * sizeof(float)) == 0);
}

TEST(dense_path_rejects_bad_arguments) {
  std::mt19937 rng(13);
  auto m = testing::make_random_matrix(8, 16, 16, 2, 2, false, rng);
  std::vector<float> x(3 * 16, 1.0f), y(3 * 8);
  CHECK_THROWS(bcq_gemm_dense(m.matrix, x.data(), 3, y.data(), KernelVariant::kReference, 1), ArgumentError);
  CHECK_THROWS(bcq_gemm_dense(m.matrix, x.data(), 3, y.data(), KernelVariant::kLutGeneric, 0), ArgumentError);
  CHECK_THROWS(bcq_gemm_dense(m.matrix, nullptr, 3, y.data(), KernelVariant::kLutGeneric, 1), ArgumentError);
  CHECK_THROWS(bcq_gemm_dense(BitplaneMatrix(), x.data(), 3, y.data(), KernelVariant::kLutGeneric, 1), ArgumentError);
  // non-finite activations: the same error as the LUT path's, whichever path a product takes
  x[20] = std::nanf("");
  CHECK_THROWS(bcq_gemm_dense(m.matrix, x.data(), 3, y.data(), KernelVariant::kLutGeneric, 1), ArgumentError);
  x[20] = -INFINITY;
  CHECK_THROWS(bcq_gemm_dense(m.matrix, x.data(), 3, y.data(), default_variant(), 1), ArgumentError);
}

TEST(kernels_reject_bad_arguments) {
  std::mt19937 rng(5);
  auto m = testing::make_random_matrix(8, 16, 16, 2, 2, false, rng);
  std::vector<float> x(16, 1.0f), y(8);
  CHECK_THROWS(bcq_gemm(m.matrix, x.data(), 1, y.data(), default_variant(), 0), ArgumentError);
  CHECK_THROWS(bcq_gemm(m.matrix, nullptr, 1, y.data(), default_variant(), 1), ArgumentError);
  CHECK_THROWS(bcq_gemm(BitplaneMatrix(), x.data(), 1, y.data(), default_variant(), 1), ArgumentError);
  x[3] = std::nanf("");
  CHECK_THROWS(bcq_gemm(m.matrix, x.data(), 1, y.data(), KernelVariant::kLutGeneric, 1), ArgumentError);
  x[3] = INFINITY;
  CHECK_THROWS(bcq_gemm(m.matrix, x.data(), 1, y.data(), KernelVariant::kLutGeneric, 1), ArgumentError);
  CHECK_THROWS(variant_from_name("lut_sse9"), ArgumentError);
}

TEST(dispatch_picks_a_simd_variant_where_available) {
  const auto v = available_variants();
  CHECK(v.size() >= 2);
#if defined(__aarch64__)
  CHECK(default_variant() == KernelVariant::kLutNeon || std::getenv("ONDEVICE_KERNEL") != nullptr);
#endif
  for (KernelVariant k : v) CHECK(variant_from_name(variant_name(k)) == k);
}

TEST(table_quantizers_are_bit_identical) {
  // Every ISA's table builder must produce the generic builder's exact bytes,
  // including on rounding ties, zeros, signed zeros and the extreme scale.
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const size_t chunks = 515;
  std::vector<float> xp(4 * chunks);
  for (auto& v : xp) v = nd(rng);
  for (size_t i = 0; i < 64; ++i) xp[i] = float(int(i % 9) - 4) * 0.5f;  // exact ties after scaling
  xp[64] = -0.0f;
  std::vector<std::pair<const char*, detail::TableQuantizer>> impls = {{"best", detail::best_table_quantizer()}};
#if defined(ONDEVICE_HAVE_AVX2)
  if (__builtin_cpu_supports("avx2")) impls.push_back({"avx2", detail::quantize_tables_avx2});
#endif
#if defined(ONDEVICE_HAVE_NEON)
  impls.push_back({"neon", detail::quantize_tables_neon});
#endif
  for (float inv : {127.0f / 8.0f, 1.0f, 63.5f, 0.0f, 127.0f / 3.7f}) {
    std::vector<int8_t> ref(16 * chunks), got(16 * chunks);
    detail::quantize_tables_generic(xp.data(), 0, chunks, inv, ref.data());
    for (auto& [name, fn] : impls) {
      std::fill(got.begin(), got.end(), int8_t(99));
      fn(xp.data(), 3, chunks, inv, got.data());
      CHECK_MSG(std::memcmp(got.data() + 48, ref.data() + 48, 16 * (chunks - 3)) == 0, name << " inv " << inv);
      CHECK_MSG(got[0] == 99 && got[47] == 99, name << " wrote outside [c0, c1)");
    }
  }
  // Entry semantics on one hand-checked chunk: x = (1, 2, 4, 8), inv = 1.
  const float x[4] = {1, 2, 4, 8};
  int8_t t[16];
  detail::quantize_tables_generic(x, 0, 1, 1.0f, t);
  for (int idx = 0; idx < 16; ++idx) {
    int expect = 0;
    for (int j = 0; j < 4; ++j) expect += ((idx >> j) & 1) ? int(x[j]) : -int(x[j]);
    CHECK(t[idx] == expect);
  }
}

TEST(tiny_and_huge_activations_stay_within_the_bound) {
  // 127 / maxabs overflows float for maxabs < ~3.7e-37: such blocks are
  // rescaled exactly, so every variant still agrees and honours the bound.
  std::mt19937 rng(13);
  auto m = testing::make_random_matrix(40, 300, 128, 1, 4, true, rng);
  for (float scale : {1e-39f, 1e-30f, 1e-20f, 1e20f, 1e30f}) {
    auto x = random_x(2 * 300, rng);
    for (auto& v : x) v *= scale;
    const auto ref = run(m.matrix, x, 2, KernelVariant::kReference, 1);
    const auto generic = run(m.matrix, x, 2, KernelVariant::kLutGeneric, 1);
    for (size_t b = 0; b < 2; ++b) {
      const auto bound = lut_error_bound(m.matrix, x.data() + b * 300);
      for (uint32_t r = 0; r < 40; ++r) {
        const double err = std::fabs(double(generic[b * 40 + r]) - ref[b * 40 + r]);
        CHECK_MSG(std::isfinite(generic[b * 40 + r]) && err <= bound[r] * 1.001 + 1e-5 * std::fabs(ref[b * 40 + r]) + 1e-44,
                  "scale " << scale << " row " << r << " err " << err << " bound " << bound[r]);
      }
    }
    for (KernelVariant v : available_variants())
      if (v != KernelVariant::kReference) {
        const auto y = run(m.matrix, x, 2, v, 2);
        CHECK_MSG(std::memcmp(y.data(), generic.data(), y.size() * sizeof(float)) == 0, variant_name(v) << " " << scale);
      }
  }
}
