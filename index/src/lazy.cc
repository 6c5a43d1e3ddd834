// Lazy layers (eStargz, zstd:chunked): indexed from their TOC, read chunk by
// chunk from the registry.
//
// Each regular file's chunks are laid out one after another in a virtual
// "decoded stream", so a lazy file's inode has one ordinary extent into it and
// the merged tree needs to know nothing about chunks. The chunks DBI maps that
// stream back: (layer id, seq) -> virtual start, size, blob range, inner
// offset, digest, in stream order.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "layer_internal.h"
#include "ucrfs/common/file.h"
#include "ucrfs/common/log.h"
#include "ucrfs/index/toc.h"

namespace ucrfs::index {
namespace {

struct ChunkRec {
  uint64_t vstart = 0;  // offset in the layer's virtual decoded stream
  Chunk chunk;
};

std::string EncodeChunk(const ChunkRec& c) {
  return Encoder()
      .Var(c.vstart)
      .Var(c.chunk.size)
      .Var(c.chunk.blob_offset)
      .Var(c.chunk.blob_size)
      .Var(c.chunk.inner_offset)
      .Str(c.chunk.digest.str())
      .take();
}

Result<ChunkRec> DecodeChunkRec(std::string_view v) {
  Decoder d(v);
  ChunkRec c;
  c.vstart = d.Var();
  c.chunk.size = d.Var();
  c.chunk.blob_offset = d.Var();
  c.chunk.blob_size = d.Var();
  c.chunk.inner_offset = d.Var();
  std::string_view digest = d.Str();
  UCRFS_TRY(d.Check("chunk"));
  UCRFS_ASSIGN(c.chunk.digest, Digest::Parse(digest));
  return c;
}

TocFormat TocFormatOf(LayerFormat f) {
  return f == LayerFormat::kZstdChunked ? TocFormat::kZstdChunked : TocFormat::kEstargz;
}

// Every TOC digest the descriptor claims. Each must verify: a converter that
// writes both a manifest checksum and a stargz TOC digest (ctr-remote does
// for zstd:chunked) is held to both.
Result<std::vector<Digest>> TocDigests(const fetch::Descriptor& layer, TocFormat format) {
  std::vector<const char*> keys = {"containerd.io/snapshot/stargz/toc.digest"};
  if (format == TocFormat::kZstdChunked) {
    keys.push_back("io.containers.zstd-chunked.manifest-checksum");
    keys.push_back("io.github.containers.zstd-chunked.manifest-checksum");
  }
  std::vector<Digest> out;
  for (const char* key : keys) {
    auto it = layer.annotations.find(key);
    if (it == layer.annotations.end()) continue;
    auto d = Digest::Parse(it->second);
    if (!d.ok()) return d.error().Wrap(std::string("annotation ") + key);
    out.push_back(*d);
  }
  if (out.empty()) return Error(Errc::kMalformed, "lazy layer without a TOC digest annotation");
  return out;
}

// Writes a verified chunk into the cache: temporary name, then rename, so a
// reader never sees a partial chunk.
Status CacheChunk(const std::string& path, std::string_view bytes) {
  std::string tmp = fmt::format("{}.tmp-{}-{:x}", path, ::getpid(), std::random_device{}());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd.valid()) return ErrnoError("create " + tmp);
  Status st = WriteAll(fd.get(), bytes, tmp);
  fd.reset();
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = ErrnoError("rename " + tmp);
  if (!st.ok()) ::unlink(tmp.c_str());
  return st;
}

class LazyReader final : public LayerReader {
 public:
  LazyReader(const Store& store, fetch::Descriptor layer, TocFormat format, std::vector<ChunkRec> chunks,
             uint64_t prefetch_end, LazyOptions lazy)
      : store_(store), layer_(std::move(layer)), format_(format), chunks_(std::move(chunks)),
        prefetch_end_(prefetch_end), lazy_(std::move(lazy)) {
    if (lazy_.prefetch != Prefetch::kNone) prefetcher_ = std::thread([this] { RunPrefetch(); });
  }

  ~LazyReader() override {
    stop_ = true;
    if (prefetcher_.joinable()) prefetcher_.join();
  }

  Result<size_t> ReadAt(uint64_t offset, char* buf, size_t len) override {
    // The first chunk that ends after `offset`.
    auto it = std::upper_bound(chunks_.begin(), chunks_.end(), offset,
                               [](uint64_t off, const ChunkRec& c) { return off < c.vstart + c.chunk.size; });
    size_t done = 0;
    for (; it != chunks_.end() && done < len; ++it) {
      uint64_t pos = offset + done;
      if (it->vstart > pos) break;  // never: files are contiguous in the stream
      uint64_t in_chunk = pos - it->vstart;
      size_t n = static_cast<size_t>(std::min<uint64_t>(len - done, it->chunk.size - in_chunk));
      UCRFS_TRY(ReadChunk(*it, in_chunk, buf + done, n));
      done += n;
    }
    return done;
  }

 private:
  struct Flight {
    bool done = false;
    Status status;
  };

  // Copies n bytes at `off` of a chunk into buf, fetching the chunk first if
  // the cache does not have it. Concurrent readers of one missing chunk wait
  // for a single fetch.
  Status ReadChunk(const ChunkRec& c, uint64_t off, char* buf, size_t n) {
    const std::string path = store_.ChunkPath(c.chunk.digest);
    if (Status st = ReadCached(path, off, buf, n); st.ok()) {
      ++lazy_.stats->cache_hits;
      return st;
    }
    ++lazy_.stats->cache_misses;
    ++waiting_;
    auto started = std::chrono::steady_clock::now();
    Status st = FetchOnce(c, path);
    lazy_.stats->wait_ns += static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count());
    --waiting_;
    UCRFS_TRY(st);
    return ReadCached(path, off, buf, n);
  }

  // Makes sure a chunk is in the cache, with one fetch however many threads
  // ask at once.
  Status FetchOnce(const ChunkRec& c, const std::string& path) {
    std::shared_ptr<Flight> flight;
    bool leader = false;
    {
      std::unique_lock lock(mu_);
      auto [it, inserted] = flights_.try_emplace(c.chunk.digest.str());
      if (inserted) it->second = std::make_shared<Flight>();
      flight = it->second;
      leader = inserted;
      if (!leader) {
        cv_.wait(lock, [&] { return flight->done; });
        return flight->status;
      }
    }
    Status st = PathExists(path) ? Ok() : Fetch(c, path);
    std::lock_guard lock(mu_);
    flight->status = st;
    flight->done = true;
    flights_.erase(c.chunk.digest.str());
    cv_.notify_all();
    return st;
  }

  static Status ReadCached(const std::string& path, uint64_t off, char* buf, size_t n) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return ErrnoError("open " + path);
    UCRFS_ASSIGN(size_t got, PreadFull(fd.get(), buf, n, off, path));
    if (got != n) return Error(Errc::kIo, fmt::format("cached chunk {} is short", path));
    return Ok();
  }

  Status Fetch(const ChunkRec& c, const std::string& path) {
    auto data = CompressedBytes(c.chunk.blob_offset, c.chunk.blob_size);
    Status st = data.ok() ? Keep(c, path, *data) : Status(data.error());
    if (!st.ok()) {
      ++lazy_.stats->fetch_errors;
      spdlog::warn("layer {}: {}", layer_.digest.str(), st.error().message());
    }
    return st;
  }

  // Decodes and verifies a chunk from its compressed bytes, then caches it.
  Status Keep(const ChunkRec& c, const std::string& path, std::string_view data) {
    UCRFS_ASSIGN(std::string decoded, DecodeChunk(format_, c.chunk, data));
    UCRFS_TRY(CacheChunk(path, decoded));
    ++lazy_.stats->chunks_fetched;
    return Ok();
  }

  // The prefetch region in one request, then (kAll) every chunk still
  // missing, one at a time, standing aside while reads wait for fetches.
  void RunPrefetch() {
    ++lazy_.stats->prefetch_running;
    Prefetch1();
    --lazy_.stats->prefetch_running;
  }

  void Prefetch1() {
    if (prefetch_end_ > 0) {
      auto region = CompressedBytes(0, prefetch_end_);
      if (region.ok()) {
        for (const ChunkRec& c : chunks_) {
          if (stop_) return;
          if (c.chunk.blob_offset + c.chunk.blob_size > prefetch_end_) continue;
          std::string path = store_.ChunkPath(c.chunk.digest);
          if (PathExists(path)) continue;
          std::string_view bytes = std::string_view(*region).substr(c.chunk.blob_offset, c.chunk.blob_size);
          if (Keep(c, path, bytes).ok()) ++lazy_.stats->prefetched_chunks;
        }
      } else {
        spdlog::info("layer {}: prefetch of the landmark region failed: {}", layer_.digest.str(),
                     region.error().message());
      }
    }
    if (lazy_.prefetch != Prefetch::kAll) return;
    std::vector<const ChunkRec*> order;
    for (const ChunkRec& c : chunks_) order.push_back(&c);
    std::stable_sort(order.begin(), order.end(), [](const ChunkRec* a, const ChunkRec* b) {
      return a->chunk.blob_offset < b->chunk.blob_offset;
    });
    for (const ChunkRec* c : order) {
      while (waiting_ > 0 && !stop_) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (stop_) return;
      std::string path = store_.ChunkPath(c->chunk.digest);
      if (PathExists(path)) continue;
      if (FetchOnce(*c, path).ok()) {
        ++lazy_.stats->prefetched_chunks;
      } else {
        // The source is unreachable or lying: leave the rest to on-demand
        // reads rather than hammering it.
        return;
      }
    }
  }

  // Compressed bytes of the blob: from the blob file when the store has it
  // (a full pull happened since), else from the source by Range.
  Result<std::string> CompressedBytes(uint64_t offset, uint64_t size) {
    if (store_.HasBlob(layer_.digest)) return ReadFileRange(store_.BlobPath(layer_.digest), offset, size);
    std::shared_ptr<fetch::ImageSource> source;
    {
      std::lock_guard lock(source_mu_);
      if (source_ == nullptr) {
        auto s = lazy_.opener();
        if (!s.ok()) return s.error();
        source_ = *s;
      }
      source = source_;
    }
    ++lazy_.stats->requests;
    auto data = source->GetBlobRange(layer_, offset, size);
    if (data.ok()) lazy_.stats->bytes_fetched += data->size();
    return data;
  }

  const Store& store_;
  const fetch::Descriptor layer_;
  const TocFormat format_;
  const std::vector<ChunkRec> chunks_;  // by vstart
  const uint64_t prefetch_end_;
  const LazyOptions lazy_;
  std::atomic<int> waiting_{0};  // reads waiting for a fetch: the prefetcher stands aside
  std::atomic<bool> stop_{false};
  std::thread prefetcher_;  // started last, joined first

  std::mutex source_mu_;
  std::shared_ptr<fetch::ImageSource> source_;  // guarded by source_mu_

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::shared_ptr<Flight>> flights_;  // guarded by mu_
};

// Fetches the footer and the TOC and parses them; nullopt when there is no
// footer of the announced format.
Result<std::optional<Toc>> FetchToc(fetch::ImageSource& source, const fetch::Descriptor& layer, TocFormat format,
                                    const std::vector<Digest>& expected) {
  if (layer.size <= 0) return Error(Errc::kMalformed, "lazy layer descriptor has no size");
  uint64_t size = static_cast<uint64_t>(layer.size);
  uint64_t tail_len = std::min<uint64_t>(kFooterFetchSize, size);
  UCRFS_ASSIGN(std::string tail, source.GetBlobRange(layer, size - tail_len, tail_len));
  auto loc = ParseFooter(format, tail, size);
  if (!loc.ok()) {
    if (loc.error().code() == Errc::kNotFound) return std::optional<Toc>();
    return loc.error();
  }
  UCRFS_ASSIGN(std::string toc_bytes, source.GetBlobRange(layer, loc->offset, loc->size));
  std::optional<Toc> toc;
  for (const Digest& d : expected) {
    UCRFS_ASSIGN(Toc parsed, ParseToc(*loc, toc_bytes, d));
    toc = std::move(parsed);
  }
  return toc;
}

}  // namespace

Result<std::optional<LayerRecord>> IndexLazyLayer(Store& store, fetch::ImageSource& source,
                                                  const fetch::Descriptor& layer) {
  UCRFS_ASSIGN(auto existing, FindLayer(store, layer.digest));
  if (existing) return existing;
  auto format = LazyFormatOf(layer.annotations);
  if (!format) return std::optional<LayerRecord>();
  const std::string what = "layer " + layer.digest.str();
  auto expected = TocDigests(layer, *format);
  if (!expected.ok()) return expected.error().Wrap(what);
  auto toc = FetchToc(source, layer, *format, *expected);
  if (!toc.ok()) return toc.error().Wrap(what);
  if (!*toc) {
    spdlog::info("{}: no {} footer; it will be downloaded", what,
                 *format == TocFormat::kEstargz ? "eStargz" : "zstd:chunked");
    return std::optional<LayerRecord>();
  }
  // Lay the files out in the virtual stream and give each its one extent.
  std::vector<ChunkRec> chunks;
  uint64_t vpos = 0;
  for (auto& [index, file_chunks] : (*toc)->chunks) {
    TarEntry& e = (*toc)->entries[index];
    e.extents.clear();
    if (e.size > 0) e.extents.push_back(Extent{0, vpos, e.size});
    for (const Chunk& c : file_chunks) chunks.push_back(ChunkRec{vpos + c.file_offset, c});
    vpos += e.size;
  }
  LayerRecord rec;
  rec.format = *format == TocFormat::kEstargz ? LayerFormat::kEstargz : LayerFormat::kZstdChunked;
  rec.decoded_size = vpos;
  rec.entries = (*toc)->entries.size();
  rec.chunks = chunks.size();
  rec.prefetch_end = (*toc)->prefetch_end;

  const auto& env = store.env();
  Txn txn;
  UCRFS_TRY(txn.Begin(env.env, true));
  UCRFS_ASSIGN(auto raced, txn.Get(env[Dbi::kLayers], layer.digest.str()));
  if (raced) {
    UCRFS_ASSIGN(LayerRecord r, DecodeRecord(*raced));
    return std::optional<LayerRecord>(r);
  }
  UCRFS_ASSIGN(rec.id, NextId(txn, env, "next_layer_id"));
  for (uint64_t i = 0; i < (*toc)->entries.size(); ++i) {
    UCRFS_TRY(txn.Put(env[Dbi::kLayerEntries], EntryKey(rec.id, i), EncodeEntry((*toc)->entries[i]), MDB_APPEND));
  }
  for (uint64_t i = 0; i < chunks.size(); ++i) {
    UCRFS_TRY(txn.Put(env[Dbi::kChunks], EntryKey(rec.id, i), EncodeChunk(chunks[i]), MDB_APPEND));
  }
  UCRFS_TRY(txn.Put(env[Dbi::kLayers], layer.digest.str(), EncodeRecord(rec)));
  UCRFS_TRY(txn.Commit());
  spdlog::info("indexed lazy {}: {} entries, {} chunks, {} bytes", what, rec.entries, rec.chunks, rec.decoded_size);
  return std::optional<LayerRecord>(rec);
}

Result<std::unique_ptr<LayerReader>> OpenLazyReader(const Store& store, const fetch::Descriptor& layer,
                                                    const LayerRecord& rec, const LazyOptions& lazy) {
  if (!lazy.opener) return Error(Errc::kInternal, "lazy layer " + layer.digest.str() + " opened without a source");
  UCRFS_ASSIGN(auto chunks, LoadPerLayer<ChunkRec>(store, Dbi::kChunks, rec, rec.chunks, DecodeChunkRec, "chunks"));
  return std::unique_ptr<LayerReader>(new LazyReader(store, layer, TocFormatOf(rec.format), std::move(chunks),
                                                     rec.prefetch_end, lazy));
}

}  // namespace ucrfs::index
