#include "ucrfs/index/chunk_cache.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "ucrfs/common/log.h"

namespace ucrfs::index {

std::shared_ptr<ChunkCache> ChunkCache::Open(std::string dir, uint64_t max_bytes) {
  std::shared_ptr<ChunkCache> c(new ChunkCache(std::move(dir), max_bytes));
  std::lock_guard lock(c->mu_);
  c->ScanLocked();
  return c;
}

// Counts every piece file in the directory, oldest (by mtime) least recent.
// Temporary files (".tmp-") of writers in progress are not pieces.
void ChunkCache::ScanLocked() {
  struct Found {
    std::string path;
    uint64_t size;
    int64_t mtime;
  };
  std::vector<Found> found;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir_, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st;
    std::string p = it->path().string();
    if (p.find(".tmp-") != std::string::npos || ::lstat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    found.push_back(Found{p, static_cast<uint64_t>(st.st_size), static_cast<int64_t>(st.st_mtime)});
  }
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.mtime > b.mtime; });
  for (auto& f : found) {
    if (pieces_.contains(f.path)) continue;
    lru_.push_back(f.path);
    pieces_.emplace(f.path, Slot{f.size, std::prev(lru_.end())});
    bytes_ += f.size;
  }
}

void ChunkCache::Added(const std::string& path, uint64_t size) {
  std::lock_guard lock(mu_);
  if (auto it = pieces_.find(path); it != pieces_.end()) {
    bytes_ -= it->second.size;
    lru_.erase(it->second.it);
    pieces_.erase(it);
  }
  lru_.push_front(path);
  pieces_.emplace(path, Slot{size, lru_.begin()});
  bytes_ += size;
  EvictLocked();
}

void ChunkCache::Used(const std::string& path) {
  std::lock_guard lock(mu_);
  if (auto it = pieces_.find(path); it != pieces_.end()) lru_.splice(lru_.begin(), lru_, it->second.it);
}

// Removes least recently used pieces until under the limit, never the most
// recent one (the piece just written, about to be read).
void ChunkCache::EvictLocked() {
  if (max_bytes_ == 0) return;
  bool rescanned = false;
  while (bytes_ > max_bytes_) {
    if (lru_.size() <= 1) {
      if (rescanned) return;
      // Other processes may have added pieces this one does not know.
      rescanned = true;
      ScanLocked();
      continue;
    }
    std::string victim = lru_.back();
    lru_.pop_back();
    auto it = pieces_.find(victim);
    bytes_ -= it->second.size;
    pieces_.erase(it);
    if (::unlink(victim.c_str()) == 0) {
      ++evictions_;
    } else if (errno != ENOENT) {
      spdlog::warn("chunk cache: cannot remove {}: {}", victim, std::strerror(errno));
    }
  }
}

bool ChunkCache::NearlyFull() const {
  std::lock_guard lock(mu_);
  return max_bytes_ > 0 && bytes_ >= max_bytes_ / 10 * 9;
}

uint64_t ChunkCache::bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

uint64_t ChunkCache::evictions() const {
  std::lock_guard lock(mu_);
  return evictions_;
}

}  // namespace ucrfs::index
