// ucrfs indexes in registries: what makes an unmodified gzip image mountable
// lazily on any machine (docs/lazy.md).
//
// `ucrfs index push IMAGE` reads each gzip layer once and writes its layer
// index: every tar entry (with where its bytes are in the decoded stream),
// zran checkpoints every `span` decoded bytes, and the sha256 of each
// compressed span between two checkpoints. The checkpoints' 32 KiB windows,
// most of an index's bytes, go to a separate windows blob per layer (each
// window one zstd frame, its place and sha256 in the layer index), so that a
// mount fetches only the small layer indexes and a read the one window its
// inflation starts from. The layer indexes, windows blobs (and optionally a
// read trace) are pushed to the image's repository as an OCI artifact: an
// image manifest whose `subject` is the image manifest, tagged
// IndexTag(manifest digest) so that registries without the referrers API
// (distribution 2.8) serve it too.
//
// A lazy pull looks the tag up, checks the artifact's subject, each blob's
// digest, and every field of each layer index (paths by the tar rules,
// extents and checkpoints inside the layer), then indexes those layers from
// it: a read fetches only the compressed spans (and window) it needs, each
// checked against its recorded digest before use. An index that is missing or does not check
// out leaves the layer to the ordinary download.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ucrfs/fetch/source.h"
#include "ucrfs/index/gzip_index.h"
#include "ucrfs/index/layers.h"
#include "ucrfs/index/store.h"
#include "ucrfs/index/tar.h"

namespace ucrfs::index {

inline constexpr char kIndexArtifactType[] = "application/vnd.ucrfs.index.v1";
inline constexpr char kIndexConfigMediaType[] = "application/vnd.ucrfs.index.config.v1+json";
inline constexpr char kLayerIndexMediaType[] = "application/vnd.ucrfs.layer-index.v1+zstd";
inline constexpr char kLayerWindowsMediaType[] = "application/vnd.ucrfs.layer-windows.v1";
inline constexpr char kTraceMediaType[] = "application/vnd.ucrfs.trace.v1+json";
// On each layer-index and windows descriptor: the digest of the layer it indexes.
inline constexpr char kLayerDigestAnnotation[] = "io.ucrfs.layer.digest";
// `index push`'s span when none is given: decoded bytes between checkpoints
// (docs/benchmarks.md: 128 KiB and 256 KiB start the same, 1 MiB is slower
// where bandwidth is short; 256 KiB keeps the windows blob half the size).
inline constexpr uint64_t kDefaultIndexSpan = 256 << 10;

// "sha256-<hex>.ucrfs" for the manifest sha256:<hex>.
std::string IndexTag(const Digest& manifest);

// Where a checkpoint's window is in the layer's windows blob: `size` bytes
// at `offset`, one zstd frame of `length` bytes, with the sha256 of the
// compressed bytes. length 0: the checkpoint has no window (a member start),
// and nothing is stored.
struct WindowRef {
  uint64_t length = 0;
  uint64_t offset = 0, size = 0;
  Digest digest = Digest::Sha256Of("");
};

// One gzip layer's index.
struct LayerIndex {
  Digest layer = Digest::Sha256Of("");
  uint64_t layer_size = 0;    // compressed
  uint64_t decoded_size = 0;  // of the tar stream
  std::vector<TarEntry> entries;
  std::vector<Checkpoint> checkpoints;
  std::vector<Digest> span_digests;  // one per checkpoint (see SpanRange)
  // Once SplitWindows ran (and always when decoded): the checkpoints carry no
  // window; each is in the windows blob (digest and size) at windows[i].
  Digest windows_blob = Digest::Sha256Of("");
  uint64_t windows_size = 0;
  std::vector<WindowRef> windows;
};

// Moves the checkpoints' windows out of `index` into a windows blob, which
// it returns: each window compressed on its own, one after the other in
// checkpoint order (windows of adjacent spans are adjacent).
std::string SplitWindows(LayerIndex& index);

// The compressed bytes span i needs: from checkpoint i (the byte before it
// when it starts mid-byte) to checkpoint i+1, or the end of the blob.
struct SpanRange {
  uint64_t offset = 0, size = 0;
};
SpanRange SpanOf(const std::vector<Checkpoint>& cps, size_t i, uint64_t layer_size);

// The layer index blob: zstd-compressed records (docs/lazy.md), version 2.
// The windows must have been split out (SplitWindows).
std::string EncodeLayerIndex(const LayerIndex& index);
// Decodes and checks a layer index blob for `layer`: kMalformed naming the
// first thing wrong; kUnsupported for another version (version 1, with the
// windows inline, is no longer read: such a layer is downloaded instead).
Result<LayerIndex> DecodeLayerIndex(std::string_view blob, const fetch::Descriptor& layer);

// Indexes a gzip layer whose blob is in the store, checkpoints every `span`
// decoded bytes (with their windows). Does not touch the store's own index.
Result<LayerIndex> BuildLayerIndex(const Store& store, const fetch::Descriptor& layer, uint64_t span);

// Indexes a layer from its layer index as a lazy gzip layer (entries,
// checkpoints, spans and window places in one transaction), unless it is
// indexed already.
Result<LayerRecord> ImportLayerIndex(Store& store, const fetch::Descriptor& layer, const LayerIndex& index);

struct ArtifactBlob {
  fetch::Descriptor desc;
  std::string data;
};
struct IndexArtifact {
  std::vector<ArtifactBlob> blobs;  // config first, then each layer's index and windows, then the trace
  std::string manifest;
  std::string media_type;  // of the manifest
};

// The artifact for an image whose gzip layers are in the store. trace: a
// read trace (trace.h) to push with it. kInvalidArgument when the image has
// no plain gzip layer (eStargz and zstd:chunked layers index themselves).
Result<IndexArtifact> BuildIndexArtifact(const Store& store, const ImageRecord& image, uint64_t span,
                                         const std::optional<std::string>& trace);

// What a registry has for an image: the layer-index and windows descriptors
// by layer digest, and the trace descriptor.
struct RemoteIndex {
  Digest artifact = Digest::Sha256Of("");
  std::map<std::string, fetch::Descriptor> layers;   // by layer digest string
  std::map<std::string, fetch::Descriptor> windows;  // by layer digest string
  std::optional<fetch::Descriptor> trace;
};

// Looks up IndexTag(manifest) in the source. nullopt when there is none; an
// error when the artifact is there but malformed or about another manifest.
Result<std::optional<RemoteIndex>> FindRemoteIndex(fetch::ImageSource& source, const fetch::ManifestBlob& manifest);

// Fetches one blob of the artifact into memory, verified (at most max_size).
Result<std::string> FetchArtifactBlob(fetch::ImageSource& source, const fetch::Descriptor& desc,
                                      uint64_t max_size = 1ull << 30);

}  // namespace ucrfs::index
