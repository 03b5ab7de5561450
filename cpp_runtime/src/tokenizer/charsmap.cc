// Precompiled charsmap lookup (see charsmap.h): a common-prefix search over a
// Darts-clone double array, reimplemented from the format, with every unit
// access bounds-checked (a valid array never needs the checks; a corrupt one
// then simply matches less).
#include "tokenizer/charsmap.h"

#include <cstring>

#include "ondevice/error.h"

namespace ondevice {
namespace spm {

namespace {

constexpr size_t kMaxResults = 32;  // sentencepiece Normalizer::kMaxTrieResultsSize

inline uint32_t le32(const char* p) {
  const uint8_t* b = reinterpret_cast<const uint8_t*>(p);
  return uint32_t(b[0]) | (uint32_t(b[1]) << 8) | (uint32_t(b[2]) << 16) | (uint32_t(b[3]) << 24);
}

inline bool has_leaf(uint32_t unit) { return ((unit >> 8) & 1) != 0; }
inline uint32_t value(uint32_t unit) { return unit & 0x7FFFFFFFu; }
inline uint32_t label(uint32_t unit) { return unit & (0x80000000u | 0xFFu); }
inline uint32_t offset(uint32_t unit) { return (unit >> 10) << ((unit & (1u << 9)) >> 6); }

}  // namespace

CharsMap::CharsMap(std::string_view blob) {
  if (blob.empty()) return;
  if (blob.size() < 4)
    throw FormatError("precompiled_charsmap of " + std::to_string(blob.size()) + " bytes is too short");
  const uint32_t trie_bytes = le32(blob.data());
  if (uint64_t(trie_bytes) + 4 > blob.size())
    throw FormatError("precompiled_charsmap: trie of " + std::to_string(trie_bytes) + " bytes exceeds the blob of " +
                      std::to_string(blob.size()) + " bytes");
  if (trie_bytes == 0 || trie_bytes % 4 != 0)
    throw FormatError("precompiled_charsmap: trie size " + std::to_string(trie_bytes) +
                      " is not a positive multiple of 4");
  units_.resize(trie_bytes / 4);
  for (size_t i = 0; i < units_.size(); ++i) units_[i] = le32(blob.data() + 4 + 4 * i);
  replacements_.assign(blob.data() + 4 + trie_bytes, blob.size() - 4 - trie_bytes);
  // Values point at NUL-terminated strings: a terminator at the end keeps any
  // in-range value's string inside the blob.
  if (!replacements_.empty() && replacements_.back() != '\0')
    throw FormatError("precompiled_charsmap: replacement strings do not end with a NUL byte");
  for (uint32_t u : units_)
    if ((u & 0x80000000u) && value(u) >= replacements_.size())
      throw FormatError("precompiled_charsmap: replacement offset " + std::to_string(value(u)) +
                        " is beyond the " + std::to_string(replacements_.size()) + " bytes of replacements");
}

size_t CharsMap::longest_match(const char* s, size_t n, std::string_view* replacement) const {
  if (units_.empty()) return 0;
  const uint32_t* units = units_.data();
  const size_t size = units_.size();
  const uint8_t* key = reinterpret_cast<const uint8_t*>(s);
  size_t found = 0, best_len = 0;
  uint32_t best_value = 0;
  size_t node = offset(units[0]);
  for (size_t i = 0; i < n && found < kMaxResults; ++i) {
    node ^= key[i];
    if (node >= size) break;
    const uint32_t unit = units[node];
    if (label(unit) != key[i]) break;
    node ^= offset(unit);
    if (has_leaf(unit)) {
      if (node >= size) break;
      const uint32_t v = value(units[node]);
      if (v >= replacements_.size()) break;  // only in a corrupt array
      best_len = i + 1;
      best_value = v;
      ++found;
    }
  }
  if (best_len == 0) return 0;
  const char* r = replacements_.data() + best_value;
  *replacement = std::string_view(r, std::strlen(r));
  return best_len;
}

}  // namespace spm
}  // namespace ondevice
