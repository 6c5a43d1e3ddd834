// MemoryTree: an index::Tree held in memory, built programmatically, for
// tests of anything that serves or walks a tree (fusefs, backends).
//
//   auto t = std::make_shared<ucrfs::harness::MemoryTree>();
//   t->AddDir("/etc", 0755);
//   t->AddFile("/etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0644);
//   t->AddSymlink("/bin", "usr/bin");
//   t->SetXattr("/etc/passwd", "user.x", "1");
//
// Paths are absolute, '/'-separated, and their parents must exist; names are
// bytes (any but '/' and NUL). Building a bad tree is a bug in the test and
// aborts with a message. Inode numbers are given in creation order from 1
// (the root). Directory nlink is 2 + subdirectories; hard links share one
// inode and count in its nlink.
//
// Thread safety: all methods may be called concurrently (a reader-writer
// lock); Tree methods also count calls, and errors can be injected per inode
// so tests can reach failure paths and observe kernel caching.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "ucrfs/common/error.h"
#include "ucrfs/index/tree.h"

namespace ucrfs::harness {

// Owner and time of a new node.
struct Meta {
  uint64_t uid = 0, gid = 0;
  int64_t mtime_sec = 1700000000;
  uint32_t mtime_nsec = 0;
};

class MemoryTree : public index::Tree {
 public:
  // An empty root directory, mode 0755.
  MemoryTree();
  ~MemoryTree() override;

  // Each returns the new inode number. `perm` is the permission bits
  // (07777, setuid/setgid/sticky included).
  uint64_t AddDir(std::string_view path, uint32_t perm = 0755, Meta meta = {});
  uint64_t AddFile(std::string_view path, std::string content, uint32_t perm = 0644, Meta meta = {});
  uint64_t AddSymlink(std::string_view path, std::string target, Meta meta = {});
  // type: S_IFCHR, S_IFBLK, S_IFIFO or S_IFSOCK; rdev from makedev().
  uint64_t AddSpecial(std::string_view path, uint32_t type, dev_t rdev = 0, uint32_t perm = 0644, Meta meta = {});
  // A second name for the (non-directory) inode at `existing`.
  uint64_t AddHardlink(std::string_view path, std::string_view existing);
  void SetXattr(std::string_view path, std::string name, std::string value);
  void SetMeta(std::string_view path, Meta meta);
  // The inode at `path`, or 0.
  uint64_t InodeOf(std::string_view path) const;

  // Every Tree call naming `ino` (as the inode, or as the parent of a lookup)
  // fails with `code` until ClearError.
  void InjectError(uint64_t ino, Errc code);
  void ClearError(uint64_t ino);

  // Calls served, per method; reads also per inode.
  struct Counters {
    std::atomic<uint64_t> getattr{0}, lookup{0}, readdir{0}, readlink{0}, getxattr{0}, listxattr{0}, hasxattrs{0},
        read{0};
  };
  const Counters& counters() const { return counters_; }
  uint64_t ReadsOf(uint64_t ino) const;

  // index::Tree
  Result<index::Attr> GetAttr(uint64_t ino) override;
  Result<index::Attr> Lookup(uint64_t parent, std::string_view name) override;
  Result<std::vector<index::DirEntry>> ReadDir(uint64_t ino) override;
  Result<std::string> ReadLink(uint64_t ino) override;
  Result<std::string> GetXattr(uint64_t ino, std::string_view name) override;
  Result<std::vector<std::string>> ListXattr(uint64_t ino) override;
  bool HasXattrs() override;
  Result<size_t> Read(uint64_t ino, uint64_t offset, char* buf, size_t len) override;
  uint64_t InodeCount() override;
  uint64_t TotalBytes() override;

 private:
  struct Node {
    uint64_t ino = 0;
    uint32_t mode = 0;
    uint32_t links = 1;  // names; a directory's nlink is computed
    Meta meta;
    dev_t rdev = 0;
    std::string data;  // file content or symlink target
    std::map<std::string, uint64_t, std::less<>> children;
    std::map<std::string, std::string, std::less<>> xattrs;
    std::optional<Errc> error;
    std::atomic<uint64_t> reads{0};
  };

  // REQUIRES: mu_ held.
  Node* Find(uint64_t ino) const;
  Node* Resolve(std::string_view path) const;
  uint64_t AddNode(std::string_view path, uint32_t mode, Meta meta, std::string data, dev_t rdev);
  index::Attr AttrOf(const Node& n) const;
  Result<Node*> Get(uint64_t ino) const;  // checks injected errors

  mutable std::shared_mutex mu_;
  std::vector<std::unique_ptr<Node>> nodes_;  // guarded by mu_; nodes_[ino - 1]
  Counters counters_;
};

}  // namespace ucrfs::harness
