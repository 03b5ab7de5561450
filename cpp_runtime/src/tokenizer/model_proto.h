// The parts of sentencepiece's ModelProto (sentencepiece_model.proto) a unigram
// tokenizer needs, decoded from the protobuf wire format.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ondevice {
namespace spm {

// ModelProto.SentencePiece.Type.
enum PieceType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct PieceProto {
  std::string piece;
  float score = 0.0f;
  PieceType type = kNormal;
};

// NormalizerSpec (also the type of denormalizer_spec), with proto defaults.
struct NormalizerSpecProto {
  std::string name;
  std::string precompiled_charsmap;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

struct ModelProto {
  std::vector<PieceProto> pieces;

  // TrainerSpec.
  bool has_trainer_spec = false;
  int32_t model_type = 1;  // UNIGRAM
  bool treat_whitespace_as_suffix = false;
  bool byte_fallback = false;
  std::string unk_piece = "<unk>", bos_piece = "<s>", eos_piece = "</s>", pad_piece = "<pad>";
  bool has_unk_surface = false;
  std::string unk_surface;

  bool has_normalizer_spec = false;
  NormalizerSpecProto normalizer_spec;
  bool has_denormalizer_spec = false;
  NormalizerSpecProto denormalizer_spec;
};

// Decodes a serialized ModelProto. Throws FormatError on malformed wire data,
// an invalid enum value, or a missing trainer_spec / normalizer_spec (every
// model sentencepiece writes has both, so a file cut short is always
// rejected). Semantic checks (piece table, model type) are the tokenizer's.
ModelProto parse_model_proto(const uint8_t* data, size_t size);

}  // namespace spm
}  // namespace ondevice
