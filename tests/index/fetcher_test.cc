// The fetch path every lazy format shares (index/src/fetcher.h), driven
// directly with a counting source and a codec that can hold pieces back: a
// read's request brings the pieces after it; the read goes on once its own
// pieces are kept while the keeper thread verifies and caches the others;
// a reader of one of those waits for it instead of asking again; one that
// does not verify fails only the reads that wait for it; a fetcher that
// ends keeps what it was handed first; and neighbours stop at their bound.
#include "fetcher.h"

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <set>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "harness/range_source.h"
#include "harness/test_util.h"
#include "ucrfs/index/store.h"

namespace ucrfs::index {
namespace {

using harness::TempDir;
using namespace std::chrono_literals;

constexpr uint64_t kPiece = 4096;
constexpr size_t kPieces = 8;  // 32 KiB in all: every piece is a neighbour worth taking (LinkEstimate's default)

class CountingSource final : public harness::RangeOnlySource {
 public:
  explicit CountingSource(std::string blob) : blob_(std::move(blob)) {}
  Result<std::string> GetBlobRange(const fetch::Descriptor&, uint64_t offset, uint64_t length) override {
    ++requests;
    return blob_.substr(offset, length);
  }
  // With `rest` set, a range's first bytes are handed over early and the
  // rest "arrive" once `rest` is ready.
  Result<std::string> GetBlobRangeEarly(const fetch::Descriptor& d, uint64_t offset, uint64_t length,
                                        uint64_t early_bytes, const EarlyBytes& early) override {
    if (!rest.valid()) return ImageSource::GetBlobRangeEarly(d, offset, length, early_bytes, early);
    ++requests;
    std::string bytes = blob_.substr(offset, length);
    early(std::string_view(bytes).substr(0, early_bytes));
    if (rest.wait_for(10s) != std::future_status::ready) return Error(Errc::kNetwork, "the rest never came");
    return bytes;
  }
  std::atomic<int> requests{0};
  std::shared_future<void> rest;

 private:
  std::string blob_;
};

class FetcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = Store::Open(dir_ / "store", Store::Mode::kReadWrite);
    ASSERT_TRUE(store.ok()) << store.error().message();
    store_ = std::move(*store);
    std::string blob;
    for (size_t k = 0; k < kPieces; ++k) {
      std::string content(kPiece, static_cast<char>('a' + k));
      content[0] = static_cast<char>(k);
      pieces_.push_back({blob.size(), kPiece, Digest::Sha256Of(content)});
      contents_.push_back(content);
      blob += content;
    }
    source_ = std::make_shared<CountingSource>(blob);
    layer_.digest = Digest::Sha256Of(blob);
    layer_.size = blob.size();
    lazy_.opener = [src = source_]() -> Result<std::shared_ptr<fetch::ImageSource>> {
      return std::shared_ptr<fetch::ImageSource>(src);
    };
    lazy_.prefetch = Prefetch::kNone;
  }

  // Every piece but the first waits for Open() before it is kept; pieces in
  // bad_ do not verify.
  PieceCodec Codec() {
    return [this](const Piece& p, std::string_view c) -> Result<std::string> {
      if (p.blob_offset > 0) {
        std::unique_lock lock(mu_);
        if (!cv_.wait_for(lock, 10s, [&] { return open_; })) return Error(Errc::kInternal, "the gate never opened");
      }
      {
        std::lock_guard lock(mu_);
        if (bad_.contains(p.blob_offset / kPiece)) {
          return Error(Errc::kDigestMismatch, fmt::format("piece {} does not verify", p.blob_offset / kPiece));
        }
      }
      return std::string(c);
    };
  }
  void Open() {
    {
      std::lock_guard lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }

  std::unique_ptr<PieceFetcher> NewFetcher() {
    return std::make_unique<PieceFetcher>(*store_, layer_, pieces_, Codec(), lazy_);
  }

  // Piece k through the fetcher, read back whole ("" on error, with *st set).
  std::string Read(PieceFetcher& f, size_t k, Status* st = nullptr) {
    auto fd = f.Open(k, k);
    if (st) *st = fd.ok() ? Ok() : Status(fd.error());
    if (!fd.ok()) return "";
    std::string out(kPiece, '\0');
    ssize_t n = ::pread(fd->get(), out.data(), out.size(), 0);
    out.resize(n < 0 ? 0 : static_cast<size_t>(n));
    return out;
  }

  bool Cached(size_t k) const { return PathExists(store_->ChunkPath(pieces_[k].key)); }

  TempDir dir_{"ucrfs-fetcher-test"};
  std::unique_ptr<Store> store_;
  std::vector<Piece> pieces_;
  std::vector<std::string> contents_;
  std::shared_ptr<CountingSource> source_;
  fetch::Descriptor layer_;
  LazyOptions lazy_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  std::set<size_t> bad_;
};

TEST_F(FetcherTest, AReadGoesOnWhileItsNeighboursAreKept) {
  auto f = NewFetcher();
  auto first = std::async(std::launch::async, [&] { return Read(*f, 0); });
  if (first.wait_for(5s) != std::future_status::ready) {
    Open();
    FAIL() << "the read waited for its neighbours to be kept";
  }
  EXPECT_EQ(first.get(), contents_[0]);
  EXPECT_EQ(source_->requests.load(), 1);
  // A reader of a neighbour waits for the keeper, not for a request of its own.
  auto later = std::async(std::launch::async, [&] { return Read(*f, 5); });
  EXPECT_EQ(later.wait_for(200ms), std::future_status::timeout) << "piece 5 was served before it was kept";
  Open();
  EXPECT_EQ(later.get(), contents_[5]);
  EXPECT_EQ(source_->requests.load(), 1);
  f.reset();
  for (size_t k = 0; k < kPieces; ++k) EXPECT_TRUE(Cached(k)) << "piece " << k;
}

TEST_F(FetcherTest, AReadGoesOnOnceItsOwnBytesAreInNotItsNeighbours) {
  Open();
  std::promise<void> rest;
  source_->rest = rest.get_future().share();
  auto f = NewFetcher();
  auto first = std::async(std::launch::async, [&] { return Read(*f, 0); });
  if (first.wait_for(5s) != std::future_status::ready) {
    rest.set_value();
    FAIL() << "the read waited for its neighbours' bytes";
  }
  EXPECT_EQ(first.get(), contents_[0]);
  EXPECT_FALSE(Cached(1)) << "a neighbour was kept before its bytes came";
  // A reader of a neighbour waits for that request, not for one of its own.
  auto later = std::async(std::launch::async, [&] { return Read(*f, 5); });
  EXPECT_EQ(later.wait_for(200ms), std::future_status::timeout) << "piece 5 was served before its bytes came";
  rest.set_value();
  EXPECT_EQ(later.get(), contents_[5]);
  EXPECT_EQ(source_->requests.load(), 1);
}

TEST_F(FetcherTest, ANeighbourThatDoesNotVerifyFailsOnlyItsReaders) {
  bad_ = {3};
  Open();
  auto f = NewFetcher();
  EXPECT_EQ(Read(*f, 0), contents_[0]);
  Status st;
  EXPECT_EQ(Read(*f, 3, &st), "");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kDigestMismatch) << st.error().message();
  EXPECT_FALSE(Cached(3));
  EXPECT_GE(lazy_.stats->fetch_errors.load(), 1u);
  EXPECT_EQ(Read(*f, 4), contents_[4]) << "the pieces after the bad one were not kept";
  int before = source_->requests.load();
  {
    std::lock_guard lock(mu_);
    bad_.clear();
  }
  EXPECT_EQ(Read(*f, 3), contents_[3]);
  EXPECT_EQ(source_->requests.load(), before + 1) << "the refused piece was not fetched again";
  EXPECT_TRUE(Cached(3));
}

TEST_F(FetcherTest, AFetcherThatEndsKeepsWhatItWasHandedFirst) {
  auto f = NewFetcher();
  EXPECT_EQ(Read(*f, 0), contents_[0]);
  auto opener = std::async(std::launch::async, [&] {
    std::this_thread::sleep_for(100ms);
    Open();
  });
  f.reset();  // waits for the keeper
  opener.get();
  for (size_t k = 0; k < kPieces; ++k) EXPECT_TRUE(Cached(k)) << "piece " << k;
  EXPECT_EQ(source_->requests.load(), 1);
}

TEST_F(FetcherTest, NeighboursStopAtTheirBound) {
  Open();
  auto f = std::make_unique<PieceFetcher>(*store_, layer_, pieces_, Codec(), lazy_, 1.0, 2 * kPiece);
  EXPECT_EQ(Read(*f, 0), contents_[0]);
  f.reset();  // the keeper has kept what came
  // The bound is on the request, the read's own piece included.
  for (size_t k = 0; k < kPieces; ++k) EXPECT_EQ(Cached(k), k <= 1) << "piece " << k;
  EXPECT_EQ(source_->requests.load(), 1);
}

}  // namespace
}  // namespace ucrfs::index
