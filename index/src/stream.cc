#include "ucrfs/index/stream.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>

#include <fmt/format.h>

#include "file_stream.h"

namespace ucrfs::index {

Status ByteStream::Skip(uint64_t n) {
  // Small skips (tar padding) stay on the stack; file data goes through a
  // heap buffer big enough that a decoder is called rarely.
  constexpr size_t kSmall = 4096, kBig = 64 * 1024;
  char small[kSmall];
  std::unique_ptr<char[]> big;
  char* buf = small;
  size_t cap = kSmall;
  if (n > kSmall) {
    big.reset(new char[kBig]);
    buf = big.get();
    cap = kBig;
  }
  while (n > 0) {
    UCRFS_ASSIGN(size_t got, Read(buf, static_cast<size_t>(std::min<uint64_t>(n, cap))));
    if (got == 0) return Error(Errc::kMalformed, fmt::format("unexpected end of stream at offset {}", position()));
    n -= got;
  }
  return Ok();
}

Status ReadFull(ByteStream& s, char* buf, size_t n) {
  while (n > 0) {
    UCRFS_ASSIGN(size_t got, s.Read(buf, n));
    if (got == 0) return Error(Errc::kMalformed, fmt::format("unexpected end of stream at offset {}", s.position()));
    buf += got;
    n -= got;
  }
  return Ok();
}

Result<std::unique_ptr<FileStream>> FileStream::Open(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError("open " + path);
  return FromFd(std::move(fd), path);
}

Result<std::unique_ptr<FileStream>> FileStream::FromFd(UniqueFd fd, std::string name) {
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("stat " + name);
  if (!S_ISREG(st.st_mode)) return Error(Errc::kInvalidArgument, name + ": not a regular file");
  auto size = static_cast<uint64_t>(st.st_size);
  return std::unique_ptr<FileStream>(new FileStream(std::move(fd), std::move(name), size));
}

Result<size_t> FileStream::Read(char* buf, size_t n) {
  for (;;) {
    ssize_t got = ::pread(fd_.get(), buf, n, static_cast<off_t>(pos_));
    if (got < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(fmt::format("read {} at offset {}", name_, pos_));
    }
    pos_ += static_cast<uint64_t>(got);
    return static_cast<size_t>(got);
  }
}

Status FileStream::Skip(uint64_t n) {
  if (n > size_ - std::min(pos_, size_)) {
    return Error(Errc::kMalformed,
                 fmt::format("{}: unexpected end of stream skipping {} bytes at offset {} (size {})", name_, n, pos_,
                             size_));
  }
  pos_ += n;
  return Ok();
}

}  // namespace ucrfs::index
