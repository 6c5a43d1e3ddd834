// The ucrfs subcommands. Each is a thin function over the libraries.
#pragma once

#include <atomic>
#include <optional>
#include <string>
#include <vector>

#include "ucrfs/common/error.h"
#include "ucrfs/fetch/source.h"
#include "ucrfs/index/layers.h"
#include "ucrfs/index/remote_index.h"
#include "ucrfs/index/store.h"
#include "ucrfs/provisioner/images.h"
#include "ucrfs/provisioner/provisioner.h"

namespace ucrfs::cli {

// The global flags: where the store is, and where images come from.
struct GlobalFlags : provisioner::ImageOptions {
  std::string store = "/var/lib/ucrfs";
  std::string log_level = "warn";
  std::string sandbox_directory = "/mnt/mesos/sandbox";  // where containers see their sandbox
  std::string work_dir;  // provisioner and containers; empty: <store>/work
};

// Shared by the commands.
// The absolute, symlink-free path of an existing directory (a mountpoint).
Result<std::string> RealDir(const std::string& path);
using provisioner::AutoGc;
using provisioner::GetOrPull;
using provisioner::MakeSourceOptions;
using provisioner::WantedPlatform;

Status Pull(const GlobalFlags& g, const std::string& image);
Status Inspect(const GlobalFlags& g, const std::string& image, bool json);
Status Images(const GlobalFlags& g, bool json);
struct MountFlags {
  bool foreground = false;
  std::string prefetch = "all";  // none, landmark, all, or a trace file to replay
  bool prefetch_given = false;   // --prefetch was on the command line (else a pushed trace is replayed)
  std::string record;            // where to write the mount's read trace, if anywhere
  int fetch_timeout_s = 30;      // a lazy read that cannot be fetched in this time fails with EIO
  uint64_t max_cache_size = 0;   // size limit of the store's chunk cache; 0: none
  uint64_t read_ahead = index::LazyOptions{}.read_ahead;  // bytes fetched ahead of reads of eStargz layers
  std::string backend = "fuse";  // fuse, or overlay, copy, bind (backend_cmds.cc)
};

Status Mount(const GlobalFlags& g, const std::string& image, const std::string& mountpoint, const MountFlags& m);
Status Stats(const std::string& mountpoint, bool json);
// Restarts the server of every recorded FUSE mount whose server died (the
// mountpoint serves again), and forgets the records of mounts that are gone.
Status Recover(const GlobalFlags& g);
// The keeper process of a FUSE mount (the hidden `fuse-keeper` command the
// server starts): holds the connection on fds 3, 4, 5 (fusefs/keeper.h).
Status FuseKeeper();

struct GcFlags {
  std::vector<std::string> keep;  // images never removed
  uint64_t max_cache_size = 0;    // 0: remove every image nothing uses
  bool save = false;              // also keep the limit: pulls and mounts then collect by themselves
};
Status Rmi(const GlobalFlags& g, const std::string& image);
Status Gc(const GlobalFlags& g, const GcFlags& f);

struct IndexPushFlags {
  uint64_t span = index::kDefaultIndexSpan;  // decoded bytes between checkpoints
  std::string trace;        // a read trace to push with the index
};
Status IndexPush(const GlobalFlags& g, const std::string& image, const IndexPushFlags& f);
Status Umount(const std::string& mountpoint, bool lazy);

// The classic backends (backend_cmds.cc): `mount --backend overlay|copy|bind`
// and the `umount` of a rootfs they made.
Status MountBackend(const GlobalFlags& g, const std::string& image, const std::string& mountpoint, const MountFlags& m);
bool IsBackendRootfs(const std::string& rootfs);
Status UmountBackend(const std::string& rootfs);

// `ucrfs run` and `ucrfs bundle` (run_cmds.cc).
struct RunFlags {
  std::vector<std::string> args;     // after --
  std::vector<std::string> pre_args;  // positionals after IMAGE given without --
  std::optional<std::string> shell;  // --shell CMD
  std::optional<std::string> command;  // --command EXE
  std::vector<std::string> env;      // --env NAME=VALUE
  std::vector<std::string> volumes;  // --volume HOST:CONTAINER[:ro]
  std::vector<std::string> mounts;   // --mount type=...,src=...,dst=...
  std::string user;                  // --user
  bool ignore_runtime = false;       // --docker-ignore-runtime
  std::string sandbox;               // --sandbox DIR; empty: a fresh one under the work dir
  std::string backend = "fuse";
  std::string rootfs;                // --rootfs DIR: run in this directory instead of an image
  bool no_image = false;             // --no-image: the host's filesystem, volumes at host paths
  bool read_only = false;            // bundle --read-only: no writable upper layer
};
// Returns the command's exit status (128+N when signal N ended it).
Result<int> Run(const GlobalFlags& g, const std::string& image, const RunFlags& f);
// Writes DIR/config.json and mounts a provisioned rootfs at DIR/rootfs.
Status Bundle(const GlobalFlags& g, const std::string& image, const std::string& dir, const RunFlags& f);
// Kills the containers whose `ucrfs run` was killed, destroys their rootfses.
Status RecoverRuns(const GlobalFlags& g);
// Whether `rootfs` (absolute, symlink-free) is the DIR/rootfs of a bundle;
// UmountBundle ends that bundle.
bool IsBundleRootfs(const std::string& rootfs);
Status UmountBundle(const std::string& rootfs);
// The provisioner (provision_cmds.cc).
struct ProvisionFlags {
  std::string container_id;
  std::string image;
  std::string backend = "fuse";
  bool read_only = false;
  bool json = false;
  int fetch_timeout_s = 30;
};
std::string WorkDir(const GlobalFlags& g);
Result<std::unique_ptr<provisioner::Provisioner>> MakeProvisioner(const GlobalFlags& g, int fetch_timeout_s = 30);
Status Provision(const GlobalFlags& g, const ProvisionFlags& f);
Status Destroy(const GlobalFlags& g, const std::string& container_id);
Status Containers(const GlobalFlags& g, bool json);
// Provisioner::Recover: destroys the containers not in `live`, brings back
// the rootfses of the live ones.
Status RecoverContainers(const GlobalFlags& g, const std::vector<std::string>& live);

}  // namespace ucrfs::cli
