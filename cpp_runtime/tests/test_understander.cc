// The native speech-intent recognizer (ondevice::Understander) on an exported
// SLU model directory: results (joint decoding over the manifest's valid
// intents, per-slot arg max without them), determinism, threads, input checks,
// corrupt model directories. (Its logits against onnxruntime's: tests/test_native_understander.py.)
//
// The model: $ONDEVICE_TEST_SLU_DIR when set (an export_slu directory; the test
// fails if it is not one), else the shipped models/slu-intent-bcq/onnx. When
// neither exists the tests print a SKIP line and pass.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ondevice/error.h"
#include "ondevice/executor.h"
#include "ondevice/resample.h"
#include "ondevice/understander.h"
#include "test_util.h"

using namespace ondevice;

namespace {

const char* const kShippedSlu = "models/slu-intent-bcq/onnx";
const char* const kSluFiles[] = {"manifest.json", "understand.onnx", "weights.bin"};

std::string slu_dir() {
  if (const char* env = std::getenv("ONDEVICE_TEST_SLU_DIR"); env != nullptr && *env != '\0') {
    std::ifstream probe(std::string(env) + "/manifest.json");
    CHECK_MSG(probe.good(), "ONDEVICE_TEST_SLU_DIR=" << env << " has no manifest.json");
    return env;
  }
  const std::string m = testing::repo_file(std::string(kShippedSlu) + "/manifest.json");
  return m.empty() ? "" : m.substr(0, m.size() - std::strlen("/manifest.json"));
}

#define NEED_SLU(dir)                                                                                   \
  const std::string dir = slu_dir();                                                                    \
  if (dir.empty()) {                                                                                    \
    std::printf("  *** SKIP: no speech model: %s is not in this checkout and ONDEVICE_TEST_SLU_DIR is " \
                "unset ***\n", kShippedSlu);                                                            \
    return;                                                                                             \
  }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// A copy of the model directory in a fresh temporary one (to corrupt it);
// removed by the destructor.
struct ModelCopy {
  std::string dir;
  explicit ModelCopy(const std::string& from) {
    char tmpl[] = "/tmp/ondevice_slu_test_XXXXXX";
    dir = ::mkdtemp(tmpl);
    for (const char* f : kSluFiles) write_file(dir + "/" + f, read_file(from + "/" + f));
  }
  ~ModelCopy() {
    for (const char* f : kSluFiles) std::remove((dir + "/" + f).c_str());
    std::remove(dir.c_str());
  }
  std::string path(const char* f) const { return dir + "/" + f; }
  // Replaces the first `from` in the manifest by `to`.
  void edit_manifest(const std::string& from, const std::string& to) const {
    std::string m = read_file(path("manifest.json"));
    const size_t at = m.find(from);
    CHECK_MSG(at != std::string::npos, "manifest has no " << from);
    m.replace(at, from.size(), to);
    write_file(path("manifest.json"), m);
  }
};

// Deterministic test audio: a chirp plus noise, `seconds` long at 16 kHz.
std::vector<float> test_audio(double seconds, uint32_t seed) {
  const double pi = 3.14159265358979323846;
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.05f);
  std::vector<float> a(size_t(seconds * 16000));
  for (size_t i = 0; i < a.size(); ++i) {
    const double t = double(i) / 16000;
    a[i] = float(0.4 * std::sin(2 * pi * (200 + 300 * t) * t)) + noise(rng);
  }
  return a;
}

// The JSON text of a string (labels are plain text; quotes and backslashes escaped).
std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string json_intents(const std::vector<std::array<std::string, 3>>& intents) {
  std::string out = "[";
  for (size_t i = 0; i < intents.size(); ++i)
    out += std::string(i ? ", " : "") + "[" + json_string(intents[i][0]) + ", " + json_string(intents[i][1]) + ", " +
           json_string(intents[i][2]) + "]";
  return out + "]";
}

// Sets the manifest's top-level `key` to the JSON text `value` (an entry it had
// is renamed away, to a key the runtime ignores); "" leaves none.
void set_manifest_key(const ModelCopy& c, const std::string& key, const std::string& value) {
  static int renamed = 0;
  std::string m = read_file(c.path("manifest.json"));
  const std::string quoted = "\"" + key + "\"";
  const size_t old = m.find(quoted + ":");
  if (old != std::string::npos) m.replace(old, quoted.size(), "\"" + key + "_unused_" + std::to_string(++renamed) + "\"");
  if (!value.empty()) {
    const size_t brace = m.find('{');
    CHECK(brace != std::string::npos);
    m.insert(brace + 1, quoted + ": " + value + ", ");
  }
  write_file(c.path("manifest.json"), m);
}

void set_intents(const ModelCopy& c, const std::string& value) { set_manifest_key(c, "intents", value); }

// Each slot's log-probabilities from its logits, computed here independently
// of the runtime: log of the softmax in double, floored at 1e-300 (the Python
// API's ondevice.slu.intents.best_valid_intent on np.log(np.maximum(p, 1e-300))).
std::vector<double> log_probs(const std::vector<float>& logits) {
  double top = -INFINITY;
  for (float v : logits) top = std::max(top, double(v));
  double z = 0;
  for (float v : logits) z += std::exp(double(v) - top);
  std::vector<double> out;
  for (float v : logits) out.push_back(std::log(std::max(std::exp(double(v) - top) / z, 1e-300)));
  return out;
}

// The index in `intents` of the best valid intent for the result's logits
// (the first of equal sums), and that sum.
std::pair<size_t, double> best_intent(const IntentResult& r, const Understander& u,
                                      const std::vector<std::array<std::string, 3>>& intents) {
  std::vector<std::vector<double>> lp;
  for (const SlotPrediction& p : r.slots) lp.push_back(log_probs(p.logits));
  size_t best = 0;
  double top = -INFINITY;
  for (size_t j = 0; j < intents.size(); ++j) {
    double sum = 0;
    for (size_t s = 0; s < 3; ++s) {
      const std::vector<std::string>& labels = u.labels(Understander::slot_names()[s]);
      const auto it = std::find(labels.begin(), labels.end(), intents[j][s]);
      CHECK_MSG(it != labels.end(), intents[j][s]);
      sum += lp[s][size_t(it - labels.begin())];
    }
    if (sum > top) {
      top = sum;
      best = j;
    }
  }
  return {best, top};
}

// The result's labels are the best of `intents` (independently computed; a
// different choice is accepted only for a sum equal to 1e-12), each score is
// its label's probability.
void check_joint(const IntentResult& r, const Understander& u, const std::vector<std::array<std::string, 3>>& intents) {
  CHECK(r.joint);
  const auto [best, top] = best_intent(r, u, intents);
  const std::array<std::string, 3> got = {r.action().label, r.object().label, r.location().label};
  const auto at = std::find(intents.begin(), intents.end(), got);
  CHECK_MSG(at != intents.end(), got[0] << "_" << got[1] << "_" << got[2] << " is not a valid intent");
  if (size_t(at - intents.begin()) != best) {
    std::vector<std::array<std::string, 3>> one = {got};
    const double sum = best_intent(r, u, one).second;
    CHECK_MSG(std::fabs(sum - top) <= 1e-12, got[0] << "_" << got[1] << "_" << got[2] << " (" << sum << ") instead of "
                                                   << intents[best][0] << "_" << intents[best][1] << "_"
                                                   << intents[best][2] << " (" << top << ")");
  }
  for (const SlotPrediction& p : r.slots) {
    const std::vector<std::string>& labels = u.labels(p.slot);
    CHECK(p.index >= 0 && size_t(p.index) < labels.size() && labels[size_t(p.index)] == p.label);
    CHECK(p.probability == p.probabilities[size_t(p.index)]);
  }
}

// Each label is its slot's arg max (the first on ties).
void check_argmax(const IntentResult& r) {
  CHECK(!r.joint);
  for (const SlotPrediction& p : r.slots) {
    const auto best = std::max_element(p.logits.begin(), p.logits.end());
    CHECK_MSG(p.index == best - p.logits.begin(), p.slot);
    CHECK(p.probability == *std::max_element(p.probabilities.begin(), p.probabilities.end()));
  }
}

bool same_result(const IntentResult& a, const IntentResult& b) {
  if (a.slots.size() != b.slots.size() || a.joint != b.joint) return false;
  for (size_t s = 0; s < a.slots.size(); ++s) {
    const SlotPrediction &x = a.slots[s], &y = b.slots[s];
    if (x.slot != y.slot || x.label != y.label || x.index != y.index || x.logits.size() != y.logits.size() ||
        std::memcmp(x.logits.data(), y.logits.data(), x.logits.size() * sizeof(float)) != 0 ||
        std::memcmp(&x.probability, &y.probability, sizeof(float)) != 0)
      return false;
  }
  return true;
}

template <typename E, typename F>
std::string message_of(F f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "(nothing thrown)";
}

}  // namespace

TEST(understander_results_are_consistent_and_deterministic) {
  NEED_SLU(dir);
  const Understander u(dir);
  CHECK(u.sample_rate() == 16000);
  CHECK(u.min_samples() >= 1 && u.min_samples() <= u.max_samples());
  CHECK(u.max_samples() == int64_t(std::floor(u.max_seconds() * 16000)));
  CHECK(Understander::slot_names() == (std::vector<std::string>{"action", "object", "location"}));
  CHECK_THROWS(u.labels("intent"), ArgumentError);
  for (double secs : {0.5, 1.7, 3.0}) {
    const std::vector<float> audio = test_audio(secs, 7);
    const IntentResult r = u.understand(audio);
    CHECK(r.slots.size() == 3);
    for (size_t s = 0; s < 3; ++s) {
      const SlotPrediction& p = r.slots[s];
      const std::vector<std::string>& labels = u.labels(p.slot);
      CHECK(p.slot == Understander::slot_names()[s]);
      CHECK(&r.slot(p.slot) == &p);
      CHECK_MSG(p.logits.size() == labels.size() && p.probabilities.size() == labels.size(), p.slot);
      CHECK(p.label == labels[size_t(p.index)]);
      CHECK(p.probability == p.probabilities[size_t(p.index)]);
      const auto best = std::max_element(p.logits.begin(), p.logits.end());
      // Probabilities: the softmax of the logits, summing to 1.
      double sum = 0, z = 0;
      for (float v : p.logits) z += std::exp(double(v) - double(*best));
      for (size_t i = 0; i < labels.size(); ++i) {
        const double want = std::exp(double(p.logits[i]) - double(*best)) / z;
        CHECK_MSG(std::fabs(p.probabilities[i] - want) <= 1e-6, p.slot << " " << i);
        CHECK(p.probabilities[i] >= 0.0f && p.probabilities[i] <= 1.0f);
        sum += p.probabilities[i];
      }
      CHECK_MSG(std::fabs(sum - 1.0) < 1e-5, p.slot << " sums to " << sum);
    }
    // The labels: the best valid intent when the manifest lists them, else each slot's arg max.
    CHECK(r.joint == u.joint_decoding());
    if (u.joint_decoding()) {
      check_joint(r, u, u.intents());
    } else {
      check_argmax(r);
      for (const SlotPrediction& p : r.slots) CHECK(p.probability >= 1.0f / float(p.logits.size()) - 1e-6f);
    }
    CHECK(&r.action() == &r.slots[0] && &r.location() == &r.slots[2]);
    // The same input gives the same bits, call after call.
    for (int i = 0; i < 2; ++i) CHECK(same_result(u.understand(audio), r));
    // The level does not matter much (the graph standardizes the utterance).
    std::vector<float> louder = audio;
    for (float& v : louder) v *= 2.0f;
    const IntentResult l = u.understand(louder);
    for (size_t s = 0; s < 3; ++s)
      for (size_t i = 0; i < l.slots[s].logits.size(); ++i)
        CHECK(std::fabs(l.slots[s].logits[i] - r.slots[s].logits[i]) <= 1e-2f * (1 + std::fabs(r.slots[s].logits[i])));
  }
  // Silence is accepted (the model's guess); so are the shortest input and constant input.
  CHECK(u.understand(std::vector<float>(16000, 0.0f)).slots.size() == 3);
  CHECK(u.understand(std::vector<float>(size_t(u.min_samples()), 0.25f)).slots.size() == 3);
  // Between calls the pool keeps a short utterance's buffers (the next call allocates nothing new)
  // and nothing after a call that left more than kUnderstanderPoolKeepBytes.
  u.understand(test_audio(2.0, 1));
  const BufferPool::Stats kept = u.pool_stats();
  CHECK_MSG(kept.bytes_held > 0 && kept.bytes_held <= kUnderstanderPoolKeepBytes, kept.bytes_held << " bytes held");
  u.understand(test_audio(2.0, 2));
  CHECK(u.pool_stats().heap_allocations == kept.heap_allocations && u.pool_stats().bytes_held == kept.bytes_held);
  u.understand(test_audio(20.0, 3));
  CHECK_MSG(u.pool_stats().bytes_held == 0, u.pool_stats().bytes_held << " bytes held after 20 s");
}

TEST(understander_decodes_jointly_over_the_manifests_intents) {
  NEED_SLU(dir);
  const Understander original(dir);
  const std::vector<std::string>&actions = original.labels("action"), &objects = original.labels("object"),
        &locations = original.labels("location");
  std::vector<std::array<std::string, 3>> all;  // every combination, in label order
  for (const std::string& a : actions)
    for (const std::string& o : objects)
      for (const std::string& l : locations) all.push_back({a, o, l});
  const ModelCopy c(dir);
  std::vector<std::vector<float>> inputs;
  for (uint32_t i = 0; i < 4; ++i) inputs.push_back(test_audio(0.5 + 0.6 * i, 20 + i));
  inputs.push_back(std::vector<float>(8000, 0.0f));  // silence
  // Without "intents" (an older export): each slot is its own arg max.
  set_intents(c, "");
  std::vector<IntentResult> argmax;
  {
    const Understander u(c.dir);
    CHECK(!u.joint_decoding() && u.intents().empty());
    for (const auto& a : inputs) {
      argmax.push_back(u.understand(a));
      check_argmax(argmax.back());
    }
  }
  // Every combination valid: the same labels as the arg max (the sum separates).
  set_intents(c, json_intents(all));
  {
    const Understander u(c.dir);
    CHECK(u.joint_decoding() && u.intents() == all);
    for (size_t i = 0; i < inputs.size(); ++i) {
      const IntentResult r = u.understand(inputs[i]);
      check_joint(r, u, all);
      for (size_t s = 0; s < 3; ++s) {
        CHECK(r.slots[s].label == argmax[i].slots[s].label);
        CHECK(std::memcmp(r.slots[s].logits.data(), argmax[i].slots[s].logits.data(),
                          r.slots[s].logits.size() * sizeof(float)) == 0);
      }
    }
  }
  // Lists without the arg max combinations: the chosen intent is the best of the
  // rest, computed here from the logits, and differs from the arg max.
  std::mt19937 rng(5);
  for (int variant = 0; variant < 3; ++variant) {
    std::vector<std::array<std::string, 3>> valid;
    for (const auto& it : all) {
      bool is_argmax = false;
      for (const IntentResult& r : argmax)
        is_argmax |= it == std::array<std::string, 3>{r.action().label, r.object().label, r.location().label};
      // variant 0: everything else; 1 and 2: a random third of it, shuffled.
      if (!is_argmax && (variant == 0 || rng() % 3 == 0)) valid.push_back(it);
    }
    if (variant > 0) std::shuffle(valid.begin(), valid.end(), rng);
    if (valid.empty()) valid.push_back(all.back());
    set_intents(c, json_intents(valid));
    const Understander u(c.dir);
    CHECK(u.intents() == valid);
    for (size_t i = 0; i < inputs.size(); ++i) {
      const IntentResult r = u.understand(inputs[i]);
      check_joint(r, u, valid);
      bool differs = false;
      for (size_t s = 0; s < 3; ++s) differs |= r.slots[s].label != argmax[i].slots[s].label;
      CHECK_MSG(differs, "variant " << variant << " input " << i);
      CHECK(same_result(u.understand(inputs[i]), r));
    }
  }
  // One valid intent: always that one.
  set_intents(c, json_intents({all[all.size() / 2]}));
  {
    const Understander u(c.dir);
    for (const auto& a : inputs) {
      const IntentResult r = u.understand(a);
      check_joint(r, u, {all[all.size() / 2]});
      CHECK(r.location().label == all[all.size() / 2][2]);
    }
  }
}

TEST(understander_rejects_malformed_intents) {
  NEED_SLU(dir);
  const Understander original(dir);
  const std::string a = json_string(original.labels("action")[0]), o = json_string(original.labels("object")[0]),
                    l = json_string(original.labels("location")[0]);
  const std::string good = "[" + a + ", " + o + ", " + l + "]";
  const std::pair<std::string, const char*> cases[] = {
      {"[]", "no intents"},
      {"{\"x\": 1}", "expected"},                                 // not a list
      {"[\"" + std::string("x_y_z") + "\"]", "expected"},          // an entry that is not a list
      {"[[" + a + ", " + o + "]]", "3 labels"},                     // too few labels
      {"[[" + a + ", " + o + ", " + l + ", " + l + "]]", "3 labels"},  // too many
      {"[[" + a + ", 1, " + l + "]]", "expected"},                 // a label that is not a string
      {"[[" + a + ", " + o + ", \"no such room\"]]", "not one of the location labels"},
      {"[[\"no such action\", " + o + ", " + l + "]]", "not one of the action labels"},
      {"[" + good + ", " + good + "]", "duplicate intent"},
      {"null", "expected"},
  };
  UnderstanderOptions no_check;
  no_check.verify_checksums = false;
  for (const auto& [value, what] : cases) {
    const ModelCopy c(dir);
    set_intents(c, value);
    for (const UnderstanderOptions& options : {UnderstanderOptions(), no_check}) {
      const std::string msg = message_of<FormatError>([&] { Understander x(c.dir, options); });
      CHECK_MSG(msg.find(c.path("manifest.json")) != std::string::npos && msg.find("/intents") != std::string::npos &&
                    msg.find(what) != std::string::npos,
                value << ": " << msg);
    }
  }
  // The copy with a well-formed list loads (manifest.json itself has no checksum to break).
  const ModelCopy c(dir);
  set_intents(c, "[" + good + "]");
  CHECK(Understander(c.dir).intents().size() == 1);
}

void set_ensemble_rates(const ModelCopy& c, const std::string& value) {
  set_manifest_key(c, "ensemble_rates", value);
}

constexpr double kPi = 3.14159265358979323846;

TEST(resample_keeps_length_level_and_frequency) {
  // (Equality with ondevice.slu.audio.resample: tests/test_native_understander.py.)
  for (const auto& [from, to] : std::vector<std::pair<int64_t, int64_t>>{{16000, 15000}, {16000, 17000}, {44100, 16000},
                                                                          {8000, 16000}, {16000, 16000}}) {
    for (size_t n : {size_t(1), size_t(37), size_t(16001)}) {
      std::vector<float> x(n);
      for (size_t i = 0; i < n; ++i) x[i] = float(0.5 * std::sin(2 * kPi * 440.0 * double(i) / double(from)));
      const std::vector<float> y = resample(x.data(), n, from, to);
      CHECK_MSG(y.size() == size_t((int64_t(n) * to + from - 1) / from), from << "->" << to << " n=" << n);
      if (n < 16000) continue;
      // Away from the ends (the filter's reach), a 440 Hz sine at the new rate.
      double err = 0;
      for (size_t j = 200; j + 200 < y.size(); ++j)
        err = std::max(err, std::fabs(double(y[j]) - 0.5 * std::sin(2 * kPi * 440.0 * double(j) / double(to))));
      CHECK_MSG(err < 2e-3, from << "->" << to << " error " << err);
    }
  }
  CHECK(resample(nullptr, 0, 16000, 15000).empty());
  CHECK_THROWS(resample(nullptr, 3, 16000, 15000), ArgumentError);
  const float one = 1;
  CHECK_THROWS(resample(&one, 1, 0, 15000), ArgumentError);
}

TEST(understander_speed_ensemble_runs_the_manifests_rates) {
  NEED_SLU(dir);
  const ModelCopy c(dir);
  set_ensemble_rates(c, "[16000, 15000, 17000]");
  UnderstanderOptions off;
  off.speed_ensemble = false;
  const Understander on(c.dir), single(c.dir, off);
  CHECK(on.speed_ensemble() && !single.speed_ensemble());
  CHECK(on.ensemble_rates() == (std::vector<int64_t>{16000, 15000, 17000}));
  set_ensemble_rates(c, "");
  const Understander plain(c.dir);
  CHECK(plain.ensemble_rates().empty() && !plain.speed_ensemble());
  for (double secs : {0.6, 2.0}) {
    const std::vector<float> audio = test_audio(secs, 11);
    const IntentResult e = on.understand(audio), s = single.understand(audio), p = plain.understand(audio);
    for (size_t k = 0; k < 3; ++k) {
      CHECK(s.slots[k].logits == p.slots[k].logits);  // option off = no ensemble in the manifest
      // The ensemble's logits are mean log-probabilities: each <= 0, their exps sum to <= 1.
      double sum = 0;
      for (float v : e.slots[k].logits) {
        CHECK(v <= 1e-6f);
        sum += std::exp(double(v));
      }
      CHECK_MSG(sum > 0 && sum <= 1 + 1e-5, sum);
      CHECK(e.slots[k].logits != s.slots[k].logits);
    }
  }
  const std::pair<std::string, const char*> bad[] = {
      {"[]", "16000"}, {"[15000]", "16000"}, {"[16000, 16000]", "duplicate"}, {"[16000, 40000]", "outside"},
      {"\"16000\"", "expected"}};
  for (const auto& [value, what] : bad) {
    set_ensemble_rates(c, value);
    const std::string msg = message_of<FormatError>([&] { Understander x(c.dir); });
    CHECK_MSG(msg.find("ensemble_rates") != std::string::npos && msg.find(what) != std::string::npos,
              value << ": " << msg);
  }
}

TEST(understander_kernels_agree) {
  // The kernels agree to rounding, but the tokenizer decides each frame's codeword by an argmax, so
  // a rounding-sized difference at a near-tie flips a token and moves the logits by more than
  // rounding (measured on the session-12 model, 48 synthetic inputs: 46 within 5e-4 of the largest
  // logit, two 2-second ones 0.04 and 0.09 after a flip; these three 1-second ones within 4e-5). So:
  // every input decodes to the same intent and stays within 5 % of the largest logit, and at least
  // half of them agree to 2e-3 of it.
  NEED_SLU(dir);
  UnderstanderOptions ref;
  ref.kernel = BitplaneKernel::from_name("reference");
  const Understander exact(dir, ref), fast(dir);
  const uint32_t inputs = 3;  // 1-second inputs: the reference kernel takes ~7 s per call
  uint32_t tight = 0;
  for (uint32_t seed = 1; seed <= inputs; ++seed) {
    const std::vector<float> audio = test_audio(1.0, seed);
    const IntentResult a = exact.understand(audio), b = fast.understand(audio);
    float worst = 0;
    for (size_t s = 0; s < 3; ++s) {
      CHECK_MSG(a.slots[s].label == b.slots[s].label, seed << " " << a.slots[s].slot);
      float scale = 1;
      for (float v : a.slots[s].logits) scale = std::max(scale, std::fabs(v));
      for (size_t i = 0; i < a.slots[s].logits.size(); ++i) {
        const float d = std::fabs(a.slots[s].logits[i] - b.slots[s].logits[i]) / scale;
        CHECK_MSG(d <= 5e-2f, seed << " " << a.slots[s].slot << " " << i << ": " << a.slots[s].logits[i]
                                   << " vs " << b.slots[s].logits[i]);
        worst = std::max(worst, d);
      }
    }
    tight += worst <= 2e-3f;
  }
  CHECK_MSG(tight * 2 >= inputs, tight << " of " << inputs << " inputs agree to 2e-3");
}

TEST(graph_fusion_computes_what_the_nodes_do) {
  // The graph's strided convolutions (Slice, Slice, Concat, BitPlaneMatMul) fused into one step that
  // reads the frame windows in place, and each LayerNormalization -> Relu into one pass: the same
  // bits as the nodes run one by one, on the dense path and on the LUT kernels (which get the
  // windows copied out), for lengths down to those whose later frames run out; and what the unfused
  // graph rejects, the fused one rejects too.
  NEED_SLU(dir);
  for (uint32_t dense_min_rows : {kDefaultDenseMinRows, 0u, 1u}) {
    ExecutorOptions fused, plain;
    fused.kernel.dense_min_rows = plain.kernel.dense_min_rows = dense_min_rows;
    plain.fuse = false;
    Executor a = Executor::load(dir + "/understand.onnx", fused);
    const Executor b = Executor::load(dir + "/understand.onnx", plain);
    a.enable_profiling(true);
    size_t runs = 0;
    for (double seconds : {2.0, 0.61, 0.05, 0.004, 0.0006}) {
      const std::vector<float> audio = test_audio(seconds, 5);
      Tensor in = Tensor::allocate(DType::kFloat32, {1, int64_t(audio.size())}, nullptr);
      std::memcpy(in.mutable_data<float>(), audio.data(), audio.size() * sizeof(float));
      const std::string name = a.input_names()[0];
      std::vector<Tensor> ya, yb;
      std::string ea, eb;
      try { ya = a.run({{name, in}}); ++runs; } catch (const Error& e) { ea = e.what(); }
      try { yb = b.run({{name, in}}); } catch (const Error& e) { eb = e.what(); }
      CHECK_MSG(ea == eb, seconds << " s: '" << ea << "' vs '" << eb << "'");
      CHECK(ya.size() == yb.size());
      for (size_t i = 0; i < ya.size(); ++i)
        CHECK_MSG(ya[i].shape() == yb[i].shape() && ya[i].nbytes() == yb[i].nbytes() &&
                      std::memcmp(ya[i].raw(), yb[i].raw(), ya[i].nbytes()) == 0,
                  seconds << " s, dense from " << dense_min_rows << " rows: output " << i << " differs");
    }
    CHECK(runs >= 3);
    size_t fused_calls = 0, concats = 0, norm_relus = 0, relus = 0;
    for (const Executor::OpTime& t : a.profile()) {
      if (t.op == "ondevice.BitPlaneMatMul (frame windows)") fused_calls = t.calls;
      if (t.op == "Concat") concats = t.calls;
      if (t.op == "LayerNormalization + Relu") norm_relus = t.calls;
      if (t.op == "Relu") relus = t.calls;
    }
    CHECK_MSG(fused_calls == 8 * runs && concats == runs, fused_calls << " fused products, " << concats << " concats");
    // 6 convolutions of the feature encoder and 2 of the BERT; the FFNs' Relus read a MatMul
    CHECK_MSG(norm_relus == 8 * runs && relus == 3 * runs,
              norm_relus << " normalizations + relu, " << relus << " relus, " << runs << " runs");
  }
}

TEST(understander_shared_by_threads_equals_sequential) {
  NEED_SLU(dir);
  UnderstanderOptions o;
  o.threads = 2;
  const Understander u(dir, o);
  std::vector<std::vector<float>> inputs;
  for (uint32_t i = 0; i < 4; ++i) inputs.push_back(test_audio(0.6 + 0.4 * i, 10 + i));
  std::vector<IntentResult> want;
  for (const auto& a : inputs) want.push_back(u.understand(a));
  std::vector<std::vector<IntentResult>> got(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (size_t k = 0; k < 2 * inputs.size(); ++k) got[t].push_back(u.understand(inputs[(k + t) % inputs.size()]));
    });
  for (auto& th : threads) th.join();
  for (size_t t = 0; t < 4; ++t)
    for (size_t k = 0; k < got[t].size(); ++k) CHECK_MSG(same_result(got[t][k], want[(k + t) % inputs.size()]), t << " " << k);
  // Another thread count gives the same bits too.
  o.threads = 1;
  const Understander one(dir, o);
  for (size_t i = 0; i < inputs.size(); ++i) CHECK(same_result(one.understand(inputs[i]), want[i]));
  o.threads = 0;  // one per hardware thread
  CHECK(Understander(dir, o).threads() >= 1);
}

TEST(understander_rejects_bad_audio_with_clear_messages) {
  NEED_SLU(dir);
  const Understander u(dir);
  const size_t lo = size_t(u.min_samples()), hi = size_t(u.max_samples());
  std::vector<float> shorty(lo - 1, 0.1f);
  std::string msg = message_of<ArgumentError>([&] { u.understand(shorty); });
  CHECK_MSG(msg.find("audio too short: " + std::to_string(lo - 1) + " samples, at least " + std::to_string(lo)) == 0, msg);
  CHECK_MSG(msg.find(" s)") != std::string::npos, msg);
  CHECK_THROWS(u.understand(nullptr, 0), ArgumentError);
  CHECK_THROWS(u.understand(std::vector<float>{}), ArgumentError);
  std::vector<float> longy(hi + 1, 0.1f);
  msg = message_of<ArgumentError>([&] { u.understand(longy); });
  CHECK_MSG(msg.find("audio too long: " + std::to_string(hi + 1) + " samples") == 0, msg);
  CHECK_THROWS(u.understand(nullptr, lo), ArgumentError);
  std::vector<float> audio = test_audio(1.0, 2);
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    std::vector<float> a = audio;
    a[1234] = bad;
    msg = message_of<ArgumentError>([&] { u.understand(a); });
    CHECK_MSG(msg.find("audio sample 1234 is ") == 0, msg);
  }
  // Finite but beyond any PCM scale: refused, not overflowed inside the level normalisation.
  const float limit = 4294967296.0f;  // 2^32
  for (float huge : {3e38f, -5e9f, std::nextafter(limit, 1e38f)}) {
    std::vector<float> a = audio;
    a[77] = huge;
    msg = message_of<ArgumentError>([&] { u.understand(a); });
    CHECK_MSG(msg.find("audio sample 77 is ") == 0 && msg.find("beyond +-2^32") != std::string::npos, msg);
  }
  {  // the limit itself still runs (the level does not matter to the model)
    std::vector<float> a = audio;
    for (float& x : a) x *= 2147483648.0f;
    a[77] = -limit;
    CHECK(u.understand(a).slots.size() == 3);
  }
  // Still fine afterwards.
  CHECK(u.understand(audio).slots.size() == 3);
}

TEST(understander_rejects_corrupt_model_directories) {
  NEED_SLU(dir);
  CHECK_THROWS(Understander("/nonexistent/slu"), FormatError);
  UnderstanderOptions bad_threads;
  bad_threads.threads = -1;
  CHECK_THROWS(Understander(dir, bad_threads), ArgumentError);
  UnderstanderOptions no_check;
  no_check.verify_checksums = false;
  {
    const ModelCopy c(dir);
    CHECK(Understander(c.dir).understand(test_audio(0.5, 1)).slots.size() == 3);  // the copy itself loads
    std::string w = read_file(c.path("weights.bin"));
    w[w.size() / 2] = char(w[w.size() / 2] ^ 0x10);
    write_file(c.path("weights.bin"), w);
    const std::string msg = message_of<FormatError>([&] { Understander x(c.dir); });
    CHECK_MSG(msg.find("weights.bin") != std::string::npos && msg.find("sha256") != std::string::npos, msg);
    // Without checksums a flipped bit may load or be rejected by the matrix checks; never a crash.
    try {
      Understander(c.dir, no_check).understand(test_audio(0.5, 1));
    } catch (const Error&) {
    }
  }
  {
    const ModelCopy c(dir);
    write_file(c.path("weights.bin"), "short");
    CHECK_THROWS(Understander(c.dir), FormatError);
    CHECK_THROWS(Understander(c.dir, no_check), FormatError);  // sizes are always checked
  }
  {
    const ModelCopy c(dir);
    const std::string g = read_file(c.path("understand.onnx"));
    write_file(c.path("understand.onnx"), std::string(g.size(), 'x'));  // same size, not a model
    CHECK_THROWS(Understander(c.dir), FormatError);
    CHECK_THROWS(Understander(c.dir, no_check), FormatError);
  }
  {
    const ModelCopy c(dir);
    write_file(c.path("manifest.json"), "{\"format\": \"ondevice-onnx-model\"");
    CHECK_THROWS(Understander(c.dir), FormatError);
  }
  const std::pair<const char*, const char*> edits[] = {
      {"\"slu-intent\"", "\"nmt-transformer\""},   // another kind of model
      {"\"ondevice-onnx-model\"", "\"onnx\""},      // another format
      {"\"1.0\"", "\"2.0\""},                       // a future format version
      {"\"sample_rate\": 16000", "\"sample_rate\": 8000"},  // another sample rate
      {"\"min_samples\"", "\"min_samplez\""},       // a missing key
      {"\"location\": [", "\"room\": ["},           // a slot renamed
      {"\"action\": [", "\"action\": [1, "},        // a label that is not a string
      {"\"location_logits\"", "\"where_logits\""},  // an output the graph lacks
      {"\"audio\"", "\"pcm\""},                     // an input the graph lacks
      {"\"understand.onnx\"", "\"../understand.onnx\""},  // a path outside the directory
  };
  for (const auto& e : edits) {
    const ModelCopy c(dir);
    c.edit_manifest(e.first, e.second);
    const std::string msg = message_of<FormatError>([&] { Understander x(c.dir); });
    CHECK_MSG(msg.find(c.dir) != std::string::npos, e.first << " -> " << e.second << ": " << msg);
  }
}
