// Paths inside a root filesystem, resolved as if it were "/": every symlink,
// absolute or "..", stays inside it (openat2 RESOLVE_IN_ROOT), so an image
// cannot make the host open, create or mount over its own files.
#pragma once

#include <string>

#include "ucrfs/common/error.h"
#include "ucrfs/common/file.h"

namespace ucrfs::isolator {

// An O_PATH|O_DIRECTORY fd of a directory.
Result<UniqueFd> OpenDir(const std::string& path);

// Opens `path` (absolute or relative, in the container's view) under root_fd
// with `flags` (O_CLOEXEC added). ENOENT is kNotFound.
Result<UniqueFd> OpenInRoot(int root_fd, const std::string& path, int flags, unsigned mode = 0);

// The whole content of a file in the root; a missing file is kNotFound.
Result<std::string> ReadInRoot(int root_fd, const std::string& path);

// mkdir -p under the root (mode for the directories it makes); returns an
// O_PATH fd of the directory. A component that exists and is not a
// directory is kInvalidArgument naming it.
Result<UniqueFd> MakeDirsInRoot(int root_fd, const std::string& path, unsigned mode = 0755);

// Makes `path` exist as a mount point under the root: a directory, or an
// empty regular file when `file` (its parents as directories); returns its
// O_PATH fd. Something already there of the other kind is an error.
Result<UniqueFd> MakeMountPointInRoot(int root_fd, const std::string& path, bool file);

// "/proc/self/fd/N": what mount(2) takes to mount on exactly what fd names.
std::string FdPath(int fd);

}  // namespace ucrfs::isolator
