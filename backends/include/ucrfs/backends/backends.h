// The classic rootfs backends (Mesos' provisioner: overlay, copy, bind) over
// the store's layer index: a container gets a real directory tree instead of
// the read-only FUSE mount.
//
//  * overlay: every layer unpacked once into <store>/unpacked/<alg>/<hex>/
//    (whiteouts in overlayfs form), shared by every rootfs; the rootfs is an
//    overlay of them, writable through an upper dir in `scratch`.
//  * copy:    the layers applied in order into the rootfs itself, through
//    fd-relative calls that never follow a symlink, so a hostile layer cannot
//    write outside it.
//  * bind:    a single-layer image's unpacked layer, bind-mounted read-only.
// Layer bytes come from the index (LayerReader), never from re-reading tars.
// See docs/backends.md.
#pragma once

#include <string>
#include <string_view>

#include "ucrfs/common/error.h"
#include "ucrfs/index/layers.h"
#include "ucrfs/index/store.h"

namespace ucrfs::backends {

enum class Kind { kFuse, kOverlay, kCopy, kBind };

// "fuse", "overlay", "copy", "bind"; anything else is kInvalidArgument.
Result<Kind> ParseKind(std::string_view name);
std::string_view Name(Kind kind);

struct RootfsRequest {
  index::Store* store = nullptr;  // the image is pulled and its layers indexed (PrepareImage done)
  index::ImageRecord image;
  std::string rootfs;   // existing empty directory: becomes the rootfs
  std::string scratch;  // existing directory for this rootfs' upper/work dirs and lower links (overlay)
  bool writable = true; // overlay: upper+work in scratch; bind is always read-only
  // How lazy layers (eStargz, zstd:chunked, gzip with a ucrfs index) fetch
  // their bytes; without an opener such a layer is refused.
  index::LazyOptions lazy;
};

// Fills or mounts req.rootfs. kFuse is kUnsupported here (the CLI owns the
// FUSE server). On failure nothing is left mounted and the rootfs is empty
// again; unpacked layers that completed stay in the store for the next try.
Status Provision(Kind kind, const RootfsRequest& req);

// Undoes Provision: unmounts every mount at or below `rootfs` (lazily,
// MNT_DETACH, when one is busy), empties `rootfs` without crossing into
// another filesystem, and empties `scratch`. Both directories themselves stay
// (their caller made them). Succeeds while a process holds a file open or
// has its working directory in the rootfs. Nothing there is not an error.
Status Destroy(Kind kind, const std::string& rootfs, const std::string& scratch);

// Where the overlay/bind backends keep a layer unpacked, and the function
// that puts it there (once; concurrent callers are safe: each writes a
// temporary directory, the first rename wins).
std::string UnpackedPath(const index::Store& store, const Digest& layer);
Result<std::string> EnsureUnpacked(index::Store& store, const fetch::Descriptor& layer,
                                   const index::LazyOptions& lazy);

}  // namespace ucrfs::backends
