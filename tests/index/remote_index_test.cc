// ucrfs layer indexes (remote_index.h) and lazy gzip layers: a layer index
// round trip, its windows split into a windows blob, what decoding refuses,
// and reads of a gzip layer through its spans and windows from a counting
// in-memory source (one request per span however many readers, adjacent
// spans coalesced, one window per start of inflation, a corrupt span or
// window refused and not cached, the chunk cache held to its limit).
#include "ucrfs/index/remote_index.h"

#include <sys/stat.h>
#include <zstd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "harness/range_source.h"
#include "harness/test_util.h"
#include "ucrfs/common/file.h"
#include "ucrfs/index/chunk_cache.h"
#include "ucrfs/index/layers.h"
#include "ucrfs/index/store.h"

namespace ucrfs::index {
namespace {

namespace fs = std::filesystem;
using harness::Sh;
using harness::TempDir;
using harness::WriteBytes;

constexpr uint64_t kSpan = 256 << 10;

// Serves the layer blob and its windows blob by Range, counting requests and
// bytes of each; can flip one byte of either.
class CountingSource final : public harness::RangeOnlySource {
 public:
  CountingSource(std::string blob, std::string windows)
      : blob_(std::move(blob)), windows_(std::move(windows)), windows_digest_(Digest::Sha256Of(windows_)) {}
  Result<std::string> GetBlobRange(const fetch::Descriptor& desc, uint64_t offset, uint64_t length) override {
    // Slow enough that concurrent readers of one span meet in flight.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (desc.digest == windows_digest_) {
      {
        std::lock_guard lock(mu);
        ++window_requests;
      }
      window_cv.notify_all();
      std::string out = windows_.substr(offset, length);
      window_bytes += out.size();
      uint64_t c = corrupt_window_at.load();
      if (c != UINT64_MAX && c >= offset && c < offset + out.size()) out[c - offset] ^= 0x55;
      return out;
    }
    if (span_waits_for_window) {
      std::unique_lock lock(mu);
      span_saw_window = window_cv.wait_for(lock, std::chrono::seconds(3), [&] { return window_requests > 0; });
    }
    ++requests;
    std::string out = blob_.substr(offset, length);
    bytes += out.size();
    uint64_t c = corrupt_at.load();
    if (c != UINT64_MAX && c >= offset && c < offset + out.size()) out[c - offset] ^= 0x55;
    std::lock_guard lock(mu);
    ranges.emplace_back(offset, out.size());
    return out;
  }

  std::atomic<uint64_t> requests{0}, bytes{0};  // of the layer blob
  std::atomic<uint64_t> corrupt_at{UINT64_MAX};
  std::mutex mu;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::atomic<uint64_t> window_requests{0}, window_bytes{0};
  std::atomic<uint64_t> corrupt_window_at{UINT64_MAX};
  // A span request waits (up to 3 s) for a window request to arrive, and
  // says whether one did: the two are in flight together.
  std::atomic<bool> span_waits_for_window{false}, span_saw_window{false};
  std::condition_variable window_cv;

 private:
  std::string blob_;
  std::string windows_;
  Digest windows_digest_;
};

std::string Zstd(std::string_view raw) {
  std::string out(ZSTD_compressBound(raw.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), raw.data(), raw.size(), 3));
  return out;
}

std::string Unzstd(std::string_view z) {
  std::string out(ZSTD_getFrameContentSize(z.data(), z.size()), '\0');
  out.resize(ZSTD_decompress(out.data(), out.size(), z.data(), z.size()));
  return out;
}

class RemoteIndexTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("ucrfs-remote-index-test");
    const std::string root = *dir_ / "root";
    fs::create_directories(root + "/d");
    std::mt19937_64 rng(7);
    std::string big;
    while (big.size() < (6 << 20)) {  // half random, half text: spans of very different compressed sizes
      if (rng() % 2) {
        for (int i = 0; i < 8192; ++i) big.push_back(static_cast<char>(rng()));
      } else {
        for (int i = 0; i < 800; ++i) big += "layer index span ";
      }
    }
    WriteBytes(root + "/big", big);
    for (int i = 0; i < 50; ++i) WriteBytes(root + "/d/f" + std::to_string(i), std::string(i * 100, 'a' + i % 26));
    ASSERT_EQ(Sh("tar -C " + root + " --sort=name --owner=0 --group=0 --mtime=@1700000000 -cf " + *dir_ / "layer.tar" +
                 " . && gzip -6 -n -c " + *dir_ / "layer.tar" + " > " + *dir_ / "layer.tar.gz"),
              0);
    tar_ = new std::string(*ReadFile(*dir_ / "layer.tar"));
    blob_ = new std::string(*ReadFile(*dir_ / "layer.tar.gz"));
    desc_ = new fetch::Descriptor();
    desc_->media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
    desc_->digest = Digest::Sha256Of(*blob_);
    desc_->size = static_cast<int64_t>(blob_->size());

    // The source store holds the blob: that is where an index is built.
    auto store = Store::Open(*dir_ / "src-store", Store::Mode::kReadWrite);
    ASSERT_TRUE(store.ok());
    auto staging = (*store)->BeginStaging();
    ASSERT_TRUE(staging.ok());
    ASSERT_TRUE((*staging)->PutBytes(desc_->digest, *blob_).ok());
    ASSERT_TRUE((*staging)->PutBytes(Digest::Sha256Of("manifest"), "manifest").ok());
    ASSERT_TRUE((*staging)->PutBytes(Digest::Sha256Of("{}"), "{}").ok());
    ImageRecord rec;
    rec.key = "127.0.0.1:1/t/img:latest";
    rec.manifest_digest = Digest::Sha256Of("manifest");
    rec.config.digest = Digest::Sha256Of("{}");
    rec.layers = {*desc_};
    ASSERT_TRUE((*store)->CommitImage(**staging, rec).ok());
    auto built = BuildLayerIndex(**store, *desc_, kSpan);
    ASSERT_TRUE(built.ok()) << built.error().message();
    inline_index_ = new LayerIndex(*built);
    windows_ = new std::string(SplitWindows(*built));
    index_ = new LayerIndex(std::move(*built));
  }
  static void TearDownTestSuite() {
    delete index_;
    delete inline_index_;
    delete windows_;
    delete desc_;
    delete blob_;
    delete tar_;
    delete dir_;
  }

  // A fresh store with the layer imported from its index, and a reader of
  // it fetching from `source`.
  struct Lazy {
    std::unique_ptr<Store> store;
    LazyOptions opts;
    std::unique_ptr<LayerReader> reader;
  };
  // index: what to import (default: index_, the windows split out).
  static Lazy OpenLazy(const std::string& name, std::shared_ptr<CountingSource> source, uint64_t cache_limit = 0,
                       const LayerIndex* index = nullptr) {
    Lazy l;
    auto store = Store::Open(*dir_ / name, Store::Mode::kReadWrite);
    EXPECT_TRUE(store.ok());
    l.store = std::move(*store);
    auto rec = ImportLayerIndex(*l.store, *desc_, index ? *index : *index_);
    EXPECT_TRUE(rec.ok()) << rec.error().message();
    EXPECT_EQ(rec->format, LayerFormat::kGzipLazy);
    l.opts.opener = [source]() -> Result<std::shared_ptr<fetch::ImageSource>> {
      return std::shared_ptr<fetch::ImageSource>(source);
    };
    l.opts.prefetch = Prefetch::kNone;
    l.opts.cache = ChunkCache::Open(*dir_ / name + "/chunks", cache_limit);
    auto reader = LayerReader::Open(*l.store, *desc_, *rec, l.opts);
    EXPECT_TRUE(reader.ok()) << reader.error().message();
    l.reader = std::move(*reader);
    return l;
  }

  static std::string Read(LayerReader& r, uint64_t off, size_t len, Status* st = nullptr) {
    std::string buf(len, '\0');
    auto n = r.ReadAt(off, buf.data(), len);
    if (st) *st = n.ok() ? Ok() : Status(n.error());
    if (!n.ok()) return "";
    buf.resize(*n);
    return buf;
  }

  static uint64_t SpansTouching(uint64_t lo, uint64_t hi) {
    uint64_t n = 0;
    const auto& cps = index_->checkpoints;
    for (size_t i = 0; i < cps.size(); ++i) {
      uint64_t end = i + 1 < cps.size() ? cps[i + 1].out_offset : index_->decoded_size;
      if (cps[i].out_offset < hi && end > lo) ++n;
    }
    return n;
  }

  static uint64_t CacheFiles(const std::string& store) {
    uint64_t n = 0;
    for (auto& e : fs::recursive_directory_iterator(*dir_ / store + "/chunks")) n += e.is_regular_file() ? 1 : 0;
    return n;
  }

  static std::shared_ptr<CountingSource> NewSource() { return std::make_shared<CountingSource>(*blob_, *windows_); }

  // The checkpoint a read at decoded offset `off` starts inflating from (the
  // one before its 256 KiB decoded chunk), and an offset inside the chunk
  // that starts at checkpoint k's or just after it.
  static size_t CheckpointFor(uint64_t off) {
    uint64_t chunk = off / kSpan * kSpan;
    size_t k = 0;
    while (k + 1 < index_->checkpoints.size() && index_->checkpoints[k + 1].out_offset <= chunk) ++k;
    return k;
  }
  static uint64_t OffsetStartingAt(size_t k) {
    return (index_->checkpoints[k].out_offset + kSpan - 1) / kSpan * kSpan + 10;
  }

  static TempDir* dir_;
  static std::string* tar_;
  static std::string* blob_;
  static fetch::Descriptor* desc_;
  static LayerIndex* index_;         // windows split out
  static LayerIndex* inline_index_;  // as built: the checkpoints carry their windows
  static std::string* windows_;      // index_'s windows blob
};

TempDir* RemoteIndexTest::dir_;
std::string* RemoteIndexTest::tar_;
std::string* RemoteIndexTest::blob_;
fetch::Descriptor* RemoteIndexTest::desc_;
LayerIndex* RemoteIndexTest::index_;
LayerIndex* RemoteIndexTest::inline_index_;
std::string* RemoteIndexTest::windows_;

TEST(RemoteIndexTag, DerivedFromTheManifestDigest) {
  Digest d = Digest::Sha256Of("m");
  EXPECT_EQ(IndexTag(d), "sha256-" + d.hex() + ".ucrfs");
  EXPECT_LE(IndexTag(d).size(), 128u);  // the distribution spec's tag limit
}

TEST_F(RemoteIndexTest, BuildRecordsEntriesCheckpointsAndSpanDigests) {
  EXPECT_EQ(index_->decoded_size, tar_->size());
  EXPECT_GE(index_->entries.size(), 53u);  // ., big, d, 50 files
  EXPECT_GE(index_->checkpoints.size(), 20u);
  ASSERT_EQ(index_->span_digests.size(), index_->checkpoints.size());
  uint64_t covered = 0;
  for (size_t i = 0; i < index_->checkpoints.size(); ++i) {
    SpanRange r = SpanOf(index_->checkpoints, i, blob_->size());
    EXPECT_EQ(index_->span_digests[i], Digest::Sha256Of(blob_->substr(r.offset, r.size))) << "span " << i;
    EXPECT_LE(r.offset, covered) << "span " << i << " leaves a gap";
    covered = r.offset + r.size;
  }
  EXPECT_EQ(covered, blob_->size());
}

TEST_F(RemoteIndexTest, EncodeDecodeRoundTrip) {
  std::string blob = EncodeLayerIndex(*index_);
  auto back = DecodeLayerIndex(blob, *desc_);
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(back->decoded_size, index_->decoded_size);
  ASSERT_EQ(back->entries.size(), index_->entries.size());
  for (size_t i = 0; i < back->entries.size(); ++i) EXPECT_EQ(back->entries[i].path, index_->entries[i].path);
  ASSERT_EQ(back->checkpoints.size(), index_->checkpoints.size());
  ASSERT_EQ(back->windows.size(), index_->windows.size());
  for (size_t i = 0; i < back->checkpoints.size(); ++i) {
    EXPECT_EQ(back->checkpoints[i].in_offset, index_->checkpoints[i].in_offset);
    EXPECT_EQ(back->checkpoints[i].bits, index_->checkpoints[i].bits);
    EXPECT_TRUE(back->checkpoints[i].window.empty());
    EXPECT_EQ(back->windows[i].length, index_->windows[i].length);
    EXPECT_EQ(back->windows[i].offset, index_->windows[i].offset);
    EXPECT_EQ(back->windows[i].size, index_->windows[i].size);
    EXPECT_EQ(back->windows[i].digest, index_->windows[i].digest);
  }
  EXPECT_EQ(back->span_digests, index_->span_digests);
  EXPECT_EQ(back->windows_blob, index_->windows_blob);
  EXPECT_EQ(back->windows_size, index_->windows_size);
  // The windows were most of the index.
  EXPECT_LT(blob.size() * 2, windows_->size()) << blob.size();
}

TEST_F(RemoteIndexTest, SplitWindowsMovesEachWindowIntoTheBlobInOrder) {
  ASSERT_EQ(index_->windows.size(), index_->checkpoints.size());
  EXPECT_EQ(index_->windows_blob, Digest::Sha256Of(*windows_));
  EXPECT_EQ(index_->windows_size, windows_->size());
  EXPECT_EQ(index_->windows[0].length, 0u) << "the first checkpoint starts the member: no window";
  uint64_t end = 0, with = 0;
  for (size_t i = 0; i < index_->windows.size(); ++i) {
    const WindowRef& w = index_->windows[i];
    const std::string& want = inline_index_->checkpoints[i].window;
    EXPECT_TRUE(index_->checkpoints[i].window.empty()) << i;
    EXPECT_EQ(w.length, want.size()) << i;
    if (w.length == 0) continue;
    ++with;
    EXPECT_EQ(w.offset, end) << "window " << i << " is not next to the one before";
    std::string z = windows_->substr(w.offset, w.size);
    EXPECT_EQ(w.digest, Digest::Sha256Of(z)) << i;
    EXPECT_TRUE(Unzstd(z) == want) << "window " << i << " does not decompress to the checkpoint's";
    end = w.offset + w.size;
  }
  EXPECT_EQ(end, windows_->size());
  EXPECT_EQ(with + 1, index_->checkpoints.size()) << "one gzip member: every checkpoint but the first has a window";
}

TEST_F(RemoteIndexTest, DecodeRefusesVersionOne) {
  // The same index as version 1 would have it: only the version differs in
  // what the check looks at first.
  std::string raw = Unzstd(EncodeLayerIndex(*index_));
  ASSERT_EQ(raw[8], 2);
  raw[8] = 1;
  auto r = DecodeLayerIndex(Zstd(raw), *desc_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kUnsupported) << r.error().message();
  EXPECT_NE(r.error().message().find("version 1"), std::string::npos) << r.error().message();
}

TEST_F(RemoteIndexTest, DecodeRefusesHostileWindows) {
  auto refused = [&](const LayerIndex& idx, std::string_view why) {
    auto r = DecodeLayerIndex(EncodeLayerIndex(idx), *desc_);
    EXPECT_FALSE(r.ok()) << why;
    if (!r.ok()) {
      EXPECT_EQ(r.error().code(), Errc::kMalformed) << why << ": " << r.error().message();
    }
  };
  size_t k = 0;  // a checkpoint with a window, followed by another
  for (size_t i = 1; i + 1 < index_->windows.size() && k == 0; ++i) {
    if (index_->windows[i].length > 0 && index_->windows[i + 1].length > 0) k = i;
  }
  ASSERT_GT(k, 0u);
  LayerIndex bad = *index_;
  bad.windows[k].offset = bad.windows_size;
  refused(bad, "a window past the end of the windows blob");
  bad = *index_;
  bad.windows[k].size = bad.windows_size + 1;
  refused(bad, "a window larger than the windows blob");
  bad = *index_;
  bad.windows[k].offset = UINT64_MAX - 4;
  refused(bad, "a window whose end overflows");
  bad = *index_;
  std::swap(bad.windows[k], bad.windows[k + 1]);
  refused(bad, "windows out of order");
  bad = *index_;
  bad.windows[k + 1].offset = bad.windows[k].offset;
  refused(bad, "overlapping windows");
  bad = *index_;
  bad.windows[k].length = 32769;
  refused(bad, "a window longer than deflate's");
  bad = *index_;
  bad.windows[k].size = 0;
  refused(bad, "an empty window blob extent");
  bad = *index_;
  bad.windows[0] = bad.windows[k];
  bad.windows[0].offset = 0;
  bad.windows[0].size = 1;
  refused(bad, "a window at the first checkpoint");
  bad = *index_;
  for (size_t i = 1; i < bad.checkpoints.size(); ++i) {
    if (bad.checkpoints[i].bits > 0) {
      bad.windows[i] = WindowRef{};
      break;
    }
  }
  refused(bad, "a checkpoint that needs a window without one");
  bad = *index_;
  bad.windows.pop_back();
  refused(bad, "a window place missing");
  bad = *index_;
  bad.checkpoints[k].window = inline_index_->checkpoints[k].window;
  refused(bad, "a window both in the checkpoint and in the blob");
  bad = *index_;
  bad.windows_size = bad.checkpoints.size() * 40000;
  refused(bad, "an absurd windows blob");

  // A window's digest missing: the last string of the index is the last
  // window's digest; replace it by an empty one.
  ASSERT_GT(index_->windows.back().length, 0u);
  std::string raw = Unzstd(EncodeLayerIndex(*index_));
  std::string digest = index_->windows.back().digest.str();
  ASSERT_EQ(raw.substr(raw.size() - digest.size()), digest);
  raw.resize(raw.size() - digest.size() - 1);  // the length (one varint byte) and the digest
  raw.push_back('\0');
  auto r = DecodeLayerIndex(Zstd(raw), *desc_);
  EXPECT_FALSE(r.ok()) << "a window without its digest";
}

TEST_F(RemoteIndexTest, DecodeRefusesWhatDoesNotCheckOut) {
  auto refused = [&](const LayerIndex& idx, const fetch::Descriptor& d, std::string_view why) {
    auto r = DecodeLayerIndex(EncodeLayerIndex(idx), d);
    EXPECT_FALSE(r.ok()) << why;
    if (!r.ok()) {
      EXPECT_NE(r.error().message().find(desc_->digest.str()), std::string::npos) << r.error().message();
      EXPECT_EQ(r.error().message().find('\n'), std::string::npos);
    }
  };
  fetch::Descriptor other = *desc_;
  other.digest = Digest::Sha256Of("another layer");
  EXPECT_FALSE(DecodeLayerIndex(EncodeLayerIndex(*index_), other).ok()) << "index of another layer";
  fetch::Descriptor resized = *desc_;
  resized.size += 1;
  refused(*index_, resized, "wrong layer size");

  LayerIndex bad = *index_;
  bad.entries[3].path = "../escape";
  refused(bad, *desc_, "path with ..");
  bad = *index_;
  bad.entries[3].path = "/abs";
  refused(bad, *desc_, "absolute path");
  bad = *index_;
  bad.entries[3].path = "d//x";
  refused(bad, *desc_, "unnormalized path");
  bad = *index_;
  for (auto& e : bad.entries) {
    if (!e.extents.empty()) {
      e.extents[0].stream_offset = index_->decoded_size;
      break;
    }
  }
  refused(bad, *desc_, "extent past the stream");
  bad = *index_;
  std::swap(bad.checkpoints[1], bad.checkpoints[2]);
  refused(bad, *desc_, "checkpoints out of order");
  bad = *index_;
  bad.checkpoints.back().in_offset = blob_->size() + 10;
  refused(bad, *desc_, "checkpoint past the blob");
  bad = *index_;
  bad.span_digests.pop_back();
  refused(bad, *desc_, "a span digest missing");

  std::string blob = EncodeLayerIndex(*index_);
  EXPECT_FALSE(DecodeLayerIndex(blob.substr(0, blob.size() - 7), *desc_).ok()) << "truncated";
  EXPECT_FALSE(DecodeLayerIndex("not zstd at all", *desc_).ok());
  EXPECT_FALSE(DecodeLayerIndex("", *desc_).ok());
}

TEST_F(RemoteIndexTest, LazyReadsMatchTheTarAndFetchEachSpanOnce) {
  auto src = NewSource();
  Lazy l = OpenLazy("store-all", src);
  std::mt19937_64 rng(3);
  for (int i = 0; i < 200; ++i) {
    uint64_t off = rng() % tar_->size();
    size_t len = 1 + rng() % (300 << 10);
    ASSERT_TRUE(Read(*l.reader, off, len) == tar_->substr(off, len)) << "at " << off << " len " << len;
  }
  ASSERT_TRUE(Read(*l.reader, 0, tar_->size()) == *tar_);
  EXPECT_LE(src->bytes.load(), blob_->size() + index_->checkpoints.size()) << "a span was fetched twice";
  std::set<uint64_t> starts;
  for (auto& [off, len] : src->ranges) EXPECT_TRUE(starts.insert(off).second) << "range at " << off << " twice";
  EXPECT_GT(src->window_requests.load(), 0u);
  EXPECT_LE(src->window_bytes.load(), windows_->size()) << "a window was fetched twice";
}

TEST_F(RemoteIndexTest, CheckpointsCarryingTheirWindowsStillRead) {
  // Layers imported before windows moved out keep them in their checkpoints.
  auto src = NewSource();
  Lazy l = OpenLazy("store-inline", src, 0, inline_index_);
  uint64_t off = tar_->size() / 3;
  ASSERT_TRUE(Read(*l.reader, off, 100000) == tar_->substr(off, 100000));
  EXPECT_GT(src->requests.load(), 0u);
  EXPECT_EQ(src->window_requests.load(), 0u);
}

TEST_F(RemoteIndexTest, ASmallReadFetchesOnlyItsSpans) {
  auto src = NewSource();
  Lazy l = OpenLazy("store-small", src);
  uint64_t off = tar_->size() / 2;
  ASSERT_TRUE(Read(*l.reader, off, 4096) == tar_->substr(off, 4096));
  EXPECT_EQ(src->requests.load(), 1u);
  EXPECT_LT(src->bytes.load(), blob_->size() / 5) << "4 KiB read fetched too much";
  // One window request: the window of the checkpoint inflation started
  // from, and of the next ones no more than a small share of what an unknown
  // link's request takes besides (LinkEstimate's default).
  const WindowRef& w = index_->windows[CheckpointFor(off)];
  ASSERT_GT(w.length, 0u);
  EXPECT_EQ(src->window_requests.load(), 1u);
  EXPECT_GE(src->window_bytes.load(), w.size);
  EXPECT_LE(src->window_bytes.load(), std::max<uint64_t>(w.size, LinkEstimate::kDefaultBytes / 8));
  EXPECT_TRUE(PathExists(l.store->ChunkPath(w.digest))) << "the window was not cached";
}

TEST_F(RemoteIndexTest, AdjacentSpansComeInOneRequest) {
  auto src = NewSource();
  Lazy l = OpenLazy("store-coalesce", src);
  uint64_t off = 1 << 20, len = 2 << 20;
  ASSERT_GE(SpansTouching(off, off + len), 4u);
  ASSERT_TRUE(Read(*l.reader, off, len) == tar_->substr(off, len));
  EXPECT_EQ(src->requests.load(), 1u) << "a 2 MiB read over " << SpansTouching(off, off + len)
                                      << " missing adjacent spans";
}

TEST_F(RemoteIndexTest, ConcurrentReadersOfOneSpanCauseOneRequest) {
  auto src = NewSource();
  Lazy l = OpenLazy("store-concurrent", src);
  uint64_t base = 3 * kSpan + 1000;  // 8 reads inside one 64 KiB decoded chunk
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      // Gaps between the reads, so that none continues another (which
      // would rightly fetch the spans ahead of it too).
      uint64_t off = base + static_cast<uint64_t>(t) * 8192;
      if (Read(*l.reader, off, 4096) == tar_->substr(off, 4096)) ++good;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 8);
  EXPECT_EQ(src->requests.load(), 1u);
}

TEST_F(RemoteIndexTest, ACorruptSpanFailsTheReadAndIsNotCached) {
  auto src = NewSource();
  Lazy l = OpenLazy("store-corrupt", src);
  size_t k = index_->checkpoints.size() / 2;
  SpanRange r = SpanOf(index_->checkpoints, k, blob_->size());
  src->corrupt_at = r.offset + r.size / 2;
  uint64_t off = index_->checkpoints[k].out_offset + 10;
  Status st;
  Read(*l.reader, off, 100, &st);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kDigestMismatch) << st.error().message();
  EXPECT_FALSE(PathExists(l.store->ChunkPath(index_->span_digests[k]))) << "the corrupt span was cached";
  src->corrupt_at = UINT64_MAX;
  EXPECT_TRUE(Read(*l.reader, off, 100) == tar_->substr(off, 100));
  EXPECT_TRUE(PathExists(l.store->ChunkPath(index_->span_digests[k])));
}

TEST_F(RemoteIndexTest, TheWindowIsFetchedWhileTheSpansCome) {
  auto src = NewSource();
  Lazy l = OpenLazy("store-parallel-window", src);
  src->span_waits_for_window = true;
  uint64_t off = tar_->size() / 2;
  ASSERT_GT(index_->windows[CheckpointFor(off)].length, 0u);
  ASSERT_TRUE(Read(*l.reader, off, 4096) == tar_->substr(off, 4096));
  EXPECT_TRUE(src->span_saw_window.load()) << "the window was fetched after the spans, not beside them";
  EXPECT_EQ(src->window_requests.load(), 1u);
  EXPECT_EQ(src->requests.load(), 1u);
}

TEST_F(RemoteIndexTest, ACorruptWindowFailsTheReadAndIsNotCached) {
  auto src = NewSource();
  Lazy l = OpenLazy("store-corrupt-window", src);
  size_t k = index_->checkpoints.size() / 2;
  while (index_->windows[k].length == 0) ++k;
  uint64_t off = OffsetStartingAt(k);
  ASSERT_EQ(CheckpointFor(off), k);
  const WindowRef& w = index_->windows[k];
  src->corrupt_window_at = w.offset + w.size / 2;
  Status st;
  Read(*l.reader, off, 100, &st);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kDigestMismatch) << st.error().message();
  EXPECT_FALSE(PathExists(l.store->ChunkPath(w.digest))) << "the corrupt window was cached";
  src->corrupt_window_at = UINT64_MAX;
  EXPECT_TRUE(Read(*l.reader, off, 100) == tar_->substr(off, 100));
  EXPECT_TRUE(PathExists(l.store->ChunkPath(w.digest)));
}

TEST_F(RemoteIndexTest, TheChunkCacheStaysWithinItsLimit) {
  auto src = NewSource();
  const uint64_t limit = 512 << 10;
  Lazy l = OpenLazy("store-limit", src, limit);
  ASSERT_TRUE(Read(*l.reader, 0, tar_->size()) == *tar_);
  uint64_t on_disk = 0, largest = 0;
  for (auto& e : fs::recursive_directory_iterator(*dir_ / "store-limit/chunks")) {
    if (!e.is_regular_file()) continue;
    on_disk += e.file_size();
    largest = std::max<uint64_t>(largest, e.file_size());
  }
  EXPECT_LE(on_disk, limit + largest);
  EXPECT_GT(l.opts.cache->evictions(), 0u);
  EXPECT_EQ(l.opts.cache->bytes(), on_disk);
  // Evicted spans come back when read again.
  EXPECT_TRUE(Read(*l.reader, 100, 5000) == tar_->substr(100, 5000));
}

TEST(ChunkCacheTest, CountsWhatIsThereAndEvictsLeastRecentlyUsed) {
  TempDir dir("ucrfs-chunk-cache-test");
  fs::create_directories(dir / "sha256");
  for (int i = 0; i < 4; ++i) WriteBytes(dir / ("sha256/old" + std::to_string(i)), std::string(1000, 'x'));
  auto cache = ChunkCache::Open(dir.path(), 3500);
  EXPECT_EQ(cache->bytes(), 4000u) << "nothing is removed until something is added";
  cache->Used(dir / "sha256/old0");
  WriteBytes(dir / "sha256/new", std::string(1000, 'y'));
  cache->Added(dir / "sha256/new", 1000);
  EXPECT_LE(cache->bytes(), 3500u);
  EXPECT_TRUE(PathExists(dir / "sha256/new"));
  EXPECT_TRUE(PathExists(dir / "sha256/old0")) << "a piece just used was evicted";
  EXPECT_EQ(cache->evictions(), 2u);
  EXPECT_FALSE(cache->NearlyFull()) << cache->bytes();  // 3000 of 3500
  WriteBytes(dir / "sha256/more", std::string(200, 'z'));
  cache->Added(dir / "sha256/more", 200);
  EXPECT_TRUE(cache->NearlyFull()) << cache->bytes();  // at 90% background fetching stops
  auto unlimited = ChunkCache::Open(dir.path(), 0);
  EXPECT_FALSE(unlimited->NearlyFull());
}

}  // namespace
}  // namespace ucrfs::index
