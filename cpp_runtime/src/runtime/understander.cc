// The native speech-intent recognizer (include/ondevice/understander.h).
#include "ondevice/understander.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <thread>

#include "ondevice/error.h"
#include "ondevice/json.h"
#include "model_dir.h"

namespace ondevice {

namespace {

constexpr int64_t kSampleRate = 16000;

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g s", s);
  return buf;
}

}  // namespace

const std::vector<std::string>& Understander::slot_names() {
  static const std::vector<std::string> names = {"action", "object", "location"};
  return names;
}

const SlotPrediction& IntentResult::slot(const std::string& name) const {
  for (const SlotPrediction& s : slots)
    if (s.slot == name) return s;
  throw ArgumentError("no slot named '" + name + "' (slots: action, object, location)");
}

struct Understander::Impl {
  std::string dir;
  UnderstanderOptions options;
  std::unique_ptr<Executor> graph;
  std::string input_name;
  std::vector<std::vector<std::string>> labels;  // per slot, slot_names() order
  std::vector<size_t> output_at;                 // position of each slot's logits among the graph's outputs
  std::vector<std::array<std::string, 3>> intents;  // the manifest's "intents" (empty: none)
  std::vector<std::array<size_t, 3>> intent_at;     // their label indices, per slot
  int64_t min_samples = 0, max_samples = 0;
  double max_seconds = 0;

  void load(const std::string& model_dir);
};

void Understander::Impl::load(const std::string& model_dir) {
  const detail::Manifest manifest =
      detail::load_manifest(model_dir, "slu-intent", "a speech-intent model (slu-intent)",
                            "a speech model directory written by export_slu");
  dir = manifest.dir;
  const JsonValue& m = manifest.json;
  std::vector<std::string> outputs;
  try {
    const JsonValue& rate = m.at("sample_rate");
    if (rate.as_int() != kSampleRate)
      throw FormatError(rate.describe_location() + ": sample_rate " + std::to_string(rate.as_int()) +
                        " is not supported (this runtime takes 16000 Hz audio)");
    const JsonValue& secs = m.at("max_seconds");
    max_seconds = secs.as_number();
    if (!(max_seconds > 0 && max_seconds <= 3600))
      throw FormatError(secs.describe_location() + ": max_seconds must be in (0, 3600]");
    max_samples = int64_t(std::floor(max_seconds * double(kSampleRate)));
    const JsonValue& mins = m.at("min_samples");
    min_samples = mins.as_int();
    if (min_samples < 1 || min_samples > max_samples)
      throw FormatError(mins.describe_location() + ": min_samples must be in 1.." + std::to_string(max_samples));
    const JsonValue& slots = m.at("slots");
    for (const auto& kv : slots.members())
      if (std::find(slot_names().begin(), slot_names().end(), kv.first) == slot_names().end())
        throw FormatError(slots.describe_location() + ": unknown slot '" + kv.first + "' (expected action, object, location)");
    for (const std::string& name : slot_names()) {
      const JsonValue& list = slots.at(name);
      std::vector<std::string> l;
      for (const JsonValue& x : list.as_array()) l.push_back(x.as_string());
      if (l.empty()) throw FormatError(list.describe_location() + ": no labels");
      labels.push_back(std::move(l));
    }
    if (const JsonValue* list = m.find("intents")) {
      // The valid [action, object, location] combinations: understand()
      // decodes over them (absent: each slot on its own).
      const std::vector<JsonValue>& entries = list->as_array();
      if (entries.empty())
        throw FormatError(list->describe_location() + ": no intents (omit the key to decode each slot on its own)");
      for (const JsonValue& entry : entries) {
        const std::vector<JsonValue>& triple = entry.as_array();
        if (triple.size() != slot_names().size())
          throw FormatError(entry.describe_location() + ": an intent lists 3 labels (action, object, location), not " +
                            std::to_string(triple.size()));
        std::array<std::string, 3> names;
        std::array<size_t, 3> at{};
        for (size_t s = 0; s < names.size(); ++s) {
          names[s] = triple[s].as_string();
          const auto it = std::find(labels[s].begin(), labels[s].end(), names[s]);
          if (it == labels[s].end())
            throw FormatError(triple[s].describe_location() + ": '" + names[s] + "' is not one of the " +
                              slot_names()[s] + " labels");
          at[s] = size_t(it - labels[s].begin());
        }
        if (std::find(intent_at.begin(), intent_at.end(), at) != intent_at.end())
          throw FormatError(entry.describe_location() + ": duplicate intent [" + names[0] + ", " + names[1] + ", " +
                            names[2] + "]");
        intents.push_back(std::move(names));
        intent_at.push_back(at);
      }
    }
    detail::verify_model_files(dir, m.at("files"), options.verify_checksums);
    // The files the runtime reads must be among those just checked.
    auto listed = [&](const JsonValue& name) {
      const std::string path = detail::model_file(dir, name);
      for (const JsonValue& f : m.at("files").as_array())
        if (f.at("path").as_string() == name.as_string()) return path;
      throw FormatError(name.describe_location() + ": '" + name.as_string() +
                        "' is not listed in \"files\" (its size and sha256 would go unchecked)");
    };
    const JsonValue& g = m.at("graphs").at("understand");
    const std::string graph_path = listed(g.at("file"));
    if (const JsonValue* w = m.find("weights")) listed(*w);
    const std::vector<JsonValue>& ins = g.at("inputs").as_array();
    if (ins.size() != 1) throw FormatError(g.at("inputs").describe_location() + ": expected one input (the audio)");
    input_name = ins[0].as_string();
    const JsonValue& outs = g.at("outputs");
    for (const JsonValue& o : outs.as_array()) outputs.push_back(o.as_string());
    if (outputs.size() != slot_names().size())
      throw FormatError(outs.describe_location() + ": expected one output per slot (action, object, location)");
    ExecutorOptions eo;
    eo.threads = options.threads;
    eo.kernel = options.kernel;
    graph = std::make_unique<Executor>(Executor::load(graph_path, eo));
  } catch (const FormatError& e) {
    detail::rethrow_with_manifest_path(e, manifest);
  }
  // The graph must have the input and outputs the manifest promises.
  if (graph->input_names() != std::vector<std::string>{input_name})
    throw FormatError(dir + ": the understand graph must have exactly one input, '" + input_name + "'");
  const std::vector<std::string>& have = graph->output_names();
  for (const std::string& o : outputs) {
    const auto it = std::find(have.begin(), have.end(), o);
    if (it == have.end()) throw FormatError(dir + ": the understand graph has no output '" + o + "'");
    output_at.push_back(size_t(it - have.begin()));
  }
}

Understander::Understander(const std::string& model_dir, UnderstanderOptions options) : impl_(new Impl) {
  if (options.threads < 0) throw ArgumentError("threads must be >= 0 (0: one per hardware thread)");
  if (options.threads == 0) options.threads = int(std::max(1u, std::thread::hardware_concurrency()));
  impl_->options = options;
  impl_->load(model_dir);
}
Understander::~Understander() = default;
Understander::Understander(Understander&&) noexcept = default;
Understander& Understander::operator=(Understander&&) noexcept = default;

void Understander::check_length(size_t n) const {
  const Impl& m = *impl_;
  const double rate = double(kSampleRate);
  if (n < size_t(m.min_samples))
    throw ArgumentError("audio too short: " + std::to_string(n) + " samples, at least " +
                        std::to_string(m.min_samples) + " (" + seconds(double(m.min_samples) / rate) +
                        ") needed");
  if (n > size_t(m.max_samples))
    throw ArgumentError("audio too long: " + std::to_string(n) + " samples (" + seconds(double(n) / rate) +
                        "), at most " + std::to_string(m.max_samples) + " (" + seconds(m.max_seconds) +
                        ") accepted");
}

Understander::Result Understander::understand(const float* pcm, size_t n) const {
  const Impl& m = *impl_;
  check_length(n);
  if (pcm == nullptr) throw ArgumentError("audio is null");
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(pcm[i]))
      throw ArgumentError("audio sample " + std::to_string(i) + " is " + (std::isnan(pcm[i]) ? "NaN" : "infinite") +
                          " (every sample must be finite)");
  const Tensor audio = Tensor::borrowed(DType::kFloat32, {1, int64_t(n)}, pcm, nullptr);
  Result r;
  std::array<std::vector<double>, 3> log_probs;  // per slot, for joint decoding
  {
    const std::vector<Tensor> out = m.graph->run({{m.input_name, audio}});
    for (size_t s = 0; s < slot_names().size(); ++s) {
      const Tensor& t = out[m.output_at[s]];
      const std::vector<std::string>& labels = m.labels[s];
      const int64_t k = int64_t(labels.size());
      if (t.dtype() != DType::kFloat32 || t.numel() != k || t.rank() == 0 || t.dim(t.rank() - 1) != k)
        throw FormatError(m.dir + ": the " + slot_names()[s] + " logits have shape " + shape_string(t.shape()) + " (" +
                          dtype_name(t.dtype()) + "), the manifest lists " + std::to_string(k) + " labels");
      SlotPrediction p;
      p.slot = slot_names()[s];
      const float* v = t.data<float>();
      p.logits.assign(v, v + k);
      for (int64_t i = 0; i < k; ++i)
        if (!std::isfinite(v[i]))
          throw Error(m.dir + ": the model produced a non-finite " + p.slot + " logit (" + std::to_string(v[i]) + ")");
      int64_t best = 0;
      for (int64_t i = 1; i < k; ++i)
        if (v[i] > v[best]) best = i;
      // Softmax in double with the maximum subtracted: no overflow, and the
      // best label's exp(0) = 1 keeps the sum >= 1.
      std::vector<double> e(static_cast<size_t>(k));
      double sum = 0;
      for (int64_t i = 0; i < k; ++i) sum += e[size_t(i)] = std::exp(double(v[i]) - double(v[best]));
      p.probabilities.resize(size_t(k));
      log_probs[s].resize(size_t(k));
      for (int64_t i = 0; i < k; ++i) {
        const double q = e[size_t(i)] / sum;
        p.probabilities[size_t(i)] = float(q);
        // As the Python API: log of the (double) probability, floored at 1e-300.
        log_probs[s][size_t(i)] = std::log(std::max(q, 1e-300));
      }
      p.index = best;
      r.slots.push_back(std::move(p));
    }
  }
  if (!m.intent_at.empty()) {
    // Joint decoding: the valid intent with the highest summed log-probability
    // (strictly higher replaces: the first in list order wins ties).
    size_t chosen = 0;
    double top = -INFINITY;
    for (size_t j = 0; j < m.intent_at.size(); ++j) {
      const std::array<size_t, 3>& at = m.intent_at[j];
      const double score = log_probs[0][at[0]] + log_probs[1][at[1]] + log_probs[2][at[2]];
      if (score > top) {
        top = score;
        chosen = j;
      }
    }
    for (size_t s = 0; s < r.slots.size(); ++s) r.slots[s].index = int64_t(m.intent_at[chosen][s]);
    r.joint = true;
  }
  for (size_t s = 0; s < r.slots.size(); ++s) {
    SlotPrediction& p = r.slots[s];
    p.label = m.labels[s][size_t(p.index)];
    p.probability = p.probabilities[size_t(p.index)];
  }
  // Activations scale with the utterance: keeping them pooled would hold the
  // longest utterance's peak for the Understander's life (the outputs are
  // released above, so the pool is left empty).
  m.graph->trim_pool();
  return r;
}

int64_t Understander::sample_rate() const { return kSampleRate; }
int64_t Understander::min_samples() const { return impl_->min_samples; }
int64_t Understander::max_samples() const { return impl_->max_samples; }
double Understander::max_seconds() const { return impl_->max_seconds; }
int Understander::threads() const { return impl_->options.threads; }

const std::vector<std::string>& Understander::labels(const std::string& slot) const {
  for (size_t s = 0; s < slot_names().size(); ++s)
    if (slot_names()[s] == slot) return impl_->labels[s];
  throw ArgumentError("no slot named '" + slot + "' (slots: action, object, location)");
}

const std::vector<std::array<std::string, 3>>& Understander::intents() const { return impl_->intents; }

void Understander::enable_profiling(bool on) { impl_->graph->enable_profiling(on); }
std::vector<Executor::OpTime> Understander::profile() const { return impl_->graph->profile(); }
BufferPool::Stats Understander::pool_stats() const { return impl_->graph->pool_stats(); }

}  // namespace ondevice
