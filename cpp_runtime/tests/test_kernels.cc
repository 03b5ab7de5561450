// Kernel tests: every variant against the reference (within the LUT error
// bound) and every SIMD variant against the portable LUT kernel (bit for
// bit), on random shapes including odd sizes, q = 1..4, mixed bits per row,
// groups, offsets, batch 1..8 and several thread counts.
#include <cmath>
#include <cstring>

#include "kernels/lut_common.h"
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

// Dense dequantization straight from the spec's element definition.
double dense_dot(const BitplaneMatrix& w, uint32_t r, const float* x) {
  const BitplaneLayout& L = w.layout();
  double acc = 0.0;
  for (uint32_t k = 0; k < L.cols; ++k) {
    const uint32_t g = k / L.group_size;
    double wk = w.has_offset() ? w.offset()[uint64_t(r) * L.groups + g] : 0.0;
    for (uint32_t i = 0; i < w.row_bits()[r]; ++i) wk += (w.bit(r, i, k) ? 1.0 : -1.0) * w.scale(r, i, g);
    acc += wk * x[k];
  }
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
