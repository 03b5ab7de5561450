// NEON table quantizer: the same IEEE operations as quantize_tables_generic
// (../lut_tables.cc), 4 table entries per instruction, identical bytes out.
#include <arm_neon.h>

#include "../lut_common.h"

namespace ondevice::detail {

void quantize_tables_neon(const float* xp, size_t c0, size_t c1, float inv, int8_t* out) {
  // Sign masks (XOR) for entries 4h+0..3: negate x0 where bit 0 is clear, x1 where bit 1 is.
  const uint32_t s = 0x80000000u;
  const uint32_t m0_init[4] = {s, 0, s, 0}, m1_init[4] = {s, s, 0, 0};
  const uint32x4_t m0 = vld1q_u32(m0_init), m1 = vld1q_u32(m1_init);
  const float32x4_t vinv = vdupq_n_f32(inv), magic = vdupq_n_f32(12582912.0f);
  const float32x4_t hi_lim = vdupq_n_f32(127.0f), lo_lim = vdupq_n_f32(-127.0f);
  for (size_t c = c0; c < c1; ++c) {
    const float* v = xp + 4 * c;
    const float32x4_t lo = vaddq_f32(vreinterpretq_f32_u32(veorq_u32(vreinterpretq_u32_f32(vdupq_n_f32(v[0])), m0)),
                                     vreinterpretq_f32_u32(veorq_u32(vreinterpretq_u32_f32(vdupq_n_f32(v[1])), m1)));
    const float hi[4] = {-v[2] - v[3], v[2] - v[3], -v[2] + v[3], v[2] + v[3]};
    int16x4_t q16[4];
    for (int h = 0; h < 4; ++h) {
      float32x4_t q = vmulq_f32(vaddq_f32(lo, vdupq_n_f32(hi[h])), vinv);
      q = vsubq_f32(vaddq_f32(q, magic), magic);
      q = vminq_f32(hi_lim, vmaxq_f32(lo_lim, q));
      q16[h] = vmovn_s32(vcvtq_s32_f32(q));
    }
    const int8x8_t a = vmovn_s16(vcombine_s16(q16[0], q16[1]));
    const int8x8_t b = vmovn_s16(vcombine_s16(q16[2], q16[3]));
    vst1q_s8(out + 16 * c, vcombine_s8(a, b));
  }
}

}  // namespace ondevice::detail
