// A NormalizerSpec's precompiled_charsmap: the normalization rules
// (nmt_nfkc, nfkc_cf, a user TSV, ...) compiled by sentencepiece's builder.
//
// Layout (little-endian): uint32 T, the byte size of the trie; T bytes of a
// Darts-clone double array (T / 4 uint32 units) whose keys are source UTF-8
// byte strings and whose values are offsets into the rest of the blob, the
// replacement strings, each terminated by '\0'.
//
// A Darts-clone unit packs: bits 0-7 the label (the key byte leading to the
// unit), bit 8 "has a leaf" (a key ends here; its value is in the unit at
// node ^ offset), bit 9 "offset is shifted by 8", bits 10-30 the offset of
// the unit's children (child for byte b: node ^ offset ^ b), bit 31 set on
// leaf units, whose low 31 bits are the value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ondevice {
namespace spm {

class CharsMap {
 public:
  CharsMap() = default;
  // Decodes and checks a blob; FormatError if it is malformed. An empty blob
  // is the identity map.
  explicit CharsMap(std::string_view blob);

  bool empty() const { return units_.empty(); }

  // The rule sentencepiece's normalizer applies at the start of s[0..n): among
  // the (at most 32 first, as sentencepiece's kMaxTrieResultsSize) keys that
  // are prefixes of s, the longest. Returns its length in bytes and sets
  // *replacement, or returns 0 if no key matches. Never reads out of bounds,
  // whatever the blob held.
  size_t longest_match(const char* s, size_t n, std::string_view* replacement) const;

 private:
  std::vector<uint32_t> units_;
  std::string replacements_;  // ends with '\0' when not empty
};

}  // namespace spm
}  // namespace ondevice
