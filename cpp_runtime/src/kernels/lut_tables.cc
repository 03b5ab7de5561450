// Activation-side lookup tables shared by every LUT kernel variant. Built once
// per activation vector by this one portable function, so that all variants
// see identical int8 tables and scales (and therefore agree bit for bit).
#include <algorithm>
#include <cmath>

#include "lut_common.h"
#include "ondevice/bcq_gemm.h"
#include "ondevice/error.h"

namespace ondevice::detail {

void quantize_tables_generic(const float* xp, size_t c0, size_t c1, float inv, int8_t* out) {
  for (size_t c = c0; c < c1; ++c) {
    const float* v = xp + 4 * c;
    // Entry idx = l | h << 2: l's bits pick the signs of x0, x1; h's of x2, x3.
    const float lo[4] = {-v[0] - v[1], v[0] - v[1], -v[0] + v[1], v[0] + v[1]};
    const float hi[4] = {-v[2] - v[3], v[2] - v[3], -v[2] + v[3], v[2] + v[3]};
    int8_t* t = out + 16 * c;
    for (int h = 0; h < 4; ++h)
      for (int l = 0; l < 4; ++l) {
        // Round half to even by the 1.5 * 2^23 trick: exact for |value| < 2^22,
        // identical on every IEEE platform (no libm call, no contraction).
        float q = (lo[l] + hi[h]) * inv;
        q = (q + 12582912.0f) - 12582912.0f;
        t[4 * h + l] = int8_t(std::min(127.0f, std::max(-127.0f, q)));
      }
  }
}

// The generic quantizer's tables plus the residual tables (lut_common.h).
void quantize_tables_two_pass(const float* xp, size_t c0, size_t c1, float inv, int8_t* out, int8_t* res) {
  for (size_t c = c0; c < c1; ++c) {
    const float* v = xp + 4 * c;
    const float lo[4] = {-v[0] - v[1], v[0] - v[1], -v[0] + v[1], v[0] + v[1]};
    const float hi[4] = {-v[2] - v[3], v[2] - v[3], -v[2] + v[3], v[2] + v[3]};
    for (int h = 0; h < 4; ++h)
      for (int l = 0; l < 4; ++l) {
        const float u = (lo[l] + hi[h]) * inv;
        float q = (u + 12582912.0f) - 12582912.0f;
        q = std::min(127.0f, std::max(-127.0f, q));
        // |u| <= 127 and q is the integer nearest u, so u - q is exact.
        float r = (u - q) * 254.0f;
        r = (r + 12582912.0f) - 12582912.0f;
        out[16 * c + size_t(4 * h + l)] = int8_t(q);
        res[16 * c + size_t(4 * h + l)] = int8_t(std::min(127.0f, std::max(-127.0f, r)));
      }
  }
}

TwoPassQuantizer best_two_pass_quantizer() {
#if defined(ONDEVICE_HAVE_AVX2) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return quantize_tables_two_pass_avx2;
#endif
  return quantize_tables_two_pass;
}

TableQuantizer best_table_quantizer() {
#if defined(ONDEVICE_HAVE_AVX2) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return quantize_tables_avx2;
#endif
#if defined(ONDEVICE_HAVE_NEON)
  return quantize_tables_neon;
#endif
  return quantize_tables_generic;
}

LutActivations build_lut_activations(const BitplaneLayout& L, const float* x, size_t batch,
                                     LutActivations* residual) {
  LutActivations a;
  a.batch = batch;
  a.chunks = size_t(L.kbytes) * 2;
  a.nblocks = L.blocks.size();
  a.ngroups = L.groups;
  a.tables.resize(batch * a.chunks * 16);
  a.block_scale.resize(batch * a.nblocks);
  a.group_sum.assign(batch * a.ngroups, 0.0f);
  std::vector<float> xp(a.chunks * 4, 0.0f);  // one input vector, zero-padded to whole chunks
  std::vector<float> absum(a.chunks);
  const TableQuantizer quantize = best_table_quantizer();
  const TwoPassQuantizer quantize2 = best_two_pass_quantizer();
  if (residual != nullptr) {
    residual->batch = batch;
    residual->chunks = a.chunks;
    residual->nblocks = a.nblocks;
    residual->ngroups = a.ngroups;
    residual->tables.resize(a.tables.size());
    residual->block_scale.resize(a.block_scale.size());
  }
  for (size_t b = 0; b < batch; ++b) {
    const float* xb = x + b * L.cols;
    std::copy(xb, xb + L.cols, xp.begin());
    for (size_t c = 0; c < a.chunks; ++c) {
      const float* v = &xp[4 * c];
      absum[c] = std::fabs(v[0]) + std::fabs(v[1]) + std::fabs(v[2]) + std::fabs(v[3]);
      if (!std::isfinite(absum[c]))
        throw ArgumentError("input row " + std::to_string(b) + " has a non-finite (or overflowing) value near column " +
                            std::to_string(4 * c));
    }
    for (uint32_t g = 0; g < L.groups; ++g) {
      const uint32_t k0 = g * L.group_size, k1 = std::min(k0 + L.group_size, L.cols);
      float sum = 0.0f;
      for (uint32_t k = k0; k < k1; ++k) sum += xb[k];
      a.group_sum[b * a.ngroups + g] = sum;
    }
    int8_t* tb = a.tables.data() + b * a.chunks * 16;
    for (size_t blk = 0; blk < a.nblocks; ++blk) {
      const LutBlock& B = L.blocks[blk];
      float maxabs = 0.0f;
      for (size_t c = 2 * size_t(B.byte_begin); c < 2 * size_t(B.byte_end); ++c) maxabs = std::max(maxabs, absum[c]);
      // Tiny inputs (127 / maxabs would overflow): scale the block by 2^100,
      // which is exact, and undo it in the block scale.
      float unscale = 1.0f;
      if (maxabs > 0.0f && maxabs < 0x1p-60f) {
        for (size_t e = 8 * size_t(B.byte_begin); e < 8 * size_t(B.byte_end); ++e) xp[e] *= 0x1p100f;
        maxabs *= 0x1p100f;
        unscale = 0x1p-100f;
      }
      const float inv = maxabs > 0.0f ? 127.0f / maxabs : 0.0f;
      a.block_scale[b * a.nblocks + blk] = maxabs / 127.0f * unscale;
      if (residual != nullptr) {
        residual->block_scale[b * a.nblocks + blk] = maxabs / 127.0f * unscale / 254.0f;
        quantize2(xp.data(), 2 * size_t(B.byte_begin), 2 * size_t(B.byte_end), inv, tb,
                                 residual->tables.data() + b * a.chunks * 16);
      } else {
        quantize(xp.data(), 2 * size_t(B.byte_begin), 2 * size_t(B.byte_end), inv, tb);
      }
    }
  }
  return a;
}

}  // namespace ondevice::detail

namespace ondevice {

std::vector<double> lut_error_bound(const BitplaneMatrix& w, const float* x) {
  const BitplaneLayout& L = w.layout();
  const detail::LutActivations a = detail::build_lut_activations(L, x, 1);
  std::vector<double> bound(L.rows, 0.0);
  for (uint32_t r = 0; r < L.rows; ++r)
    for (size_t blk = 0; blk < L.blocks.size(); ++blk) {
      const LutBlock& B = L.blocks[blk];
      const double per_plane = 0.5 * double(a.block_scale[blk]) * 2.0 * (B.byte_end - B.byte_begin);
      for (uint32_t i = 0; i < w.row_bits()[r]; ++i) bound[r] += std::fabs(double(w.scale(r, i, B.group))) * per_plane;
    }
  return bound;
}

}  // namespace ondevice
