// `ucrfs index push`: builds an image's ucrfs index and pushes it beside the
// image (remote_index.h), so that any machine mounts its gzip layers lazily.
#include <iostream>

#include <fmt/format.h>

#include "commands.h"
#include "ucrfs/common/file.h"
#include "ucrfs/common/log.h"
#include "ucrfs/fetch/push.h"
#include "ucrfs/index/pull.h"
#include "ucrfs/index/remote_index.h"
#include "ucrfs/index/trace.h"

namespace ucrfs::cli {

Status IndexPush(const GlobalFlags& g, const std::string& image, const IndexPushFlags& f) {
  if (f.span < (64 << 10) || f.span > (1ull << 30)) {
    return Error(Errc::kInvalidArgument, "--span must be between 64 KiB and 1 GiB");
  }
  std::optional<std::string> trace;
  if (!f.trace.empty()) {
    UCRFS_ASSIGN(std::string body, ReadFile(f.trace));
    if (auto parsed = index::ParseTrace(body); !parsed.ok()) return parsed.error().Wrap("--trace " + f.trace);
    trace = std::move(body);
  }
  UCRFS_ASSIGN(auto given, fetch::ImageRef::Parse(image));
  UCRFS_ASSIGN(auto opts, MakeSourceOptions(g));
  UCRFS_ASSIGN(auto ref, fetch::EffectiveRef(given, opts));
  if (ref.transport != fetch::Transport::kDocker) {
    return Error(Errc::kUnsupported, fmt::format("{}: index push needs an image in a registry", ref.str()));
  }
  UCRFS_ASSIGN(auto platform, WantedPlatform(g));
  UCRFS_ASSIGN(auto store, index::Store::Open(g.store, index::Store::Mode::kReadWrite));
  // The layers are needed whole to index them: a full pull (reusing what
  // the store holds).
  UCRFS_ASSIGN(auto source, fetch::OpenSource(ref, opts));
  index::PullOptions po;
  po.platform = platform;
  UCRFS_ASSIGN(auto pulled, index::Pull(*store, *source, ref.str(), po));
  UCRFS_ASSIGN(auto artifact, index::BuildIndexArtifact(*store, pulled.record, f.span, trace));
  std::vector<fetch::PushBlob> blobs;
  uint64_t bytes = 0;
  size_t layer_indexes = 0;
  for (auto& b : artifact.blobs) {
    bytes += b.data.size();
    layer_indexes += b.desc.media_type == index::kLayerIndexMediaType ? 1 : 0;
    blobs.push_back(fetch::PushBlob{b.desc, std::move(b.data)});
  }
  const std::string tag = index::IndexTag(pulled.record.manifest_digest);
  UCRFS_ASSIGN(Digest pushed, fetch::PushArtifact(ref, opts, blobs, artifact.manifest, artifact.media_type, tag));
  spdlog::info("pushed the ucrfs index of {} ({} layer indexes with their windows, {} bytes) as {}", ref.str(),
               layer_indexes, bytes, tag);
  std::cout << pushed.str() << " " << tag << std::endl;
  return Ok();
}

}  // namespace ucrfs::cli
