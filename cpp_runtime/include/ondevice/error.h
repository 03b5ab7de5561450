// Error types of the ondevice C++ core.
//
// Every failure the core can detect on user input (a malformed file, a bad
// shape, an unsupported option) is reported by throwing one of these, never by
// crashing. The Python bindings map them to typed Python exceptions.
#pragma once

#include <stdexcept>
#include <string>

namespace ondevice {

// Base class of all errors raised by the core.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A file or buffer does not follow its format specification (bad magic,
// truncated, corrupt checksum, inconsistent sizes, non-finite scales, ...).
class FormatError : public Error {
 public:
  explicit FormatError(const std::string& what) : Error(what) {}
};

// A caller passed arguments that cannot be valid (shape mismatch, bits out of
// range, unknown kernel variant, ...).
class ArgumentError : public Error {
 public:
  explicit ArgumentError(const std::string& what) : Error(what) {}
};

}  // namespace ondevice
