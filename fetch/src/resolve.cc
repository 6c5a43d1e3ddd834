#include <fmt/format.h>

#include "ucrfs/common/log.h"
#include "ucrfs/fetch/source.h"

namespace ucrfs::fetch {
namespace {

constexpr size_t kMaxConfigBytes = 16 << 20;

Status CheckLayers(const ImageManifest& m, const ImageConfig& cfg) {
  for (const auto& l : m.layers) {
    auto c = LayerCompression(l.media_type);
    if (!c.ok()) return c.error().Wrap(fmt::format("layer {}", l.digest.str()));
  }
  if (!cfg.diff_ids.empty() && cfg.diff_ids.size() != m.layers.size()) {
    return Error(Errc::kMalformed, fmt::format("image config lists {} diff_ids but the manifest has {} layers",
                                               cfg.diff_ids.size(), m.layers.size()));
  }
  return Ok();
}

}  // namespace

Result<ResolvedImage> Resolve(ImageSource& source, const Platform& want) {
  ResolvedImage out;
  UCRFS_ASSIGN(ManifestBlob root, source.GetRootManifest());
  UCRFS_ASSIGN(ParsedManifest parsed, ParseManifest(root.body, root.media_type));
  std::optional<Platform> from_index;
  if (auto* index = std::get_if<ImageIndex>(&parsed)) {
    UCRFS_ASSIGN(Descriptor chosen, SelectPlatform(*index, want));
    from_index = chosen.platform;
    spdlog::debug("{}: platform {} -> {}", source.Describe(), want.str(), chosen.digest.str());
    UCRFS_ASSIGN(ManifestBlob m, source.GetManifest(chosen));
    if (m.media_type.empty()) m.media_type = chosen.media_type;
    UCRFS_ASSIGN(parsed, ParseManifest(m.body, m.media_type));
    if (std::holds_alternative<ImageIndex>(parsed)) {
      return Error(Errc::kUnsupported, fmt::format("{}: index {} points to another index", source.Describe(),
                                                   chosen.digest.str()));
    }
    out.index = std::move(root);
    out.manifest = std::move(m);
  } else {
    out.manifest = std::move(root);
  }
  out.parsed = std::get<ImageManifest>(std::move(parsed));

  if (out.parsed.kind == ManifestKind::kDockerSchema1) {
    out.config_body = out.parsed.schema1_config;
    out.config_desc.media_type = std::string(media::kDockerConfig);
    out.config_desc.digest = Digest::Sha256Of(out.config_body);
    out.config_desc.size = static_cast<int64_t>(out.config_body.size());
  } else {
    out.config_desc = *out.parsed.config;
    if (out.config_desc.size > static_cast<int64_t>(kMaxConfigBytes)) {
      return Error(Errc::kTooBig, fmt::format("image config {} is {} bytes, over the limit",
                                              out.config_desc.digest.str(), out.config_desc.size));
    }
    MemorySink sink(kMaxConfigBytes, fmt::format("blob larger than {} bytes", kMaxConfigBytes));
    Status st = source.GetBlob(out.config_desc, sink);
    if (!st.ok()) return st.error().Wrap(fmt::format("image config {}", out.config_desc.digest.str()));
    UCRFS_TRY(VerifyDigest(out.config_desc.digest, Digest::Of(out.config_desc.digest.algorithm(), sink.data()),
                           "image config"));
    out.config_body = sink.take();
  }
  UCRFS_ASSIGN(out.config, ParseImageConfig(out.config_body));
  UCRFS_TRY(CheckLayers(out.parsed, out.config));
  out.platform = from_index ? *from_index : out.config.platform;
  if (out.platform.os.empty()) out.platform.os = "linux";
  return out;
}

}  // namespace ucrfs::fetch
