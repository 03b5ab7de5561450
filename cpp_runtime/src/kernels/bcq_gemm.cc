// Kernel dispatch: picks the variant (cpuid on x86, build-time on aarch64),
// splits tiles over threads, and applies the shared offset epilogue.
#include "ondevice/bcq_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include "../runtime/thread_pool.h"
#include "dense_common.h"
#include "lut_common.h"
#include "ondevice/error.h"

namespace ondevice {
namespace {

bool cpu_has_avx2() {
#if defined(ONDEVICE_HAVE_AVX2) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace

#if defined(ONDEVICE_HAVE_AVX2)
bool detail::cpu_has_avx512f() {
#if defined(__GNUC__) || defined(__clang__)
  // __builtin_cpu_supports also checks that the OS saves the zmm state (XCR0).
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return has;
#else
  return false;
#endif
}
#endif

namespace {

// The argument checks both product paths make; false when there is nothing to
// compute (batch 0). Caps `threads`: more threads than cores only adds
// hand-offs, and a typo must not spawn thousands.
bool check_product_args(const BitplaneLayout& L, const float* x, size_t batch, const float* y, int& threads) {
  if (L.rows == 0) throw ArgumentError("matrix is empty (default-constructed)");
  if (batch == 0) return false;
  if (x == nullptr || y == nullptr) throw ArgumentError("x and y must not be null");
  if (threads < 1) throw ArgumentError("threads must be >= 1");
  static const int max_threads = int(std::max(1u, std::thread::hardware_concurrency())) * 4;  // a syscall: once
  threads = std::min(threads, max_threads);
  return true;
}

}  // namespace

const char* variant_name(KernelVariant v) {
  switch (v) {
    case KernelVariant::kReference: return "reference";
    case KernelVariant::kLutGeneric: return "lut_generic";
    case KernelVariant::kLutAvx2: return "lut_avx2";
    case KernelVariant::kLutNeon: return "lut_neon";
  }
  return "unknown";
}

std::vector<KernelVariant> available_variants() {
  std::vector<KernelVariant> v = {KernelVariant::kReference, KernelVariant::kLutGeneric};
  if (cpu_has_avx2()) v.push_back(KernelVariant::kLutAvx2);
#if defined(ONDEVICE_HAVE_NEON)
  v.push_back(KernelVariant::kLutNeon);
#endif
  return v;
}

KernelVariant variant_from_name(const std::string& name) {
  std::string known;
  for (KernelVariant v : available_variants()) {
    if (name == variant_name(v)) return v;
    known += std::string(known.empty() ? "" : ", ") + variant_name(v);
  }
  throw ArgumentError("kernel variant '" + name + "' is not available here (available: " + known + ")");
}

KernelVariant default_variant() {
  if (const char* env = std::getenv("ONDEVICE_KERNEL"); env != nullptr && *env != '\0')
    return variant_from_name(env);
  return available_variants().back();
}

void bcq_gemm(const BitplaneMatrix& w, const float* x, size_t batch, float* y, KernelVariant variant,
              int threads, bool lut16) {
  const BitplaneLayout& L = w.layout();
  if (!check_product_args(L, x, batch, y, threads)) return;
  if (variant == KernelVariant::kReference) {
    detail::parallel_for(L.rows, threads, [&](size_t r0, size_t r1) {
      detail::reference_rows(w, x, batch, y, uint32_t(r0), uint32_t(r1));
    }, std::max<size_t>(1, 65536 / (size_t(L.cols) * batch)));
    return;
  }
  detail::TileKernel kernel = nullptr;
  switch (variant) {
    case KernelVariant::kLutGeneric: kernel = detail::lut_tiles_generic; break;
#if defined(ONDEVICE_HAVE_AVX2)
    case KernelVariant::kLutAvx2:
      if (!cpu_has_avx2()) throw ArgumentError("this CPU lacks AVX2/FMA: lut_avx2 is unavailable");
      kernel = detail::lut_tiles_avx2;
      break;
#endif
#if defined(ONDEVICE_HAVE_NEON)
    case KernelVariant::kLutNeon: kernel = detail::lut_tiles_neon; break;
#endif
    default: throw ArgumentError(std::string("kernel variant ") + variant_name(variant) + " is not in this build");
  }
  detail::LutActivations residual;
  const detail::LutActivations acts = detail::build_lut_activations(L, x, batch, lut16 ? &residual : nullptr);
#if defined(ONDEVICE_HAVE_AVX2)
  const detail::TileKernel fused_kernel = detail::lut_tiles_avx2;  // has a one-sweep lut16 version
#else
  const detail::TileKernel fused_kernel = nullptr;
#endif
  std::vector<float> y_res(lut16 && kernel != fused_kernel ? batch * L.rows : 0);
  // About 16k table-lookup steps (~10 us) per thread at least; fewer is not
  // worth a hand-off to another thread.
  const uint64_t steps_per_tile = std::max<uint64_t>(1, uint64_t(L.kbytes) * batch * L.tile_bits[0]);
  const size_t grain = size_t(std::max<uint64_t>(1, 16384 / steps_per_tile));
  detail::parallel_for(L.tiles, threads, [&](size_t t0, size_t t1) {
    const uint32_t r0 = uint32_t(t0) * kTileRows, r1 = std::min<uint32_t>(uint32_t(t1) * kTileRows, L.rows);
#if defined(ONDEVICE_HAVE_AVX2)
    if (lut16 && kernel == detail::lut_tiles_avx2) {
      detail::lut16_tiles_avx2(w, acts, residual, y, uint32_t(t0), uint32_t(t1));
    } else
#endif
    {
      kernel(w, acts, y, uint32_t(t0), uint32_t(t1));
    }
    if (lut16 && kernel != fused_kernel) {
      kernel(w, residual, y_res.data(), uint32_t(t0), uint32_t(t1));
      for (size_t b = 0; b < batch; ++b)
        for (uint32_t r = r0; r < r1; ++r) y[b * L.rows + r] += y_res[b * L.rows + r];
    }
    if (!w.has_offset()) return;
    for (size_t b = 0; b < batch; ++b)
      for (uint32_t r = r0; r < r1; ++r) {
        float v = y[b * L.rows + r];
        for (uint32_t g = 0; g < L.groups; ++g)
          v = std::fma(w.offset()[uint64_t(r) * L.groups + g], acts.sums(b)[g], v);
        y[b * L.rows + r] = v;
      }
  }, grain);
}

void bcq_gemm_dense(const BitplaneMatrix& w, const float* x, size_t batch, float* y, KernelVariant variant,
                    int threads, size_t ldx) {
  const BitplaneLayout& L = w.layout();
  if (!check_product_args(L, x, batch, y, threads)) return;
  if (ldx == 0) ldx = L.cols;
  detail::DensePanelKernel kernel = nullptr;
  switch (variant) {
    case KernelVariant::kLutGeneric: kernel = detail::dense_panel_generic; break;
#if defined(ONDEVICE_HAVE_AVX2)
    case KernelVariant::kLutAvx2:
      if (!cpu_has_avx2()) throw ArgumentError("this CPU lacks AVX2/FMA: lut_avx2 is unavailable");
      kernel = detail::cpu_has_avx512f() ? detail::dense_panel_avx512 : detail::dense_panel_avx2;
      break;
#endif
#if defined(ONDEVICE_HAVE_NEON)
    case KernelVariant::kLutNeon: kernel = detail::dense_panel_neon; break;
#endif
    default:
      throw ArgumentError(std::string("kernel variant ") + variant_name(variant) + " has no dense path in this build");
  }
  // The LUT path rejects non-finite activations while building its tables;
  // the same inputs get the same error here, whichever path a product takes.
  for (size_t b = 0; b < batch; ++b) {
    const float* xb = x + b * ldx;
    uint32_t top = 0;  // the largest |x| as bits: at least the exponent's all-ones pattern iff inf or NaN
    for (uint32_t k = 0; k < L.cols; ++k) {
      uint32_t u;
      std::memcpy(&u, xb + k, 4);
      u &= 0x7FFFFFFFu;
      top = u > top ? u : top;
    }
    if (top >= 0x7F800000u) {
      uint32_t k = 0;
      while (k < L.cols && std::isfinite(xb[k])) ++k;
      throw ArgumentError("input row " + std::to_string(b) + " has a non-finite value at column " + std::to_string(k));
    }
  }
  // Every thread expands each tile itself (cols * 32 * bits additions): with
  // at least 32 rows per thread that is a few percent of its products.
  detail::parallel_for(batch, threads, [&](size_t m0, size_t m1) {
    std::vector<float> panel(size_t(L.cols) * kTileRows);
    for (uint32_t t = 0; t < L.tiles; ++t) {
      detail::dequantize_tile(w, t, panel.data());
      const uint32_t ncols = std::min(kTileRows, L.rows - t * kTileRows);
      kernel(x + m0 * ldx, ldx, m1 - m0, panel.data(), L.cols, y + m0 * L.rows + size_t(t) * kTileRows, L.rows,
             ncols);
    }
  }, 32);
}

uint32_t default_dense_min_rows() {
  const char* env = std::getenv("ONDEVICE_DENSE_MIN_ROWS");
  if (env == nullptr || *env == '\0') return kDefaultDenseMinRows;
  char* end = nullptr;
  const unsigned long v = std::strtoul(env, &end, 10);
  if (*end != '\0' || env[0] == '-' || v > 0xFFFFFFFFul)
    throw ArgumentError(std::string("ONDEVICE_DENSE_MIN_ROWS must be a non-negative integer, got '") + env + "'");
  return uint32_t(v);
}

BitplaneKernel BitplaneKernel::from_name(const std::string& name) {
  BitplaneKernel k;
  if (name.empty() || name == "lut16") return k;
  if (name.rfind("lut16_", 0) == 0) {
    k.variant = variant_from_name("lut_" + name.substr(6));  // throws for unknown names
    return k;
  }
  k.lut16 = false;
  k.variant = variant_from_name(name);
  return k;
}

std::string BitplaneKernel::name() const {
  const std::string v = variant_name(variant);
  if (!lut16 || variant == KernelVariant::kReference) return v;
  return "lut16_" + v.substr(4);
}

bool BitplaneKernel::takes_dense(const BitplaneMatrix& w, size_t batch) const {
  if (variant == KernelVariant::kReference || dense_min_rows == 0 || batch < dense_min_rows) return false;
  // The LUT's work grows with the bits per weight, the dense path's does not: at 1-2 bits the
  // LUT kernels stay ahead up to ~1,000 rows and more (benchmarks/dense_crossover.md).
  const std::vector<uint8_t>& tb = w.layout().tile_bits;
  return !tb.empty() && *std::max_element(tb.begin(), tb.end()) >= kDenseMinBits;
}

void BitplaneKernel::gemm(const BitplaneMatrix& w, const float* x, size_t batch, float* y, int threads) const {
  if (takes_dense(w, batch)) return bcq_gemm_dense(w, x, batch, y, variant, threads);
  bcq_gemm(w, x, batch, y, variant, threads, lut16);
}

std::string cpu_description() {
  std::string model;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    if (colon == 0) continue;
    const std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    const size_t value = line.find_first_not_of(" \t", colon + 1);
    if ((key == "model name" || key == "Model" || key == "CPU part") && value != std::string::npos) {
      model = line.substr(value);
      break;
    }
  }
  if (model.empty()) model = "unknown CPU";
  std::string kernels;
  for (KernelVariant v : available_variants()) kernels += std::string(kernels.empty() ? "" : ",") + variant_name(v);
  return model + " (" + std::to_string(std::thread::hardware_concurrency()) + " threads; kernels: " + kernels + ")";
}

}  // namespace ondevice
