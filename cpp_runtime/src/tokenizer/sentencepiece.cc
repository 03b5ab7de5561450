// SentencePieceTokenizer: model checks, encode (normalize, segment, merge
// unknowns / byte fallback) and decode, as sentencepiece's
// SentencePieceProcessor (sentencepiece_processor.cc, model_interface.cc).
#include "ondevice/sentencepiece.h"

#include <cstdint>
#include <cstdio>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "format/mapped_file.h"
#include "ondevice/error.h"
#include "tokenizer/charsmap.h"
#include "tokenizer/model_proto.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/piece_trie.h"
#include "tokenizer/unigram.h"
#include "tokenizer/utf8.h"

namespace ondevice {

using namespace spm;

namespace {
constexpr uint64_t kMaxModelBytes = uint64_t(1) << 30;
constexpr std::string_view kSpaceSymbol = "\xe2\x96\x81";
constexpr const char* kDefaultUnkSurface = " \xe2\x81\x87 ";  // " ⁇ "
constexpr std::string_view kReplacementChar = "\xef\xbf\xbd";

std::string byte_piece(uint8_t b) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "<0x%02X>", unsigned(b));
  return buf;
}

// "<0xA7>" -> 0xA7 (two upper-case hex digits, as sentencepiece writes them), else -1.
int piece_to_byte(const std::string& p) {
  auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; };
  if (p.size() != 6 || p.compare(0, 3, "<0x") != 0 || p[5] != '>') return -1;
  const int hi = hex(p[3]), lo = hex(p[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", unsigned(c));
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out.size() > 64 ? out.substr(0, 64) + "..." : out;
}
}  // namespace

struct SentencePieceTokenizer::Impl {
  // Never copied or moved: the maps, tries and normalizer point into it.
  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  ModelProto proto;
  // sentencepiece keeps two piece maps: NORMAL / USER_DEFINED / UNUSED pieces
  // (the encoder's vocabulary) and the others (CONTROL, UNKNOWN, BYTE).
  std::unordered_map<std::string_view, int32_t> normal_ids, reserved_ids;
  PieceTrie piece_trie, user_defined_trie;
  Normalizer normalizer;
  bool has_denormalizer = false;
  Normalizer denormalizer;
  UnigramSegmenter segmenter;
  int32_t unk_id = -1;
  int32_t byte_ids[256] = {};       // byte -> id of its <0xXX> piece
  std::vector<uint8_t> byte_value;  // id -> byte, for BYTE pieces
  std::string unk_surface;

  void init();
  int32_t piece_to_id(std::string_view piece) const {
    auto it = reserved_ids.find(piece);
    if (it != reserved_ids.end()) return it->second;
    it = normal_ids.find(piece);
    return it != normal_ids.end() ? it->second : unk_id;
  }
  PieceType type(int32_t id) const { return proto.pieces[size_t(id)].type; }
  int32_t control_or_minus_one(const std::string& piece) const {
    const int32_t id = piece_to_id(piece);
    return type(id) == kControl ? id : -1;
  }
  std::string normalize_checked(std::string_view utf8) const;
};

void SentencePieceTokenizer::Impl::init() {
  if (proto.model_type != 1)
    throw FormatError("model_type " + std::to_string(proto.model_type) +
                      " is not supported (only UNIGRAM, 1); BPE, WORD and CHAR models are not");
  const auto& pieces = proto.pieces;
  if (pieces.size() > size_t(INT32_MAX)) throw FormatError("too many pieces");
  std::vector<std::pair<std::string_view, int32_t>> normal, user_defined;
  bool byte_found[256] = {};
  byte_value.assign(pieces.size(), 0);
  for (size_t i = 0; i < pieces.size(); ++i) {
    const PieceProto& p = pieces[i];
    const int32_t id = int32_t(i);
    if (p.piece.empty()) throw FormatError("piece " + std::to_string(i) + " is empty");
    // sentencepiece's tries take pieces as C strings: a NUL would cut them.
    if (p.piece.find('\0') != std::string::npos)
      throw FormatError("piece " + std::to_string(i) + " contains a NUL byte");
    const bool is_normal = p.type == kNormal || p.type == kUserDefined || p.type == kUnused;
    auto& map = is_normal ? normal_ids : reserved_ids;
    if (!map.emplace(std::string_view(p.piece), id).second)
      throw FormatError("piece '" + printable(p.piece) + "' (id " + std::to_string(i) + ") is defined twice");
    if (is_normal) normal.emplace_back(p.piece, id);
    if (p.type == kUserDefined) user_defined.emplace_back(p.piece, id);
    if (p.type == kUnknown) {
      if (unk_id >= 0) throw FormatError("two UNKNOWN pieces (ids " + std::to_string(unk_id) + " and " +
                                         std::to_string(i) + ")");
      unk_id = id;
    }
    if (p.type == kByte) {
      if (!proto.byte_fallback)
        throw FormatError("byte piece '" + printable(p.piece) + "' in a model without byte_fallback");
      const int b = piece_to_byte(p.piece);
      if (b < 0) throw FormatError("invalid byte piece '" + printable(p.piece) + "'");
      byte_found[b] = true;
      byte_ids[b] = id;
      byte_value[i] = uint8_t(b);
    }
  }
  if (unk_id < 0) throw FormatError("no UNKNOWN piece");
  if (normal.empty()) throw FormatError("no NORMAL, USER_DEFINED or UNUSED piece");
  if (proto.byte_fallback)
    for (int b = 0; b < 256; ++b)
      if (!byte_found[b]) throw FormatError("byte_fallback model lacks the byte piece " + byte_piece(uint8_t(b)));

  piece_trie = PieceTrie(normal);
  user_defined_trie = PieceTrie(user_defined);
  segmenter = UnigramSegmenter(pieces, &piece_trie, unk_id);

  const NormalizerSpecProto& ns = proto.normalizer_spec;
  NormalizerOptions opts;
  opts.add_dummy_prefix = ns.add_dummy_prefix;
  opts.remove_extra_whitespaces = ns.remove_extra_whitespaces;
  opts.escape_whitespaces = ns.escape_whitespaces;
  opts.treat_whitespace_as_suffix = proto.treat_whitespace_as_suffix;
  normalizer = Normalizer(CharsMap(ns.precompiled_charsmap), opts, &user_defined_trie);

  // A denormalizer runs on decoded text when its spec has rules; it has no
  // user-defined matcher and ignores treat_whitespace_as_suffix.
  const NormalizerSpecProto& ds = proto.denormalizer_spec;
  if (proto.has_denormalizer_spec && !ds.precompiled_charsmap.empty()) {
    NormalizerOptions dopts;
    dopts.add_dummy_prefix = ds.add_dummy_prefix;
    dopts.remove_extra_whitespaces = ds.remove_extra_whitespaces;
    dopts.escape_whitespaces = ds.escape_whitespaces;
    denormalizer = Normalizer(CharsMap(ds.precompiled_charsmap), dopts, nullptr);
    has_denormalizer = true;
  }
  unk_surface = proto.has_unk_surface ? proto.unk_surface : kDefaultUnkSurface;
}

std::string SentencePieceTokenizer::Impl::normalize_checked(std::string_view utf8) const {
  const size_t bad = find_invalid_utf8(utf8);
  if (bad != std::string_view::npos)
    throw ArgumentError("text is not valid UTF-8 (byte " + std::to_string(bad) + " of " +
                        std::to_string(utf8.size()) + ")");
  return normalizer.normalize(utf8);
}

SentencePieceTokenizer SentencePieceTokenizer::parse(const uint8_t* data, size_t size) {
  if (data == nullptr && size != 0) throw FormatError("invalid SentencePiece model: null buffer");
  try {
    // The shared_ptr is created before init() so that the piece maps' views
    // and the tries' pointers stay valid: the Impl never moves afterwards.
    auto impl = std::make_shared<Impl>();
    impl->proto = parse_model_proto(data, size);
    impl->init();
    return SentencePieceTokenizer(std::move(impl));
  } catch (const FormatError& e) {
    throw FormatError(std::string("invalid SentencePiece model: ") + e.what());
  } catch (const std::bad_alloc&) {
    throw FormatError("invalid SentencePiece model: out of memory while parsing");
  }
}

SentencePieceTokenizer SentencePieceTokenizer::load(const std::string& path) {
  const auto buffer = read_whole_file(path, kMaxModelBytes, "SentencePiece model limit");
  try {
    return parse(buffer->data(), buffer->size());
  } catch (const FormatError& e) {
    throw FormatError(path + ": " + e.what());
  }
}

std::string SentencePieceTokenizer::normalize(std::string_view utf8) const {
  return impl_->normalize_checked(utf8);
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view utf8) const {
  const Impl& m = *impl_;
  std::vector<int32_t> ids;
  if (utf8.empty()) return ids;
  const std::string normalized = m.normalize_checked(utf8);
  std::vector<Segment> segments;
  segments.reserve(normalized.size() / 2 + 1);
  m.segmenter.segment(normalized, &segments);
  ids.reserve(segments.size());
  bool prev_unk = false;
  for (const Segment& s : segments) {
    const bool is_unk = m.type(s.id) == kUnknown;
    if (is_unk && m.proto.byte_fallback) {
      for (uint32_t i = s.begin; i < s.end; ++i) ids.push_back(m.byte_ids[uint8_t(normalized[i])]);
    } else if (!(is_unk && prev_unk)) {  // a run of unknown characters is one unk
      ids.push_back(s.id);
    }
    prev_unk = is_unk;
  }
  return ids;
}

std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids) const {
  const Impl& m = *impl_;
  const int32_t n = piece_size();
  for (int32_t id : ids)
    if (id < 0 || id >= n)
      throw ArgumentError("id " + std::to_string(id) + " is out of range [0, " + std::to_string(n) + ")");
  const NormalizerSpecProto& ns = m.proto.normalizer_spec;
  const bool strip_bos_ws = ns.add_dummy_prefix || ns.remove_extra_whitespaces;

  std::string text;
  std::string bytes;  // a run of byte pieces, emitted as UTF-8 characters
  auto flush_bytes = [&]() {
    size_t i = 0;
    while (i < bytes.size()) {
      bool valid = false;
      const size_t len = decode_utf8(bytes.data() + i, bytes.size() - i, &valid);
      if (valid) {
        text.append(bytes, i, len);
      } else {
        text.append(kReplacementChar);
      }
      i += len;
    }
    bytes.clear();
  };

  bool is_bos_ws = true;  // the leading "▁" is still to be dropped
  bool bos_ws_seen = false;
  for (int32_t raw_id : ids) {
    // sentencepiece decodes ids through their piece strings.
    const std::string& piece = m.proto.pieces[size_t(raw_id)].piece;
    const int32_t id = m.piece_to_id(piece);
    const PieceType t = m.type(id);
    if (t == kByte) {
      bytes.push_back(char(m.byte_value[size_t(id)]));
      continue;
    }
    flush_bytes();
    if (bos_ws_seen || !text.empty()) is_bos_ws = false;
    bos_ws_seen = false;
    if (t == kControl) continue;
    if (t == kUnknown) {
      text += m.proto.pieces[size_t(id)].piece == piece ? m.unk_surface : piece;
      continue;
    }
    std::string_view p = piece;
    if (is_bos_ws && strip_bos_ws && p.substr(0, kSpaceSymbol.size()) == kSpaceSymbol) {
      p.remove_prefix(kSpaceSymbol.size());
      bos_ws_seen = !ns.remove_extra_whitespaces;
    }
    for (size_t i = 0; i < p.size();) {
      if (p.compare(i, kSpaceSymbol.size(), kSpaceSymbol) == 0) {
        text.push_back(' ');
        i += kSpaceSymbol.size();
      } else {
        text.push_back(p[i]);
        ++i;
      }
    }
  }
  flush_bytes();
  if (m.has_denormalizer) text = m.denormalizer.normalize(text);
  return text;
}

int32_t SentencePieceTokenizer::piece_size() const { return int32_t(impl_->proto.pieces.size()); }

const std::string& SentencePieceTokenizer::id_to_piece(int32_t id) const {
  if (id < 0 || id >= piece_size())
    throw ArgumentError("id " + std::to_string(id) + " is out of range [0, " + std::to_string(piece_size()) + ")");
  return impl_->proto.pieces[size_t(id)].piece;
}

int32_t SentencePieceTokenizer::piece_to_id(std::string_view piece) const { return impl_->piece_to_id(piece); }

int32_t SentencePieceTokenizer::bos_id() const { return impl_->control_or_minus_one(impl_->proto.bos_piece); }
int32_t SentencePieceTokenizer::eos_id() const { return impl_->control_or_minus_one(impl_->proto.eos_piece); }
int32_t SentencePieceTokenizer::pad_id() const { return impl_->control_or_minus_one(impl_->proto.pad_piece); }
int32_t SentencePieceTokenizer::unk_id() const {
  const int32_t id = impl_->piece_to_id(impl_->proto.unk_piece);
  return impl_->type(id) == kUnknown ? id : -1;
}

}  // namespace ondevice
