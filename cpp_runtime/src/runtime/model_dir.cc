// Shared checks of exported model directories (model_dir.h).
#include "model_dir.h"

#include <cstdint>

#include "../format/mapped_file.h"
#include "../format/sha256.h"
#include "ondevice/error.h"

namespace ondevice::detail {

Manifest load_manifest(const std::string& model_dir, const std::string& kind, const std::string& kind_description,
                       const std::string& hint) {
  Manifest m;
  m.dir = model_dir;
  while (m.dir.size() > 1 && m.dir.back() == '/') m.dir.pop_back();
  m.path = m.dir + "/manifest.json";
  try {
    m.json = load_json_file(m.path);
  } catch (const FormatError& e) {
    throw FormatError(std::string(e.what()) + " (is '" + m.dir + "' " + hint + "?)");
  }
  try {
    const JsonValue& j = m.json;
    if (j.at("format").as_string() != "ondevice-onnx-model")
      throw FormatError(m.path + ": not an ondevice ONNX export (format '" + j.at("format").as_string() + "')");
    const std::string version = j.at("format_version").as_string();
    if (version.rfind("1.", 0) != 0)
      throw FormatError(m.path + ": format_version " + version + " is not supported (this runtime reads 1.x)");
    if (j.at("model_kind").as_string() != kind)
      throw FormatError(m.path + ": model_kind '" + j.at("model_kind").as_string() + "' is not " + kind_description);
  } catch (const FormatError& e) {
    rethrow_with_manifest_path(e, m);
  }
  return m;
}

void rethrow_with_manifest_path(const FormatError& e, const Manifest& m) {
  const std::string what = e.what();
  if (what.find(m.dir) != std::string::npos) throw e;
  throw FormatError(m.path + ": " + what);
}

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
