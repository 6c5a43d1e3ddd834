// A read-only filesystem tree: what the FUSE server serves. The merged image
// tree implements it over the store; tests implement it in memory.
//
// Inode numbers are stable for the life of the tree; the root is 1. All
// methods are thread-safe. Metadata methods never touch the network.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "ucrfs/common/error.h"

namespace ucrfs::index {

inline constexpr uint64_t kRootIno = 1;

struct Attr {
  uint64_t ino = 0;
  uint32_t mode = 0;  // S_IFMT type | permission bits (07777)
  uint32_t nlink = 1;
  uint64_t uid = 0, gid = 0;
  uint64_t size = 0;
  uint64_t rdev = 0;  // makedev(major, minor) for device nodes
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
};

struct DirEntry {
  std::string name;
  Attr attr;
};

class Tree {
 public:
  virtual ~Tree() = default;
  // kNotFound for an unknown inode.
  virtual Result<Attr> GetAttr(uint64_t ino) = 0;
  // kNotFound when `name` is not in directory `parent`; kInvalidArgument
  // (ENOTDIR) when parent is not a directory.
  virtual Result<Attr> Lookup(uint64_t parent, std::string_view name) = 0;
  // All entries of a directory, sorted by name, without "." and "..".
  virtual Result<std::vector<DirEntry>> ReadDir(uint64_t ino) = 0;
  virtual Result<std::string> ReadLink(uint64_t ino) = 0;
  // kNotFound (ENODATA) when the inode has no such attribute.
  virtual Result<std::string> GetXattr(uint64_t ino, std::string_view name) = 0;
  virtual Result<std::vector<std::string>> ListXattr(uint64_t ino) = 0;
  // Whether any inode has an xattr (if not, xattr calls answer ENOSYS once and
  // the kernel stops asking).
  virtual bool HasXattrs() = 0;
  // Reads file content; returns fewer than len bytes only at end of file.
  virtual Result<size_t> Read(uint64_t ino, uint64_t offset, char* buf, size_t len) = 0;
  // Totals for statfs.
  virtual uint64_t InodeCount() = 0;
  virtual uint64_t TotalBytes() = 0;
};

}  // namespace ucrfs::index
