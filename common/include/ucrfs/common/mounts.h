// The mount table (/proc/self/mountinfo) and processes, read without ever
// touching a mount itself: a stat of a mountpoint whose FUSE server hangs
// would hang the caller.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace ucrfs {

struct MountEntry {
  std::string mount_point;  // unescaped
  std::string fstype;       // e.g. "overlay", "fuse.ucrfs"
};

// Every mount of this process' mount namespace, in table order (a later
// entry at the same mount point is stacked on an earlier one).
std::vector<MountEntry> MountTable();

// `path` as the mount table spells it: absolute, normal, the parent's
// symlinks resolved, the last component not (resolving it would stat it).
std::string MountTablePath(const std::string& path);

// Whether something is mounted at `path` (MountTablePath of it).
bool IsMountPoint(const std::string& path);

// The mount points at or below `root` (MountTablePath of it), deepest first.
std::vector<std::string> MountsUnder(const std::string& root);

// Whether `pid` runs and is not a zombie (an exited child not yet reaped
// has exited all the same).
bool ProcessRunning(pid_t pid);

}  // namespace ucrfs
