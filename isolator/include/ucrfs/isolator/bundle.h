// An OCI runtime bundle's config.json (runtime spec 1.0.2) for a process
// the docker/runtime rules and user resolution picked, with the mounts,
// namespaces and masked paths the launcher makes, so that `crun run` and
// `runc run` start the container `ucrfs run` would (see docs/run.md,
// "Bundles"). Pure: no filesystem, no processes.
#pragma once

#include <string>
#include <vector>

#include "ucrfs/isolator/runtime.h"
#include "ucrfs/isolator/user.h"

namespace ucrfs::isolator {

inline constexpr const char* kOciVersion = "1.0.2";

struct BundleSpec {
  std::vector<std::string> argv;  // non-empty
  std::vector<std::string> env;
  std::string cwd;                // absolute
  Credentials user;
  std::string hostname;
  bool readonly_root = false;     // root.readonly
  std::string sandbox;            // host directory bound at sandbox_directory; empty: none
  std::string sandbox_directory = kDefaultSandboxDirectory;
  // The capabilities root keeps (the caller's bounding set, by name): the
  // bounding set of the process, and its effective and permitted sets when
  // it runs as uid 0 (a non-root user has none, as in the launcher).
  std::vector<std::string> capabilities;
};

// config.json, with root.path "rootfs". kInvalidArgument for an empty argv
// or a relative cwd.
Result<std::string> BundleConfig(const BundleSpec& spec);

// The names ("CAP_CHOWN", ...) of the capabilities in this process'
// bounding set that the kernel knows.
std::vector<std::string> BoundingCapabilities();

}  // namespace ucrfs::isolator
