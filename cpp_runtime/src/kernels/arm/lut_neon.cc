// aarch64 NEON LUT kernel. Same algorithm and results as ../lut_generic.cc.
//
// vqtbl1q_s8 looks up 16 int8 entries at once, so a tile's 32 rows take two
// 16-byte halves per step; low nibbles index chunk 2s's table, high nibbles
// chunk 2s+1's, and the two lookups are added with widening (vaddl) into int16
// accumulators (|sum| <= 254 per step, <= 128 steps per block: no overflow).
#include <arm_neon.h>

#include <cstring>

#include "../lut_common.h"

namespace ondevice::detail {
namespace {

template <uint32_t Q>
void tile_neon(const uint8_t* W, const float* A, const LutActivations& a, const BitplaneLayout& L, size_t b,
               float* out) {
  const int8_t* T = a.table(b);
  const float* S = a.scales(b);
  const uint8x16_t low4 = vdupq_n_u8(0x0F);
  float32x4_t facc[8];
  for (int k = 0; k < 8; ++k) facc[k] = vdupq_n_f32(0.0f);
  for (size_t blk = 0; blk < L.blocks.size(); ++blk) {
    const LutBlock& B = L.blocks[blk];
    int16x8_t acc[Q][4];  // rows 0-7, 8-15, 16-23, 24-31
    for (uint32_t i = 0; i < Q; ++i)
      for (int k = 0; k < 4; ++k) acc[i][k] = vdupq_n_s16(0);
    const uint8_t* wp = W + size_t(B.byte_begin) * Q * kTileRows;
    for (uint32_t s = B.byte_begin; s < B.byte_end; ++s, wp += Q * kTileRows) {
      const int8x16_t tlo = vld1q_s8(T + size_t(2 * s) * 16);
      const int8x16_t thi = vld1q_s8(T + size_t(2 * s) * 16 + 16);
      for (uint32_t i = 0; i < Q; ++i) {
        for (int h = 0; h < 2; ++h) {
          const uint8x16_t v = vld1q_u8(wp + i * kTileRows + 16 * h);
          const int8x16_t rlo = vqtbl1q_s8(tlo, vandq_u8(v, low4));
          const int8x16_t rhi = vqtbl1q_s8(thi, vshrq_n_u8(v, 4));
          acc[i][2 * h] = vaddq_s16(acc[i][2 * h], vaddl_s8(vget_low_s8(rlo), vget_low_s8(rhi)));
          acc[i][2 * h + 1] = vaddq_s16(acc[i][2 * h + 1], vaddl_high_s8(rlo, rhi));
        }
      }
    }
    const float32x4_t sb = vdupq_n_f32(S[blk]);
    for (uint32_t i = 0; i < Q; ++i) {
      const float* al = A + (size_t(B.group) * Q + i) * kTileRows;
      for (int k = 0; k < 4; ++k) {
        const float32x4_t f0 = vcvtq_f32_s32(vmovl_s16(vget_low_s16(acc[i][k])));
        const float32x4_t f1 = vcvtq_f32_s32(vmovl_high_s16(acc[i][k]));
        facc[2 * k] = vfmaq_f32(facc[2 * k], f0, vmulq_f32(vld1q_f32(al + 8 * k), sb));
        facc[2 * k + 1] = vfmaq_f32(facc[2 * k + 1], f1, vmulq_f32(vld1q_f32(al + 8 * k + 4), sb));
      }
    }
  }
  for (int k = 0; k < 8; ++k) vst1q_f32(out + 4 * k, facc[k]);
}

}  // namespace

void lut_tiles_neon(const BitplaneMatrix& w, const LutActivations& a, float* y, uint32_t tile_begin,
                    uint32_t tile_end) {
  const BitplaneLayout& L = w.layout();
  alignas(16) float out[kTileRows];
  for (uint32_t t = tile_begin; t < tile_end; ++t) {
    const uint8_t* W = w.planes() + L.tile_plane_offset[t];
    const float* A = w.alpha() + L.tile_alpha_offset[t];
    const uint32_t nrows = std::min(kTileRows, L.rows - t * kTileRows);
    for (size_t b = 0; b < a.batch; ++b) {
      switch (L.tile_bits[t]) {
        case 1: tile_neon<1>(W, A, a, L, b, out); break;
        case 2: tile_neon<2>(W, A, a, L, b, out); break;
        case 3: tile_neon<3>(W, A, a, L, b, out); break;
        default: tile_neon<4>(W, A, a, L, b, out); break;
      }
      std::memcpy(y + b * L.rows + size_t(t) * kTileRows, out, nrows * sizeof(float));
    }
  }
}

}  // namespace ondevice::detail
