// sentencepiece ModelProto -> spm::ModelProto, decoded from the protobuf wire
// format with the runtime's bounds-checked reader (format/protobuf_wire.h).
//
// Field numbers are those of sentencepiece_model.proto (checked against the
// descriptor shipped in the sentencepiece 0.2 Python package). Unknown fields
// are skipped, as protobuf parsers do. As protobuf does, a scalar that appears
// twice keeps its last value and a singular message that appears twice is
// merged.
#include <cstring>
#include <string>

#include "format/protobuf_wire.h"
#include "ondevice/error.h"
#include "tokenizer/model_proto.h"

namespace ondevice {
namespace spm {

using wire::Field;
using wire::Reader;

namespace {

// ModelProto
constexpr uint32_t kModelPieces = 1, kModelTrainerSpec = 2, kModelNormalizerSpec = 3, kModelDenormalizerSpec = 5;
// ModelProto.SentencePiece
constexpr uint32_t kPiecePiece = 1, kPieceScore = 2, kPieceType = 3;
// TrainerSpec
constexpr uint32_t kTrainerModelType = 3, kTrainerTreatWhitespaceAsSuffix = 24, kTrainerByteFallback = 35,
                   kTrainerUnkSurface = 44, kTrainerUnkPiece = 45, kTrainerBosPiece = 46, kTrainerEosPiece = 47,
                   kTrainerPadPiece = 48;
// NormalizerSpec
constexpr uint32_t kNormName = 1, kNormCharsmap = 2, kNormAddDummyPrefix = 3, kNormRemoveExtraWhitespaces = 4,
                   kNormEscapeWhitespaces = 5;

bool boolean(Reader& r, const Field& f) { return r.varint(f) != 0; }

// Enum and int32 fields travel as (sign-extended) varints; protobuf keeps the
// low 32 bits.
int32_t int32(Reader& r, const Field& f) { return int32_t(uint32_t(r.varint(f))); }

void piece(Reader r, PieceProto* p) {
  Field f;
  while (r.next(&f)) {
    switch (f.number) {
      case kPiecePiece: p->piece = r.bytes(f).str(); break;
      case kPieceScore: {
        const uint32_t bits = r.fixed32(f);
        std::memcpy(&p->score, &bits, 4);
        break;
      }
      case kPieceType: {
        const int32_t t = int32(r, f);
        if (t < kNormal || t > kByte) r.fail("invalid piece type " + std::to_string(t), f.offset);
        p->type = PieceType(t);
        break;
      }
      default: r.skip(f);
    }
  }
}

void trainer_spec(Reader r, ModelProto* m) {
  Field f;
  while (r.next(&f)) {
    switch (f.number) {
      case kTrainerModelType: m->model_type = int32(r, f); break;
      case kTrainerTreatWhitespaceAsSuffix: m->treat_whitespace_as_suffix = boolean(r, f); break;
      case kTrainerByteFallback: m->byte_fallback = boolean(r, f); break;
      case kTrainerUnkSurface:
        m->unk_surface = r.bytes(f).str();
        m->has_unk_surface = true;
        break;
      case kTrainerUnkPiece: m->unk_piece = r.bytes(f).str(); break;
      case kTrainerBosPiece: m->bos_piece = r.bytes(f).str(); break;
      case kTrainerEosPiece: m->eos_piece = r.bytes(f).str(); break;
      case kTrainerPadPiece: m->pad_piece = r.bytes(f).str(); break;
      default: r.skip(f);
    }
  }
}

void normalizer_spec(Reader r, NormalizerSpecProto* n) {
  Field f;
  while (r.next(&f)) {
    switch (f.number) {
      case kNormName: n->name = r.bytes(f).str(); break;
      case kNormCharsmap: n->precompiled_charsmap = r.bytes(f).str(); break;
      case kNormAddDummyPrefix: n->add_dummy_prefix = boolean(r, f); break;
      case kNormRemoveExtraWhitespaces: n->remove_extra_whitespaces = boolean(r, f); break;
      case kNormEscapeWhitespaces: n->escape_whitespaces = boolean(r, f); break;
      default: r.skip(f);
    }
  }
}

}  // namespace

ModelProto parse_model_proto(const uint8_t* data, size_t size) {
  ModelProto m;
  Reader r(data, size);
  Field f;
  while (r.next(&f)) {
    switch (f.number) {
      case kModelPieces:
        m.pieces.emplace_back();
        piece(r.message(f), &m.pieces.back());
        break;
      case kModelTrainerSpec:
        trainer_spec(r.message(f), &m);
        m.has_trainer_spec = true;
        break;
      case kModelNormalizerSpec:
        normalizer_spec(r.message(f), &m.normalizer_spec);
        m.has_normalizer_spec = true;
        break;
      case kModelDenormalizerSpec:
        normalizer_spec(r.message(f), &m.denormalizer_spec);
        m.has_denormalizer_spec = true;
        break;
      default: r.skip(f);  // self_test_data and future fields
    }
  }
  if (!m.has_trainer_spec) r.fail("no trainer_spec (field 2)", r.offset());
  if (!m.has_normalizer_spec) r.fail("no normalizer_spec (field 3)", r.offset());
  // sentencepiece falls back to the default piece names when one is empty.
  if (m.unk_piece.empty()) m.unk_piece = "<unk>";
  if (m.bos_piece.empty()) m.bos_piece = "<s>";
  if (m.eos_piece.empty()) m.eos_piece = "</s>";
  if (m.pad_piece.empty()) m.pad_piece = "<pad>";
  return m;
}

}  // namespace spm
}  // namespace ondevice
