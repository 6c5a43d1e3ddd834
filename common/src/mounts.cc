#include "ucrfs/common/mounts.h"

#include <signal.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <string_view>

#include <fmt/format.h>

#include "ucrfs/common/file.h"

namespace ucrfs {
namespace {

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

}  // namespace

std::vector<MountEntry> MountTable() {
  std::vector<MountEntry> out;
  auto table = ReadFile("/proc/self/mountinfo");
  if (!table.ok()) return out;
  std::string_view rest(*table);
  while (!rest.empty()) {
    size_t eol = rest.find('\n');
    std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
    // id parent major:minor root mount-point options [optional...] - fstype source super-options
    auto f = Fields(line);
    size_t sep = 6;
    while (sep < f.size() && f[sep] != "-") ++sep;
    if (f.size() < 5) continue;
    out.push_back({Unescape(f[4]), sep + 1 < f.size() ? std::string(f[sep + 1]) : std::string()});
  }
  return out;
}

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

bool IsMountPoint(const std::string& path) {
  const std::string p = MountTablePath(path);
  for (const auto& m : MountTable()) {
    if (m.mount_point == p) return true;
  }
  return false;
}

std::vector<std::string> MountsUnder(const std::string& root_arg) {
  const std::string root = MountTablePath(root_arg);
  std::vector<std::string> out;
  for (auto& m : MountTable()) {
    const std::string& mp = m.mount_point;
    if (mp == root || (mp.size() > root.size() && mp.compare(0, root.size(), root) == 0 &&
                       (root == "/" || mp[root.size()] == '/'))) {
      out.push_back(mp);
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
  return out;
}

bool ProcessRunning(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  auto stat = ReadFile(fmt::format("/proc/{}/stat", pid));
  if (!stat.ok()) return false;
  auto paren = stat->rfind(')');
  return paren == std::string::npos || paren + 2 >= stat->size() || (*stat)[paren + 2] != 'Z';
}

}  // namespace ucrfs
