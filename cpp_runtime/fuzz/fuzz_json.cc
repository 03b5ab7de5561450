// Fuzz target: the JSON reader (parse_json) and the walk over the manifest
// fields that Translator reads (src/runtime/translator.cc, Impl::load), with
// the same typed accessors. Any ondevice::Error is an accepted outcome; any
// other exception, crash or sanitizer report is a bug.
//
// Built as a libFuzzer target (ONDEVICE_LIBFUZZER) and linked into the
// regression replay test (fuzz_replay.cc) through fuzz_json().
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "ondevice/error.h"
#include "ondevice/json.h"

namespace {

using ondevice::JsonValue;

// As translator.cc's member(): a plain file name inside the model directory.
void member(const JsonValue& v) {
  const std::string& name = v.as_string();
  if (name.empty() || name.find('/') != std::string::npos || name.find('\\') != std::string::npos ||
      name == "." || name == "..")
    throw ondevice::FormatError(v.describe_location() + ": not a file name");
}

size_t strings(const JsonValue& v) {
  size_t n = 0;
  for (const JsonValue& x : v.as_array()) n += x.as_string().size();
  return n;
}

void walk_manifest(const JsonValue& m) {
  (void)m.at("format").as_string();
  (void)m.at("format_version").as_string();
  (void)m.at("model_kind").as_string();
  (void)m.at("src").as_string();
  (void)m.at("tgt").as_string();
  const JsonValue& ids = m.at("special_ids");
  for (const char* k : {"bos", "pad", "eos"}) (void)int32_t(ids.at(k).as_int());
  (void)m.at("vocab_size").as_int();
  (void)m.at("model_config").at("max_positions").as_int();
  for (const JsonValue& f : m.at("files").as_array()) {
    member(f.at("path"));
    (void)f.at("size").as_int();
    (void)f.at("sha256").as_string();
  }
  const JsonValue& kv = m.at("kv_cache");
  for (const char* k : {"cross_k", "cross_v", "past_self_k", "present_self_k", "past_self_v", "present_self_v"})
    (void)strings(kv.at(k));
  member(m.at("tokenizer"));
  const JsonValue& graphs = m.at("graphs");
  member(graphs.at("encoder").at("file"));
  member(graphs.at("decoder_step").at("file"));
}

// Every value of the document through every accessor that applies (and the
// error paths of those that do not), plus its location string.
void touch_all(const JsonValue& root) {
  std::vector<const JsonValue*> todo{&root};
  size_t visited = 0;
  while (!todo.empty() && visited < 4096) {
    const JsonValue* v = todo.back();
    todo.pop_back();
    ++visited;
    (void)v->path();
    (void)v->describe_location();
    try {
      (void)v->as_int();
    } catch (const ondevice::FormatError&) {
    }
    try {
      (void)v->as_string();
    } catch (const ondevice::FormatError&) {
    }
    if (v->is_array())
      for (const JsonValue& x : v->as_array()) todo.push_back(&x);
    if (v->is_object())
      for (const auto& kv : v->members()) {
        (void)v->find(kv.first);
        todo.push_back(&kv.second);
      }
  }
}

}  // namespace

int fuzz_json(const uint8_t* data, size_t size) {
  JsonValue doc;
  try {
    doc = ondevice::parse_json(std::string_view(reinterpret_cast<const char*>(data), size));
  } catch (const ondevice::Error&) {
    return 0;
  }
  touch_all(doc);
  JsonValue copy = doc;  // copy and move paths
  JsonValue moved = std::move(copy);
  try {
    walk_manifest(moved);
  } catch (const ondevice::Error&) {
  }
  return 0;
}

#ifdef ONDEVICE_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return fuzz_json(data, size); }
#endif
