// The native speech-intent recognizer: an exported SLU model directory
// (`ondevice.slu.export.export_slu`: manifest.json, understand.onnx,
// weights.bin) loaded once and used for any number of utterances.
//
// Loading reads manifest.json with the runtime's strict JSON reader (format
// "ondevice-onnx-model" 1.x, model_kind "slu-intent", sample_rate 16000,
// max_seconds, min_samples, the labels of the three slots, the graph and its
// input/output names) and checks every file listed in "files" (size always;
// sha256 unless UnderstanderOptions::verify_checksums is off), exactly as the
// Translator does; the graph file and the weights must be among those files.
// The graph is prepared by the Executor (memory-mapped weights, the bit-plane
// kernel of UnderstanderOptions::kernel). Any problem is a FormatError naming
// the file.
//
// Audio: understand() takes 16 kHz mono float PCM (nominally in [-1, 1]; the
// graph standardizes each utterance to zero mean and unit variance, so the
// level does not matter). Resampling and downmixing are the caller's job (the
// Python package: ondevice.slu.audio; Java: decode to 16 kHz before calling).
// Length must be in [min_samples, max_seconds * sample_rate] (0.24 s to 30 s
// for the shipped model); every sample must be finite and within +-2^32 (no
// PCM encoding goes beyond 2^31; far larger values would overflow the
// normalisation).
// Otherwise ArgumentError with a message saying what is wrong. A model whose
// logits come out non-finite (a corrupt weight) is a FormatError.
//
// Valid intents: when the manifest has "intents" (export_slu writes FSC's 31
// [action, object, location] combinations), it must be a non-empty list of
// 3-string lists, each label one of its slot's labels, without duplicates
// (FormatError naming manifest.json otherwise), and understand() decodes
// jointly: the chosen combination is the listed intent with the highest sum
// of the three slots' log-probabilities, log(max(p, 1e-300)) of the softmax
// below (the first in list order on ties), exactly as the Python
// ondevice.Understander (ondevice.slu.intents.best_valid_intent) decides.
// Without "intents" (older exports) each slot is its own arg max (the first
// on ties), so the combination may be one the model was never trained on.
//
// Speed ensemble: when the manifest has "ensemble_rates" (distinct integers
// in 12000..24000 including 16000; FormatError otherwise) and
// UnderstanderOptions::speed_ensemble is on (the default), understand() runs
// the graph once per rate on the audio resampled from 16000 Hz to that rate
// (ondevice/resample.h) and read as 16 kHz: a speed and pitch change by
// 16000/rate, which brings voices unlike the training voices closer to
// them. Each slot's logits are then the mean over the runs of their log
// softmax (double, rounded to float). A resampled copy whose length falls
// outside [min_samples, max_samples] is left out; the audio as it is always
// runs. Costs one graph run per rate. Without the key, or with the option
// off, one run on the audio as it is and the graph's own logits.
//
// Result: for each slot, in the order action, object, location, the chosen
// label, its probability (softmax of the slot's logits, in double with the
// maximum subtracted; under joint decoding not necessarily the slot's
// highest), all probabilities and the raw logits in the manifest's label
// order; IntentResult::joint says which decoding was used.
//
// An Understander is immutable after construction: one instance may be used
// from several threads at once.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ondevice/bcq_gemm.h"
#include "ondevice/executor.h"

namespace ondevice {

struct UnderstanderOptions {
  int threads = 1;               // kernel threads per call; 0 = std::thread::hardware_concurrency()
  BitplaneKernel kernel;         // bit-plane kernel (default: the two-pass lut16)
  bool verify_checksums = true;  // sha256 of every file against the manifest
  bool speed_ensemble = true;    // run the manifest's "ensemble_rates" (see above); off: one run
};

// One slot's prediction.
struct SlotPrediction {
  std::string slot;           // "action", "object" or "location"
  std::string label;          // the chosen label (see "Valid intents" above)
  int64_t index = 0;          // its index among the slot's labels
  float probability = 0;      // softmax probability of `label`
  std::vector<float> logits;  // one per label, in the manifest's order
  std::vector<float> probabilities;  // softmax of `logits` (sums to 1 up to rounding)
};

struct IntentResult {
  std::vector<SlotPrediction> slots;  // action, object, location
  // true: the labels are the best of the manifest's "intents"; false: the
  // manifest lists none and each slot is its own arg max.
  bool joint = false;

  // The slot named `name`; ArgumentError if there is none.
  const SlotPrediction& slot(const std::string& name) const;
  const SlotPrediction& action() const { return slots.at(0); }
  const SlotPrediction& object() const { return slots.at(1); }
  const SlotPrediction& location() const { return slots.at(2); }
};

// Bytes of activation buffers an Understander keeps pooled between calls
// (pool_stats()): a 2 s utterance leaves ~17 MB, so up to ~7 s of audio the
// next call allocates nothing; more, and the call frees them all.
constexpr size_t kUnderstanderPoolKeepBytes = size_t(64) << 20;

class Understander {
 public:
  using Result = IntentResult;

  // The slot names, in result order.
  static const std::vector<std::string>& slot_names();

  explicit Understander(const std::string& model_dir, UnderstanderOptions options = UnderstanderOptions());
  ~Understander();
  Understander(Understander&&) noexcept;
  Understander& operator=(Understander&&) noexcept;

  // The intent of one utterance of `n` samples of 16 kHz mono PCM at `pcm`.
  // ArgumentError: n < min_samples(), n > max_samples(), a NaN or infinite
  // sample, pcm null with n > 0. Thread-safe.
  Result understand(const float* pcm, size_t n) const;
  Result understand(const std::vector<float>& pcm) const { return understand(pcm.data(), pcm.size()); }
  // The length check of understand() alone: ArgumentError ("audio too short:
  // ..." / "audio too long: ...") unless min_samples() <= n <= max_samples()
  // (bindings call it before copying a foreign array).
  void check_length(size_t n) const;

  int64_t sample_rate() const;   // 16000
  int64_t min_samples() const;   // the fewest samples the model takes (one frame)
  int64_t max_samples() const;   // max_seconds * sample_rate, rounded down
  double max_seconds() const;
  // The labels of `slot` ("action", "object", "location"); ArgumentError for another name.
  const std::vector<std::string>& labels(const std::string& slot) const;
  // The manifest's valid intents ({action, object, location} labels, in file
  // order); empty when it lists none (then each slot is decided on its own).
  const std::vector<std::array<std::string, 3>>& intents() const;
  bool joint_decoding() const { return !intents().empty(); }
  int threads() const;
  // The manifest's "ensemble_rates" (empty when it has none) and whether
  // understand() uses them (present with more than one rate, option on).
  const std::vector<int64_t>& ensemble_rates() const;
  bool speed_ensemble() const;

  void enable_profiling(bool on);
  std::vector<Executor::OpTime> profile() const;
  // The activation buffers' pool: kept between calls up to
  // kUnderstanderPoolKeepBytes, emptied after a call that leaves more.
  BufferPool::Stats pool_stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ondevice
