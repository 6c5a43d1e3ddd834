// The size limit of <store>/chunks, where lazy layers keep what they fetched
// (decoded eStargz / zstd:chunked chunks, compressed gzip spans), each piece a
// file named by its digest.
//
// One ChunkCache per process (a mount's layers share it). It counts what the
// directory holds (scanned once at start, then every piece this process adds)
// and, while that is over the limit, removes the least recently used pieces.
// Removal is an unlink: a reader that has the file open keeps reading it, and
// a piece needed again later is fetched again, so eviction never fails a
// read. Pieces other processes add are not seen until the count runs out of
// pieces to remove and the directory is scanned again.
//
// Thread-safe.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace ucrfs::index {

class ChunkCache {
 public:
  // max_bytes 0: no limit (nothing is ever removed).
  static std::shared_ptr<ChunkCache> Open(std::string dir, uint64_t max_bytes);

  // A piece was written (size bytes): count it, then evict while over the limit.
  void Added(const std::string& path, uint64_t size);
  // A cached piece was read: it becomes the most recently used.
  void Used(const std::string& path);
  // At or above 90% of the limit: background prefetch stops here, so that it
  // never evicts what reads brought in.
  bool NearlyFull() const;

  uint64_t bytes() const;
  uint64_t evictions() const;
  uint64_t max_bytes() const { return max_bytes_; }

 private:
  ChunkCache(std::string dir, uint64_t max_bytes) : dir_(std::move(dir)), max_bytes_(max_bytes) {}
  void ScanLocked();
  void EvictLocked();

  struct Slot {
    uint64_t size = 0;
    std::list<std::string>::iterator it;
  };
  const std::string dir_;
  const uint64_t max_bytes_;
  mutable std::mutex mu_;
  std::list<std::string> lru_;                     // most recent first; guarded by mu_
  std::unordered_map<std::string, Slot> pieces_;   // guarded by mu_
  uint64_t bytes_ = 0;                             // guarded by mu_
  uint64_t evictions_ = 0;                         // guarded by mu_
};

}  // namespace ucrfs::index
