// Read-only whole-file memory mappings (see mapped_file.h).
#include "format/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <new>

#include "ondevice/error.h"

namespace ondevice {

namespace {

// Opens `path` read-only and checks it is a regular file; returns the
// descriptor (the caller closes it) and its size.
int open_regular_file(const std::string& path, uint64_t* size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw FormatError("cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw FormatError(path + " is not a regular file");
  }
  *size = uint64_t(st.st_size);
  return fd;
}

}  // namespace

std::shared_ptr<std::vector<uint8_t>> read_whole_file(const std::string& path, uint64_t max_bytes,
                                                      const char* limit_name) {
  uint64_t size = 0;
  const int fd = open_regular_file(path, &size);
  if (size > max_bytes) {
    ::close(fd);
    throw FormatError(path + ": " + std::to_string(size) + " bytes exceeds the " + limit_name + " of " +
                      std::to_string(max_bytes));
  }
  auto buffer = std::make_shared<std::vector<uint8_t>>();
  try {
    if (size > uint64_t(std::numeric_limits<size_t>::max())) throw std::bad_alloc();
    buffer->resize(size_t(size));
  } catch (const std::bad_alloc&) {
    ::close(fd);
    throw FormatError(path + ": file of " + std::to_string(size) + " bytes does not fit in memory");
  }
  size_t done = 0;
  while (done < buffer->size()) {
    const ssize_t n = ::read(fd, buffer->data() + done, buffer->size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = n < 0 ? std::strerror(errno) : "file shrank while reading";
      ::close(fd);
      throw FormatError("cannot read " + path + ": " + why);
    }
    done += size_t(n);
  }
  ::close(fd);
  return buffer;
}

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  uint64_t size = 0;
  const int fd = open_regular_file(path, &size);
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->path_ = path;
  m->size_ = size;
  if (m->size_ > uint64_t(std::numeric_limits<size_t>::max())) {
    ::close(fd);
    throw FormatError(path + ": file of " + std::to_string(m->size_) + " bytes exceeds the address space");
  }
  if (m->size_ > 0) {
    void* p = ::mmap(nullptr, size_t(m->size_), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw FormatError("cannot map " + path + ": " + std::strerror(err));
    }
    m->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps the file referenced
  return m;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_t(size_));
}

}  // namespace ondevice
