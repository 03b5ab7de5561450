// Whole-file access for the format readers: a read-only memory mapping
// (MappedFile) for large weights, or a heap copy (read_whole_file) for small
// files.
//
// A read-only memory mapping of a whole file, unmapped when the last owner
// lets go. Used for ONNX external data: weights of many megabytes are used in
// place by the kernels, so mapping them (rather than read() into the heap, as
// the small .bcq reader does) is what keeps them off the heap and lets the OS
// page them in lazily and drop them under memory pressure.
//
// The price of mmap: if another process truncates the file while it is
// mapped, touching a page past the new end raises SIGBUS instead of an error
// a reader could report. Files are checked when mapped (regular file, size);
// replacing a model by writing a new file and renaming it, as the exporter
// does, leaves existing mappings intact.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ondevice {

class MappedFile {
 public:
  // Maps `path` read-only; throws FormatError if it cannot be opened, is not
  // a regular file, or cannot be mapped.
  static std::shared_ptr<const MappedFile> open(const std::string& path);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // Null for an empty file (mmap cannot map zero bytes).
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  std::string path_;
};

// Reads all of the regular file `path` into a heap buffer. For small files
// (a .bcq matrix, an .onnx graph with external weights): a file truncated
// while being read gives an error, never SIGBUS. Throws FormatError if it
// cannot be opened or read, is not a regular file, does not fit in memory, or
// is larger than `max_bytes` (`limit_name` names that limit in the message).
std::shared_ptr<std::vector<uint8_t>> read_whole_file(const std::string& path, uint64_t max_bytes = UINT64_MAX,
                                                      const char* limit_name = "limit");

}  // namespace ondevice
