// Greedy and beam search over a decoder-step function: the rules of the
// Python reference (ondevice/onnx_export/decoding.py, itself a port of
// ondevice/nmt/search.py), step for step, so the native runtime decodes what
// PyTorch and onnxruntime decode whenever the log-probabilities agree on the
// order of candidates.
//
// Decoding starts from eos; pad and bos are never produced; eos is not allowed
// first; each sentence stops at int(max_len_a * src_len + max_len_b) tokens
// (src_len = its non-pad tokens, at most max_positions - 1), where eos is
// forced. Beam search keeps the 2 * beam best candidates per step and
// finalizes eos candidates among the top `beam` with score
// sum(log p) / len ** lenpen.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "ondevice/executor.h"
#include "ondevice/tensor.h"

namespace ondevice::search {

struct Special {
  int32_t bos = 0, pad = 1, eos = 2;
  int32_t vocab = 0;
  int64_t max_positions = 1024;
};

struct SearchOptions {
  int beam = 4;
  float lenpen = 1.0f;
  float max_len_a = 1.2f;
  float max_len_b = 10.0f;
};

// The decoder's inputs besides the tokens, split by how they are reordered:
// `per_sentence` (source mask, cross-attention K/V) only changes when
// sentences finish; `per_hypothesis` (the self-attention cache) follows the
// beams every step. Every tensor's first axis is the hypothesis row.
struct State {
  std::vector<NamedTensor> per_sentence;
  std::vector<NamedTensor> per_hypothesis;
};

// Runs one decoder step for `tokens` (one per row) and returns the logits
// [rows, vocab]; replaces state.per_hypothesis with the grown cache.
using StepFn = std::function<Tensor(const std::vector<int64_t>& tokens, State& state)>;

// Rows of every tensor in `v` taken in the order of `rows` (a gather on axis 0).
std::vector<NamedTensor> take_rows(const std::vector<NamedTensor>& v, const std::vector<int64_t>& rows,
                                   BufferPool* pool);

// Max output length of each sentence from its number of non-pad source tokens.
std::vector<int64_t> max_lengths(const std::vector<int64_t>& src_lens, const Special& sp, const SearchOptions& o);

// One token list (without eos) per sentence; `state` holds one row per sentence.
std::vector<std::vector<int32_t>> greedy_search(const StepFn& step, State state, const std::vector<int64_t>& src_lens,
                                                const Special& sp, const SearchOptions& o, BufferPool* pool);

struct Hypothesis {
  float score = 0;
  std::vector<int32_t> tokens;
};
// Per sentence its finished hypotheses (at most `beam`), best first.
std::vector<std::vector<Hypothesis>> beam_search(const StepFn& step, State state, const std::vector<int64_t>& src_lens,
                                                 const Special& sp, const SearchOptions& o, BufferPool* pool);

// log_softmax of each row of logits [rows, vocab] into `out`, then the
// reference's masking: pad and bos -inf, eos -inf while step < 1, and for rows
// at their max length everything -inf except eos (its unmasked value). NaN
// becomes -inf so a corrupt model cannot break the candidate ordering.
void masked_log_probs(const float* logits, size_t rows, size_t vocab, const Special& sp, int64_t step,
                      const std::vector<bool>& at_max, std::vector<float>& out);

}  // namespace ondevice::search
