// The unigram segmentation: the best-scoring split of a normalized string into
// pieces (sentencepiece's Model::EncodeOptimized; see unigram.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer/model_proto.h"
#include "tokenizer/piece_trie.h"

namespace ondevice {
namespace spm {

struct Segment {
  uint32_t begin, end;  // bytes of the normalized string
  int32_t id;
};

class UnigramSegmenter {
 public:
  UnigramSegmenter() = default;
  // `pieces` is the model's piece table; `trie` (must outlive the segmenter)
  // maps its NORMAL, USER_DEFINED and UNUSED pieces to their ids.
  UnigramSegmenter(const std::vector<PieceProto>& pieces, const PieceTrie* trie, int32_t unk_id);

  // Appends the segments of `normalized`, in order (unknown characters as
  // single-character unk_id segments, not yet merged).
  void segment(std::string_view normalized, std::vector<Segment>* out) const;

 private:
  enum Kind : uint8_t { kScored, kUserDefinedPiece, kSkipped };
  std::vector<float> score_;  // by id
  std::vector<uint8_t> kind_;
  const PieceTrie* trie_ = nullptr;
  int32_t unk_id_ = -1;
  float min_score_ = 0.0f;  // of NORMAL pieces
};

}  // namespace spm
}  // namespace ondevice
