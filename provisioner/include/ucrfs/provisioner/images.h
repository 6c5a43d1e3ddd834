// Where images come from and how they get into the store: the options every
// ucrfs entry point shares (the CLI's global flags, the provisioner's
// options), turned into fetch::SourceOptions, and the pull-if-missing that
// mounts, backends and the provisioner all start with.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "ucrfs/common/error.h"
#include "ucrfs/fetch/source.h"
#include "ucrfs/index/store.h"

namespace ucrfs::provisioner {

struct ImageOptions {
  // Registries ("host[:port]") reached over plain HTTP or unverified HTTPS.
  std::vector<std::string> insecure_registries;
  std::string registry_ca;    // PEM bundle trusted besides the system's
  std::string docker_config;  // config.json with registry credentials; empty: the default places
  // A directory of `docker save` archives (path or file:// URL), or the
  // registry for names that carry none (URL or host[:port]).
  std::string docker_registry;
  std::string platform;  // os/arch[/variant] to pick from an index; empty: the host's
  // Where `appc:` images are found by simple discovery (docs/appc.md):
  // http://, https://, file:// or a directory path; empty: "https://".
  std::string appc_simple_discovery_uri_prefix;

  // The same options as ucrfs global flags (`--insecure-registry H` ...), for
  // the ucrfs processes the provisioner starts. Credentials stay in the
  // docker config file and never appear on a command line.
  std::vector<std::string> ToArgs() const;
};

Result<fetch::SourceOptions> MakeSourceOptions(const ImageOptions& o);
Result<fetch::Platform> WantedPlatform(const ImageOptions& o);
// The store key of an image reference: the reference with the default
// registry and tag filled in.
Result<std::string> ImageKey(const ImageOptions& o, const std::string& image);

// The store's record of an image, pulling it first when the store has none
// (lazily: eStargz / zstd:chunked layers indexed from their TOC, gzip layers
// from a ucrfs index when the registry has one). `received` (if given) counts
// the bytes that came from the source.
Result<index::ImageRecord> GetOrPull(const ImageOptions& o, index::Store& store, const std::string& image,
                                     bool lazy, std::atomic<uint64_t>* received = nullptr);

// <store>/gc.json: the cache limit `ucrfs gc --save` keeps.
std::string GcConfigPath(const std::string& store_dir);
// With a limit saved by `gc --save`: collects the least recently used images
// when the store is over it (never `using_key`, the image being used now).
void AutoGc(const std::string& store_dir, index::Store& store, const std::string& using_key);

}  // namespace ucrfs::provisioner
