#include "apply.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include <fmt/format.h>

namespace ucrfs::backends {
namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";
constexpr size_t kCopyBuffer = 1 << 20;

std::string Join(const std::vector<std::string_view>& parts, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    if (i) out += '/';
    out += parts[i];
  }
  return out;
}

// overlayfs reads trusted.overlay.* on its layers as instructions (opaque,
// redirect, metacopy): a layer must not bring its own. umoci drops them too.
bool ForbiddenXattr(std::string_view name) { return name.rfind("trusted.overlay.", 0) == 0; }

// A path naming dir/name for the *xattr calls that have no *at form: the
// magic link to the directory fd, then one component that the l* call does
// not follow.
std::string ProcPath(int dir, const std::string& name) { return fmt::format("/proc/self/fd/{}/{}", dir, name); }

Result<uid_t> Id(uint64_t v, std::string_view what, const std::string& path) {
  if (v >= 0xFFFFFFFFull) return Error(Errc::kMalformed, fmt::format("{}: {} {} is out of range", path, what, v));
  return static_cast<uid_t>(v);
}

}  // namespace

Status RemoveAt(int dir, const std::string& name, dev_t dev, const std::string& what) {
  struct stat st;
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return Ok();
    return ErrnoError("stat " + what);
  }
  if (S_ISDIR(st.st_mode)) {
    if (st.st_dev != dev) {
      return Error(Errc::kIo, fmt::format("refusing to remove {}: another filesystem is mounted there", what));
    }
    UniqueFd sub(::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub.valid()) return ErrnoError("open " + what);
    UCRFS_TRY(EmptyDirFd(sub.get(), dev, what));
    if (::unlinkat(dir, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) return ErrnoError("rmdir " + what);
    return Ok();
  }
  if (::unlinkat(dir, name.c_str(), 0) != 0 && errno != ENOENT) return ErrnoError("unlink " + what);
  return Ok();
}

Status EmptyDirFd(int dir, dev_t dev, const std::string& what) {
  std::vector<std::string> names;
  {
    int dup = ::openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dup < 0) return ErrnoError("open " + what);
    DIR* d = ::fdopendir(dup);
    if (d == nullptr) {
      ::close(dup);
      return ErrnoError("opendir " + what);
    }
    errno = 0;
    while (struct dirent* de = ::readdir(d)) {
      std::string_view n(de->d_name);
      if (n != "." && n != "..") names.emplace_back(n);
    }
    int err = errno;
    ::closedir(d);
    if (err != 0) return ErrnoError("readdir " + what, err);
  }
  for (const auto& n : names) UCRFS_TRY(RemoveAt(dir, n, dev, what + "/" + n));
  return Ok();
}

Status EmptyDir(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return Ok();
    return ErrnoError("open " + path);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("stat " + path);
  return EmptyDirFd(fd.get(), st.st_dev, path);
}

Applier::Applier(int root, Whiteouts mode) : root_(root), mode_(mode) {
  struct stat st;
  if (::fstat(root, &st) == 0) dev_ = st.st_dev;
}

void Applier::Forget(const std::string& path, bool keep_self) {
  if (path.empty()) {
    auto self = dir_times_.find("");
    std::optional<timespec> keep;
    if (keep_self && self != dir_times_.end()) keep = self->second;
    dir_times_.clear();
    if (keep) dir_times_[""] = *keep;
    return;
  }
  if (!keep_self) dir_times_.erase(path);
  std::string prefix = path + "/";
  for (auto it = dir_times_.lower_bound(prefix); it != dir_times_.end() && it->first.rfind(prefix, 0) == 0;) {
    it = dir_times_.erase(it);
  }
}

Status Applier::Remove(int dir, const std::string& name, const std::string& path) {
  Forget(path, false);
  return RemoveAt(dir, name, dev_, fmt::format("{}: {}", layer_, path));
}

Result<UniqueFd> Applier::OpenDir(const std::vector<std::string_view>& parts, size_t n,
                                                 Create create) {
  UniqueFd cur(::openat(root_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cur.valid()) return ErrnoError("open the root directory");
  for (size_t i = 0; i < n; ++i) {
    std::string name(parts[i]);
    if (name == "." || name == "..") {
      return Error(Errc::kMalformed, fmt::format("{}: path {} has a '{}' component", layer_, Join(parts, n), name));
    }
    for (int attempt = 0;; ++attempt) {
      UniqueFd next(::openat(cur.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (next.valid()) {
        cur = std::move(next);
        break;
      }
      int err = errno;
      // ENOTDIR: a non-directory; ELOOP: a symlink (never followed).
      bool missing = err == ENOENT, other = err == ENOTDIR || err == ELOOP;
      if (!missing && !other) return ErrnoError(fmt::format("{}: open {}", layer_, Join(parts, i + 1)), err);
      if (create == Create::kNo || attempt > 0) return UniqueFd();
      if (other) {
        if (create != Create::kReplace) return UniqueFd();
        UCRFS_TRY(Remove(cur.get(), name, Join(parts, i + 1)));
      }
      if (::mkdirat(cur.get(), name.c_str(), 0755) != 0) {
        return ErrnoError(fmt::format("{}: mkdir {}", layer_, Join(parts, i + 1)));
      }
      // Not the umask's business: an implicit parent is 0755 root:root with
      // mtime 0, as in the merged tree (deterministic, whenever it is made).
      if (::fchmodat(cur.get(), name.c_str(), 0755, AT_SYMLINK_NOFOLLOW) != 0) {
        return ErrnoError(fmt::format("{}: chmod {}", layer_, Join(parts, i + 1)));
      }
      dir_times_[Join(parts, i + 1)] = timespec{0, 0};
    }
  }
  return cur;
}

Status Applier::ApplyLayer(const std::vector<index::TarEntry>& entries, index::LayerReader& reader,
                           const std::string& layer) {
  layer_ = layer;
  auto is_whiteout = [](const index::TarEntry& e) {
    auto parts = index::SplitPath(e.path);
    return !parts.empty() && parts.back().substr(0, kWhiteoutPrefix.size()) == kWhiteoutPrefix;
  };
  if (mode_ == Whiteouts::kApply) {
    for (const auto& e : entries) {
      if (is_whiteout(e)) UCRFS_TRY(Whiteout(e));
    }
  }
  for (const auto& e : entries) {
    if (!is_whiteout(e)) UCRFS_TRY(Entry(e, reader));
  }
  if (mode_ == Whiteouts::kConvert) {
    for (const auto& e : entries) {
      if (is_whiteout(e)) UCRFS_TRY(Whiteout(e));
    }
  }
  return Ok();
}

Status Applier::Whiteout(const index::TarEntry& e) {
  auto parts = index::SplitPath(e.path);
  std::string marker(parts.back());
  bool opaque = marker == kOpaqueMarker;
  std::string target = marker.substr(kWhiteoutPrefix.size());
  if (!opaque && (target.empty() || target == "." || target == ".." ||
                  target.find('/') != std::string::npos)) {
    return Error(Errc::kMalformed, fmt::format("{}: {}: whiteout of '{}'", layer_, e.path, target));
  }
  Create create = mode_ == Whiteouts::kApply ? Create::kNo : Create::kMissing;
  UCRFS_ASSIGN(auto dir, OpenDir(parts, parts.size() - 1, create));
  if (!dir.valid()) return Ok();  // nothing below a non-directory to hide
  std::string dir_path = Join(parts, parts.size() - 1);
  if (mode_ == Whiteouts::kApply) {
    if (opaque) {
      Forget(dir_path, true);
      return EmptyDirFd(dir.get(), dev_, fmt::format("{}: {}", layer_, dir_path));
    }
    return Remove(dir.get(), target, dir_path.empty() ? target : dir_path + "/" + target);
  }
  if (opaque) {
    if (::fsetxattr(dir.get(), "trusted.overlay.opaque", "y", 1, 0) != 0) {
      return ErrnoError(fmt::format("{}: set trusted.overlay.opaque on {}", layer_, dir_path.empty() ? "/" : dir_path));
    }
    return Ok();
  }
  struct stat st;
  if (::fstatat(dir.get(), target.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return Ok();  // the layer's own
  if (::mknodat(dir.get(), target.c_str(), S_IFCHR, makedev(0, 0)) != 0) {
    return ErrnoError(fmt::format("{}: {}: mknod whiteout", layer_, e.path));
  }
  return Ok();
}

Status Applier::Entry(const index::TarEntry& e, index::LayerReader& reader) {
  auto parts = index::SplitPath(e.path);
  if (parts.empty()) {  // "./": the root's own metadata
    if (e.type != index::EntryType::kDir) {
      return Error(Errc::kMalformed, fmt::format("{}: the root entry is not a directory", layer_));
    }
    UCRFS_TRY(SetMeta(root_, "", root_, e));
    dir_times_[""] = timespec{e.mtime_sec, static_cast<long>(e.mtime_nsec)};
    return Ok();
  }
  UCRFS_ASSIGN(auto parent, OpenDir(parts, parts.size() - 1, Create::kReplace));
  int dir = parent.get();
  std::string name(parts.back());
  struct stat st;
  bool exists = ::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  if (!exists && errno != ENOENT) return ErrnoError(fmt::format("{}: stat {}", layer_, e.path));

  if (e.type == index::EntryType::kDir) {
    if (exists && !S_ISDIR(st.st_mode)) {
      UCRFS_TRY(Remove(dir, name, e.path));
      exists = false;
    }
    if (!exists && ::mkdirat(dir, name.c_str(), 0700) != 0) {
      return ErrnoError(fmt::format("{}: mkdir {}", layer_, e.path));
    }
    UniqueFd fd(::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.valid()) return ErrnoError(fmt::format("{}: open {}", layer_, e.path));
    UCRFS_TRY(SetMeta(dir, name, fd.get(), e));
    dir_times_[e.path] = timespec{e.mtime_sec, static_cast<long>(e.mtime_nsec)};
    return Ok();
  }
  if (exists) UCRFS_TRY(Remove(dir, name, e.path));

  switch (e.type) {
    case index::EntryType::kFile:
      return WriteFile(dir, name, e, reader);
    case index::EntryType::kHardlink: {
      auto tparts = index::SplitPath(e.link_target);
      if (tparts.empty()) {
        return Error(Errc::kMalformed, fmt::format("{}: {}: hardlink to the root", layer_, e.path));
      }
      UCRFS_ASSIGN(auto tdir, OpenDir(tparts, tparts.size() - 1, Create::kNo));
      std::string tname(tparts.back());
      struct stat tst;
      if (!tdir.valid() || ::fstatat(tdir.get(), tname.c_str(), &tst, AT_SYMLINK_NOFOLLOW) != 0 || S_ISDIR(tst.st_mode)) {
        if (mode_ == Whiteouts::kConvert) {
          return Error(Errc::kUnsupported,
                       fmt::format("{}: {}: hardlink to '{}', which is not in this layer: a layer unpacked on its "
                                   "own cannot link into another (use the copy or fuse backend)",
                                   layer_, e.path, e.link_target));
        }
        return Error(Errc::kMalformed,
                     fmt::format("{}: {}: hardlink to missing target '{}'", layer_, e.path, e.link_target));
      }
      // Without AT_SYMLINK_FOLLOW: links the target itself, even a symlink.
      if (::linkat(tdir.get(), tname.c_str(), dir, name.c_str(), 0) != 0) {
        return ErrnoError(fmt::format("{}: link {} to {}", layer_, e.path, e.link_target));
      }
      return Ok();
    }
    case index::EntryType::kSymlink:
      if (::symlinkat(e.link_target.c_str(), dir, name.c_str()) != 0) {
        return ErrnoError(fmt::format("{}: symlink {}", layer_, e.path));
      }
      return SetMeta(dir, name, -1, e);
    case index::EntryType::kCharDev:
    case index::EntryType::kBlockDev:
    case index::EntryType::kFifo: {
      mode_t type = e.type == index::EntryType::kCharDev ? S_IFCHR
                    : e.type == index::EntryType::kBlockDev ? S_IFBLK
                                                             : S_IFIFO;
      dev_t dev = type == S_IFIFO ? 0 : makedev(e.dev_major, e.dev_minor);
      if (::mknodat(dir, name.c_str(), type | 0600, dev) != 0) {
        return ErrnoError(fmt::format("{}: mknod {}", layer_, e.path));
      }
      return SetMeta(dir, name, -1, e);
    }
    case index::EntryType::kDir:
      break;
  }
  return Ok();
}

Status Applier::WriteFile(int dir, const std::string& name, const index::TarEntry& e, index::LayerReader& reader) {
  UniqueFd fd(::openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid()) return ErrnoError(fmt::format("{}: create {}", layer_, e.path));
  // Holes of a sparse file stay holes: only the extents are written.
  if (::ftruncate(fd.get(), static_cast<off_t>(e.size)) != 0) {
    return ErrnoError(fmt::format("{}: truncate {}", layer_, e.path));
  }
  if (buf_.empty()) buf_.resize(kCopyBuffer);
  for (const auto& x : e.extents) {
    for (uint64_t done = 0; done < x.length;) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(buf_.size(), x.length - done));
      UCRFS_ASSIGN(size_t got, reader.ReadAt(x.stream_offset + done, buf_.data(), want));
      if (got != want) {
        return Error(Errc::kMalformed, fmt::format("{}: {}: layer stream ends inside the file", layer_, e.path));
      }
      for (size_t off = 0; off < got;) {
        ssize_t n = ::pwrite(fd.get(), buf_.data() + off, got - off,
                             static_cast<off_t>(x.file_offset + done + off));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return ErrnoError(fmt::format("{}: write {}", layer_, e.path));
        off += static_cast<size_t>(n);
      }
      done += got;
    }
  }
  return SetMeta(dir, name, fd.get(), e);
}

// Owner, then mode (chown clears setuid/setgid), then xattrs (chown clears
// security.capability too), then mtime last (directories: in Finish).
// `fd` is an open fd of the entry (a file or directory we made) or -1.
Status Applier::SetMeta(int dir, const std::string& name, int fd, const index::TarEntry& e) {
  auto fail = [&](std::string_view what) { return ErrnoError(fmt::format("{}: {} {}", layer_, what, e.path.empty() ? "/" : e.path)); };
  UCRFS_ASSIGN(uid_t uid, Id(e.uid, "uid", e.path));
  UCRFS_ASSIGN(gid_t gid, Id(e.gid, "gid", e.path));
  bool symlink = e.type == index::EntryType::kSymlink;
  if (fd >= 0) {
    if (::fchown(fd, uid, gid) != 0) return fail("chown");
    if (::fchmod(fd, e.mode & 07777) != 0) return fail("chmod");
  } else {
    if (::fchownat(dir, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) return fail("chown");
    if (!symlink && ::fchmodat(dir, name.c_str(), e.mode & 07777, AT_SYMLINK_NOFOLLOW) != 0) return fail("chmod");
  }
  std::string proc = fd >= 0 ? std::string() : ProcPath(dir, name);
  if (e.type == index::EntryType::kDir && fd >= 0) {
    // A directory entry over a directory replaces its xattrs.
    char names[65536];
    ssize_t n = ::flistxattr(fd, names, sizeof names);
    for (ssize_t i = 0; n > 0 && i < n;) {
      std::string xn(names + i);
      i += static_cast<ssize_t>(xn.size()) + 1;
      bool keep = false;
      for (const auto& [k, v] : e.xattrs) keep = keep || k == xn;
      if (!keep && !ForbiddenXattr(xn) && ::fremovexattr(fd, xn.c_str()) != 0 && errno != ENODATA) {
        return fail("remove xattr " + xn + " of");
      }
    }
  }
  for (const auto& [k, v] : e.xattrs) {
    if (ForbiddenXattr(k)) continue;
    int rc = fd >= 0 ? ::fsetxattr(fd, k.c_str(), v.data(), v.size(), 0)
                     : ::lsetxattr(proc.c_str(), k.c_str(), v.data(), v.size(), 0);
    if (rc != 0) return fail("set xattr " + k + " on");
  }
  if (e.type != index::EntryType::kDir) {
    timespec ts[2] = {{e.mtime_sec, static_cast<long>(e.mtime_nsec)}, {e.mtime_sec, static_cast<long>(e.mtime_nsec)}};
    int rc = fd >= 0 ? ::futimens(fd, ts) : ::utimensat(dir, name.c_str(), ts, AT_SYMLINK_NOFOLLOW);
    if (rc != 0) return fail("set mtime of");
  }
  return Ok();
}

Status Applier::Finish() {
  for (const auto& [path, t] : dir_times_) {
    auto parts = index::SplitPath(path);
    UCRFS_ASSIGN(auto dir, OpenDir(parts, parts.size(), Create::kNo));
    if (!dir.valid()) continue;
    timespec ts[2] = {t, t};
    if (::futimens(dir.get(), ts) != 0) return ErrnoError("set mtime of " + (path.empty() ? "/" : path));
  }
  return Ok();
}

}  // namespace ucrfs::backends
