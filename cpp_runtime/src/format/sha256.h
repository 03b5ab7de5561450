// SHA-256 (FIPS 180-4), for checking model files against their manifest.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ondevice::detail {

// Lower-case hex digest of `size` bytes.
std::string sha256_hex(const uint8_t* data, size_t size);

}  // namespace ondevice::detail
