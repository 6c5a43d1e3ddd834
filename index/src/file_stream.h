// A ByteStream over a local file: how plain-tar layers are read for indexing.
//
// Reads with pread at a tracked position, so the fd's own offset is never
// used and Skip is a seek (no bytes are read to skip file data).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "ucrfs/common/error.h"
#include "ucrfs/common/file.h"
#include "ucrfs/index/stream.h"

namespace ucrfs::index {

class FileStream final : public ByteStream {
 public:
  // Opens `path` read-only.
  static Result<std::unique_ptr<FileStream>> Open(const std::string& path);
  // Takes ownership of an open fd; `name` is used in error messages. The
  // stream starts at offset 0 of the file whatever the fd's own offset is.
  static Result<std::unique_ptr<FileStream>> FromFd(UniqueFd fd, std::string name);

  Result<size_t> Read(char* buf, size_t n) override;
  // A seek; kMalformed when it would pass the end of the file.
  Status Skip(uint64_t n) override;
  uint64_t position() const override { return pos_; }
  uint64_t size() const { return size_; }

 private:
  FileStream(UniqueFd fd, std::string name, uint64_t size) : fd_(std::move(fd)), name_(std::move(name)), size_(size) {}

  UniqueFd fd_;
  std::string name_;
  uint64_t size_;  // the file is immutable while indexed (store blobs are)
  uint64_t pos_ = 0;
};

}  // namespace ucrfs::index
