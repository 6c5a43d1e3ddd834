#include "ucrfs/backends/backends.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>

#include <linux/openat2.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <sys/xattr.h>

#include <functional>
#include <set>

#include <fmt/format.h>

#include "apply.h"
#include "ucrfs/common/file.h"
#include "ucrfs/common/log.h"
#include "ucrfs/common/mounts.h"
#include "ucrfs/index/gc.h"

namespace ucrfs::backends {
namespace {

// overlayfs stacks at most this many lower layers (OVL_MAX_STACK).
constexpr size_t kMaxOverlayLayers = 500;

Result<std::string> RealPath(const std::string& path, std::string_view what) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) return ErrnoError(fmt::format("{} {}", what, path));
  return std::string(buf);
}

Status CheckEmptyDir(const std::string& path, std::string_view what) {
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) return ErrnoError(fmt::format("{} {}", what, path));
  bool empty = true;
  while (struct dirent* de = ::readdir(d)) {
    std::string_view n(de->d_name);
    if (n != "." && n != "..") {
      empty = false;
      break;
    }
  }
  ::closedir(d);
  if (!empty) return Error(Errc::kInvalidArgument, fmt::format("{} {} is not empty", what, path));
  return Ok();
}

// Unmounts everything at or below root; a busy mount is detached (its users
// keep what they have open, the rootfs is free at once).
Status UnmountAll(const std::string& root) {
  for (int round = 0; round < 16; ++round) {
    auto mounts = MountsUnder(root);
    if (mounts.empty()) return Ok();
    for (const auto& mp : mounts) {
      if (::umount2(mp.c_str(), UMOUNT_NOFOLLOW) == 0) continue;
      int err = errno;
      if (err == EINVAL || err == ENOENT) continue;  // went with a detached parent
      if (err == EBUSY && ::umount2(mp.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) continue;
      if (err == EBUSY) err = errno;
      return ErrnoError("unmount " + mp, err);
    }
  }
  return Error(Errc::kIo, fmt::format("{} is still mounted after 16 rounds of unmounting", root));
}

// mount(2) in a child that first changes to `dir`: relative paths in `data`
// then resolve there, and the calling process's working directory (shared by
// its threads) never changes.
Status MountFrom(const std::string& dir, const std::string& source, const std::string& target,
                 const std::string& fstype, unsigned long flags, const std::string& data) {
  pid_t pid = ::fork();
  if (pid < 0) return ErrnoError("fork");
  if (pid == 0) {
    if (::chdir(dir.c_str()) != 0) ::_exit(errno == 0 ? 255 : errno & 0xff);
    if (::mount(source.c_str(), target.c_str(), fstype.c_str(), flags, data.c_str()) != 0) {
      ::_exit(errno == 0 ? 255 : errno & 0xff);
    }
    ::_exit(0);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return ErrnoError("waitpid");
  }
  if (!WIFEXITED(status)) return Error(Errc::kInternal, fmt::format("mount helper for {} died (status {})", target, status));
  int err = WEXITSTATUS(status);
  if (err != 0) return ErrnoError(fmt::format("mount {} at {} ({} bytes of options)", fstype, target, data.size()), err);
  return Ok();
}

Result<std::pair<index::LayerRecord, std::unique_ptr<index::LayerReader>>> OpenLayer(
    const index::Store& store, const fetch::Descriptor& desc, const index::LazyOptions& lazy) {
  UCRFS_ASSIGN(auto rec, index::FindLayer(store, desc.digest));
  if (!rec) {
    return Error(Errc::kNotFound, fmt::format("layer {} is not indexed in the store (prepare the image first)",
                                              desc.digest.str()));
  }
  if (index::IsLazy(rec->format) && !lazy.opener) {
    return Error(Errc::kUnsupported, fmt::format("layer {} is lazy (its bytes are fetched on demand) and no "
                                                 "source was given to fetch it from",
                                                 desc.digest.str()));
  }
  UCRFS_ASSIGN(auto reader, index::LayerReader::Open(store, desc, *rec, lazy));
  return std::make_pair(*rec, std::move(reader));
}

std::string DigestPath(const std::string& dir, const Digest& d) {
  return fmt::format("{}/{}/{}", dir, d.algorithm_name(), d.hex());
}

// Removes temporary unpack directories whose process no longer runs
// (".tmp-<hex>-<pid>-<n>").
void SweepDeadTemps(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  std::vector<std::string> dead;
  while (struct dirent* de = ::readdir(d)) {
    std::string_view n(de->d_name);
    if (n.rfind(".tmp-", 0) != 0) continue;
    size_t b = n.find('-', 5), e = b == std::string_view::npos ? b : n.find('-', b + 1);
    if (e == std::string_view::npos) continue;
    pid_t pid = static_cast<pid_t>(std::atol(std::string(n.substr(b + 1, e - b - 1)).c_str()));
    if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) dead.emplace_back(n);
  }
  ::closedir(d);
  for (const auto& n : dead) {
    if (auto st = RemoveAll(dir + "/" + n); !st.ok()) spdlog::warn("{}", st.error().message());
  }
}

// Makes dir/name once: `fill` writes the tree into a temporary directory
// (its root fd given, 0755: the layer's root is 0755 root:root unless the
// layer says otherwise), which is synced and then renamed to `name`, so a
// directory of that name is always complete. Concurrent callers are safe:
// each fills its own temporary directory and the first rename wins.
Result<std::string> UnpackOnce(const std::string& dir, const std::string& name,
                               const std::function<Status(int root)>& fill) {
  const std::string final_path = dir + "/" + name;
  struct stat info;
  if (::lstat(final_path.c_str(), &info) == 0 && S_ISDIR(info.st_mode)) return final_path;
  UCRFS_TRY(MakeDirs(dir, 0700));
  SweepDeadTemps(dir);
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = fmt::format("{}/.tmp-{}-{}-{}", dir, name, ::getpid(), counter++);
  if (::mkdir(tmp.c_str(), 0700) != 0) return ErrnoError("mkdir " + tmp);
  auto unpack = [&]() -> Status {
    UniqueFd root(::open(tmp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!root.valid()) return ErrnoError("open " + tmp);
    if (::fchmod(root.get(), 0755) != 0) return ErrnoError("chmod " + tmp);
    UCRFS_TRY(fill(root.get()));
    // Durable before it gets its name, like a blob.
    if (::syncfs(root.get()) != 0) return ErrnoError("syncfs " + tmp);
    return Ok();
  };
  Status st = unpack();
  if (st.ok() && ::rename(tmp.c_str(), final_path.c_str()) != 0) {
    // Another provisioner finished the same tree first: use theirs.
    if (errno != EEXIST && errno != ENOTEMPTY) st = ErrnoError("rename " + tmp);
  }
  if (PathExists(tmp)) {
    if (auto rm = RemoveAll(tmp); !rm.ok()) spdlog::warn("{}", rm.error().message());
  }
  if (!st.ok()) return st.error();
  (void)SyncDir(dir);
  return final_path;
}

Status ProvisionCopy(const RootfsRequest& req) {
  UniqueFd root(::open(req.rootfs.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!root.valid()) return ErrnoError("open rootfs " + req.rootfs);
  Applier applier(root.get(), Whiteouts::kApply);
  for (const auto& desc : req.image.layers) {
    UCRFS_ASSIGN(auto layer, OpenLayer(*req.store, desc, req.lazy));
    UCRFS_ASSIGN(auto entries, index::LoadLayerEntries(*req.store, layer.first));
    UCRFS_TRY(applier.ApplyLayer(entries, *layer.second, "layer " + desc.digest.str()));
  }
  return applier.Finish();
}

// Hardlink targets a layer names without having them itself (tar order: a
// link's target comes before it). Such a layer cannot be unpacked on its own.
std::vector<std::string> ExternalLinkTargets(const std::vector<index::TarEntry>& entries) {
  std::set<std::string> have, wanted;
  std::vector<std::string> out;
  for (const auto& e : entries) {
    if (e.type == index::EntryType::kHardlink && !have.contains(e.link_target) && wanted.insert(e.link_target).second) {
      out.push_back(e.link_target);
    }
    have.insert(e.path);
  }
  return out;
}

// openat2 confined to `root`: no symlink, no "..", no other mount.
UniqueFd OpenBeneath(int root, const std::string& path, int flags) {
  struct open_how how {};
  how.flags = static_cast<uint64_t>(flags | O_NOFOLLOW | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  return UniqueFd(static_cast<int>(::syscall(SYS_openat2, root, path.empty() ? "." : path.c_str(), &how, sizeof how)));
}

// Copies the extended attributes of `from` to `to` (both open fds), but
// overlayfs' own.
Status CopyXattrs(int from, int to, const std::string& what) {
  std::vector<char> names(65536);
  ssize_t n = ::flistxattr(from, names.data(), names.size());
  if (n < 0) return errno == ENOTSUP ? Ok() : Status(ErrnoError("list xattrs of " + what));
  std::vector<char> value(65536);
  for (ssize_t i = 0; i < n;) {
    std::string name(names.data() + i);
    i += static_cast<ssize_t>(name.size()) + 1;
    if (name.rfind("trusted.overlay.", 0) == 0) continue;
    ssize_t v = ::fgetxattr(from, name.c_str(), value.data(), value.size());
    if (v < 0) return ErrnoError(fmt::format("get xattr {} of {}", name, what));
    if (::fsetxattr(to, name.c_str(), value.data(), static_cast<size_t>(v), 0) != 0) {
      return ErrnoError(fmt::format("set xattr {} on {}", name, what));
    }
  }
  return Ok();
}

Status CopyOwnerModeTimes(int from_fd, const struct stat& st, int to, const std::string& what, bool times) {
  if (::fchown(to, st.st_uid, st.st_gid) != 0) return ErrnoError("chown " + what);
  if (::fchmod(to, st.st_mode & 07777) != 0) return ErrnoError("chmod " + what);
  UCRFS_TRY(CopyXattrs(from_fd, to, what));  // after chown, which drops security.capability
  if (times) {
    timespec ts[2] = {st.st_atim, st.st_mtim};
    if (::futimens(to, ts) != 0) return ErrnoError("set mtime of " + what);
  }
  return Ok();
}

// Copies `path` from `view` (a read-only overlay of the layers below) into
// the layer being unpacked at `layer`: the file with its owner, mode, xattrs
// and mtime, and the directories above it that the layer lacks, as the view
// has them (their mtimes are returned in `dir_times`, to be set once the
// layer's own entries are in). Regular files, symlinks, devices and fifos.
Status CopyLinkTarget(int view, int layer, const std::string& path,
                      std::vector<std::pair<std::string, timespec>>& dir_times) {
  std::string prefix;
  size_t start = 0;
  for (size_t slash; (slash = path.find('/', start)) != std::string::npos; start = slash + 1) {
    std::string dir = path.substr(0, slash);
    UniqueFd src = OpenBeneath(view, dir, O_RDONLY | O_DIRECTORY);
    if (!src.valid()) return ErrnoError("hardlink target's directory " + dir + " in the layers below");
    UniqueFd dst = OpenBeneath(layer, dir, O_RDONLY | O_DIRECTORY);
    if (dst.valid()) continue;
    struct stat st;
    if (::fstat(src.get(), &st) != 0) return ErrnoError("stat " + dir);
    UniqueFd parent = OpenBeneath(layer, path.substr(0, start), O_RDONLY | O_DIRECTORY);
    std::string name = dir.substr(start);
    if (!parent.valid() || ::mkdirat(parent.get(), name.c_str(), 0700) != 0) return ErrnoError("mkdir " + dir);
    dst = OpenBeneath(layer, dir, O_RDONLY | O_DIRECTORY);
    if (!dst.valid()) return ErrnoError("open " + dir);
    UCRFS_TRY(CopyOwnerModeTimes(src.get(), st, dst.get(), dir, /*times=*/false));
    dir_times.emplace_back(dir, st.st_mtim);
  }
  std::string parent_path = path.substr(0, start), name = path.substr(start);
  UniqueFd sp = OpenBeneath(view, parent_path, O_RDONLY | O_DIRECTORY);
  UniqueFd dp = OpenBeneath(layer, parent_path, O_RDONLY | O_DIRECTORY);
  if (!sp.valid() || !dp.valid()) return ErrnoError("open the directory of " + path);
  struct stat st;
  if (::fstatat(sp.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoError("hardlink target " + path + " in the layers below");
  }
  if (S_ISREG(st.st_mode)) {
    UniqueFd in(::openat(sp.get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    UniqueFd out(::openat(dp.get(), name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!in.valid() || !out.valid()) return ErrnoError("copy " + path);
    // sendfile: copy_file_range refuses to cross from overlayfs (EXDEV).
    for (off_t left = st.st_size; left > 0;) {
      ssize_t n = ::sendfile(out.get(), in.get(), nullptr, static_cast<size_t>(std::min<off_t>(left, 1 << 30)));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return n == 0 ? Error(Errc::kIo, "copy " + path + ": short") : Status(ErrnoError("copy " + path));
      left -= n;
    }
    return CopyOwnerModeTimes(in.get(), st, out.get(), path, /*times=*/true);
  }
  if (S_ISLNK(st.st_mode)) {
    std::vector<char> target(static_cast<size_t>(st.st_size) + 1);
    ssize_t n = ::readlinkat(sp.get(), name.c_str(), target.data(), target.size());
    if (n < 0 || static_cast<size_t>(n) >= target.size()) return ErrnoError("readlink " + path);
    if (::symlinkat(std::string(target.data(), static_cast<size_t>(n)).c_str(), dp.get(), name.c_str()) != 0 ||
        ::fchownat(dp.get(), name.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoError("copy symlink " + path);
    }
    timespec ts[2] = {st.st_atim, st.st_mtim};
    if (::utimensat(dp.get(), name.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) return ErrnoError("set mtime of " + path);
    return Ok();
  }
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode)) {
    if (S_ISCHR(st.st_mode) && st.st_rdev == 0) return Error(Errc::kMalformed, "hardlink to a whiteout " + path);
    if (::mknodat(dp.get(), name.c_str(), (st.st_mode & S_IFMT) | 0600, st.st_rdev) != 0) return ErrnoError("mknod " + path);
    UniqueFd node = OpenBeneath(dp.get(), name, O_PATH);
    if (!node.valid()) return ErrnoError("open " + path);
    // fchown/fchmod/fsetxattr do not take O_PATH fds: go through /proc.
    std::string proc = fmt::format("/proc/self/fd/{}", node.get());
    if (::chown(proc.c_str(), st.st_uid, st.st_gid) != 0 || ::chmod(proc.c_str(), st.st_mode & 07777) != 0) {
      return ErrnoError("set owner and mode of " + path);
    }
    timespec ts[2] = {st.st_atim, st.st_mtim};
    if (::utimensat(dp.get(), name.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) return ErrnoError("set mtime of " + path);
    return Ok();
  }
  return Error(Errc::kMalformed, fmt::format("hardlink to {}, which is a directory in the layers below", path));
}

// Layer i of the image unpacked for overlayfs. A layer that hardlinks to
// files of the layers below it cannot be unpacked on its own: it is unpacked
// for this chain of layers (<store>/unpacked/chain/<UnpackedChainName>),
// with each such target copied in from a read-only overlay of the layers
// below (mounted at scratch/view from scratch/l/<k>) so that the link has
// its inode. The target's copy equals the file it shadows; the link and it
// are one inode, as in an unpacked tree.
Result<std::string> UnpackForOverlay(const RootfsRequest& req, size_t i, const std::string& scratch) {
  const auto& desc = req.image.layers[i];
  std::vector<std::string> external;
  {
    UCRFS_ASSIGN(auto rec, index::FindLayer(*req.store, desc.digest));
    if (rec) {
      UCRFS_ASSIGN(auto entries, index::LoadLayerEntries(*req.store, *rec));
      external = ExternalLinkTargets(entries);
    }
  }
  if (external.empty() || i == 0) return EnsureUnpacked(*req.store, desc, req.lazy);
  const std::string view = scratch + "/view";
  return UnpackOnce(req.store->root() + "/unpacked/chain", index::UnpackedChainName(req.image.layers, i + 1),
                    [&](int root) -> Status {
    UCRFS_TRY(MakeDirs(view, 0700));
    UCRFS_TRY(MakeDirs(scratch + "/empty", 0755));
    std::string lowerdir;
    for (size_t k = i; k-- > 0;) lowerdir += fmt::format("{}l/{}", lowerdir.empty() ? "" : ":", k);
    if (i == 1) lowerdir += ":empty";  // a read-only overlay needs two lower layers
    UCRFS_TRY(MountFrom(scratch, "overlay", view, "overlay", MS_RDONLY, "lowerdir=" + lowerdir));
    struct Unmount {
      const std::string& view;
      ~Unmount() {
        if (::umount2(view.c_str(), UMOUNT_NOFOLLOW) != 0) (void)::umount2(view.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
      }
    } unmount{view};
    UCRFS_ASSIGN(auto layer, OpenLayer(*req.store, desc, req.lazy));
    UCRFS_ASSIGN(auto entries, index::LoadLayerEntries(*req.store, layer.first));
    UniqueFd vroot(::open(view.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!vroot.valid()) return ErrnoError("open " + view);
    std::vector<std::pair<std::string, timespec>> dir_times;
    for (const auto& target : external) {
      if (Status st = CopyLinkTarget(vroot.get(), root, target, dir_times); !st.ok()) {
        return st.error().Wrap(fmt::format("layer {}: hardlink into the layers below", desc.digest.str()));
      }
    }
    Applier applier(root, Whiteouts::kConvert);
    UCRFS_TRY(applier.ApplyLayer(entries, *layer.second, "layer " + desc.digest.str()));
    UCRFS_TRY(applier.Finish());
    // The directories copied from below keep their mtimes, unless the layer
    // has an entry of its own for them (Finish set those).
    std::set<std::string> own;
    for (const auto& e : entries) own.insert(e.path);
    for (const auto& [path, mtime] : dir_times) {
      if (own.contains(path)) continue;
      UniqueFd d = OpenBeneath(root, path, O_RDONLY | O_DIRECTORY);
      timespec ts[2] = {mtime, mtime};
      if (!d.valid() || ::futimens(d.get(), ts) != 0) return ErrnoError("set mtime of " + path);
    }
    return Ok();
  });
}

Status ProvisionOverlay(const RootfsRequest& req) {
  const auto& layers = req.image.layers;
  if (layers.size() > kMaxOverlayLayers) {
    return Error(Errc::kUnsupported, fmt::format("overlayfs stacks at most {} layers; {} has {}", kMaxOverlayLayers,
                                                 req.image.key, layers.size()));
  }
  // MESOS-6000: mount(2) takes at most one page of options, and 128 store
  // paths do not fit. The layers are named by short symlinks in the rootfs'
  // own scratch directory (l/0 = base), and the mount runs from there.
  UCRFS_ASSIGN(std::string scratch, RealPath(req.scratch, "scratch directory"));
  UCRFS_ASSIGN(std::string rootfs, RealPath(req.rootfs, "rootfs"));
  UCRFS_TRY(MakeDirs(scratch + "/l", 0700));
  std::vector<std::string> lowers;
  for (size_t i = 0; i < layers.size(); ++i) {
    UCRFS_ASSIGN(auto path, UnpackForOverlay(req, i, scratch));
    std::string link = fmt::format("{}/l/{}", scratch, i);
    ::unlink(link.c_str());
    if (::symlink(path.c_str(), link.c_str()) != 0) return ErrnoError("symlink " + link);
    lowers.push_back(std::move(path));
  }
  std::string lowerdir;
  for (size_t i = lowers.size(); i-- > 0;) {  // overlayfs: leftmost is the top
    lowerdir += fmt::format("{}l/{}", lowerdir.empty() ? "" : ":", i);
  }
  std::string data = "lowerdir=" + lowerdir;
  unsigned long flags = 0;
  if (req.writable) {
    UCRFS_TRY(MakeDirs(scratch + "/upper", 0755));
    UCRFS_TRY(MakeDirs(scratch + "/work", 0700));
    // The rootfs' own metadata is the upper dir's: make it the top layer's,
    // as a read-only overlay of the layers would show it.
    struct stat top;
    std::string upper = scratch + "/upper";
    if (::stat(lowers.back().c_str(), &top) != 0) return ErrnoError("stat " + lowers.back());
    timespec ts[2] = {top.st_mtim, top.st_mtim};
    if (::chown(upper.c_str(), top.st_uid, top.st_gid) != 0 || ::chmod(upper.c_str(), top.st_mode & 07777) != 0 ||
        ::utimensat(AT_FDCWD, upper.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoError("set the metadata of " + upper);
    }
    data += ",upperdir=upper,workdir=work";
  } else {
    flags |= MS_RDONLY;
    if (lowers.size() == 1) {
      // A read-only overlay needs two lower layers: an empty one under it.
      UCRFS_TRY(MakeDirs(scratch + "/empty", 0755));
      data += ":empty";
    }
  }
  return MountFrom(scratch, "overlay", rootfs, "overlay", flags, data);
}

Status ProvisionBind(const RootfsRequest& req) {
  if (req.image.layers.size() != 1) {
    return Error(Errc::kInvalidArgument,
                 fmt::format("the bind backend takes single-layer images only; {} has {} layers (use overlay or copy)",
                             req.image.key, req.image.layers.size()));
  }
  UCRFS_ASSIGN(auto path, EnsureUnpacked(*req.store, req.image.layers[0], req.lazy));
  UCRFS_ASSIGN(std::string rootfs, RealPath(req.rootfs, "rootfs"));
  if (::mount(path.c_str(), rootfs.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return ErrnoError(fmt::format("bind mount {} at {}", path, rootfs));
  }
  // MS_RDONLY on the first bind mount is ignored: a remount makes it stick.
  if (::mount(nullptr, rootfs.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
    Error err = ErrnoError("remount read-only " + rootfs);
    ::umount2(rootfs.c_str(), MNT_DETACH);
    return err;
  }
  return Ok();
}

}  // namespace

Result<Kind> ParseKind(std::string_view name) {
  for (Kind k : {Kind::kFuse, Kind::kOverlay, Kind::kCopy, Kind::kBind}) {
    if (Name(k) == name) return k;
  }
  return Error(Errc::kInvalidArgument, fmt::format("backend '{}' is not fuse, overlay, copy or bind", name));
}

std::string_view Name(Kind kind) {
  switch (kind) {
    case Kind::kFuse: return "fuse";
    case Kind::kOverlay: return "overlay";
    case Kind::kCopy: return "copy";
    case Kind::kBind: return "bind";
  }
  return "?";
}

std::string UnpackedPath(const index::Store& store, const Digest& layer) {
  return DigestPath(store.root() + "/unpacked", layer);
}

Result<std::string> EnsureUnpacked(index::Store& store, const fetch::Descriptor& desc,
                                   const index::LazyOptions& lazy) {
  return UnpackOnce(fmt::format("{}/unpacked/{}", store.root(), desc.digest.algorithm_name()), desc.digest.hex(),
                    [&](int root) -> Status {
                      UCRFS_ASSIGN(auto layer, OpenLayer(store, desc, lazy));
                      UCRFS_ASSIGN(auto entries, index::LoadLayerEntries(store, layer.first));
                      Applier applier(root, Whiteouts::kConvert);
                      UCRFS_TRY(applier.ApplyLayer(entries, *layer.second, "layer " + desc.digest.str()));
                      return applier.Finish();
                    });
}

Status Provision(Kind kind, const RootfsRequest& req) {
  if (kind == Kind::kFuse) {
    return Error(Errc::kUnsupported, "the fuse backend is served by `ucrfs mount`, not provisioned");
  }
  if (req.store == nullptr) return Error(Errc::kInvalidArgument, "no store given");
  if (req.image.layers.empty()) {
    return Error(Errc::kInvalidArgument, fmt::format("image {} has no layers", req.image.key));
  }
  UCRFS_TRY(CheckEmptyDir(req.rootfs, "rootfs"));
  Status st;
  switch (kind) {
    case Kind::kCopy: st = ProvisionCopy(req); break;
    case Kind::kOverlay: st = ProvisionOverlay(req); break;
    case Kind::kBind: st = ProvisionBind(req); break;
    case Kind::kFuse: break;
  }
  if (!st.ok()) {
    if (auto undo = Destroy(kind, req.rootfs, req.scratch); !undo.ok()) {
      spdlog::warn("cleaning up after a failed {} provision: {}", Name(kind), undo.error().message());
    }
  }
  return st;
}

Status Destroy(Kind kind, const std::string& rootfs_arg, const std::string& scratch) {
  if (kind == Kind::kFuse) return Error(Errc::kUnsupported, "the fuse backend is unmounted by `ucrfs umount`");
  if (PathExists(rootfs_arg)) {
    UCRFS_ASSIGN(std::string rootfs, RealPath(rootfs_arg, "rootfs"));
    UCRFS_TRY(UnmountAll(rootfs));
    UCRFS_TRY(EmptyDir(rootfs));
  }
  if (!scratch.empty()) UCRFS_TRY(EmptyDir(scratch));
  return Ok();
}

}  // namespace ucrfs::backends
