// config.json of an OCI runtime bundle (runtime spec 1.0.2).
#include "ucrfs/isolator/bundle.h"

#include <sys/prctl.h>

#include <nlohmann/json.hpp>

#include "ucrfs/isolator/launcher.h"

namespace ucrfs::isolator {
namespace {

// linux/capability.h, by number (0 .. CAP_CHECKPOINT_RESTORE).
constexpr const char* kCapNames[] = {
    "CAP_CHOWN",           "CAP_DAC_OVERRIDE",    "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
    "CAP_FSETID",          "CAP_KILL",            "CAP_SETGID",          "CAP_SETUID",
    "CAP_SETPCAP",         "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",       "CAP_NET_RAW",         "CAP_IPC_LOCK",        "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",      "CAP_SYS_RAWIO",       "CAP_SYS_CHROOT",      "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",       "CAP_SYS_ADMIN",       "CAP_SYS_BOOT",        "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",    "CAP_SYS_TIME",        "CAP_SYS_TTY_CONFIG",  "CAP_MKNOD",
    "CAP_LEASE",           "CAP_AUDIT_WRITE",     "CAP_AUDIT_CONTROL",   "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",    "CAP_MAC_ADMIN",       "CAP_SYSLOG",          "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",   "CAP_AUDIT_READ",      "CAP_PERFMON",         "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
};

nlohmann::json Mount(const std::string& dst, const std::string& type, const std::string& src,
                     std::vector<std::string> options) {
  return {{"destination", dst}, {"type", type}, {"source", src}, {"options", std::move(options)}};
}

}  // namespace

std::vector<std::string> BoundingCapabilities() {
  std::vector<std::string> out;
  for (int cap = 0; cap < static_cast<int>(std::size(kCapNames)); ++cap) {
    // 1: in the bounding set; -1 (EINVAL): the kernel does not know it.
    if (::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1) out.emplace_back(kCapNames[cap]);
  }
  return out;
}

Result<std::string> BundleConfig(const BundleSpec& s) {
  if (s.argv.empty()) return Error(Errc::kInvalidArgument, "bundle: no command (process.args is empty)");
  if (s.cwd.empty() || s.cwd[0] != '/') return Error(Errc::kInvalidArgument, "bundle: cwd must be absolute: " + s.cwd);
  nlohmann::json user = {{"uid", s.user.uid}, {"gid", s.user.gid}};
  if (!s.user.groups.empty()) user["additionalGids"] = s.user.groups;
  const bool root = s.user.uid == 0;
  const auto none = std::vector<std::string>{};
  nlohmann::json caps = {{"bounding", s.capabilities},
                         {"effective", root ? s.capabilities : none},
                         {"permitted", root ? s.capabilities : none}};
  nlohmann::json process = {{"terminal", false}, {"user", user},  {"args", s.argv},
                            {"env", s.env},      {"cwd", s.cwd},  {"capabilities", caps}};

  // The launcher's mounts (launcher.cc), in its order; mqueue and the
  // cgroup hierarchy (read-only) as every OCI runtime's default spec has.
  nlohmann::json mounts = nlohmann::json::array();
  mounts.push_back(Mount("/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}));
  mounts.push_back(Mount("/dev", "tmpfs", "tmpfs", {"nosuid", "noexec", "strictatime", "mode=755"}));
  mounts.push_back(Mount("/dev/pts", "devpts", "devpts",
                         {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}));
  mounts.push_back(Mount("/dev/shm", "tmpfs", "shm", {"nosuid", "nodev", "strictatime", "mode=1777"}));
  mounts.push_back(Mount("/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}));
  mounts.push_back(Mount("/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}));
  mounts.push_back(Mount("/sys/fs/cgroup", "cgroup", "cgroup", {"nosuid", "noexec", "nodev", "relatime", "ro"}));
  if (!s.sandbox.empty()) mounts.push_back(Mount(s.sandbox_directory, "bind", s.sandbox, {"rbind", "rw"}));

  // The host's network, as `ucrfs run` (and Mesos by default).
  nlohmann::json namespaces = nlohmann::json::array();
  for (const char* ns : {"pid", "ipc", "uts", "mount"}) namespaces.push_back({{"type", ns}});

  nlohmann::json j = {
      {"ociVersion", kOciVersion},
      {"process", process},
      {"root", {{"path", "rootfs"}, {"readonly", s.readonly_root}}},
      {"hostname", s.hostname},
      {"mounts", mounts},
      {"linux", {{"namespaces", namespaces}, {"maskedPaths", kMaskedPaths}, {"readonlyPaths", kReadonlyPaths}}},
  };
  if (s.hostname.empty()) j.erase("hostname");
  return j.dump(2) + "\n";
}

}  // namespace ucrfs::isolator
