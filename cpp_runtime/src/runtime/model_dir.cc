// Shared checks of exported model directories (model_dir.h).
#include "model_dir.h"

#include <cstdint>

#include "../format/mapped_file.h"
#include "../format/sha256.h"
#include "ondevice/error.h"

namespace ondevice::detail {

std::string model_file(const std::string& dir, const JsonValue& v) {
  const std::string& name = v.as_string();
  if (name.empty() || name.find('/') != std::string::npos || name.find('\\') != std::string::npos ||
      name == "." || name == "..")
    throw FormatError(v.describe_location() + ": '" + name + "' is not a file name inside the model directory");
  return dir + "/" + name;
}

void verify_model_files(const std::string& dir, const JsonValue& files, bool checksums) {
  for (const JsonValue& f : files.as_array()) {
    const std::string path = model_file(dir, f.at("path"));
    const int64_t size = f.at("size").as_int();
    auto mapped = MappedFile::open(path);
    if (int64_t(mapped->size()) != size)
      throw FormatError(path + ": " + std::to_string(mapped->size()) + " bytes, the manifest says " +
                        std::to_string(size) + " (truncated or replaced)");
    if (checksums) {
      const std::string want = f.at("sha256").as_string();
      if (sha256_hex(mapped->data(), size_t(mapped->size())) != want)
        throw FormatError(path + ": sha256 differs from the manifest (the file is corrupt or was modified)");
    }
  }
}

}  // namespace ondevice::detail
