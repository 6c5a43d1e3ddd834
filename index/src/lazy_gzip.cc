// Lazy gzip layers (kGzipLazy): indexed from a ucrfs index found in the
// registry (remote_index.h). The reader is the ordinary checkpoint reader
// (GzipRandomReader) inflating from an input whose bytes are the layer's
// compressed spans, each fetched whole through the PieceFetcher when first
// needed and checked against the digest the index records.
#include <algorithm>
#include <atomic>

#include <fmt/format.h>

#include "fetcher.h"
#include "layer_internal.h"
#include "ucrfs/common/log.h"
#include "ucrfs/index/remote_index.h"

namespace ucrfs::index {
namespace {

constexpr uint64_t kDecodedChunk = 256 << 10;  // GzipRandomReader's unit of inflation
// Sequential readers get the spans ahead of them in the same request, the
// window doubling from 1 MiB up to this while reads stay sequential (the
// kernel hands a FUSE server 128 KiB at a time, one span or less).
constexpr uint64_t kMaxReadAhead = 4 << 20;
constexpr uint64_t kSequentialSlack = 2 << 20;

class SpanInput final : public CompressedInput {
 public:
  SpanInput(const Store& store, const fetch::Descriptor& layer, std::vector<Piece> spans, const LazyOptions& lazy)
      : name_("layer " + layer.digest.str()), size_(static_cast<uint64_t>(layer.size)),
        fetcher_(store, layer, std::move(spans), VerifySpan, lazy) {}

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

class LazyGzipReader final : public LayerReader {
 public:
  LazyGzipReader(std::shared_ptr<SpanInput> input, std::unique_ptr<GzipRandomReader> reader,
                 std::vector<uint64_t> starts, uint64_t decoded_size)
      : input_(std::move(input)), reader_(std::move(reader)), starts_(std::move(starts)),
        decoded_size_(decoded_size) {
    input_->StartPrefetch();
  }

  Result<size_t> ReadAt(uint64_t offset, char* buf, size_t len) override {
    if (offset < decoded_size_ && len > 0) {
      // The spans the inflation of this read will walk: from the checkpoint
      // before the first decoded chunk it touches to the span holding the
      // last byte of the last chunk (and the read-ahead window).
      // Sequential: the read continues where the furthest read so far ended
      // (the kernel's read-ahead sends several reads at once, which may
      // arrive out of order: a read a little behind that end is part of the
      // same stream and changes nothing).
      uint64_t prev = last_end_.load(), end = offset + len, ahead = 0;
      bool near = prev != UINT64_MAX && offset + kSequentialSlack >= prev;
      if (near && offset <= prev && end > prev) {
        ahead = std::min(kMaxReadAhead, std::max<uint64_t>(1 << 20, 2 * ahead_.load()));
        ahead_ = ahead;
        last_end_ = end;
      } else if (!(near && end <= prev)) {
        ahead_ = 0;
        last_end_ = end;
      }
      uint64_t lo = offset / kDecodedChunk * kDecodedChunk;
      uint64_t hi =
          std::min(decoded_size_, (offset + len + ahead + kDecodedChunk - 1) / kDecodedChunk * kDecodedChunk);
      UCRFS_TRY(input_->Prepare(SpanOfDecoded(lo), SpanOfDecoded(hi - 1)));
    }
    return reader_->ReadAt(offset, buf, len);
  }

 private:
  size_t SpanOfDecoded(uint64_t off) const {
    auto it = std::upper_bound(starts_.begin(), starts_.end(), off);
    return static_cast<size_t>(it - starts_.begin()) - 1;
  }

  std::shared_ptr<SpanInput> input_;
  std::unique_ptr<GzipRandomReader> reader_;
  const std::vector<uint64_t> starts_;  // decoded offset of each checkpoint
  const uint64_t decoded_size_;
  // Where the last read ended, and the read-ahead window it earned. Racy
  // across concurrent readers by design: a wrong guess costs bytes, not
  // correctness.
  std::atomic<uint64_t> last_end_{UINT64_MAX};
  std::atomic<uint64_t> ahead_{0};
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
  if (spans.size() != cps.size() || layer.size <= 0) {
    return Error(Errc::kMalformed, "store index: spans of layer " + layer.digest.str() + " do not match");
  }
  std::vector<Piece> pieces;
  std::vector<uint64_t> starts;
  for (size_t i = 0; i < spans.size(); ++i) {
    pieces.push_back(Piece{spans[i].chunk.blob_offset, spans[i].chunk.blob_size, spans[i].chunk.digest});
    starts.push_back(cps[i].out_offset);
  }
  auto input = std::make_shared<SpanInput>(store, layer, std::move(pieces), lazy);
  UCRFS_ASSIGN(auto reader, GzipRandomReader::Open(input, /*is_gzip=*/true, std::move(cps), rec.decoded_size));
  return std::unique_ptr<LayerReader>(
      new LazyGzipReader(std::move(input), std::move(reader), std::move(starts), rec.decoded_size));
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
  UCRFS_TRY(txn.Put(env[Dbi::kLayers], layer.digest.str(), EncodeRecord(rec)));
  UCRFS_TRY(txn.Commit());
  spdlog::info("indexed lazy gzip layer {} from its ucrfs index: {} entries, {} spans", layer.digest.str(),
               rec.entries, rec.chunks);
  return rec;
}

}  // namespace ucrfs::index
