// What a container runs: the image's runtime config merged with what the
// caller asked for, by Mesos' docker/runtime isolator rules
// (src/slave/containerizer/mesos/isolators/docker/runtime.cpp), and the
// volumes it gets. Pure functions: no filesystem, no processes.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ucrfs/common/error.h"
#include "ucrfs/index/runtime_config.h"

namespace ucrfs::isolator {

// Where the sandbox appears inside the container unless told otherwise
// (Mesos' --sandbox_directory).
inline constexpr const char* kDefaultSandboxDirectory = "/mnt/mesos/sandbox";
// PATH when neither the image nor the caller set one (Mesos' launch helper
// uses the host's default path the same way).
inline constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// What the caller of `ucrfs run` (or a Mesos CommandInfo) says.
struct Overrides {
  // Arguments after `--` (Mesos' CommandInfo.arguments, without argv[0]).
  std::vector<std::string> argv;
  // --shell CMD: `/bin/sh -c CMD` (CommandInfo.shell=true, value=CMD).
  std::optional<std::string> shell;
  // --command EXE: run EXE with `argv`, ignoring the image's Entrypoint and
  // Cmd (CommandInfo.shell=false with a value).
  std::optional<std::string> command;
  std::vector<std::string> env;  // --env NAME=VALUE, over the image's Env
  std::string user;              // --user NAME|UID[:GROUP|GID]; empty: the image's
  bool ignore_runtime = false;   // --docker-ignore-runtime: no Entrypoint/Cmd/Env/WorkingDir/User from the image
};

// The process to start, before its user is resolved against the rootfs.
struct ProcessSpec {
  std::vector<std::string> argv;  // argv[0] is the executable (PATH-searched if it has no '/')
  std::vector<std::string> env;   // NAME=VALUE, unique names, in first-seen order
  std::string cwd;                // absolute, inside the container
  std::string user;               // "" (root), NAME, UID
  std::string group;              // "" (the user's), NAME, GID
};

// Merges the image's runtime config with the overrides:
//  * --shell CMD: argv = /bin/sh -c CMD (the image's Entrypoint/Cmd ignored);
//  * --command EXE: argv = EXE + arguments;
//  * Entrypoint set: Entrypoint + arguments, or + Cmd when there are none;
//  * else Cmd set: Cmd[0] + arguments, or Cmd[1..] when there are none
//    (arguments replace the rest of Cmd, Cmd[0] stays the executable);
//  * else: kInvalidArgument "No executable is found".
// Appc: `exec` is the entrypoint. Environment, lowest first: MESOS_SANDBOX
// (= sandbox_directory), the image's Env (entries without '=' skipped), then
// --env; PATH defaults to kDefaultPath. cwd: the image's WorkingDir, else the
// sandbox directory. user/group: --user, else the image's.
Result<ProcessSpec> MergeRuntime(const index::RuntimeConfig& image, const Overrides& over,
                                 const std::string& sandbox_directory);

// A volume of the container.
struct Volume {
  enum class Type { kBind, kImage, kTmpfs };
  Type type = Type::kBind;
  std::string source;  // bind: absolute host path; image: an image reference; tmpfs: unused
  std::string target;  // absolute path inside the container
  bool readonly = false;
};

// --volume HOST:CONTAINER[:ro|:rw]. HOST must be absolute; a relative
// CONTAINER path is under the sandbox directory.
Result<Volume> ParseVolumeFlag(const std::string& spec, const std::string& sandbox_directory);
// --mount type=bind|image|tmpfs,src=...,dst=...[,readonly] (also source=,
// target=, destination=, ro, readonly=true|false).
Result<Volume> ParseMountFlag(const std::string& spec, const std::string& sandbox_directory);

// A container path made absolute and normalised ("." and ".." removed
// lexically; ".." never climbs above "/"): relative ones go under `base`.
std::string ContainerPath(const std::string& path, const std::string& base);

}  // namespace ucrfs::isolator
