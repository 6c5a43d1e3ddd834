// Shared by the fuzz targets: what a target asserts about a parser's output
// beyond "it did not crash". A broken promise aborts, which both libFuzzer
// and the corpus replay report as a failure, with the message.
#pragma once

#include <zstd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
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

// `data` as one zstd frame (the form a zstd:chunked TOC and a layer index
// travel in), so that a target can try what is inside it.
inline std::string Zstd(std::string_view data) {
  std::string z(ZSTD_compressBound(data.size()), '\0');
  size_t n = ZSTD_compress(z.data(), z.size(), data.data(), data.size(), 1);
  Check(!ZSTD_isError(n), "zstd compresses any input");
  z.resize(n);
  return z;
}

}  // namespace ucrfs::fuzz
