// Loading an .onnx file and mapping its external data (ONNX
// docs/ExternalData.md): location checks, one mapping per weights file,
// bounds checks of every tensor's slice.

#include <cstring>
#include <map>
#include <new>

#include "format/mapped_file.h"
#include "ondevice/error.h"
#include "ondevice/onnx_model.h"

namespace ondevice {
namespace onnx {
namespace {

std::string str(uint64_t v) { return std::to_string(v); }

// The location relative to the model directory, normalized ("./a//b" ->
// "a/b") so that spellings of one file share one mapping. Only paths that
// stay inside the directory are accepted: no absolute path, no `..`
// component, no backslash (a Windows separator, or an escape on Windows), no
// NUL (which would cut the path short at open()).
std::string checked_location(const std::string& location) {
  if (location.empty()) throw FormatError("empty external data location");
  if (location.find('\0') != std::string::npos) throw FormatError("external data location contains a NUL byte");
  if (location.find('\\') != std::string::npos)
    throw FormatError("external data location '" + location + "' contains a backslash");
  if (location[0] == '/') throw FormatError("external data location '" + location + "' is an absolute path");
  std::string out;
  size_t start = 0;
  while (start <= location.size()) {
    size_t end = location.find('/', start);
    if (end == std::string::npos) end = location.size();
    const std::string part = location.substr(start, end - start);
    if (part == "..") throw FormatError("external data location '" + location + "' leaves the model directory");
    if (!part.empty() && part != ".") {
      if (!out.empty()) out += '/';
      out += part;
    }
    start = end + 1;
  }
  if (out.empty()) throw FormatError("external data location '" + location + "' names no file");
  return out;
}

using Mappings = std::map<std::string, std::shared_ptr<const MappedFile>>;

void resolve(Tensor* t, const std::string& base_dir, Mappings* maps) {
  if (t->source != TensorSource::kExternal) return;
  try {
    const std::string rel = checked_location(t->external.location);
    std::shared_ptr<const MappedFile>& file = (*maps)[rel];
    if (!file) file = MappedFile::open(base_dir.empty() ? rel : base_dir + "/" + rel);
    const uint64_t size = file->size();
    const uint64_t offset = t->external.offset;
    if (offset > size)
      throw FormatError("offset " + str(offset) + " is beyond the end of '" + rel + "' (" + str(size) + " bytes)");
    const uint64_t available = size - offset;
    const uint64_t length = t->external.has_length ? t->external.length : available;
    if (length > available)
      throw FormatError("bytes " + str(offset) + ".." + str(offset + length) + " lie beyond the end of '" + rel +
                        "' (" + str(size) + " bytes)");
    if (length != t->byte_size)
      throw FormatError(std::string(t->external.has_length ? "length " : "data to the end of the file: ") +
                        str(length) + " bytes, but dims and data type require " + str(t->byte_size));
    t->data = length ? file->data() + offset : nullptr;
    t->owner = file;
  } catch (const FormatError& e) {
    throw FormatError("tensor '" + t->name + "': " + e.what());
  }
}

void resolve_nodes(std::vector<Node>* nodes, const std::string& base_dir, Mappings* maps) {
  for (Node& n : *nodes)
    for (Attribute& a : n.attributes)
      if (a.t) resolve(a.t.get(), base_dir, maps);
}

}  // namespace

void resolve_external_data(Model* model, const std::string& base_dir) {
  Mappings maps;
  for (Tensor& t : model->graph.initializers) resolve(&t, base_dir, &maps);
  resolve_nodes(&model->graph.nodes, base_dir, &maps);
  for (Function& f : model->functions) {
    resolve_nodes(&f.nodes, base_dir, &maps);
    for (Attribute& a : f.attribute_defaults)
      if (a.t) resolve(a.t.get(), base_dir, &maps);
  }
}

Model load_onnx_model(const std::string& path, const ParseLimits& limits) {
  // The .onnx itself is read, not mapped: with the weights external it is
  // small (graph and a few constants), and a file truncated while being read
  // then gives an error rather than SIGBUS.
  const auto buffer = read_whole_file(path, limits.max_model_bytes, "ONNX model limit");
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  try {
    Model m = parse_onnx_model(buffer->data(), buffer->size(), buffer, limits);
    resolve_external_data(&m, dir);
    return m;
  } catch (const FormatError& e) {
    throw FormatError(path + ": " + e.what());
  } catch (const std::bad_alloc&) {
    throw FormatError(path + ": out of memory while loading");
  }
}

}  // namespace onnx
}  // namespace ondevice
