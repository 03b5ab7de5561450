// What the loaders of exported model directories share (Translator,
// Understander): the manifest's header checks, a manifest member as a file
// inside the directory, and the size and sha256 checks of its "files" list.
#pragma once

#include <string>

#include "ondevice/error.h"
#include "ondevice/json.h"

namespace ondevice::detail {

// A model directory's manifest.json, parsed, with the checks every loader
// makes: format "ondevice-onnx-model", format_version 1.x, model_kind `kind`.
struct Manifest {
  std::string dir;   // the directory without trailing slashes
  std::string path;  // dir + "/manifest.json"
  JsonValue json;
};

// FormatError when the manifest cannot be read ("... (is '<dir>' <hint>?)"),
// has another format or a format_version other than 1.x, or its model_kind is
// not `kind` ("model_kind 'x' is not <kind_description>").
Manifest load_manifest(const std::string& model_dir, const std::string& kind, const std::string& kind_description,
                       const std::string& hint);

// Rethrows `e` (raised while reading the model's manifest or files) with the
// manifest's path in front unless its message already names the directory.
[[noreturn]] void rethrow_with_manifest_path(const FormatError& e, const Manifest& m);

// `dir` + "/" + the name `v` holds; FormatError (naming the manifest location)
// unless it is a plain file name inside the directory (no '/', '\\', "." or "..").
std::string model_file(const std::string& dir, const JsonValue& v);

// Checks every entry {"path", "size", "sha256"} of `files` (a JSON array):
// the size always, the sha256 when `checksums` is set. FormatError naming the
// file otherwise (missing, truncated or replaced, modified).
void verify_model_files(const std::string& dir, const JsonValue& files, bool checksums);

}  // namespace ondevice::detail
