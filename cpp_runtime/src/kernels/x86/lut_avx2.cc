// AVX2 LUT kernel (compiled with -mavx2 -mfma; called only when cpuid says
// the CPU has both). Same algorithm and results as ../lut_generic.cc.
//
// One step handles 8 inputs (one plane byte) for the 32 rows of a tile: a
// 32-byte load holds each row's byte; its low nibbles index the table of
// chunk 2s and its high nibbles the table of chunk 2s+1 (vpshufb looks up 32
// int8 entries at once, each 128-bit lane holding a copy of the 16-entry
// table). The two lookups are interleaved per row and summed pairwise into
// int16 with vpmaddubsw (x 1), which cannot overflow: |sum| <= 254 per step and
// a block has at most 128 steps (32512 < 32767).
#include <immintrin.h>

#include <cstring>

#include "../lut_common.h"

namespace ondevice::detail {
namespace {

// Scales one plane's int16 sums (acc0: rows 0-7 | 16-23, acc1: rows 8-15 |
// 24-31) by alpha * table_scale into the float accumulators of rows 0-31.
inline void flush_plane(__m256i acc0, __m256i acc1, const float* alpha, __m256 table_scale, __m256* facc) {
  const __m256 f[4] = {
      _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(acc0))),
      _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(acc1))),
      _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(acc0, 1))),
      _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(acc1, 1))),
  };
  for (int k = 0; k < 4; ++k)
    facc[k] = _mm256_fmadd_ps(f[k], _mm256_mul_ps(_mm256_loadu_ps(alpha + 8 * k), table_scale), facc[k]);
}

template <uint32_t Q>
void tile_avx2(const uint8_t* W, const float* A, const LutActivations& a, const BitplaneLayout& L, size_t b,
               float* out) {
  const int8_t* T = a.table(b);
  const float* S = a.scales(b);
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi8(1);
  __m256 facc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (size_t blk = 0; blk < L.blocks.size(); ++blk) {
    const LutBlock& B = L.blocks[blk];
    __m256i acc0[Q], acc1[Q];  // acc0: rows 0-7 | 16-23, acc1: rows 8-15 | 24-31
    for (uint32_t i = 0; i < Q; ++i) acc0[i] = acc1[i] = _mm256_setzero_si256();
    const uint8_t* wp = W + size_t(B.byte_begin) * Q * kTileRows;
    for (uint32_t s = B.byte_begin; s < B.byte_end; ++s, wp += Q * kTileRows) {
      const int8_t* t2 = T + size_t(2 * s) * 16;
      const __m256i tlo = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t2)));
      const __m256i thi = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t2 + 16)));
      for (uint32_t i = 0; i < Q; ++i) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + i * kTileRows));
        const __m256i rlo = _mm256_shuffle_epi8(tlo, _mm256_and_si256(v, low4));
        const __m256i rhi = _mm256_shuffle_epi8(thi, _mm256_and_si256(_mm256_srli_epi16(v, 4), low4));
        acc0[i] = _mm256_add_epi16(acc0[i], _mm256_maddubs_epi16(ones, _mm256_unpacklo_epi8(rlo, rhi)));
        acc1[i] = _mm256_add_epi16(acc1[i], _mm256_maddubs_epi16(ones, _mm256_unpackhi_epi8(rlo, rhi)));
      }
    }
    const __m256 sb = _mm256_set1_ps(S[blk]);
    for (uint32_t i = 0; i < Q; ++i) flush_plane(acc0[i], acc1[i], A + (size_t(B.group) * Q + i) * kTileRows, sb, facc);
  }
  for (int k = 0; k < 4; ++k) _mm256_storeu_ps(out + 8 * k, facc[k]);
}

// Several activation vectors at once (batch > 1): planes in the outer loop so
// that the nibble indices of a step are extracted once and reused for NB
// columns' tables. Float accumulation order per column is the same as in
// tile_avx2 (block, then plane), so results are bit-identical.
template <uint32_t NB>
void tile_avx2_columns(const uint8_t* W, const float* A, uint32_t q, const LutActivations& a,
                       const BitplaneLayout& L, size_t b0, float (*out)[kTileRows]) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi8(1);
  __m256 facc[NB][4];
  for (uint32_t c = 0; c < NB; ++c)
    for (int k = 0; k < 4; ++k) facc[c][k] = _mm256_setzero_ps();
  const int8_t* T[NB];
  for (uint32_t c = 0; c < NB; ++c) T[c] = a.table(b0 + c);
  for (size_t blk = 0; blk < L.blocks.size(); ++blk) {
    const LutBlock& B = L.blocks[blk];
    for (uint32_t i = 0; i < q; ++i) {
      __m256i acc0[NB], acc1[NB];
      for (uint32_t c = 0; c < NB; ++c) acc0[c] = acc1[c] = _mm256_setzero_si256();
      const uint8_t* wp = W + (size_t(B.byte_begin) * q + i) * kTileRows;
      for (uint32_t s = B.byte_begin; s < B.byte_end; ++s, wp += q * kTileRows) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp));
        const __m256i ilo = _mm256_and_si256(v, low4);
        const __m256i ihi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
        for (uint32_t c = 0; c < NB; ++c) {
          const int8_t* t2 = T[c] + size_t(2 * s) * 16;
          const __m256i tlo = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t2)));
          const __m256i thi = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t2 + 16)));
          const __m256i rlo = _mm256_shuffle_epi8(tlo, ilo);
          const __m256i rhi = _mm256_shuffle_epi8(thi, ihi);
          acc0[c] = _mm256_add_epi16(acc0[c], _mm256_maddubs_epi16(ones, _mm256_unpacklo_epi8(rlo, rhi)));
          acc1[c] = _mm256_add_epi16(acc1[c], _mm256_maddubs_epi16(ones, _mm256_unpackhi_epi8(rlo, rhi)));
        }
      }
      const float* al = A + (size_t(B.group) * q + i) * kTileRows;
      for (uint32_t c = 0; c < NB; ++c)
        flush_plane(acc0[c], acc1[c], al, _mm256_set1_ps(a.scales(b0 + c)[blk]), facc[c]);
    }
  }
  for (uint32_t c = 0; c < NB; ++c)
    for (int k = 0; k < 4; ++k) _mm256_storeu_ps(out[c] + 8 * k, facc[c][k]);
}

// Both passes of the lut16 mode in one sweep (bcq_gemm.h): each plane byte is
// loaded and split into nibbles once and looked up in the int8 tables and in
// the residual tables, so the weights stream from memory once instead of
// twice. The two float accumulations are kept apart and added at the end, in
// the order of two separate passes, so results equal the two-pass variants'.
template <uint32_t NB>
void tile_avx2_lut16(const uint8_t* W, const float* A, uint32_t q, const LutActivations& a,
                     const LutActivations& res, const BitplaneLayout& L, size_t b0, float (*out)[kTileRows]) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi8(1);
  __m256 fhi[NB][4], fres[NB][4];
  for (uint32_t c = 0; c < NB; ++c)
    for (int k = 0; k < 4; ++k) fhi[c][k] = fres[c][k] = _mm256_setzero_ps();
  for (size_t blk = 0; blk < L.blocks.size(); ++blk) {
    const LutBlock& B = L.blocks[blk];
    for (uint32_t i = 0; i < q; ++i) {
      __m256i h0[NB], h1[NB], r0[NB], r1[NB];
      for (uint32_t c = 0; c < NB; ++c) h0[c] = h1[c] = r0[c] = r1[c] = _mm256_setzero_si256();
      const uint8_t* wp = W + (size_t(B.byte_begin) * q + i) * kTileRows;
      for (uint32_t s = B.byte_begin; s < B.byte_end; ++s, wp += q * kTileRows) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp));
        const __m256i ilo = _mm256_and_si256(v, low4);
        const __m256i ihi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
        for (uint32_t c = 0; c < NB; ++c) {
          const int8_t* t2 = a.table(b0 + c) + size_t(2 * s) * 16;
          const int8_t* u2 = res.table(b0 + c) + size_t(2 * s) * 16;
          const __m256i tlo = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t2)));
          const __m256i thi = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t2 + 16)));
          const __m256i ulo = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u2)));
          const __m256i uhi = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u2 + 16)));
          const __m256i rlo = _mm256_shuffle_epi8(tlo, ilo), rhi = _mm256_shuffle_epi8(thi, ihi);
          const __m256i slo = _mm256_shuffle_epi8(ulo, ilo), shi = _mm256_shuffle_epi8(uhi, ihi);
          h0[c] = _mm256_add_epi16(h0[c], _mm256_maddubs_epi16(ones, _mm256_unpacklo_epi8(rlo, rhi)));
          h1[c] = _mm256_add_epi16(h1[c], _mm256_maddubs_epi16(ones, _mm256_unpackhi_epi8(rlo, rhi)));
          r0[c] = _mm256_add_epi16(r0[c], _mm256_maddubs_epi16(ones, _mm256_unpacklo_epi8(slo, shi)));
          r1[c] = _mm256_add_epi16(r1[c], _mm256_maddubs_epi16(ones, _mm256_unpackhi_epi8(slo, shi)));
        }
      }
      const float* al = A + (size_t(B.group) * q + i) * kTileRows;
      for (uint32_t c = 0; c < NB; ++c) {
        flush_plane(h0[c], h1[c], al, _mm256_set1_ps(a.scales(b0 + c)[blk]), fhi[c]);
        flush_plane(r0[c], r1[c], al, _mm256_set1_ps(res.scales(b0 + c)[blk]), fres[c]);
      }
    }
  }
  for (uint32_t c = 0; c < NB; ++c)
    for (int k = 0; k < 4; ++k) _mm256_storeu_ps(out[c] + 8 * k, _mm256_add_ps(fhi[c][k], fres[c][k]));
}

}  // namespace

void lut16_tiles_avx2(const BitplaneMatrix& w, const LutActivations& a, const LutActivations& res, float* y,
                      uint32_t tile_begin, uint32_t tile_end) {
  const BitplaneLayout& L = w.layout();
  alignas(32) float outs[2][kTileRows];
  for (uint32_t t = tile_begin; t < tile_end; ++t) {
    const uint8_t* W = w.planes() + L.tile_plane_offset[t];
    const float* A = w.alpha() + L.tile_alpha_offset[t];
    const uint32_t nrows = std::min(kTileRows, L.rows - t * kTileRows);
    const uint32_t q = L.tile_bits[t];
    size_t b = 0;
    for (; b + 2 <= a.batch; b += 2) {
      tile_avx2_lut16<2>(W, A, q, a, res, L, b, outs);
      for (uint32_t c = 0; c < 2; ++c)
        std::memcpy(y + (b + c) * L.rows + size_t(t) * kTileRows, outs[c], nrows * sizeof(float));
    }
    for (; b < a.batch; ++b) {
      tile_avx2_lut16<1>(W, A, q, a, res, L, b, outs);
      std::memcpy(y + b * L.rows + size_t(t) * kTileRows, outs[0], nrows * sizeof(float));
    }
  }
}

void lut_tiles_avx2(const BitplaneMatrix& w, const LutActivations& a, float* y, uint32_t tile_begin,
                    uint32_t tile_end) {
  const BitplaneLayout& L = w.layout();
  alignas(32) float out[kTileRows];
  alignas(32) float outs[4][kTileRows];
  for (uint32_t t = tile_begin; t < tile_end; ++t) {
    const uint8_t* W = w.planes() + L.tile_plane_offset[t];
    const float* A = w.alpha() + L.tile_alpha_offset[t];
    const uint32_t nrows = std::min(kTileRows, L.rows - t * kTileRows);
    const uint32_t q = L.tile_bits[t];
    // Columns per pass, measured on Zen 4: 4 for q <= 3; at q = 4 the strided
    // plane reads favour 2.
    const uint32_t columns = q <= 3 ? 4 : 2;
    size_t b = 0;
    for (; b + columns <= a.batch; b += columns) {
      if (columns == 4)
        tile_avx2_columns<4>(W, A, q, a, L, b, outs);
      else
        tile_avx2_columns<2>(W, A, q, a, L, b, outs);
      for (uint32_t c = 0; c < columns; ++c)
        std::memcpy(y + (b + c) * L.rows + size_t(t) * kTileRows, outs[c], nrows * sizeof(float));
    }
    for (; b < a.batch; ++b) {
      switch (q) {
        case 1: tile_avx2<1>(W, A, a, L, b, out); break;
        case 2: tile_avx2<2>(W, A, a, L, b, out); break;
        case 3: tile_avx2<3>(W, A, a, L, b, out); break;
        default: tile_avx2<4>(W, A, a, L, b, out); break;
      }
      std::memcpy(y + b * L.rows + size_t(t) * kTileRows, out, nrows * sizeof(float));
    }
  }
}

}  // namespace ondevice::detail
