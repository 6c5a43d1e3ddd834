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
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>

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

std::optional<Digest> TocDigest(const fetch::Descriptor& layer, TocFormat format) {
  const char* key = format == TocFormat::kEstargz ? "containerd.io/snapshot/stargz/toc.digest"
                                                  : "io.containers.zstd-chunked.manifest-checksum";
  auto it = layer.annotations.find(key);
  if (it == layer.annotations.end()) return std::nullopt;
  auto d = Digest::Parse(it->second);
  return d.ok() ? std::optional<Digest>(*d) : std::nullopt;
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
             SourceOpener opener)
      : store_(store), layer_(std::move(layer)), format_(format), chunks_(std::move(chunks)),
        opener_(std::move(opener)) {}

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
    if (Status st = ReadCached(path, off, buf, n); st.ok()) return st;
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
        if (!flight->status.ok()) return flight->status;
      }
    }
    if (leader) {
      Status st = Fetch(c, path);
      std::lock_guard lock(mu_);
      flight->status = st;
      flight->done = true;
      flights_.erase(c.chunk.digest.str());
      cv_.notify_all();
      if (!st.ok()) return st;
    }
    return ReadCached(path, off, buf, n);
  }

  static Status ReadCached(const std::string& path, uint64_t off, char* buf, size_t n) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return ErrnoError("open " + path);
    UCRFS_ASSIGN(size_t got, PreadFull(fd.get(), buf, n, off, path));
    if (got != n) return Error(Errc::kIo, fmt::format("cached chunk {} is short", path));
    return Ok();
  }

  Status Fetch(const ChunkRec& c, const std::string& path) {
    UCRFS_ASSIGN(std::string data, CompressedBytes(c));
    auto decoded = DecodeChunk(format_, c.chunk, data);
    if (!decoded.ok()) {
      spdlog::warn("layer {}: {}", layer_.digest.str(), decoded.error().message());
      return decoded.error();
    }
    return CacheChunk(path, *decoded);
  }

  // A chunk's compressed bytes: from the blob when the store has it (a full
  // pull happened since), else from the source by Range.
  Result<std::string> CompressedBytes(const ChunkRec& c) {
    if (store_.HasBlob(layer_.digest)) {
      return ReadFileRange(store_.BlobPath(layer_.digest), c.chunk.blob_offset, c.chunk.blob_size);
    }
    std::shared_ptr<fetch::ImageSource> source;
    {
      std::lock_guard lock(source_mu_);
      if (source_ == nullptr) {
        auto s = opener_();
        if (!s.ok()) return s.error();
        source_ = *s;
      }
      source = source_;
    }
    return source->GetBlobRange(layer_, c.chunk.blob_offset, c.chunk.blob_size);
  }

  const Store& store_;
  const fetch::Descriptor layer_;
  const TocFormat format_;
  const std::vector<ChunkRec> chunks_;  // by vstart
  const SourceOpener opener_;

  std::mutex source_mu_;
  std::shared_ptr<fetch::ImageSource> source_;  // guarded by source_mu_

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::shared_ptr<Flight>> flights_;  // guarded by mu_
};

// Fetches the footer and the TOC and parses them; nullopt when there is no
// footer of the announced format.
Result<std::optional<Toc>> FetchToc(fetch::ImageSource& source, const fetch::Descriptor& layer, TocFormat format,
                                    const Digest& expected) {
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
  UCRFS_ASSIGN(Toc toc, ParseToc(*loc, toc_bytes, expected));
  return std::optional<Toc>(std::move(toc));
}

}  // namespace

Result<std::optional<LayerRecord>> IndexLazyLayer(Store& store, fetch::ImageSource& source,
                                                  const fetch::Descriptor& layer) {
  UCRFS_ASSIGN(auto existing, FindLayer(store, layer.digest));
  if (existing) return existing;
  auto format = LazyFormatOf(layer.annotations);
  if (!format) return std::optional<LayerRecord>();
  const std::string what = "layer " + layer.digest.str();
  auto expected = TocDigest(layer, *format);
  if (!expected) return Error(Errc::kMalformed, what + ": lazy layer without a valid TOC digest annotation");
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
                                                    const LayerRecord& rec, const SourceOpener& opener) {
  if (!opener) return Error(Errc::kInternal, "lazy layer " + layer.digest.str() + " opened without a source");
  UCRFS_ASSIGN(auto chunks, LoadPerLayer<ChunkRec>(store, Dbi::kChunks, rec, rec.chunks, DecodeChunkRec, "chunks"));
  return std::unique_ptr<LayerReader>(new LazyReader(store, layer, TocFormatOf(rec.format), std::move(chunks),
                                                     opener));
}

}  // namespace ucrfs::index
