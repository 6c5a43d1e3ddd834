// The ucrfs store: one directory holding verified blobs and an LMDB index.
//
//   <root>/blobs/<alg>/<hex>   content-addressed blobs (manifests, configs,
//                              layers), each verified before it got its name
//   <root>/staging/<pid>-<n>/  a pull in progress; never read as content
//   <root>/index/              the LMDB environment (data.mdb, lock.mdb)
//
// Rules (docs/store.md): a blob is written under staging/, verified, fsynced
// and then renamed into blobs/; the LMDB record naming it commits only after
// the rename. A crash therefore never leaves a record pointing at bytes that
// are not there, and a failed pull leaves nothing behind but its staging
// directory, which is removed (or, after a crash, by the next writer).
//
// Thread-safety: a Store may be used from several threads; several processes
// may open one store at once (LMDB serializes writers across processes).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ucrfs/common/digest.h"
#include "ucrfs/common/error.h"
#include "ucrfs/fetch/manifest.h"
#include "ucrfs/fetch/source.h"

namespace ucrfs::index {

inline constexpr uint32_t kSchemaVersion = 1;

// What the store knows of one pulled image, keyed by its canonical reference
// (fetch::ImageRef::str()).
struct ImageRecord {
  std::string key;
  Digest manifest_digest = Digest::Sha256Of("");
  std::string manifest_media_type;
  std::optional<Digest> index_digest;  // when the reference named an index
  fetch::Platform platform;
  fetch::Descriptor config;
  std::vector<fetch::Descriptor> layers;  // base first
  int64_t pulled_at = 0;                  // unix seconds
  int64_t used_at_ms = 0;                 // unix milliseconds of the last mount (0: never); gc's LRU order
  // A read trace (trace.h) that came with the image's ucrfs index: its blob
  // is in the store, and a mount replays it unless told otherwise.
  std::optional<Digest> trace;

  std::string ToJson() const;
  static Result<ImageRecord> FromJson(std::string_view json);
};

class Staging;

class Store {
 public:
  enum class Mode { kReadWrite, kReadOnly };

  // Opens (kReadWrite: creating) the store at root. kReadOnly on a store that
  // does not exist is kNotFound. Refuses a store whose schema is newer than
  // kSchemaVersion. kReadWrite also removes staging directories left by
  // processes that no longer run.
  static Result<std::unique_ptr<Store>> Open(const std::string& root, Mode mode);
  ~Store();

  const std::string& root() const { return root_; }
  std::string BlobPath(const Digest& d) const;
  bool HasBlob(const Digest& d) const;

  // A fresh staging area for one pull. Removed when the Staging is destroyed.
  Result<std::unique_ptr<Staging>> BeginStaging();

  // Moves every blob of `staging` into blobs/, then records `image` (replacing
  // any record with the same key) in one transaction.
  Status CommitImage(Staging& staging, const ImageRecord& image);

  Result<std::optional<ImageRecord>> FindImage(const std::string& key) const;
  // Notes that the image was just used (ImageRecord::used_at_ms).
  Status TouchImage(const std::string& key);

  // A read-write store holds <root>/lock shared for as long as it is open, so
  // that gc (which wants it exclusively) never races a pull. kBusy when
  // another process holds it.
  Status LockExclusive();
  Result<std::vector<ImageRecord>> ListImages() const;

  // The LMDB environment, for the index's own files (lmdb_env.h).
  struct Env;
  const Env& env() const { return *env_; }
  // Where the decoded tar stream of a zstd layer is kept.
  std::string DecodedPath(const Digest& layer) const;
  // Where a verified chunk of a lazy layer is cached (named by the digest of
  // its decoded bytes).
  std::string ChunkPath(const Digest& chunk) const;

 private:
  Store(std::string root, std::unique_ptr<Env> env);
  void RemoveDeadStaging();

  const std::string root_;
  std::unique_ptr<Env> env_;
  int lock_fd_ = -1;  // <root>/lock, flock()ed shared (read-write stores)
};

// Receives one blob into staging while hashing it; Finish() verifies it.
class BlobWriter final : public fetch::BlobSink {
 public:
  ~BlobWriter() override;
  Status Write(std::string_view data) override;
  Status Restart() override;
  uint64_t written() const override { return written_; }
  // Checks size and digest against the descriptor and fsyncs. On failure the
  // staged file is removed.
  Status Finish();

 private:
  friend class Staging;
  BlobWriter(std::string path, fetch::Descriptor desc, int fd);
  const std::string path_;
  const fetch::Descriptor desc_;
  int fd_;
  Hasher hasher_;
  uint64_t written_ = 0;
};

class Staging {
 public:
  ~Staging();
  const std::string& path() const { return path_; }
  // A writer for the blob `desc` names. The blob joins this staging area only
  // once the writer's Finish() succeeds.
  Result<std::unique_ptr<BlobWriter>> NewBlob(const fetch::Descriptor& desc);
  // Stages bytes already in memory and verified by the caller under `digest`.
  Status PutBytes(const Digest& digest, std::string_view bytes);
  // Stages a file the caller wrote inside path() and verified under
  // `digest`, by fsyncing and renaming it (no copy).
  Status PutFile(const Digest& digest, const std::string& file);
  // Blobs staged so far (Finish()ed writers and PutBytes).
  std::vector<Digest> staged() const;

 private:
  friend class Store;
  friend class BlobWriter;
  explicit Staging(std::string path) : path_(std::move(path)) {}
  std::string StagedPath(const Digest& d) const;
  const std::string path_;
};

}  // namespace ucrfs::index
