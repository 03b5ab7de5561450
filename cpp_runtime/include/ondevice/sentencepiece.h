// A dependency-free SentencePiece tokenizer (unigram models) whose ids are
// identical to those of the reference implementation (the `sentencepiece`
// Python package, 0.2.3, whose C++ core is libsentencepiece; its default
// "optimized" unigram encoder).
//
// Why not link libsentencepiece: the runtime cross-compiles for
// Android/aarch64 with nothing but a C++ toolchain, and libsentencepiece
// brings protobuf (or its own bundled copy), abseil and a CMake build of its
// own. A unigram model needs only three small algorithms, implemented here
// from their specification and checked id for id against the Python package
// (cpp_runtime/tests/test_tokenizer.cc, tests/test_cpp_tokenizer.py):
//
//  * the .model file: a protobuf ModelProto (sentencepiece_model.proto), read
//    with the runtime's bounds-checked protobuf wire reader;
//  * normalization: the NormalizerSpec's precompiled charsmap (a Darts-clone
//    double-array trie over UTF-8 byte strings plus a blob of NUL-terminated
//    replacements; longest match wins, otherwise one UTF-8 character is copied
//    as is), then whitespace handling: leading, trailing and repeated spaces
//    removed (remove_extra_whitespaces), a "▁" (U+2581) prepended
//    (add_dummy_prefix) and every space written as "▁" (escape_whitespaces);
//    USER_DEFINED pieces are matched before the charsmap and never normalized;
//  * encoding: Viterbi over the normalized bytes with the pieces' scores, in
//    float exactly as sentencepiece adds them; a character no piece covers
//    becomes the unk piece with score min(NORMAL scores) - 10, runs of
//    unknown characters merge into one unk id, a USER_DEFINED piece of n
//    bytes scores (n - 1) * 0.1, ties keep the path found first.
//    byte_fallback models emit <0xXX> byte pieces for unknown characters.
//  * decoding: pieces concatenated, "▁" -> " ", the leading space dropped, the
//    unk piece written as the model's unk_surface (default " ⁇ "), CONTROL
//    pieces (bos/eos/pad) written as nothing, byte pieces reassembled.
//
// Only UNIGRAM models are supported (FormatError otherwise). A model's
// self_test_data is ignored.
//
// Errors: a malformed model throws ondevice::FormatError (never crashes or
// reads out of bounds, whatever the bytes); invalid UTF-8 given to encode()
// and ids out of range given to decode() throw ondevice::ArgumentError.
//
// Thread safety: a tokenizer is immutable once built; any number of threads
// may call its const methods concurrently. Copies share the model.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ondevice {

class SentencePieceTokenizer {
 public:
  // Reads and parses a .model file; FormatError (naming the path) if it cannot
  // be read or is not a valid unigram SentencePiece model.
  static SentencePieceTokenizer load(const std::string& path);
  // Parses a serialized ModelProto; FormatError if it is not a valid unigram
  // SentencePiece model. The bytes are copied where needed (not kept).
  static SentencePieceTokenizer parse(const uint8_t* data, size_t size);

  // Ids of `utf8` (no bos/eos added), as sentencepiece's Encode(text,
  // out_type=int). ArgumentError if `utf8` is not valid UTF-8.
  std::vector<int32_t> encode(std::string_view utf8) const;
  // Text of `ids`, as sentencepiece's Decode(ids). ArgumentError if an id is
  // outside [0, piece_size()).
  std::string decode(const std::vector<int32_t>& ids) const;
  // The normalized text encode() segments ("▁Hello▁world"), as
  // sentencepiece's Normalize(). ArgumentError on invalid UTF-8.
  std::string normalize(std::string_view utf8) const;

  int32_t piece_size() const;
  // The piece string of an id; ArgumentError if out of range.
  const std::string& id_to_piece(int32_t id) const;
  // The id of a piece string; unk_id() if there is no such piece.
  int32_t piece_to_id(std::string_view piece) const;

  // As sentencepiece: the id of the model's bos/eos/pad piece if that piece is
  // a CONTROL piece, else -1; unk_id() is the UNKNOWN piece's id.
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t pad_id() const;
  int32_t unk_id() const;

 private:
  struct Impl;
  explicit SentencePieceTokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace ondevice
