// Layer indexes: every entry of a layer and where its bytes are, recorded
// once per layer blob, and a reader of a layer's decoded tar stream.
//
// How bytes are served, by layer format (docs/store.md):
//  * tar:  straight from the blob (the decoded stream is the blob);
//  * gzip: from the blob, inflating from the nearest checkpoint (every ~4 MiB
//          of output, zran-style) — nothing is unpacked;
//  * zstd: from a decoded copy of the tar stream kept beside the blob, since a
//          zstd frame cannot be entered mid-way;
//  * gzip with a ucrfs index in its registry (lazy, remote_index.h): indexed
//          from that index; a read fetches the compressed spans between the
//          checkpoints it needs, checks each against its recorded digest,
//          keeps it in <store>/chunks/ and inflates from the checkpoint;
//  * eStargz / zstd:chunked (lazy): the blob is never downloaded. The layer is
//          indexed from its TOC; each file's chunks are laid out one after the
//          other in a virtual decoded stream, and a read fetches the chunks it
//          touches by Range, verifies them and keeps them in <store>/chunks/.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "ucrfs/fetch/manifest.h"
#include "ucrfs/index/gzip_index.h"
#include "ucrfs/index/link_estimate.h"
#include "ucrfs/index/store.h"
#include "ucrfs/index/tar.h"

namespace ucrfs::index {

// kGzipLazy: a plain gzip layer indexed from a ucrfs index in its registry
// (remote_index.h); its compressed spans are fetched when first read.
enum class LayerFormat : uint8_t { kTar = 0, kGzip = 1, kZstd = 2, kEstargz = 3, kZstdChunked = 4, kGzipLazy = 5 };

inline bool IsLazy(LayerFormat f) {
  return f == LayerFormat::kEstargz || f == LayerFormat::kZstdChunked || f == LayerFormat::kGzipLazy;
}

struct LayerRecord {
  uint64_t id = 0;  // store-local, names the layer in other DBIs
  LayerFormat format = LayerFormat::kTar;
  uint64_t decoded_size = 0;  // bytes of the tar stream
  uint64_t entries = 0;
  uint64_t checkpoints = 0;
  uint64_t chunks = 0;         // lazy formats: chunks, or spans of kGzipLazy
  uint64_t prefetch_end = 0;   // lazy formats: blob offset of .prefetch.landmark, 0 if none
  // kGzipLazy from a v2 ucrfs index: the blob holding the checkpoints'
  // windows (the checkpoints carry none; `chunks` then counts the spans and
  // after them one window record per checkpoint). nullopt: no such blob.
  std::optional<Digest> windows;
  uint64_t windows_size = 0;
};

// Opens the image's source when a lazy layer first needs bytes (a mount of
// an image whose layers are all local never touches the network).
using SourceOpener = std::function<Result<std::shared_ptr<fetch::ImageSource>>()>;

// What lazy layers of one mount fetch, for `ucrfs stats`. All counters are
// monotonic and updated without locks.
struct FetchStats {
  std::atomic<uint64_t> requests{0};          // Range requests sent
  std::atomic<uint64_t> bytes_fetched{0};     // compressed bytes received
  std::atomic<uint64_t> chunks_fetched{0};    // chunks fetched, verified and cached
  std::atomic<uint64_t> cache_hits{0};        // chunk reads served by the cache
  std::atomic<uint64_t> cache_misses{0};      // chunk reads that had to wait for a fetch
  std::atomic<uint64_t> fetch_errors{0};      // fetches that failed (read answered EIO)
  std::atomic<uint64_t> wait_ns{0};           // time on-demand reads spent waiting for fetches
  std::atomic<uint64_t> prefetched_chunks{0};  // chunks fetched in the background
  std::atomic<uint64_t> read_ahead_chunks{0};  // chunks fetched ahead of reads (LazyOptions::read_ahead)
  std::atomic<int64_t> prefetch_running{0};     // layers whose background prefetch is under way
  std::atomic<uint64_t> cache_bytes{0};         // the chunk cache's size as this mount counts it
  std::atomic<uint64_t> evictions{0};           // pieces this mount removed from the chunk cache
  // Bytes the mount fetched before it served: manifests, config, TOCs, ucrfs
  // indexes, layers downloaded whole.
  std::atomic<uint64_t> mount_bytes{0};
  // Not counters: how the background fetch of every layer of the mount
  // knows that reads need the network (reads waiting now, and when the last
  // read had to wait, steady-clock nanoseconds).
  std::atomic<int64_t> reads_waiting{0};
  std::atomic<int64_t> last_wait_ns{0};
};

class ChunkCache;

enum class Prefetch { kNone, kLandmark, kAll };

// How a mount's lazy layers fetch.
struct LazyOptions {
  SourceOpener opener;
  std::shared_ptr<FetchStats> stats = std::make_shared<FetchStats>();
  // Shared by the mount's layers (one registry): how many bytes of what
  // follows a read's pieces its request also takes.
  std::shared_ptr<LinkEstimate> link = std::make_shared<LinkEstimate>();
  // kLandmark: the region before .prefetch.landmark in one request at mount;
  // kAll: that, then every other piece in the background once reads have
  // not waited for the network for a moment, pausing whenever they do.
  Prefetch prefetch = Prefetch::kAll;
  // The size limit of the store's chunk cache (chunk_cache.h); none when null.
  std::shared_ptr<ChunkCache> cache;
  // Read-ahead: once a read has fetched what it needed, up to this many bytes
  // of the missing pieces that follow in the layer are fetched at once, in a
  // request of their own, while the reader goes on (the next small files of a
  // directory usually follow in the blob). A read that then needs one of them
  // waits for that request instead of making its own. 0: none, the default:
  // it saves round trips where bandwidth is plentiful, and where it is not,
  // the bytes it guesses wrong delay the reads that come next
  // (docs/benchmarks.md).
  uint64_t read_ahead = 0;
};

// Indexes the layer (its blob must be in the store) unless it already is.
// The entries, checkpoints and the record commit in one transaction: a layer
// is indexed entirely or not at all. Bad content (hostile paths, a truncated
// stream, an absurd header) is kMalformed naming the layer and the entry.
Result<LayerRecord> EnsureLayerIndexed(Store& store, const fetch::Descriptor& layer);

// Indexes a lazy layer (eStargz, zstd:chunked: see toc.h) from its footer and
// TOC, fetched by Range from `source`, without downloading the blob. nullopt
// when the descriptor announces no lazy format or the blob has no footer (the
// caller then downloads and indexes it the ordinary way); an error when the
// TOC is there but does not verify.
Result<std::optional<LayerRecord>> IndexLazyLayer(Store& store, fetch::ImageSource& source,
                                                  const fetch::Descriptor& layer);

Result<std::optional<LayerRecord>> FindLayer(const Store& store, const Digest& layer);
Result<std::vector<TarEntry>> LoadLayerEntries(const Store& store, const LayerRecord& layer);

// Random access to a layer's decoded tar stream. Thread-safe.
class LayerReader {
 public:
  virtual ~LayerReader() = default;
  // Reads up to len bytes at decoded offset `offset`; short only at the end.
  virtual Result<size_t> ReadAt(uint64_t offset, char* buf, size_t len) = 0;
  // `lazy` is needed (and its opener only called) for lazy layers.
  static Result<std::unique_ptr<LayerReader>> Open(const Store& store, const fetch::Descriptor& layer,
                                                   const LayerRecord& rec, const LazyOptions& lazy);
};

}  // namespace ucrfs::index
