// The provisioner: container root filesystems from images, as Mesos'
// provisioner makes them, with the lazy FUSE mount as the default backend.
//
// Layout under Options::work_dir (Mesos': src/slave/containerizer/mesos/
// provisioner/paths.hpp):
//
//   <work_dir>/provisioner/containers/<container id>/
//       backends/<backend>/rootfses/<rootfs id>    the rootfs
//       backends/<backend>/scratch/<rootfs id>/    upper/work dirs, the FUSE
//                                                   lower mount (fuse backend)
//       rootfses/<rootfs id>.json                  what Destroy/Recover need
//
// A container can have several rootfses (its own image and image volumes).
// Every call is safe from many threads at once; N concurrent provisions of
// one image pull and index it once.
//
// The fuse backend's servers are separate `ucrfs mount` processes (found at
// Options::ucrfs_binary), so they outlive the caller: an agent that restarts
// calls Recover() and its containers keep their root filesystems.
#pragma once

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ucrfs/backends/backends.h"
#include "ucrfs/common/error.h"
#include "ucrfs/index/runtime_config.h"
#include "ucrfs/provisioner/images.h"

namespace ucrfs::provisioner {

struct Options {
  std::string work_dir;   // created if missing
  std::string store_dir;  // the image store
  ImageOptions images;    // registries, credentials, platform
  backends::Kind default_backend = backends::Kind::kFuse;  // Mesos' --image_provisioner_backend
  // The ucrfs executable that serves FUSE mounts; empty: this process' own
  // executable if it is ucrfs, else `ucrfs` beside it, else on PATH.
  std::string ucrfs_binary;
  int fetch_timeout_s = 30;     // lazy reads that cannot be fetched fail with EIO after this
  uint64_t max_cache_size = 0;  // the store's chunk cache limit; 0: none
};

struct Rootfs {
  std::string id;      // the rootfs id (a UUID)
  std::string path;    // the rootfs directory
  backends::Kind backend;
  bool writable = true;
  index::ImageRecord image;
  index::RuntimeConfig config;  // the image's runtime config (Docker config or Appc app)
};

class Provisioner {
 public:
  static Result<std::unique_ptr<Provisioner>> Create(Options opts);
  ~Provisioner();

  // Pulls the image if the store lacks it and makes a new rootfs of it for
  // the container. `writable`: the container may write (overlay upper dir in
  // the scratch directory; the image itself never changes); bind is always
  // read-only. On failure nothing of the attempt is left.
  Result<Rootfs> Provision(const std::string& container_id, const std::string& image,
                           std::optional<backends::Kind> backend = std::nullopt, bool writable = true);

  // Removes every rootfs of the container (unmounting, ending its FUSE
  // servers, removing scratch) and the container's directory. Succeeds while
  // a process still holds a file open in a rootfs (the mounts are detached).
  // An unknown container is not an error.
  Status Destroy(const std::string& container_id);

  // After a restart of the caller: destroys every container not in `live`;
  // for live ones, restarts FUSE servers that died so their rootfses serve
  // again. Returns the first failure after trying everything.
  Status Recover(const std::set<std::string>& live);

  // The containers that have a directory, and the rootfses of one.
  Result<std::vector<std::string>> Containers() const;
  Result<std::vector<Rootfs>> Rootfses(const std::string& container_id) const;

  const Options& options() const;

 private:
  struct Impl;
  explicit Provisioner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ucrfs::provisioner
