// ondevice_translate_cli: the native translator on the command line.
//
//   ondevice_translate_cli MODEL_DIR [--beam N] [--threads N] [--batch N]  < source.txt > target.txt
//
// MODEL_DIR is an exported model directory (e.g. models/nmt-en-de-bcq/onnx).
// Reads UTF-8 lines from stdin (separated by '\n'; a trailing '\r' is dropped)
// and prints one translation per line, translating --batch lines (default 32)
// per translate_batch() call; the output does not depend on the batch size.
// Defaults: beam 4 (as the Python and Java APIs), 1 thread.
// tests/aarch64_translate_check.sh runs its aarch64 build under qemu and
// compares the output with the native build's, byte for byte.
//
// Exit status: 0 on success, 1 on an error (bad model, invalid input line; the
// runtime's message goes to stderr, naming the line), 2 on bad usage.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdio.h>
#include <string>
#include <vector>

#include "ondevice/error.h"
#include "ondevice/translator.h"

namespace {

int usage(const char* message) {
  std::fprintf(stderr, "ondevice_translate_cli: %s\n", message);
  std::fprintf(stderr, "usage: ondevice_translate_cli MODEL_DIR [--beam N] [--threads N] [--batch N] < in > out\n");
  return 2;
}

bool parse_int(const char* s, int* out) {
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < 1 || v > 1 << 20) return false;
  *out = int(v);
  return true;
}

void flush_batch(const ondevice::Translator& t, const ondevice::TranslateOptions& o, std::vector<std::string>* batch,
                 size_t first_line) {
  if (batch->empty()) return;
  std::vector<std::string> out;
  try {
    out = t.translate_batch(*batch, o);
  } catch (const ondevice::ArgumentError& e) {
    // "sentence K: ..." counts within the batch; name the input line instead.
    const std::string what = e.what();
    size_t k = 0, end = 0;
    if (what.compare(0, 9, "sentence ") == 0 && std::sscanf(what.c_str() + 9, "%zu%zn", &k, &end) == 1 &&
        what.compare(9 + end, 2, ": ") == 0)
      throw ondevice::ArgumentError("line " + std::to_string(first_line + k) + ": " + what.substr(9 + end + 2));
    throw ondevice::ArgumentError("lines " + std::to_string(first_line) + "-" +
                                  std::to_string(first_line + batch->size() - 1) + ": " + what);
  }
  for (const std::string& s : out) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fputc('\n', stdout);
  }
  std::fflush(stdout);
  batch->clear();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage("missing MODEL_DIR");
  std::string model_dir;
  ondevice::TranslatorOptions topt;
  ondevice::TranslateOptions opt;
  int batch_lines = 32;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (std::strcmp(a, "--beam") == 0 || std::strcmp(a, "--threads") == 0 || std::strcmp(a, "--batch") == 0) {
      int v = 0;
      if (i + 1 >= argc || !parse_int(argv[i + 1], &v)) return usage((std::string(a) + " needs a positive integer").c_str());
      ++i;
      if (std::strcmp(a, "--beam") == 0) opt.beam_size = v;
      else if (std::strcmp(a, "--threads") == 0) topt.threads = v;
      else batch_lines = v;
    } else if (a[0] == '-' && a[1] == '-') {
      return usage((std::string("unknown option ") + a).c_str());
    } else if (model_dir.empty()) {
      model_dir = a;
    } else {
      return usage("more than one MODEL_DIR");
    }
  }
  if (model_dir.empty()) return usage("missing MODEL_DIR");
  char* buf = nullptr;
  size_t cap = 0;
  try {
    const ondevice::Translator t(model_dir, topt);
    std::vector<std::string> batch;
    size_t line_no = 0;
    ssize_t n;
    while ((n = ::getline(&buf, &cap, stdin)) >= 0) {
      std::string line(buf, size_t(n));
      if (!line.empty() && line.back() == '\n') line.pop_back();
      if (!line.empty() && line.back() == '\r') line.pop_back();
      batch.push_back(std::move(line));
      ++line_no;
      if (batch.size() >= size_t(batch_lines)) flush_batch(t, opt, &batch, line_no - batch.size() + 1);
    }
    flush_batch(t, opt, &batch, line_no - batch.size() + 1);
  } catch (const std::exception& e) {
    std::free(buf);
    std::fflush(stdout);
    std::fprintf(stderr, "ondevice_translate_cli: %s\n", e.what());
    return 1;
  }
  std::free(buf);
  return std::ferror(stdout) ? 1 : 0;
}
