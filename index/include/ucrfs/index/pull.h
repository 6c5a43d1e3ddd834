// Pulling an image into the store: resolve, fetch and verify every blob,
// commit. All or nothing: on any failure the store is left as it was.
#pragma once

#include <string>

#include "ucrfs/fetch/appc.h"
#include "ucrfs/fetch/source.h"
#include "ucrfs/index/store.h"

namespace ucrfs::index {

struct PullOptions {
  fetch::Platform platform = fetch::Platform::Host();
  int parallel = 4;  // layers downloaded, or lazy layers indexed, at once
  // Index eStargz / zstd:chunked layers from their TOC instead of
  // downloading them (their bytes are fetched when first read).
  bool lazy = false;
  // With lazy: index plain gzip layers from the image's ucrfs index when its
  // registry has one (remote_index.h), instead of downloading them.
  bool remote_index = true;
};

struct PullResult {
  ImageRecord record;
  fetch::ResolvedImage image;
  int blobs_fetched = 0;    // blobs downloaded by this pull
  int blobs_reused = 0;     // blobs the store already had
  int layers_lazy = 0;      // layers indexed from their TOC or a ucrfs index, not downloaded
  int layers_remote_index = 0;  // of those, from a ucrfs index
  uint64_t bytes_fetched = 0;
};

// Pulls the image `source` serves into `store` under `key`
// (fetch::ImageRef::str()). Layers the store already holds are not fetched.
Result<PullResult> Pull(Store& store, fetch::ImageSource& source, const std::string& key, const PullOptions& opts);

// Pulls an Appc image (fetch/appc.h) by simple discovery under
// opts.appc_discovery_prefix: the image and, recursively, the dependencies
// its own manifest names, each verified against the imageID that names it
// (if any) and stored as its uncompressed tar under sha512:<id>. The record's
// layers are the dependencies (depth-first, each image once, where it first
// appears) beneath the image; its config is the image's manifest
// (kAppcManifestMediaType); its manifest a small document of ucrfs
// (media::kAppcImage) naming all of them, so that two resolutions of one
// name to different dependencies get different merged trees. `ref` has its
// defaults (EffectiveRef). Refuses an image with a pathWhitelist.
Result<PullResult> PullAppc(Store& store, const fetch::AppcRef& ref, const std::string& key,
                            const fetch::SourceOptions& opts);

// Record of an image resolved but not pulled (what `inspect` shows of an
// image the store does not hold).
ImageRecord MakeRecord(const std::string& key, const fetch::ResolvedImage& image);

}  // namespace ucrfs::index
