// rmi and gc: the image cache.
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "ucrfs/common/file.h"
#include "ucrfs/common/log.h"
#include "ucrfs/index/gc.h"

namespace ucrfs::cli {
namespace {


void Report(const index::GcResult& r) {
  for (const auto& key : r.images_removed) fmt::print("removed {}\n", key);
  fmt::print("freed {} bytes in {} files ({} layer indexes, {} trees); {} bytes left\n", r.bytes_freed,
             r.files_removed, r.layers_removed, r.trees_removed, r.size_after);
}

}  // namespace

Status Rmi(const GlobalFlags& g, const std::string& image) {
  UCRFS_ASSIGN(std::string key, provisioner::ImageKey(g, image));
  UCRFS_ASSIGN(auto store, index::Store::Open(g.store, index::Store::Mode::kReadWrite));
  UCRFS_ASSIGN(auto r, index::RemoveImage(*store, key));
  Report(r);
  return Ok();
}

Status Gc(const GlobalFlags& g, const GcFlags& f) {
  index::GcOptions opts;
  for (const auto& image : f.keep) {
    UCRFS_ASSIGN(std::string key, provisioner::ImageKey(g, image));
    opts.keep.push_back(key);
  }
  opts.max_size = f.max_cache_size;
  UCRFS_ASSIGN(auto store, index::Store::Open(g.store, index::Store::Mode::kReadWrite));
  if (f.save) {
    nlohmann::json j = {{"maxCacheSize", opts.max_size}, {"keep", opts.keep}};
    UCRFS_TRY(WriteFileAtomic(provisioner::GcConfigPath(g.store), j.dump()));
  }
  UCRFS_ASSIGN(auto r, index::CollectGarbage(*store, opts));
  Report(r);
  return Ok();
}

}  // namespace ucrfs::cli
