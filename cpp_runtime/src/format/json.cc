// Strict, bounds-checked JSON reader (see ondevice/json.h).
//
// The parser is a loop over an explicit stack of open arrays and objects (no
// recursion), reading the input through one bounds-checked cursor. Every
// value records where it sits in the document as a node in a chain shared with
// its parent (JsonPathNode), so a path costs one small node per value however
// deep or long-keyed the document is; JsonValue::path() spells it out on demand.
#include "ondevice/json.h"

#include <algorithm>
#include <charconv>
#include <clocale>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <system_error>

#include "format/mapped_file.h"
#include "ondevice/error.h"

// std::from_chars for double converts exactly like strtod in the "C" locale
// (libstdc++ since GCC 11). Where the standard library lacks it (older libc++,
// as in some Android NDKs), strtod is used with the decimal point of the
// current locale substituted in. ONDEVICE_JSON_USE_STRTOD forces the fallback
// (to test it).
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L && !defined(ONDEVICE_JSON_USE_STRTOD)
#define ONDEVICE_JSON_FROM_CHARS 1
#else
#define ONDEVICE_JSON_FROM_CHARS 0
#endif

namespace ondevice {

// One step of a value's location: an array index or an object key, below the
// parent's location (null parent: directly below the document root).
struct JsonPathNode {
  std::shared_ptr<JsonPathNode> parent;
  std::string key;
  size_t index = 0;
  bool is_index = false;

  JsonPathNode() = default;
  JsonPathNode(const JsonPathNode&) = delete;
  JsonPathNode& operator=(const JsonPathNode&) = delete;
  // Releases the chain of ancestors this node alone keeps alive one by one,
  // rather than by a recursion as deep as the document.
  ~JsonPathNode() {
    std::shared_ptr<JsonPathNode> p = std::move(parent);
    while (p && p.use_count() == 1) {
      std::shared_ptr<JsonPathNode> next = std::move(p->parent);
      p = std::move(next);  // destroys the old node, which no longer has a parent
    }
  }
};

namespace {

const char* type_name(JsonValue::Type t) {
  switch (t) {
    case JsonValue::Type::kNull:
      return "null";
    case JsonValue::Type::kBool:
      return "a boolean";
    case JsonValue::Type::kNumber:
      return "a number";
    case JsonValue::Type::kString:
      return "a string";
    case JsonValue::Type::kArray:
      return "an array";
    case JsonValue::Type::kObject:
      return "an object";
  }
  return "a value";
}

// A string for an error message: at most 64 bytes of it, control characters
// and bytes outside ASCII as \xNN.
std::string printable(std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  const size_t n = std::min<size_t>(s.size(), 64);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7F) {
      out += char(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (n < s.size()) out += "...";
  return out;
}

// How an error message names the byte `c` found in the input.
std::string describe_byte(unsigned char c) {
  if (c >= 0x21 && c < 0x7F) return std::string("'") + char(c) + "'";
  char buf[16];
  std::snprintf(buf, sizeof buf, "byte 0x%02x", unsigned(c));
  return buf;
}

std::string format_number(double x) {
  char buf[64];
#if ONDEVICE_JSON_FROM_CHARS
  const auto r = std::to_chars(buf, buf + sizeof buf - 1, x);
  *r.ptr = '\0';
#else
  for (int precision = 15; precision <= 17; ++precision) {  // the shortest that reads back the same
    std::snprintf(buf, sizeof buf, "%.*g", precision, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
#endif
  return buf;
}

bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

#if ONDEVICE_JSON_FROM_CHARS
// The decimal exponent of the first significant digit of a number literal
// that matched the JSON grammar (1.5e3 -> 3, 0.002 -> -3), saturated far
// beyond the range of a double; 0 for a zero.
int64_t leading_decimal_exponent(const char* p, const char* end) {
  if (p < end && *p == '-') ++p;
  int64_t int_digits = 0, leading_frac_zeros = 0;
  bool significant = false;
  for (; p < end && is_digit(static_cast<unsigned char>(*p)); ++p) {
    if (significant || *p != '0') {
      significant = true;
      ++int_digits;
    }
  }
  if (p < end && *p == '.') {
    for (++p; p < end && is_digit(static_cast<unsigned char>(*p)); ++p) {
      if (significant) continue;
      if (*p == '0') {
        ++leading_frac_zeros;
      } else {
        significant = true;
      }
    }
  }
  if (!significant) return 0;
  int64_t exp = 0;
  if (p < end && (*p == 'e' || *p == 'E')) {
    ++p;
    bool negative = false;
    if (p < end && (*p == '+' || *p == '-')) negative = *p++ == '-';
    for (; p < end && is_digit(static_cast<unsigned char>(*p)); ++p) {
      if (exp < (int64_t(1) << 40)) exp = exp * 10 + (*p - '0');
    }
    if (negative) exp = -exp;
  }
  return int_digits > 0 ? exp + int_digits - 1 : exp - leading_frac_zeros - 1;
}
#endif

}  // namespace

// ---------------------------------------------------------------------------
// JsonValue

JsonValue::JsonValue(const JsonValue& other) = default;
JsonValue::JsonValue(JsonValue&& other) noexcept = default;

JsonValue& JsonValue::operator=(const JsonValue& other) {
  if (this != &other) {
    JsonValue copy(other);
    *this = std::move(copy);
  }
  return *this;
}

JsonValue& JsonValue::operator=(JsonValue&& other) noexcept {
  if (this != &other) {
    // The old contents leave through `old`'s (iterative) destructor, after the
    // new ones are in place: `other` may even be one of them.
    JsonValue old(std::move(*this));
    type_ = other.type_;
    bool_ = other.bool_;
    number_ = other.number_;
    string_ = std::move(other.string_);
    array_ = std::move(other.array_);
    object_ = std::move(other.object_);
    where_ = std::move(other.where_);
  }
  return *this;
}

void JsonValue::take_children(std::vector<JsonValue>& out) {
  // Children without children of their own are destroyed in place (clear()),
  // so a flat array is not moved anywhere.
  for (JsonValue& c : array_)
    if (!c.array_.empty() || !c.object_.empty()) out.push_back(std::move(c));
  for (auto& m : object_)
    if (!m.second.array_.empty() || !m.second.object_.empty()) out.push_back(std::move(m.second));
  array_.clear();
  object_.clear();
}

JsonValue::~JsonValue() {
  if (array_.empty() && object_.empty()) return;
  try {
    std::vector<JsonValue> pending;
    take_children(pending);
    while (!pending.empty()) {
      JsonValue v(std::move(pending.back()));
      pending.pop_back();
      v.take_children(pending);
    }
  } catch (...) {
    // Out of memory for the work list: whatever is left is destroyed the
    // ordinary way, one recursion per level of nesting.
  }
}

void JsonValue::throw_type_error(const char* expected) const {
  throw FormatError(describe_location() + ": expected " + expected + ", got " + type_name(type_));
}

bool JsonValue::as_bool() const {
  if (type_ != Type::kBool) throw_type_error("a boolean");
  return bool_;
}

double JsonValue::as_number() const {
  if (type_ != Type::kNumber) throw_type_error("a number");
  return number_;
}

const std::string& JsonValue::as_string() const {
  if (type_ != Type::kString) throw_type_error("a string");
  return string_;
}

int64_t JsonValue::as_int() const {
  if (type_ != Type::kNumber) throw_type_error("an integer");
  const double x = number_;
  if (std::floor(x) != x)
    throw FormatError(describe_location() + ": expected an integer, got " + format_number(x));
  constexpr double kMaxSafe = 9007199254740991.0;  // 2^53 - 1
  if (std::fabs(x) > kMaxSafe)
    throw FormatError(describe_location() + ": integer " + format_number(x) +
                      " is outside the exactly representable range +-(2^53 - 1)");
  return static_cast<int64_t>(x);
}

const std::vector<JsonValue>& JsonValue::as_array() const {
  if (type_ != Type::kArray) throw_type_error("an array");
  return array_;
}

const std::vector<std::pair<std::string, JsonValue>>& JsonValue::members() const {
  if (type_ != Type::kObject) throw_type_error("an object");
  return object_;
}

const JsonValue* JsonValue::find(const std::string& key) const {
  if (type_ != Type::kObject) throw_type_error("an object");
  for (const auto& m : object_)
    if (m.first == key) return &m.second;
  return nullptr;
}

const JsonValue& JsonValue::at(const std::string& key) const {
  const JsonValue* v = find(key);
  if (v == nullptr) throw FormatError(describe_location() + ": missing key '" + key + "'");
  return *v;
}

std::string JsonValue::path() const {
  std::vector<const JsonPathNode*> chain;
  for (const JsonPathNode* n = where_.get(); n != nullptr; n = n->parent.get()) chain.push_back(n);
  std::string out;
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    out += '/';
    if ((*it)->is_index) {
      out += std::to_string((*it)->index);
      continue;
    }
    for (char c : (*it)->key) {  // RFC 6901 escapes
      if (c == '~') {
        out += "~0";
      } else if (c == '/') {
        out += "~1";
      } else {
        out += c;
      }
    }
  }
  return out;
}

std::string JsonValue::describe_location() const { return where_ ? path() : std::string("(root)"); }

// ---------------------------------------------------------------------------
// The parser

class JsonParser {
 public:
  JsonParser(std::string_view text, const JsonLimits& limits) : text_(text), limits_(limits) {}
  JsonValue parse();

 private:
  // An array or object being filled.
  struct Frame {
    JsonValue value;
    std::string key;                  // object: the key of the member being read
    size_t key_offset = 0;            // ... and where it starts
    std::vector<size_t> key_offsets;  // object: where each member's key starts
  };

  [[noreturn]] void fail(size_t at, const std::string& what) const;
  bool at_end() const { return pos_ >= text_.size(); }
  unsigned char peek() const { return static_cast<unsigned char>(text_[pos_]); }
  void skip_whitespace();
  void count_value(size_t at);
  std::string unexpected(const char* expected) const;
  void read_literal(const char* literal);
  double read_number();
  std::string read_string();
  size_t check_utf8(size_t at) const;
  void read_key(Frame& frame, bool after_comma);
  std::shared_ptr<JsonPathNode> child_location(const Frame& frame) const;
  void add_to(Frame& frame, JsonValue&& v);
  void check_unique_keys(const Frame& frame) const;

  std::string_view text_;
  JsonLimits limits_;
  size_t pos_ = 0;
  size_t values_ = 0;
};

void JsonParser::fail(size_t at, const std::string& what) const {
  at = std::min(at, text_.size());
  size_t line = 1, line_start = 0;
  for (size_t i = 0; i < at; ++i) {
    if (text_[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  throw FormatError("JSON error at byte " + std::to_string(at) + " (line " + std::to_string(line) + ", column " +
                    std::to_string(at - line_start + 1) + "): " + what);
}

void JsonParser::skip_whitespace() {
  while (!at_end()) {
    const unsigned char c = peek();
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
    ++pos_;
  }
}

void JsonParser::count_value(size_t at) {
  if (++values_ > limits_.max_items)
    fail(at, "more than " + std::to_string(limits_.max_items) + " values (the item limit)");
}

// The message for an unexpected byte (or end of input) at pos_.
std::string JsonParser::unexpected(const char* expected) const {
  if (at_end()) return std::string("unexpected end of input, expected ") + expected;
  const unsigned char c = peek();
  if (c == '/') return std::string("comments are not allowed (expected ") + expected + ")";
  return "unexpected " + describe_byte(c) + ", expected " + expected;
}

void JsonParser::read_literal(const char* literal) {
  const size_t start = pos_, n = std::strlen(literal);
  for (size_t i = 0; i < n; ++i, ++pos_) {
    if (at_end()) fail(pos_, std::string("unexpected end of input in literal '") + literal + "'");
    if (peek() != static_cast<unsigned char>(literal[i]))
      fail(start, std::string("invalid literal (expected '") + literal + "')");
  }
}

double JsonParser::read_number() {
  const size_t start = pos_;
  if (peek() == '-') ++pos_;
  if (at_end() || !is_digit(peek())) fail(pos_, unexpected("a digit after '-'"));
  if (peek() == '0') {
    ++pos_;
    if (!at_end() && is_digit(peek())) fail(start, "leading zeros are not allowed in numbers");
  } else {
    while (!at_end() && is_digit(peek())) ++pos_;
  }
  if (!at_end() && peek() == '.') {
    ++pos_;
    if (at_end() || !is_digit(peek())) fail(pos_, unexpected("a digit after the decimal point"));
    while (!at_end() && is_digit(peek())) ++pos_;
  }
  if (!at_end() && (peek() == 'e' || peek() == 'E')) {
    ++pos_;
    if (!at_end() && (peek() == '+' || peek() == '-')) ++pos_;
    if (at_end() || !is_digit(peek())) fail(pos_, unexpected("a digit in the exponent"));
    while (!at_end() && is_digit(peek())) ++pos_;
  }
  const char* const first = text_.data() + start;
  const char* const last = text_.data() + pos_;
  const auto out_of_range = [&] {
    return "number " + printable(std::string_view(first, size_t(last - first))) + " is out of the range of a double";
  };
#if ONDEVICE_JSON_FROM_CHARS
  double value = 0.0;
  const std::from_chars_result r = std::from_chars(first, last, value);
  if (r.ptr != last) fail(start, "invalid number");  // cannot happen: the grammar was checked
  if (r.ec == std::errc::result_out_of_range) {
    // Too large (strtod: +-HUGE_VAL), or so small it rounds to zero (strtod:
    // +-0), which is no error.
    if (leading_decimal_exponent(first, last) >= 0) fail(start, out_of_range());
    return *first == '-' ? -0.0 : 0.0;
  }
  if (r.ec != std::errc()) fail(start, "invalid number");
#else
  std::string literal(first, last);
  const std::lconv* lc = std::localeconv();
  const std::string point = lc && lc->decimal_point && *lc->decimal_point ? lc->decimal_point : ".";
  if (point != ".") {
    const size_t dot = literal.find('.');
    if (dot != std::string::npos) literal.replace(dot, 1, point);
  }
  char* end = nullptr;
  const double value = std::strtod(literal.c_str(), &end);
  if (end != literal.c_str() + literal.size()) fail(start, "invalid number");
#endif
  if (!std::isfinite(value)) fail(start, out_of_range());
  return value;
}

// Checks the UTF-8 sequence starting at byte `at` (not ASCII) and returns its
// length (RFC 3629: shortest form only, no surrogates, at most U+10FFFF).
size_t JsonParser::check_utf8(size_t at) const {
  const auto byte = [&](size_t i) -> int {
    return at + i < text_.size() ? static_cast<unsigned char>(text_[at + i]) : -1;
  };
  const int b0 = byte(0);
  size_t len;
  int lo = 0x80, hi = 0xBF;  // range of the second byte
  if (b0 < 0x80) {
    return 1;
  } else if (b0 < 0xC0) {
    fail(at, "invalid UTF-8: unexpected continuation byte " + describe_byte(uint8_t(b0)));
  } else if (b0 < 0xC2) {
    fail(at, "invalid UTF-8: overlong encoding (lead " + describe_byte(uint8_t(b0)) + ")");
  } else if (b0 < 0xE0) {
    len = 2;
  } else if (b0 < 0xF0) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // below: overlong
    if (b0 == 0xED) hi = 0x9F;  // above: UTF-16 surrogates
  } else if (b0 < 0xF5) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // below: overlong
    if (b0 == 0xF4) hi = 0x8F;  // above: beyond U+10FFFF
  } else {
    fail(at, "invalid UTF-8: " + describe_byte(uint8_t(b0)) + " never occurs in UTF-8");
  }
  for (size_t i = 1; i < len; ++i) {
    const int b = byte(i);
    if (b < 0) fail(at + i, "invalid UTF-8: sequence truncated by the end of input");
    if (b < 0x80 || b > 0xBF) fail(at + i, "invalid UTF-8: sequence truncated (" + describe_byte(uint8_t(b)) +
                                               " is not a continuation byte)");
    if (i == 1 && (b < lo || b > hi)) {
      const char* why = b0 == 0xED ? "encoded UTF-16 surrogate"
                        : b0 == 0xF4 ? "code point beyond U+10FFFF"
                                     : "overlong encoding";
      fail(at, std::string("invalid UTF-8: ") + why);
    }
  }
  return len;
}

std::string JsonParser::read_string() {
  const size_t start = pos_;
  ++pos_;  // the opening quote
  std::string out;
  for (;;) {
    if (at_end()) fail(pos_, "unexpected end of input in the string starting at byte " + std::to_string(start));
    const unsigned char c = peek();
    if (c == '"') {
      ++pos_;
      return out;
    }
    if (c < 0x20) {
      char buf[80];
      std::snprintf(buf, sizeof buf, "control character U+%04X in a string (must be escaped)", unsigned(c));
      fail(pos_, buf);
    }
    if (c >= 0x80) {
      const size_t n = check_utf8(pos_);
      out.append(text_.data() + pos_, n);
      pos_ += n;
      continue;
    }
    if (c != '\\') {
      // A run of plain ASCII at once.
      size_t end = pos_ + 1;
      while (end < text_.size()) {
        const unsigned char d = static_cast<unsigned char>(text_[end]);
        if (d == '"' || d == '\\' || d < 0x20 || d >= 0x80) break;
        ++end;
      }
      out.append(text_.data() + pos_, end - pos_);
      pos_ = end;
      continue;
    }
    const size_t escape = pos_++;
    if (at_end()) fail(pos_, "unexpected end of input in an escape sequence");
    const unsigned char e = peek();
    ++pos_;
    switch (e) {
      case '"':
        out += '"';
        break;
      case '\\':
        out += '\\';
        break;
      case '/':
        out += '/';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'u': {
        const auto hex4 = [&](size_t at) -> uint32_t {
          uint32_t v = 0;
          for (size_t i = 0; i < 4; ++i) {
            if (at + i >= text_.size()) fail(at + i, "unexpected end of input in a \\u escape");
            const int h = hex_value(static_cast<unsigned char>(text_[at + i]));
            if (h < 0) fail(at + i, "invalid \\u escape: expected 4 hex digits");
            v = v * 16 + uint32_t(h);
          }
          return v;
        };
        uint32_t cp = hex4(pos_);
        pos_ += 4;
        if (cp >= 0xDC00 && cp <= 0xDFFF) fail(escape, "lone low surrogate in a \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (pos_ + 1 >= text_.size() || text_[pos_] != '\\' || text_[pos_ + 1] != 'u')
            fail(escape, "lone high surrogate in a \\u escape (not followed by a \\u low surrogate)");
          const uint32_t low = hex4(pos_ + 2);
          if (low < 0xDC00 || low > 0xDFFF)
            fail(escape, "lone high surrogate in a \\u escape (followed by a \\u escape that is no low surrogate)");
          pos_ += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        append_utf8(out, cp);
        break;
      }
      default:
        fail(escape, "invalid escape sequence '\\" + printable(std::string_view(text_.data() + escape + 1, 1)) +
                         "' in a string");
    }
  }
}

void JsonParser::read_key(Frame& frame, bool after_comma) {
  skip_whitespace();
  if (at_end() || peek() != '"') {
    if (after_comma && !at_end() && peek() == '}') fail(pos_, "trailing comma before '}'");
    fail(pos_, unexpected("a string (an object key)"));
  }
  frame.key_offset = pos_;
  frame.key = read_string();
  skip_whitespace();
  if (at_end() || peek() != ':') fail(pos_, unexpected("':' after an object key"));
  ++pos_;
}

std::shared_ptr<JsonPathNode> JsonParser::child_location(const Frame& frame) const {
  auto node = std::make_shared<JsonPathNode>();
  node->parent = frame.value.where_;
  if (frame.value.type_ == JsonValue::Type::kArray) {
    node->is_index = true;
    node->index = frame.value.array_.size();
  } else {
    node->key = frame.key;
  }
  return node;
}

void JsonParser::add_to(Frame& frame, JsonValue&& v) {
  if (frame.value.type_ == JsonValue::Type::kArray) {
    frame.value.array_.push_back(std::move(v));
  } else {
    frame.value.object_.emplace_back(std::move(frame.key), std::move(v));
    frame.key_offsets.push_back(frame.key_offset);
  }
}

// Duplicate keys: sorted once the object is complete (O(n log n) whatever the
// keys, where a hash set could be driven quadratic by colliding keys). Reports
// the duplicate that comes first in the file.
void JsonParser::check_unique_keys(const Frame& frame) const {
  const auto& members = frame.value.object_;
  if (members.size() < 2) return;
  std::vector<size_t> order(members.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const int c = members[a].first.compare(members[b].first);
    return c != 0 ? c < 0 : a < b;
  });
  size_t dup = members.size();
  for (size_t i = 1; i < order.size(); ++i)
    if (members[order[i]].first == members[order[i - 1]].first) dup = std::min(dup, order[i]);
  if (dup < members.size())
    fail(frame.key_offsets[dup], "duplicate key '" + printable(members[dup].first) + "' in an object");
}

JsonValue JsonParser::parse() {
  if (text_.size() > limits_.max_bytes)
    throw FormatError("JSON error: document of " + std::to_string(text_.size()) + " bytes exceeds the limit of " +
                      std::to_string(limits_.max_bytes) + " bytes");
  if (text_.size() >= 3 && text_.compare(0, 3, "\xEF\xBB\xBF") == 0)
    fail(0, "byte order mark at the start (not allowed in JSON)");
  const size_t max_depth = limits_.max_depth > 0 ? size_t(limits_.max_depth) : 0;

  std::vector<Frame> open;  // arrays and objects not yet closed, outermost first
  std::shared_ptr<JsonPathNode> location;  // of the value about to be read
  bool after_comma = false;
  for (;;) {
    // Read one value: a scalar (complete), or the start of an array or object.
    skip_whitespace();
    if (at_end()) fail(pos_, open.empty() ? "empty document (expected a JSON value)" : unexpected("a value"));
    const size_t start = pos_;
    const unsigned char c = peek();
    if (after_comma && (c == ']' || c == '}')) fail(pos_, std::string("trailing comma before '") + char(c) + "'");
    count_value(start);
    JsonValue value;
    value.where_ = std::move(location);
    bool complete = true;
    if (c == '[' || c == '{') {
      if (open.size() >= max_depth)
        fail(start, "arrays and objects nested deeper than the limit of " + std::to_string(max_depth));
      ++pos_;
      value.type_ = c == '[' ? JsonValue::Type::kArray : JsonValue::Type::kObject;
      open.emplace_back();
      open.back().value = std::move(value);
      skip_whitespace();
      const char close = c == '[' ? ']' : '}';
      if (!at_end() && peek() == static_cast<unsigned char>(close)) {  // empty
        ++pos_;
        value = std::move(open.back().value);
        open.pop_back();
      } else {
        if (c == '{') read_key(open.back(), false);
        location = child_location(open.back());
        complete = false;
      }
    } else if (c == '"') {
      value.type_ = JsonValue::Type::kString;
      value.string_ = read_string();
    } else if (c == '-' || is_digit(c)) {
      value.type_ = JsonValue::Type::kNumber;
      value.number_ = read_number();
    } else if (c == 't' || c == 'f') {
      value.type_ = JsonValue::Type::kBool;
      value.bool_ = c == 't';
      read_literal(c == 't' ? "true" : "false");
    } else if (c == 'n') {
      read_literal("null");
    } else if (c == 'N' || c == 'I') {
      fail(pos_, unexpected("a value (NaN and Infinity are not JSON)"));
    } else {
      fail(pos_, unexpected("a value"));
    }
    after_comma = false;
    if (!complete) continue;

    // Add the complete value to the innermost open container, closing the
    // containers it completes, until one expects another value.
    for (;;) {
      if (open.empty()) {
        skip_whitespace();
        if (!at_end()) fail(pos_, "unexpected " + describe_byte(peek()) + " after the JSON value");
        return value;
      }
      Frame& frame = open.back();
      const bool is_array = frame.value.type_ == JsonValue::Type::kArray;
      add_to(frame, std::move(value));
      skip_whitespace();
      if (!at_end() && peek() == ',') {
        ++pos_;
        after_comma = true;
        if (!is_array) read_key(frame, true);
        location = child_location(frame);
        break;
      }
      if (!at_end() && peek() == (is_array ? ']' : '}')) {
        ++pos_;
        if (!is_array) check_unique_keys(frame);
        value = std::move(frame.value);
        open.pop_back();
        continue;
      }
      fail(pos_, unexpected(is_array ? "',' or ']' after an array element" : "',' or '}' after an object member"));
    }
  }
}

// ---------------------------------------------------------------------------

JsonValue parse_json(std::string_view text, const JsonLimits& limits) { return JsonParser(text, limits).parse(); }

JsonValue load_json_file(const std::string& path, const JsonLimits& limits) {
  std::shared_ptr<std::vector<uint8_t>> buffer;
  try {
    buffer = read_whole_file(path, limits.max_bytes, "JSON size limit");
  } catch (const FormatError& e) {
    const std::string what = e.what();
    if (what.compare(0, path.size(), path) == 0) throw;
    throw FormatError(path + ": " + what);
  }
  try {
    return parse_json(std::string_view(reinterpret_cast<const char*>(buffer->data()), buffer->size()), limits);
  } catch (const FormatError& e) {
    throw FormatError(path + ": " + e.what());
  }
}

}  // namespace ondevice
