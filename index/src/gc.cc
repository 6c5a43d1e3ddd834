#include "ucrfs/index/gc.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "codec.h"
#include "layer_internal.h"
#include "lmdb_env.h"
#include "ucrfs/common/file.h"
#include "ucrfs/common/mounts.h"
#include "ucrfs/common/log.h"
#include "ucrfs/index/image_tree.h"
#include "ucrfs/index/layers.h"

namespace ucrfs::index {
namespace {

namespace fs = std::filesystem;

std::string MountsDir(const Store& store) { return store.root() + "/mounts"; }
std::string MountPath(const Store& store, const std::string& mountpoint) {
  return fmt::format("{}/{}.json", MountsDir(store), Digest::Sha256Of(mountpoint).hex());
}

bool ProcessAlive(int64_t pid) { return pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM); }


// Removes a file, adding what it freed.
void RemoveFile(const std::string& path, GcResult& out) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;
  if (::unlink(path.c_str()) == 0) {
    ++out.files_removed;
    out.bytes_freed += static_cast<uint64_t>(st.st_size);
  } else {
    spdlog::warn("gc: cannot remove {}: {}", path, std::strerror(errno));
  }
}

// Regular files directly under dir/<alg>/ (or dir itself when flat).
std::vector<std::string> FilesUnder(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file(ec)) out.push_back(it->path().string());
  }
  return out;
}

// A temporary file "<name>.tmp-<pid>-<rand>" of a writer that still runs.
bool LiveTemporary(const std::string& path) {
  auto pos = path.find(".tmp-");
  if (pos == std::string::npos) return false;
  return ProcessAlive(std::strtoll(path.c_str() + pos + 5, nullptr, 10));
}

// Deletes every key of dbi that starts with prefix.
Status DeleteRange(Txn& txn, MDB_dbi dbi, std::string_view prefix) {
  std::vector<std::string> keys;
  UCRFS_TRY(txn.Scan(dbi, prefix, [&](std::string_view k, std::string_view) {
    keys.emplace_back(k);
    return true;
  }));
  for (const auto& k : keys) {
    MDB_val key{k.size(), const_cast<char*>(k.data())};
    int rc = mdb_del(txn.get(), dbi, &key, nullptr);
    if (rc != 0 && rc != MDB_NOTFOUND) return LmdbError("delete", rc);
  }
  return Ok();
}

Status Delete(Txn& txn, MDB_dbi dbi, std::string_view key) {
  MDB_val k{key.size(), const_cast<char*>(key.data())};
  int rc = mdb_del(txn.get(), dbi, &k, nullptr);
  return rc == 0 || rc == MDB_NOTFOUND ? Ok() : Status(LmdbError("delete", rc));
}

}  // namespace

std::string UnpackedChainName(const std::vector<fetch::Descriptor>& layers, size_t n) {
  std::string ids;
  for (size_t i = 0; i < n && i < layers.size(); ++i) ids += layers[i].digest.str() + "\n";
  return Digest::Sha256Of(ids).hex();
}

namespace {

// Everything the store's image records reach, then everything else removed.
Status Sweep(Store& store, GcResult& out) {
  UCRFS_ASSIGN(auto images, store.ListImages());
  std::set<std::string> blobs, manifests, layers;
  for (const auto& r : images) {
    blobs.insert(r.manifest_digest.str());
    manifests.insert(r.manifest_digest.str());
    blobs.insert(r.config.digest.str());
    if (r.index_digest) blobs.insert(r.index_digest->str());
    if (r.trace) blobs.insert(r.trace->str());
    for (size_t i = 0; i < r.layers.size(); ++i) {
      blobs.insert(r.layers[i].digest.str());
      layers.insert(r.layers[i].digest.str());
      layers.insert("chain:" + UnpackedChainName(r.layers, i + 1));  // unpacked/chain/<name>
    }
  }
  // LMDB first: a record never outlives the files it names; files nothing
  // names are removed after the commit.
  const auto& env = store.env();
  std::set<std::string> chunks_live;
  {
    Txn txn;
    UCRFS_TRY(txn.Begin(env.env, true));
    std::vector<std::pair<std::string, LayerRecord>> layer_recs;
    Status st;
    UCRFS_TRY(txn.Scan(env[Dbi::kLayers], "", [&](std::string_view k, std::string_view v) {
      auto r = DecodeRecord(v);
      if (!r.ok()) {
        st = r.error();
        return false;
      }
      layer_recs.emplace_back(std::string(k), *r);
      return true;
    }));
    UCRFS_TRY(st);
    for (const auto& [digest, rec] : layer_recs) {
      std::string prefix = Encoder().U64BE(rec.id).take();
      if (layers.contains(digest)) {
        UCRFS_TRY(txn.Scan(env[Dbi::kChunks], prefix, [&](std::string_view, std::string_view v) {
          auto c = DecodeChunkRec(v);
          if (c.ok()) chunks_live.insert(store.ChunkPath(c->chunk.digest));
          return true;
        }));
        continue;
      }
      for (Dbi d : {Dbi::kLayerEntries, Dbi::kCheckpoints, Dbi::kChunks}) UCRFS_TRY(DeleteRange(txn, env[d], prefix));
      UCRFS_TRY(Delete(txn, env[Dbi::kLayers], digest));
      ++out.layers_removed;
    }
    std::vector<std::pair<std::string, uint64_t>> trees;
    UCRFS_TRY(txn.Scan(env[Dbi::kTrees], "", [&](std::string_view k, std::string_view v) {
      Decoder d(v);
      uint64_t id = d.Var();
      if (d.ok()) trees.emplace_back(std::string(k), id);
      return true;
    }));
    for (const auto& [manifest, id] : trees) {
      if (manifests.contains(manifest)) continue;
      std::string prefix = Encoder().U64BE(id).take();
      for (Dbi d : {Dbi::kInodes, Dbi::kDirents, Dbi::kXattrs}) UCRFS_TRY(DeleteRange(txn, env[d], prefix));
      UCRFS_TRY(Delete(txn, env[Dbi::kTrees], manifest));
      ++out.trees_removed;
    }
    UCRFS_TRY(txn.Commit());
  }
  for (const std::string& path : FilesUnder(store.root() + "/blobs")) {
    fs::path p(path);
    std::string digest = p.parent_path().filename().string() + ":" + p.filename().string();
    if (!blobs.contains(digest)) RemoveFile(path, out);
  }
  for (const std::string& path : FilesUnder(store.root() + "/decoded")) {
    // decoded/<alg>-<hex>.tar, or a .partial-<pid> of an indexer
    std::string name = fs::path(path).filename().string();
    auto dash = name.find('-'), dot = name.find(".tar");
    std::string digest = dash == std::string::npos || dot == std::string::npos
                             ? ""
                             : name.substr(0, dash) + ":" + name.substr(dash + 1, dot - dash - 1);
    bool partial = name.find(".partial-") != std::string::npos;
    if (partial && ProcessAlive(std::strtoll(name.c_str() + name.find(".partial-") + 9, nullptr, 10))) continue;
    if (partial || !layers.contains(digest)) RemoveFile(path, out);
  }
  // Layers unpacked for the overlay and bind backends: <alg>/<hex> trees.
  std::error_code ec;
  for (auto alg = fs::directory_iterator(store.root() + "/unpacked", ec); !ec && alg != fs::directory_iterator();
       alg.increment(ec)) {
    std::error_code ec2;
    for (auto it = fs::directory_iterator(alg->path(), ec2); !ec2 && it != fs::directory_iterator(); it.increment(ec2)) {
      std::string name = it->path().filename().string();
      std::string digest = alg->path().filename().string() + ":" + name;
      if (name.find('.') != std::string::npos || layers.contains(digest)) continue;  // in use, or an unpack under way
      if (RemoveAll(it->path().string()).ok()) {
        ++out.files_removed;
      } else {
        spdlog::warn("gc: cannot remove {}", it->path().string());
      }
    }
  }
  for (const std::string& path : FilesUnder(store.root() + "/chunks")) {
    if (LiveTemporary(path)) continue;
    if (!chunks_live.contains(path)) RemoveFile(path, out);
  }
  return Ok();
}

}  // namespace

Status RecordMount(const Store& store, const MountRecord& m) {
  UCRFS_TRY(MakeDirs(MountsDir(store)));
  nlohmann::json j = {{"mountpoint", m.mountpoint}, {"image", m.image}, {"manifest", m.manifest.str()},
                      {"pid", m.pid},               {"backend", m.backend}};
  return WriteFileAtomic(MountPath(store, m.mountpoint), j.dump());
}

Status ForgetMount(const Store& store, const std::string& mountpoint) {
  if (::unlink(MountPath(store, mountpoint).c_str()) != 0 && errno != ENOENT) {
    return ErrnoError("remove mount record of " + mountpoint);
  }
  return Ok();
}

Result<std::vector<MountState>> ListMounts(const Store& store) {
  std::vector<MountState> out;
  for (const std::string& path : FilesUnder(MountsDir(store))) {
    if (path.find(".tmp") != std::string::npos || !path.ends_with(".json")) continue;
    auto body = ReadFile(path);
    if (!body.ok()) continue;  // removed meanwhile
    auto j = nlohmann::json::parse(*body, nullptr, false);
    MountState m;
    try {
      m.record.mountpoint = j.at("mountpoint").get<std::string>();
      m.record.image = j.at("image").get<std::string>();
      UCRFS_ASSIGN(m.record.manifest, Digest::Parse(j.at("manifest").get<std::string>()));
      m.record.pid = j.value("pid", int64_t{0});
      m.record.backend = j.value("backend", std::string("fuse"));
    } catch (const nlohmann::json::exception&) {
      spdlog::warn("ignoring a corrupt mount record {}", path);
      continue;
    }
    m.live = ProcessAlive(m.record.pid) || IsMountPoint(m.record.mountpoint);
    out.push_back(std::move(m));
  }
  return out;
}

uint64_t StoreSize(const Store& store) {
  uint64_t n = 0;
  for (const char* dir : {"/blobs", "/decoded", "/chunks"}) {
    for (const std::string& path : FilesUnder(store.root() + dir)) {
      struct stat st;
      if (::lstat(path.c_str(), &st) == 0) n += static_cast<uint64_t>(st.st_size);
    }
  }
  return n;
}

Result<GcResult> CollectGarbage(Store& store, const GcOptions& opts) {
  UCRFS_TRY(store.LockExclusive());
  GcResult out;
  UCRFS_ASSIGN(auto mounts, ListMounts(store));
  std::set<std::string> in_use(opts.keep.begin(), opts.keep.end());
  for (const auto& m : mounts) {
    if (m.live) {
      in_use.insert(m.record.image);
    } else {
      (void)ForgetMount(store, m.record.mountpoint);  // its server is gone and nothing is mounted
    }
  }
  if (opts.remove_images) {
    UCRFS_ASSIGN(auto images, store.ListImages());
    std::vector<ImageRecord> unused;
    for (auto& r : images) {
      if (!in_use.contains(r.key)) unused.push_back(std::move(r));
    }
    // Least recently used first.
    std::sort(unused.begin(), unused.end(), [](const ImageRecord& a, const ImageRecord& b) {
      return std::max(a.used_at_ms, a.pulled_at * 1000) < std::max(b.used_at_ms, b.pulled_at * 1000);
    });
    const auto& env = store.env();
    for (const auto& r : unused) {
      if (opts.max_size > 0) {
        UCRFS_TRY(Sweep(store, out));
        if (StoreSize(store) <= opts.max_size) break;
      }
      Txn txn;
      UCRFS_TRY(txn.Begin(env.env, true));
      UCRFS_TRY(Delete(txn, env[Dbi::kImages], r.key));
      UCRFS_TRY(txn.Commit());
      out.images_removed.push_back(r.key);
      spdlog::info("gc: removed image {}", r.key);
    }
  }
  UCRFS_TRY(Sweep(store, out));
  out.size_after = StoreSize(store);
  return out;
}

Result<GcResult> RemoveImage(Store& store, const std::string& key) {
  UCRFS_ASSIGN(auto rec, store.FindImage(key));
  if (!rec) return Error(Errc::kNotFound, fmt::format("no image {} in the store", key));
  UCRFS_TRY(store.LockExclusive());
  UCRFS_ASSIGN(auto mounts, ListMounts(store));
  for (const auto& m : mounts) {
    if (m.live && m.record.image == key) {
      return Error(Errc::kInvalidArgument, fmt::format("image {} is in use by the mount at {}", key,
                                                       m.record.mountpoint));
    }
  }
  const auto& env = store.env();
  Txn txn;
  UCRFS_TRY(txn.Begin(env.env, true));
  UCRFS_TRY(Delete(txn, env[Dbi::kImages], key));
  UCRFS_TRY(txn.Commit());
  GcResult out;
  out.images_removed.push_back(key);
  UCRFS_TRY(Sweep(store, out));
  out.size_after = StoreSize(store);
  return out;
}

}  // namespace ucrfs::index
