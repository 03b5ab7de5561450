// ondevice_spm: the runtime's SentencePiece tokenizer on the command line.
//
//   ondevice_spm encode MODEL   UTF-8 lines on stdin -> space-separated ids per line
//   ondevice_spm decode MODEL   lines of space-separated ids on stdin -> text per line
//
// Lines are separated by '\n' only (a '\r' is part of the line). Output is
// one line per input line. tests/test_cpp_tokenizer.py compares it with the
// sentencepiece Python package.
//
// Exit status: 0 on success, 1 on an error (bad model, invalid UTF-8, bad or
// out-of-range id; the reason goes to stderr, naming the line), 2 on bad usage.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <stdio.h>
#include <string>
#include <vector>

#include "ondevice/error.h"
#include "ondevice/sentencepiece.h"

namespace {

// Lines of a stream without their '\n' (POSIX getline: embedded NULs kept).
class LineReader {
 public:
  explicit LineReader(std::FILE* in) : in_(in) {}
  ~LineReader() { std::free(buf_); }
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  bool next(std::string* line) {
    const ssize_t n = ::getline(&buf_, &cap_, in_);
    if (n < 0) return false;
    line->assign(buf_, size_t(n));
    if (!line->empty() && line->back() == '\n') line->pop_back();
    return true;
  }

 private:
  std::FILE* in_;
  char* buf_ = nullptr;
  size_t cap_ = 0;
};

std::vector<int32_t> parse_ids(const std::string& line, size_t line_no) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < line.size()) {
    if (line[i] == ' ' || line[i] == '\t' || line[i] == '\r') {
      ++i;
      continue;
    }
    size_t j = i;
    if (line[j] == '-') ++j;
    const size_t digits = j;
    while (j < line.size() && line[j] >= '0' && line[j] <= '9') ++j;
    if (j == digits || (j < line.size() && line[j] != ' ' && line[j] != '\t' && line[j] != '\r'))
      throw ondevice::ArgumentError("line " + std::to_string(line_no) + ": not an id list: '" + line + "'");
    errno = 0;
    const long long v = std::strtoll(line.c_str() + i, nullptr, 10);
    if (errno != 0 || v < INT32_MIN || v > INT32_MAX)
      throw ondevice::ArgumentError("line " + std::to_string(line_no) + ": id out of range: " +
                                    line.substr(i, j - i));
    ids.push_back(int32_t(v));
    i = j;
  }
  return ids;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || (std::string(argv[1]) != "encode" && std::string(argv[1]) != "decode")) {
    std::fprintf(stderr, "usage: %s encode|decode MODEL < lines\n", argv[0]);
    return 2;
  }
  const bool encode = std::string(argv[1]) == "encode";
  size_t line_no = 0;
  try {
    const ondevice::SentencePieceTokenizer sp = ondevice::SentencePieceTokenizer::load(argv[2]);
    LineReader lines(stdin);
    std::string line, out;
    while (lines.next(&line)) {
      ++line_no;
      out.clear();
      if (encode) {
        const std::vector<int32_t> ids = sp.encode(line);
        for (size_t i = 0; i < ids.size(); ++i) {
          if (i) out.push_back(' ');
          out += std::to_string(ids[i]);
        }
      } else {
        out = sp.decode(parse_ids(line, line_no));
      }
      out.push_back('\n');
      std::fwrite(out.data(), 1, out.size(), stdout);
    }
  } catch (const ondevice::Error& e) {
    std::fflush(stdout);
    if (line_no > 0)
      std::fprintf(stderr, "ondevice_spm: line %zu: %s\n", line_no, e.what());
    else
      std::fprintf(stderr, "ondevice_spm: %s\n", e.what());
    return 1;
  }
  if (std::fflush(stdout) != 0) {
    std::fprintf(stderr, "ondevice_spm: cannot write output\n");
    return 1;
  }
  return 0;
}
