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
#include "ucrfs/fusefs/server.h"

namespace ucrfs::fusefs {
namespace {

constexpr std::string_view kFsType = "fuse.ucrfs";

// The path as /proc/self/mountinfo spells it: absolute, normal, with the
// parent's symlinks resolved. The last component is not resolved, because
// resolving it would stat the mount.
std::string MountTablePath(const std::string& path) {
  std::filesystem::path p(path);
  if (p.is_relative()) {
    std::error_code ec;
    p = std::filesystem::current_path(ec) / p;
  }
  p = p.lexically_normal();
  std::string s = p.string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  if (s == "/") return s;
  std::filesystem::path fp(s);
  char buf[PATH_MAX];
  if (::realpath(fp.parent_path().c_str(), buf) == nullptr) return s;
  std::string parent(buf);
  return parent == "/" ? "/" + fp.filename().string() : parent + "/" + fp.filename().string();
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7' && s[i + 2] >= '0' &&
        s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out += static_cast<char>(((s[i + 1] - '0') << 6) | ((s[i + 2] - '0') << 3) | (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<std::string_view> Fields(std::string_view line) {
  std::vector<std::string_view> f;
  while (!line.empty()) {
    size_t sp = line.find(' ');
    f.push_back(line.substr(0, sp));
    if (sp == std::string_view::npos) break;
    line.remove_prefix(sp + 1);
  }
  return f;
}

// The fstype of the topmost mount at `mount_point`, or "" if none.
std::string TopmostFsType(const std::string& mount_point) {
  auto table = ReadFile("/proc/self/mountinfo");
  if (!table.ok()) return "";
  std::string fstype;
  std::string_view rest(*table);
  while (!rest.empty()) {
    size_t eol = rest.find('\n');
    std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
    // id parent major:minor root mount-point options [optional...] - fstype source super-options
    auto f = Fields(line);
    size_t sep = 6;
    while (sep < f.size() && f[sep] != "-") ++sep;
    if (sep + 1 >= f.size()) continue;
    // Later lines are mounted on top of earlier ones.
    if (Unescape(f[4]) == mount_point) fstype = std::string(f[sep + 1]);
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
