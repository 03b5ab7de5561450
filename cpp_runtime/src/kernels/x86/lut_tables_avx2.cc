// AVX2 table quantizer: the same IEEE operations as quantize_tables_generic
// (../lut_tables.cc), 8 table entries per instruction, identical bytes out.
#include <immintrin.h>

#include "../lut_common.h"

namespace ondevice::detail {

namespace {

// The 16 signed sums T[idx] = (+-x0 +-x1) + (+-x2 +-x3) of one chunk, with
// the generic quantizer's rounding order: entries 0..7 in *a, 8..15 in *b.
struct SignedSums {
  const float n = -0.0f, p = 0.0f;
  // XOR masks that negate x_j where bit j of the entry index is clear.
  const __m256 m0 = _mm256_setr_ps(n, p, n, p, n, p, n, p);
  const __m256 m1 = _mm256_setr_ps(n, n, p, p, n, n, p, p);
  const __m256 m2 = _mm256_setr_ps(n, n, n, n, p, p, p, p);
  const __m256 m3a = _mm256_set1_ps(n), m3b = _mm256_set1_ps(p);

  void operator()(const float* v, __m256* a, __m256* b) const {
    const __m256 x0 = _mm256_set1_ps(v[0]), x1 = _mm256_set1_ps(v[1]);
    const __m256 x2 = _mm256_set1_ps(v[2]), x3 = _mm256_set1_ps(v[3]);
    const __m256 lo = _mm256_add_ps(_mm256_xor_ps(x0, m0), _mm256_xor_ps(x1, m1));
    const __m256 x2s = _mm256_xor_ps(x2, m2);
    *a = _mm256_add_ps(lo, _mm256_add_ps(x2s, _mm256_xor_ps(x3, m3a)));
    *b = _mm256_add_ps(lo, _mm256_add_ps(x2s, _mm256_xor_ps(x3, m3b)));
  }
};

// int32 x16 (two vectors: entries 0..7, 8..15) -> 16 int8 (exact, |v| <= 127).
void store_int8(__m256i a, __m256i b, int8_t* dst) {
  const __m256i w16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
  const __m256i w8 = _mm256_permute4x64_epi64(_mm256_packs_epi16(w16, w16), 0x08);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(w8));
}

}  // namespace

void quantize_tables_avx2(const float* xp, size_t c0, size_t c1, float inv, int8_t* out) {
  const SignedSums sums;
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256 hi_lim = _mm256_set1_ps(127.0f), lo_lim = _mm256_set1_ps(-127.0f);
  for (size_t c = c0; c < c1; ++c) {
    __m256 ta, tb;
    sums(xp + 4 * c, &ta, &tb);
    auto quant = [&](__m256 t) {
      __m256 q = _mm256_mul_ps(t, vinv);
      q = _mm256_sub_ps(_mm256_add_ps(q, magic), magic);
      return _mm256_cvtps_epi32(_mm256_min_ps(hi_lim, _mm256_max_ps(lo_lim, q)));
    };
    store_int8(quant(ta), quant(tb), out + 16 * c);
  }
}

// quantize_tables_two_pass (../lut_tables.cc) with AVX2: same operations, same bytes.
void quantize_tables_two_pass_avx2(const float* xp, size_t c0, size_t c1, float inv, int8_t* out, int8_t* res) {
  const SignedSums sums;
  const __m256 vinv = _mm256_set1_ps(inv), k254 = _mm256_set1_ps(254.0f);
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256 hi_lim = _mm256_set1_ps(127.0f), lo_lim = _mm256_set1_ps(-127.0f);
  auto split = [&](__m256 t, __m256& q, __m256& r) {
    const __m256 u = _mm256_mul_ps(t, vinv);
    q = _mm256_min_ps(hi_lim, _mm256_max_ps(lo_lim, _mm256_sub_ps(_mm256_add_ps(u, magic), magic)));
    r = _mm256_mul_ps(_mm256_sub_ps(u, q), k254);
    r = _mm256_min_ps(hi_lim, _mm256_max_ps(lo_lim, _mm256_sub_ps(_mm256_add_ps(r, magic), magic)));
  };
  for (size_t c = c0; c < c1; ++c) {
    __m256 ta, tb, qa, qb, ra, rb;
    sums(xp + 4 * c, &ta, &tb);
    split(ta, qa, ra);
    split(tb, qb, rb);
    store_int8(_mm256_cvtps_epi32(qa), _mm256_cvtps_epi32(qb), out + 16 * c);
    store_int8(_mm256_cvtps_epi32(ra), _mm256_cvtps_epi32(rb), res + 16 * c);
  }
}

}  // namespace ondevice::detail
