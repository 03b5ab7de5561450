// A byte trie over piece strings as a double array: the child of node s by
// byte b sits at base[s] + b and belongs to s iff its check field is s, so
// each step of the encoder's prefix walk is one array read. Also serves the
// longest-prefix match of USER_DEFINED pieces.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace ondevice {
namespace spm {

class PieceTrie {
 public:
  static constexpr int32_t kNone = -1;

  PieceTrie() = default;
  // Keys must be non-empty and distinct; values >= 0.
  explicit PieceTrie(const std::vector<std::pair<std::string_view, int32_t>>& keys);

  bool empty() const { return num_keys_ == 0; }
  static int32_t root() { return 0; }

  // The node reached from `node` by byte b, or kNone. The array is padded so
  // that base + b is always in range.
  int32_t child(int32_t node, uint8_t b) const {
    const int32_t t = units_[size_t(node)].base + b;
    return units_[size_t(t)].check == node ? t : kNone;
  }
  // The value of the key ending at `node`, or kNone.
  int32_t value(int32_t node) const { return units_[size_t(node)].value; }

  // Length of the longest key that is a prefix of s[0..n), considering only
  // the first `max_results` such keys (shortest first), or 0 if none.
  size_t longest_prefix(const char* s, size_t n, size_t max_results) const;

 private:
  struct Unit {
    int32_t base = 0;
    int32_t check = kNone;
    int32_t value = kNone;
  };
  std::vector<Unit> units_;
  size_t num_keys_ = 0;
};

}  // namespace spm
}  // namespace ondevice
