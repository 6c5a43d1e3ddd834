#include "harness/memory_tree.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <utility>

#include <fmt/format.h>

namespace ucrfs::harness {
namespace {

[[noreturn]] void Die(const std::string& why) {
  std::fprintf(stderr, "MemoryTree: %s\n", why.c_str());
  std::abort();
}

// "/a/b/c" -> ("/a/b", "c").
std::pair<std::string_view, std::string_view> SplitLast(std::string_view path) {
  size_t slash = path.rfind('/');
  if (path.empty() || path[0] != '/' || slash == std::string_view::npos || slash + 1 == path.size()) {
    Die(fmt::format("bad path '{}'", path));
  }
  return {path.substr(0, slash), path.substr(slash + 1)};
}

}  // namespace

MemoryTree::MemoryTree() {
  auto root = std::make_unique<Node>();
  root->ino = index::kRootIno;
  root->mode = S_IFDIR | 0755;
  nodes_.push_back(std::move(root));
}

MemoryTree::~MemoryTree() = default;

MemoryTree::Node* MemoryTree::Find(uint64_t ino) const {
  if (ino == 0 || ino > nodes_.size()) return nullptr;
  return nodes_[ino - 1].get();
}

MemoryTree::Node* MemoryTree::Resolve(std::string_view path) const {
  Node* n = Find(index::kRootIno);
  while (!path.empty()) {
    while (!path.empty() && path[0] == '/') path.remove_prefix(1);
    if (path.empty()) break;
    size_t slash = path.find('/');
    std::string_view name = path.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash);
    auto it = n->children.find(name);
    if (it == n->children.end()) return nullptr;
    n = Find(it->second);
  }
  return n;
}

uint64_t MemoryTree::AddNode(std::string_view path, uint32_t mode, Meta meta, std::string data, dev_t rdev) {
  std::unique_lock lock(mu_);
  auto [dir, name] = SplitLast(path);
  if (name == "." || name == ".." || name.size() > 255) Die(fmt::format("bad name in '{}'", path));
  Node* parent = Resolve(dir);
  if (parent == nullptr || !S_ISDIR(parent->mode)) Die(fmt::format("no parent directory for '{}'", path));
  if (parent->children.count(name)) Die(fmt::format("'{}' exists", path));
  auto n = std::make_unique<Node>();
  n->ino = nodes_.size() + 1;
  n->mode = mode;
  n->meta = meta;
  n->data = std::move(data);
  n->rdev = rdev;
  uint64_t ino = n->ino;
  parent->children.emplace(std::string(name), ino);
  nodes_.push_back(std::move(n));
  return ino;
}

uint64_t MemoryTree::AddDir(std::string_view path, uint32_t perm, Meta meta) {
  return AddNode(path, S_IFDIR | (perm & 07777), meta, "", 0);
}

uint64_t MemoryTree::AddFile(std::string_view path, std::string content, uint32_t perm, Meta meta) {
  return AddNode(path, S_IFREG | (perm & 07777), meta, std::move(content), 0);
}

uint64_t MemoryTree::AddSymlink(std::string_view path, std::string target, Meta meta) {
  return AddNode(path, S_IFLNK | 0777, meta, std::move(target), 0);
}

uint64_t MemoryTree::AddSpecial(std::string_view path, uint32_t type, dev_t rdev, uint32_t perm, Meta meta) {
  if (type != S_IFCHR && type != S_IFBLK && type != S_IFIFO && type != S_IFSOCK) {
    Die(fmt::format("AddSpecial '{}': type {:o} is not a device, fifo or socket", path, type));
  }
  return AddNode(path, type | (perm & 07777), meta, "", rdev);
}

uint64_t MemoryTree::AddHardlink(std::string_view path, std::string_view existing) {
  std::unique_lock lock(mu_);
  Node* target = Resolve(existing);
  if (target == nullptr || S_ISDIR(target->mode)) Die(fmt::format("cannot hard link to '{}'", existing));
  auto [dir, name] = SplitLast(path);
  Node* parent = Resolve(dir);
  if (parent == nullptr || !S_ISDIR(parent->mode) || parent->children.count(name)) {
    Die(fmt::format("cannot create link '{}'", path));
  }
  parent->children.emplace(std::string(name), target->ino);
  ++target->links;
  return target->ino;
}

void MemoryTree::SetXattr(std::string_view path, std::string name, std::string value) {
  std::unique_lock lock(mu_);
  Node* n = Resolve(path);
  if (n == nullptr) Die(fmt::format("SetXattr: no '{}'", path));
  n->xattrs[std::move(name)] = std::move(value);
}

void MemoryTree::SetMeta(std::string_view path, Meta meta) {
  std::unique_lock lock(mu_);
  Node* n = Resolve(path);
  if (n == nullptr) Die(fmt::format("SetMeta: no '{}'", path));
  n->meta = meta;
}

uint64_t MemoryTree::InodeOf(std::string_view path) const {
  std::shared_lock lock(mu_);
  Node* n = Resolve(path);
  return n ? n->ino : 0;
}

void MemoryTree::InjectError(uint64_t ino, Errc code) {
  std::unique_lock lock(mu_);
  if (Node* n = Find(ino)) n->error = code;
}

void MemoryTree::ClearError(uint64_t ino) {
  std::unique_lock lock(mu_);
  if (Node* n = Find(ino)) n->error.reset();
}

uint64_t MemoryTree::ReadsOf(uint64_t ino) const {
  std::shared_lock lock(mu_);
  Node* n = Find(ino);
  return n ? n->reads.load() : 0;
}

index::Attr MemoryTree::AttrOf(const Node& n) const {
  index::Attr a;
  a.ino = n.ino;
  a.mode = n.mode;
  a.nlink = n.links;
  if (S_ISDIR(n.mode)) {
    a.nlink = 2;
    for (const auto& [name, child] : n.children) {
      if (S_ISDIR(Find(child)->mode)) ++a.nlink;
    }
  }
  a.uid = n.meta.uid;
  a.gid = n.meta.gid;
  a.size = S_ISREG(n.mode) || S_ISLNK(n.mode) ? n.data.size() : 0;
  a.rdev = n.rdev;
  a.mtime_sec = n.meta.mtime_sec;
  a.mtime_nsec = n.meta.mtime_nsec;
  return a;
}

Result<MemoryTree::Node*> MemoryTree::Get(uint64_t ino) const {
  Node* n = Find(ino);
  if (n == nullptr) return Error(Errc::kNotFound, fmt::format("no inode {}", ino));
  if (n->error) return Error(*n->error, fmt::format("injected error on inode {} ({})", ino, ErrcName(*n->error)));
  return n;
}

Result<index::Attr> MemoryTree::GetAttr(uint64_t ino) {
  ++counters_.getattr;
  std::shared_lock lock(mu_);
  UCRFS_ASSIGN(Node * n, Get(ino));
  return AttrOf(*n);
}

Result<index::Attr> MemoryTree::Lookup(uint64_t parent, std::string_view name) {
  ++counters_.lookup;
  std::shared_lock lock(mu_);
  UCRFS_ASSIGN(Node * dir, Get(parent));
  if (!S_ISDIR(dir->mode)) return Error(Errc::kInvalidArgument, fmt::format("inode {} is not a directory", parent));
  auto it = dir->children.find(name);
  if (it == dir->children.end()) return Error(Errc::kNotFound, fmt::format("no '{}' in inode {}", name, parent));
  UCRFS_ASSIGN(Node * n, Get(it->second));
  return AttrOf(*n);
}

Result<std::vector<index::DirEntry>> MemoryTree::ReadDir(uint64_t ino) {
  ++counters_.readdir;
  std::shared_lock lock(mu_);
  UCRFS_ASSIGN(Node * dir, Get(ino));
  if (!S_ISDIR(dir->mode)) return Error(Errc::kInvalidArgument, fmt::format("inode {} is not a directory", ino));
  std::vector<index::DirEntry> out;
  out.reserve(dir->children.size());
  for (const auto& [name, child] : dir->children) out.push_back({name, AttrOf(*Find(child))});
  return out;
}

Result<std::string> MemoryTree::ReadLink(uint64_t ino) {
  ++counters_.readlink;
  std::shared_lock lock(mu_);
  UCRFS_ASSIGN(Node * n, Get(ino));
  if (!S_ISLNK(n->mode)) return Error(Errc::kInvalidArgument, fmt::format("inode {} is not a symlink", ino));
  return n->data;
}

Result<std::string> MemoryTree::GetXattr(uint64_t ino, std::string_view name) {
  ++counters_.getxattr;
  std::shared_lock lock(mu_);
  UCRFS_ASSIGN(Node * n, Get(ino));
  auto it = n->xattrs.find(name);
  if (it == n->xattrs.end()) return Error(Errc::kNotFound, fmt::format("inode {} has no xattr {}", ino, name));
  return it->second;
}

Result<std::vector<std::string>> MemoryTree::ListXattr(uint64_t ino) {
  ++counters_.listxattr;
  std::shared_lock lock(mu_);
  UCRFS_ASSIGN(Node * n, Get(ino));
  std::vector<std::string> names;
  for (const auto& [k, v] : n->xattrs) names.push_back(k);
  return names;
}

bool MemoryTree::HasXattrs() {
  ++counters_.hasxattrs;
  std::shared_lock lock(mu_);
  for (const auto& n : nodes_) {
    if (!n->xattrs.empty()) return true;
  }
  return false;
}

Result<size_t> MemoryTree::Read(uint64_t ino, uint64_t offset, char* buf, size_t len) {
  ++counters_.read;
  std::shared_lock lock(mu_);
  UCRFS_ASSIGN(Node * n, Get(ino));
  ++n->reads;
  if (!S_ISREG(n->mode)) return Error(Errc::kInvalidArgument, fmt::format("inode {} is not a regular file", ino));
  if (offset >= n->data.size()) return size_t{0};
  size_t count = std::min<uint64_t>(len, n->data.size() - offset);
  std::memcpy(buf, n->data.data() + offset, count);
  return count;
}

uint64_t MemoryTree::InodeCount() {
  std::shared_lock lock(mu_);
  return nodes_.size();
}

uint64_t MemoryTree::TotalBytes() {
  std::shared_lock lock(mu_);
  uint64_t total = 0;
  for (const auto& n : nodes_) {
    if (S_ISREG(n->mode)) total += n->data.size();
  }
  return total;
}

}  // namespace ucrfs::harness
