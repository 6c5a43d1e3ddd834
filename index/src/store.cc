#include "ucrfs/index/store.h"

#include "lmdb_env.h"
#include "ucrfs/index/layers.h"

#include <dirent.h>
#include <fcntl.h>
#include <lmdb.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <random>

#include <ctime>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ucrfs/common/file.h"
#include "ucrfs/common/log.h"

namespace ucrfs::index {
namespace {

constexpr size_t kMapSize = size_t{64} << 30;  // address space only; the file grows as needed
constexpr std::string_view kSchemaKey = "schema_version";

nlohmann::json DescriptorJson(const fetch::Descriptor& d) {
  nlohmann::json j = {{"mediaType", d.media_type}, {"digest", d.digest.str()}, {"size", d.size}};
  if (!d.annotations.empty()) j["annotations"] = d.annotations;
  return j;
}

Result<fetch::Descriptor> DescriptorFromJson(const nlohmann::json& j) {
  fetch::Descriptor d;
  d.media_type = j.at("mediaType").get<std::string>();
  UCRFS_ASSIGN(d.digest, Digest::Parse(j.at("digest").get<std::string>()));
  d.size = j.at("size").get<int64_t>();
  if (j.contains("annotations")) d.annotations = j["annotations"].get<std::map<std::string, std::string>>();
  return d;
}

bool ProcessAlive(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

}  // namespace

std::string ImageRecord::ToJson() const {
  nlohmann::json j = {{"key", key},
                      {"manifestDigest", manifest_digest.str()},
                      {"manifestMediaType", manifest_media_type},
                      {"platform", {{"os", platform.os}, {"architecture", platform.architecture}, {"variant", platform.variant}}},
                      {"config", DescriptorJson(config)},
                      {"layers", nlohmann::json::array()},
                      {"pulledAt", pulled_at}};
  if (index_digest) j["indexDigest"] = index_digest->str();
  if (used_at_ms != 0) j["usedAtMs"] = used_at_ms;
  if (trace) j["trace"] = trace->str();
  for (const auto& l : layers) j["layers"].push_back(DescriptorJson(l));
  return j.dump();
}

Result<ImageRecord> ImageRecord::FromJson(std::string_view json) {
  try {
    auto j = nlohmann::json::parse(json);
    ImageRecord r;
    r.key = j.at("key").get<std::string>();
    UCRFS_ASSIGN(r.manifest_digest, Digest::Parse(j.at("manifestDigest").get<std::string>()));
    r.manifest_media_type = j.at("manifestMediaType").get<std::string>();
    if (j.contains("indexDigest")) {
      UCRFS_ASSIGN(Digest d, Digest::Parse(j["indexDigest"].get<std::string>()));
      r.index_digest = d;
    }
    if (j.contains("trace")) {
      UCRFS_ASSIGN(Digest d, Digest::Parse(j["trace"].get<std::string>()));
      r.trace = d;
    }
    const auto& p = j.at("platform");
    r.platform.os = p.at("os").get<std::string>();
    r.platform.architecture = p.at("architecture").get<std::string>();
    r.platform.variant = p.value("variant", "");
    UCRFS_ASSIGN(r.config, DescriptorFromJson(j.at("config")));
    for (const auto& l : j.at("layers")) {
      UCRFS_ASSIGN(auto d, DescriptorFromJson(l));
      r.layers.push_back(std::move(d));
    }
    r.pulled_at = j.value("pulledAt", int64_t{0});
    r.used_at_ms = j.value("usedAtMs", int64_t{0});
    return r;
  } catch (const nlohmann::json::exception& e) {
    return Error(Errc::kMalformed, fmt::format("store index: bad image record: {}", e.what()));
  }
}

Store::Store(std::string root, std::unique_ptr<Env> env) : root_(std::move(root)), env_(std::move(env)) {}
Store::~Store() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

Status Store::LockExclusive() {
  if (lock_fd_ < 0) return Error(Errc::kInternal, "store opened read-only");
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) == 0) return Ok();
  if (errno == EWOULDBLOCK) {
    return Error(Errc::kBusy, fmt::format("store {} is in use by a pull or mount that is preparing images; try "
                                          "again when it is done", root_));
  }
  return ErrnoError("lock " + root_ + "/lock");
}

Status Store::TouchImage(const std::string& key) {
  UCRFS_ASSIGN(auto rec, FindImage(key));
  if (!rec) return Error(Errc::kNotFound, "no image " + key + " in the store");
  rec->used_at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  Txn txn;
  UCRFS_TRY(txn.Begin(env_->env, true));
  UCRFS_TRY(txn.Put((*env_)[Dbi::kImages], key, rec->ToJson()));
  return txn.Commit();
}

Result<std::unique_ptr<Store>> Store::Open(const std::string& root, Mode mode) {
  const std::string index_dir = root + "/index";
  if (mode == Mode::kReadOnly && !PathExists(index_dir + "/data.mdb")) {
    return Error(Errc::kNotFound, fmt::format("no ucrfs store at {}", root));
  }
  if (mode == Mode::kReadWrite) {
    for (const char* sub : {"/blobs/sha256", "/blobs/sha512", "/staging", "/index", "/decoded", "/chunks/sha256", "/chunks/sha512"}) UCRFS_TRY(MakeDirs(root + sub));
  }
  auto env = std::make_unique<Env>();
  int rc = mdb_env_create(&env->env);
  if (rc != 0) return LmdbError("create environment", rc);
  mdb_env_set_maxdbs(env->env, 16);
  mdb_env_set_mapsize(env->env, kMapSize);
  // MDB_NOTLS: read transactions are not tied to threads; the store hands out
  // short transactions from any thread.
  unsigned flags = MDB_NOTLS | (mode == Mode::kReadOnly ? MDB_RDONLY : 0);
  rc = mdb_env_open(env->env, index_dir.c_str(), flags, 0644);
  if (rc != 0) return LmdbError(fmt::format("open {}", index_dir), rc);

  Txn txn;
  UCRFS_TRY(txn.Begin(env->env, mode == Mode::kReadWrite));
  unsigned dbflags = mode == Mode::kReadWrite ? MDB_CREATE : 0;
  for (int i = 0; i < static_cast<int>(Dbi::kCount); ++i) {
    rc = mdb_dbi_open(txn.get(), kDbiNames[i], dbflags, &env->dbis[i]);
    if (rc == MDB_NOTFOUND) return Error(Errc::kNotFound, fmt::format("no ucrfs store at {}", root));
    if (rc != 0) return LmdbError(fmt::format("open database {}", kDbiNames[i]), rc);
  }
  MDB_val k = Val(kSchemaKey), v;
  rc = mdb_get(txn.get(), (*env)[Dbi::kMeta], &k, &v);
  if (rc == MDB_NOTFOUND && mode == Mode::kReadWrite) {
    std::string ver = std::to_string(kSchemaVersion);
    MDB_val nv = Val(ver);
    rc = mdb_put(txn.get(), (*env)[Dbi::kMeta], &k, &nv, 0);
    if (rc != 0) return LmdbError("write schema version", rc);
  } else if (rc == 0) {
    uint32_t have = static_cast<uint32_t>(std::strtoul(std::string(View(v)).c_str(), nullptr, 10));
    if (have > kSchemaVersion) {
      return Error(Errc::kUnsupported, fmt::format("store {} has schema version {}, newer than this ucrfs "
                                                   "supports ({})", root, have, kSchemaVersion));
    }
  } else {
    return LmdbError("read schema version", rc);
  }
  // Commit even a read-only transaction: aborting the one that opened the
  // DBI handles would close them.
  UCRFS_TRY(txn.Commit());
  std::unique_ptr<Store> store(new Store(root, std::move(env)));
  if (mode == Mode::kReadWrite) {
    store->lock_fd_ = ::open((root + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (store->lock_fd_ < 0) return ErrnoError("open " + root + "/lock");
    while (::flock(store->lock_fd_, LOCK_SH) != 0) {
      if (errno != EINTR) return ErrnoError("lock " + root + "/lock");
    }
    store->RemoveDeadStaging();
  }
  return store;
}

void Store::RemoveDeadStaging() {
  std::string dir = root_ + "/staging";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    pid_t pid = static_cast<pid_t>(std::strtol(name.c_str(), nullptr, 10));
    if (pid > 0 && ProcessAlive(pid)) continue;
    spdlog::info("removing stale staging directory {}/{}", dir, name);
    Status st = RemoveAll(dir + "/" + name);
    if (!st.ok()) spdlog::warn("{}", st.error().message());
  }
  ::closedir(d);
}

std::string Store::BlobPath(const Digest& d) const {
  return fmt::format("{}/blobs/{}/{}", root_, d.algorithm_name(), d.hex());
}

bool Store::HasBlob(const Digest& d) const { return PathExists(BlobPath(d)); }

std::string Store::ChunkPath(const Digest& chunk) const {
  return fmt::format("{}/chunks/{}/{}", root_, chunk.algorithm_name(), chunk.hex());
}

std::string Store::DecodedPath(const Digest& layer) const {
  return fmt::format("{}/decoded/{}-{}.tar", root_, layer.algorithm_name(), layer.hex());
}

Result<std::unique_ptr<Staging>> Store::BeginStaging() {
  static std::atomic<uint64_t> counter{0};
  std::string path = fmt::format("{}/staging/{}-{}-{:x}", root_, ::getpid(), counter++, std::random_device{}());
  if (::mkdir(path.c_str(), 0700) != 0) return ErrnoError("mkdir " + path);
  return std::unique_ptr<Staging>(new Staging(path));
}

Status Store::CommitImage(Staging& staging, const ImageRecord& image) {
  for (const Digest& d : staging.staged()) {
    std::string from = staging.StagedPath(d), to = BlobPath(d);
    if (::rename(from.c_str(), to.c_str()) != 0) return ErrnoError(fmt::format("rename {} to {}", from, to));
  }
  for (const char* alg : {"sha256", "sha512"}) UCRFS_TRY(SyncDir(fmt::format("{}/blobs/{}", root_, alg)));
  // Every blob the record names must be in place before the record exists.
  std::vector<Digest> needed{image.manifest_digest, image.config.digest};
  if (image.index_digest) needed.push_back(*image.index_digest);
  if (image.trace) needed.push_back(*image.trace);
  for (const auto& l : image.layers) needed.push_back(l.digest);
  for (const Digest& d : needed) {
    if (HasBlob(d)) continue;
    // A lazy layer has no blob, only its index (which never leaves the store).
    auto layer = FindLayer(*this, d);
    if (layer.ok() && *layer && IsLazy((*layer)->format)) continue;
    return Error(Errc::kInternal, fmt::format("commit {}: blob {} missing", image.key, d.str()));
  }
  Txn txn;
  UCRFS_TRY(txn.Begin(env_->env, true));
  std::string value = image.ToJson();
  MDB_val k = Val(image.key), v = Val(value);
  int rc = mdb_put(txn.get(), (*env_)[Dbi::kImages], &k, &v, 0);
  if (rc != 0) return LmdbError("put image", rc);
  return txn.Commit();
}

Result<std::optional<ImageRecord>> Store::FindImage(const std::string& key) const {
  Txn txn;
  UCRFS_TRY(txn.Begin(env_->env, false));
  MDB_val k = Val(key), v;
  int rc = mdb_get(txn.get(), (*env_)[Dbi::kImages], &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<ImageRecord>();
  if (rc != 0) return LmdbError("get image", rc);
  UCRFS_ASSIGN(ImageRecord r, ImageRecord::FromJson(View(v)));
  return std::optional<ImageRecord>(std::move(r));
}

Result<std::vector<ImageRecord>> Store::ListImages() const {
  Txn txn;
  UCRFS_TRY(txn.Begin(env_->env, false));
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn.get(), (*env_)[Dbi::kImages], &cur);
  if (rc != 0) return LmdbError("open cursor", rc);
  std::vector<ImageRecord> out;
  MDB_val k, v;
  Status st;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    auto r = ImageRecord::FromJson(View(v));
    if (!r.ok()) {
      st = r.error();
      break;
    }
    out.push_back(std::move(r).value());
  }
  mdb_cursor_close(cur);
  if (!st.ok()) return st.error();
  if (rc != MDB_NOTFOUND && rc != 0) return LmdbError("iterate images", rc);
  return out;
}

Result<uint64_t> NextId(Txn& txn, const Store::Env& env, std::string_view counter) {
  UCRFS_ASSIGN(auto cur, txn.Get(env[Dbi::kMeta], counter));
  uint64_t next = 1;
  if (cur) next = std::strtoull(std::string(*cur).c_str(), nullptr, 10) + 1;
  UCRFS_TRY(txn.Put(env[Dbi::kMeta], counter, std::to_string(next)));
  return next;
}

// --- Staging and BlobWriter ---

Staging::~Staging() {
  Status st = RemoveAll(path_);
  if (!st.ok()) spdlog::warn("{}", st.error().message());
}

std::string Staging::StagedPath(const Digest& d) const {
  return fmt::format("{}/{}-{}", path_, d.algorithm_name(), d.hex());
}

Result<std::unique_ptr<BlobWriter>> Staging::NewBlob(const fetch::Descriptor& desc) {
  std::string path = StagedPath(desc.digest) + ".partial";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("create " + path);
  return std::unique_ptr<BlobWriter>(new BlobWriter(path, desc, fd));
}

Status Staging::PutBytes(const Digest& digest, std::string_view bytes) {
  std::string path = StagedPath(digest);
  UniqueFd fd(::open((path + ".partial").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return ErrnoError("create " + path);
  UCRFS_TRY(WriteAll(fd.get(), bytes, path));
  if (::fsync(fd.get()) != 0) return ErrnoError("fsync " + path);
  if (::rename((path + ".partial").c_str(), path.c_str()) != 0) return ErrnoError("rename " + path);
  return Ok();
}

Status Staging::PutFile(const Digest& digest, const std::string& file) {
  {
    UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return ErrnoError("open " + file);
    if (::fsync(fd.get()) != 0) return ErrnoError("fsync " + file);
  }
  std::string path = StagedPath(digest);
  if (::rename(file.c_str(), path.c_str()) != 0) return ErrnoError(fmt::format("rename {} to {}", file, path));
  return Ok();
}

std::vector<Digest> Staging::staged() const {
  std::vector<Digest> out;
  DIR* d = ::opendir(path_.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    auto dash = name.find('-');
    if (dash == std::string_view::npos || name.find('.') != std::string_view::npos) continue;
    auto digest = Digest::Parse(fmt::format("{}:{}", name.substr(0, dash), name.substr(dash + 1)));
    if (digest.ok()) out.push_back(*digest);
  }
  ::closedir(d);
  return out;
}

BlobWriter::BlobWriter(std::string path, fetch::Descriptor desc, int fd)
    : path_(std::move(path)), desc_(std::move(desc)), fd_(fd), hasher_(desc_.digest.algorithm()) {}

BlobWriter::~BlobWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
}

Status BlobWriter::Write(std::string_view data) {
  if (desc_.size >= 0 && written_ + data.size() > static_cast<uint64_t>(desc_.size)) {
    return Error(Errc::kDigestMismatch, fmt::format("blob {}: more than the {} bytes its descriptor states",
                                                    desc_.digest.str(), desc_.size));
  }
  hasher_.Update(data);
  UCRFS_TRY(WriteAll(fd_, data, path_));
  written_ += data.size();
  return Ok();
}

Status BlobWriter::Restart() {
  if (::ftruncate(fd_, 0) != 0 || ::lseek(fd_, 0, SEEK_SET) != 0) return ErrnoError("truncate " + path_);
  hasher_.Reset();
  written_ = 0;
  return Ok();
}

Status BlobWriter::Finish() {
  if (desc_.size >= 0 && written_ != static_cast<uint64_t>(desc_.size)) {
    return Error(Errc::kDigestMismatch, fmt::format("blob {}: got {} bytes, its descriptor states {}",
                                                    desc_.digest.str(), written_, desc_.size));
  }
  UCRFS_TRY(VerifyDigest(desc_.digest, hasher_.Finish(), "blob"));
  if (::fsync(fd_) != 0) return ErrnoError("fsync " + path_);
  ::close(fd_);
  fd_ = -1;
  std::string final_path = path_.substr(0, path_.size() - std::string_view(".partial").size());
  if (::rename(path_.c_str(), final_path.c_str()) != 0) {
    Status st = ErrnoError("rename " + path_);
    ::unlink(path_.c_str());
    return st;
  }
  return Ok();
}

}  // namespace ucrfs::index
