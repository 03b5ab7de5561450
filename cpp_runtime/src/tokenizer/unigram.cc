// Unigram Viterbi segmentation, as the encoder of the sentencepiece Python
// package (0.2.3; Model::EncodeOptimized, the default encoder), with its float
// arithmetic reproduced step for step so that ties and near-ties resolve the
// same. The details below were read from that package's compiled encoder and
// confirmed by experiments against it (they differ from older sentencepiece
// sources, which scored USER_DEFINED pieces len * max_score - 0.1 and summed
// in double):
//
//  * best[i] is the best path ending at byte i: its score (float), the start
//    of its last piece and that piece's id; best[0] scores 0.
//  * From each character start s (stepping by sentencepiece's OneCharLen),
//    every piece that is a prefix of normalized[s..] (UNUSED pieces skipped)
//    offers best[s] + score at its end e, in float; a USER_DEFINED piece of n
//    bytes scores float((n - 1) * 0.1). The offer wins if best[e] is unset or
//    the offer is strictly greater: the first of equal offers stays.
//  * If no piece covers exactly the character at s, the unk piece offers
//    best[s] + (min_score - 10) at s + len(char), min_score being the lowest
//    NORMAL piece score.
//  * When best[s] leaves [-1e5, 1e5] (long texts), the scores of best[s] and
//    of every set entry after it are reduced by best[s] before going on, to
//    keep float precision.
//  * The path is read back from the end.
#include "tokenizer/unigram.h"

#include <algorithm>
#include <cfloat>

#include "ondevice/error.h"
#include "tokenizer/utf8.h"

namespace ondevice {
namespace spm {

namespace {
constexpr float kUnkPenalty = 10.0f;
constexpr float kRebaseAbove = 1e5f;  // |path score| beyond which scores are re-based

struct BestPath {
  int32_t id = -1;
  float score = 0.0f;
  int32_t starts_at = -1;
};
}  // namespace

UnigramSegmenter::UnigramSegmenter(const std::vector<PieceProto>& pieces, const PieceTrie* trie, int32_t unk_id)
    : trie_(trie), unk_id_(unk_id) {
  score_.resize(pieces.size());
  kind_.resize(pieces.size());
  min_score_ = FLT_MAX;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const PieceProto& p = pieces[i];
    score_[i] = p.score;
    kind_[i] = p.type == kUserDefined ? kUserDefinedPiece : p.type == kUnused ? kSkipped : kScored;
    if (p.type == kNormal) min_score_ = std::min(min_score_, p.score);
  }
}

void UnigramSegmenter::segment(std::string_view normalized, std::vector<Segment>* out) const {
  const size_t size = normalized.size();
  if (size == 0) return;
  if (size > size_t(INT32_MAX) - 1) throw ArgumentError("text of " + std::to_string(size) + " bytes is too long");
  const uint8_t* s = reinterpret_cast<const uint8_t*>(normalized.data());
  const float unk_score = min_score_ - kUnkPenalty;
  std::vector<BestPath> best(size + 1);

  size_t starts_at = 0;
  size_t max_end = 0;  // the furthest entry of best[] set so far
  while (starts_at < size) {
    float till_here = best[starts_at].score;
    if (till_here < -kRebaseAbove || till_here > kRebaseAbove) {
      for (size_t i = starts_at; i <= max_end; ++i)
        if (i == starts_at || best[i].starts_at != -1) best[i].score -= till_here;
      till_here = 0.0f;
    }
    const size_t mblen = std::min(one_char_len(s[starts_at]), size - starts_at);
    bool has_single_node = false;
    int32_t node = PieceTrie::root();
    for (size_t key_pos = starts_at; key_pos < size;) {
      node = trie_->child(node, s[key_pos]);
      if (node == PieceTrie::kNone) break;
      ++key_pos;
      const int32_t id = trie_->value(node);
      if (id == PieceTrie::kNone || kind_[size_t(id)] == kSkipped) continue;
      max_end = std::max(max_end, key_pos);
      const size_t length = key_pos - starts_at;
      const float score = kind_[size_t(id)] == kUserDefinedPiece ? float(double(int32_t(length) - 1) * 0.1)
                                                                : score_[size_t(id)];
      const float candidate = score + till_here;
      BestPath& target = best[key_pos];
      if (target.starts_at == -1 || candidate > target.score) {
        target.score = candidate;
        target.starts_at = int32_t(starts_at);
        target.id = id;
      }
      if (!has_single_node && length == mblen) has_single_node = true;
    }
    if (!has_single_node) {
      BestPath& target = best[starts_at + mblen];
      const float candidate = unk_score + till_here;
      if (target.starts_at == -1 || candidate > target.score) {
        target.score = candidate;
        target.starts_at = int32_t(starts_at);
        target.id = unk_id_;
      }
      max_end = std::max(max_end, starts_at + mblen);
    }
    starts_at += mblen;
  }

  const size_t first = out->size();
  size_t ends_at = size;
  while (ends_at > 0) {
    const BestPath& b = best[ends_at];
    // Every character boundary is reached (the unk offer guarantees it).
    if (b.starts_at < 0 || size_t(b.starts_at) >= ends_at) throw Error("unigram segmentation: broken path");
    out->push_back({uint32_t(b.starts_at), uint32_t(ends_at), b.id});
    ends_at = size_t(b.starts_at);
  }
  std::reverse(out->begin() + std::ptrdiff_t(first), out->end());
}

}  // namespace spm
}  // namespace ondevice
