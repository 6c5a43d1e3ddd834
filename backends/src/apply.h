// Writing layers into a directory through its fd: the copy backend's rootfs
// and the overlay/bind backends' unpacked layers.
//
// Every path is resolved one component at a time with openat(O_NOFOLLOW)
// under the root fd, and every call that creates, changes or removes names an
// entry relative to a directory fd so opened (mkdirat, symlinkat, linkat,
// mknodat, unlinkat, fchownat/fchmodat/utimensat with AT_SYMLINK_NOFOLLOW,
// fsetxattr on fds we created): a symlink a layer left behind is never
// followed, so nothing is ever written, changed or removed outside the root.
// A non-directory where a layer needs a directory is replaced by one (the
// Mesos "overwrite" case: `etc -> /host-etc`, then `etc/passwd`).
#pragma once

#include <sys/types.h>

#include <ctime>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ucrfs/common/error.h"
#include "ucrfs/common/file.h"
#include "ucrfs/index/layers.h"
#include "ucrfs/index/tar.h"

namespace ucrfs::backends {

enum class Whiteouts {
  // Apply them: `.wh.NAME` removes NAME, `.wh..wh..opq` empties its
  // directory, before the layer's own entries are written (whiteouts hide
  // lower layers only). For a rootfs made of all layers.
  kApply,
  // Convert them to overlayfs form after the layer's entries: `.wh.NAME` a
  // 0/0 character device NAME (unless the layer itself has NAME, which hides
  // the lower one already), `.wh..wh..opq` the xattr trusted.overlay.opaque=y
  // on its directory. For one layer unpacked on its own.
  kConvert,
};

class Applier {
 public:
  // `root` stays owned by the caller and open while the Applier is used.
  Applier(int root, Whiteouts mode);

  // Writes one layer's entries (in tar order), reading file bytes from
  // `reader`. `layer` names the layer in errors.
  Status ApplyLayer(const std::vector<index::TarEntry>& entries, index::LayerReader& reader,
                    const std::string& layer);
  // Sets every directory's mtime: writing into a directory changes it, so
  // they are set once everything is in place.
  Status Finish();

 private:
  enum class Create { kNo, kMissing, kReplace };
  // The directory at the first n components of `parts`. kNo: an invalid fd
  // when a component is missing or not a directory; kMissing: missing ones
  // are made (0755 root, mtime 0), an invalid fd at a non-directory; kReplace: a non-directory in the
  // way is removed and replaced by a directory.
  Result<UniqueFd> OpenDir(const std::vector<std::string_view>& parts, size_t n, Create create);
  Status Entry(const index::TarEntry& e, index::LayerReader& reader);
  Status Whiteout(const index::TarEntry& e);
  Status WriteFile(int dir, const std::string& name, const index::TarEntry& e, index::LayerReader& reader);
  Status SetMeta(int dir, const std::string& name, int fd, const index::TarEntry& e);
  // Removes dir/name (a whole tree for a directory) and forgets the mtimes
  // recorded below `path`.
  Status Remove(int dir, const std::string& name, const std::string& path);
  void Forget(const std::string& path, bool keep_self);

  int root_;
  dev_t dev_ = 0;
  Whiteouts mode_;
  std::string layer_;
  std::vector<char> buf_;
  std::map<std::string, timespec> dir_times_;  // relative path ("" = root) -> mtime
};

// Removes name under dir (recursively for a directory) without following
// symlinks; refuses to descend into a directory of another filesystem than
// `dev` (something mounted there). A missing name is not an error.
Status RemoveAt(int dir, const std::string& name, dev_t dev, const std::string& what);
// Removes everything in the directory `dir` (same rules).
Status EmptyDirFd(int dir, dev_t dev, const std::string& what);
// EmptyDirFd of a path; a missing directory is not an error.
Status EmptyDir(const std::string& path);

}  // namespace ucrfs::backends
