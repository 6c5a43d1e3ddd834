// The record of a running container, so that what a killed `ucrfs run` left
// (its processes, its rootfses) can be found and ended:
//
//   <work_dir>/isolator/containers/<id>/container.json
//   <work_dir>/isolator/containers/<id>/sandbox/      (when no --sandbox was given)
//
// container.json holds the pid and start time of `ucrfs run` and of the
// container's init (a pid alone may name another process by now). The
// container's mounts live in its own mount namespace and die with its init;
// its rootfses are the provisioner's, under the same container id.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "ucrfs/common/error.h"

namespace ucrfs::isolator {

struct ContainerRecord {
  std::string id;
  pid_t pid = 0;            // `ucrfs run`
  uint64_t pid_start = 0;
  pid_t init_pid = 0;       // the container's init, host pid; 0 until it runs
  uint64_t init_start = 0;
  std::string sandbox;      // host directory
  bool sandbox_owned = false;  // made by ucrfs run under the container's directory
  std::string image;
};

std::string ContainersDir(const std::string& work_dir);
std::string ContainerDir(const std::string& work_dir, const std::string& id);

// A fresh container id (a UUID v4 from OpenSSL's RNG).
std::string NewContainerId();

Status WriteRecord(const std::string& work_dir, const ContainerRecord& rec);
// Every container directory; one without a readable record has only its id.
Result<std::vector<ContainerRecord>> ListRecords(const std::string& work_dir);

// Whether the record's `ucrfs run` (same pid, same start time) still runs.
bool RunnerAlive(const ContainerRecord& rec);

// SIGKILLs the container's init if it still runs (the kernel then kills the
// whole PID namespace), waiting up to 10 s for it to go.
Status KillContainer(const ContainerRecord& rec);

// Removes the container's directory (with the sandbox, if ucrfs made it).
Status RemoveContainerDir(const std::string& work_dir, const std::string& id);

// For every container whose `ucrfs run` is gone: kill it, call
// destroy(id) (the provisioner's Destroy), remove its directory. Returns the
// ids cleaned, or the first failure after trying every one.
Result<std::vector<std::string>> RecoverContainers(const std::string& work_dir,
                                                   const std::function<Status(const std::string&)>& destroy);

}  // namespace ucrfs::isolator
