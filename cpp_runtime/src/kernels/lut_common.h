// Internal: the activation-side lookup tables shared by all LUT variants, and
// the per-variant tile kernels' common signature.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ondevice/bitplane_format.h"

namespace ondevice::detail {

// Tables for `batch` activation vectors:
//   tables[b][c][16]  int8, chunk c = inputs 4c..4c+3 (zero beyond cols);
//                     entry idx = round(sum_j (bit j of idx ? +x : -x)[4c+j] / scale)
//   block_scale[b][blk], group_sum[b][g] (sum of x over the group, for offsets)
struct LutActivations {
  size_t batch = 0;
  size_t chunks = 0;  // 2 * kbytes
  std::vector<int8_t> tables;
  std::vector<float> block_scale;
  std::vector<float> group_sum;

  const int8_t* table(size_t b) const { return tables.data() + b * chunks * 16; }
  const float* scales(size_t b) const { return block_scale.data() + b * nblocks; }
  const float* sums(size_t b) const { return group_sum.data() + b * ngroups; }
  size_t nblocks = 0;
  size_t ngroups = 0;
};

// With `residual`, also the tables of what int8 rounding left out (the
// two-pass "lut16" mode): residual entry = round_half_even((u - round(u)) *
// 254) with u = T * inv, and residual block scale = block scale / 254, so
// that table + residual resolve T to about 1/64000 of the block's range.
// Both table sets then come from the portable quantizer.
LutActivations build_lut_activations(const BitplaneLayout& layout, const float* x, size_t batch,
                                     LutActivations* residual = nullptr);

// Quantized tables of chunks [c0, c1) of one zero-padded input vector xp
// (4 floats per chunk): out[16 c + idx] = round_half_even(T_c[idx] * inv)
// clamped to +-127, where T_c[idx] = (lo + hi) with lo = (+-x0) + (+-x1) and
// hi = (+-x2) + (+-x3), bit j of idx set meaning +x_j. Every implementation
// performs exactly these IEEE operations, so all produce identical bytes.
using TableQuantizer = void (*)(const float* xp, size_t c0, size_t c1, float inv, int8_t* out);
void quantize_tables_generic(const float* xp, size_t c0, size_t c1, float inv, int8_t* out);
#if defined(ONDEVICE_HAVE_AVX2)
void quantize_tables_avx2(const float* xp, size_t c0, size_t c1, float inv, int8_t* out);
#endif
#if defined(ONDEVICE_HAVE_NEON)
void quantize_tables_neon(const float* xp, size_t c0, size_t c1, float inv, int8_t* out);
#endif
// Both table sets of the two-pass (lut16) mode; all variants give identical bytes.
using TwoPassQuantizer = void (*)(const float* xp, size_t c0, size_t c1, float inv, int8_t* out, int8_t* res);
void quantize_tables_two_pass(const float* xp, size_t c0, size_t c1, float inv, int8_t* out, int8_t* res);
#if defined(ONDEVICE_HAVE_AVX2)
void quantize_tables_two_pass_avx2(const float* xp, size_t c0, size_t c1, float inv, int8_t* out, int8_t* res);
#endif
TwoPassQuantizer best_two_pass_quantizer();
// The fastest table quantizer this CPU supports.
TableQuantizer best_table_quantizer();

// A tile kernel computes Y rows [32*tile_begin, min(32*tile_end, rows)) for all
// batch columns, without offsets (added by the caller's shared epilogue).
using TileKernel = void (*)(const BitplaneMatrix& w, const LutActivations& a, float* y,
                            uint32_t tile_begin, uint32_t tile_end);

void lut_tiles_generic(const BitplaneMatrix& w, const LutActivations& a, float* y,
                       uint32_t tile_begin, uint32_t tile_end);
#if defined(ONDEVICE_HAVE_AVX2)
// Both lut16 passes in one sweep over the planes; y = (pass 1) + (pass 2),
// equal to running lut_tiles_avx2 on each table set and adding.
void lut16_tiles_avx2(const BitplaneMatrix& w, const LutActivations& a, const LutActivations& res, float* y,
                      uint32_t tile_begin, uint32_t tile_end);
void lut_tiles_avx2(const BitplaneMatrix& w, const LutActivations& a, float* y,
                    uint32_t tile_begin, uint32_t tile_end);
#endif
#if defined(ONDEVICE_HAVE_NEON)
void lut_tiles_neon(const BitplaneMatrix& w, const LutActivations& a, float* y,
                    uint32_t tile_begin, uint32_t tile_end);
#endif

void reference_rows(const BitplaneMatrix& w, const float* x, size_t batch, float* y,
                    uint32_t row_begin, uint32_t row_end);

}  // namespace ondevice::detail
