// Piece trie construction (see piece_trie.h). Two passes, both breadth-first
// and without recursion (a hostile model with a very long piece cannot
// exhaust the stack): the sorted keys give each node's children, then each
// node's children are placed at the first base where all their slots are free.
#include "tokenizer/piece_trie.h"

#include <algorithm>
#include <deque>

namespace ondevice {
namespace spm {

namespace {
struct Pending {
  int32_t pos;    // the node's slot in the double array
  size_t lo, hi;  // keys[lo, hi) share the node's prefix
  size_t depth;   // ... of this many bytes
};
}  // namespace

PieceTrie::PieceTrie(const std::vector<std::pair<std::string_view, int32_t>>& input) {
  std::vector<std::pair<std::string_view, int32_t>> keys(input);
  std::sort(keys.begin(), keys.end());
  num_keys_ = keys.size();
  // Free slots form a doubly linked list (prev/next, 0 terminated: slot 0 is
  // the root, never free), so the search for a base visits free slots only.
  std::vector<int32_t> next_free, prev_free;
  std::vector<bool> used;
  auto grow = [&](size_t size) {
    const size_t old = used.size();
    used.resize(size, false);
    units_.resize(size);
    next_free.resize(size, 0);
    prev_free.resize(size, 0);
    const int32_t tail = old > 0 ? prev_free[0] : 0;  // last free slot before growing
    int32_t prev = tail;
    for (size_t i = std::max<size_t>(old, 1); i < size; ++i) {
      if (prev == 0) {
        next_free[0] = int32_t(i);
      } else {
        next_free[size_t(prev)] = int32_t(i);
      }
      prev_free[i] = prev;
      prev = int32_t(i);
    }
    next_free[size_t(prev)] = 0;
    prev_free[0] = prev;  // slot 0's prev is the list's tail
  };
  auto take = [&](size_t slot) {
    used[slot] = true;
    const int32_t p = prev_free[slot], n = next_free[slot];
    if (p == 0) {
      next_free[0] = n;
    } else {
      next_free[size_t(p)] = n;
    }
    prev_free[size_t(n)] = p;  // n == 0 updates the tail
  };
  grow(1024);
  used[0] = true;

  std::deque<Pending> queue;
  queue.push_back({0, 0, keys.size(), 0});
  std::vector<std::pair<uint8_t, std::pair<size_t, size_t>>> children;  // label, key range
  while (!queue.empty()) {
    const Pending p = queue.front();
    queue.pop_front();
    size_t lo = p.lo;
    // Sorted order puts the key that ends here (at most one) first.
    if (lo < p.hi && keys[lo].first.size() == p.depth) {
      units_[size_t(p.pos)].value = keys[lo].second;
      ++lo;
    }
    children.clear();
    while (lo < p.hi) {
      const uint8_t b = uint8_t(keys[lo].first[p.depth]);
      size_t hi = lo + 1;
      while (hi < p.hi && uint8_t(keys[hi].first[p.depth]) == b) ++hi;
      children.push_back({b, {lo, hi}});
      lo = hi;
    }
    if (children.empty()) continue;
    const size_t lowest = children.front().first;
    size_t base = 0;
    for (size_t q = size_t(next_free[0]);; q = size_t(next_free[q])) {
      if (q == 0) {  // no free slot fits: append after the end
        base = used.size();
        break;
      }
      if (q < lowest) continue;
      base = q - lowest;
      bool fits = true;
      for (const auto& c : children)
        if (base + c.first < used.size() && used[base + c.first]) {
          fits = false;
          break;
        }
      if (fits) break;
    }
    if (base + 256 >= used.size()) grow(base + 256 + 1 + used.size() / 2);
    units_[size_t(p.pos)].base = int32_t(base);
    for (const auto& c : children) {
      const size_t slot = base + c.first;
      take(slot);
      units_[slot].check = p.pos;
      queue.push_back({int32_t(slot), c.second.first, c.second.second, p.depth + 1});
    }
  }
  // Padding: base + 255 must stay inside the array for every node.
  size_t max_base = 0;
  for (const Unit& u : units_) max_base = std::max(max_base, size_t(u.base));
  size_t last_used = 0;
  for (size_t i = 0; i < used.size(); ++i)
    if (used[i]) last_used = i;
  units_.resize(std::max(last_used + 1, max_base + 256));
  units_.shrink_to_fit();
}

size_t PieceTrie::longest_prefix(const char* s, size_t n, size_t max_results) const {
  if (units_.empty()) return 0;
  int32_t node = root();
  size_t best = 0, found = 0;
  for (size_t i = 0; i < n && found < max_results; ++i) {
    node = child(node, uint8_t(s[i]));
    if (node == kNone) break;
    if (value(node) != kNone) {
      best = i + 1;
      ++found;
    }
  }
  return best;
}

}  // namespace spm
}  // namespace ondevice
