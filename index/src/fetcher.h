// The fetch path of lazy layers, shared by every lazy format.
//
// A lazy layer's blob is cut into pieces — eStargz / zstd:chunked chunks,
// or the compressed spans between two gzip checkpoints — each fetched whole
// by a Range request the first time it is needed, verified, and kept as a
// file in <store>/chunks named by its digest. The PieceFetcher owns:
//  * single flight: one request per piece however many readers want it; the
//    others wait for it (a read never waits behind the background fetch's
//    larger request: it fetches the piece it needs on its own);
//  * coalescing: a read that needs several missing pieces lying next to each
//    other in the blob fetches them with one request;
//  * neighbours: that request also takes the missing pieces that follow, as
//    many bytes as LinkEstimate finds worth a round trip. The request runs on
//    a thread of its own: the read returns once its own pieces have arrived
//    and are kept, while the neighbours' bytes are still coming; that thread
//    then verifies and caches them (readers that want one wait for it, as on
//    any flight);
//  * read-ahead (LazyOptions::read_ahead): after a read's fetch, the missing
//    pieces that follow it, in a request of their own that later reads wait
//    on rather than repeat;
//  * background prefetch: the .prefetch.landmark region in one request, then
//    (Prefetch::kAll) every missing piece in blob order, in requests of a few
//    MiB, pausing while on-demand reads wait for the network and stopping
//    when the chunk cache is nearly full;
//  * accounting in FetchStats and the ChunkCache.
// The bounded connection pool and request timeouts are the source's
// (fetch::SourceOptions), so a piece that cannot be fetched fails its readers
// with an error (EIO) instead of hanging.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ucrfs/common/file.h"
#include "ucrfs/index/layers.h"

namespace ucrfs::index {

struct Piece {
  uint64_t blob_offset = 0;
  uint64_t blob_size = 0;
  Digest key = Digest::Sha256Of("");  // names the cache file
};

// Turns a piece's compressed bytes into what is cached, verifying them (an
// eStargz chunk is decoded and checked against its chunkDigest; a gzip span
// is kept as it is, checked against the digest its index records).
using PieceCodec = std::function<Result<std::string>(const Piece& piece, std::string_view compressed)>;

class PieceFetcher {
 public:
  // pieces: in the order reads walk them (adjacent entries usually adjacent
  // in the blob too). neighbours: the share of LinkEstimate::Worthwhile() a
  // read that must fetch spends on the missing pieces after the ones it
  // needs, as likely as they are to be needed soon (0: none, the read fetches
  // what it asked for and no more); max_neighbour_bytes bounds what that
  // share comes to.
  PieceFetcher(const Store& store, fetch::Descriptor layer, std::vector<Piece> pieces, PieceCodec codec,
               LazyOptions lazy, double neighbours = 1.0, uint64_t max_neighbour_bytes = UINT64_MAX);
  ~PieceFetcher();
  PieceFetcher(const PieceFetcher&) = delete;
  PieceFetcher& operator=(const PieceFetcher&) = delete;

  // The cached file of piece i, open for reading, fetched first if needed.
  // When it must be fetched, the missing pieces after it up to `through`
  // (what the same read needs next) come in the same request if they are
  // adjacent in the blob. Once open, the file stays readable even if the
  // cache evicts it.
  Result<UniqueFd> Open(size_t i, size_t through);

  // Starts the background prefetch (per LazyOptions::prefetch): the bytes
  // before landmark_end (0: none) in one request, then with kAll the rest.
  void StartPrefetch(uint64_t landmark_end);

  const std::vector<Piece>& pieces() const { return pieces_; }
  const std::string& path(size_t i) const { return paths_[i]; }
  const fetch::Descriptor& layer() const { return layer_; }

 private:
  struct Flight {
    bool background = false;
    bool done = false;
    Status status;
  };

  Result<UniqueFd> OpenCached(size_t i);
  // Claims, for this thread to fetch, the longest prefix of `candidates`
  // (piece indexes) that are missing, not in flight, each adjacent in the
  // blob to the one before, within max_bytes in all; empty when the first is
  // cached or already in flight.
  std::vector<size_t> Claim(const std::vector<size_t>& candidates, uint64_t max_bytes, bool background);
  // Fetches claimed pieces with one request, caches each, ends their
  // flights, and returns the first one's status. Only the first `now` pieces
  // are kept before it returns, as soon as their bytes have arrived (while
  // the others' are still coming); the request's thread keeps the others.
  Status FetchClaimed(const std::vector<size_t>& run, bool background, size_t now = SIZE_MAX);
  // Keeps the pieces of `run` (from `data`, the request's bytes from blob
  // offset `start`; or its error) and ends their flights.
  Status KeepRun(const std::vector<size_t>& run, const Result<std::string_view>& data, uint64_t start,
                 bool background);
  void Finish(const std::vector<size_t>& run, const std::vector<Status>& results);
  // Runs `work` (a request bringing neighbours) on a thread of its own;
  // false, having not run it, when no thread can be made.
  bool StartTransfer(const std::shared_ptr<std::function<void()>>& work);
  // Waits for the flight of piece i, if there is one; but a piece that only
  // the background fetch is after is fetched now, on its own, rather than
  // behind the background's larger request.
  Status WaitOrOvertake(size_t i);
  Status Keep(size_t i, std::string_view compressed);
  // `size` bytes of the blob from `offset`; `early`, when set, gets the
  // first `early_bytes` of them as soon as they are in
  // (fetch::ImageSource::GetBlobRangeEarly).
  Result<std::string> CompressedBytes(uint64_t offset, uint64_t size, uint64_t early_bytes = 0,
                                      const fetch::ImageSource::EarlyBytes& early = nullptr);
  // Hands the read-ahead worker the piece after which to fetch ahead
  // (replacing any hand-off it has not started on yet).
  void ReadAheadAfter(size_t last);
  void RunReadAhead();
  void RunPrefetch(uint64_t landmark_end);
  void PrefetchLandmark(uint64_t landmark_end);
  void PrefetchAll();

  const Store& store_;
  const fetch::Descriptor layer_;
  const std::vector<Piece> pieces_;
  const std::vector<std::string> paths_;  // cache file of each piece
  const PieceCodec codec_;
  const LazyOptions lazy_;
  const double neighbours_;
  const uint64_t max_neighbour_bytes_;
  std::atomic<bool> stop_{false};

  std::mutex source_mu_;
  std::shared_ptr<fetch::ImageSource> source_;  // guarded by source_mu_

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::shared_ptr<Flight>> flights_;  // by cache path; guarded by mu_
  // Pieces a read fetches ahead of the background request that has them.
  std::map<std::string, std::shared_ptr<Flight>> overtaking_;  // by cache path; guarded by mu_

  std::mutex ra_mu_;
  std::condition_variable ra_cv_;
  std::optional<size_t> ra_after_;  // guarded by ra_mu_
  std::thread read_ahead_;          // started by the first read that fetches; guarded by ra_mu_

  // Requests of reads that bring neighbours, each on its thread; joined
  // when they have ended (by the next StartTransfer) or by the destructor.
  struct Transfer {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> ended;
  };
  std::mutex transfers_mu_;
  std::list<Transfer> transfers_;  // guarded by transfers_mu_

  std::thread prefetcher_;  // started last, joined first
};

}  // namespace ucrfs::index
