// Fuzz target: the SentencePiece .model reader (SentencePieceTokenizer::parse:
// protobuf ModelProto, pieces, trainer/normalizer specs, the precompiled
// charsmap's double-array trie) and, for a model it accepts, encode, decode
// and normalize over a few fixed texts, so the tries and the normalizer built
// from the fuzzed bytes are exercised too.
// Any ondevice::Error is an accepted outcome; anything else is a bug.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ondevice/error.h"
#include "ondevice/sentencepiece.h"

int fuzz_tokenizer_model(const uint8_t* data, size_t size) {
  std::optional<ondevice::SentencePieceTokenizer> tok;
  {
    // A copy that dies before the tokenizer is used: parse() must keep no
    // pointers into its input.
    std::vector<uint8_t> copy(data, data + size);
    try {
      tok.emplace(ondevice::SentencePieceTokenizer::parse(copy.data(), copy.size()));
    } catch (const ondevice::Error&) {
      return 0;
    }
  }
  static const char* const kTexts[] = {
      "",
      " ",
      "Hello world.",
      "  The  house\tis small.  ",
      ("Stra\xc3\x9f" "e \xc3\xa4\xc3\xb6\xc3\xbc \xef\xbc\xa1\xef\xbd\x82 \xe2\x91\xa0 \xef\xac\x81"),  // NFKC cases
      "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80 \xe2\x96\x81 <unk> <s></s>",
      "\x01\x1f\x7f a\xcc\x81",
      "\xff\xfe",  // invalid UTF-8: ArgumentError
  };
  const int32_t n = tok->piece_size();
  for (const char* text : kTexts) {
    try {
      (void)tok->normalize(text);
      const std::vector<int32_t> ids = tok->encode(text);
      for (int32_t id : ids) (void)tok->id_to_piece(id);
      (void)tok->decode(ids);
    } catch (const ondevice::Error&) {
    }
  }
  try {
    std::vector<int32_t> ids;
    for (int32_t i = 0; i < std::min<int32_t>(n, 300); ++i) ids.push_back(i);
    if (n > 0) ids.push_back(n - 1);
    (void)tok->decode(ids);
    for (int32_t id : ids) (void)tok->piece_to_id(tok->id_to_piece(id));
    (void)tok->bos_id();
    (void)tok->eos_id();
    (void)tok->pad_id();
    (void)tok->unk_id();
    (void)tok->decode({n});  // out of range: ArgumentError
  } catch (const ondevice::Error&) {
  }
  return 0;
}

#ifdef ONDEVICE_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return fuzz_tokenizer_model(data, size); }
#endif
