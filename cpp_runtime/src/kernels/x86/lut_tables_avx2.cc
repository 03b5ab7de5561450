// AVX2 table quantizer: the same IEEE operations as quantize_tables_generic
// (../lut_tables.cc), 8 table entries per instruction, identical bytes out.
#include <immintrin.h>

#include "../lut_common.h"

namespace ondevice::detail {

void quantize_tables_avx2(const float* xp, size_t c0, size_t c1, float inv, int8_t* out) {
  const float n = -0.0f, p = 0.0f;
  // XOR masks that negate x_j where bit j of the entry index is clear;
  // vector A holds entries 0..7, vector B entries 8..15.
  const __m256 m0 = _mm256_setr_ps(n, p, n, p, n, p, n, p);
  const __m256 m1 = _mm256_setr_ps(n, n, p, p, n, n, p, p);
  const __m256 m2 = _mm256_setr_ps(n, n, n, n, p, p, p, p);
  const __m256 m3a = _mm256_set1_ps(n), m3b = _mm256_set1_ps(p);
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256 hi_lim = _mm256_set1_ps(127.0f), lo_lim = _mm256_set1_ps(-127.0f);
  for (size_t c = c0; c < c1; ++c) {
    const float* v = xp + 4 * c;
    const __m256 x0 = _mm256_set1_ps(v[0]), x1 = _mm256_set1_ps(v[1]);
    const __m256 x2 = _mm256_set1_ps(v[2]), x3 = _mm256_set1_ps(v[3]);
    const __m256 lo = _mm256_add_ps(_mm256_xor_ps(x0, m0), _mm256_xor_ps(x1, m1));
    const __m256 x2s = _mm256_xor_ps(x2, m2);
    const __m256 ta = _mm256_add_ps(lo, _mm256_add_ps(x2s, _mm256_xor_ps(x3, m3a)));
    const __m256 tb = _mm256_add_ps(lo, _mm256_add_ps(x2s, _mm256_xor_ps(x3, m3b)));
    auto quant = [&](__m256 t) {
      __m256 q = _mm256_mul_ps(t, vinv);
      q = _mm256_sub_ps(_mm256_add_ps(q, magic), magic);
      return _mm256_cvtps_epi32(_mm256_min_ps(hi_lim, _mm256_max_ps(lo_lim, q)));
    };
    // int32 x16 -> int16 (lanes interleave A/B; reorder) -> int8, exact (|v| <= 127).
    __m256i w16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(quant(ta), quant(tb)), 0xD8);
    __m256i w8 = _mm256_permute4x64_epi64(_mm256_packs_epi16(w16, w16), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 * c), _mm256_castsi256_si128(w8));
  }
}

}  // namespace ondevice::detail
