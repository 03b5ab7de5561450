// Normalization as sentencepiece does it (normalizer.cc there), step for step:
//  1. with remove_extra_whitespaces, leading characters that normalize to " "
//     are dropped;
//  2. "▁" (or " " without escape_whitespaces) is prepended (add_dummy_prefix);
//  3. each prefix is replaced by its rule (USER_DEFINED pieces first, kept as
//     they are; then the longest charsmap key; else one UTF-8 character as is,
//     or U+FFFD for one invalid byte); with remove_extra_whitespaces, spaces
//     at the start of a replacement are dropped while the output so far ends
//     in a space; spaces are written as "▁";
//  4. with remove_extra_whitespaces, trailing "▁"s are removed;
//  5. with treat_whitespace_as_suffix, the "▁" of step 2 is appended instead.
#include "tokenizer/normalizer.h"

#include "tokenizer/utf8.h"

namespace ondevice {
namespace spm {

namespace {
constexpr std::string_view kSpaceSymbol = "\xe2\x96\x81";  // U+2581
constexpr std::string_view kReplacementChar = "\xef\xbf\xbd";  // U+FFFD
constexpr size_t kMaxUserDefinedResults = 64;  // sentencepiece PrefixMatcher's kResultSize

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && std::string_view(s).substr(s.size() - suffix.size()) == suffix;
}
}  // namespace

std::pair<std::string_view, size_t> Normalizer::normalize_prefix(std::string_view input) const {
  if (user_defined_ != nullptr && !user_defined_->empty()) {
    const size_t len = user_defined_->longest_prefix(input.data(), input.size(), kMaxUserDefinedResults);
    if (len > 0) return {input.substr(0, len), len};
  }
  std::string_view replacement;
  const size_t len = map_.longest_match(input.data(), input.size(), &replacement);
  if (len > 0) return {replacement, len};
  bool valid = false;
  const size_t char_len = decode_utf8(input.data(), input.size(), &valid);
  if (!valid) return {kReplacementChar, 1};
  return {input.substr(0, char_len), char_len};
}

std::string Normalizer::normalize(std::string_view input) const {
  std::string out;
  if (input.empty()) return out;
  const bool remove_extra = options_.remove_extra_whitespaces;
  const std::string_view space = options_.escape_whitespaces ? kSpaceSymbol : std::string_view(" ");

  if (remove_extra) {
    while (!input.empty()) {
      const auto p = normalize_prefix(input);
      if (p.first != " ") break;
      input.remove_prefix(p.second);
    }
  }
  if (input.empty()) return out;

  out.reserve(input.size() * 3);
  if (!options_.treat_whitespace_as_suffix && options_.add_dummy_prefix) out.append(space);

  bool is_prev_space = remove_extra;
  while (!input.empty()) {
    const auto p = normalize_prefix(input);
    std::string_view sp = p.first;
    while (is_prev_space && !sp.empty() && sp.front() == ' ') sp.remove_prefix(1);
    if (!sp.empty()) {
      for (char c : sp) {
        if (c == ' ' && options_.escape_whitespaces) {
          out.append(kSpaceSymbol);
        } else {
          out.push_back(c);
        }
      }
      is_prev_space = sp.back() == ' ';
    }
    input.remove_prefix(p.second);
    if (!remove_extra) is_prev_space = false;
  }

  if (remove_extra) {
    while (ends_with(out, space)) out.resize(out.size() - space.size());
  }
  if (options_.treat_whitespace_as_suffix && options_.add_dummy_prefix) out.append(space);
  return out;
}

}  // namespace spm
}  // namespace ondevice
