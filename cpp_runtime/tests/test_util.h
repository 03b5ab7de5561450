// A minimal self-contained test harness (no third-party framework, so the
// same binary cross-compiles for aarch64 and runs under qemu as is).
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ondevice/bitplane_format.h"

namespace testing {

struct TestCase {
  const char* name;
  std::function<void()> fn;
};
std::vector<TestCase>& registry();
struct Register {
  Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};
struct Failure {
  std::string message;
};

#define TEST(name)                                                  \
  static void test_##name();                                        \
  static ::testing::Register register_##name(#name, test_##name);   \
  static void test_##name()

#define CHECK(cond)                                                                        \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::ostringstream os_;                                                              \
      os_ << __FILE__ << ":" << __LINE__ << ": CHECK(" #cond ") failed";                  \
      throw ::testing::Failure{os_.str()};                                                 \
    }                                                                                      \
  } while (0)

#define CHECK_MSG(cond, msg)                                                               \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::ostringstream os_;                                                              \
      os_ << __FILE__ << ":" << __LINE__ << ": CHECK(" #cond ") failed: " << msg;         \
      throw ::testing::Failure{os_.str()};                                                 \
    }                                                                                      \
  } while (0)

#define CHECK_THROWS(expr, type)                                                           \
  do {                                                                                     \
    bool thrown_ = false;                                                                  \
    try {                                                                                  \
      (void)(expr);                                                                        \
    } catch (const type&) {                                                                \
      thrown_ = true;                                                                      \
    }                                                                                      \
    CHECK_MSG(thrown_, "expected " #type " from " #expr);                                 \
  } while (0)

// A random quantized matrix in the spec's layout, with storage that owns its
// arrays (tests build matrices directly, independent of the file reader).
struct RandomMatrix {
  std::vector<uint8_t> row_bits;
  std::vector<uint8_t> planes;
  std::vector<float> alpha;
  std::vector<float> offset;
  ondevice::BitplaneMatrix matrix;
};

// rows x cols, group_size (== cols for one group), bits per row drawn from
// [min_bits, max_bits]; alpha > 0 decreasing per plane; optional offsets.
RandomMatrix make_random_matrix(uint32_t rows, uint32_t cols, uint32_t group_size, uint32_t min_bits,
                                uint32_t max_bits, bool with_offset, std::mt19937& rng);

// Absolute path of a file of this checkout (e.g. "models/nmt-en-de-bcq/onnx/
// manifest.json"), found from this header's own path; "" if it does not exist
// (a test then says what it skipped).
std::string repo_file(const std::string& relative);

// Serializes a matrix to the `.bcq` file format (test-side writer, following
// docs/bitplane-format.md independently of the Python writer).
std::vector<uint8_t> serialize(const RandomMatrix& m, bool alpha_f16);

}  // namespace testing
