// Lazy gzip layers (kGzipLazy): indexed from a ucrfs index found in the
// registry (remote_index.h). The reader is the ordinary checkpoint reader
// (GzipRandomReader) inflating from an input whose bytes are the layer's
// compressed spans, each fetched whole through the PieceFetcher when first
// needed and checked against the digest the index records. Layers indexed
// from a v2 index keep their checkpoints' windows in the windows blob: a
// second PieceFetcher fetches the window of a checkpoint when inflation
// first starts there, checked against its digest like a span.
#include <zstd.h>

#include <algorithm>
#include <thread>

#include <fmt/format.h>

#include "fetcher.h"
#include "layer_internal.h"
#include "ucrfs/common/log.h"
#include "ucrfs/index/remote_index.h"

namespace ucrfs::index {
namespace {

constexpr uint64_t kDecodedChunk = GzipRandomReader::kChunk;
// A fetched window brings those of the checkpoints after it (adjacent in the
// windows blob) for this share of what a span fetch would add: a read needs
// only the window inflation starts at, and most checkpoints inflation passes
// through rather than starts at.
constexpr double kWindowNeighbours = 0.125;

// Spans are not read ahead in a request of their own (--read-ahead): one
// fetched ahead would mostly wait for a window. The spans after a read come
// in the read's own request instead, for this share of what LinkEstimate
// finds worth a round trip: a span ahead saves a round trip only if
// inflation goes on into it, and on the start-up benchmark about half of
// them were. Three quarters fetched an eighth fewer bytes on loopback than
// the whole budget, in the same time; a half cost 0.2 s more.
constexpr double kSpanNeighbours = 0.75;

LazyOptions WithoutReadAhead(LazyOptions lazy) {
  lazy.read_ahead = 0;
  return lazy;
}

class SpanInput final : public CompressedInput {
 public:
  SpanInput(const Store& store, const fetch::Descriptor& layer, std::vector<Piece> spans, const LazyOptions& lazy)
      : name_("layer " + layer.digest.str()), size_(static_cast<uint64_t>(layer.size)),
        fetcher_(store, layer, std::move(spans), VerifySpan, WithoutReadAhead(lazy), kSpanNeighbours) {}

  uint64_t size() const override { return size_; }
  const std::string& name() const override { return name_; }

  Result<size_t> ReadSome(uint64_t off, char* buf, size_t n) override {
    if (off >= size_ || n == 0) return size_t{0};
    size_t i = SpanAt(off);
    const Piece& p = fetcher_.pieces()[i];
    UCRFS_ASSIGN(UniqueFd fd, fetcher_.Open(i, i));
    size_t want = static_cast<size_t>(std::min<uint64_t>(n, p.blob_offset + p.blob_size - off));
    std::string what = fmt::format("cached span {} of {}", i, name_);
    UCRFS_ASSIGN(size_t got, PreadFull(fd.get(), buf, want, off - p.blob_offset, what));
    if (got != want) return Error(Errc::kIo, what + " is short");
    return got;
  }

  // Fetches the missing spans among first..last, adjacent ones in one
  // request, before inflation asks for them one at a time.
  Status Prepare(size_t first, size_t last) {
    const auto& spans = fetcher_.pieces();
    for (size_t k = first; k <= last && k < spans.size(); ++k) {
      if (PathExists(fetcher_.path(k))) continue;
      UCRFS_ASSIGN(UniqueFd fd, fetcher_.Open(k, last));
    }
    return Ok();
  }

  void StartPrefetch() { fetcher_.StartPrefetch(0); }

 private:
  // The last span that starts at or before off (spans may share one byte).
  size_t SpanAt(uint64_t off) const {
    const auto& spans = fetcher_.pieces();
    auto it = std::upper_bound(spans.begin(), spans.end(), off,
                               [](uint64_t o, const Piece& p) { return o < p.blob_offset; });
    return static_cast<size_t>(it - spans.begin()) - 1;  // spans[0] starts at 0
  }

  static Result<std::string> VerifySpan(const Piece& p, std::string_view compressed) {
    Digest got = Digest::Of(p.key.algorithm(), compressed);
    if (got != p.key) {
      return Error(Errc::kDigestMismatch, fmt::format("span at offset {} has digest {}, its index says {}",
                                                      p.blob_offset, got.str(), p.key.str()));
    }
    return std::string(compressed);
  }

  const std::string name_;
  const uint64_t size_;
  PieceFetcher fetcher_;
};

// The windows of a layer's checkpoints, from its windows blob. A window is
// cached as fetched (one zstd frame, named by its sha256, checked before it
// is cached) and decompressed each time inflation starts at it.
class WindowInput final : public WindowSource {
 public:
  WindowInput(const Store& store, const fetch::Descriptor& blob, std::vector<uint64_t> sizes,
              std::vector<Piece> pieces, std::vector<size_t> piece_of, const LazyOptions& lazy)
      : name_("windows blob " + blob.digest.str()), sizes_(std::move(sizes)), piece_of_(std::move(piece_of)),
        fetcher_(store, blob, std::move(pieces), VerifyWindow, lazy, kWindowNeighbours) {}

  const std::vector<uint64_t>& sizes() const override { return sizes_; }

  Result<std::string> Window(size_t i) override {
    size_t k = piece_of_[i];
    const Piece& p = fetcher_.pieces()[k];
    UCRFS_ASSIGN(UniqueFd fd, fetcher_.Open(k, k));
    std::string what = fmt::format("cached window {} of {}", i, name_);
    std::string z(p.blob_size, '\0');
    UCRFS_ASSIGN(size_t got, PreadFull(fd.get(), z.data(), z.size(), 0, what));
    if (got != z.size()) return Error(Errc::kIo, what + " is short");
    // The digest matched, so this is what `index push` wrote: a window that
    // does not decompress to its recorded length is a lying index.
    std::string out(sizes_[i], '\0');
    size_t n = ZSTD_decompress(out.data(), out.size(), z.data(), z.size());
    if (ZSTD_isError(n) || n != out.size()) {
      return Error(Errc::kMalformed, fmt::format("window {} of {} does not decompress to {} bytes", i, name_,
                                                 sizes_[i]));
    }
    return out;
  }

  // Fetches checkpoint i's window into the cache unless it is there (or it
  // has none). Errors are left to Window(), which tries again and reports.
  void Fetch(size_t i) {
    if (sizes_[i] == 0 || PathExists(fetcher_.path(piece_of_[i]))) return;
    (void)fetcher_.Open(piece_of_[i], piece_of_[i]);
  }
  bool Missing(size_t i) const { return sizes_[i] > 0 && !PathExists(fetcher_.path(piece_of_[i])); }

  void StartPrefetch() { fetcher_.StartPrefetch(0); }

 private:
  static Result<std::string> VerifyWindow(const Piece& p, std::string_view compressed) {
    Digest got = Digest::Of(p.key.algorithm(), compressed);
    if (got != p.key) {
      return Error(Errc::kDigestMismatch, fmt::format("window at offset {} of the windows blob has digest {}, "
                                                      "its index says {}", p.blob_offset, got.str(), p.key.str()));
    }
    return std::string(compressed);
  }

  const std::string name_;
  const std::vector<uint64_t> sizes_;
  const std::vector<size_t> piece_of_;  // checkpoint -> piece (meaningful where sizes_ > 0)
  PieceFetcher fetcher_;
};

class LazyGzipReader final : public LayerReader {
 public:
  LazyGzipReader(std::shared_ptr<SpanInput> input, std::shared_ptr<WindowInput> windows,
                 std::unique_ptr<GzipRandomReader> reader, std::vector<uint64_t> starts, uint64_t decoded_size)
      : input_(std::move(input)), windows_(std::move(windows)), reader_(std::move(reader)),
        starts_(std::move(starts)), decoded_size_(decoded_size) {
    input_->StartPrefetch();
    // Every window too, so that a layer fetched whole in the background
    // reads without the registry.
    if (windows_) windows_->StartPrefetch();
  }

  Result<size_t> ReadAt(uint64_t offset, char* buf, size_t len) override {
    if (offset < decoded_size_ && len > 0) {
      // The spans the inflation of this read will walk: from the checkpoint
      // before the first decoded chunk it touches to the span holding the
      // last byte of the last chunk. The fetcher adds the spans that follow
      // as far as they are worth the request (LinkEstimate): sequential
      // readers find them there.
      uint64_t lo = offset / kDecodedChunk * kDecodedChunk;
      uint64_t hi = std::min(decoded_size_, (offset + len + kDecodedChunk - 1) / kDecodedChunk * kDecodedChunk);
      // The window inflation will start from is in another blob: fetch it
      // beside the spans, not after them (one round trip instead of two).
      std::optional<size_t> start = windows_ ? reader_->StartFor(offset) : std::nullopt;
      if (start && windows_->Missing(*start)) {
        std::thread window([this, i = *start] { windows_->Fetch(i); });
        Status st = input_->Prepare(SpanOfDecoded(lo), SpanOfDecoded(hi - 1));
        window.join();
        UCRFS_TRY(st);
      } else {
        UCRFS_TRY(input_->Prepare(SpanOfDecoded(lo), SpanOfDecoded(hi - 1)));
      }
    }
    return reader_->ReadAt(offset, buf, len);
  }

 private:
  size_t SpanOfDecoded(uint64_t off) const {
    auto it = std::upper_bound(starts_.begin(), starts_.end(), off);
    return static_cast<size_t>(it - starts_.begin()) - 1;
  }

  std::shared_ptr<SpanInput> input_;
  std::shared_ptr<WindowInput> windows_;  // null when the checkpoints carry their windows
  std::unique_ptr<GzipRandomReader> reader_;
  const std::vector<uint64_t> starts_;  // decoded offset of each checkpoint
  const uint64_t decoded_size_;
};

Result<std::vector<Checkpoint>> LoadCheckpoints(const Store& store, const LayerRecord& rec) {
  return LoadPerLayer<Checkpoint>(store, Dbi::kCheckpoints, rec, rec.checkpoints, Checkpoint::Deserialize,
                                  "checkpoints");
}

}  // namespace

Result<std::unique_ptr<LayerReader>> OpenLazyGzipReader(const Store& store, const fetch::Descriptor& layer,
                                                        const LayerRecord& rec, const LazyOptions& lazy) {
  UCRFS_ASSIGN(auto cps, LoadCheckpoints(store, rec));
  UCRFS_ASSIGN(auto spans, LoadPerLayer<ChunkRec>(store, Dbi::kChunks, rec, rec.chunks, DecodeChunkRec, "spans"));
  // With a windows blob, the spans are followed by one window record per
  // checkpoint (ImportLayerIndex).
  const size_t n = cps.size();
  if (spans.size() != (rec.windows ? 2 * n : n) || layer.size <= 0) {
    return Error(Errc::kMalformed, "store index: spans of layer " + layer.digest.str() + " do not match");
  }
  std::vector<Piece> pieces;
  std::vector<uint64_t> starts;
  for (size_t i = 0; i < n; ++i) {
    pieces.push_back(Piece{spans[i].chunk.blob_offset, spans[i].chunk.blob_size, spans[i].chunk.digest});
    starts.push_back(cps[i].out_offset);
  }
  std::shared_ptr<WindowInput> windows;
  if (rec.windows) {
    fetch::Descriptor blob;
    blob.media_type = kLayerWindowsMediaType;
    blob.digest = *rec.windows;
    blob.size = static_cast<int64_t>(rec.windows_size);
    std::vector<uint64_t> sizes;
    std::vector<Piece> window_pieces;
    std::vector<size_t> piece_of;
    for (size_t i = n; i < 2 * n; ++i) {
      const Chunk& w = spans[i].chunk;
      sizes.push_back(w.size);
      piece_of.push_back(window_pieces.size());
      if (w.size > 0) window_pieces.push_back(Piece{w.blob_offset, w.blob_size, w.digest});
    }
    windows = std::make_shared<WindowInput>(store, blob, std::move(sizes), std::move(window_pieces),
                                            std::move(piece_of), lazy);
  }
  auto input = std::make_shared<SpanInput>(store, layer, std::move(pieces), lazy);
  UCRFS_ASSIGN(auto reader, GzipRandomReader::Open(input, /*is_gzip=*/true, std::move(cps), rec.decoded_size,
                                                   64 << 20, windows));
  return std::unique_ptr<LayerReader>(new LazyGzipReader(std::move(input), std::move(windows), std::move(reader),
                                                         std::move(starts), rec.decoded_size));
}

Result<LayerRecord> ImportLayerIndex(Store& store, const fetch::Descriptor& layer, const LayerIndex& index) {
  UCRFS_ASSIGN(auto existing, FindLayer(store, layer.digest));
  if (existing) return *existing;
  LayerRecord rec;
  rec.format = LayerFormat::kGzipLazy;
  rec.decoded_size = index.decoded_size;
  rec.entries = index.entries.size();
  rec.checkpoints = index.checkpoints.size();
  rec.chunks = index.checkpoints.size();
  // No windows blob when every checkpoint is a member start (none has a
  // window): then the layer is stored as one whose checkpoints carry theirs.
  const bool windows = index.windows_size > 0;
  if (windows) {
    if (index.windows.size() != index.checkpoints.size()) {
      return Error(Errc::kInternal, "layer index of " + layer.digest.str() + " has no window places");
    }
    rec.windows = index.windows_blob;
    rec.windows_size = index.windows_size;
    rec.chunks = 2 * index.checkpoints.size();
  }

  const auto& env = store.env();
  Txn txn;
  UCRFS_TRY(txn.Begin(env.env, true));
  UCRFS_ASSIGN(auto raced, txn.Get(env[Dbi::kLayers], layer.digest.str()));
  if (raced) return DecodeRecord(*raced);
  UCRFS_ASSIGN(rec.id, NextId(txn, env, "next_layer_id"));
  for (uint64_t i = 0; i < index.entries.size(); ++i) {
    UCRFS_TRY(txn.Put(env[Dbi::kLayerEntries], EntryKey(rec.id, i), EncodeEntry(index.entries[i]), MDB_APPEND));
  }
  const auto& cps = index.checkpoints;
  for (uint64_t i = 0; i < cps.size(); ++i) {
    UCRFS_TRY(txn.Put(env[Dbi::kCheckpoints], EntryKey(rec.id, i), cps[i].Serialize(), MDB_APPEND));
    SpanRange r = SpanOf(cps, i, index.layer_size);
    ChunkRec span;
    span.vstart = cps[i].out_offset;
    span.chunk.size = (i + 1 < cps.size() ? cps[i + 1].out_offset : index.decoded_size) - cps[i].out_offset;
    span.chunk.blob_offset = r.offset;
    span.chunk.blob_size = r.size;
    span.chunk.digest = index.span_digests[i];
    UCRFS_TRY(txn.Put(env[Dbi::kChunks], EntryKey(rec.id, i), EncodeChunk(span), MDB_APPEND));
  }
  for (uint64_t i = 0; windows && i < cps.size(); ++i) {
    // A window's record: its decoded length, its place in the windows blob
    // and the digest of its compressed bytes (empty for a member start).
    const WindowRef& w = index.windows[i];
    ChunkRec rec_w;
    rec_w.chunk.size = w.length;
    rec_w.chunk.blob_offset = w.offset;
    rec_w.chunk.blob_size = w.size;
    rec_w.chunk.digest = w.length > 0 ? w.digest : Digest::Sha256Of("");
    UCRFS_TRY(txn.Put(env[Dbi::kChunks], EntryKey(rec.id, cps.size() + i), EncodeChunk(rec_w), MDB_APPEND));
  }
  UCRFS_TRY(txn.Put(env[Dbi::kLayers], layer.digest.str(), EncodeRecord(rec)));
  UCRFS_TRY(txn.Commit());
  spdlog::info("indexed lazy gzip layer {} from its ucrfs index: {} entries, {} spans", layer.digest.str(),
               rec.entries, rec.checkpoints);
  return rec;
}

}  // namespace ucrfs::index
