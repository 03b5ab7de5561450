// The reference kernel: the format's math written out directly, accumulated
// in double. Slow on purpose; it is the ground truth for every other variant.
#include "lut_common.h"

namespace ondevice::detail {

void reference_rows(const BitplaneMatrix& w, const float* x, size_t batch, float* y, uint32_t row_begin,
                    uint32_t row_end) {
  const BitplaneLayout& L = w.layout();
  for (size_t b = 0; b < batch; ++b) {
    const float* xb = x + b * L.cols;
    for (uint32_t r = row_begin; r < row_end; ++r) {
      double acc = 0.0;
      for (uint32_t g = 0; g < L.groups; ++g) {
        const uint32_t k0 = g * L.group_size;
        const uint32_t k1 = std::min(k0 + L.group_size, L.cols);
        for (uint32_t i = 0; i < w.row_bits()[r]; ++i) {
          double s = 0.0;
          for (uint32_t k = k0; k < k1; ++k) s += w.bit(r, i, k) ? double(xb[k]) : -double(xb[k]);
          acc += double(w.scale(r, i, g)) * s;
        }
        if (w.has_offset()) {
          double xs = 0.0;
          for (uint32_t k = k0; k < k1; ++k) xs += xb[k];
          acc += double(w.offset()[uint64_t(r) * L.groups + g]) * xs;
        }
      }
      y[b * L.rows + r] = float(acc);
    }
  }
}

}  // namespace ondevice::detail
