// Greedy and beam search (search.h).
#include "search.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "../kernels/float_kernels.h"
#include "ondevice/error.h"

namespace ondevice::search {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int64_t kMinLen = 1;
}  // namespace

std::vector<NamedTensor> take_rows(const std::vector<NamedTensor>& v, const std::vector<int64_t>& rows,
                                   BufferPool* pool) {
  std::vector<NamedTensor> out;
  out.reserve(v.size());
  for (const NamedTensor& nt : v) {
    const Tensor& t = nt.second;
    if (t.rank() < 1) throw ArgumentError("state tensor '" + nt.first + "' has no row axis");
    Shape shape = t.shape();
    const int64_t n = shape[0];
    shape[0] = int64_t(rows.size());
    Tensor r = Tensor::allocate(t.dtype(), shape, pool);
    const size_t row_bytes = n > 0 ? t.nbytes() / size_t(n) : 0;
    const uint8_t* src = static_cast<const uint8_t*>(t.raw());
    uint8_t* dst = static_cast<uint8_t*>(const_cast<void*>(r.raw()));
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i] < 0 || rows[i] >= n) throw ArgumentError("row index out of range in take_rows");
      if (row_bytes) std::memcpy(dst + i * row_bytes, src + size_t(rows[i]) * row_bytes, row_bytes);
    }
    out.emplace_back(nt.first, std::move(r));
  }
  return out;
}

std::vector<int64_t> max_lengths(const std::vector<int64_t>& src_lens, const Special& sp, const SearchOptions& o) {
  const int64_t cap = sp.max_positions - 1;
  std::vector<int64_t> v;
  for (int64_t n : src_lens) {
    // int() of a double truncates toward zero, as Python's int() does.
    const double x = double(o.max_len_a) * double(n) + double(o.max_len_b);
    const int64_t m = x >= double(cap) ? cap : int64_t(x);
    v.push_back(std::max<int64_t>(0, std::min(cap, m)));
  }
  return v;
}

void masked_log_probs(const float* logits, size_t rows, size_t vocab, const Special& sp, int64_t step,
                      const std::vector<bool>& at_max, std::vector<float>& out) {
  out.resize(rows * vocab);
  std::vector<float> lse(rows);
  detail::log_sum_exp_rows(logits, rows, vocab, lse.data());
  for (size_t r = 0; r < rows; ++r) {
    const float* x = logits + r * vocab;
    float* y = out.data() + r * vocab;
    for (size_t j = 0; j < vocab; ++j) {
      const float v = x[j] - lse[r];
      y[j] = v == v ? v : kNegInf;
    }
    const float eos_raw = y[size_t(sp.eos)];
    y[size_t(sp.pad)] = kNegInf;
    y[size_t(sp.bos)] = kNegInf;
    if (step < kMinLen) y[size_t(sp.eos)] = kNegInf;
    if (at_max[r]) {
      std::fill(y, y + vocab, kNegInf);
      y[size_t(sp.eos)] = eos_raw;
    }
  }
}

namespace {

// Indices of the `c` largest values of v[0, n), best first, ties by the lower
// index (a stable descending sort's prefix), in one pass: an insertion into a
// short sorted list, which almost every value fails to enter.
void top_candidates(const float* v, size_t n, size_t c, std::vector<int64_t>& idx) {
  idx.clear();
  for (size_t i = 0; i < n; ++i) {
    if (idx.size() == c && !(v[i] > v[size_t(idx.back())])) continue;
    size_t pos = idx.size();
    while (pos > 0 && v[i] > v[size_t(idx[pos - 1])]) --pos;
    if (idx.size() < c) idx.push_back(0);
    for (size_t k = idx.size() - 1; k > pos; --k) idx[k] = idx[k - 1];
    idx[pos] = int64_t(i);
  }
}

// The first maximum of the masked row, as numpy argmax; NaN never wins.
int32_t greedy_token(const float* x, size_t vocab, const Special& sp, int64_t step, bool at_max) {
  if (at_max) return sp.eos;  // everything else is masked to -inf
  int32_t best = -1;
  float best_v = kNegInf;
  for (size_t j = 0; j < vocab; ++j) {
    const int32_t t = int32_t(j);
    if (t == sp.pad || t == sp.bos || (t == sp.eos && step < kMinLen)) continue;
    if (best < 0 || x[j] > best_v) {
      best = t;
      best_v = x[j] == x[j] ? x[j] : kNegInf;
    }
  }
  return best < 0 ? sp.eos : best;
}

}  // namespace

std::vector<std::vector<int32_t>> greedy_search(const StepFn& step_fn, State state,
                                                const std::vector<int64_t>& src_lens, const Special& sp,
                                                const SearchOptions& o, BufferPool* pool) {
  const size_t bsz = src_lens.size();
  const std::vector<int64_t> max_lens = max_lengths(src_lens, sp, o);
  std::vector<std::vector<int32_t>> hyps(bsz);
  std::vector<int64_t> active(bsz);
  std::iota(active.begin(), active.end(), 0);
  std::vector<int64_t> last(bsz, sp.eos);
  for (int64_t step = 0; !active.empty(); ++step) {
    const Tensor logits = step_fn(last, state);
    std::vector<bool> at_max(active.size());
    for (size_t i = 0; i < active.size(); ++i) at_max[i] = step >= max_lens[size_t(active[i])];
    const size_t v = size_t(sp.vocab);
    std::vector<int64_t> keep, next_active, next_last;
    for (size_t i = 0; i < active.size(); ++i) {
      // log_softmax is monotonic, so the argmax of the masked logits is the
      // reference's argmax of the masked log-probabilities (which differ only
      // where subtracting the row's log-sum-exp rounds two logits together).
      const int32_t tok = greedy_token(logits.data<float>() + i * v, v, sp, step, at_max[i]);
      if (tok != sp.eos) {
        hyps[size_t(active[i])].push_back(tok);
        keep.push_back(int64_t(i));
        next_active.push_back(active[i]);
        next_last.push_back(tok);
      }
    }
    if (keep.empty()) break;
    if (keep.size() < active.size()) {
      state.per_sentence = take_rows(state.per_sentence, keep, pool);
      state.per_hypothesis = take_rows(state.per_hypothesis, keep, pool);
    }
    active = std::move(next_active);
    last = std::move(next_last);
  }
  return hyps;
}

std::vector<std::vector<Hypothesis>> beam_search(const StepFn& step_fn, State state,
                                                 const std::vector<int64_t>& src_lens, const Special& sp,
                                                 const SearchOptions& o, BufferPool* pool) {
  const size_t bsz = src_lens.size(), k = size_t(o.beam), v = size_t(sp.vocab);
  if (o.beam < 1) throw ArgumentError("beam size must be >= 1");
  const std::vector<int64_t> max_lens = max_lengths(src_lens, sp, o);
  {
    std::vector<int64_t> rep;
    for (size_t i = 0; i < bsz; ++i) rep.insert(rep.end(), k, int64_t(i));
    state.per_sentence = take_rows(state.per_sentence, rep, pool);
    state.per_hypothesis = take_rows(state.per_hypothesis, rep, pool);
  }
  std::vector<std::vector<Hypothesis>> finalized(bsz);
  std::vector<int64_t> active(bsz);
  std::iota(active.begin(), active.end(), 0);
  std::vector<std::vector<int32_t>> tokens(bsz * k);  // without the leading eos
  std::vector<int64_t> last(bsz * k, sp.eos);
  std::vector<float> scores(bsz * k, 0.0f), lp, total;
  const size_t c = 2 * k;
  std::vector<int64_t> order;
  for (int64_t step = 0; !active.empty(); ++step) {
    const size_t n = active.size();
    const Tensor logits = step_fn(last, state);
    std::vector<bool> at_max(n * k);
    for (size_t r = 0; r < n * k; ++r) at_max[r] = step >= max_lens[size_t(active[r / k])];
    masked_log_probs(logits.data<float>(), n * k, v, sp, step, at_max, lp);
    const size_t width = step == 0 ? v : k * v;
    std::vector<int64_t> cand_idx(n * c);
    std::vector<float> cand_score(n * c);
    for (size_t i = 0; i < n; ++i) {
      total.resize(width);
      if (step == 0) {
        std::copy(lp.begin() + long(i * k * v), lp.begin() + long(i * k * v + v), total.begin());
      } else {
        for (size_t b = 0; b < k; ++b)
          for (size_t t = 0; t < v; ++t) total[b * v + t] = lp[(i * k + b) * v + t] + scores[i * k + b];
      }
      // The 2k best, ties broken by the lower index (a stable descending sort).
      const size_t take = std::min(c, width);
      top_candidates(total.data(), width, take, order);
      for (size_t j = 0; j < c; ++j) {
        const int64_t idx = j < take ? order[j] : order[take - 1];
        cand_idx[i * c + j] = idx;
        cand_score[i * c + j] = total[size_t(idx)];
      }
    }
    const float norm = float(std::pow(double(step + 1), double(o.lenpen)));
    auto is_eos = [&](size_t i, size_t j) {
      return cand_idx[i * c + j] % int64_t(v) == sp.eos && std::isfinite(cand_score[i * c + j]);
    };
    for (size_t i = 0; i < n; ++i) {
      const size_t sid = size_t(active[i]);
      for (size_t j = 0; j < k; ++j) {
        if (!is_eos(i, j) || finalized[sid].size() >= k) continue;
        const size_t row = i * k + size_t(cand_idx[i * c + j] / int64_t(v));
        finalized[sid].push_back({cand_score[i * c + j] / norm, tokens[row]});
      }
    }
    std::vector<size_t> keep;
    for (size_t i = 0; i < n; ++i) {
      const size_t sid = size_t(active[i]);
      if (finalized[sid].size() < k && step < max_lens[sid]) keep.push_back(i);
    }
    if (keep.empty()) break;
    std::vector<int64_t> rows, sentence_rows, next_active;
    std::vector<std::vector<int32_t>> next_tokens;
    std::vector<int64_t> next_last;
    std::vector<float> next_scores;
    for (size_t i : keep) {
      next_active.push_back(active[i]);
      // The k best candidates, non-eos first (stable by rank).
      std::vector<size_t> sel;
      for (size_t j = 0; j < c && sel.size() < k; ++j)
        if (!is_eos(i, j)) sel.push_back(j);
      for (size_t j = 0; j < c && sel.size() < k; ++j)
        if (is_eos(i, j)) sel.push_back(j);
      for (size_t j : sel) {
        const int64_t idx = cand_idx[i * c + j];
        const size_t row = i * k + size_t(idx / int64_t(v));
        const int32_t tok = int32_t(idx % int64_t(v));
        rows.push_back(int64_t(row));
        sentence_rows.push_back(int64_t(i * k));
        std::vector<int32_t> t = tokens[row];
        t.push_back(tok);
        next_tokens.push_back(std::move(t));
        next_last.push_back(tok);
        next_scores.push_back(cand_score[i * c + j]);
      }
    }
    // Rows of one sentence share its source state, so it only moves when
    // sentences finish.
    if (keep.size() < n) state.per_sentence = take_rows(state.per_sentence, sentence_rows, pool);
    state.per_hypothesis = take_rows(state.per_hypothesis, rows, pool);
    tokens = std::move(next_tokens);
    last = std::move(next_last);
    scores = std::move(next_scores);
    active = std::move(next_active);
  }
  for (auto& h : finalized)
    std::stable_sort(h.begin(), h.end(), [](const Hypothesis& a, const Hypothesis& b) { return a.score > b.score; });
  return finalized;
}

}  // namespace ondevice::search
