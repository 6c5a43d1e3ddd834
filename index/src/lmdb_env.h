// The store's LMDB environment: every database (DBI) in one enum, and the
// small RAII and lookup helpers the index files share. Private to index/.
#pragma once

#include <lmdb.h>

#include <optional>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "ucrfs/common/error.h"
#include "ucrfs/index/store.h"

namespace ucrfs::index {

// Every DBI of the store; docs/store.md describes each key and value.
enum class Dbi : int {
  kMeta,          // "schema_version", counters
  kImages,        // image key -> ImageRecord JSON
  kLayers,        // layer digest -> LayerRecord
  kLayerEntries,  // (layer id, seq) -> TarEntry
  kCheckpoints,   // (layer id, seq) -> gzip Checkpoint
  kTrees,         // manifest digest -> TreeRecord
  kInodes,        // (tree id, ino) -> InodeRecord
  kDirents,       // (tree id, parent ino, name) -> child ino, type
  kXattrs,        // (tree id, ino, name) -> value
  kChunks,        // (layer id, seq) -> lazy layer chunk
  kCount,
};

inline constexpr const char* kDbiNames[] = {"meta",  "images", "layers",  "layer_entries", "checkpoints",
                                            "trees", "inodes", "dirents", "xattrs", "chunks"};
static_assert(std::size(kDbiNames) == static_cast<size_t>(Dbi::kCount));

struct Store::Env {
  MDB_env* env = nullptr;
  MDB_dbi dbis[static_cast<int>(Dbi::kCount)] = {};
  MDB_dbi operator[](Dbi d) const { return dbis[static_cast<int>(d)]; }
  ~Env() {
    if (env != nullptr) mdb_env_close(env);
  }
};

inline Error LmdbError(std::string_view what, int rc) {
  return Error(rc == MDB_MAP_FULL ? Errc::kTooBig : Errc::kIo,
               fmt::format("store index: {}: {}", what, mdb_strerror(rc)));
}

inline MDB_val Val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
inline std::string_view View(const MDB_val& v) { return {static_cast<const char*>(v.mv_data), v.mv_size}; }

// Owns a transaction; aborts it unless committed.
class Txn {
 public:
  Txn() = default;
  ~Txn() {
    if (txn_ != nullptr) mdb_txn_abort(txn_);
  }
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;

  Status Begin(MDB_env* env, bool write) {
    int rc = mdb_txn_begin(env, nullptr, write ? 0 : MDB_RDONLY, &txn_);
    if (rc != 0) {
      txn_ = nullptr;
      return LmdbError("begin transaction", rc);
    }
    return Ok();
  }
  Status Commit() {
    int rc = mdb_txn_commit(txn_);
    txn_ = nullptr;
    return rc == 0 ? Ok() : Status(LmdbError("commit", rc));
  }
  MDB_txn* get() const { return txn_; }

  // The value of key, or nullopt. The view lives as long as the transaction.
  Result<std::optional<std::string_view>> Get(MDB_dbi dbi, std::string_view key) const {
    MDB_val k = Val(key), v;
    int rc = mdb_get(txn_, dbi, &k, &v);
    if (rc == MDB_NOTFOUND) return std::optional<std::string_view>();
    if (rc != 0) return LmdbError("get", rc);
    return std::optional<std::string_view>(View(v));
  }
  Status Put(MDB_dbi dbi, std::string_view key, std::string_view value, unsigned flags = 0) {
    MDB_val k = Val(key), v = Val(value);
    int rc = mdb_put(txn_, dbi, &k, &v, flags);
    return rc == 0 ? Ok() : Status(LmdbError("put", rc));
  }
  // Calls fn(key, value) for every key starting with prefix, in order, until
  // fn returns false.
  template <typename Fn>
  Status Scan(MDB_dbi dbi, std::string_view prefix, Fn&& fn) const {
    MDB_cursor* cur = nullptr;
    int rc = mdb_cursor_open(txn_, dbi, &cur);
    if (rc != 0) return LmdbError("open cursor", rc);
    MDB_val k = Val(prefix), v;
    // LMDB refuses an empty key: an empty prefix means from the first key.
    for (rc = mdb_cursor_get(cur, &k, &v, prefix.empty() ? MDB_FIRST : MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      std::string_view key = View(k);
      if (key.substr(0, prefix.size()) != prefix) break;
      if (!fn(key, View(v))) break;
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) return LmdbError("cursor", rc);
    return Ok();
  }

 private:
  MDB_txn* txn_ = nullptr;
};

// Allocates the next id of a counter kept in the meta DBI (within txn).
Result<uint64_t> NextId(Txn& txn, const Store::Env& env, std::string_view counter);

}  // namespace ucrfs::index
