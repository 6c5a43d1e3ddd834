// The isolator lifecycle of a Mesos agent (mesos::slave::Isolator: recover,
// prepare, isolate, cleanup), over the provisioner, for lazy image volumes.
//
// Mesos' containerizer refuses a ContainerLaunchInfo whose `rootfs` an
// isolator set: a container's root filesystem comes only from Mesos' own
// provisioner. What an isolator may return is mounts (into the container's
// new mount namespace, before pivot_root), environment and namespaces. So
// ucrfs reaches Mesos containers as image volumes: the isolator provisions
// each image lazily (the fuse backend: the container starts before the
// image has downloaded) and returns a bind mount of it. A container without
// a container image gets its volumes under the host sandbox; an executor can
// then pivot into one itself, as the seed's "image volume" recipe does.
//
// Volumes are asked for with labels on the task or executor (Mesos gives
// isolators their ContainerConfig, labels included):
//
//   ucrfs.volume        IMAGE:PATH[:ro]     (repeatable: ucrfs.volume.1, .2, ...)
//
// PATH absolute: inside the container's rootfs (or on the host without one);
// relative: under the sandbox. The mesos/ module is a thin adapter of this
// class to the Mesos API; all the logic, and its tests, are here.
#pragma once

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ucrfs/common/error.h"
#include "ucrfs/provisioner/provisioner.h"

namespace ucrfs::isolator {

// What the agent knows about a container, as Mesos' ContainerConfig.
struct ContainerConfig {
  std::string directory;  // the host sandbox
  std::optional<std::string> rootfs;  // the container image's rootfs (host path), if it has one
  std::string sandbox_directory = "/mnt/mesos/sandbox";  // the sandbox inside a rootfs
  std::vector<std::pair<std::string, std::string>> labels;  // task or executor labels
};

// Mesos' ContainerMountInfo.
struct MountInfo {
  std::string source;  // host path
  std::string target;  // host path (under the rootfs or the sandbox)
  unsigned long flags = 0;  // MS_BIND | MS_REC [| MS_RDONLY]
};

// Mesos' ContainerLaunchInfo, the part this isolator fills.
struct LaunchInfo {
  std::vector<MountInfo> mounts;
  bool clone_mount_namespace = false;  // CLONE_NEWNS in clone_namespaces
};

// A volume asked for by a label.
struct ImageVolume {
  std::string image;
  std::string path;  // as given: absolute or relative to the sandbox
  bool readonly = false;
};

// Parses the `ucrfs.volume[.N]` labels; other labels are ignored. A bad
// value is kInvalidArgument naming the label.
Result<std::vector<ImageVolume>> VolumesFromLabels(
    const std::vector<std::pair<std::string, std::string>>& labels);

class LazyVolumeIsolator {
 public:
  explicit LazyVolumeIsolator(std::unique_ptr<provisioner::Provisioner> p) : p_(std::move(p)) {}

  // After an agent restart: `live` are the containers the agent still has
  // (Mesos' ContainerState list); everything the provisioner holds for
  // others (orphans included) is destroyed, and live rootfses whose FUSE
  // server died serve again.
  Status Recover(const std::set<std::string>& live);

  // Provisions every image volume the config asks for and returns the bind
  // mounts. Targets: an absolute path under the rootfs (or on the host,
  // where it must exist, when there is none); a relative one under the
  // rootfs' sandbox directory, or the host sandbox. Mount points are made.
  // On failure, what this call provisioned is destroyed.
  Result<std::optional<LaunchInfo>> Prepare(const std::string& container_id, const ContainerConfig& config);

  // Nothing to do once the process exists: the volumes are mounted by then.
  Status Isolate(const std::string& container_id, pid_t pid);

  // Ends the container's volumes (unmount, FUSE servers, scratch). Unknown
  // containers are ignored, as Mesos requires.
  Status Cleanup(const std::string& container_id);

  provisioner::Provisioner& provisioner() { return *p_; }

 private:
  std::unique_ptr<provisioner::Provisioner> p_;
};

}  // namespace ucrfs::isolator
