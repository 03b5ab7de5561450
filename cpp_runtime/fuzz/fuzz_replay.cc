// Replays inputs through the fuzz targets' entry points in an ordinary build
// (CTest: ondevice_fuzz_regressions; under ASan+UBSan in the sanitizer build).
//
//   ondevice_fuzz_replay                 every file of regressions/<target>/ for
//                                        every target, then the shipped model files
//   ondevice_fuzz_replay TARGET PATH...  files, or every file of directories
//                                        (e.g. a fuzzing corpus or a crash input)
//
// An input that crashes a target crashes this program (or makes the sanitizer
// report it); an input handled as an ondevice::Error counts as passed.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#ifndef ONDEVICE_FUZZ_MODEL_DIR
#define ONDEVICE_FUZZ_MODEL_DIR "models/nmt-en-de-bcq/onnx"
#endif
#ifndef ONDEVICE_FUZZ_REGRESSIONS_DIR
#define ONDEVICE_FUZZ_REGRESSIONS_DIR "cpp_runtime/fuzz/regressions"
#endif

int fuzz_json(const uint8_t* data, size_t size);
int fuzz_bitplane(const uint8_t* data, size_t size);
int fuzz_onnx_model(const uint8_t* data, size_t size);
int fuzz_tokenizer_model(const uint8_t* data, size_t size);
int fuzz_tokenizer_encode(const uint8_t* data, size_t size);

namespace {

namespace fs = std::filesystem;

struct Target {
  const char* name;
  int (*fn)(const uint8_t*, size_t);
};
const Target kTargets[] = {
    {"json", fuzz_json},
    {"bitplane", fuzz_bitplane},
    {"onnx_model", fuzz_onnx_model},
    {"tokenizer_model", fuzz_tokenizer_model},
    {"tokenizer_encode", fuzz_tokenizer_encode},
};

const Target* find_target(const std::string& name) {
  for (const Target& t : kTargets)
    if (name == t.name || name == std::string("fuzz_") + t.name) return &t;
  return nullptr;
}

bool replay_file(const Target& t, const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    return false;
  }
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::printf("fuzz_%s < %s (%zu bytes)\n", t.name, path.c_str(), bytes.size());
  std::fflush(stdout);
  t.fn(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  return true;
}

// Files of `path` (itself if a file), sorted, skipping hidden files (.gitkeep).
std::vector<fs::path> files_of(const fs::path& path) {
  std::vector<fs::path> out;
  if (fs::is_directory(path)) {
    for (const auto& e : fs::directory_iterator(path))
      if (e.is_regular_file() && e.path().filename().string()[0] != '.') out.push_back(e.path());
    std::sort(out.begin(), out.end());
  } else {
    out.push_back(path);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  size_t count = 0;
  bool ok = true;
  if (argc >= 3) {
    const Target* t = find_target(argv[1]);
    if (t == nullptr) {
      std::fprintf(stderr, "unknown target '%s'\n", argv[1]);
      return 2;
    }
    for (int i = 2; i < argc; ++i)
      for (const fs::path& f : files_of(argv[i])) ok = replay_file(*t, f) && ok, ++count;
  } else if (argc == 1) {
    const fs::path regressions(ONDEVICE_FUZZ_REGRESSIONS_DIR);
    for (const Target& t : kTargets) {
      const fs::path dir = regressions / t.name;
      if (fs::is_directory(dir))
        for (const fs::path& f : files_of(dir)) ok = replay_file(t, f) && ok, ++count;
    }
    // The shipped files the seed corpora start from must pass too.
    const fs::path model(ONDEVICE_FUZZ_MODEL_DIR);
    const std::pair<const char*, const char*> shipped[] = {
        {"json", "manifest.json"},
        {"onnx_model", "encoder.onnx"},
        {"onnx_model", "decoder_step.onnx"},
        {"tokenizer_model", "spm.model"},
        {"bitplane", "../model/matrices/decoder.layers.0.fc1.weight.bcq"},
        {"bitplane", "../model/matrices/encoder.layers.0.self_attn.q_proj.weight.bcq"},
        {"json", "../model/manifest.json"},
    };
    for (const auto& s : shipped) {
      const fs::path f = model / s.second;
      if (!fs::exists(f)) {
        std::fprintf(stderr, "missing shipped file %s\n", f.c_str());
        ok = false;
        continue;
      }
      ok = replay_file(*find_target(s.first), f) && ok, ++count;
    }
    const char* text = "The house is small.\n\xff\xfe invalid \xc3 UTF-8, \x01 control";
    fuzz_tokenizer_encode(reinterpret_cast<const uint8_t*>(text), std::strlen(text));
    ++count;
  } else {
    std::fprintf(stderr, "usage: %s [TARGET FILE-OR-DIR...]\n", argv[0]);
    return 2;
  }
  std::printf("%zu inputs replayed%s\n", count, ok ? "" : ", some could not be read");
  return ok ? 0 : 1;
}
