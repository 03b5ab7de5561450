// UTF-8 helpers with SentencePiece's exact conventions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ondevice {
namespace spm {

// Length of the UTF-8 sequence a lead byte announces, as sentencepiece's
// OneCharLen: by the high nibble, 0x0-0xB -> 1 (continuation bytes count as
// one-byte characters), 0xC-0xD -> 2, 0xE -> 3, 0xF -> 4. Callers clamp it to
// the bytes left.
inline size_t one_char_len(uint8_t lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

// Decodes the character at s[0..n) (n >= 1) strictly: no overlong forms, no
// surrogates, nothing above U+10FFFF. Returns its length and sets *valid; an
// invalid sequence gives length 1 and *valid = false (sentencepiece's
// IsValidDecodeUTF8).
size_t decode_utf8(const char* s, size_t n, bool* valid, uint32_t* code_point = nullptr);

// Byte offset of the first invalid UTF-8 sequence in s, or npos if s is valid.
size_t find_invalid_utf8(std::string_view s);

}  // namespace spm
}  // namespace ondevice
