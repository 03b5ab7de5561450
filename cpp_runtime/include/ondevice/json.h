// A small, dependency-free, strict JSON reader (RFC 8259) for the runtime's
// own files (manifest.json and the like).
//
// The runtime must cross-compile for Android with nothing but a C++17
// toolchain, and must never crash on a hostile file, so this reader:
//   - accepts exactly RFC 8259 JSON: UTF-8 only and validated (no overlong
//     forms, no surrogates, no code points past U+10FFFF, no byte order
//     mark), \uXXXX escapes with surrogate pairs (a lone surrogate is an
//     error), no comments, no trailing commas, no NaN/Infinity, no leading
//     zeros or '+', only space/tab/LF/CR as whitespace, nothing after the
//     value;
//   - converts numbers like strtod in the "C" locale, whatever the process
//     locale (a number too large for a double is an error; one too small
//     becomes 0 or a subnormal, as strtod gives);
//   - rejects duplicate object keys;
//   - bounds everything a hostile input could inflate (JsonLimits: input
//     size, nesting depth, total number of values), parses without recursion
//     and destroys values without recursion, so no input can exhaust the
//     stack whatever max_depth is;
//   - reports every error as ondevice::FormatError: parse errors give the
//     byte offset (and line and column), errors of the typed accessors give
//     the location of the value as a JSON pointer ("/graphs/encoder/file").
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ondevice {

struct JsonPathNode;  // where a value sits in its document (json.cc)

class JsonValue {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  // A null at the document root.
  JsonValue() = default;
  ~JsonValue();  // iterative: destroying a deeply nested value uses no deep recursion
  JsonValue(const JsonValue& other);  // copies recurse once per level of nesting
  JsonValue(JsonValue&& other) noexcept;
  JsonValue& operator=(const JsonValue& other);
  JsonValue& operator=(JsonValue&& other) noexcept;

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  // Typed accessors: FormatError("<path>: expected a string, got a number")
  // when the value has another type.
  bool as_bool() const;
  double as_number() const;
  const std::string& as_string() const;
  // The number as an integer: FormatError unless it is integral and a "safe"
  // integer, |x| <= 2^53 - 1 (beyond that a double cannot tell neighbouring
  // integers apart, so the file's digits may not be what was parsed).
  int64_t as_int() const;
  const std::vector<JsonValue>& as_array() const;
  // An object's members, in file order (keys are unique: duplicates are a
  // parse error).
  const std::vector<std::pair<std::string, JsonValue>>& members() const;

  // The member named `key`, or nullptr if there is none; FormatError if this
  // is not an object.
  const JsonValue* find(const std::string& key) const;
  // The member named `key`; FormatError "<path>: missing key 'key'" if there
  // is none, or if this is not an object.
  const JsonValue& at(const std::string& key) const;

  // Where this value sits in the document it was parsed from, as a JSON
  // pointer (RFC 6901: "/graphs/encoder/inputs/0", with '~' and '/' in keys
  // written "~0" and "~1"); "" for the document root. Built on demand from a
  // chain shared with the parent, so storing it costs no memory per level of
  // nesting (returned by value for that reason).
  std::string path() const;

  // How error messages name this value: path(), or "(root)" for the root.
  std::string describe_location() const;

 private:
  friend class JsonParser;

  [[noreturn]] void throw_type_error(const char* expected) const;
  // Leaves this value without children: those with children of their own
  // are moved onto `out`, the others destroyed.
  void take_children(std::vector<JsonValue>& out);

  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  std::vector<JsonValue> array_;
  std::vector<std::pair<std::string, JsonValue>> object_;
  std::shared_ptr<JsonPathNode> where_;  // null at the root
};

// A parsed value takes about 200 bytes (with its location), so the default
// item limit bounds a document's memory to about 200 MiB.
struct JsonLimits {
  size_t max_bytes = 16u << 20;  // input size
  int max_depth = 64;            // nesting of arrays and objects (a scalar document has depth 0)
  size_t max_items = 1u << 20;   // values in the whole document, containers and scalars alike
};

// Parses one JSON document (RFC 8259, strictly; see above). Throws FormatError
// "JSON error at byte N (line L, column C): ..." on anything else, or when the
// document exceeds `limits`.
JsonValue parse_json(std::string_view text, const JsonLimits& limits = JsonLimits());

// Reads and parses the file at `path` (at most limits.max_bytes). Every
// FormatError it throws (cannot open, too large, parse error) starts with
// `path`.
JsonValue load_json_file(const std::string& path, const JsonLimits& limits = JsonLimits());

}  // namespace ondevice
