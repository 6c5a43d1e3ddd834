// Lazy layers (eStargz, zstd:chunked): indexed from their TOC, read chunk by
// chunk from the registry through the PieceFetcher (fetcher.h).
//
// Each regular file's chunks are laid out one after another in a virtual
// "decoded stream", so a lazy file's inode has one ordinary extent into it and
// the merged tree needs to know nothing about chunks. The chunks DBI maps that
// stream back: (layer id, seq) -> virtual start, size, blob range, inner
// offset, digest, in stream order.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include "fetcher.h"
#include "layer_internal.h"
#include "ucrfs/common/file.h"
#include "ucrfs/common/log.h"
#include "ucrfs/index/toc.h"

namespace ucrfs::index {

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

namespace {

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

// A read's request takes neighbours up to this many bytes in all (its own
// chunks counted, and never fewer than it needs). A chunk is verified
// by its uncompressed digest, so keeping a neighbour means inflating it
// (about three times its bytes) and hashing that: 1 MiB of them costs more
// CPU than a round trip to a registry on the same host, and on two cores it
// is taken from the reads. On loopback, with the workload of the start-up
// benchmark, 256 KiB started in 2.2-2.6 s against 2.5-3.3 s for 1 MiB (and
// fetched 33 MB instead of 44). At 9 ms per request a link slower than
// about 230 Mbit/s never reaches it.
constexpr uint64_t kMaxChunkNeighbourBytes = 256 << 10;

class LazyReader final : public LayerReader {
 public:
  LazyReader(const Store& store, const fetch::Descriptor& layer, TocFormat format, std::vector<ChunkRec> chunks,
             uint64_t prefetch_end, const LazyOptions& lazy)
      : chunks_(std::move(chunks)),
        fetcher_(store, layer, PiecesOf(chunks_), Codec(format, chunks_), lazy, 1.0, kMaxChunkNeighbourBytes) {
    fetcher_.StartPrefetch(prefetch_end);
  }

  Result<size_t> ReadAt(uint64_t offset, char* buf, size_t len) override {
    // The first chunk that ends after `offset`, and the last one the read needs.
    auto first = std::upper_bound(chunks_.begin(), chunks_.end(), offset,
                                  [](uint64_t off, const ChunkRec& c) { return off < c.vstart + c.chunk.size; });
    auto last = std::lower_bound(first, chunks_.end(), offset + len,
                                 [](const ChunkRec& c, uint64_t end) { return c.vstart + c.chunk.size < end; });
    size_t through = static_cast<size_t>(std::min(last, chunks_.end() - 1) - chunks_.begin());
    size_t done = 0;
    for (auto it = first; it != chunks_.end() && done < len; ++it) {
      uint64_t pos = offset + done;
      if (it->vstart > pos) break;  // never: files are contiguous in the stream
      uint64_t in_chunk = pos - it->vstart;
      size_t n = static_cast<size_t>(std::min<uint64_t>(len - done, it->chunk.size - in_chunk));
      size_t i = static_cast<size_t>(it - chunks_.begin());
      UCRFS_ASSIGN(UniqueFd fd, fetcher_.Open(i, std::max(i, through)));
      std::string path = "cached chunk " + it->chunk.digest.str();
      UCRFS_ASSIGN(size_t got, PreadFull(fd.get(), buf + done, n, in_chunk, path));
      if (got != n) return Error(Errc::kIo, path + " is short");
      done += n;
    }
    return done;
  }

 private:
  static std::vector<Piece> PiecesOf(const std::vector<ChunkRec>& chunks) {
    std::vector<Piece> out;
    out.reserve(chunks.size());
    for (const ChunkRec& c : chunks) out.push_back(Piece{c.chunk.blob_offset, c.chunk.blob_size, c.chunk.digest});
    return out;
  }

  // A chunk is cached decoded, once it matches its chunkDigest. Pieces are
  // looked up by their offset (two files with one content share a digest but
  // not necessarily a place in the blob).
  static PieceCodec Codec(TocFormat format, const std::vector<ChunkRec>& chunks) {
    std::map<std::pair<uint64_t, std::string>, const Chunk*> by_offset;
    for (const ChunkRec& c : chunks) by_offset.emplace(std::pair(c.chunk.blob_offset, c.chunk.digest.str()), &c.chunk);
    return [format, by_offset = std::move(by_offset)](const Piece& p, std::string_view compressed) -> Result<std::string> {
      auto it = by_offset.find(std::pair(p.blob_offset, p.key.str()));
      if (it == by_offset.end()) return Error(Errc::kInternal, "unknown chunk");
      return DecodeChunk(format, *it->second, compressed);
    };
  }

  const std::vector<ChunkRec> chunks_;  // by vstart
  PieceFetcher fetcher_;                // after chunks_: its codec points into them
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
  if (rec.format == LayerFormat::kGzipLazy) return OpenLazyGzipReader(store, layer, rec, lazy);
  if (!lazy.opener) return Error(Errc::kInternal, "lazy layer " + layer.digest.str() + " opened without a source");
  UCRFS_ASSIGN(auto chunks, LoadPerLayer<ChunkRec>(store, Dbi::kChunks, rec, rec.chunks, DecodeChunkRec, "chunks"));
  return std::unique_ptr<LayerReader>(new LazyReader(store, layer, TocFormatOf(rec.format), std::move(chunks),
                                                     rec.prefetch_end, lazy));
}

}  // namespace ucrfs::index
