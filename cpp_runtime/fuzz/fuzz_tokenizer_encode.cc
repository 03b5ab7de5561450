// Fuzz target: the shipped SentencePiece model (models/nmt-en-de-bcq/onnx/
// spm.model, or $ONDEVICE_FUZZ_MODEL_DIR/spm.model) on arbitrary bytes,
// invalid UTF-8 included: normalize, encode, decode of the result, and decode
// of arbitrary ids read from the input.
// ArgumentError (invalid UTF-8, id out of range) is an accepted outcome;
// anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "ondevice/error.h"
#include "ondevice/sentencepiece.h"

#ifndef ONDEVICE_FUZZ_MODEL_DIR
#define ONDEVICE_FUZZ_MODEL_DIR "models/nmt-en-de-bcq/onnx"
#endif

namespace {

const ondevice::SentencePieceTokenizer& shipped() {
  static const ondevice::SentencePieceTokenizer tok = [] {
    const char* env = std::getenv("ONDEVICE_FUZZ_MODEL_DIR");
    const std::string dir = env != nullptr && *env ? env : ONDEVICE_FUZZ_MODEL_DIR;
    try {
      return ondevice::SentencePieceTokenizer::load(dir + "/spm.model");
    } catch (const ondevice::Error& e) {
      std::fprintf(stderr, "fuzz_tokenizer_encode: cannot load the shipped tokenizer: %s\n", e.what());
      std::abort();
    }
  }();
  return tok;
}

}  // namespace

int fuzz_tokenizer_encode(const uint8_t* data, size_t size) {
  const ondevice::SentencePieceTokenizer& tok = shipped();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  bool valid = true;
  try {
    (void)tok.normalize(text);
  } catch (const ondevice::ArgumentError&) {
    valid = false;
  }
  try {
    const std::vector<int32_t> ids = tok.encode(text);
    if (!valid) std::abort();  // normalize rejected what encode accepted
    (void)tok.decode(ids);
  } catch (const ondevice::ArgumentError&) {
    if (valid) std::abort();  // encode rejected what normalize accepted
  }
  // The input as little-endian 16-bit ids in [-1, piece_size] (the two ends out of range).
  const uint32_t n = uint32_t(tok.piece_size());
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 1 < size; i += 2) ids.push_back(int32_t((data[i] | (data[i + 1] << 8)) % (n + 2)) - 1);
  try {
    (void)tok.decode(ids);
  } catch (const ondevice::ArgumentError&) {
  }
  return 0;
}

#ifdef ONDEVICE_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fuzz_tokenizer_encode(data, size);
}
#endif
