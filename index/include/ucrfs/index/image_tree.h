// The merged image tree: an image's layers applied in order with OCI
// whiteout semantics, computed once per manifest and stored, then served
// through the Tree interface.
//
// Merge rules (image-spec layer.md, and Mesos' backends):
//  * `.wh.NAME` removes NAME (file or whole directory) of lower layers;
//  * `.wh..wh..opq` removes every lower-layer entry of its directory, but not
//    entries its own layer adds, whichever side of the marker they are on;
//  * an entry replaces whatever the path held before; a directory entry over
//    an existing directory only updates its metadata and keeps its contents;
//  * a hardlink shares its target's inode (same layer or a lower one);
//  * parents missing from a layer are created as directories (0755, root).
// Hostile content (a whiteout of "..", a hardlink to a missing target, a
// name over 255 bytes) is kMalformed naming the layer and the entry.
#pragma once

#include <cstdint>
#include <memory>

#include "ucrfs/index/layers.h"
#include "ucrfs/index/store.h"
#include "ucrfs/index/tree.h"

namespace ucrfs::index {

struct TreeRecord {
  uint64_t id = 0;
  uint64_t inodes = 0;
  uint64_t bytes = 0;  // sum of regular file sizes (each inode once)
  bool has_xattrs = false;
};

// Indexes every layer of the image that is not indexed yet, then builds and
// stores its merged tree unless it exists. The image's blobs must be in the
// store (pulled). Idempotent; safe against concurrent callers.
Result<TreeRecord> PrepareImage(Store& store, const ImageRecord& image);

Result<std::optional<TreeRecord>> FindTree(const Store& store, const Digest& manifest);

// The tree of a prepared image, read from the store. `lazy` tells lazy
// layers how to fetch (its opener gives them the image's source).
Result<std::shared_ptr<Tree>> OpenTree(std::shared_ptr<Store> store, const ImageRecord& image,
                                       LazyOptions lazy = {});

}  // namespace ucrfs::index
