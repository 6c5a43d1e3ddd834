// A ByteStream that decodes a zstd file: how tar+zstd layers are indexed.
//
// Concatenated frames decode as one stream and skippable frames (where
// zstd:chunked keeps its TOC) are passed over. No random access: ucrfs keeps
// a decoded copy of zstd layers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "ucrfs/common/error.h"
#include "ucrfs/index/stream.h"

namespace ucrfs::index {

class ZstdStream final : public ByteStream {
 public:
  // Corrupt or truncated data surfaces as kMalformed from Read.
  static Result<std::unique_ptr<ZstdStream>> Open(const std::string& path);
  ~ZstdStream() override;

  Result<size_t> Read(char* buf, size_t n) override;
  uint64_t position() const override;

 private:
  struct Impl;
  explicit ZstdStream(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ucrfs::index
