// JSON reader tests: valid documents of every kind (escapes, Unicode, nesting,
// numbers converted exactly as strtod does), the shipped ONNX manifest, the
// typed accessors and their messages, every strict-rejection rule with its
// message, every truncation of a valid document, UTF-8 validation against an
// independent decoder over all short sequences, ten thousand random
// corruptions (each parses or throws FormatError), a 100k-deep nesting bomb,
// and the size, depth and item limits.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <clocale>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ondevice/error.h"
#include "ondevice/json.h"
#include "test_util.h"

using namespace ondevice;

namespace {

// The FormatError message parse_json gives for `text`, or "" if it parses.
// Any other exception fails the test.
std::string parse_error(const std::string& text, const JsonLimits& limits = JsonLimits()) {
  try {
    parse_json(text, limits);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

void check_rejects(const std::string& text, const std::string& fragment, int line,
                   const JsonLimits& limits = JsonLimits()) {
  const std::string msg = parse_error(text, limits);
  if (msg.empty() || msg.find(fragment) == std::string::npos) {
    std::ostringstream os;
    os << __FILE__ << ":" << line << ": parsing <" << text.substr(0, 80) << "> gave "
       << (msg.empty() ? std::string("no error") : "\"" + msg + "\"") << ", expected an error containing \""
       << fragment << "\"";
    throw testing::Failure{os.str()};
  }
}
#define CHECK_REJECTS(text, fragment) check_rejects((text), (fragment), __LINE__)

// The message of the FormatError that `fn` throws ("" if none).
template <typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

// An independent UTF-8 check (decode, then test the code point), to compare
// the parser's range tables with.
bool reference_valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (b < 0x80) {
      ++i;
      continue;
    } else if ((b & 0xE0) == 0xC0) {
      n = 2;
      cp = b & 0x1F;
    } else if ((b & 0xF0) == 0xE0) {
      n = 3;
      cp = b & 0x0F;
    } else if ((b & 0xF8) == 0xF0) {
      n = 4;
      cp = b & 0x07;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const unsigned char c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    const uint32_t min_cp = n == 2 ? 0x80 : n == 3 ? 0x800 : 0x10000;
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

// Visits every value of a parsed document through the public API (checking
// what must hold of any parsed value); returns the number of values.
size_t walk(const JsonValue& v, const std::string& expected_path) {
  CHECK_MSG(v.path() == expected_path, v.path() << " != " << expected_path);
  size_t n = 1;
  switch (v.type()) {
    case JsonValue::Type::kNull:
      CHECK(v.is_null());
      break;
    case JsonValue::Type::kBool:
      (void)v.as_bool();
      break;
    case JsonValue::Type::kNumber:
      CHECK(std::isfinite(v.as_number()));
      break;
    case JsonValue::Type::kString:
      CHECK(reference_valid_utf8(v.as_string()));
      break;
    case JsonValue::Type::kArray:
      for (size_t i = 0; i < v.as_array().size(); ++i)
        n += walk(v.as_array()[i], expected_path + "/" + std::to_string(i));
      break;
    case JsonValue::Type::kObject:
      for (const auto& m : v.members()) {
        CHECK(reference_valid_utf8(m.first));
        CHECK(v.find(m.first) == &m.second);  // keys are unique
        std::string key;
        for (char c : m.first) key += c == '~' ? std::string("~0") : c == '/' ? std::string("~1") : std::string(1, c);
        n += walk(m.second, expected_path + "/" + key);
      }
      break;
  }
  return n;
}

// A document with every kind of value, escapes, Unicode and nesting; starts
// with '{' and ends with '}', so that no proper prefix of it is valid.
const std::string kSample =
    "{\n"
    "  \"null\": null, \"t\": true, \"f\": false,\n"
    "  \"numbers\": [0, -0, 1, -1, 12.5, -0.25, 1e3, 1E-3, 2.5e+2, 123456789012, 0.1],\n"
    "  \"escapes\": \"q\\\" b\\\\ s\\/ \\b\\f\\n\\r\\t \\u0041\\u00e9\\u20AC\\uD83D\\uDE00\",\n"
    "  \"raw\": \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbd\",\n"
    "  \"empty\": {\"a\": [], \"o\": {}, \"s\": \"\"},\n"
    "  \"nested\": [[1, [2, [3, {\"deep\": [true]}]]], {\"x\": {\"y\": {\"z\": null}}}],\n"
    "  \"a/b~c\": {\"\": \"empty key\"},\n"
    "\t\"ws\"\r\n:\r\n[ 1 , 2 ]\n"
    "}";

// A realistic manifest (the shape of models/nmt-en-de-bcq/onnx/manifest.json).
const std::string kManifest = R"({
 "format": "ondevice-onnx-model",
 "format_version": "1.0",
 "model_kind": "nmt-transformer",
 "quantized": true,
 "src": "en",
 "tgt": "de",
 "vocab_size": 8000,
 "special_ids": {"bos": 0, "pad": 1, "eos": 2, "unk": 3},
 "model_config": {"d_model": 256, "ffn_dim": 1024, "heads": 4, "dropout": 0.1, "norm": "post",
                  "share_all_embeddings": true},
 "source": {
  "kind": "packed",
  "average_bits": 2.26224173553719,
  "quant_plan": {"name": "sens_2.3bit", "embedding": {"ratio": 2, "bits": [4, 3, 2, 1]},
                 "group_size": null, "offset": false, "alpha_dtype": "float32"}
 },
 "opsets": {"ai.onnx": 18, "ondevice": 1},
 "ir_version": 8,
 "ops": ["BitPlaneGather", "BitPlaneMatMul"],
 "graphs": {
  "encoder": {"file": "encoder.onnx", "inputs": ["src_tokens"],
              "outputs": ["encoder_out", "src_pad_mask", "cross_k.0", "cross_v.0"]},
  "decoder_step": {"file": "decoder_step.onnx", "inputs": ["tokens", "src_pad_mask", "past_self_k.0"],
                   "outputs": ["logits", "present_self_k.0"]}
 },
 "kv_cache": {"layers": 3, "heads": 4, "head_dim": 64, "cross_k": ["cross_k.0", "cross_k.1", "cross_k.2"]},
 "tokenizer": "spm.model",
 "weights": "weights.bin",
 "files": [
  {"path": "decoder_step.onnx", "size": 52012,
   "sha256": "a601cb8cd166e87b53f6b6ebff49cf334a0c417ef53324d3a82261d25428e16a"},
  {"path": "weights.bin", "size": 3567872,
   "sha256": "d4bc32632b24a6b7116753b47e4b7d5ec86aed6c946df35eec50b7e986f85d7c"}
 ]
})";

// A file of the repository, found from this source file's path (CMake
// compiles it by absolute path); "" if it cannot be found.
std::string repo_file(const std::string& relative) {
  const std::string here = __FILE__, suffix = "cpp_runtime/tests/test_json.cc";
  std::string candidate = relative;
  if (here.size() >= suffix.size() && here.compare(here.size() - suffix.size(), suffix.size(), suffix) == 0)
    candidate = here.substr(0, here.size() - suffix.size()) + relative;
  struct stat st {};
  return ::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) ? candidate : std::string();
}

struct TempFile {
  std::string path;
  explicit TempFile(const std::string& contents) {
    char tmpl[] = "/tmp/ondevice_json_test_XXXXXX";
    const int fd = ::mkstemp(tmpl);
    if (fd < 0) throw testing::Failure{"mkstemp failed"};
    path = tmpl;
    const bool ok = ::write(fd, contents.data(), contents.size()) == ssize_t(contents.size());
    ::close(fd);
    if (!ok) throw testing::Failure{"cannot write " + path};
  }
  ~TempFile() { ::unlink(path.c_str()); }
};

uint64_t bits_of(double x) {
  uint64_t u;
  std::memcpy(&u, &x, 8);
  return u;
}

}  // namespace

TEST(json_valid_document_all_types) {
  const JsonValue doc = parse_json(kSample);
  CHECK(doc.is_object());
  CHECK(doc.path().empty());
  CHECK(doc.describe_location() == "(root)");
  CHECK(walk(doc, "") == 41);

  // Members keep file order.
  const char* const order[] = {"null", "t", "f", "numbers", "escapes", "raw", "empty", "nested", "a/b~c", "ws"};
  CHECK(doc.members().size() == 10);
  for (size_t i = 0; i < 10; ++i) CHECK(doc.members()[i].first == order[i]);

  CHECK(doc.at("null").is_null() && doc.at("null").type() == JsonValue::Type::kNull);
  CHECK(doc.at("t").is_bool() && doc.at("t").as_bool() && !doc.at("f").as_bool());
  const auto& nums = doc.at("numbers").as_array();
  const double expected[] = {0, -0.0, 1, -1, 12.5, -0.25, 1000, 0.001, 250, 123456789012.0, 0.1};
  CHECK(nums.size() == 11);
  for (size_t i = 0; i < nums.size(); ++i) {
    CHECK(nums[i].is_number());
    CHECK_MSG(bits_of(nums[i].as_number()) == bits_of(expected[i]), "numbers[" << i << "]");
  }
  CHECK(std::signbit(nums[1].as_number()));
  CHECK(nums[9].as_int() == 123456789012LL);
  CHECK(nums[6].as_int() == 1000 && nums[1].as_int() == 0 && nums[3].as_int() == -1);

  CHECK(doc.at("escapes").as_string() ==
        "q\" b\\ s/ \b\f\n\r\t A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
  CHECK(doc.at("raw").as_string() == "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbd");

  const JsonValue& empty = doc.at("empty");
  CHECK(empty.at("a").is_array() && empty.at("a").as_array().empty());
  CHECK(empty.at("o").is_object() && empty.at("o").members().empty());
  CHECK(empty.at("s").is_string() && empty.at("s").as_string().empty());
  CHECK(empty.find("zzz") == nullptr);

  const JsonValue& deep = doc.at("nested").as_array()[0].as_array()[1].as_array()[1].as_array()[1];
  CHECK(deep.at("deep").as_array()[0].as_bool());
  CHECK(deep.at("deep").as_array()[0].path() == "/nested/0/1/1/1/deep/0");
  CHECK(doc.at("nested").as_array()[1].at("x").at("y").at("z").path() == "/nested/1/x/y/z");

  // JSON pointer escapes in paths; the empty key.
  CHECK(doc.at("a/b~c").path() == "/a~1b~0c");
  CHECK(doc.at("a/b~c").at("").path() == "/a~1b~0c/");
  CHECK(doc.at("a/b~c").at("").as_string() == "empty key");
  CHECK(doc.at("ws").as_array()[1].as_int() == 2);

  // Scalars at the top level; surrounding whitespace.
  CHECK(parse_json("  \t\r\n42 \n").as_int() == 42);
  CHECK(parse_json("\"s\"").as_string() == "s");
  CHECK(parse_json("null").is_null());
  CHECK(parse_json("false").is_bool());
  CHECK(parse_json("[]").as_array().empty());

  // \u0000 and raw DEL are allowed in strings.
  CHECK(parse_json("\"a\\u0000b\x7f\"").as_string() == std::string("a\0b\x7f", 4));
  // The extremes of UTF-8 and of surrogate pairs.
  CHECK(parse_json("\"\\uD800\\uDC00\\uDBFF\\uDFFF\\uFFFF\\u0080\\u07ff\\u0800\"").as_string() ==
        "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\xef\xbf\xbf\xc2\x80\xdf\xbf\xe0\xa0\x80");
  CHECK(parse_json("\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"")
            .as_string()
            .size() == 21);
}

TEST(json_values_copy_and_move) {
  JsonValue a = parse_json(kSample);
  JsonValue b = a;  // copy
  CHECK(b.at("nested").as_array()[1].at("x").path() == "/nested/1/x");
  CHECK(b.at("escapes").as_string() == a.at("escapes").as_string());
  JsonValue c = std::move(a);
  CHECK(c.members().size() == 10);
  c = b;
  c = std::move(c);  // self-move leaves it intact
  CHECK(c.members().size() == 10);
  b = JsonValue();
  CHECK(b.is_null() && b.path().empty());
  JsonValue d;
  CHECK(d.is_null() && d.describe_location() == "(root)");
}

TEST(json_accessor_errors_name_the_path) {
  const JsonValue doc = parse_json(R"({"graphs": {"encoder": {"file": 3, "list": [1, 1.5, "x", 9007199254740991,
      9007199254740992, -9007199254740991, 1e300]}}})");
  const JsonValue& enc = doc.at("graphs").at("encoder");
  CHECK(error_of([&] { enc.at("file").as_string(); }) == "/graphs/encoder/file: expected a string, got a number");
  CHECK(error_of([&] { enc.at("file").as_bool(); }) == "/graphs/encoder/file: expected a boolean, got a number");
  CHECK(error_of([&] { enc.at("list").as_number(); }) == "/graphs/encoder/list: expected a number, got an array");
  CHECK(error_of([&] { enc.at("file").as_array(); }) == "/graphs/encoder/file: expected an array, got a number");
  CHECK(error_of([&] { enc.at("list").members(); }) == "/graphs/encoder/list: expected an object, got an array");
  CHECK(error_of([&] { enc.at("list").find("k"); }) == "/graphs/encoder/list: expected an object, got an array");
  CHECK(error_of([&] { enc.at("list").at("k"); }) == "/graphs/encoder/list: expected an object, got an array");
  CHECK(error_of([&] { enc.at("missing"); }) == "/graphs/encoder: missing key 'missing'");
  CHECK(error_of([&] { doc.at("x"); }) == "(root): missing key 'x'");
  CHECK(error_of([&] { doc.as_string(); }) == "(root): expected a string, got an object");
  CHECK(error_of([&] { parse_json("null").as_int(); }) == "(root): expected an integer, got null");

  const auto& list = enc.at("list").as_array();
  CHECK(list[0].as_int() == 1);
  CHECK(error_of([&] { list[1].as_int(); }) == "/graphs/encoder/list/1: expected an integer, got 1.5");
  CHECK(error_of([&] { list[2].as_int(); }) == "/graphs/encoder/list/2: expected an integer, got a string");
  CHECK(list[3].as_int() == 9007199254740991LL);
  CHECK(contains(error_of([&] { list[4].as_int(); }), "/graphs/encoder/list/4: integer 9007199254740992 is outside"));
  CHECK(list[5].as_int() == -9007199254740991LL);
  CHECK(contains(error_of([&] { list[6].as_int(); }), "/graphs/encoder/list/6: integer 1e+300 is outside"));
  CHECK(list[6].as_number() == 1e300);
}

TEST(json_numbers_convert_exactly_like_strtod) {
  // Edge cases of the double range.
  CHECK(bits_of(parse_json("1e-400").as_number()) == bits_of(0.0));  // underflow to zero is no error
  CHECK(bits_of(parse_json("-1e-400").as_number()) == bits_of(-0.0));
  CHECK(bits_of(parse_json("0.00000000000000000000000000000000000000000000000000001e-300").as_number()) == 0);
  CHECK(parse_json("4e-320").as_number() == std::strtod("4e-320", nullptr));  // subnormal
  CHECK(parse_json("4.9406564584124654e-324").as_number() == std::strtod("4.9406564584124654e-324", nullptr));
  CHECK(parse_json("2.4703282292062328e-324").as_number() > 0);
  CHECK(parse_json("2.4703282292062327e-324").as_number() == 0);
  CHECK(parse_json("1.7976931348623157e308").as_number() == 1.7976931348623157e308);
  CHECK(parse_json("1.7976931348623158e308").as_number() == 1.7976931348623157e308);
  CHECK(parse_json("0e999999999999999999999").as_number() == 0);
  CHECK(parse_json("-0.0e-999999999999999999999").as_number() == 0);
  for (const char* s : {"100000000000000000000000000000000000000000e-330",
                        "0.0000000000000000000000000000000000001e330",
                        "0.00000000000000000000000000000000000000000000000000000000000000000000000000000001e-250",
                        "123456789012345678901234567890e-350", "17976931348623157e292", "0.17976931348623157e309"})
    CHECK_MSG(bits_of(parse_json(s).as_number()) == bits_of(std::strtod(s, nullptr)), s);
  CHECK(parse_json("9007199254740993").as_number() == 9007199254740992.0);
  CHECK_REJECTS("1.7976931348623159e308", "out of the range of a double");
  CHECK_REJECTS("-1e309", "number -1e309 is out of the range of a double");
  CHECK_REJECTS("1e999999999999999999999999", "out of the range");
  CHECK_REJECTS("0.000000000000000000000001e999999999999", "out of the range");
  CHECK_REJECTS(std::string(400, '9'), "out of the range");
  CHECK_REJECTS("[1, " + std::string(400, '9') + "]", "at byte 4");
  // Many digits, converted correctly.
  const std::string long_number = "0." + std::string(3000, '3') + "e1";
  CHECK(parse_json(long_number).as_number() == std::strtod(long_number.c_str(), nullptr));

  // Random literals of the JSON grammar, bit for bit against strtod (this
  // process runs in the "C" locale).
  std::mt19937 rng(1234);
  auto digits = [&](int n, bool nonzero_first) {
    std::string s;
    for (int i = 0; i < n; ++i) s += char('0' + (i == 0 && nonzero_first ? 1 + rng() % 9 : rng() % 10));
    return s;
  };
  int overflowed = 0, underflowed = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string s;
    if (rng() % 2) s += '-';
    const int int_len = rng() % 8 == 0 ? 0 : int(1 + rng() % (rng() % 10 == 0 ? 400 : 20));
    s += int_len == 0 ? "0" : digits(int_len, true);
    if (rng() % 2) s += "." + digits(int(1 + rng() % (rng() % 10 == 0 ? 400 : 25)), false);
    if (rng() % 2) {
      s += rng() % 2 ? 'e' : 'E';
      const int sign = int(rng() % 3);
      if (sign == 1) s += '+';
      if (sign == 2) s += '-';
      s += std::to_string(rng() % (rng() % 4 == 0 ? 800 : 330));
    }
    const double want = std::strtod(s.c_str(), nullptr);
    if (std::isinf(want)) {
      ++overflowed;
      CHECK_MSG(contains(parse_error(s), "out of the range of a double"), s);
      continue;
    }
    if (want == 0 && s.find_first_of("123456789") < s.find_first_of("eE")) ++underflowed;
    const double got = parse_json(s).as_number();
    CHECK_MSG(bits_of(got) == bits_of(want), s << ": " << got << " != " << want);
  }
  CHECK(overflowed > 50 && underflowed > 50);
}

TEST(json_numbers_ignore_the_locale) {
  // Only meaningful where a locale with a decimal comma is installed.
  const char* const names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8", "ru_RU.UTF-8", "de_DE"};
  const char* used = nullptr;
  for (const char* name : names) {
    if (std::setlocale(LC_NUMERIC, name) != nullptr) {
      used = name;
      break;
    }
  }
  if (used == nullptr) {
    std::printf("  (no locale with a decimal comma installed: checked in the C locale only)\n");
    CHECK(parse_json("[1.5, 2e-1]").as_array()[0].as_number() == 1.5);
    return;
  }
  bool ok = false;
  std::string msg;
  try {
    const JsonValue v = parse_json("[1.5, -0.25e1, 1e-400]");
    ok = v.as_array()[0].as_number() == 1.5 && v.as_array()[1].as_number() == -2.5 &&
         v.as_array()[2].as_number() == 0;
    msg = parse_error("1,5");
  } catch (...) {
  }
  std::setlocale(LC_NUMERIC, "C");
  CHECK_MSG(ok, "in locale " << used);
  CHECK(contains(msg, "after the JSON value"));
}

TEST(json_shipped_manifest_parses) {
  const auto check_manifest = [](const JsonValue& m) {
    CHECK(m.at("format").as_string() == "ondevice-onnx-model");
    CHECK(m.at("format_version").as_string() == "1.0");
    CHECK(m.at("quantized").as_bool());
    CHECK(m.at("vocab_size").as_int() == 8000);
    CHECK(m.at("special_ids").at("eos").as_int() == 2);
    CHECK(m.at("source").at("quant_plan").at("group_size").is_null());
    CHECK(m.at("source").at("quant_plan").at("embedding").at("bits").as_array().size() == 4);
    CHECK(std::fabs(m.at("source").at("average_bits").as_number() - 2.26224173553719) < 1e-15);
    CHECK(m.at("opsets").at("ai.onnx").as_int() == 18);
    const JsonValue& file = m.at("graphs").at("encoder").at("file");
    CHECK(file.as_string() == "encoder.onnx");
    CHECK(file.path() == "/graphs/encoder/file");
    CHECK(m.at("graphs").at("decoder_step").at("inputs").as_array()[0].as_string() == "tokens");
    for (const JsonValue& f : m.at("files").as_array()) {
      CHECK(f.at("sha256").as_string().size() == 64);
      CHECK(f.at("size").as_int() > 0);
    }
    CHECK(m.at("files").as_array()[1].at("size").path() == "/files/1/size");
    CHECK(error_of([&] { m.at("graphs").at("encoder").at("file").as_int(); }) ==
          "/graphs/encoder/file: expected an integer, got a string");
  };
  check_manifest(parse_json(kManifest));

  const std::string shipped = repo_file("models/nmt-en-de-bcq/onnx/manifest.json");
  if (shipped.empty()) {
    std::printf("  (models/nmt-en-de-bcq/onnx/manifest.json not found: checked the embedded copy only)\n");
    return;
  }
  const JsonValue m = load_json_file(shipped);
  check_manifest(m);
  CHECK(m.at("graphs").at("encoder").at("outputs").as_array().size() >= 2);
  CHECK(m.at("kv_cache").at("layers").as_int() == 3);
  CHECK(walk(m, "") > 100);
}

TEST(json_load_file_errors_start_with_the_path) {
  {
    TempFile f(kManifest);
    CHECK(load_json_file(f.path).at("tokenizer").as_string() == "spm.model");
    JsonLimits small;
    small.max_bytes = 100;
    const std::string msg = error_of([&] { load_json_file(f.path, small); });
    CHECK_MSG(starts_with(msg, f.path) && contains(msg, "limit"), msg);
  }
  {
    TempFile f("{\"a\": 1,\n \"b\": [1, 2,]}");
    const std::string msg = error_of([&] { load_json_file(f.path); });
    CHECK_MSG(msg == f.path + ": JSON error at byte 21 (line 2, column 13): trailing comma before ']'", msg);
  }
  {
    TempFile f("");
    const std::string msg = error_of([&] { load_json_file(f.path); });
    CHECK_MSG(starts_with(msg, f.path + ": ") && contains(msg, "empty document"), msg);
  }
  const std::string missing = "/nonexistent/dir/manifest.json";
  std::string msg = error_of([&] { load_json_file(missing); });
  CHECK_MSG(starts_with(msg, missing) && contains(msg, "cannot open"), msg);
  msg = error_of([&] { load_json_file("/tmp"); });
  CHECK_MSG(starts_with(msg, "/tmp") && contains(msg, "not a regular file"), msg);
}

TEST(json_strict_rejections) {
  // Structure.
  CHECK_REJECTS("", "JSON error at byte 0 (line 1, column 1): empty document");
  CHECK_REJECTS(" \n\t\r ", "at byte 5 (line 2, column 4): empty document");
  CHECK_REJECTS("[1,]", "JSON error at byte 3 (line 1, column 4): trailing comma before ']'");
  CHECK_REJECTS("{\"a\": 1,}", "at byte 8 (line 1, column 9): trailing comma before '}'");
  CHECK_REJECTS("{\"a\": 1, }", "trailing comma before '}'");
  CHECK_REJECTS("[1,,2]", "unexpected ',', expected a value");
  CHECK_REJECTS("[,]", "unexpected ',', expected a value");
  CHECK_REJECTS("{,}", "unexpected ',', expected a string (an object key)");
  CHECK_REJECTS("[1 2]", "unexpected '2', expected ',' or ']' after an array element");
  CHECK_REJECTS("{\"a\": 1 \"b\": 2}", "expected ',' or '}' after an object member");
  CHECK_REJECTS("{\"a\" 1}", "unexpected '1', expected ':' after an object key");
  CHECK_REJECTS("{\"a\"}", "expected ':'");
  CHECK_REJECTS("{a: 1}", "unexpected 'a', expected a string (an object key)");
  CHECK_REJECTS("{'a': 1}", "unexpected ''', expected a string");
  CHECK_REJECTS("{1: 1}", "expected a string (an object key)");
  CHECK_REJECTS("[1}", "expected ',' or ']'");
  CHECK_REJECTS("{\"a\": 1]", "expected ',' or '}'");
  CHECK_REJECTS("]", "unexpected ']', expected a value");
  CHECK_REJECTS("}", "unexpected '}', expected a value");
  CHECK_REJECTS(":", "unexpected ':'");
  CHECK_REJECTS("[1", "unexpected end of input, expected ',' or ']'");
  CHECK_REJECTS("[", "unexpected end of input, expected a value");
  CHECK_REJECTS("{", "unexpected end of input, expected a string (an object key)");
  CHECK_REJECTS("{\"a\":", "unexpected end of input, expected a value");
  // Trailing garbage.
  CHECK_REJECTS("[1] x", "at byte 4 (line 1, column 5): unexpected 'x' after the JSON value");
  CHECK_REJECTS("1 2", "unexpected '2' after the JSON value");
  CHECK_REJECTS("{}{}", "after the JSON value");
  CHECK_REJECTS("nulll", "after the JSON value");
  CHECK_REJECTS("truefalse", "after the JSON value");
  CHECK_REJECTS("[1]]", "unexpected ']' after the JSON value");
  CHECK_REJECTS(std::string("[1]\0", 4), "unexpected byte 0x00 after the JSON value");
  CHECK_REJECTS("[1]\n\n  ,", "at byte 7 (line 3, column 3)");
  // Comments.
  CHECK_REJECTS("// c\n1", "comments are not allowed");
  CHECK_REJECTS("/* c */ 1", "comments are not allowed");
  CHECK_REJECTS("[1, /* c */ 2]", "comments are not allowed");
  CHECK_REJECTS("[1] // c", "unexpected '/' after the JSON value");
  CHECK_REJECTS("{\"a\": 1 // c\n}", "comments are not allowed");
  // Whitespace: only space, tab, LF, CR.
  CHECK_REJECTS("\v1", "unexpected byte 0x0b, expected a value");
  CHECK_REJECTS("\f1", "unexpected byte 0x0c");
  CHECK_REJECTS("[1,\v2]", "unexpected byte 0x0b");
  CHECK_REJECTS("1\f", "unexpected byte 0x0c after the JSON value");
  CHECK_REJECTS("\xc2\xa0" "1", "unexpected byte 0xc2");  // NBSP
  CHECK_REJECTS("\xe2\x80\xa8" "1", "unexpected byte 0xe2");  // LINE SEPARATOR
  CHECK_REJECTS("\xef\xbb\xbf{}", "byte order mark");
  CHECK_REJECTS(std::string("\0", 1), "unexpected byte 0x00");
  // Literals.
  CHECK_REJECTS("tru", "unexpected end of input in literal 'true'");
  CHECK_REJECTS("True", "unexpected 'T', expected a value");
  CHECK_REJECTS("nul", "literal 'null'");
  CHECK_REJECTS("nill", "invalid literal (expected 'null')");
  CHECK_REJECTS("[fals]", "invalid literal (expected 'false')");
  CHECK_REJECTS("undefined", "unexpected 'u'");
  // Numbers.
  CHECK_REJECTS("NaN", "NaN and Infinity are not JSON");
  CHECK_REJECTS("Infinity", "NaN and Infinity are not JSON");
  CHECK_REJECTS("[-Infinity]", "unexpected 'I', expected a digit after '-'");
  CHECK_REJECTS("nan", "invalid literal");
  CHECK_REJECTS("inf", "unexpected 'i'");
  CHECK_REJECTS("01", "at byte 0 (line 1, column 1): leading zeros are not allowed");
  CHECK_REJECTS("-01", "leading zeros are not allowed");
  CHECK_REJECTS("00", "leading zeros are not allowed");
  CHECK_REJECTS("[0.5, 007]", "at byte 6 (line 1, column 7): leading zeros");
  CHECK_REJECTS("+1", "unexpected '+', expected a value");
  CHECK_REJECTS(".5", "unexpected '.'");
  CHECK_REJECTS("-", "unexpected end of input, expected a digit after '-'");
  CHECK_REJECTS("- 1", "expected a digit after '-'");
  CHECK_REJECTS("1.", "expected a digit after the decimal point");
  CHECK_REJECTS("1.e5", "unexpected 'e', expected a digit after the decimal point");
  CHECK_REJECTS("1e", "expected a digit in the exponent");
  CHECK_REJECTS("1e+", "expected a digit in the exponent");
  CHECK_REJECTS("1E-x", "unexpected 'x', expected a digit in the exponent");
  CHECK_REJECTS("0x10", "unexpected 'x' after the JSON value");
  CHECK_REJECTS("1.5.2", "unexpected '.' after the JSON value");
  CHECK_REJECTS("1e400", "out of the range of a double");
  CHECK_REJECTS("1,5", "after the JSON value");
  // Strings: raw control characters, escapes.
  CHECK_REJECTS("\"a\x01\"", "at byte 2 (line 1, column 3): control character U+0001 in a string");
  CHECK_REJECTS("\"a\tb\"", "control character U+0009");
  CHECK_REJECTS("\"a\nb\"", "control character U+000A");
  CHECK_REJECTS(std::string("\"a\0\"", 4), "control character U+0000");
  CHECK_REJECTS("\"\\x41\"", "at byte 1 (line 1, column 2): invalid escape sequence '\\x'");
  CHECK_REJECTS("\"\\U0041\"", "invalid escape sequence '\\U'");
  CHECK_REJECTS("\"\\'\"", "invalid escape sequence");
  CHECK_REJECTS("\"\\\"", "unexpected end of input in the string starting at byte 0");
  CHECK_REJECTS("\"\\", "unexpected end of input in an escape sequence");
  CHECK_REJECTS("\"\\u12\"", "invalid \\u escape: expected 4 hex digits");
  CHECK_REJECTS("\"\\u12G4\"", "at byte 5 (line 1, column 6): invalid \\u escape");
  CHECK_REJECTS("\"\\u123", "unexpected end of input in a \\u escape");
  CHECK_REJECTS("\"abc", "unexpected end of input in the string starting at byte 0");
  CHECK_REJECTS("[\"a\", \"bc", "in the string starting at byte 6");
  CHECK_REJECTS("'a'", "unexpected '''");
  // Lone surrogates in escapes.
  CHECK_REJECTS("\"\\uD800\"", "at byte 1 (line 1, column 2): lone high surrogate");
  CHECK_REJECTS("\"\\uDBFF\"", "lone high surrogate");
  CHECK_REJECTS("\"\\uD800x\"", "lone high surrogate");
  CHECK_REJECTS("\"\\uD800\\n\"", "lone high surrogate");
  CHECK_REJECTS("\"\\uD800\\u0041\"", "lone high surrogate");
  CHECK_REJECTS("\"\\uD800\\uD800\"", "lone high surrogate");
  CHECK_REJECTS("\"\\uD800\\uE000\"", "lone high surrogate");
  CHECK_REJECTS("\"\\uD800\\u", "unexpected end of input in a \\u escape");
  CHECK_REJECTS("\"x\\uDC00\"", "at byte 2 (line 1, column 3): lone low surrogate");
  CHECK_REJECTS("\"\\uDFFF\\uD800\"", "lone low surrogate");
  // Invalid UTF-8 in strings.
  CHECK_REJECTS("\"\x80\"", "at byte 1 (line 1, column 2): invalid UTF-8: unexpected continuation byte");
  CHECK_REJECTS("\"\xbf\"", "unexpected continuation byte");
  CHECK_REJECTS("\"\xc0\xaf\"", "invalid UTF-8: overlong encoding");
  CHECK_REJECTS("\"\xc1\xbf\"", "overlong encoding");
  CHECK_REJECTS("\"\xe0\x80\xaf\"", "overlong encoding");
  CHECK_REJECTS("\"\xe0\x9f\xbf\"", "overlong encoding");
  CHECK_REJECTS("\"\xf0\x80\x80\xaf\"", "overlong encoding");
  CHECK_REJECTS("\"\xf0\x8f\xbf\xbf\"", "overlong encoding");
  CHECK_REJECTS("\"\xed\xa0\x80\"", "invalid UTF-8: encoded UTF-16 surrogate");
  CHECK_REJECTS("\"\xed\xbf\xbf\"", "encoded UTF-16 surrogate");
  CHECK_REJECTS("\"\xed\xa0\xbd\xed\xb8\x80\"", "encoded UTF-16 surrogate");  // CESU-8 pair
  CHECK_REJECTS("\"\xf4\x90\x80\x80\"", "invalid UTF-8: code point beyond U+10FFFF");
  CHECK_REJECTS("\"\xf5\x80\x80\x80\"", "byte 0xf5 never occurs in UTF-8");
  CHECK_REJECTS("\"\xf8\x88\x80\x80\x80\"", "never occurs in UTF-8");
  CHECK_REJECTS("\"\xfe\"", "never occurs in UTF-8");
  CHECK_REJECTS("\"\xff\"", "never occurs in UTF-8");
  CHECK_REJECTS("\"\xc3\"", "at byte 2 (line 1, column 3): invalid UTF-8: sequence truncated ('\"'");
  CHECK_REJECTS("\"\xe2\x82\"", "sequence truncated");
  CHECK_REJECTS("\"\xf0\x9f\x98\"", "sequence truncated");
  CHECK_REJECTS("\"\xc3(\"", "sequence truncated ('(' is not a continuation byte)");
  CHECK_REJECTS("\"\xe2(\xa1\"", "sequence truncated");
  CHECK_REJECTS("\"\xc3", "sequence truncated by the end of input");
  CHECK_REJECTS("\"\xf0\x9f\x98", "sequence truncated by the end of input");
  CHECK_REJECTS("{\"k\xff\": 1}", "never occurs in UTF-8");  // in keys too
  // Bytes outside ASCII are never valid outside strings.
  CHECK_REJECTS("\xc3\xa9", "unexpected byte 0xc3, expected a value");
  CHECK_REJECTS("[1]\xc3\xa9", "unexpected byte 0xc3 after the JSON value");
  // Duplicate keys, including ones spelled differently.
  CHECK_REJECTS("{\"a\": 1, \"a\": 2}", "at byte 9 (line 1, column 10): duplicate key 'a' in an object");
  CHECK_REJECTS("{\"a\": 1, \"\\u0061\": 2}", "at byte 9 (line 1, column 10): duplicate key 'a'");
  CHECK_REJECTS("{\"x\": {\"b\": 1, \"c\": 2, \"b\": 3}}", "duplicate key 'b'");
  CHECK_REJECTS("{\"\": 1, \"\": 2}", "duplicate key ''");
  CHECK_REJECTS("{\"\\n\": 1, \"\\n\": 2}", "duplicate key '\\x0a'");
  CHECK(parse_json("{\"a\": 1, \"A\": 2, \"a \": 3, \"x\": {\"a\": 4}}").members().size() == 4);
  // Among many keys, the first duplicate in file order is reported.
  std::string many = "{";
  for (int i = 0; i < 5000; ++i) many += "\"k" + std::to_string(i) + "\": " + std::to_string(i) + ", ";
  const size_t first_dup = many.size();
  many += "\"k17\": 0, \"k3\": 0}";
  CHECK_REJECTS(many, "at byte " + std::to_string(first_dup) + " (line 1, column " + std::to_string(first_dup + 1) +
                          "): duplicate key 'k17'");
}

TEST(json_utf8_validation_matches_an_independent_decoder) {
  // Every lead byte, then for each later byte both ends of every range that
  // UTF-8 treats differently (ASCII, 80-8F, 90-9F, A0-BF, C0-C1, lead bytes;
  // 0x22 ends the string early).
  const unsigned char later[] = {0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc2, 0xe0, 0xf4, 0xff};
  const unsigned char fourths[] = {0x41, 0x80, 0x8f, 0x90, 0xbf, 0xc0, 0x22};
  const unsigned char few[] = {0x41, 0x80};  // where the byte cannot matter but to end a sequence
  using Bytes = std::vector<unsigned char>;
  int accepted = 0, rejected = 0;
  for (int b0 = 0x80; b0 <= 0xff; ++b0) {
    const Bytes thirds = b0 >= 0xe0 ? Bytes(std::begin(later), std::end(later)) : Bytes(std::begin(few), std::end(few));
    const Bytes lasts =
        b0 >= 0xf0 ? Bytes(std::begin(fourths), std::end(fourths)) : Bytes(std::begin(few), std::end(few));
    for (unsigned char b1 : later)
      for (unsigned char b2 : thirds)
        for (unsigned char b3 : lasts) {
          std::string body;
          body += char(b0);
          body += char(b1);
          body += char(b2);
          body += char(b3);
          if (b3 == 0x22) body.pop_back();
          const std::string text = "\"" + body + "\"";
          const bool want = reference_valid_utf8(body);
          const std::string msg = parse_error(text);
          CHECK_MSG(msg.empty() == want, std::hex << b0 << " " << b1 << " " << int(b2) << " " << int(b3) << ": "
                                                  << (msg.empty() ? "accepted" : msg));
          if (want) {
            ++accepted;
            CHECK(parse_json(text).as_string() == body);
          } else {
            ++rejected;
            CHECK(contains(msg, "UTF-8"));
          }
        }
  }
  CHECK(accepted > 1000 && rejected > 1000);
  // Every code point through \u escapes (pairs for the supplementary planes)
  // gives the same bytes as the raw UTF-8 it stands for.
  for (uint32_t cp = 1; cp <= 0x10FFFF; cp += cp < 0x10000 ? 1 : 97) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    char esc[32];
    if (cp < 0x10000) {
      std::snprintf(esc, sizeof esc, "\"\\u%04x\"", unsigned(cp));
    } else {
      const uint32_t v = cp - 0x10000;
      std::snprintf(esc, sizeof esc, "\"\\u%04X\\u%04X\"", unsigned(0xD800 + (v >> 10)),
                    unsigned(0xDC00 + (v & 0x3FF)));
    }
    const std::string s = parse_json(esc).as_string();
    CHECK_MSG(reference_valid_utf8(s), std::hex << cp);
    if (cp >= 0x20 && cp != '"' && cp != '\\') CHECK(parse_json("\"" + s + "\"").as_string() == s);
  }
}

TEST(json_every_truncation_is_rejected) {
  for (const std::string* doc : {&kSample, &kManifest}) {
    CHECK(parse_error(*doc).empty());
    for (size_t n = 0; n < doc->size(); ++n) {
      const std::string msg = parse_error(doc->substr(0, n));
      CHECK_MSG(!msg.empty(), "prefix of " << n << " bytes parsed");
      CHECK_MSG(contains(msg, "JSON error at byte "), msg);
    }
  }
}

TEST(json_random_mutations_never_crash) {
  std::mt19937 rng(20240607);
  const unsigned char interesting[] = {'"', '\\', '[', ']', '{', '}', ',', ':', '0', '-', 'e', '.', 'u', 'n', ' ',
                                       '\n', 0x00, 0x1f, 0x7f, 0x80, 0xbf, 0xc0, 0xc3, 0xe0, 0xed, 0xef, 0xf0,
                                       0xf4, 0xf5, 0xff};
  const std::string* docs[] = {&kSample, &kManifest};
  int parsed = 0, rejected = 0;
  for (int iter = 0; iter < 10000; ++iter) {
    std::string text = *docs[iter % 2];
    const int edits = 1 + int(rng() % 4);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const size_t at = rng() % text.size();
      switch (rng() % 6) {
        case 0:
          text[at] = char(rng() & 0xff);
          break;
        case 1:
          text[at] = char(interesting[rng() % sizeof interesting]);
          break;
        case 2:
          text.insert(at, 1, char(interesting[rng() % sizeof interesting]));
          break;
        case 3:
          text.erase(at, 1 + rng() % 8);
          break;
        case 4: {  // duplicate a chunk
          const size_t len = std::min<size_t>(1 + rng() % 32, text.size() - at);
          text.insert(rng() % text.size(), text.substr(at, len));
          break;
        }
        default:
          text.resize(at);
          break;
      }
    }
    try {
      const JsonValue v = parse_json(text);
      walk(v, "");
      ++parsed;
    } catch (const FormatError& e) {
      CHECK(contains(e.what(), "JSON error at byte "));
      ++rejected;
    }
  }
  std::printf("  %d mutants parsed, %d rejected\n", parsed, rejected);
  CHECK(parsed > 100 && rejected > 5000);
}

TEST(json_depth_bomb_is_rejected) {
  const std::string bomb(100000, '[');
  CHECK_REJECTS(bomb, "at byte 64 (line 1, column 65): arrays and objects nested deeper than the limit of 64");
  std::string objects;
  for (int i = 0; i < 100000; ++i) objects += "{\"a\":";
  CHECK_REJECTS(objects, "nested deeper than the limit of 64");

  // Exactly at the limit parses; one more level does not.
  const auto nested = [](int depth) { return std::string(size_t(depth), '[') + std::string(size_t(depth), ']'); };
  CHECK(parse_error(nested(64)).empty());
  CHECK_REJECTS(nested(65), "nested deeper than the limit of 64");
  JsonLimits shallow;
  shallow.max_depth = 2;
  CHECK(contains(parse_error("[[1], {\"a\": []}]", shallow),
                 "at byte 12 (line 1, column 13): arrays and objects nested deeper than the limit of 2"));
  CHECK(parse_error("[[1], {\"a\": 2}, []]", shallow).empty());
  CHECK(contains(parse_error("[[[1]]]", shallow), "limit of 2"));
  CHECK(contains(parse_error("{\"a\": {\"b\": {}}}", shallow), "limit of 2"));
  shallow.max_depth = 0;
  CHECK(parse_json("7", shallow).as_int() == 7);
  CHECK(contains(parse_error("[]", shallow), "limit of 0"));

  // With the limit lifted, a 100k-deep document parses, is walked, and is
  // destroyed, without recursion (no stack overflow) either way.
  JsonLimits unlimited;
  unlimited.max_depth = INT_MAX;
  CHECK(contains(parse_error(bomb, unlimited), "unexpected end of input"));
  std::string deep = bomb + "\"leaf\"" + std::string(100000, ']');
  {
    const JsonValue v = parse_json(deep, unlimited);
    const JsonValue* p = &v;
    int depth = 0;
    while (p->is_array()) {
      p = &p->as_array()[0];
      ++depth;
    }
    CHECK(depth == 100000);
    CHECK(p->as_string() == "leaf");
    CHECK(p->path().size() == 200000);
  }
  std::string deep_objects;
  for (int i = 0; i < 100000; ++i) deep_objects += "{\"k\":";
  deep_objects += "1" + std::string(100000, '}');
  CHECK(parse_json(deep_objects, unlimited).is_object());
}

TEST(json_size_and_item_limits) {
  // Items: every value counts, containers included.
  std::string array = "[";
  for (int i = 0; i < 2000; ++i) array += i ? ",0" : "0";
  array += "]";
  JsonLimits limits;
  limits.max_items = 2001;
  CHECK(parse_json(array, limits).as_array().size() == 2000);
  limits.max_items = 2000;
  check_rejects(array, "at byte 3999 (line 1, column 4000): more than 2000 values (the item limit)", __LINE__,
                limits);
  limits.max_items = 10;
  check_rejects("{\"a\": [1, 2, 3], \"b\": {\"c\": [4, 5, {\"d\": 6}]}}", "more than 10 values", __LINE__, limits);

  // The default item limit (2^20): a document of 2^20 + 1 values is refused.
  CHECK(JsonLimits().max_items == (size_t(1) << 20) && JsonLimits().max_depth == 64 &&
        JsonLimits().max_bytes == (size_t(16) << 20));
  std::string huge((size_t(2) << 20) + 1, ',');
  huge.front() = '[';
  for (size_t i = 1; i + 1 < huge.size(); i += 2) huge[i] = '0';
  huge.back() = ']';  // [0,0,...,0]: 2^20 zeros and the array
  CHECK_REJECTS(huge, "more than 1048576 values (the item limit)");

  // Bytes: checked before parsing.
  JsonLimits tiny;
  tiny.max_bytes = 8;
  CHECK(parse_json("[1,2,3]", tiny).as_array().size() == 3);
  check_rejects("[1,2,3,4]", "JSON error: document of 9 bytes exceeds the limit of 8 bytes", __LINE__, tiny);
  check_rejects(std::string(100, ' '), "exceeds the limit of 8 bytes", __LINE__, tiny);
}
