// SentencePiece's normalizer: charsmap rules, then whitespace handling.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include "tokenizer/charsmap.h"
#include "tokenizer/piece_trie.h"

namespace ondevice {
namespace spm {

struct NormalizerOptions {
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
  bool treat_whitespace_as_suffix = false;  // TrainerSpec's: the "▁" goes at the end
};

class Normalizer {
 public:
  Normalizer() = default;
  // `user_defined` (may be null; must outlive the normalizer) holds the
  // USER_DEFINED pieces, which are copied through unnormalized.
  Normalizer(CharsMap map, NormalizerOptions options, const PieceTrie* user_defined)
      : map_(std::move(map)), options_(options), user_defined_(user_defined) {}

  // sentencepiece's Normalizer::Normalize. Any bytes are accepted: an invalid
  // UTF-8 byte without a rule becomes U+FFFD.
  std::string normalize(std::string_view input) const;

 private:
  // The replacement of the longest rule at the start of `input` and the input
  // bytes it consumes (>= 1).
  std::pair<std::string_view, size_t> normalize_prefix(std::string_view input) const;

  CharsMap map_;
  NormalizerOptions options_;
  const PieceTrie* user_defined_ = nullptr;
};

}  // namespace spm
}  // namespace ondevice
