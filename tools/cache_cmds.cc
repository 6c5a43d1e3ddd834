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

std::string GcConfigPath(const std::string& store) { return store + "/gc.json"; }

void Report(const index::GcResult& r) {
  for (const auto& key : r.images_removed) fmt::print("removed {}\n", key);
  fmt::print("freed {} bytes in {} files ({} layer indexes, {} trees); {} bytes left\n", r.bytes_freed,
             r.files_removed, r.layers_removed, r.trees_removed, r.size_after);
}

Result<std::string> KeyOf(const GlobalFlags& g, const std::string& image) {
  UCRFS_ASSIGN(auto given, fetch::ImageRef::Parse(image));
  UCRFS_ASSIGN(auto opts, MakeSourceOptions(g));
  UCRFS_ASSIGN(auto ref, fetch::EffectiveRef(given, opts));
  return ref.str();
}

}  // namespace

Status Rmi(const GlobalFlags& g, const std::string& image) {
  UCRFS_ASSIGN(std::string key, KeyOf(g, image));
  UCRFS_ASSIGN(auto store, index::Store::Open(g.store, index::Store::Mode::kReadWrite));
  UCRFS_ASSIGN(auto r, index::RemoveImage(*store, key));
  Report(r);
  return Ok();
}

Status Gc(const GlobalFlags& g, const GcFlags& f) {
  index::GcOptions opts;
  for (const auto& image : f.keep) {
    UCRFS_ASSIGN(std::string key, KeyOf(g, image));
    opts.keep.push_back(key);
  }
  opts.max_size = f.max_cache_size;
  UCRFS_ASSIGN(auto store, index::Store::Open(g.store, index::Store::Mode::kReadWrite));
  if (f.save) {
    nlohmann::json j = {{"maxCacheSize", opts.max_size}, {"keep", opts.keep}};
    UCRFS_TRY(WriteFileAtomic(GcConfigPath(g.store), j.dump()));
  }
  UCRFS_ASSIGN(auto r, index::CollectGarbage(*store, opts));
  Report(r);
  return Ok();
}

void AutoGc(const std::string& store_dir, index::Store& store, const std::string& using_key) {
  auto body = ReadFile(GcConfigPath(store_dir));
  if (!body.ok()) return;  // no limit configured
  auto j = nlohmann::json::parse(*body, nullptr, false);
  index::GcOptions opts;
  try {
    opts.max_size = j.at("maxCacheSize").get<uint64_t>();
    opts.keep = j.value("keep", std::vector<std::string>{});
  } catch (const nlohmann::json::exception&) {
    spdlog::warn("{} is corrupt; no automatic gc", GcConfigPath(store_dir));
    return;
  }
  if (opts.max_size == 0 || index::StoreSize(store) <= opts.max_size) return;
  opts.keep.push_back(using_key);
  auto r = index::CollectGarbage(store, opts);
  if (!r.ok()) {
    spdlog::info("automatic gc skipped: {}", r.error().message());
    return;
  }
  spdlog::info("automatic gc: removed {} image(s), freed {} bytes", r->images_removed.size(), r->bytes_freed);
}

}  // namespace ucrfs::cli
