#include "in_root.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/format.h>

namespace ucrfs::isolator {
namespace {

long Openat2(int dirfd, const char* path, int flags, unsigned mode, uint64_t resolve) {
  struct open_how how = {};
  how.flags = static_cast<uint64_t>(flags);
  how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
  how.resolve = resolve;
  long r;
  do {
    r = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
  } while (r < 0 && (errno == EINTR || errno == EAGAIN));
  return r;
}

std::string Rel(const std::string& path) {
  size_t i = path.find_first_not_of('/');
  return i == std::string::npos ? "." : path.substr(i);
}

}  // namespace

std::string FdPath(int fd) { return fmt::format("/proc/self/fd/{}", fd); }

Result<UniqueFd> OpenDir(const std::string& path) {
  int fd = ::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open " + path);
  return UniqueFd(fd);
}

Result<UniqueFd> OpenInRoot(int root_fd, const std::string& path, int flags, unsigned mode) {
  long fd = Openat2(root_fd, Rel(path).c_str(), flags | O_CLOEXEC, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
  if (fd < 0) {
    Error e = ErrnoError("open " + path + " in the rootfs");
    if (errno == ENOENT) return Error(Errc::kNotFound, e.message());
    return e;
  }
  return UniqueFd(static_cast<int>(fd));
}

Result<std::string> ReadInRoot(int root_fd, const std::string& path) {
  UCRFS_ASSIGN(UniqueFd fd, OpenInRoot(root_fd, path, O_RDONLY));
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("read " + path + " in the rootfs");
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (64u << 20)) return Error(Errc::kTooBig, path + " in the rootfs is over 64 MiB");
  }
  return out;
}

Result<UniqueFd> MakeDirsInRoot(int root_fd, const std::string& path, unsigned mode) {
  // Walk one component at a time: each is resolved in the root from the
  // directory found so far, created if missing.
  std::string rel = Rel(path);
  UniqueFd dir(::fcntl(root_fd, F_DUPFD_CLOEXEC, 3));
  if (!dir.valid()) return ErrnoError("dup");
  std::string done;
  size_t pos = 0;
  while (pos < rel.size()) {
    size_t slash = rel.find('/', pos);
    std::string comp = rel.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
    pos = slash == std::string::npos ? rel.size() : slash + 1;
    if (comp.empty() || comp == ".") continue;
    done += "/" + comp;
    // Resolve from the root, so a symlink component stays inside it.
    auto next = OpenInRoot(root_fd, done, O_PATH | O_DIRECTORY);
    if (!next.ok() && next.error().code() == Errc::kNotFound) {
      if (::mkdirat(dir.get(), comp.c_str(), mode) != 0 && errno != EEXIST)
        return ErrnoError(fmt::format("mkdir {} in the rootfs", done));
      next = OpenInRoot(root_fd, done, O_PATH | O_DIRECTORY);
    }
    if (!next.ok()) {
      if (errno == ENOTDIR)
        return Error(Errc::kInvalidArgument, fmt::format("{} in the rootfs is not a directory", done));
      return next.error();
    }
    dir = std::move(*next);
  }
  return dir;
}

Result<UniqueFd> MakeMountPointInRoot(int root_fd, const std::string& path, bool file) {
  if (!file) return MakeDirsInRoot(root_fd, path);
  std::string rel = Rel(path);
  auto slash = rel.rfind('/');
  std::string parent = slash == std::string::npos ? "." : rel.substr(0, slash);
  std::string name = slash == std::string::npos ? rel : rel.substr(slash + 1);
  UCRFS_ASSIGN(UniqueFd dir, MakeDirsInRoot(root_fd, parent));
  auto existing = OpenInRoot(root_fd, path, O_PATH);
  if (existing.ok()) {
    struct stat st;
    if (::fstat(existing->get(), &st) == 0 && S_ISDIR(st.st_mode))
      return Error(Errc::kInvalidArgument, fmt::format("{} in the rootfs is a directory, the source a file", path));
    return existing;
  }
  // O_PATH dirs cannot be used with O_CREAT: reopen the parent for real.
  UCRFS_ASSIGN(UniqueFd pdir, OpenInRoot(root_fd, parent, O_RDONLY | O_DIRECTORY));
  int fd = ::openat(pdir.get(), name.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0 && errno != EEXIST) return ErrnoError(fmt::format("create {} in the rootfs", path));
  if (fd >= 0) ::close(fd);
  return OpenInRoot(root_fd, path, O_PATH);
}

}  // namespace ucrfs::isolator
