// Pulling an Appc image and its dependencies (pull.h: PullAppc).
#include <sys/stat.h>

#include <ctime>
#include <map>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ucrfs/common/log.h"
#include "ucrfs/index/pull.h"
#include "ucrfs/index/runtime_config.h"

namespace ucrfs::index {
namespace {

// Deeper than any real image; stops a chain of dependencies that never ends
// (each name resolving to a new image) before it fills the disk.
constexpr int kMaxDepth = 32;

struct Resolved {
  Digest id = Digest::Sha256Of("");
  std::string manifest_body;
  fetch::AppcManifest manifest;
  uint64_t size = 0;
};

struct AppcPull {
  Store& store;
  Staging& staging;
  const fetch::SourceOptions& opts;
  std::vector<fetch::Descriptor> layers;  // dependencies first
  std::set<std::string> placed;           // ids already in `layers`
  std::set<std::string> resolving;        // ids whose dependencies are being resolved (cycle check)
  std::map<std::string, Resolved> memo;  // by AppcRef::str(): a name reached twice is fetched once
  int work_dirs = 0;
  int fetched = 0;
  int reused = 0;
  uint64_t bytes = 0;
};


// The requested labels must agree with the image's own (a "latest" version
// is discovery's alias for the newest, so any version answers it).
Status CheckLabels(const fetch::AppcRef& ref, const fetch::AppcManifest& m, const std::string& where) {
  if (m.name != ref.name) {
    return Error(Errc::kMalformed, fmt::format("{}: the image is named '{}', not '{}'", where, m.name, ref.name));
  }
  for (const auto& [k, v] : ref.labels) {
    if (k == "version" && v == "latest") continue;
    auto it = m.labels.find(k);
    if (it != m.labels.end() && it->second != v) {
      return Error(Errc::kMalformed,
                   fmt::format("{}: the image has {}={}, but {}={} was asked for", where, k, it->second, k, v));
    }
  }
  return Ok();
}

Result<Resolved> FetchOne(AppcPull& p, const fetch::AppcRef& ref) {
  Resolved out;
  std::optional<Digest> want;
  if (!ref.id.empty()) {
    UCRFS_ASSIGN(want, fetch::AppcIdToDigest(ref.id));
  }
  std::string where;
  if (want && p.store.HasBlob(*want)) {
    // An image named by its id and already stored needs no network.
    out.id = *want;
    where = fmt::format("appc image {}", ref.id);
    UCRFS_ASSIGN(out.manifest_body, fetch::ReadAciManifest(p.store.BlobPath(out.id)));
    struct stat st {};
    if (::stat(p.store.BlobPath(out.id).c_str(), &st) == 0) out.size = static_cast<uint64_t>(st.st_size);
    ++p.reused;
  } else {
    UCRFS_ASSIGN(std::string location, fetch::SimpleDiscoveryLocation(p.opts.appc_discovery_prefix, ref));
    where = location;
    std::string work = fmt::format("{}/appc.{}", p.staging.path(), p.work_dirs++);
    if (::mkdir(work.c_str(), 0700) != 0) return ErrnoError("mkdir " + work);
    spdlog::info("fetching appc image {} from {}", ref.str(), location);
    UCRFS_ASSIGN(fetch::FetchedAci aci, fetch::FetchAci(location, p.opts, work));
    if (want && aci.id != *want) {
      return Error(Errc::kDigestMismatch, fmt::format("{}: image id is {}, but {} was asked for", location,
                                                      fetch::DigestToAppcId(aci.id), ref.id));
    }
    out.id = aci.id;
    out.size = aci.size;
    out.manifest_body = std::move(aci.manifest);
    p.bytes += aci.received;
    if (p.store.HasBlob(out.id)) {
      ++p.reused;
    } else {
      UCRFS_TRY(p.staging.PutFile(out.id, aci.tar_path));
      ++p.fetched;
    }
  }
  auto m = fetch::ParseAppcManifest(out.manifest_body);
  if (!m.ok()) return m.error().Wrap(where);
  out.manifest = std::move(*m);
  UCRFS_TRY(CheckLabels(ref, out.manifest, where));
  return out;
}

// Resolves `ref` and its dependencies depth-first, appending each image to
// p.layers after its dependencies.
Result<Resolved> ResolveAppc(AppcPull& p, const fetch::AppcRef& ref, int depth) {
  if (depth > kMaxDepth) {
    return Error(Errc::kMalformed, fmt::format("appc image {}: dependencies nested deeper than {}", ref.name, kMaxDepth));
  }
  if (auto it = p.memo.find(ref.str()); it != p.memo.end()) {
    if (p.resolving.contains(fetch::DigestToAppcId(it->second.id))) {
      return Error(Errc::kMalformed, fmt::format("appc image {} depends on itself", ref.name));
    }
    return it->second;
  }
  UCRFS_ASSIGN(Resolved r, FetchOne(p, ref));
  p.memo.emplace(ref.str(), r);
  const std::string id = fetch::DigestToAppcId(r.id);
  if (!p.resolving.insert(id).second) {
    return Error(Errc::kMalformed, fmt::format("appc image {} ({}) depends on itself", ref.name, id));
  }
  for (const auto& dep : r.manifest.dependencies) {
    fetch::AppcRef d;
    d.name = dep.image_name;
    d.id = dep.image_id;
    d.labels = dep.labels;
    // A dependency that names no os or arch is for the platform of the image
    // that depends on it.
    d.labels.try_emplace("os", ref.labels.at("os"));
    d.labels.try_emplace("arch", ref.labels.at("arch"));
    d.labels.try_emplace("version", "latest");
    auto got = ResolveAppc(p, d, depth + 1);
    if (!got.ok()) return got.error().Wrap(fmt::format("dependency {} of {}", d.str(), ref.name));
  }
  p.resolving.erase(id);
  if (p.placed.insert(id).second) {
    fetch::Descriptor l;
    l.media_type = std::string(fetch::media::kAppcAci);
    l.digest = r.id;
    l.size = static_cast<int64_t>(r.size);
    p.layers.push_back(std::move(l));
  }
  return r;
}

}  // namespace

Result<PullResult> PullAppc(Store& store, const fetch::AppcRef& ref, const std::string& key,
                            const fetch::SourceOptions& opts) {
  UCRFS_ASSIGN(auto staging, store.BeginStaging());
  AppcPull p{store, *staging, opts};
  UCRFS_ASSIGN(Resolved top, ResolveAppc(p, ref, 0));
  if (!top.manifest.path_whitelist.empty()) {
    // Honouring it would take a filter over the merged tree that the
    // per-layer backends (overlay, copy) cannot apply; a tree with files the
    // image wanted gone would be wrong, so refuse instead (docs/appc.md).
    return Error(Errc::kUnsupported,
                 fmt::format("appc image {}: pathWhitelist is not supported", ref.str()));
  }

  Digest manifest_digest = Digest::Of(DigestAlgorithm::kSha512, top.manifest_body);
  if (!store.HasBlob(manifest_digest)) UCRFS_TRY(staging->PutBytes(manifest_digest, top.manifest_body));

  nlohmann::json doc;
  doc["schemaVersion"] = 1;
  doc["mediaType"] = fetch::media::kAppcImage;
  doc["name"] = ref.name;
  doc["labels"] = ref.labels;
  doc["imageID"] = fetch::DigestToAppcId(top.id);
  doc["manifest"] = manifest_digest.str();
  doc["layers"] = nlohmann::json::array();
  for (const auto& l : p.layers) doc["layers"].push_back({{"imageID", fetch::DigestToAppcId(l.digest)}, {"size", l.size}});
  std::string body = doc.dump();
  Digest image_digest = Digest::Sha256Of(body);
  if (!store.HasBlob(image_digest)) UCRFS_TRY(staging->PutBytes(image_digest, body));

  PullResult out;
  ImageRecord& r = out.record;
  r.key = key;
  r.manifest_digest = image_digest;
  r.manifest_media_type = std::string(fetch::media::kAppcImage);
  auto label = [&](const char* k) {
    auto it = top.manifest.labels.find(k);
    return it != top.manifest.labels.end() ? it->second : ref.labels.at(k);
  };
  r.platform.os = label("os");
  r.platform.architecture = label("arch");
  r.config.media_type = kAppcManifestMediaType;
  r.config.digest = manifest_digest;
  r.config.size = static_cast<int64_t>(top.manifest_body.size());
  r.layers = p.layers;
  r.pulled_at = static_cast<int64_t>(std::time(nullptr));
  UCRFS_TRY(store.CommitImage(*staging, r));
  out.blobs_fetched = p.fetched;
  out.blobs_reused = p.reused;
  out.bytes_fetched = p.bytes;
  return out;
}

}  // namespace ucrfs::index
