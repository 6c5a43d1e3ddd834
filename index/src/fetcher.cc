#include "fetcher.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <random>
#include <system_error>

#include <fmt/format.h>

#include "ucrfs/common/log.h"
#include "ucrfs/index/chunk_cache.h"

namespace ucrfs::index {
namespace {

// Bytes between two pieces that are still worth fetching in the same request
// (eStargz puts a small gzip member of tar headers between chunks).
constexpr uint64_t kMaxGap = 64 << 10;
// Largest request an on-demand read makes by coalescing.
constexpr uint64_t kMaxReadRequest = 16 << 20;
// A read that must fetch also takes missing pieces after the ones it needs
// (the next small files of a directory usually follow in the blob), as many
// bytes as LinkEstimate finds worth a round trip, and at most this many pieces.
constexpr size_t kMaxNeighbours = 256;
// The background fetch starts, and resumes, only once no read of the mount
// has waited for the network for this long, and no sooner than this after
// it could first start (a workload's first reads come right after the mount).
constexpr int64_t kQuietNs = 500'000'000;
// Size of the background prefetch's requests: large enough to be efficient,
// small enough that little is fetched twice when a read overtakes one.
constexpr uint64_t kPrefetchRequest = 1 << 20;

uint64_t End(const Piece& p) { return p.blob_offset + p.blob_size; }

// b can come in the same request as a: it starts where a ends (or one byte
// before: gzip spans share the byte a checkpoint starts in) or a little after.
bool Adjacent(const Piece& a, const Piece& b) {
  return b.blob_offset + 1 >= End(a) && b.blob_offset <= End(a) + kMaxGap;
}

// Writes a verified piece: temporary name, then rename, so a reader never
// sees a partial piece.
Status CacheFile(const std::string& path, std::string_view bytes) {
  std::string tmp = fmt::format("{}.tmp-{}-{:x}", path, ::getpid(), std::random_device{}());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd.valid()) return ErrnoError("create " + tmp);
  Status st = WriteAll(fd.get(), bytes, tmp);
  fd.reset();
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = ErrnoError("rename " + tmp);
  if (!st.ok()) ::unlink(tmp.c_str());
  return st;
}

std::vector<std::string> PathsOf(const Store& store, const std::vector<Piece>& pieces) {
  std::vector<std::string> out;
  out.reserve(pieces.size());
  for (const Piece& p : pieces) out.push_back(store.ChunkPath(p.key));
  return out;
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

uint64_t NsSince(std::chrono::steady_clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t).count());
}

}  // namespace

PieceFetcher::PieceFetcher(const Store& store, fetch::Descriptor layer, std::vector<Piece> pieces, PieceCodec codec,
                           LazyOptions lazy, double neighbours, uint64_t max_neighbour_bytes)
    : store_(store), layer_(std::move(layer)), pieces_(std::move(pieces)), paths_(PathsOf(store, pieces_)),
      codec_(std::move(codec)), lazy_(std::move(lazy)), neighbours_(neighbours),
      max_neighbour_bytes_(max_neighbour_bytes) {}

PieceFetcher::~PieceFetcher() {
  stop_ = true;
  if (prefetcher_.joinable()) prefetcher_.join();
  std::thread read_ahead;
  {
    std::lock_guard lock(ra_mu_);
    read_ahead = std::move(read_ahead_);
  }
  ra_cv_.notify_all();
  if (read_ahead.joinable()) read_ahead.join();
  // Requests still bringing neighbours finish and keep them: nothing
  // fetched is lost.
  std::list<Transfer> transfers;
  {
    std::lock_guard lock(transfers_mu_);
    transfers = std::move(transfers_);
  }
  for (Transfer& t : transfers) t.thread.join();
}

Result<UniqueFd> PieceFetcher::OpenCached(size_t i) {
  UniqueFd fd(::open(paths_[i].c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError("open " + paths_[i]);
  return fd;
}

Result<UniqueFd> PieceFetcher::Open(size_t i, size_t through) {
  if (auto fd = OpenCached(i); fd.ok()) {
    ++lazy_.stats->cache_hits;
    if (lazy_.cache) lazy_.cache->Used(paths_[i]);
    return fd;
  }
  ++lazy_.stats->cache_misses;
  ++lazy_.stats->reads_waiting;
  auto started = std::chrono::steady_clock::now();
  through = std::min(through, pieces_.size() - 1);
  std::vector<size_t> wanted;
  for (size_t k = i; k <= through; ++k) wanted.push_back(k);
  for (size_t k = through + 1; neighbours_ > 0 && k < pieces_.size() && k <= through + kMaxNeighbours; ++k) {
    wanted.push_back(k);
  }
  uint64_t needed = End(pieces_[through]) > pieces_[i].blob_offset ? End(pieces_[through]) - pieces_[i].blob_offset : 0;
  // A small cache limit caps coalescing: a run must never evict its own
  // first piece before it is opened.
  auto extra = std::min(max_neighbour_bytes_,
                        static_cast<uint64_t>(neighbours_ * static_cast<double>(lazy_.link->Worthwhile())));
  uint64_t cap = std::min(kMaxReadRequest, std::max(needed, extra));
  if (lazy_.cache && lazy_.cache->max_bytes() > 0) cap = std::min(cap, lazy_.cache->max_bytes() / 4);
  Result<UniqueFd> out = Error(Errc::kIo, fmt::format("layer {}: piece {} vanished from the cache", layer_.digest.str(), i));
  // Rarely more than once: only when the cache evicts the piece between its
  // fetch and this open.
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::vector<size_t> run = Claim(wanted, cap, /*background=*/false);
    // The pieces this read needs are kept before it goes on; the neighbours after.
    Status st = run.empty() ? WaitOrOvertake(i) : FetchClaimed(run, /*background=*/false, std::max(through, i) - i + 1);
    if (!st.ok()) {
      out = st.error();
      break;
    }
    if (!run.empty()) ReadAheadAfter(run.back());
    if (auto fd = OpenCached(i); fd.ok()) {
      out = std::move(fd);
      break;
    }
  }
  lazy_.stats->wait_ns += NsSince(started);
  lazy_.stats->last_wait_ns = NowNs();
  --lazy_.stats->reads_waiting;
  return out;
}

std::vector<size_t> PieceFetcher::Claim(const std::vector<size_t>& candidates, uint64_t max_bytes,
                                        bool background) {
  std::vector<size_t> run;
  uint64_t start = 0, end = 0;
  for (size_t k : candidates) {
    const Piece& p = pieces_[k];
    if (!run.empty()) {
      if (!Adjacent(pieces_[run.back()], p)) break;
      if (std::max(end, End(p)) - start > max_bytes) break;
    }
    // The cache is looked at outside the lock (no I/O under mu_); a piece
    // that lands meanwhile is at worst fetched once more.
    if (PathExists(paths_[k])) break;
    {
      std::lock_guard lock(mu_);
      if (flights_.contains(paths_[k]) || overtaking_.contains(paths_[k])) break;
      auto flight = std::make_shared<Flight>();
      flight->background = background;
      flights_.emplace(paths_[k], std::move(flight));
    }
    if (run.empty()) start = p.blob_offset;
    end = std::max(end, End(p));
    run.push_back(k);
  }
  return run;
}

Status PieceFetcher::WaitOrOvertake(size_t i) {
  std::unique_lock lock(mu_);
  std::shared_ptr<Flight> flight;
  if (auto it = overtaking_.find(paths_[i]); it != overtaking_.end()) {
    flight = it->second;
  } else if (auto it = flights_.find(paths_[i]); it != flights_.end() && !it->second->background) {
    flight = it->second;
  } else if (it == flights_.end()) {
    return Ok();  // finished meanwhile
  }
  if (flight) {
    cv_.wait(lock, [&] { return flight->done; });
    return flight->status;
  }
  flight = std::make_shared<Flight>();
  overtaking_.emplace(paths_[i], flight);
  lock.unlock();
  const Piece& p = pieces_[i];
  auto data = CompressedBytes(p.blob_offset, p.blob_size);
  Status st = data.ok() ? Keep(i, *data) : Status(data.error());
  if (!st.ok()) {
    ++lazy_.stats->fetch_errors;
    spdlog::warn("layer {}: {}", layer_.digest.str(), st.error().message());
  }
  lock.lock();
  flight->status = st;
  flight->done = true;
  overtaking_.erase(paths_[i]);
  cv_.notify_all();
  return st;
}

void PieceFetcher::Finish(const std::vector<size_t>& run, const std::vector<Status>& results) {
  std::lock_guard lock(mu_);
  for (size_t j = 0; j < run.size(); ++j) {
    auto it = flights_.find(paths_[run[j]]);
    it->second->status = results[j];
    it->second->done = true;
    flights_.erase(it);
  }
  cv_.notify_all();
}

namespace {

Result<std::string_view> View(const Result<std::string>& r) {
  if (!r.ok()) return r.error();
  return std::string_view(*r);
}

}  // namespace

Status PieceFetcher::FetchClaimed(const std::vector<size_t>& run, bool background, size_t now) {
  uint64_t start = pieces_[run.front()].blob_offset, end = 0;
  for (size_t k : run) end = std::max(end, End(pieces_[k]));
  if (now >= run.size()) return KeepRun(run, View(CompressedBytes(start, end - start)), start, background);
  std::vector<size_t> first(run.begin(), run.begin() + static_cast<ptrdiff_t>(now));
  std::vector<size_t> rest(run.begin() + static_cast<ptrdiff_t>(now), run.end());
  // The request runs on a thread of its own. The read's pieces are kept as
  // soon as their bytes are in, and the read goes on then; the neighbours'
  // bytes are still coming, and that thread keeps them once they are in.
  uint64_t first_end = 0;
  for (size_t k : first) first_end = std::max(first_end, End(pieces_[k]));
  auto own = std::make_shared<std::promise<Status>>();
  std::future<Status> mine = own->get_future();
  auto work = std::make_shared<std::function<void()>>([this, first = std::move(first), rest = std::move(rest), start,
                                                         end, first_end, background, own] {
    bool kept = false;
    auto early = [&](std::string_view bytes) {
      kept = true;
      own->set_value(KeepRun(first, bytes, start, background));
    };
    Result<std::string> data = CompressedBytes(start, end - start, first_end - start, early);
    if (!kept) own->set_value(KeepRun(first, View(data), start, background));
    // A neighbour that does not verify fails only the reads waiting for it;
    // the next read that needs it fetches it again.
    (void)KeepRun(rest, View(data), start, /*background=*/false);
  });
  if (!StartTransfer(work)) (*work)();  // no thread to be had: the read waits for all of it
  return mine.get();
}

bool PieceFetcher::StartTransfer(const std::shared_ptr<std::function<void()>>& work) {
  std::lock_guard lock(transfers_mu_);
  for (auto it = transfers_.begin(); it != transfers_.end();) {  // reap those that have ended
    if (it->ended->load()) {
      it->thread.join();
      it = transfers_.erase(it);
    } else {
      ++it;
    }
  }
  auto ended = std::make_shared<std::atomic<bool>>(false);
  try {
    transfers_.push_back(Transfer{std::thread([work, ended] {
                                    (*work)();
                                    *ended = true;
                                  }),
                                  ended});
  } catch (const std::system_error& e) {
    spdlog::warn("layer {}: no thread for a request ({}); it is made on the reader's", layer_.digest.str(), e.what());
    return false;
  }
  return true;
}

Status PieceFetcher::KeepRun(const std::vector<size_t>& run, const Result<std::string_view>& data, uint64_t start,
                             bool background) {
  std::vector<Status> results;
  for (size_t k : run) {
    const Piece& p = pieces_[k];
    if (!data.ok()) {
      results.push_back(data.error());
    } else if (p.blob_offset + p.blob_size - start > data->size()) {
      results.push_back(Error(Errc::kProtocol, fmt::format("layer {}: short range at offset {}", layer_.digest.str(),
                                                           p.blob_offset)));
    } else {
      results.push_back(Keep(k, data->substr(p.blob_offset - start, p.blob_size)));
    }
  }
  size_t failed = 0;
  for (const Status& st : results) failed += st.ok() ? 0 : 1;
  if (failed > 0) {
    ++lazy_.stats->fetch_errors;
    const Status& first = *std::find_if(results.begin(), results.end(), [](const Status& s) { return !s.ok(); });
    if (background) {
      spdlog::info("layer {}: background fetch: {}", layer_.digest.str(), first.error().message());
    } else {
      spdlog::warn("layer {}: {}", layer_.digest.str(), first.error().message());
    }
  }
  if (background) lazy_.stats->prefetched_chunks += run.size() - failed;
  Finish(run, results);
  return results.front();
}

Status PieceFetcher::Keep(size_t i, std::string_view compressed) {
  UCRFS_ASSIGN(std::string cached, codec_(pieces_[i], compressed));
  UCRFS_TRY(CacheFile(paths_[i], cached));
  if (lazy_.cache) {
    lazy_.cache->Added(paths_[i], cached.size());
    lazy_.stats->cache_bytes = lazy_.cache->bytes();
    lazy_.stats->evictions = lazy_.cache->evictions();
  }
  ++lazy_.stats->chunks_fetched;
  return Ok();
}

// Compressed bytes of the blob: from the blob file when the store has it (a
// full pull happened since), else from the source by Range.
Result<std::string> PieceFetcher::CompressedBytes(uint64_t offset, uint64_t size, uint64_t early_bytes,
                                                  const fetch::ImageSource::EarlyBytes& early) {
  if (store_.HasBlob(layer_.digest)) {
    auto r = ReadFileRange(store_.BlobPath(layer_.digest), offset, size);
    if (r.ok() && early && r->size() >= early_bytes) early(std::string_view(*r).substr(0, early_bytes));
    return r;
  }
  std::shared_ptr<fetch::ImageSource> source;
  {
    std::lock_guard lock(source_mu_);
    if (source_ == nullptr) {
      if (!lazy_.opener) return Error(Errc::kInternal, "lazy layer " + layer_.digest.str() + " has no source");
      auto s = lazy_.opener();
      if (!s.ok()) return s.error();
      source_ = *s;
    }
    source = source_;
  }
  ++lazy_.stats->requests;
  auto sent = std::chrono::steady_clock::now();
  // The link is timed without what the early bytes' reader did meanwhile.
  uint64_t early_ns = 0;
  fetch::ImageSource::EarlyBytes timed;
  if (early) {
    timed = [&](std::string_view bytes) {
      auto t = std::chrono::steady_clock::now();
      early(bytes);
      early_ns += NsSince(t);
    };
  }
  auto data = early ? source->GetBlobRangeEarly(layer_, offset, size, early_bytes, timed)
                    : source->GetBlobRange(layer_, offset, size);
  if (data.ok()) {
    lazy_.stats->bytes_fetched += data->size();
    lazy_.link->Observe(data->size(), static_cast<double>(NsSince(sent) - early_ns) / 1e9);
  }
  return data;
}

void PieceFetcher::ReadAheadAfter(size_t last) {
  if (neighbours_ <= 0 || lazy_.read_ahead == 0 || last + 1 >= pieces_.size()) return;
  {
    std::lock_guard lock(ra_mu_);
    if (stop_) return;
    ra_after_ = last;
    if (!read_ahead_.joinable()) read_ahead_ = std::thread([this] { RunReadAhead(); });
  }
  ra_cv_.notify_one();
}

// One read-ahead at a time per layer, for the latest read that fetched: a
// request the reader's next read most likely waits on is not worth two.
void PieceFetcher::RunReadAhead() {
  const uint64_t window = lazy_.read_ahead;
  for (;;) {
    size_t after;
    {
      std::unique_lock lock(ra_mu_);
      ra_cv_.wait(lock, [&] { return stop_ || ra_after_.has_value(); });
      if (stop_) return;
      after = *ra_after_;
      ra_after_.reset();
    }
    if (lazy_.cache && lazy_.cache->NearlyFull()) continue;
    std::vector<size_t> candidates;
    for (size_t k = after + 1; k < pieces_.size() && k <= after + 256; ++k) candidates.push_back(k);
    // A piece larger than the window alone (a big file's chunk) is not read ahead.
    if (candidates.empty() || pieces_[candidates.front()].blob_size > window) continue;
    std::vector<size_t> run = Claim(candidates, window, /*background=*/false);
    if (run.empty()) continue;
    Status st = FetchClaimed(run, /*background=*/false);
    if (st.ok()) lazy_.stats->read_ahead_chunks += run.size();
  }
}

void PieceFetcher::StartPrefetch(uint64_t landmark_end) {
  if (lazy_.prefetch == Prefetch::kNone || prefetcher_.joinable()) return;
  prefetcher_ = std::thread([this, landmark_end] { RunPrefetch(landmark_end); });
}

void PieceFetcher::RunPrefetch(uint64_t landmark_end) {
  ++lazy_.stats->prefetch_running;
  if (landmark_end > 0) PrefetchLandmark(landmark_end);
  if (lazy_.prefetch == Prefetch::kAll) PrefetchAll();
  --lazy_.stats->prefetch_running;
}

// The region before the landmark in one request: every piece inside it.
void PieceFetcher::PrefetchLandmark(uint64_t landmark_end) {
  std::vector<size_t> inside;
  for (size_t k = 0; k < pieces_.size(); ++k) {
    if (End(pieces_[k]) <= landmark_end) inside.push_back(k);
  }
  if (inside.empty()) return;
  auto region = CompressedBytes(0, landmark_end);
  if (!region.ok()) {
    spdlog::info("layer {}: prefetch of the landmark region failed: {}", layer_.digest.str(),
                 region.error().message());
    return;
  }
  for (size_t k : inside) {
    if (stop_) return;
    std::vector<size_t> run = Claim({k}, UINT64_MAX, /*background=*/true);
    if (run.empty()) continue;
    Status st = Keep(k, std::string_view(*region).substr(pieces_[k].blob_offset, pieces_[k].blob_size));
    if (st.ok()) ++lazy_.stats->prefetched_chunks;
    Finish(run, {st});
  }
}

// Every missing piece in blob order, 1 MiB per request, once the mount's
// reads have stopped waiting for the network for a moment (the container is
// up), standing aside again whenever they wait.
void PieceFetcher::PrefetchAll() {
  const int64_t opened_ns = NowNs();
  std::vector<size_t> order(pieces_.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return pieces_[a].blob_offset < pieces_[b].blob_offset; });
  for (size_t pos = 0; pos < order.size();) {
    while (!stop_ && (lazy_.stats->reads_waiting > 0 ||
                      NowNs() - std::max(opened_ns, lazy_.stats->last_wait_ns.load()) < kQuietNs)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (stop_) return;
    if (lazy_.cache && lazy_.cache->NearlyFull()) {
      spdlog::info("layer {}: chunk cache nearly full; background fetch stops", layer_.digest.str());
      return;
    }
    std::vector<size_t> candidates(order.begin() + static_cast<ptrdiff_t>(pos),
                                   order.begin() + static_cast<ptrdiff_t>(std::min(order.size(), pos + 256)));
    std::vector<size_t> run = Claim(candidates, kPrefetchRequest, /*background=*/true);
    if (run.empty()) {
      ++pos;  // cached, or a read is fetching it
      continue;
    }
    pos += run.size();
    // The source is unreachable or lying: leave the rest to on-demand reads
    // rather than hammering it.
    if (!FetchClaimed(run, /*background=*/true).ok()) return;
  }
}

}  // namespace ucrfs::index
