// Unmount() and IsMounted(): mount-table queries that never touch the mount
// itself (a stat of a mountpoint whose server hangs would hang the caller).
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "ucrfs/common/file.h"
#include "ucrfs/common/mounts.h"
#include "ucrfs/fusefs/server.h"

namespace ucrfs::fusefs {
namespace {

constexpr std::string_view kFsType = "fuse.ucrfs";

// The fstype of the topmost mount at `mount_point`, or "" if none.
std::string TopmostFsType(const std::string& mount_point) {
  std::string fstype;
  for (const auto& m : MountTable()) {
    if (m.mount_point == mount_point) fstype = m.fstype;  // later entries are stacked on earlier ones
  }
  return fstype;
}

}  // namespace

bool IsMounted(const std::string& path) { return TopmostFsType(MountTablePath(path)) == kFsType; }

Status Unmount(const std::string& mountpoint, bool lazy) {
  const std::string path = MountTablePath(mountpoint);
  if (!IsMounted(path)) {
    return Error(Errc::kNotFound, fmt::format("{} is not a ucrfs mount", path));
  }
  // UMOUNT_NOFOLLOW: unmount exactly the canonical path checked above.
  if (::umount2(path.c_str(), (lazy ? MNT_DETACH : 0) | UMOUNT_NOFOLLOW) == 0) return Ok();
  const int err = errno;
  if (err == EBUSY) {
    return Error(Errc::kIo, fmt::format("cannot unmount {}: it is busy (a process has a file open or its working "
                                        "directory there); stop it, or unmount lazily",
                                        path));
  }
  if (err == EPERM) {
    return Error(Errc::kIo, fmt::format("cannot unmount {}: not permitted (needs root; or fusermount3 -u)", path));
  }
  return ErrnoError(fmt::format("unmount {}", path), err);
}

}  // namespace ucrfs::fusefs
