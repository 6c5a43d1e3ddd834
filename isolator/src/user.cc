#include "ucrfs/isolator/user.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <charconv>
#include <optional>

#include <fmt/format.h>

#include "in_root.h"

namespace ucrfs::isolator {
namespace {

std::vector<std::string_view> Fields(std::string_view line, char sep) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  for (;;) {
    size_t i = line.find(sep, pos);
    out.push_back(line.substr(pos, i == std::string_view::npos ? std::string_view::npos : i - pos));
    if (i == std::string_view::npos) break;
    pos = i + 1;
  }
  return out;
}

std::vector<std::string_view> Lines(std::string_view text) {
  std::vector<std::string_view> out;
  for (auto l : Fields(text, '\n')) {
    while (!l.empty() && (l.back() == '\r' || l.back() == ' ')) l.remove_suffix(1);
    if (!l.empty() && l[0] != '#') out.push_back(l);
  }
  return out;
}

std::optional<uint32_t> Id(std::string_view s) {
  uint32_t v = 0;
  if (s.empty()) return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

std::vector<PasswdEntry> ParsePasswd(std::string_view text) {
  std::vector<PasswdEntry> out;
  for (auto line : Lines(text)) {
    auto f = Fields(line, ':');
    if (f.size() < 4) continue;
    auto uid = Id(f[2]), gid = Id(f[3]);
    if (!uid || !gid || f[0].empty()) continue;
    out.push_back({std::string(f[0]), *uid, *gid, f.size() > 5 ? std::string(f[5]) : ""});
  }
  return out;
}

std::vector<GroupEntry> ParseGroup(std::string_view text) {
  std::vector<GroupEntry> out;
  for (auto line : Lines(text)) {
    auto f = Fields(line, ':');
    if (f.size() < 3) continue;
    auto gid = Id(f[2]);
    if (!gid || f[0].empty()) continue;
    GroupEntry g{std::string(f[0]), *gid, {}};
    if (f.size() > 3 && !f[3].empty())
      for (auto m : Fields(f[3], ',')) if (!m.empty()) g.members.emplace_back(m);
    out.push_back(std::move(g));
  }
  return out;
}

Result<Credentials> ResolveUser(const std::string& user, const std::string& group,
                                const std::vector<PasswdEntry>& passwd, const std::vector<GroupEntry>& groups) {
  Credentials c;
  const PasswdEntry* found = nullptr;
  // A name first (Docker: a user may be called "1000" only if no uid is).
  for (const auto& p : passwd) if (!user.empty() && p.name == user) { found = &p; break; }
  if (!found && !user.empty()) {
    auto uid = Id(user);
    if (!uid) return Error(Errc::kNotFound, fmt::format("user {:?} is not in the image's /etc/passwd", user));
    for (const auto& p : passwd) if (p.uid == *uid) { found = &p; break; }
    c.uid = *uid;
  }
  if (user.empty()) {  // root, with root's passwd entry if there is one
    for (const auto& p : passwd) if (p.uid == 0) { found = &p; break; }
  }
  if (found) {
    c.uid = found->uid;
    c.gid = found->gid;
    if (!found->home.empty()) c.home = found->home;
  }
  if (!group.empty()) {
    const GroupEntry* g = nullptr;
    for (const auto& e : groups) if (e.name == group) { g = &e; break; }
    if (g) {
      c.gid = g->gid;
    } else if (auto gid = Id(group)) {
      c.gid = *gid;
    } else {
      return Error(Errc::kNotFound, fmt::format("group {:?} is not in the image's /etc/group", group));
    }
  } else if (found) {
    for (const auto& e : groups)
      for (const auto& m : e.members)
        if (m == found->name && e.gid != c.gid) { c.groups.push_back(e.gid); break; }
  }
  return c;
}

Result<Credentials> ResolveUserInRootfs(const std::string& rootfs, const std::string& user_in,
                                        const std::string& group_in) {
  UCRFS_ASSIGN(UniqueFd root, OpenDir(rootfs));
  auto read = [&](const char* path) -> Result<std::string> {
    auto r = ReadInRoot(root.get(), path);
    if (!r.ok() && r.error().code() == Errc::kNotFound) return std::string();
    return r;
  };
  // Appc: "user"/"group" may name a file in the rootfs whose owner they mean.
  std::string user = user_in, group = group_in;
  for (std::string* s : {&user, &group}) {
    if (s->empty() || (*s)[0] != '/') continue;
    UCRFS_ASSIGN(UniqueFd fd, OpenInRoot(root.get(), *s, O_PATH));
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return ErrnoError("stat " + *s + " in the rootfs");
    *s = std::to_string(s == &user ? st.st_uid : st.st_gid);
  }
  UCRFS_ASSIGN(std::string passwd, read("/etc/passwd"));
  UCRFS_ASSIGN(std::string grp, read("/etc/group"));
  return ResolveUser(user, group, ParsePasswd(passwd), ParseGroup(grp));
}

}  // namespace ucrfs::isolator
