// Small POSIX file helpers: an owning fd, whole-file reads, atomic writes.
#pragma once

#include <string>
#include <string_view>

#include "ucrfs/common/error.h"

namespace ucrfs {

// Owns a file descriptor; closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

Result<std::string> ReadFile(const std::string& path);
// Up to `length` bytes of a file from `offset` (fewer only at its end).
Result<std::string> ReadFileRange(const std::string& path, uint64_t offset, uint64_t length);
// pread until `len` bytes or the end of the file; the count read.
Result<size_t> PreadFull(int fd, char* buf, size_t len, uint64_t offset, std::string_view what);
// Writes all of data to fd, retrying on EINTR and short writes.
Status WriteAll(int fd, std::string_view data, std::string_view what);
// Writes to a temporary file beside path, fsyncs, renames over path.
Status WriteFileAtomic(const std::string& path, std::string_view data);
// mkdir -p.
Status MakeDirs(const std::string& path, unsigned mode = 0755);
// rm -rf that does not follow symlinks. A missing path is not an error.
Status RemoveAll(const std::string& path);
bool PathExists(const std::string& path);
// fsync of a directory, so a rename in it is durable.
Status SyncDir(const std::string& path);

}  // namespace ucrfs
