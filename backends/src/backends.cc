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

#include <fmt/format.h>

#include "apply.h"
#include "ucrfs/common/file.h"
#include "ucrfs/common/log.h"

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

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() + 0 && s[i + 1] >= '0' && s[i + 1] <= '7' && s[i + 2] >= '0' &&
        s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out += static_cast<char>(((s[i + 1] - '0') << 6) | ((s[i + 2] - '0') << 3) | (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Mount points at or below `root` (absolute, resolved), deepest first.
std::vector<std::string> MountsUnder(const std::string& root) {
  std::vector<std::string> out;
  auto table = ReadFile("/proc/self/mountinfo");
  if (!table.ok()) return out;
  std::string_view rest(*table);
  while (!rest.empty()) {
    size_t eol = rest.find('\n');
    std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
    // id parent major:minor root mount-point ...
    size_t start = 0;
    for (int field = 0; field < 4 && start != std::string_view::npos; ++field) {
      start = line.find(' ', start);
      if (start != std::string_view::npos) ++start;
    }
    if (start == std::string_view::npos) continue;
    std::string mp = Unescape(line.substr(start, line.find(' ', start) - start));
    if (mp == root || (mp.size() > root.size() && mp.compare(0, root.size(), root) == 0 && mp[root.size()] == '/')) {
      out.push_back(std::move(mp));
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
  return out;
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

Status ProvisionOverlay(const RootfsRequest& req) {
  const auto& layers = req.image.layers;
  if (layers.size() > kMaxOverlayLayers) {
    return Error(Errc::kUnsupported, fmt::format("overlayfs stacks at most {} layers; {} has {}", kMaxOverlayLayers,
                                                 req.image.key, layers.size()));
  }
  std::vector<std::string> lowers;
  for (const auto& desc : layers) {
    UCRFS_ASSIGN(auto path, EnsureUnpacked(*req.store, desc, req.lazy));
    lowers.push_back(std::move(path));
  }
  // MESOS-6000: mount(2) takes at most one page of options, and 128 store
  // paths do not fit. The layers are named by short symlinks in the rootfs'
  // own scratch directory (l/0 = base), and the mount runs from there.
  UCRFS_ASSIGN(std::string scratch, RealPath(req.scratch, "scratch directory"));
  UCRFS_ASSIGN(std::string rootfs, RealPath(req.rootfs, "rootfs"));
  UCRFS_TRY(MakeDirs(scratch + "/l", 0700));
  std::string lowerdir;
  for (size_t i = 0; i < lowers.size(); ++i) {
    std::string link = fmt::format("{}/l/{}", scratch, i);
    ::unlink(link.c_str());
    if (::symlink(lowers[i].c_str(), link.c_str()) != 0) return ErrnoError("symlink " + link);
  }
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
  const std::string final_path = UnpackedPath(store, desc.digest);
  struct stat info;
  if (::lstat(final_path.c_str(), &info) == 0 && S_ISDIR(info.st_mode)) return final_path;
  const std::string dir = fmt::format("{}/unpacked/{}", store.root(), desc.digest.algorithm_name());
  UCRFS_TRY(MakeDirs(dir, 0700));
  SweepDeadTemps(dir);
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = fmt::format("{}/.tmp-{}-{}-{}", dir, desc.digest.hex(), ::getpid(), counter++);
  if (::mkdir(tmp.c_str(), 0700) != 0) return ErrnoError("mkdir " + tmp);
  auto unpack = [&]() -> Status {
    UCRFS_ASSIGN(auto layer, OpenLayer(store, desc, lazy));
    UCRFS_ASSIGN(auto entries, index::LoadLayerEntries(store, layer.first));
    UniqueFd root(::open(tmp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!root.valid()) return ErrnoError("open " + tmp);
    // The layer's root is 0755 root:root unless the layer says otherwise.
    if (::fchmod(root.get(), 0755) != 0) return ErrnoError("chmod " + tmp);
    Applier applier(root.get(), Whiteouts::kConvert);
    UCRFS_TRY(applier.ApplyLayer(entries, *layer.second, "layer " + desc.digest.str()));
    UCRFS_TRY(applier.Finish());
    // Durable before it gets its name, like a blob.
    if (::syncfs(root.get()) != 0) return ErrnoError("syncfs " + tmp);
    return Ok();
  };
  Status st = unpack();
  if (st.ok() && ::rename(tmp.c_str(), final_path.c_str()) != 0) {
    // Another provisioner finished the same layer first: use theirs.
    if (errno != EEXIST && errno != ENOTEMPTY) st = ErrnoError("rename " + tmp);
  }
  if (PathExists(tmp)) {
    if (auto rm = RemoveAll(tmp); !rm.ok()) spdlog::warn("{}", rm.error().message());
  }
  if (!st.ok()) return st.error();
  (void)SyncDir(dir);
  return final_path;
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
