#include "dispatcher.h"

#include <fcntl.h>

#include <cassert>
#include <cerrno>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace ucrfs::fusefs {
namespace {

constexpr uint32_t kBlockSize = 4096;

bool IsXattrOp(Op op) { return op == Op::kGetXattr || op == Op::kListXattr; }

// Synthesized attributes of "." and "..": readdir needs only the inode and
// the type; readdirplus does not pass them to the kernel as entries.
index::Attr DotAttr(uint64_t ino) {
  index::Attr a;
  a.ino = ino;
  a.mode = S_IFDIR;
  return a;
}

const std::string kDot = ".";
const std::string kDotDot = "..";

Result<XattrReply> SizedReply(std::string data, size_t size, std::string_view what) {
  XattrReply r;
  r.size = data.size();
  if (size == 0) {
    r.size_only = true;
    return r;
  }
  if (data.size() > size) {
    return Error(Errc::kTooBig,
                 fmt::format("{} is {} bytes, larger than the {}-byte buffer", what, data.size(), size));
  }
  r.data = std::move(data);
  return r;
}

}  // namespace

int ErrnoFor(Op op, const Error& error) {
  int err = EIO;
  if (op == Op::kModify) {
    // The mount is read-only whatever made the request fail.
    err = EROFS;
  } else {
    switch (error.code()) {
      case Errc::kNotFound:
        // getxattr of a name the inode does not carry is ENODATA, not ENOENT.
        err = op == Op::kGetXattr ? ENODATA : ENOENT;
        break;
      case Errc::kInvalidArgument:
        // The Tree's "not a directory" (lookup, readdir) vs "not a symlink"
        // (readlink: EINVAL, as readlink(2) says).
        err = (op == Op::kLookup || op == Op::kOpenDir || op == Op::kReadDir) ? ENOTDIR : EINVAL;
        break;
      case Errc::kUnsupported:
        // Only the dispatcher itself answers kUnsupported on purpose: ENOSYS
        // for xattrs on an image without any (the kernel then stops sending
        // them), EROFS for an open for writing. From a Tree it is a failure to
        // serve the data: EIO.
        if (IsXattrOp(op)) {
          err = ENOSYS;
        } else if (op == Op::kOpen) {
          err = EROFS;
        } else {
          err = EIO;
        }
        break;
      case Errc::kTooBig:
        err = IsXattrOp(op) ? ERANGE : E2BIG;
        break;
      case Errc::kCanceled:
        err = EINTR;
        break;
      case Errc::kBusy:
        err = EBUSY;
        break;
      // Errc has no timeout code yet (a timeout is kNetwork); when it gets
      // one, it maps to ETIMEDOUT here.
      case Errc::kIo:
      case Errc::kNetwork:
      case Errc::kServer:
      case Errc::kTls:
      case Errc::kUnauthorized:
      case Errc::kForbidden:
      case Errc::kDigestMismatch:
      case Errc::kMalformed:
      case Errc::kTooManyRequests:
      case Errc::kProtocol:
      case Errc::kInternal:
        err = EIO;
        break;
    }
  }
  assert(err > 0);
  return err;
}

struct stat ToStat(const index::Attr& a) {
  struct stat st {};
  st.st_ino = a.ino;
  st.st_mode = a.mode;
  st.st_nlink = a.nlink;
  st.st_uid = static_cast<uid_t>(a.uid);
  st.st_gid = static_cast<gid_t>(a.gid);
  st.st_size = static_cast<off_t>(a.size);
  // dev_t from makedev(); the FUSE protocol carries it in 32 bits, which is
  // the kernel's own encoding for major < 4096 and minor < 2^20 (its limits).
  st.st_rdev = a.rdev;
  st.st_blksize = kBlockSize;
  st.st_blocks = static_cast<blkcnt_t>((a.size + 511) / 512);
  st.st_mtim.tv_sec = a.mtime_sec;
  st.st_mtim.tv_nsec = a.mtime_nsec;
  // Layers record only mtime; ctime and atime repeat it so that they are
  // stable across mounts (a fresh "now" would differ on every mount).
  st.st_atim = st.st_mtim;
  st.st_ctim = st.st_mtim;
  return st;
}

Dispatcher::Dispatcher(std::shared_ptr<index::Tree> tree, Timeouts timeouts)
    : tree_(std::move(tree)), timeouts_(timeouts) {}

void Dispatcher::RememberParent(uint64_t dir, uint64_t parent) {
  std::lock_guard<std::mutex> lock(parents_mu_);
  parents_.try_emplace(dir, parent);
}

uint64_t Dispatcher::ParentOf(uint64_t dir) {
  if (dir == index::kRootIno) return index::kRootIno;
  std::lock_guard<std::mutex> lock(parents_mu_);
  auto it = parents_.find(dir);
  // Unreachable in practice (see parents_); "." is the least wrong answer.
  return it == parents_.end() ? dir : it->second;
}

Result<index::Attr> Dispatcher::Lookup(uint64_t parent, std::string_view name) {
  auto r = tree_->Lookup(parent, name);
  if (!r.ok()) {
    if (r.error().code() == Errc::kNotFound) return index::Attr{};  // negative entry
    return r.error();
  }
  if (S_ISDIR(r->mode)) RememberParent(r->ino, parent);
  return r;
}

Result<index::Attr> Dispatcher::GetAttr(uint64_t ino) { return tree_->GetAttr(ino); }

Result<std::string> Dispatcher::ReadLink(uint64_t ino) { return tree_->ReadLink(ino); }

std::unique_ptr<DirHandle> Dispatcher::OpenDir(uint64_t ino) {
  return std::make_unique<DirHandle>(ino, ParentOf(ino));
}

std::shared_ptr<DirHandle> Dispatcher::SharedDir(uint64_t ino) {
  uint64_t parent = ParentOf(ino);
  std::lock_guard lock(dirs_mu_);
  auto it = dirs_.find(ino);
  if (it != dirs_.end()) return it->second;
  // The kernel keeps listings in its own cache; this one only spans the
  // readdir calls of one listing, so dropping everything now and then is fine.
  if (dirs_.size() >= kSharedDirs) dirs_.clear();
  return dirs_.emplace(ino, std::make_shared<DirHandle>(ino, parent)).first->second;
}

Status Dispatcher::ReadDir(DirHandle& dir, uint64_t offset, const std::function<bool(const DirItem&)>& emit) {
  std::shared_ptr<const std::vector<index::DirEntry>> entries;
  {
    // The kernel serializes readdir on one open directory; the lock only
    // makes the lazy load safe if it ever did not.
    std::lock_guard<std::mutex> lock(dir.mu_);
    if (!dir.entries_) {
      UCRFS_ASSIGN(auto loaded, tree_->ReadDir(dir.ino()));
      for (const auto& e : loaded) {
        // readdirplus hands these directories to the kernel without a lookup.
        if (S_ISDIR(e.attr.mode)) RememberParent(e.attr.ino, dir.ino());
      }
      dir.entries_ = std::make_shared<const std::vector<index::DirEntry>>(std::move(loaded));
    }
    entries = dir.entries_;
  }
  const uint64_t total = entries->size() + 2;
  for (uint64_t i = offset; i < total; ++i) {
    if (i < 2) {
      const index::Attr attr = DotAttr(i == 0 ? dir.ino() : dir.parent());
      if (!emit(DirItem{i == 0 ? kDot : kDotDot, attr, 0, i + 1})) break;
    } else {
      const index::DirEntry& e = (*entries)[i - 2];
      if (!emit(DirItem{e.name, e.attr, e.attr.ino, i + 1})) break;
    }
  }
  return Ok();
}

Result<OpenReply> Dispatcher::Open(uint64_t ino, int flags) {
  if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC)) {
    // The kernel refuses these on an "ro" mount before asking us; this is
    // the second line of defence.
    return Error(Errc::kUnsupported, fmt::format("inode {}: the image is read-only", ino));
  }
  OpenReply r;
  r.zero_message = zero_message_open_.load(std::memory_order_relaxed);
  r.keep_cache = true;  // content never changes: keep pages across opens
  return r;
}

Result<size_t> Dispatcher::Read(uint64_t ino, uint64_t offset, char* buf, size_t len) {
  return tree_->Read(ino, offset, buf, len);
}

Result<XattrReply> Dispatcher::GetXattr(uint64_t ino, std::string_view name, size_t size) {
  if (!tree_->HasXattrs()) return Error(Errc::kUnsupported, "the image has no extended attributes");
  UCRFS_ASSIGN(std::string value, tree_->GetXattr(ino, name));
  return SizedReply(std::move(value), size, fmt::format("xattr {} of inode {}", name, ino));
}

Result<XattrReply> Dispatcher::ListXattr(uint64_t ino, size_t size) {
  if (!tree_->HasXattrs()) return Error(Errc::kUnsupported, "the image has no extended attributes");
  UCRFS_ASSIGN(auto names, tree_->ListXattr(ino));
  std::string list;
  for (const auto& n : names) {
    list += n;
    list += '\0';
  }
  return SizedReply(std::move(list), size, fmt::format("xattr list of inode {}", ino));
}

struct statvfs Dispatcher::StatFs() {
  struct statvfs s {};
  s.f_bsize = kBlockSize;
  s.f_frsize = kBlockSize;
  s.f_blocks = (tree_->TotalBytes() + kBlockSize - 1) / kBlockSize;
  s.f_bfree = 0;  // nothing can be written
  s.f_bavail = 0;
  s.f_files = tree_->InodeCount();
  s.f_ffree = 0;
  s.f_favail = 0;
  s.f_namemax = 255;
  s.f_flag = ST_RDONLY;  // informative: statvfs(2) takes the flags from the mount
  return s;
}

Error Dispatcher::Modify(std::string_view what) const {
  return Error(Errc::kUnsupported, fmt::format("{}: the image is read-only", what));
}

}  // namespace ucrfs::fusefs
