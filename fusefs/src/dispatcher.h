// Dispatcher: what each FUSE operation does, without libfuse.
//
// server.cc is thin glue: it unpacks a libfuse request, calls one Dispatcher
// method, and turns the Result into exactly one reply. Everything that can be
// decided without a kernel (errno mapping, negative entries, directory
// offsets, the xattr size protocol, the read-only rules) lives here so that
// unit tests reach it directly.
//
// Thread safety: every method may be called from any worker thread at once.
// The only mutable state is the directory-parent map (a short mutex, never
// held across a Tree call) and each DirHandle's lazily loaded listing.
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ucrfs/common/error.h"
#include "ucrfs/index/tree.h"

namespace ucrfs::fusefs {

// The kind of request an error answers; the errno depends on it (ENOENT from
// lookup is ENODATA from getxattr).
enum class Op {
  kLookup,
  kGetAttr,
  kReadLink,
  kOpenDir,
  kReadDir,
  kOpen,
  kRead,
  kGetXattr,
  kListXattr,
  kStatFs,
  kModify,  // anything that would change the tree: always EROFS
};

// THE place where an Error becomes an errno. Never returns 0 or less.
int ErrnoFor(Op op, const Error& error);

// Converts tree attributes to what stat(2) shows: atime = ctime = mtime,
// st_blocks in 512-byte units, st_blksize 4096.
struct stat ToStat(const index::Attr& attr);

// A directory opened by opendir. The listing is read from the Tree on the
// first readdir, not at opendir: the kernel caches listings (cache_readdir),
// and a cached directory is still opened but never read again.
class DirHandle {
 public:
  DirHandle(uint64_t ino, uint64_t parent) : ino_(ino), parent_(parent) {}
  DirHandle(const DirHandle&) = delete;
  DirHandle& operator=(const DirHandle&) = delete;

  uint64_t ino() const { return ino_; }
  uint64_t parent() const { return parent_; }

 private:
  friend class Dispatcher;
  const uint64_t ino_;
  const uint64_t parent_;
  std::mutex mu_;  // guards entries_ (loaded once, immutable afterwards)
  std::shared_ptr<const std::vector<index::DirEntry>> entries_;
};

// One directory entry as readdir(plus) hands it to the kernel.
struct DirItem {
  const std::string& name;  // NUL-terminated (libfuse wants a C string)
  const index::Attr& attr;  // for "." and "..": only ino and mode are set
  // The inode readdirplus hands to the kernel as looked up: 0 for "." and
  // "..", whose lookup counts readdirplus must not touch (libfuse docs).
  uint64_t entry_ino;
  // What the kernel passes back as `off` to continue after this item.
  // Item i (0 = ".", 1 = "..", 2.. = entries) has next_offset i + 1, so an
  // offset is a stable index that survives telldir/seekdir.
  uint64_t next_offset;
};

// The answer to getxattr/listxattr: with size 0 the kernel asks for the
// length only; otherwise for the data, which must fit `size`.
struct XattrReply {
  bool size_only = false;
  size_t size = 0;   // length of the value or list
  std::string data;  // the value, or the names each followed by NUL
};

struct OpenReply {
  // Reply ENOSYS: "opens need no message" (FUSE_CAP_NO_OPEN_SUPPORT). The
  // kernel then opens in-kernel with FOPEN_KEEP_CACHE for good.
  bool zero_message = false;
  bool keep_cache = true;
};

struct Timeouts {
  double entry_s = 86400;
  double attr_s = 86400;
};

class Dispatcher {
 public:
  Dispatcher(std::shared_ptr<index::Tree> tree, Timeouts timeouts);

  const Timeouts& timeouts() const { return timeouts_; }
  index::Tree& tree() { return *tree_; }

  // Set once at init: whether opens may be answered with zero_message.
  void set_zero_message_open(bool on) { zero_message_open_.store(on, std::memory_order_relaxed); }
  void set_zero_message_opendir(bool on) { zero_message_opendir_.store(on, std::memory_order_relaxed); }
  bool zero_message_opendir() const { return zero_message_opendir_.load(std::memory_order_relaxed); }

  // An attr with ino 0 means "no such name": the glue replies a negative
  // entry, which the kernel caches for entry_timeout (the image never gains
  // a file), so a path miss costs one request per name, ever.
  Result<index::Attr> Lookup(uint64_t parent, std::string_view name);
  Result<index::Attr> GetAttr(uint64_t ino);
  Result<std::string> ReadLink(uint64_t ino);

  std::unique_ptr<DirHandle> OpenDir(uint64_t ino);
  // The handle readdir uses when there was no opendir (zero-message opendir:
  // the kernel sends readdir with fh 0). Shared per directory and kept in a
  // small cache, so a listing read over several readdir calls loads once.
  std::shared_ptr<DirHandle> SharedDir(uint64_t ino);
  // Calls emit for the items of `dir` from `offset` on, until emit returns
  // false (the reply buffer is full) or the listing ends. An error is only
  // possible before the first item (loading the listing).
  Status ReadDir(DirHandle& dir, uint64_t offset, const std::function<bool(const DirItem&)>& emit);

  // kUnsupported (EROFS) for any access mode but O_RDONLY, or O_TRUNC.
  Result<OpenReply> Open(uint64_t ino, int flags);
  Result<size_t> Read(uint64_t ino, uint64_t offset, char* buf, size_t len);

  // kUnsupported (ENOSYS: the kernel stops asking) when the tree has no
  // xattrs at all; kTooBig (ERANGE) when the data does not fit `size`.
  Result<XattrReply> GetXattr(uint64_t ino, std::string_view name, size_t size);
  Result<XattrReply> ListXattr(uint64_t ino, size_t size);

  struct statvfs StatFs();

  // Every modifying operation answers this.
  Error Modify(std::string_view what) const;

 private:
  void RememberParent(uint64_t dir, uint64_t parent);
  uint64_t ParentOf(uint64_t dir);

  const std::shared_ptr<index::Tree> tree_;
  const Timeouts timeouts_;
  std::atomic<bool> zero_message_open_{false};
  std::atomic<bool> zero_message_opendir_{false};

  static constexpr size_t kSharedDirs = 256;
  std::mutex dirs_mu_;
  std::unordered_map<uint64_t, std::shared_ptr<DirHandle>> dirs_;  // guarded by dirs_mu_

  // Directory -> its parent, for "..". Tree has no parent query; a directory
  // reaches the kernel only through lookup or readdirplus of its parent, and
  // both pass through here first. Directories have exactly one parent.
  std::mutex parents_mu_;
  std::unordered_map<uint64_t, uint64_t> parents_;  // guarded by parents_mu_
};

}  // namespace ucrfs::fusefs
