// Starting a process in a container: new mount, PID, UTS and IPC namespaces
// (the host's network, as Mesos by default), the filesystem/linux isolator's
// mounts over a rootfs, pivot_root, the user, exec.
//
// Processes: the caller forks a helper that unshares the namespaces and forks
// the container's init (PID 1 inside), then exits; the caller is a child
// subreaper for that moment, so init becomes its child. Init makes the mounts,
// pivots, forks the command (PID 2), forwards signals to it, reaps whatever
// else exits and, when the command ends, exits with its status (128+signal
// when it was killed). When init exits the kernel kills the rest of the PID
// namespace and the mount namespace goes with it: nothing the container
// mounted outlives it.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "ucrfs/common/error.h"
#include "ucrfs/isolator/runtime.h"
#include "ucrfs/isolator/user.h"

namespace ucrfs::isolator {

// One mount of a volume, source already on the host.
struct MountSpec {
  Volume::Type type = Volume::Type::kBind;  // kImage: bind of a provisioned rootfs
  std::string source;                       // host path (bind, image)
  std::string target;                       // absolute, inside the container
  bool readonly = false;
};

struct ContainerSpec {
  // Host path of the root filesystem (made a mount point by the launcher);
  // empty: no container image, the host's filesystem in a mount namespace of
  // its own, volumes at host paths (sandbox and cwd are host paths too).
  std::string rootfs;
  std::string sandbox;  // host directory bind-mounted at sandbox_directory
  std::string sandbox_directory = kDefaultSandboxDirectory;
  std::vector<MountSpec> mounts;  // after the sandbox, in order
  std::vector<std::string> argv;  // argv[0] PATH-searched in env's PATH when it has no '/'
  std::vector<std::string> env;
  std::string cwd;                // created if missing
  Credentials user;
};

// The /proc and /sys paths hidden from the container (Mesos' masked_paths):
// files under /dev/null, directories under an empty read-only tmpfs.
extern const std::vector<std::string> kMaskedPaths;
// Read-only inside the container (bound onto themselves).
extern const std::vector<std::string> kReadonlyPaths;

// Runs the container and waits for it. `started` is called with the host pid
// of the container's init before init makes any mount (a failing `started`
// kills init and is the result). SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1
// and SIGUSR2 sent to the caller are forwarded to the command (signals the
// terminal sends reach it directly, so they are not sent twice). Returns the
// command's exit status, 128+N when signal N ended it, 126/127 when it could
// not be executed (after saying why on stderr). A failure to set the
// container up is an error naming the step and path.
Result<int> Launch(const ContainerSpec& spec, const std::function<Status(pid_t)>& started);

// The start time of a process (field 22 of /proc/PID/stat), 0 when there is
// no such process: with the pid it names a process for good, pids are reused.
uint64_t ProcessStartTime(pid_t pid);

}  // namespace ucrfs::isolator
