// The native speech-intent recognizer (include/ondevice/understander.h).
#include "ondevice/understander.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <thread>

#include "ondevice/error.h"
#include "ondevice/json.h"
#include "ondevice/resample.h"
#include "model_dir.h"

namespace ondevice {

namespace {

constexpr int64_t kSampleRate = 16000;
// 2^32: twice the scale of 32-bit integer PCM. The Python reader refuses beyond 2^31 at the file's
// rate; resampling to 16 kHz may ring a few percent past that, which must still run here.
constexpr float kMaxAbsSample = 4294967296.0f;
constexpr int64_t kMinEnsembleRate = 12000, kMaxEnsembleRate = 24000;  // ondevice.slu.export.ENSEMBLE_*_RATE

// log softmax in double with the maximum subtracted.
void add_log_softmax(const std::vector<float>& v, std::vector<double>& acc) {
  const double top = double(*std::max_element(v.begin(), v.end()));
  double sum = 0;
  for (float x : v) sum += std::exp(double(x) - top);
  const double lse = top + std::log(sum);
  for (size_t i = 0; i < v.size(); ++i) acc[i] += double(v[i]) - lse;
}

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g s", s);
  return buf;
}

std::string short_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
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
  std::vector<int64_t> ensemble_rates;  // the manifest's "ensemble_rates" (empty: none)

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
    if (const JsonValue* list = m.find("ensemble_rates")) {
      // The speed ensemble: understand() also runs the utterance resampled
      // to each rate (see understander.h).
      for (const JsonValue& r : list->as_array()) {
        const int64_t rate = r.as_int();
        if (rate < kMinEnsembleRate || rate > kMaxEnsembleRate)
          throw FormatError(r.describe_location() + ": ensemble rate " + std::to_string(rate) + " is outside " +
                            std::to_string(kMinEnsembleRate) + ".." + std::to_string(kMaxEnsembleRate));
        if (std::find(ensemble_rates.begin(), ensemble_rates.end(), rate) != ensemble_rates.end())
          throw FormatError(r.describe_location() + ": duplicate ensemble rate " + std::to_string(rate));
        ensemble_rates.push_back(rate);
      }
      if (std::find(ensemble_rates.begin(), ensemble_rates.end(), kSampleRate) == ensemble_rates.end())
        throw FormatError(list->describe_location() + ": the ensemble rates must include 16000 (the audio as it is)");
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
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(pcm[i]))
      throw ArgumentError("audio sample " + std::to_string(i) + " is " + (std::isnan(pcm[i]) ? "NaN" : "infinite") +
                          " (every sample must be finite)");
    // No PCM encoding goes far beyond 2^31, and the graph's level normalisation squares the
    // samples: such values would overflow float32 inside the model instead of being refused here.
    if (std::fabs(pcm[i]) > kMaxAbsSample)
      throw ArgumentError("audio sample " + std::to_string(i) + " is " + short_number(pcm[i]) +
                          ", beyond +-2^32 (float audio is expected in [-1, 1])");
  }
  // One run per ensemble rate (just the audio as it is without an ensemble).
  const bool ensemble = m.options.speed_ensemble && m.ensemble_rates.size() > 1;
  const std::vector<int64_t> rates = ensemble ? m.ensemble_rates : std::vector<int64_t>{kSampleRate};
  std::array<std::vector<float>, 3> logits;     // per slot: the graph's, or the ensemble's mean log-probabilities
  std::array<std::vector<double>, 3> mean_lp;   // per slot: sum of the members' log-softmax
  for (size_t s = 0; s < slot_names().size(); ++s) mean_lp[s].assign(m.labels[s].size(), 0.0);
  int members = 0;
  for (const int64_t rate : rates) {
    std::vector<float> warped;
    const float* x = pcm;
    size_t len = n;
    if (rate != kSampleRate) {
      warped = resample(pcm, n, kSampleRate, rate);
      if (warped.size() < size_t(m.min_samples) || warped.size() > size_t(m.max_samples)) continue;
      x = warped.data();
      len = warped.size();
    }
    const Tensor audio = Tensor::borrowed(DType::kFloat32, {1, int64_t(len)}, x, nullptr);
    const std::vector<Tensor> out = m.graph->run({{m.input_name, audio}});
    for (size_t s = 0; s < slot_names().size(); ++s) {
      const Tensor& t = out[m.output_at[s]];
      const int64_t k = int64_t(m.labels[s].size());
      if (t.dtype() != DType::kFloat32 || t.numel() != k || t.rank() == 0 || t.dim(t.rank() - 1) != k)
        throw FormatError(m.dir + ": the " + slot_names()[s] + " logits have shape " + shape_string(t.shape()) + " (" +
                          dtype_name(t.dtype()) + "), the manifest lists " + std::to_string(k) + " labels");
      const float* v = t.data<float>();
      for (int64_t i = 0; i < k; ++i)
        if (!std::isfinite(v[i]))
          throw FormatError(m.dir + ": the model produced a non-finite " + slot_names()[s] + " logit (" +
                            short_number(v[i]) + "): the model file is corrupt");
      logits[s].assign(v, v + k);
      if (ensemble) add_log_softmax(logits[s], mean_lp[s]);
    }
    ++members;
  }
  if (ensemble)  // members >= 1: the audio as it is always runs
    for (size_t s = 0; s < slot_names().size(); ++s)
      for (size_t i = 0; i < logits[s].size(); ++i) logits[s][i] = float(mean_lp[s][i] / members);
  Result r;
  std::array<std::vector<double>, 3> log_probs;  // per slot, for joint decoding
  for (size_t s = 0; s < slot_names().size(); ++s) {
    SlotPrediction p;
    p.slot = slot_names()[s];
    p.logits = std::move(logits[s]);
    const std::vector<float>& v = p.logits;
    const int64_t k = int64_t(v.size());
    int64_t best = 0;
    for (int64_t i = 1; i < k; ++i)
      if (v[size_t(i)] > v[size_t(best)]) best = i;
    // Softmax in double with the maximum subtracted: no overflow, and the
    // best label's exp(0) = 1 keeps the sum >= 1.
    std::vector<double> e(static_cast<size_t>(k));
    double sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += e[size_t(i)] = std::exp(double(v[size_t(i)]) - double(v[size_t(best)]));
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
  // Activations scale with the utterance: keeping every one pooled would hold
  // the longest utterance's peak for the Understander's life, and freeing all
  // of them made the next call fault fresh pages in (~1 ms of ~6 for 2 s of
  // audio). So the buffers stay pooled up to kUnderstanderPoolKeepBytes (a
  // ~7 s utterance's) and a call that leaves more frees them all (the outputs
  // are released above: every pooled buffer is free here).
  if (m.graph->pool_stats().bytes_free > kUnderstanderPoolKeepBytes) m.graph->trim_pool();
  return r;
}

int64_t Understander::sample_rate() const { return kSampleRate; }
int64_t Understander::min_samples() const { return impl_->min_samples; }
int64_t Understander::max_samples() const { return impl_->max_samples; }
double Understander::max_seconds() const { return impl_->max_seconds; }
int Understander::threads() const { return impl_->options.threads; }
const std::vector<int64_t>& Understander::ensemble_rates() const { return impl_->ensemble_rates; }
bool Understander::speed_ensemble() const {
  return impl_->options.speed_ensemble && impl_->ensemble_rates.size() > 1;
}

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
