// The Mesos isolator lifecycle over the provisioner. See lifecycle.h.
#include "ucrfs/isolator/lifecycle.h"

#include <sys/mount.h>
#include <sys/stat.h>

#include <fmt/format.h>

#include "ucrfs/common/file.h"
#include "ucrfs/common/log.h"

namespace ucrfs::isolator {
namespace {

bool IsVolumeLabel(const std::string& key) {
  if (key == "ucrfs.volume") return true;
  if (key.rfind("ucrfs.volume.", 0) != 0 || key.size() == 13) return false;
  return key.find_first_not_of("0123456789", 13) == std::string::npos;
}

// "a/../b" and the like are refused rather than resolved: a volume's path
// must name where it goes without climbing out of the rootfs or sandbox.
bool SafeRelative(const std::string& p) {
  size_t start = 0;
  while (start <= p.size()) {
    size_t slash = p.find('/', start);
    std::string part = p.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part == "..") return false;
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return true;
}

std::string Join(const std::string& base, const std::string& path) {
  std::string p = path;
  while (!p.empty() && p.front() == '/') p.erase(p.begin());
  return p.empty() ? base : base + "/" + p;
}

}  // namespace

Result<std::vector<ImageVolume>> VolumesFromLabels(const std::vector<std::pair<std::string, std::string>>& labels) {
  std::vector<ImageVolume> out;
  for (const auto& [key, value] : labels) {
    if (!IsVolumeLabel(key)) continue;
    auto bad = [&, k = key, v = value](std::string_view why) {
      return Error(Errc::kInvalidArgument, fmt::format("label {}='{}': {}", k, v, why));
    };
    // IMAGE may hold ':' (a registry port, a tag), PATH may not: split at
    // the last ':' that is followed by '/' or a relative path, after an
    // optional ":ro"/":rw".
    std::string v = value;
    ImageVolume vol;
    for (const char* mode : {":ro", ":rw"}) {
      std::string m(mode);
      if (v.size() > m.size() && v.compare(v.size() - m.size(), m.size(), m) == 0) {
        vol.readonly = m == ":ro";
        v.resize(v.size() - m.size());
        break;
      }
    }
    auto colon = v.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == v.size()) return bad("not IMAGE:PATH[:ro]");
    vol.image = v.substr(0, colon);
    vol.path = v.substr(colon + 1);
    if (!SafeRelative(vol.path)) return bad("the path has a '..' component");
    out.push_back(std::move(vol));
  }
  return out;
}

Status LazyVolumeIsolator::Recover(const std::set<std::string>& live) { return p_->Recover(live); }

Result<std::optional<LaunchInfo>> LazyVolumeIsolator::Prepare(const std::string& container_id,
                                                               const ContainerConfig& config) {
  UCRFS_ASSIGN(auto volumes, VolumesFromLabels(config.labels));
  if (volumes.empty()) return std::optional<LaunchInfo>();
  LaunchInfo info;
  info.clone_mount_namespace = true;
  auto prepare = [&]() -> Status {
    for (const auto& v : volumes) {
      std::string target;
      if (!v.path.empty() && v.path.front() == '/') {
        target = config.rootfs ? Join(*config.rootfs, v.path) : v.path;
      } else {
        target = config.rootfs ? Join(Join(*config.rootfs, config.sandbox_directory), v.path)
                               : Join(config.directory, v.path);
      }
      if (!config.rootfs && v.path.front() == '/' && !PathExists(target)) {
        return Error(Errc::kNotFound,
                     fmt::format("image volume {}: {} does not exist on the host (no container image)", v.image,
                                 target));
      }
      UCRFS_TRY(MakeDirs(target, 0755));
      UCRFS_ASSIGN(auto rootfs, p_->Provision(container_id, v.image, backends::Kind::kFuse, !v.readonly));
      unsigned long flags = MS_BIND | MS_REC | (v.readonly ? MS_RDONLY : 0);
      info.mounts.push_back(MountInfo{rootfs.path, target, flags});
    }
    return Ok();
  };
  if (Status st = prepare(); !st.ok()) {
    if (Status undo = p_->Destroy(container_id); !undo.ok()) {
      spdlog::warn("cleaning up the volumes of {}: {}", container_id, undo.error().message());
    }
    return st.error().Wrap("prepare " + container_id);
  }
  return std::optional<LaunchInfo>(std::move(info));
}

Status LazyVolumeIsolator::Isolate(const std::string&, pid_t) { return Ok(); }

Status LazyVolumeIsolator::Cleanup(const std::string& container_id) { return p_->Destroy(container_id); }

}  // namespace ucrfs::isolator
