// UTF-8 decoding (see utf8.h).
#include "tokenizer/utf8.h"

namespace ondevice {
namespace spm {

namespace {
inline bool trail(uint8_t b) { return (b & 0xC0) == 0x80; }
inline bool scalar_value(uint32_t c) { return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF); }
}  // namespace

size_t decode_utf8(const char* s, size_t n, bool* valid, uint32_t* code_point) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(s);
  uint32_t c = 0;
  size_t len = 0;
  if (p[0] < 0x80) {
    c = p[0];
    len = 1;
  } else if (n >= 2 && (p[0] & 0xE0) == 0xC0 && trail(p[1])) {
    c = (uint32_t(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
    if (c >= 0x80) len = 2;
  } else if (n >= 3 && (p[0] & 0xF0) == 0xE0 && trail(p[1]) && trail(p[2])) {
    c = (uint32_t(p[0] & 0x0F) << 12) | (uint32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    if (c >= 0x800 && scalar_value(c)) len = 3;
  } else if (n >= 4 && (p[0] & 0xF8) == 0xF0 && trail(p[1]) && trail(p[2]) && trail(p[3])) {
    c = (uint32_t(p[0] & 0x07) << 18) | (uint32_t(p[1] & 0x3F) << 12) | (uint32_t(p[2] & 0x3F) << 6) |
        (p[3] & 0x3F);
    if (c >= 0x10000 && scalar_value(c)) len = 4;
  }
  if (len == 0) {
    *valid = false;
    if (code_point) *code_point = 0xFFFD;
    return 1;
  }
  *valid = true;
  if (code_point) *code_point = c;
  return len;
}

size_t find_invalid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (uint8_t(s[i]) < 0x80) {  // ASCII fast path
      ++i;
      continue;
    }
    bool valid = false;
    const size_t len = decode_utf8(s.data() + i, s.size() - i, &valid);
    if (!valid) return i;
    i += len;
  }
  return std::string_view::npos;
}

}  // namespace spm
}  // namespace ondevice
