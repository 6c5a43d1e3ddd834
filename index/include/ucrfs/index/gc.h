// The image cache: removing images, and collecting what nothing uses.
//
// What is in use: every image record the store keeps, and every image a live
// mount of the store serves (recorded under <store>/mounts/, see
// MountRecord). `gc` removes image records that no live mount uses (all of
// them, or the least recently used ones until the store is under a size),
// then sweeps everything no remaining record reaches: blobs, decoded zstd
// copies, layer indexes, merged trees, cached chunks and spans. It never
// races a pull: pulls hold the store's lock shared, gc takes it exclusively
// or refuses.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ucrfs/common/error.h"
#include "ucrfs/index/store.h"

namespace ucrfs::index {

// A mount of the store, recorded for as long as its server runs.
struct MountRecord {
  std::string mountpoint;
  std::string image;  // image key
  Digest manifest = Digest::Sha256Of("");
  int64_t pid = 0;
  std::string backend = "fuse";
};

// <store>/mounts/<sha256(mountpoint)>.json, written atomically.
Status RecordMount(const Store& store, const MountRecord& m);
Status ForgetMount(const Store& store, const std::string& mountpoint);
// Every record, and whether it is live (its server runs, or its mountpoint
// is still mounted).
struct MountState {
  MountRecord record;
  bool live = false;
};
Result<std::vector<MountState>> ListMounts(const Store& store);

// The name under <store>/unpacked/chain/ of the first `n` layers of
// `layers` unpacked as one (the overlay backend's copy of a layer that
// hardlinks into the layers below it): the hex sha256 of their digests.
std::string UnpackedChainName(const std::vector<fetch::Descriptor>& layers, size_t n);

struct GcOptions {
  std::vector<std::string> keep;  // image keys never removed
  // 0: remove every image record no live mount uses (and not kept); else only
  // the least recently used of those, until the store holds at most this.
  uint64_t max_size = 0;
  bool remove_images = true;  // false: only sweep what no record reaches
};

struct GcResult {
  std::vector<std::string> images_removed;
  uint64_t files_removed = 0;
  uint64_t bytes_freed = 0;
  uint64_t layers_removed = 0;  // layer indexes
  uint64_t trees_removed = 0;
  uint64_t size_after = 0;      // bytes of blobs, decoded copies and chunks left
};

// kBusy when a pull holds the store (try again later).
Result<GcResult> CollectGarbage(Store& store, const GcOptions& opts);

// Removes one image record (then sweeps what only it used). kNotFound when the
// store has no such image; kInvalidArgument when a live mount serves it.
Result<GcResult> RemoveImage(Store& store, const std::string& key);

// Bytes of blobs, decoded copies and cached chunks in the store.
uint64_t StoreSize(const Store& store);

}  // namespace ucrfs::index
