#include "ucrfs/index/pull.h"

#include <atomic>
#include <ctime>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "ucrfs/common/log.h"
#include "ucrfs/index/layers.h"
#include "ucrfs/index/remote_index.h"
#include "ucrfs/index/toc.h"

namespace ucrfs::index {
namespace {

// Runs fn(0) .. fn(n - 1) on up to `parallel` threads (the caller's one of
// them). The first error stops the work not yet started and is returned.
Status ParallelFor(size_t n, int parallel, const std::function<Status(size_t)>& fn) {
  std::atomic<size_t> next{0};
  std::mutex mu;
  Status first_error;  // guarded by mu
  std::atomic<bool> failed{false};
  auto worker = [&] {
    for (size_t i; !failed && (i = next++) < n;) {
      Status st = fn(i);
      if (!st.ok()) {
        std::lock_guard lock(mu);
        if (first_error.ok()) first_error = st;
        failed = true;
      }
    }
  };
  size_t threads_wanted = std::min<size_t>(static_cast<size_t>(std::max(1, parallel)), n);
  std::vector<std::thread> threads;
  for (size_t i = 1; i < threads_wanted; ++i) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
  return first_error;
}

// Downloads `layers` into staging with up to `parallel` workers. The first
// error stops the remaining work and is returned (errors name the blob).
Status FetchLayers(fetch::ImageSource& source, Staging& staging, const std::vector<fetch::Descriptor>& layers,
                   int parallel, std::atomic<uint64_t>& bytes) {
  return ParallelFor(layers.size(), parallel, [&](size_t i) -> Status {
    const auto& desc = layers[i];
    UCRFS_ASSIGN(auto writer, staging.NewBlob(desc));
    UCRFS_TRY(source.GetBlob(desc, *writer));
    UCRFS_TRY(writer->Finish());
    bytes += writer->written();
    spdlog::info("fetched layer {} ({} bytes)", desc.digest.str(), desc.size);
    return Ok();
  });
}

// Plain gzip layers a lazy pull could index from a ucrfs index: not in the
// store, not indexed, not announcing a TOC of their own.
bool WantsRemoteIndex(const Store& store, const fetch::Descriptor& l) {
  auto c = fetch::LayerCompression(l.media_type);
  if (!c.ok() || *c != fetch::Compression::kGzip || LazyFormatOf(l.annotations)) return false;
  if (store.HasBlob(l.digest)) return false;
  auto rec = FindLayer(store, l.digest);
  return rec.ok() && !*rec;
}

// The ucrfs index of the image in its registry, if it has one. Any failure
// (none there, unreachable, malformed) is logged and leaves the layers to the
// ordinary download.
std::optional<RemoteIndex> LookUpRemoteIndex(fetch::ImageSource& source, const fetch::ResolvedImage& img) {
  auto found = FindRemoteIndex(source, img.manifest);
  if (!found.ok()) {
    spdlog::warn("{}: not using its ucrfs index: {}", source.Describe(), found.error().message());
    return std::nullopt;
  }
  if (!*found) spdlog::info("{}: no ucrfs index (tag {})", source.Describe(), IndexTag(img.manifest.digest));
  return *found;
}

// Indexes one layer from the remote index; false (logged) when the index
// does not have it or it does not check out.
bool IndexFromRemote(Store& store, fetch::ImageSource& source, const RemoteIndex& remote,
                     const fetch::Descriptor& l) {
  auto it = remote.layers.find(l.digest.str());
  if (it == remote.layers.end()) return false;
  Status st = [&]() -> Status {
    UCRFS_ASSIGN(std::string blob, FetchArtifactBlob(source, it->second));
    UCRFS_ASSIGN(LayerIndex index, DecodeLayerIndex(blob, l));
    // The windows are fetched by Range when reads need them, so the blob the
    // index names must be one the artifact holds (which keeps it in the
    // registry).
    if (index.windows_size > 0) {
      auto w = remote.windows.find(l.digest.str());
      if (w == remote.windows.end() || w->second.digest != index.windows_blob ||
          w->second.size != static_cast<int64_t>(index.windows_size)) {
        return Error(Errc::kMalformed, "its windows blob is not the one the artifact lists");
      }
    }
    UCRFS_TRY(ImportLayerIndex(store, l, index));
    return Ok();
  }();
  if (!st.ok()) spdlog::warn("layer {}: not using its ucrfs index: {}", l.digest.str(), st.error().message());
  return st.ok();
}

}  // namespace

ImageRecord MakeRecord(const std::string& key, const fetch::ResolvedImage& image) {
  ImageRecord r;
  r.key = key;
  r.manifest_digest = image.manifest.digest;
  r.manifest_media_type = image.manifest.media_type;
  if (image.index) r.index_digest = image.index->digest;
  r.platform = image.platform;
  r.config = image.config_desc;
  r.layers = image.parsed.layers;
  r.pulled_at = static_cast<int64_t>(std::time(nullptr));
  return r;
}

Result<PullResult> Pull(Store& store, fetch::ImageSource& source, const std::string& key, const PullOptions& opts) {
  PullResult out;
  UCRFS_ASSIGN(out.image, fetch::Resolve(source, opts.platform));
  const auto& img = out.image;
  UCRFS_ASSIGN(auto staging, store.BeginStaging());

  // Manifests and config are already in memory and verified by Resolve().
  if (img.index && !store.HasBlob(img.index->digest)) UCRFS_TRY(staging->PutBytes(img.index->digest, img.index->body));
  if (!store.HasBlob(img.manifest.digest)) UCRFS_TRY(staging->PutBytes(img.manifest.digest, img.manifest.body));
  if (!store.HasBlob(img.config_desc.digest)) UCRFS_TRY(staging->PutBytes(img.config_desc.digest, img.config_body));

  std::optional<RemoteIndex> remote;
  if (opts.lazy && opts.remote_index) {
    for (const auto& l : img.parsed.layers) {
      if (WantsRemoteIndex(store, l)) {
        remote = LookUpRemoteIndex(source, img);
        break;
      }
    }
  }
  std::optional<Digest> trace;
  if (remote && remote->trace) {
    auto body = FetchArtifactBlob(source, *remote->trace, 64 << 20);
    if (body.ok() && staging->PutBytes(remote->trace->digest, *body).ok()) {
      trace = remote->trace->digest;
    } else if (!body.ok()) {
      spdlog::warn("not using the trace of the ucrfs index: {}", body.error().message());
    }
  }

  std::vector<fetch::Descriptor> wanted;
  std::set<std::string> seen;
  for (const auto& l : img.parsed.layers) {
    if (!seen.insert(l.digest.str()).second) continue;  // a layer listed twice is fetched once
    if (store.HasBlob(l.digest)) {
      ++out.blobs_reused;
      continue;
    }
    wanted.push_back(l);
  }
  // Lazy layers are indexed in parallel (each fetches its TOC or ucrfs
  // index, parses it and writes it in a transaction of its own): a mount
  // waits for the slowest layer rather than for all of them in turn.
  enum class Kind { kDownload, kLazy, kRemote };
  std::vector<Kind> kinds(wanted.size(), Kind::kDownload);
  if (opts.lazy) {
    UCRFS_TRY(ParallelFor(wanted.size(), std::max(1, opts.parallel), [&](size_t i) -> Status {
      const auto& l = wanted[i];
      UCRFS_ASSIGN(auto lazy, IndexLazyLayer(store, source, l));
      if (lazy) {
        kinds[i] = Kind::kLazy;
      } else if (remote && WantsRemoteIndex(store, l) && IndexFromRemote(store, source, *remote, l)) {
        kinds[i] = Kind::kRemote;
      }
      return Ok();
    }));
  }
  std::vector<fetch::Descriptor> missing;
  for (size_t i = 0; i < wanted.size(); ++i) {
    if (kinds[i] == Kind::kDownload) missing.push_back(wanted[i]);
    if (kinds[i] != Kind::kDownload) ++out.layers_lazy;
    if (kinds[i] == Kind::kRemote) ++out.layers_remote_index;
  }
  std::atomic<uint64_t> bytes{0};
  UCRFS_TRY(FetchLayers(source, *staging, missing, opts.parallel, bytes));
  out.blobs_fetched = static_cast<int>(missing.size());
  out.bytes_fetched = bytes;
  out.record = MakeRecord(key, img);
  out.record.trace = trace;
  UCRFS_TRY(store.CommitImage(*staging, out.record));
  return out;
}

}  // namespace ucrfs::index
