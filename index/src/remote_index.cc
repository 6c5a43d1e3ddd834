#include "ucrfs/index/remote_index.h"

#include <zstd.h>

#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "codec.h"
#include "layer_internal.h"
#include "tar_path.h"
#include "ucrfs/common/file.h"
#include "ucrfs/common/log.h"
#include "ucrfs/index/toc.h"

namespace ucrfs::index {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kMagic = "UCRFSLIX";
// 2: windows in a separate blob. 1 (windows inline) is refused: the layer is
// downloaded until its index is pushed again.
constexpr uint64_t kVersion = 2;
constexpr uint64_t kMaxDecoded = 1ull << 31;  // a layer index larger than this is refused
constexpr uint64_t kMaxWindow = 32768;        // deflate's largest window
// Windows are small and read once per start of inflation: compress them hard
// at push time, where it costs little.
constexpr int kWindowLevel = 19;

Error Bad(const fetch::Descriptor& layer, std::string_view why) {
  return Error(Errc::kMalformed, fmt::format("ucrfs index of layer {}: {}", layer.digest.str(), why));
}

// A layer index's entries must be what the tar reader would have produced
// from the layer: normalized paths, extents inside the file and the stream.
Status CheckEntry(const TarEntry& e, uint64_t decoded_size, const fetch::Descriptor& layer) {
  auto bad = [&](std::string_view why) { return Bad(layer, fmt::format("entry {}: {}", QuotePath(e.path), why)); };
  auto norm = NormalizeTarPath(e.path.empty() ? std::string_view("./") : std::string_view(e.path));
  if (!norm.ok() || *norm != e.path) return bad("path is not normalized");
  if (e.path.empty() && e.type != EntryType::kDir) return bad("the root is not a directory");
  if (e.type == EntryType::kHardlink) {
    auto target = NormalizeTarPath(e.link_target);
    if (!target.ok() || *target != e.link_target) return bad("hardlink target is not normalized");
  }
  if (e.type != EntryType::kFile && !e.extents.empty()) return bad("extents on a non-file");
  uint64_t next = 0;
  for (const Extent& x : e.extents) {
    if (x.file_offset < next || x.length > e.size || x.file_offset > e.size - x.length) {
      return bad("extent outside the file or out of order");
    }
    if (x.length > decoded_size || x.stream_offset > decoded_size - x.length) return bad("extent past the stream");
    next = x.file_offset + x.length;
  }
  return Ok();
}

Json DescriptorJson(const fetch::Descriptor& d) {
  Json j = {{"mediaType", d.media_type}, {"digest", d.digest.str()}, {"size", d.size}};
  if (!d.annotations.empty()) j["annotations"] = d.annotations;
  return j;
}

Result<fetch::Descriptor> DescriptorFrom(const Json& j, std::string_view what) {
  auto bad = [&] { return Error(Errc::kMalformed, fmt::format("ucrfs index: bad descriptor in {}", what)); };
  if (!j.is_object() || !j.contains("digest") || !j["digest"].is_string() || !j.contains("size") ||
      !j["size"].is_number_integer() || !j.contains("mediaType") || !j["mediaType"].is_string()) {
    return bad();
  }
  fetch::Descriptor d;
  d.media_type = j["mediaType"].get<std::string>();
  auto digest = Digest::Parse(j["digest"].get<std::string>());
  if (!digest.ok()) return bad();
  d.digest = *digest;
  d.size = j["size"].get<int64_t>();
  if (d.size < 0) return bad();
  if (j.contains("annotations")) {
    if (!j["annotations"].is_object()) return bad();
    for (auto& [k, v] : j["annotations"].items()) {
      if (v.is_string()) d.annotations[k] = v.get<std::string>();
    }
  }
  return d;
}

}  // namespace

std::string IndexTag(const Digest& manifest) {
  return fmt::format("{}-{}.ucrfs", manifest.algorithm_name(), manifest.hex());
}

SpanRange SpanOf(const std::vector<Checkpoint>& cps, size_t i, uint64_t layer_size) {
  uint64_t start = cps[i].in_offset - (cps[i].bits > 0 ? 1 : 0);
  uint64_t end = i + 1 < cps.size() ? cps[i + 1].in_offset : layer_size;
  return SpanRange{start, end > start ? end - start : 0};
}

std::string SplitWindows(LayerIndex& index) {
  std::string blob;
  index.windows.assign(index.checkpoints.size(), WindowRef{});
  for (size_t i = 0; i < index.checkpoints.size(); ++i) {
    std::string& w = index.checkpoints[i].window;
    if (w.empty()) continue;
    std::string z(ZSTD_compressBound(w.size()), '\0');
    size_t n = ZSTD_compress(z.data(), z.size(), w.data(), w.size(), kWindowLevel);
    z.resize(ZSTD_isError(n) ? 0 : n);  // cannot fail with a compressBound buffer
    index.windows[i] = WindowRef{w.size(), blob.size(), z.size(), Digest::Sha256Of(z)};
    blob += z;
    w.clear();
    w.shrink_to_fit();
  }
  index.windows_blob = Digest::Sha256Of(blob);
  index.windows_size = blob.size();
  return blob;
}

std::string EncodeLayerIndex(const LayerIndex& index) {
  Encoder enc;
  enc.Raw(kMagic).Var(kVersion).Str(index.layer.str()).Var(index.layer_size).Var(index.decoded_size);
  enc.Str(index.windows_blob.str()).Var(index.windows_size);
  enc.Var(index.entries.size());
  for (const TarEntry& e : index.entries) enc.Str(EncodeEntry(e));
  enc.Var(index.checkpoints.size());
  for (const Checkpoint& cp : index.checkpoints) enc.Str(cp.Serialize());
  for (const Digest& d : index.span_digests) enc.Str(d.str());
  for (const WindowRef& w : index.windows) {
    enc.Var(w.length);
    if (w.length > 0) enc.Var(w.offset).Var(w.size).Str(w.digest.str());
  }
  const std::string& raw = enc.str();
  std::string out(ZSTD_compressBound(raw.size()), '\0');
  size_t n = ZSTD_compress(out.data(), out.size(), raw.data(), raw.size(), 3);
  out.resize(ZSTD_isError(n) ? 0 : n);  // cannot fail with a compressBound buffer
  return out;
}

Result<LayerIndex> DecodeLayerIndex(std::string_view blob, const fetch::Descriptor& layer) {
  unsigned long long size = ZSTD_getFrameContentSize(blob.data(), blob.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN) return Bad(layer, "not a zstd frame");
  if (size > kMaxDecoded) return Bad(layer, "too large");
  std::string raw(size, '\0');
  size_t got = ZSTD_decompress(raw.data(), raw.size(), blob.data(), blob.size());
  if (ZSTD_isError(got) || got != size) return Bad(layer, "corrupt zstd data");
  if (!std::string_view(raw).starts_with(kMagic)) return Bad(layer, "not a ucrfs layer index");
  Decoder d(std::string_view(raw).substr(kMagic.size()));
  uint64_t version = d.Var();
  if (d.ok() && version != kVersion) {
    return Error(Errc::kUnsupported,
                 fmt::format("ucrfs index of layer {}: version {} (this ucrfs reads version {}; push the index again)",
                             layer.digest.str(), version, kVersion));
  }
  LayerIndex out;
  auto digest = Digest::Parse(d.Str());
  if (!digest.ok() || *digest != layer.digest) return Bad(layer, "it is the index of another layer");
  out.layer = *digest;
  out.layer_size = d.Var();
  out.decoded_size = d.Var();
  if (layer.size < 0 || out.layer_size != static_cast<uint64_t>(layer.size)) return Bad(layer, "wrong layer size");
  auto windows_blob = Digest::Parse(d.Str());
  if (!windows_blob.ok()) return Bad(layer, "bad windows blob digest");
  out.windows_blob = *windows_blob;
  out.windows_size = d.Var();
  // Counts are bounded by the bytes left, so a lying count cannot make us
  // reserve memory.
  uint64_t n = d.Var();
  if (n > raw.size()) return Bad(layer, "entry count past the end");
  for (; d.ok() && n > 0; --n) {
    auto e = DecodeEntry(d.Str());
    if (!e.ok()) return Bad(layer, "corrupt entry");
    UCRFS_TRY(CheckEntry(*e, out.decoded_size, layer));
    out.entries.push_back(std::move(*e));
  }
  n = d.Var();
  if (n > raw.size()) return Bad(layer, "checkpoint count past the end");
  for (; d.ok() && n > 0; --n) {
    auto cp = Checkpoint::Deserialize(d.Str());
    if (!cp.ok()) return Bad(layer, cp.error().message());
    out.checkpoints.push_back(std::move(*cp));
  }
  for (size_t i = 0; d.ok() && i < out.checkpoints.size(); ++i) {
    auto sd = Digest::Parse(d.Str());
    if (!sd.ok()) return Bad(layer, "bad span digest");
    out.span_digests.push_back(*sd);
  }
  // Windows: in checkpoint order, one after the other inside the windows
  // blob, each no larger than a compressed 32 KiB could be.
  std::vector<uint64_t> window_sizes;
  uint64_t windows_end = 0;
  for (size_t i = 0; d.ok() && i < out.checkpoints.size(); ++i) {
    WindowRef w;
    w.length = d.Var();
    if (w.length > 0) {
      w.offset = d.Var();
      w.size = d.Var();
      auto wd = Digest::Parse(d.Str());
      if (!d.ok()) break;
      if (!wd.ok()) return Bad(layer, fmt::format("window {}: bad digest", i));
      w.digest = *wd;
      if (w.length > kMaxWindow || w.size == 0 || w.size > ZSTD_compressBound(kMaxWindow)) {
        return Bad(layer, fmt::format("window {}: bad size", i));
      }
      if (w.offset < windows_end || w.offset > out.windows_size || w.size > out.windows_size - w.offset) {
        return Bad(layer, fmt::format("window {} outside the windows blob or out of order", i));
      }
      windows_end = w.offset + w.size;
    }
    window_sizes.push_back(w.length);
    out.windows.push_back(w);
  }
  if (!d.ok() || !d.done()) return Bad(layer, "truncated or trailing data");
  if (out.checkpoints.empty()) return Bad(layer, "no checkpoints");
  if (out.windows_size > out.checkpoints.size() * ZSTD_compressBound(kMaxWindow)) {
    return Bad(layer, "windows blob too large");
  }
  if (Status st = ValidateCheckpoints(out.checkpoints, out.decoded_size, out.layer_size, "layer " + layer.digest.str(),
                                      &window_sizes);
      !st.ok()) {
    return Bad(layer, st.error().message());
  }
  for (size_t i = 0; i < out.checkpoints.size(); ++i) {
    SpanRange r = SpanOf(out.checkpoints, i, out.layer_size);
    if (r.size == 0 || r.offset + r.size > out.layer_size) return Bad(layer, fmt::format("span {} is empty", i));
  }
  return out;
}

Result<LayerIndex> BuildLayerIndex(const Store& store, const fetch::Descriptor& layer, uint64_t span) {
  const std::string what = "layer " + layer.digest.str();
  UCRFS_ASSIGN(fetch::Compression c, fetch::LayerCompression(layer.media_type));
  if (c != fetch::Compression::kGzip) return Error(Errc::kInvalidArgument, what + " is not gzip-compressed");
  if (!store.HasBlob(layer.digest)) return Error(Errc::kNotFound, what + ": blob not in the store");
  const std::string path = store.BlobPath(layer.digest);
  LayerIndex out;
  out.layer = layer.digest;
  out.layer_size = static_cast<uint64_t>(layer.size);
  UCRFS_ASSIGN(auto stream, GzipIndexingStream::Open(path, span, /*check_crc=*/false));
  if (Status st = ScanTar(*stream, &out.entries, &out.decoded_size); !st.ok()) return st.error().Wrap(what);
  out.checkpoints = stream->checkpoints();
  for (size_t i = 0; i < out.checkpoints.size(); ++i) {
    SpanRange r = SpanOf(out.checkpoints, i, out.layer_size);
    UCRFS_ASSIGN(std::string bytes, ReadFileRange(path, r.offset, r.size));
    out.span_digests.push_back(Digest::Sha256Of(bytes));
  }
  return out;
}

Result<IndexArtifact> BuildIndexArtifact(const Store& store, const ImageRecord& image, uint64_t span,
                                         const std::optional<std::string>& trace) {
  IndexArtifact out;
  Json layers = Json::array();
  std::set<std::string> seen;
  for (const fetch::Descriptor& l : image.layers) {
    auto c = fetch::LayerCompression(l.media_type);
    if (!c.ok() || *c != fetch::Compression::kGzip || LazyFormatOf(l.annotations)) continue;
    if (!seen.insert(l.digest.str()).second) continue;
    UCRFS_ASSIGN(LayerIndex index, BuildLayerIndex(store, l, span));
    std::string windows = SplitWindows(index);
    std::string blob = EncodeLayerIndex(index);
    fetch::Descriptor d;
    d.media_type = kLayerIndexMediaType;
    d.digest = Digest::Sha256Of(blob);
    d.size = static_cast<int64_t>(blob.size());
    d.annotations[kLayerDigestAnnotation] = l.digest.str();
    layers.push_back(DescriptorJson(d));
    out.blobs.push_back(ArtifactBlob{d, std::move(blob)});
    if (windows.empty()) continue;  // every checkpoint a member start: nothing to push
    fetch::Descriptor w;
    w.media_type = kLayerWindowsMediaType;
    w.digest = index.windows_blob;
    w.size = static_cast<int64_t>(windows.size());
    w.annotations[kLayerDigestAnnotation] = l.digest.str();
    layers.push_back(DescriptorJson(w));
    out.blobs.push_back(ArtifactBlob{w, std::move(windows)});
  }
  if (out.blobs.empty()) {
    return Error(Errc::kInvalidArgument, image.key + " has no plain gzip layer to index");
  }
  if (trace) {
    fetch::Descriptor d;
    d.media_type = kTraceMediaType;
    d.digest = Digest::Sha256Of(*trace);
    d.size = static_cast<int64_t>(trace->size());
    layers.push_back(DescriptorJson(d));
    out.blobs.push_back(ArtifactBlob{d, *trace});
  }
  std::string config = Json{{"version", 2}, {"subject", image.manifest_digest.str()}, {"span", span}}.dump();
  fetch::Descriptor cd;
  cd.media_type = kIndexConfigMediaType;
  cd.digest = Digest::Sha256Of(config);
  cd.size = static_cast<int64_t>(config.size());
  out.blobs.insert(out.blobs.begin(), ArtifactBlob{cd, config});

  UCRFS_ASSIGN(std::string manifest_body, ReadFile(store.BlobPath(image.manifest_digest)));
  fetch::Descriptor subject;
  subject.media_type = image.manifest_media_type;
  subject.digest = image.manifest_digest;
  subject.size = static_cast<int64_t>(manifest_body.size());
  Json m = {{"schemaVersion", 2},
            {"mediaType", std::string(fetch::media::kOciManifest)},
            {"artifactType", kIndexArtifactType},
            {"config", DescriptorJson(cd)},
            {"layers", layers},
            {"subject", DescriptorJson(subject)}};
  out.manifest = m.dump();
  out.media_type = fetch::media::kOciManifest;
  return out;
}

Result<std::optional<RemoteIndex>> FindRemoteIndex(fetch::ImageSource& source, const fetch::ManifestBlob& manifest) {
  const std::string tag = IndexTag(manifest.digest);
  UCRFS_ASSIGN(auto found, source.GetTaggedManifest(tag));
  if (!found) return std::optional<RemoteIndex>();
  auto bad = [&](std::string_view why) {
    return Error(Errc::kMalformed, fmt::format("ucrfs index {}: {}", tag, why));
  };
  Json j = Json::parse(found->body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad("not JSON");
  if (j.value("artifactType", "") != kIndexArtifactType) return bad("not a ucrfs index artifact");
  if (!j.contains("subject")) return bad("no subject");
  UCRFS_ASSIGN(fetch::Descriptor subject, DescriptorFrom(j["subject"], "subject"));
  if (subject.digest != manifest.digest) return bad("its subject is another manifest");
  if (!j.contains("layers") || !j["layers"].is_array()) return bad("no layers");
  RemoteIndex out;
  out.artifact = found->digest;
  for (const Json& l : j["layers"]) {
    UCRFS_ASSIGN(fetch::Descriptor d, DescriptorFrom(l, "layers"));
    if (d.media_type == kTraceMediaType) {
      out.trace = d;
    } else if (d.media_type == kLayerIndexMediaType || d.media_type == kLayerWindowsMediaType) {
      auto it = d.annotations.find(kLayerDigestAnnotation);
      if (it == d.annotations.end()) return bad("a layer index or windows blob names no layer");
      (d.media_type == kLayerIndexMediaType ? out.layers : out.windows)[it->second] = d;
    }
  }
  return std::optional<RemoteIndex>(std::move(out));
}

Result<std::string> FetchArtifactBlob(fetch::ImageSource& source, const fetch::Descriptor& desc, uint64_t max_size) {
  if (desc.size < 0 || static_cast<uint64_t>(desc.size) > max_size) {
    return Error(Errc::kTooBig, fmt::format("ucrfs index blob {} is too large", desc.digest.str()));
  }
  fetch::MemorySink sink(static_cast<uint64_t>(desc.size), "blob larger than its descriptor says");
  UCRFS_TRY(source.GetBlob(desc, sink));
  std::string data = sink.take();
  UCRFS_TRY(VerifyDigest(desc.digest, Digest::Of(desc.digest.algorithm(), data), "ucrfs index blob"));
  return data;
}

}  // namespace ucrfs::index
