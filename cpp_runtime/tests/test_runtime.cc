// The executor, its float kernels, the two-pass (lut16) bit-plane kernel,
// the buffer pool, greedy/beam search and the native translator on the
// shipped model. Built and run natively, under ASan+UBSan and for aarch64
// under qemu: the translations checked here are the same strings on x86-64
// and aarch64 (the kernels round identically on both).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "kernels/float_kernels.h"
#include "ondevice/bcq_gemm.h"
#include "ondevice/error.h"
#include "ondevice/executor.h"
#include "ondevice/translator.h"
#include "runtime/search.h"
#include "test_util.h"

using namespace ondevice;

namespace {

std::vector<float> gemm(const BitplaneMatrix& w, const std::vector<float>& x, size_t batch, KernelVariant v,
                        bool lut16, int threads = 1) {
  std::vector<float> y(batch * w.layout().rows);
  bcq_gemm(w, x.data(), batch, y.data(), v, threads, lut16);
  return y;
}

const std::string kModel = "models/nmt-en-de-bcq/onnx";

std::string model_dir() {
  const std::string m = testing::repo_file(kModel + "/manifest.json");
  return m.empty() ? "" : m.substr(0, m.size() - std::strlen("/manifest.json"));
}

#define NEED_MODEL(dir)                                                         \
  const std::string dir = model_dir();                                          \
  if (dir.empty()) {                                                            \
    std::printf("  (skipped: %s not found in this checkout)\n", kModel.c_str()); \
    return;                                                                      \
  }

// Copies the model directory to a fresh temporary one (to corrupt it).
std::string copy_model(const std::string& dir) {
  char tmpl[] = "/tmp/ondevice_rt_test_XXXXXX";
  const std::string out = ::mkdtemp(tmpl);
  for (const char* f : {"manifest.json", "encoder.onnx", "decoder_step.onnx", "weights.bin", "spm.model"}) {
    std::ifstream in(dir + "/" + f, std::ios::binary);
    std::ofstream o(out + "/" + f, std::ios::binary);
    o << in.rdbuf();
  }
  return out;
}

void remove_dir(const std::string& d) {
  for (const char* f : {"manifest.json", "encoder.onnx", "decoder_step.onnx", "weights.bin", "spm.model"})
    std::remove((d + "/" + f).c_str());
  std::remove(d.c_str());
}

}  // namespace

TEST(exp_det_is_accurate) {
  for (float x = -100.0f; x < 88.0f; x += 0.0137f) {
    const double want = std::exp(double(x));
    const double got = detail::exp_det(x);
    if (x < -87.0f) {
      CHECK(got == 0.0);  // flushed: below the smallest normal float
      continue;
    }
    CHECK_MSG(std::fabs(got - want) <= 4e-7 * want, "x " << x << " got " << got << " want " << want);
  }
  CHECK(detail::exp_det(-INFINITY) == 0.0f);
  CHECK(std::isinf(detail::exp_det(INFINITY)));
  CHECK(std::isnan(detail::exp_det(NAN)));
  CHECK(detail::exp_det(0.0f) == 1.0f);
}

TEST(float_gemm_softmax_layernorm_match_double_math) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (size_t m : {1, 3, 17})
    for (size_t n : {1, 5, 64, 67})
      for (size_t k : {1, 4, 7, 64, 130}) {
        std::vector<float> a(m * k), b(k * n), c(m * n);
        for (auto& v : a) v = nd(rng);
        for (auto& v : b) v = nd(rng);
        detail::gemm_f32(m, n, k, a.data(), k, b.data(), n, c.data(), n);
        for (size_t i = 0; i < m; ++i)
          for (size_t j = 0; j < n; ++j) {
            double want = 0;
            for (size_t p = 0; p < k; ++p) want += double(a[i * k + p]) * b[p * n + j];
            CHECK_MSG(std::fabs(c[i * n + j] - want) <= 1e-5 * (1 + std::fabs(want)) * std::sqrt(double(k)),
                      m << "x" << n << "x" << k);
          }
      }
  std::vector<float> x(3 * 37);
  for (auto& v : x) v = 5 * nd(rng);
  x[5] = -INFINITY;  // a masked position
  std::vector<float> s = x;
  detail::softmax_rows(s.data(), 3, 37);
  for (size_t r = 0; r < 3; ++r) {
    double sum = 0, mx = -INFINITY;
    for (size_t j = 0; j < 37; ++j) mx = std::max(mx, double(x[r * 37 + j]));
    for (size_t j = 0; j < 37; ++j) sum += std::exp(double(x[r * 37 + j]) - mx);
    for (size_t j = 0; j < 37; ++j)
      CHECK(std::fabs(s[r * 37 + j] - std::exp(double(x[r * 37 + j]) - mx) / sum) < 1e-6);
  }
  CHECK(s[5] == 0.0f);
  std::vector<float> scale(37), bias(37), y(3 * 37);
  for (size_t j = 0; j < 37; ++j) {
    scale[j] = nd(rng);
    bias[j] = nd(rng);
  }
  std::vector<float> z(x.begin(), x.end());
  z[5] = 1.0f;
  detail::layer_norm_rows(z.data(), y.data(), 3, 37, scale.data(), bias.data(), 1e-5f);
  for (size_t r = 0; r < 3; ++r) {
    double mean = 0, var = 0;
    for (size_t j = 0; j < 37; ++j) mean += z[r * 37 + j] / 37.0;
    for (size_t j = 0; j < 37; ++j) var += (z[r * 37 + j] - mean) * (z[r * 37 + j] - mean) / 37.0;
    for (size_t j = 0; j < 37; ++j) {
      const double want = (z[r * 37 + j] - mean) / std::sqrt(var + 1e-5) * scale[j] + bias[j];
      CHECK(std::fabs(y[r * 37 + j] - want) < 1e-4 * (1 + std::fabs(want)));
    }
  }
}

TEST(lut16_is_within_its_bound_and_identical_across_variants) {
  std::mt19937 rng(21);
  std::normal_distribution<float> nd;
  for (uint32_t rows : {1u, 31u, 70u})
    for (uint32_t cols : {8u, 13u, 256u, 300u})
      for (bool offset : {false, true}) {
        const uint32_t group = cols >= 64 ? 32 : cols;
        auto m = testing::make_random_matrix(rows, cols, group, 1, 4, offset, rng);
        for (size_t batch : {1, 3}) {
          std::vector<float> x(batch * cols);
          for (auto& v : x) v = nd(rng);
          const auto ref = gemm(m.matrix, x, batch, KernelVariant::kReference, false);
          const auto lut8 = gemm(m.matrix, x, batch, KernelVariant::kLutGeneric, false);
          const auto lut16 = gemm(m.matrix, x, batch, KernelVariant::kLutGeneric, true);
          double err8 = 0, err16 = 0;
          for (size_t b = 0; b < batch; ++b) {
            const auto bound = lut_error_bound(m.matrix, x.data() + b * cols);
            for (uint32_t r = 0; r < rows; ++r) {
              const size_t i = b * rows + r;
              const double e = std::fabs(double(lut16[i]) - ref[i]);
              // Residual tables: the int8 bound over 254, plus float rounding.
              CHECK_MSG(e <= bound[r] / 254.0 * 1.01 + 1e-5 * (1 + std::fabs(ref[i])),
                        rows << "x" << cols << " row " << r << " err " << e << " bound " << bound[r]);
              err8 += std::fabs(double(lut8[i]) - ref[i]);
              err16 += e;
            }
          }
          CHECK_MSG(err16 <= err8 / 20 + 1e-4, "lut16 is not much closer than lut8: " << err16 << " vs " << err8);
          for (KernelVariant v : available_variants()) {
            if (v == KernelVariant::kReference) continue;
            for (int threads : {1, 3}) {
              const auto y = gemm(m.matrix, x, batch, v, true, threads);
              CHECK_MSG(std::memcmp(y.data(), lut16.data(), y.size() * sizeof(float)) == 0,
                        variant_name(v) << " lut16 differs from lut16_generic");
            }
          }
        }
      }
}

TEST(bitplane_kernel_names) {
  CHECK(BitplaneKernel::from_name("").lut16);
  CHECK(BitplaneKernel::from_name("lut16_generic").name() == "lut16_generic");
  CHECK(BitplaneKernel::from_name("lut_generic").name() == "lut_generic");
  CHECK(!BitplaneKernel::from_name("reference").lut16);
  CHECK_THROWS(BitplaneKernel::from_name("lut16_sse9"), ArgumentError);
  CHECK_THROWS(BitplaneKernel::from_name("gpu"), ArgumentError);
}

TEST(buffer_pool_reuses_freed_buffers) {
  auto pool = BufferPool::create();
  { Tensor a = Tensor::allocate(DType::kFloat32, {10, 10}, pool.get()); }
  CHECK(pool->stats().heap_allocations == 1);
  for (int i = 0; i < 5; ++i) {
    Tensor b = Tensor::allocate(DType::kFloat32, {90}, pool.get());  // same size class (512 bytes)
    b.mutable_data<float>()[89] = 1.0f;
  }
  CHECK(pool->stats().heap_allocations == 1);
  CHECK(pool->stats().reuses == 5);
  Tensor c = Tensor::allocate(DType::kInt64, {3}, pool.get());
  CHECK_THROWS(c.data<float>(), ArgumentError);
  Tensor view = Tensor::borrowed(DType::kFloat32, {2}, c.raw(), nullptr);
  CHECK_THROWS(view.mutable_data<float>(), ArgumentError);
  CHECK_THROWS(c.reshaped({4}), ArgumentError);
  CHECK_THROWS(Tensor::allocate(DType::kFloat32, {-1}, pool.get()), ArgumentError);
  CHECK_THROWS(Tensor::allocate(DType::kFloat32, {1 << 30, 1 << 30}, pool.get()), ArgumentError);
  pool.reset();  // a live tensor outlives its pool: its buffer is freed, not returned
}

// A toy decoder over a 6-token vocabulary (bos 0, pad 1, eos 2): the next
// token's logits depend only on the last token. From eos, token 3 is the
// greedy choice but leads to a poor continuation; token 4 has a slightly lower
// probability and continues with certainty, so beam search prefers 4 5.
namespace {
Tensor toy_logits(const std::vector<int64_t>& last, search::State&) {
  Tensor t = Tensor::allocate(DType::kFloat32, {int64_t(last.size()), 6}, nullptr);
  float* p = t.mutable_data<float>();
  for (size_t r = 0; r < last.size(); ++r) {
    float* l = p + r * 6;
    const float table[6][6] = {
        {0, 0, 0, 0, 0, 0},
        {0, 0, 0, 0, 0, 0},
        {-9, -9, -9, 0.0f, -0.1f, -9},  // after eos (start): 3 slightly better than 4
        {-9, -9, -0.7f, -9, -9, -0.7f},  // after 3: eos or 5, both unsure
        {-9, -9, -9, -9, -9, 5.0f},      // after 4: 5 certainly
        {-9, -9, 5.0f, -9, -9, -9},      // after 5: eos
    };
    std::memcpy(l, table[last[r]], sizeof(float) * 6);
  }
  return t;
}
}  // namespace

TEST(greedy_and_beam_search_follow_the_reference_rules) {
  search::Special sp;
  sp.vocab = 6;
  sp.max_positions = 100;
  search::SearchOptions o;
  search::State empty;
  const auto g = search::greedy_search(toy_logits, empty, {3, 3}, sp, o, nullptr);
  CHECK(g.size() == 2);
  // Greedy takes 3, then (eos and 5 tie) the first maximum: eos -> [3].
  CHECK((g[0] == std::vector<int32_t>{3}));
  o.beam = 2;
  const auto b = search::beam_search(toy_logits, empty, {3}, sp, o, nullptr);
  CHECK(b.size() == 1 && !b[0].empty());
  CHECK_MSG((b[0][0].tokens == std::vector<int32_t>{4, 5}), "beam best has " << b[0][0].tokens.size() << " tokens");
  // Max length: max_len_a = 0, max_len_b = 1 forces eos after one token.
  o.max_len_a = 0;
  o.max_len_b = 1;
  const auto short_b = search::beam_search(toy_logits, empty, {3}, sp, o, nullptr);
  for (const auto& h : short_b[0]) CHECK(h.tokens.size() <= 1);
  o.beam = 1;
  const auto short_g = search::greedy_search(toy_logits, empty, {3}, sp, o, nullptr);
  CHECK(short_g[0].size() == 1);
  CHECK((search::max_lengths({0, 5, 5000}, sp, search::SearchOptions()) == std::vector<int64_t>{10, 16, 99}));
}

TEST(executor_runs_the_exported_op_set_and_checks_feeds) {
  NEED_MODEL(dir);
  const Executor enc = Executor::load(dir + "/encoder.onnx");
  CHECK((enc.input_names() == std::vector<std::string>{"src_tokens"}));
  CHECK(enc.output_names().size() == 8);
  Tensor src = Tensor::allocate(DType::kInt64, {1, 3}, nullptr);
  const int64_t ids[3] = {113, 165, 2};
  std::memcpy(src.mutable_data<int64_t>(), ids, sizeof(ids));
  const auto out = enc.run({{"src_tokens", src}});
  CHECK(out[0].shape() == (Shape{1, 3, 256}));
  CHECK(out[1].dtype() == DType::kBool);
  CHECK_THROWS(enc.run({}), ArgumentError);
  CHECK_THROWS(enc.run({{"src_tokens", src}, {"other", src}}), ArgumentError);
  Tensor wrong = Tensor::allocate(DType::kFloat32, {1, 3}, nullptr);
  CHECK_THROWS(enc.run({{"src_tokens", wrong}}), ArgumentError);
  Tensor rank = Tensor::allocate(DType::kInt64, {3}, nullptr);
  CHECK_THROWS(enc.run({{"src_tokens", rank}}), ArgumentError);
  Tensor oov = Tensor::allocate(DType::kInt64, {1, 1}, nullptr);
  oov.mutable_data<int64_t>()[0] = 8000;
  CHECK_THROWS(enc.run({{"src_tokens", oov}}), ArgumentError);
  const auto ops = Executor::supported_ops();
  CHECK(std::find(ops.begin(), ops.end(), "ondevice.BitPlaneMatMul") != ops.end());
}

TEST(translator_translates_the_shipped_model) {
  NEED_MODEL(dir);
  const Translator t(dir);
  TranslateOptions beam;
  TranslateOptions greedy;
  greedy.beam_size = 1;
  // Held-out text from the model card; the same strings on every ISA.
  CHECK_MSG(t.translate("The house is small.", beam) == "Das Haus ist wenig.", t.translate("The house is small.", beam));
  CHECK_MSG(t.translate("The house is small.", greedy) == "Das Haus ist kleine.", t.translate("The house is small.", greedy));
  const auto out = t.translate_batch({"And God said, Let there be light: and there was light.", "", "  ", "Unknown state"},
                                     greedy);
  CHECK_MSG(out[0] == "Und Gott sprach: Es sei Licht! Und es war Licht.", out[0]);
  CHECK(out[1].empty() && out[2].empty());
  CHECK_MSG(out[3] == "Unbekannter stat", out[3]);
  CHECK(t.translate_batch({}, greedy).empty());
  CHECK_THROWS(t.translate(std::string("caf\xc3", 4), greedy), ArgumentError);
  CHECK_THROWS(t.translate(std::string(kMaxInputBytes + 1, 'a'), greedy), ArgumentError);
  std::string long_text;
  for (int i = 0; i < 1100; ++i) long_text += "house ";
  CHECK_THROWS(t.translate(long_text, greedy), ArgumentError);  // more tokens than positions
  TranslateOptions bad;
  bad.beam_size = 0;
  CHECK_THROWS(t.translate("a", bad), ArgumentError);
  CHECK_THROWS(t.generate({{5, 9000, 2}}, greedy), ArgumentError);
}

TEST(translator_memory_stays_flat_and_threads_agree) {
  NEED_MODEL(dir);
  const Translator t(dir);
  TranslateOptions greedy;
  greedy.beam_size = 1;
  const std::vector<std::string> src = {"The house is small.", "Open the file.", "Unknown state"};
  const auto first = t.translate_batch(src, greedy);
  // The decoder's buffers are reused step after step and batch after batch;
  // the encoder's are freed after each batch: the bytes held stay put.
  const uint64_t held = t.pool_stats().bytes_held;
  for (int i = 0; i < 3; ++i) CHECK(t.translate_batch(src, greedy) == first);
  CHECK_MSG(t.pool_stats().bytes_held == held, "pools hold " << t.pool_stats().bytes_held << " bytes, were " << held);
  std::vector<std::vector<std::string>> got(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i)
    threads.emplace_back([&, i] { got[i] = t.translate_batch(src, greedy); });
  for (auto& th : threads) th.join();
  for (const auto& g : got) CHECK(g == first);
}

TEST(translator_rejects_corrupt_model_directories) {
  NEED_MODEL(dir);
  CHECK_THROWS(Translator("/nonexistent/model"), FormatError);
  {
    const std::string d = copy_model(dir);
    std::ofstream(d + "/weights.bin", std::ios::binary | std::ios::in | std::ios::out).seekp(1000) << 'X';
    CHECK_THROWS(Translator(d), FormatError);  // sha256 differs
    TranslatorOptions no_check;
    no_check.verify_checksums = false;
    // Without checksums the flipped byte may load (a flipped plane bit is a
    // valid matrix) or be rejected by the matrix validation; either way no crash.
    try {
      Translator unchecked(d, no_check);
      unchecked.translate("The house is small.");
    } catch (const Error&) {
    }
    remove_dir(d);
  }
  {
    const std::string d = copy_model(dir);
    std::ofstream(d + "/weights.bin", std::ios::binary | std::ios::trunc) << "short";
    CHECK_THROWS(Translator(d), FormatError);
    TranslatorOptions no_check;
    no_check.verify_checksums = false;
    CHECK_THROWS(Translator(d, no_check), FormatError);  // sizes are always checked
    remove_dir(d);
  }
  {
    const std::string d = copy_model(dir);
    std::ofstream(d + "/manifest.json", std::ios::trunc) << "{\"format\": \"ondevice-onnx-model\"";
    CHECK_THROWS(Translator(d), FormatError);
    remove_dir(d);
  }
  {
    const std::string d = copy_model(dir);
    std::ofstream(d + "/encoder.onnx", std::ios::binary | std::ios::trunc) << "not a model";
    CHECK_THROWS(Translator(d), FormatError);
    remove_dir(d);
  }
}
