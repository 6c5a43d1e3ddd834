#include "ucrfs/index/image_tree.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <deque>
#include <map>
#include <unordered_map>

#include <fmt/format.h>

#include "codec.h"
#include "lmdb_env.h"
#include "ucrfs/common/log.h"
#include "ucrfs/index/layers.h"

namespace ucrfs::index {
namespace {

constexpr size_t kMaxName = 255;

// A node of the tree being merged. Hardlinked paths share one Node.
struct Node {
  EntryType type = EntryType::kDir;
  uint32_t mode = 0755;
  uint64_t uid = 0, gid = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint64_t size = 0;
  uint64_t rdev = 0;
  std::string symlink;
  std::vector<std::pair<std::string, std::string>> xattrs;
  uint64_t layer_id = 0;  // whose decoded stream the extents point into
  std::vector<Extent> extents;
  std::map<std::string, std::shared_ptr<Node>, std::less<>> children;  // found by string_view
  int created = 0;   // index of the layer that created (or replaced) this node
  int touched = -1;  // index of the last layer with an entry for this directory
  // Set when the merged tree is numbered (StoreTree).
  uint64_t ino = 0;
  uint32_t nlink = 0;
};

std::shared_ptr<Node> NodeFrom(const TarEntry& e, int layer, uint64_t layer_id) {
  auto n = std::make_shared<Node>();
  n->type = e.type;
  n->mode = e.mode & 07777;
  n->uid = e.uid;
  n->gid = e.gid;
  n->mtime_sec = e.mtime_sec;
  n->mtime_nsec = e.mtime_nsec;
  n->xattrs = e.xattrs;
  n->created = layer;
  n->touched = layer;
  switch (e.type) {
    case EntryType::kFile:
      n->size = e.size;
      n->extents = e.extents;
      n->layer_id = layer_id;
      break;
    case EntryType::kSymlink:
      n->symlink = e.link_target;
      n->size = e.link_target.size();
      break;
    case EntryType::kCharDev:
    case EntryType::kBlockDev:
      n->rdev = makedev(e.dev_major, e.dev_minor);
      break;
    default:
      break;
  }
  return n;
}

// Removes from `dir` everything lower layers put there: children created
// below `layer`, except directories this layer also lists, whose own lower
// contents are removed the same way (an opaque directory hides all of the
// lower tree beneath it).
void PurgeLower(Node& dir, int layer) {
  for (auto it = dir.children.begin(); it != dir.children.end();) {
    Node& c = *it->second;
    if (c.created >= layer) {
      ++it;
    } else if (c.type == EntryType::kDir && c.touched == layer) {
      PurgeLower(c, layer);
      ++it;
    } else {
      it = dir.children.erase(it);
    }
  }
}

class Merger {
 public:
  Merger() : root_(std::make_shared<Node>()) { root_->created = -1; }

  Status Apply(const TarEntry& e, int layer, uint64_t layer_id) {
    if (e.path.empty()) {  // "./": the root's own metadata
      if (e.type != EntryType::kDir) return Error(Errc::kMalformed, "the root entry is not a directory");
      UpdateDir(*root_, e, layer);
      return Ok();
    }
    auto parts = SplitPath(e.path);
    for (auto p : parts) {
      if (p.size() > kMaxName) return Error(Errc::kMalformed, fmt::format("{}: name longer than 255 bytes", e.path));
    }
    std::string_view name = parts.back();
    parts.pop_back();
    bool whiteout = name.substr(0, 4) == ".wh.";
    if (whiteout) UCRFS_TRY(CheckWhiteout(name, e.path));
    Node* dir = root_.get();
    for (auto p : parts) {
      auto it = dir->children.find(p);
      if (it == dir->children.end() || it->second->type != EntryType::kDir) {
        if (whiteout) return Ok();  // nothing below to hide
        auto implicit = std::make_shared<Node>();
        implicit->created = layer;
        implicit->touched = layer;
        it = dir->children.insert_or_assign(std::string(p), implicit).first;
      }
      dir = it->second.get();
    }
    if (whiteout) return Whiteout(*dir, name, layer);
    if (e.type == EntryType::kHardlink) return Hardlink(*dir, std::string(name), e);
    auto it = dir->children.find(name);
    if (e.type == EntryType::kDir && it != dir->children.end() && it->second->type == EntryType::kDir) {
      UpdateDir(*it->second, e, layer);
      return Ok();
    }
    if (it != dir->children.end()) {
      it->second = NodeFrom(e, layer, layer_id);
    } else {
      dir->children.emplace_hint(it, std::string(name), NodeFrom(e, layer, layer_id));
    }
    return Ok();
  }

  const std::shared_ptr<Node>& root() const { return root_; }

 private:
  static void UpdateDir(Node& d, const TarEntry& e, int layer) {
    d.mode = e.mode & 07777;
    d.uid = e.uid;
    d.gid = e.gid;
    d.mtime_sec = e.mtime_sec;
    d.mtime_nsec = e.mtime_nsec;
    d.xattrs = e.xattrs;
    d.touched = layer;
  }

  static Status CheckWhiteout(std::string_view name, const std::string& path) {
    if (name == ".wh..wh..opq") return Ok();
    std::string_view target = name.substr(4);
    if (target.empty() || target == "." || target == "..") {
      return Error(Errc::kMalformed, fmt::format("{}: whiteout of '{}'", path, target));
    }
    return Ok();
  }

  static Status Whiteout(Node& dir, std::string_view name, int layer) {
    if (name == ".wh..wh..opq") {
      PurgeLower(dir, layer);
    } else {
      // A whiteout hides what lower layers put there, never an entry of its
      // own layer (image-spec: whiteouts apply to lower/parent layers only).
      auto it = dir.children.find(name.substr(4));
      if (it != dir.children.end() && it->second->created < layer) dir.children.erase(it);
    }
    return Ok();
  }

  Status Hardlink(Node& dir, std::string name, const TarEntry& e) {
    Node* cur = root_.get();
    std::shared_ptr<Node> target;
    for (auto p : SplitPath(e.link_target)) {
      auto it = cur->type == EntryType::kDir ? cur->children.find(p) : cur->children.end();
      if (it == cur->children.end()) {
        target = nullptr;
        break;
      }
      target = it->second;
      cur = target.get();
    }
    if (target == nullptr || target->type == EntryType::kDir) {
      return Error(Errc::kMalformed, fmt::format("{}: hardlink to missing target '{}'", e.path, e.link_target));
    }
    dir.children.insert_or_assign(std::move(name), target);
    return Ok();
  }

  std::shared_ptr<Node> root_;
};

uint32_t TypeBits(EntryType t) {
  switch (t) {
    case EntryType::kFile: return S_IFREG;
    case EntryType::kDir: return S_IFDIR;
    case EntryType::kSymlink: return S_IFLNK;
    case EntryType::kCharDev: return S_IFCHR;
    case EntryType::kBlockDev: return S_IFBLK;
    case EntryType::kFifo: return S_IFIFO;
    case EntryType::kHardlink: return S_IFREG;
  }
  return S_IFREG;
}

std::string InodeKey(uint64_t tree, uint64_t ino) { return Encoder().U64BE(tree).U64BE(ino).take(); }

std::string EncodeInode(const Node& n, uint32_t nlink) {
  Encoder enc;
  enc.Var(TypeBits(n.type) | n.mode)
      .Var(nlink)
      .Var(n.uid)
      .Var(n.gid)
      .Var(n.type == EntryType::kDir ? 4096 : n.size)
      .Var(n.rdev)
      .SVar(n.mtime_sec)
      .Var(n.mtime_nsec)
      .Var(n.layer_id)
      .Str(n.symlink)
      .Var(n.extents.size());
  for (const auto& x : n.extents) enc.Var(x.file_offset).Var(x.stream_offset).Var(x.length);
  return enc.take();
}

struct InodeRec {
  Attr attr;
  uint64_t layer_id = 0;
  std::string symlink;
  std::vector<Extent> extents;
};

Result<InodeRec> DecodeInode(uint64_t ino, std::string_view v) {
  Decoder d(v);
  InodeRec r;
  r.attr.ino = ino;
  r.attr.mode = static_cast<uint32_t>(d.Var());
  r.attr.nlink = static_cast<uint32_t>(d.Var());
  r.attr.uid = d.Var();
  r.attr.gid = d.Var();
  r.attr.size = d.Var();
  r.attr.rdev = d.Var();
  r.attr.mtime_sec = d.SVar();
  r.attr.mtime_nsec = static_cast<uint32_t>(d.Var());
  r.layer_id = d.Var();
  r.symlink = d.Str();
  for (uint64_t n = d.Var(); d.ok() && n > 0; --n) {
    Extent x;
    x.file_offset = d.Var();
    x.stream_offset = d.Var();
    x.length = d.Var();
    r.extents.push_back(x);
  }
  UCRFS_TRY(d.Check("inode"));
  return r;
}

std::string EncodeTree(const TreeRecord& t) {
  return Encoder().Var(t.id).Var(t.inodes).Var(t.bytes).Var(t.has_xattrs ? 1 : 0).take();
}

Result<TreeRecord> DecodeTree(std::string_view v) {
  Decoder d(v);
  TreeRecord t;
  t.id = d.Var();
  t.inodes = d.Var();
  t.bytes = d.Var();
  t.has_xattrs = d.Var() != 0;
  UCRFS_TRY(d.Check("tree"));
  return t;
}

// Numbers the merged tree (root = 1, breadth first, a hardlinked node once)
// and writes it in one transaction. Inodes and directory entries are written
// in key order, so LMDB appends them: a tree's id is larger than every id
// before it, and a directory's children are in the byte order LMDB sorts by.
Result<TreeRecord> StoreTree(Store& store, const Digest& manifest, Node& root) {
  std::vector<Node*> order{&root};  // by inode number; also the queue of the walk
  root.ino = kRootIno;
  for (size_t q = 0; q < order.size(); ++q) {
    Node* d = order[q];
    if (d->type != EntryType::kDir) continue;
    uint32_t subdirs = 0;
    for (const auto& [name, child] : d->children) {
      Node* c = child.get();
      ++c->nlink;  // a directory's count is set when it is walked
      if (c->ino == 0) {
        c->ino = order.size() + 1;
        order.push_back(c);
      }
      subdirs += c->type == EntryType::kDir ? 1 : 0;
    }
    d->nlink = 2 + subdirs;
  }
  const auto& env = store.env();
  Txn txn;
  UCRFS_TRY(txn.Begin(env.env, true));
  UCRFS_ASSIGN(auto raced, txn.Get(env[Dbi::kTrees], manifest.str()));
  if (raced) return DecodeTree(*raced);
  TreeRecord rec;
  UCRFS_ASSIGN(rec.id, NextId(txn, env, "next_tree_id"));
  rec.inodes = order.size();
  std::string key;
  for (const Node* n : order) {
    if (n->type == EntryType::kFile) rec.bytes += n->size;
    const std::string prefix = InodeKey(rec.id, n->ino);
    UCRFS_TRY(txn.Put(env[Dbi::kInodes], prefix, EncodeInode(*n, n->nlink), MDB_APPEND));
    for (const auto& [name, c] : n->children) {
      key.assign(prefix).append(name);
      UCRFS_TRY(txn.Put(env[Dbi::kDirents], key, Encoder().U64BE(c->ino).str(), MDB_APPEND));
    }
    for (const auto& [k, v] : n->xattrs) {
      rec.has_xattrs = true;
      key.assign(prefix).append(k);
      UCRFS_TRY(txn.Put(env[Dbi::kXattrs], key, v));
    }
  }
  UCRFS_TRY(txn.Put(env[Dbi::kTrees], manifest.str(), EncodeTree(rec)));
  UCRFS_TRY(txn.Commit());
  return rec;
}

}  // namespace

Result<std::optional<TreeRecord>> FindTree(const Store& store, const Digest& manifest) {
  Txn txn;
  UCRFS_TRY(txn.Begin(store.env().env, false));
  UCRFS_ASSIGN(auto v, txn.Get(store.env()[Dbi::kTrees], manifest.str()));
  if (!v) return std::optional<TreeRecord>();
  UCRFS_ASSIGN(TreeRecord t, DecodeTree(*v));
  return std::optional<TreeRecord>(t);
}

Result<TreeRecord> PrepareImage(Store& store, const ImageRecord& image) {
  UCRFS_ASSIGN(auto existing, FindTree(store, image.manifest_digest));
  if (existing) return *existing;
  Merger merger;
  for (size_t i = 0; i < image.layers.size(); ++i) {
    const auto& desc = image.layers[i];
    UCRFS_ASSIGN(LayerRecord layer, EnsureLayerIndexed(store, desc));
    UCRFS_ASSIGN(auto entries, LoadLayerEntries(store, layer));
    for (const auto& e : entries) {
      Status st = merger.Apply(e, static_cast<int>(i), layer.id);
      if (!st.ok()) return st.error().Wrap("layer " + desc.digest.str());
    }
  }
  UCRFS_ASSIGN(TreeRecord rec, StoreTree(store, image.manifest_digest, *merger.root()));
  spdlog::info("built tree of {}: {} inodes, {} bytes", image.key, rec.inodes, rec.bytes);
  return rec;
}

// --- Serving ---

namespace {

class StoreTreeImpl final : public Tree {
 public:
  StoreTreeImpl(std::shared_ptr<Store> store, TreeRecord rec, std::map<uint64_t, fetch::Descriptor> layers,
                LazyOptions lazy)
      : store_(std::move(store)), rec_(rec), layers_(std::move(layers)), lazy_(std::move(lazy)) {}

  Result<Attr> GetAttr(uint64_t ino) override {
    Txn txn;
    UCRFS_TRY(txn.Begin(store_->env().env, false));
    UCRFS_ASSIGN(InodeRec r, GetInode(txn, ino));
    return r.attr;
  }

  Result<Attr> Lookup(uint64_t parent, std::string_view name) override {
    Txn txn;
    UCRFS_TRY(txn.Begin(store_->env().env, false));
    UCRFS_ASSIGN(auto v, txn.Get(env()[Dbi::kDirents], Encoder().U64BE(rec_.id).U64BE(parent).Raw(name).str()));
    if (!v) {
      UCRFS_ASSIGN(InodeRec p, GetInode(txn, parent));
      if (!S_ISDIR(p.attr.mode)) return Error(Errc::kInvalidArgument, "not a directory");
      return Error(Errc::kNotFound, "no such entry");
    }
    Decoder d(*v);
    uint64_t child = d.U64BE();
    UCRFS_TRY(d.Check("dirent"));
    UCRFS_ASSIGN(InodeRec r, GetInode(txn, child));
    return r.attr;
  }

  Result<std::vector<DirEntry>> ReadDir(uint64_t ino) override {
    Txn txn;
    UCRFS_TRY(txn.Begin(store_->env().env, false));
    UCRFS_ASSIGN(InodeRec self, GetInode(txn, ino));
    if (!S_ISDIR(self.attr.mode)) return Error(Errc::kInvalidArgument, "not a directory");
    std::string prefix = Encoder().U64BE(rec_.id).U64BE(ino).take();
    std::vector<std::pair<std::string, uint64_t>> names;
    UCRFS_TRY(txn.Scan(env()[Dbi::kDirents], prefix, [&](std::string_view k, std::string_view v) {
      Decoder d(v);
      names.emplace_back(std::string(k.substr(prefix.size())), d.U64BE());
      return true;
    }));
    std::vector<DirEntry> out;
    out.reserve(names.size());
    for (auto& [name, child] : names) {
      UCRFS_ASSIGN(InodeRec r, GetInode(txn, child));
      out.push_back(DirEntry{std::move(name), r.attr});
    }
    return out;
  }

  Result<std::string> ReadLink(uint64_t ino) override {
    Txn txn;
    UCRFS_TRY(txn.Begin(store_->env().env, false));
    UCRFS_ASSIGN(InodeRec r, GetInode(txn, ino));
    if (!S_ISLNK(r.attr.mode)) return Error(Errc::kInvalidArgument, "not a symlink");
    return r.symlink;
  }

  Result<std::string> GetXattr(uint64_t ino, std::string_view name) override {
    Txn txn;
    UCRFS_TRY(txn.Begin(store_->env().env, false));
    UCRFS_ASSIGN(auto v, txn.Get(env()[Dbi::kXattrs], Encoder().U64BE(rec_.id).U64BE(ino).Raw(name).str()));
    if (!v) return Error(Errc::kNotFound, "no such attribute");
    return std::string(*v);
  }

  Result<std::vector<std::string>> ListXattr(uint64_t ino) override {
    Txn txn;
    UCRFS_TRY(txn.Begin(store_->env().env, false));
    std::string prefix = Encoder().U64BE(rec_.id).U64BE(ino).take();
    std::vector<std::string> out;
    UCRFS_TRY(txn.Scan(env()[Dbi::kXattrs], prefix, [&](std::string_view k, std::string_view) {
      out.emplace_back(k.substr(prefix.size()));
      return true;
    }));
    return out;
  }

  bool HasXattrs() override { return rec_.has_xattrs; }

  Result<size_t> Read(uint64_t ino, uint64_t offset, char* buf, size_t len) override {
    InodeRec r;
    {
      Txn txn;
      UCRFS_TRY(txn.Begin(store_->env().env, false));
      UCRFS_ASSIGN(r, GetInode(txn, ino));
    }
    if (!S_ISREG(r.attr.mode)) return Error(Errc::kInvalidArgument, "not a regular file");
    if (offset >= r.attr.size) return size_t{0};
    len = static_cast<size_t>(std::min<uint64_t>(len, r.attr.size - offset));
    std::fill(buf, buf + len, '\0');  // holes of sparse files read as zeros
    if (r.extents.empty()) return len;
    UCRFS_ASSIGN(LayerReader * reader, Reader(r.layer_id));
    for (const Extent& x : r.extents) {
      uint64_t lo = std::max(offset, x.file_offset), hi = std::min(offset + len, x.file_offset + x.length);
      if (lo >= hi) continue;
      UCRFS_ASSIGN(size_t n, reader->ReadAt(x.stream_offset + (lo - x.file_offset), buf + (lo - offset), hi - lo));
      if (n != hi - lo) return Error(Errc::kIo, fmt::format("inode {}: layer data ends early", ino));
    }
    return len;
  }

  // Opens the readers of lazy layers now rather than at their first read.
  void OpenLazyLayers() {
    for (const auto& [id, desc] : layers_) {
      auto rec = FindLayer(*store_, desc.digest);
      if (rec.ok() && *rec && IsLazy((*rec)->format)) {
        auto r = Reader(id);
        if (!r.ok()) spdlog::warn("layer {}: {}", desc.digest.str(), r.error().message());
      }
    }
  }

  uint64_t InodeCount() override { return rec_.inodes; }
  uint64_t TotalBytes() override { return rec_.bytes; }

 private:
  const Store::Env& env() const { return store_->env(); }

  Result<InodeRec> GetInode(const Txn& txn, uint64_t ino) {
    UCRFS_ASSIGN(auto v, txn.Get(env()[Dbi::kInodes], InodeKey(rec_.id, ino)));
    if (!v) return Error(Errc::kNotFound, fmt::format("no inode {}", ino));
    return DecodeInode(ino, *v);
  }

  Result<LayerReader*> Reader(uint64_t layer_id) {
    std::lock_guard lock(mu_);
    auto it = readers_.find(layer_id);
    if (it != readers_.end()) return it->second.get();
    auto d = layers_.find(layer_id);
    if (d == layers_.end()) return Error(Errc::kInternal, fmt::format("unknown layer id {}", layer_id));
    UCRFS_ASSIGN(auto rec, FindLayer(*store_, d->second.digest));
    if (!rec) return Error(Errc::kNotFound, "layer " + d->second.digest.str() + " is not indexed");
    UCRFS_ASSIGN(auto reader, LayerReader::Open(*store_, d->second, *rec, lazy_));
    return readers_.emplace(layer_id, std::move(reader)).first->second.get();
  }

  const std::shared_ptr<Store> store_;
  const TreeRecord rec_;
  const std::map<uint64_t, fetch::Descriptor> layers_;
  const LazyOptions lazy_;
  std::mutex mu_;
  std::map<uint64_t, std::unique_ptr<LayerReader>> readers_;  // guarded by mu_
};

}  // namespace

Result<std::shared_ptr<Tree>> OpenTree(std::shared_ptr<Store> store, const ImageRecord& image,
                                       LazyOptions lazy) {
  UCRFS_ASSIGN(auto rec, FindTree(*store, image.manifest_digest));
  if (!rec) return Error(Errc::kNotFound, fmt::format("image {} has no tree; mount it first", image.key));
  std::map<uint64_t, fetch::Descriptor> layers;
  for (const auto& l : image.layers) {
    UCRFS_ASSIGN(auto lr, FindLayer(*store, l.digest));
    if (!lr) return Error(Errc::kNotFound, "layer " + l.digest.str() + " is not indexed");
    layers.emplace(lr->id, l);
  }
  bool prefetch = lazy.prefetch != Prefetch::kNone;
  auto tree = std::make_shared<StoreTreeImpl>(std::move(store), *rec, std::move(layers), std::move(lazy));
  if (prefetch) tree->OpenLazyLayers();  // their prefetch starts with the mount
  return std::shared_ptr<Tree>(std::move(tree));
}

}  // namespace ucrfs::index
