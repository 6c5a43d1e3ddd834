// Shared by the fuzz targets: what a target asserts about a parser's output
// beyond "it did not crash". A broken promise aborts, which both libFuzzer
// and the corpus replay report as a failure, with the message.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace ucrfs::fuzz {

inline void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "broken promise: %s\n", what);
    std::abort();
  }
}

// A path as parsers promise it: relative, normalized, no "." or ".."
// component, no empty component, no NUL.
inline bool NormalizedPath(std::string_view p) {
  if (p.empty()) return true;  // the root
  if (p.front() == '/' || p.back() == '/' || p.find('\0') != std::string_view::npos) return false;
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find('/', start);
    if (end == std::string_view::npos) end = p.size();
    std::string_view c = p.substr(start, end - start);
    if (c.empty() || c == "." || c == "..") return false;
    start = end + 1;
  }
  return true;
}

}  // namespace ucrfs::fuzz
