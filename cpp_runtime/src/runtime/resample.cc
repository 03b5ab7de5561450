// Windowed-sinc polyphase resampling (include/ondevice/resample.h).
#include "ondevice/resample.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "ondevice/error.h"

namespace ondevice {

namespace {

constexpr int kLowpassZeros = 16;   // ondevice.slu.audio.LOWPASS_ZEROS
constexpr double kRolloff = 0.92;   // ondevice.slu.audio.ROLLOFF
constexpr double kKaiserBeta = 8.6; // ondevice.slu.audio.KAISER_BETA
constexpr double kPi = 3.14159265358979323846;

// Modified Bessel function of the first kind, order 0 (the power series;
// converges fast for the arguments here, |x| <= 8.6). std::cyl_bessel_i is
// missing from libc++ (Android).
double bessel_i0(double x) {
  double term = 1, sum = 1;
  const double q = x * x / 4;
  for (int k = 1; k < 200 && term > 1e-17 * sum; ++k) {
    term *= q / (double(k) * double(k));
    sum += term;
  }
  return sum;
}

double sinc(double u) { return u == 0 ? 1.0 : std::sin(kPi * u) / (kPi * u); }

}  // namespace

std::vector<float> resample(const float* x, size_t n, int64_t orig_rate, int64_t new_rate) {
  if (orig_rate < 1 || new_rate < 1)
    throw ArgumentError("sample rates must be positive, got " + std::to_string(orig_rate) + " -> " +
                        std::to_string(new_rate));
  if (x == nullptr && n > 0) throw ArgumentError("resample: samples are null");
  if (orig_rate == new_rate || n == 0) return std::vector<float>(x, x + n);
  const int64_t g = std::gcd(orig_rate, new_rate);
  const int64_t up = new_rate / g, down = orig_rate / g;
  const double cutoff = kRolloff * std::min(1.0, double(up) / double(down));  // of the input's Nyquist
  const int64_t half = int64_t(std::ceil(kLowpassZeros / cutoff));            // K: taps each side
  const int64_t taps = 2 * half;
  const int64_t n_in = int64_t(n);
  const int64_t n_out = (n_in * up + down - 1) / down;
  // Output j reads input q_j - K + 1 .. q_j + K, q_j = floor(j * down / up).
  std::vector<float> y(static_cast<size_t>(n_out));
  std::vector<float> h(static_cast<size_t>(taps));
  const double i0_beta = bessel_i0(kKaiserBeta);
  for (int64_t p = 0; p < std::min(up, n_out); ++p) {
    const double offset = double((p * down) % up) / double(up);  // fractional input position of the phase
    for (int64_t t = 0; t < taps; ++t) {
      const double u = cutoff * (double(t - half + 1) - offset);  // distance in zero crossings of the sinc
      const double r = std::max(0.0, 1.0 - (u / kLowpassZeros) * (u / kLowpassZeros));
      const double window = std::fabs(u) < kLowpassZeros ? bessel_i0(kKaiserBeta * std::sqrt(r)) / i0_beta : 0.0;
      h[size_t(t)] = float(cutoff * sinc(u) * window);
    }
    for (int64_t j = p; j < n_out; j += up) {
      const int64_t first = j * down / up - half + 1;  // input index of tap 0
      const int64_t t0 = std::max<int64_t>(0, -first), t1 = std::min<int64_t>(taps, n_in - first);
      float acc = 0;
      for (int64_t t = t0; t < t1; ++t) acc += x[first + t] * h[size_t(t)];
      y[size_t(j)] = acc;
    }
  }
  return y;
}

}  // namespace ondevice
