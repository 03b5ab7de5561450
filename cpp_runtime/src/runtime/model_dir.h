// What the loaders of exported model directories share (Translator,
// Understander): a manifest member as a file inside the directory, and the
// size and sha256 checks of the manifest's "files" list.
#pragma once

#include <string>

#include "ondevice/json.h"

namespace ondevice::detail {

// `dir` + "/" + the name `v` holds; FormatError (naming the manifest location)
// unless it is a plain file name inside the directory (no '/', '\\', "." or "..").
std::string model_file(const std::string& dir, const JsonValue& v);

// Checks every entry {"path", "size", "sha256"} of `files` (a JSON array):
// the size always, the sha256 when `checksums` is set. FormatError naming the
// file otherwise (missing, truncated or replaced, modified).
void verify_model_files(const std::string& dir, const JsonValue& files, bool checksums);

}  // namespace ondevice::detail
