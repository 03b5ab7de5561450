// The native translator: an exported model directory (`ondevice export nmt`:
// manifest.json, encoder.onnx, decoder_step.onnx, weights.bin, spm.model)
// loaded once and used for any number of translations.
//
// Loading checks the manifest (format, sizes and sha256 of every file), maps
// the weights read-only and prepares both graphs; any problem is a
// FormatError naming the file. translate_batch() tokenizes with the C++
// SentencePiece implementation, batches sentences by length, runs the encoder
// once per batch and the decoder step with a KV cache (greedy or beam search,
// runtime/search.h), and detokenizes. A Translator is immutable after
// construction: one instance may be used from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ondevice/bcq_gemm.h"
#include "ondevice/executor.h"

namespace ondevice {

struct TranslatorOptions {
  int threads = 1;                            // kernel threads per call
  BitplaneKernel kernel;                      // bit-plane kernel (default: float-table LUT)
  bool verify_checksums = true;               // sha256 of every file against the manifest
};

struct TranslateOptions {
  int beam_size = 4;          // 1 = greedy
  float length_penalty = 1.0f;
  float max_len_a = 1.2f;     // a sentence stops at int(a * source tokens + b) target tokens
  float max_len_b = 10.0f;
  int64_t max_batch_tokens = 2048;  // source tokens x sentences x beam per batch
};

// The longest input line translate() accepts, in bytes (longer: ArgumentError).
inline constexpr size_t kMaxInputBytes = 1u << 20;

class Translator {
 public:
  explicit Translator(const std::string& model_dir, TranslatorOptions options = TranslatorOptions());
  ~Translator();
  Translator(Translator&&) noexcept;
  Translator& operator=(Translator&&) noexcept;

  // Translations in input order. Inputs that tokenize to nothing (empty or
  // whitespace-only) give "". ArgumentError for invalid UTF-8 (naming the
  // sentence index), a line longer than kMaxInputBytes, or more tokens than
  // the model's positions.
  std::vector<std::string> translate_batch(const std::vector<std::string>& sentences,
                                           const TranslateOptions& options = TranslateOptions()) const;
  std::string translate(const std::string& sentence, const TranslateOptions& options = TranslateOptions()) const;

  // Token ids of the best hypothesis (without eos) for source ids (each
  // ending in eos, as the tokenizer's output plus eos).
  std::vector<std::vector<int32_t>> generate(const std::vector<std::vector<int32_t>>& sources,
                                             const TranslateOptions& options = TranslateOptions()) const;
  // Source ids of a sentence as the model sees them (with eos).
  std::vector<int32_t> encode(const std::string& sentence) const;
  std::string decode(const std::vector<int32_t>& ids) const;

  const std::string& source_language() const;
  const std::string& target_language() const;
  int64_t max_positions() const;
  int32_t vocab_size() const;
  // Profiling of both graphs (Executor::profile) summed by operator.
  void enable_profiling(bool on);
  std::vector<Executor::OpTime> profile() const;
  BufferPool::Stats pool_stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ondevice
