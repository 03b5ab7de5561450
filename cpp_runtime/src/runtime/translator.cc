// The native translator (include/ondevice/translator.h).
#include "ondevice/translator.h"

#include <algorithm>
#include <map>
#include <numeric>

#include "ondevice/error.h"
#include "ondevice/json.h"
#include "ondevice/sentencepiece.h"
#include "model_dir.h"
#include "search.h"

namespace ondevice {

namespace {

std::string member(const std::string& dir, const JsonValue& v) { return detail::model_file(dir, v); }

std::vector<std::string> strings(const JsonValue& v) {
  std::vector<std::string> out;
  for (const JsonValue& x : v.as_array()) out.push_back(x.as_string());
  return out;
}

}  // namespace

struct Translator::Impl {
  std::string dir, src, tgt;
  TranslatorOptions options;
  std::unique_ptr<SentencePieceTokenizer> tokenizer;
  std::unique_ptr<Executor> encoder, decoder;
  std::shared_ptr<BufferPool> pool = BufferPool::create();  // decoding state (cache reorders)
  search::Special special;
  std::vector<std::string> encoder_outputs;
  std::string tokens_input = "tokens", mask_name = "src_pad_mask";
  std::vector<std::string> cross, past, present;
  size_t logits_at = 0;            // position of "logits" among the decoder's outputs
  std::vector<size_t> present_at;  // position of present[i] among them

  void load(const std::string& model_dir);
  search::State encode_batch(const std::vector<std::vector<int32_t>>& ids, std::vector<int64_t>& src_lens) const;
  Tensor step(const std::vector<int64_t>& tokens, search::State& state) const;
};

void Translator::Impl::load(const std::string& model_dir) {
  const detail::Manifest manifest = detail::load_manifest(model_dir, "nmt-transformer", "a translation model",
                                                          "a model directory written by `ondevice export nmt`");
  dir = manifest.dir;
  const std::string& manifest_path = manifest.path;
  const JsonValue& m = manifest.json;
  try {
    src = m.at("src").as_string();
    tgt = m.at("tgt").as_string();
    const JsonValue& ids = m.at("special_ids");
    special.bos = int32_t(ids.at("bos").as_int());
    special.pad = int32_t(ids.at("pad").as_int());
    special.eos = int32_t(ids.at("eos").as_int());
    special.vocab = int32_t(m.at("vocab_size").as_int());
    special.max_positions = m.at("model_config").at("max_positions").as_int();
    for (int32_t id : {special.bos, special.pad, special.eos})
      if (id < 0 || id >= special.vocab) throw FormatError(manifest_path + ": special id outside the vocabulary");
    if (special.max_positions < 2) throw FormatError(manifest_path + ": max_positions must be >= 2");
    detail::verify_model_files(dir, m.at("files"), options.verify_checksums);
    const JsonValue& graphs = m.at("graphs");
    const JsonValue& kv = m.at("kv_cache");
    cross = strings(kv.at("cross_k"));
    for (const std::string& s : strings(kv.at("cross_v"))) cross.push_back(s);
    past = strings(kv.at("past_self_k"));
    present = strings(kv.at("present_self_k"));
    for (const std::string& s : strings(kv.at("past_self_v"))) past.push_back(s);
    for (const std::string& s : strings(kv.at("present_self_v"))) present.push_back(s);
    if (past.size() != present.size()) throw FormatError(manifest_path + ": past and present caches differ in length");
    tokenizer = std::make_unique<SentencePieceTokenizer>(SentencePieceTokenizer::load(member(dir, m.at("tokenizer"))));
    if (tokenizer->piece_size() != special.vocab)
      throw FormatError(manifest_path + ": the tokenizer has " + std::to_string(tokenizer->piece_size()) +
                        " pieces, the model " + std::to_string(special.vocab));
    ExecutorOptions eo;
    eo.threads = options.threads;
    eo.kernel = options.kernel;
    encoder = std::make_unique<Executor>(Executor::load(member(dir, graphs.at("encoder").at("file")), eo));
    decoder = std::make_unique<Executor>(Executor::load(member(dir, graphs.at("decoder_step").at("file")), eo));
  } catch (const FormatError& e) {
    detail::rethrow_with_manifest_path(e, manifest);
  }
  // The graphs must have the inputs and outputs the manifest promises.
  auto require = [&](const Executor& ex, const std::vector<std::string>& names, bool inputs, const char* graph) {
    const std::vector<std::string>& have = inputs ? ex.input_names() : ex.output_names();
    for (const std::string& n : names)
      if (std::find(have.begin(), have.end(), n) == have.end())
        throw FormatError(dir + ": the " + graph + " graph has no " + (inputs ? "input" : "output") + " '" + n + "'");
  };
  require(*encoder, {"src_tokens"}, true, "encoder");
  std::vector<std::string> enc_out = cross;
  enc_out.push_back(mask_name);
  require(*encoder, enc_out, false, "encoder");
  std::vector<std::string> dec_in = cross;
  dec_in.insert(dec_in.end(), past.begin(), past.end());
  dec_in.push_back(mask_name);
  dec_in.push_back(tokens_input);
  require(*decoder, dec_in, true, "decoder_step");
  std::vector<std::string> dec_out = present;
  dec_out.push_back("logits");
  require(*decoder, dec_out, false, "decoder_step");
  if (decoder->input_names().size() != dec_in.size())
    throw FormatError(dir + ": the decoder_step graph has inputs the manifest does not describe");
  encoder_outputs = encoder->output_names();
  const std::vector<std::string>& outs = decoder->output_names();
  auto position = [&outs](const std::string& n) { return size_t(std::find(outs.begin(), outs.end(), n) - outs.begin()); };
  logits_at = position("logits");
  for (const std::string& p : present) present_at.push_back(position(p));
}

search::State Translator::Impl::encode_batch(const std::vector<std::vector<int32_t>>& ids,
                                             std::vector<int64_t>& src_lens) const {
  size_t width = 0;
  for (const auto& x : ids) width = std::max(width, x.size());
  Tensor src = Tensor::allocate(DType::kInt64, {int64_t(ids.size()), int64_t(width)}, pool.get());
  int64_t* p = src.mutable_data<int64_t>();
  src_lens.clear();
  for (size_t r = 0; r < ids.size(); ++r) {
    for (size_t j = 0; j < width; ++j) p[r * width + j] = j < ids[r].size() ? ids[r][j] : special.pad;
    int64_t n = 0;
    for (int32_t t : ids[r]) n += t != special.pad;
    src_lens.push_back(n);
  }
  std::vector<Tensor> out = encoder->run({{"src_tokens", src}});
  // The encoder's activations scale with the batch's source length; keeping
  // them pooled would hold the largest batch's peak for the Translator's life.
  encoder->trim_pool();
  std::map<std::string, Tensor> by_name;
  for (size_t i = 0; i < out.size(); ++i) by_name[encoder_outputs[i]] = out[i];
  search::State st;
  st.per_sentence.emplace_back(mask_name, by_name.at(mask_name));
  for (const std::string& c : cross) st.per_sentence.emplace_back(c, by_name.at(c));
  const Tensor& k0 = by_name.at(cross.front());
  if (k0.rank() != 4) throw FormatError(dir + ": cross-attention keys must have rank 4");
  for (const std::string& p_name : past) {
    Tensor empty = Tensor::allocate(DType::kFloat32, {int64_t(ids.size()), k0.dim(1), 0, k0.dim(3)}, pool.get());
    st.per_hypothesis.emplace_back(p_name, empty);
  }
  return st;
}

Tensor Translator::Impl::step(const std::vector<int64_t>& tokens, search::State& state) const {
  Tensor tok = Tensor::allocate(DType::kInt64, {int64_t(tokens.size()), 1}, pool.get());
  std::copy(tokens.begin(), tokens.end(), tok.mutable_data<int64_t>());
  std::vector<NamedTensor> feeds;
  feeds.reserve(1 + state.per_sentence.size() + state.per_hypothesis.size());
  feeds.emplace_back(tokens_input, tok);
  feeds.insert(feeds.end(), state.per_sentence.begin(), state.per_sentence.end());
  feeds.insert(feeds.end(), state.per_hypothesis.begin(), state.per_hypothesis.end());
  std::vector<Tensor> out = decoder->run(feeds);
  const Tensor& logits = out[logits_at];
  if (logits.rank() != 2 || logits.dim(0) != int64_t(tokens.size()) || logits.dim(1) != special.vocab)
    throw FormatError(dir + ": decoder logits have shape " + shape_string(logits.shape()));
  for (size_t i = 0; i < past.size(); ++i) state.per_hypothesis[i].second = out[present_at[i]];
  return logits;
}

Translator::Translator(const std::string& model_dir, TranslatorOptions options) : impl_(new Impl) {
  if (options.threads < 1) throw ArgumentError("threads must be >= 1");
  impl_->options = options;
  impl_->load(model_dir);
}
Translator::~Translator() = default;
Translator::Translator(Translator&&) noexcept = default;
Translator& Translator::operator=(Translator&&) noexcept = default;

std::vector<int32_t> Translator::encode(const std::string& sentence) const {
  if (sentence.size() > kMaxInputBytes)
    throw ArgumentError("input of " + std::to_string(sentence.size()) + " bytes is longer than the limit of " +
                        std::to_string(kMaxInputBytes));
  std::vector<int32_t> ids = impl_->tokenizer->encode(sentence);
  if (ids.empty()) return ids;
  ids.push_back(impl_->special.eos);
  if (int64_t(ids.size()) > impl_->special.max_positions)
    throw ArgumentError("input is " + std::to_string(ids.size()) + " tokens long, more than the model's " +
                        std::to_string(impl_->special.max_positions) + " positions");
  return ids;
}

std::string Translator::decode(const std::vector<int32_t>& ids) const {
  std::vector<int32_t> kept;
  for (int32_t t : ids)
    if (t != impl_->special.bos && t != impl_->special.pad && t != impl_->special.eos) kept.push_back(t);
  return impl_->tokenizer->decode(kept);
}

std::vector<std::vector<int32_t>> Translator::generate(const std::vector<std::vector<int32_t>>& sources,
                                                       const TranslateOptions& o) const {
  if (o.beam_size < 1 || o.beam_size > 64) throw ArgumentError("beam size must be in 1..64");
  if (!(o.length_penalty == o.length_penalty) || !(o.max_len_a >= 0) || !(o.max_len_b >= 0))
    throw ArgumentError("length penalty and max length must be finite and >= 0");
  const Impl& m = *impl_;
  for (const auto& s : sources) {
    if (s.empty()) throw ArgumentError("an empty source (it needs at least eos)");
    if (int64_t(s.size()) > m.special.max_positions) throw ArgumentError("source longer than the model's positions");
    for (int32_t t : s)
      if (t < 0 || t >= m.special.vocab) throw ArgumentError("source id " + std::to_string(t) + " outside the vocabulary");
  }
  search::SearchOptions so;
  so.beam = o.beam_size;
  so.lenpen = o.length_penalty;
  so.max_len_a = o.max_len_a;
  so.max_len_b = o.max_len_b;
  const search::StepFn step = [&m](const std::vector<int64_t>& tokens, search::State& st) { return m.step(tokens, st); };
  // Batches of similar length, as the Python backends batch them.
  std::vector<size_t> order(sources.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return sources[a].size() < sources[b].size(); });
  std::vector<std::vector<int32_t>> out(sources.size());
  for (size_t start = 0; start < order.size();) {
    size_t end = start + 1;
    while (end < order.size() &&
           int64_t(sources[order[end]].size()) * int64_t(end - start + 1) * o.beam_size <= o.max_batch_tokens)
      ++end;
    std::vector<std::vector<int32_t>> batch;
    for (size_t i = start; i < end; ++i) batch.push_back(sources[order[i]]);
    std::vector<int64_t> lens;
    search::State st = m.encode_batch(batch, lens);
    if (o.beam_size == 1) {
      auto hyps = search::greedy_search(step, std::move(st), lens, m.special, so, m.pool.get());
      for (size_t i = start; i < end; ++i) out[order[i]] = std::move(hyps[i - start]);
    } else {
      auto nbest = search::beam_search(step, std::move(st), lens, m.special, so, m.pool.get());
      for (size_t i = start; i < end; ++i)
        if (!nbest[i - start].empty()) out[order[i]] = std::move(nbest[i - start][0].tokens);
    }
    start = end;
  }
  return out;
}

std::vector<std::string> Translator::translate_batch(const std::vector<std::string>& sentences,
                                                     const TranslateOptions& o) const {
  std::vector<std::vector<int32_t>> ids;
  std::vector<size_t> todo;
  for (size_t i = 0; i < sentences.size(); ++i) {
    std::vector<int32_t> x;
    try {
      x = encode(sentences[i]);
    } catch (const ArgumentError& e) {
      throw ArgumentError("sentence " + std::to_string(i) + ": " + e.what());
    }
    if (x.empty()) continue;
    ids.push_back(std::move(x));
    todo.push_back(i);
  }
  std::vector<std::string> out(sentences.size());
  const std::vector<std::vector<int32_t>> hyps = generate(ids, o);
  for (size_t j = 0; j < todo.size(); ++j) out[todo[j]] = decode(hyps[j]);
  return out;
}

std::string Translator::translate(const std::string& sentence, const TranslateOptions& o) const {
  return translate_batch({sentence}, o)[0];
}

const std::string& Translator::source_language() const { return impl_->src; }
const std::string& Translator::target_language() const { return impl_->tgt; }
int64_t Translator::max_positions() const { return impl_->special.max_positions; }
int32_t Translator::vocab_size() const { return impl_->special.vocab; }

void Translator::enable_profiling(bool on) {
  impl_->encoder->enable_profiling(on);
  impl_->decoder->enable_profiling(on);
}

std::vector<Executor::OpTime> Translator::profile() const {
  std::map<std::string, Executor::OpTime> sum;
  for (const Executor* e : {impl_->encoder.get(), impl_->decoder.get()})
    for (const Executor::OpTime& t : e->profile()) {
      Executor::OpTime& s = sum[t.op];
      s.op = t.op;
      s.calls += t.calls;
      s.seconds += t.seconds;
    }
  std::vector<Executor::OpTime> v;
  for (auto& kv : sum) v.push_back(kv.second);
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.seconds > b.seconds; });
  return v;
}

BufferPool::Stats Translator::pool_stats() const {
  BufferPool::Stats s = impl_->pool->stats();
  for (const Executor* e : {impl_->encoder.get(), impl_->decoder.get()}) {
    const BufferPool::Stats t = e->pool_stats();
    s.heap_allocations += t.heap_allocations;
    s.reuses += t.reuses;
    s.bytes_held += t.bytes_held;
    s.bytes_free += t.bytes_free;
  }
  return s;
}

}  // namespace ondevice
