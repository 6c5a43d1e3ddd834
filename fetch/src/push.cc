#include "ucrfs/fetch/push.h"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "registry.h"
#include "ucrfs/common/log.h"

namespace ucrfs::fetch {
namespace {

constexpr size_t kMaxManifestBytes = 4 << 20;  // what GetManifest reads back

Status CheckBlob(const PushBlob& b) {
  if (b.desc.size < 0 || static_cast<uint64_t>(b.desc.size) != b.data.size()) {
    return Error(Errc::kInvalidArgument, fmt::format("blob {} to push has {} bytes, its descriptor says {}",
                                                     b.desc.digest.str(), b.data.size(), b.desc.size));
  }
  Digest actual = Digest::Of(b.desc.digest.algorithm(), b.data);
  if (actual != b.desc.digest) {
    return Error(Errc::kDigestMismatch,
                 fmt::format("blob {} to push hashes to {}", b.desc.digest.str(), actual.str()));
  }
  return Ok();
}

}  // namespace

Result<Digest> PushArtifact(const ImageRef& given, const SourceOptions& opts, const std::vector<PushBlob>& blobs,
                            const std::string& manifest, const std::string& media_type, const std::string& tag) {
  UCRFS_ASSIGN(ImageRef ref, EffectiveRef(given, opts));
  if (ref.transport != Transport::kDocker) {
    return Error(Errc::kUnsupported, fmt::format("{}: index push needs an image in a registry", ref.str()));
  }
  Reference n = ref.reference.Normalized(opts.default_registry.empty() ? kDefaultRegistry : opts.default_registry);
  const std::string where = fmt::format("{}/{}:{}", n.registry, n.repository, tag);
  // Everything that can be checked locally is, before the first request.
  if (!IsValidTag(tag)) return Error(Errc::kInvalidArgument, fmt::format("push to {}: invalid tag", where));
  // It becomes a Content-Type header: one printable token with a '/'.
  if (media_type.find('/') == std::string::npos ||
      !std::all_of(media_type.begin(), media_type.end(), [](char c) { return c > ' ' && c < 0x7f; })) {
    return Error(Errc::kInvalidArgument, fmt::format("push to {}: invalid manifest media type", where));
  }
  if (manifest.size() > kMaxManifestBytes) {
    return Error(Errc::kTooBig, fmt::format("push to {}: the manifest is {} bytes, over the {} bytes ucrfs reads",
                                            where, manifest.size(), kMaxManifestBytes));
  }
  for (const auto& b : blobs) {
    Status st = CheckBlob(b);
    if (!st.ok()) return st.error().Wrap(fmt::format("push to {}", where));
  }

  UCRFS_ASSIGN(auto client, RegistryClient::Create(n.registry, n.repository, opts, RegistryClient::Access::kPush));
  UCRFS_TRY(client->Ping());
  std::set<Digest> done;
  for (const auto& b : blobs) {
    if (!done.insert(b.desc.digest).second) continue;
    UCRFS_ASSIGN(bool present, client->HasBlob(b.desc.digest));
    if (present) {
      spdlog::debug("{}/{} already has blob {}", n.registry, n.repository, b.desc.digest.str());
      continue;
    }
    UCRFS_TRY(client->PushBlob(b.desc, b.data));
  }
  return client->PushManifest(tag, manifest, media_type);
}

}  // namespace ucrfs::fetch
