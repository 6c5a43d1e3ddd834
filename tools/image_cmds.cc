// pull, inspect, images.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ucrfs/common/file.h"
#include "ucrfs/common/log.h"
#include "ucrfs/fetch/appc.h"
#include "ucrfs/fetch/source.h"
#include "ucrfs/index/runtime_config.h"
#include "ucrfs/index/pull.h"
#include "ucrfs/index/image_tree.h"
#include "ucrfs/index/store.h"
#include "commands.h"

namespace ucrfs::cli {
namespace {

std::string HumanSize(int64_t n) {
  if (n < 0) return "?";
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", n) : fmt::format("{:.1f} {}", v, units[u]);
}

}  // namespace

Status Pull(const GlobalFlags& g, const std::string& image) {
  UCRFS_ASSIGN(auto given, fetch::ImageRef::Parse(image));
  UCRFS_ASSIGN(auto opts, MakeSourceOptions(g));
  UCRFS_ASSIGN(auto ref, fetch::EffectiveRef(given, opts));
  UCRFS_ASSIGN(auto platform, WantedPlatform(g));
  UCRFS_ASSIGN(auto store, index::Store::Open(g.store, index::Store::Mode::kReadWrite));
  if (ref.transport == fetch::Transport::kAppc) {
    UCRFS_ASSIGN(auto res, index::PullAppc(*store, ref.appc, ref.str(), opts));
    spdlog::info("pulled {}: {} images fetched ({} bytes), {} already in the store", ref.str(), res.blobs_fetched,
                 res.bytes_fetched, res.blobs_reused);
    AutoGc(g.store, *store, ref.str());
    std::cout << res.record.manifest_digest.str() << std::endl;
    return Ok();
  }
  UCRFS_ASSIGN(auto source, fetch::OpenSource(ref, opts));
  index::PullOptions po;
  po.platform = platform;
  UCRFS_ASSIGN(auto res, index::Pull(*store, *source, ref.str(), po));
  spdlog::info("pulled {}: {} blobs fetched ({} bytes), {} already in the store", ref.str(), res.blobs_fetched,
               res.bytes_fetched, res.blobs_reused);
  AutoGc(g.store, *store, ref.str());
  std::cout << res.record.manifest_digest.str() << std::endl;
  return Ok();
}

namespace {

nlohmann::json InspectJson(const index::ImageRecord& r, const fetch::ImageConfig& cfg) {
  nlohmann::json j;
  j["reference"] = r.key;
  j["digest"] = r.manifest_digest.str();
  if (r.index_digest) j["indexDigest"] = r.index_digest->str();
  j["mediaType"] = r.manifest_media_type;
  j["platform"] = {{"os", r.platform.os}, {"architecture", r.platform.architecture}};
  if (!r.platform.variant.empty()) j["platform"]["variant"] = r.platform.variant;
  j["configDigest"] = r.config.digest.str();
  j["layers"] = nlohmann::json::array();
  for (const auto& l : r.layers) j["layers"].push_back({{"digest", l.digest.str()}, {"mediaType", l.media_type}, {"size", l.size}});
  j["config"] = cfg.config.is_object() ? cfg.config : nlohmann::json::object();
  if (!cfg.created.empty()) j["created"] = cfg.created;
  return j;
}

void PrintInspect(const index::ImageRecord& r, const fetch::ImageConfig& cfg) {
  auto list = [](const std::vector<std::string>& v) { return nlohmann::json(v).dump(); };
  int64_t total = 0;
  for (const auto& l : r.layers) total += std::max<int64_t>(l.size, 0);
  fmt::print("Reference:   {}\n", r.key);
  fmt::print("Digest:      {}\n", r.manifest_digest.str());
  if (r.index_digest) fmt::print("Index:       {}\n", r.index_digest->str());
  fmt::print("MediaType:   {}\n", r.manifest_media_type);
  fmt::print("Platform:    {}\n", r.platform.str());
  fmt::print("Config:      {}\n", r.config.digest.str());
  if (!cfg.created.empty()) fmt::print("Created:     {}\n", cfg.created);
  fmt::print("Layers:      {} ({})\n", r.layers.size(), HumanSize(total));
  for (const auto& l : r.layers) fmt::print("  {}  {:>10}  {}\n", l.digest.str(), HumanSize(l.size), l.media_type);
  const auto& rt = cfg.runtime;
  fmt::print("Entrypoint:  {}\n", list(rt.entrypoint));
  fmt::print("Cmd:         {}\n", list(rt.cmd));
  fmt::print("WorkingDir:  {}\n", rt.working_dir);
  fmt::print("User:        {}\n", rt.user);
  fmt::print("Env:\n");
  for (const auto& e : rt.env) fmt::print("  {}\n", e);
  if (!rt.exposed_ports.empty()) fmt::print("ExposedPorts: {}\n", list(rt.exposed_ports));
  if (!rt.volumes.empty()) fmt::print("Volumes:     {}\n", list(rt.volumes));
  if (!rt.labels.empty()) {
    fmt::print("Labels:\n");
    for (const auto& [k, v] : rt.labels) fmt::print("  {}={}\n", k, v);
  }
}

// An Appc manifest shown as an image config: `app.exec` as the entrypoint,
// its environment, working directory and user[:group], the image's labels,
// and the `app` object as the raw config.
Result<fetch::ImageConfig> AppcConfig(std::string_view manifest) {
  UCRFS_ASSIGN(auto rc, index::RuntimeConfig::Parse(index::kAppcManifestMediaType, manifest));
  UCRFS_ASSIGN(auto m, fetch::ParseAppcManifest(manifest));
  fetch::ImageConfig cfg;
  cfg.runtime.entrypoint = rc.entrypoint;
  cfg.runtime.env = rc.env;
  cfg.runtime.working_dir = rc.working_dir;
  cfg.runtime.user = rc.group.empty() ? rc.user : rc.user + ":" + rc.group;
  for (const auto& [k, v] : m.labels) cfg.runtime.labels[k] = v;
  auto doc = nlohmann::json::parse(manifest, nullptr, false);
  if (doc.is_object() && doc.contains("app")) cfg.config = doc["app"];
  if (doc.is_object() && doc.contains("annotations") && doc["annotations"].is_array()) {
    for (const auto& a : doc["annotations"]) {
      if (a.is_object() && a.value("name", "") == "created" && a.contains("value") && a["value"].is_string()) {
        cfg.created = a["value"].get<std::string>();
      }
    }
  }
  return cfg;
}

Result<fetch::ImageConfig> ConfigOf(const index::Store& store, const index::ImageRecord& r) {
  UCRFS_ASSIGN(std::string body, ReadFile(store.BlobPath(r.config.digest)));
  if (r.config.media_type == index::kAppcManifestMediaType) return AppcConfig(body);
  return fetch::ParseImageConfig(body);
}

}  // namespace

Status Inspect(const GlobalFlags& g, const std::string& image, bool json) {
  UCRFS_ASSIGN(auto given, fetch::ImageRef::Parse(image));
  UCRFS_ASSIGN(auto opts, MakeSourceOptions(g));
  UCRFS_ASSIGN(auto ref, fetch::EffectiveRef(given, opts));
  const std::string key = ref.str();
  std::optional<index::ImageRecord> record;
  fetch::ImageConfig cfg;
  // A pulled image is described from the store, without the network.
  auto store = index::Store::Open(g.store, index::Store::Mode::kReadOnly);
  if (!store.ok() && store.error().code() != Errc::kNotFound) return store.error();
  if (store.ok()) {
    UCRFS_ASSIGN(record, (*store)->FindImage(key));
    if (record) {
      UCRFS_ASSIGN(cfg, ConfigOf(**store, *record));
    }
  }
  if (!record && ref.transport == fetch::Transport::kAppc) {
    // An ACI has no manifest apart from its bytes: it is pulled whole.
    UCRFS_ASSIGN(auto rw, index::Store::Open(g.store, index::Store::Mode::kReadWrite));
    UCRFS_ASSIGN(record, GetOrPull(g, *rw, image, /*lazy=*/false));
    UCRFS_ASSIGN(cfg, ConfigOf(*rw, *record));
  }
  if (!record) {
    UCRFS_ASSIGN(auto platform, WantedPlatform(g));
    UCRFS_ASSIGN(auto source, fetch::OpenSource(ref, opts));
    UCRFS_ASSIGN(auto resolved, fetch::Resolve(*source, platform));
    record = index::MakeRecord(key, resolved);
    cfg = std::move(resolved.config);
  }
  if (json) {
    std::cout << InspectJson(*record, cfg).dump(2) << std::endl;
  } else {
    PrintInspect(*record, cfg);
  }
  return Ok();
}

Status Images(const GlobalFlags& g, bool json) {
  auto store = index::Store::Open(g.store, index::Store::Mode::kReadOnly);
  std::vector<index::ImageRecord> images;
  if (store.ok()) {
    UCRFS_ASSIGN(images, (*store)->ListImages());
  } else if (store.error().code() != Errc::kNotFound) {
    return store.error();
  }
  nlohmann::json out = nlohmann::json::array();
  if (!json) {
    fmt::print("{:<60} {:<19} {:<14} {:>6} {:>10} {}\n", "REFERENCE", "DIGEST", "PLATFORM", "LAYERS", "SIZE", "TREE");
  }
  for (const auto& r : images) {
    int64_t size = 0;
    for (const auto& l : r.layers) size += std::max<int64_t>(l.size, 0);
    auto t = index::FindTree(**store, r.manifest_digest);
    bool tree = t.ok() && t->has_value();
    if (json) {
      nlohmann::json layers = nlohmann::json::array();
      for (const auto& l : r.layers) layers.push_back(l.digest.str());
      out.push_back({{"reference", r.key}, {"digest", r.manifest_digest.str()}, {"platform", r.platform.str()},
                     {"layers", layers}, {"size", size}, {"indexed", tree}, {"pulledAt", r.pulled_at}});
    } else {
      fmt::print("{:<60} {:<19} {:<14} {:>6} {:>10} {}\n", r.key, r.manifest_digest.str().substr(0, 19),
                 r.platform.str(), r.layers.size(), HumanSize(size), tree ? "yes" : "no");
    }
  }
  if (json) std::cout << out.dump(2) << std::endl;
  return Ok();
}

}  // namespace ucrfs::cli
