// Band-limited resampling of mono PCM between integer sample rates: the same
// windowed-sinc polyphase filter as the Python package's
// ondevice.slu.audio.resample (Kaiser window, beta 8.6; 16 zero crossings each
// side; cut-off at 0.92 of the lower Nyquist frequency), so the native runtime
// and the Python API compute the same samples up to float rounding.
//
// With up/down = new_rate/orig_rate in lowest terms, output j lies at input
// position j * down / up; its weights depend only on that position's
// fractional part, which repeats every `up` outputs, so one kernel of 2K taps
// is built per phase. Rates with a large common divisor (16000 -> 15000:
// up = 15) need few phases; arbitrary ones (44100 -> 16000: up = 160) more.
// The input is zero outside its ends; the output has ceil(n * up / down)
// samples. Equal rates return a copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ondevice {

// ArgumentError: a rate < 1, or x null with n > 0.
std::vector<float> resample(const float* x, size_t n, int64_t orig_rate, int64_t new_rate);

}  // namespace ondevice
