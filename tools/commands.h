// The ucrfs subcommands. Each is a thin function over the libraries.
#pragma once

#include <string>
#include <vector>

#include "ucrfs/common/error.h"
#include "ucrfs/fetch/source.h"
#include "ucrfs/index/store.h"

namespace ucrfs::cli {

struct GlobalFlags {
  std::string store = "/var/lib/ucrfs";
  std::string log_level = "warn";
  std::vector<std::string> insecure_registries;
  std::string registry_ca;
  std::string docker_config;
  std::string docker_registry;
  std::string platform;
};

// Shared by the commands.
Result<fetch::SourceOptions> MakeSourceOptions(const GlobalFlags& g);
Result<fetch::Platform> WantedPlatform(const GlobalFlags& g);
// The store's record of an image, pulling it first when the store has none
// (lazily: eStargz / zstd:chunked layers indexed from their TOC only).
Result<index::ImageRecord> GetOrPull(const GlobalFlags& g, index::Store& store, const std::string& image,
                                     bool lazy);

Status Pull(const GlobalFlags& g, const std::string& image);
Status Inspect(const GlobalFlags& g, const std::string& image, bool json);
Status Images(const GlobalFlags& g, bool json);
struct MountFlags {
  bool foreground = false;
  std::string prefetch = "all";  // none, landmark, all, or a trace file to replay
  std::string record;            // where to write the mount's read trace, if anywhere
  int fetch_timeout_s = 30;      // a lazy read that cannot be fetched in this time fails with EIO
};

Status Mount(const GlobalFlags& g, const std::string& image, const std::string& mountpoint, const MountFlags& m);
Status Stats(const std::string& mountpoint, bool json);
Status Umount(const std::string& mountpoint, bool lazy);

}  // namespace ucrfs::cli
