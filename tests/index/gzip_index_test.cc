// GzipIndexingStream / GzipRandomReader / Checkpoint over files made by the
// gzip command, and ZstdStream over files made by the zstd command.
#include "ucrfs/index/gzip_index.h"

#include <stdlib.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "../../index/src/zstd_stream.h"  // private to ucrfs_index; tests reach it by path
#include "harness/test_util.h"
#include "ucrfs/common/file.h"
#include "ucrfs/index/tar.h"

namespace ucrfs::index {
namespace {

namespace fs = std::filesystem;

using harness::Sh;
using harness::WriteBytes;

// A temporary directory named for this test file.
class TempDir : public harness::TempDir {
 public:
  TempDir() : harness::TempDir("ucrfs-gzip-test") {}
};

// Runs of random bytes (stored blocks), English-like text (Huffman blocks
// with matches) and repeated bytes, so every kind of deflate block occurs.
std::string MixedData(size_t n, uint64_t seed) {
  static const char* const kWords[] = {"layer ", "image ", "registry ", "gzip ", "window ", "block ",
                                       "checkpoint ", "inflate ", "the ", "of ", "\n"};
  std::mt19937_64 rng(seed);
  std::string s;
  s.reserve(n + 8);
  while (s.size() < n) {
    size_t piece = 1 + rng() % 150000;
    switch (rng() % 3) {
      case 0:
        for (size_t i = 0; i < piece; i += 8) {
          uint64_t v = rng();
          s.append(reinterpret_cast<const char*>(&v), 8);
        }
        break;
      case 1:
        while (piece > 0 && s.size() < n + 150000) {
          const char* w = kWords[rng() % std::size(kWords)];
          s += w;
          piece -= std::min(piece, std::strlen(w));
        }
        break;
      default:
        s.append(piece, static_cast<char>(rng() % 4 == 0 ? rng() : 0));
    }
  }
  s.resize(n);
  return s;
}

struct Indexed {
  std::string decoded;
  std::vector<Checkpoint> cps;
  std::optional<Error> error;
};

// Reads the whole stream through GzipIndexingStream in odd-sized reads.
Indexed IndexGzip(const std::string& path, uint64_t span) {
  Indexed out;
  auto s = GzipIndexingStream::Open(path, span);
  if (!s.ok()) {
    out.error = s.error();
    return out;
  }
  std::mt19937 rng(7);
  std::string buf(300000, '\0');
  for (;;) {
    size_t want = 1 + rng() % buf.size();
    auto n = (*s)->Read(buf.data(), want);
    if (!n.ok()) {
      out.error = n.error();
      return out;
    }
    if (*n == 0) break;
    out.decoded.append(buf.data(), *n);
    EXPECT_EQ((*s)->position(), out.decoded.size());
  }
  out.cps = (*s)->checkpoints();
  return out;
}

void ExpectMalformed(const Indexed& r, std::string_view mention) {
  ASSERT_TRUE(r.error) << "corrupt gzip accepted";
  EXPECT_EQ(r.error->code(), Errc::kMalformed) << r.error->message();
  EXPECT_NE(r.error->message().find(mention), std::string::npos) << r.error->message();
}

// One 20 MiB gzip file shared by the tests of this suite (making it is slow).
class GzipBig : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    data_ = new std::string(MixedData(20 << 20, 1));
    WriteBytes(*dir_ / "data", *data_);
    ASSERT_EQ(Sh("gzip -6 -c " + *dir_ / "data" + " > " + *dir_ / "data.gz"), 0);
    auto r = IndexGzip(*dir_ / "data.gz", 1 << 20);
    ASSERT_FALSE(r.error) << r.error->message();
    ASSERT_TRUE(r.decoded == *data_);
    cps_ = new std::vector<Checkpoint>(r.cps);
  }
  static void TearDownTestSuite() {
    delete cps_;
    delete data_;
    delete dir_;
  }
  static std::unique_ptr<GzipRandomReader> Reader(size_t cache, std::vector<Checkpoint> cps = *cps_) {
    auto r = GzipRandomReader::Open(*dir_ / "data.gz", std::move(cps), data_->size(), cache);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
    return r.ok() ? std::move(r).value() : nullptr;
  }
  // Reads [off, off+len) and compares with the original (clipped at the end).
  static bool ReadMatches(GzipRandomReader& r, uint64_t off, size_t len, std::string* why) {
    std::string buf(len, '\x55');
    auto n = r.ReadAt(off, buf.data(), len);
    if (!n.ok()) {
      *why = n.error().message();
      return false;
    }
    size_t expect = off >= data_->size() ? 0 : std::min<uint64_t>(len, data_->size() - off);
    if (*n != expect) {
      *why = "got " + std::to_string(*n) + " bytes, want " + std::to_string(expect);
      return false;
    }
    if (expect > 0 && buf.compare(0, expect, *data_, off, expect) != 0) {
      *why = "bytes differ at " + std::to_string(off) + "+" + std::to_string(len);
      return false;
    }
    return true;
  }
  static TempDir* dir_;
  static std::string* data_;
  static std::vector<Checkpoint>* cps_;
};
TempDir* GzipBig::dir_;
std::string* GzipBig::data_;
std::vector<Checkpoint>* GzipBig::cps_;

TEST_F(GzipBig, CheckpointsEverySpanAtBlockBoundaries) {
  // 20 MiB at a 1 MiB span: about one checkpoint per MiB, the first at 0.
  ASSERT_GE(cps_->size(), 15u);
  EXPECT_LE(cps_->size(), 21u);
  EXPECT_EQ((*cps_)[0].out_offset, 0u);
  EXPECT_EQ((*cps_)[0].in_offset, 0u);
  EXPECT_TRUE((*cps_)[0].window.empty());
  bool some_bits = false;
  for (size_t i = 1; i < cps_->size(); ++i) {
    const Checkpoint& cp = (*cps_)[i];
    EXPECT_GE(cp.out_offset - (*cps_)[i - 1].out_offset, 1u << 20);
    EXPECT_GT(cp.in_offset, (*cps_)[i - 1].in_offset);
    EXPECT_EQ(cp.window.size(), 32768u);
    EXPECT_TRUE(cp.window == data_->substr(cp.out_offset - 32768, 32768));
    some_bits |= cp.bits != 0;
  }
  EXPECT_TRUE(some_bits);  // block boundaries inside a byte do occur
}

TEST_F(GzipBig, RandomReadsMatchTheOriginal) {
  auto reader = Reader(4 << 20);  // smaller than the data: eviction happens
  ASSERT_TRUE(reader);
  std::mt19937_64 rng(42);
  uint64_t size = data_->size();
  std::vector<std::pair<uint64_t, size_t>> reads = {
      {0, 1}, {0, 100000}, {size - 1, 1}, {size - 10, 100}, {size, 10}, {size + 4096, 10}, {0, 0}};
  for (const Checkpoint& cp : *cps_) {  // right before, at and across every checkpoint
    if (cp.out_offset >= 3) reads.emplace_back(cp.out_offset - 3, 6);
    reads.emplace_back(cp.out_offset, 70000);
  }
  while (reads.size() < 500) {
    uint64_t off = rng() % (size + 1000);
    size_t len = rng() % 4 == 0 ? rng() % (3 << 20) : rng() % 5000;
    reads.emplace_back(off, len);
  }
  for (auto [off, len] : reads) {
    std::string why;
    ASSERT_TRUE(ReadMatches(*reader, off, len, &why)) << why;
  }
}

TEST_F(GzipBig, OnlyTheFirstCheckpointStillReadsEverything) {
  auto reader = Reader(64 << 20, {cps_->front()});
  ASSERT_TRUE(reader);
  std::string why;
  EXPECT_TRUE(ReadMatches(*reader, 15 << 20, 3 << 20, &why)) << why;
  EXPECT_TRUE(ReadMatches(*reader, 1000, 5000, &why)) << why;
}

TEST_F(GzipBig, SequentialReadsResumeInsteadOfReinflating) {
  // From one checkpoint, a small cache and 64 KiB reads (as FUSE issues
  // them): restarting at the checkpoint for each chunk would inflate ~40x
  // the data; resuming inflates it about once, like one big read does.
  using Clock = std::chrono::steady_clock;
  auto full_reader = Reader(1 << 20, {cps_->front()});
  auto seq_reader = Reader(1 << 20, {cps_->front()});
  ASSERT_TRUE(full_reader && seq_reader);
  std::string why;
  auto t0 = Clock::now();
  ASSERT_TRUE(ReadMatches(*full_reader, 0, data_->size(), &why)) << why;
  auto t1 = Clock::now();
  for (uint64_t off = 0; off < data_->size(); off += 65536) {
    ASSERT_TRUE(ReadMatches(*seq_reader, off, 65536, &why)) << why;
  }
  auto t2 = Clock::now();
  EXPECT_LT((t2 - t1).count(), 4 * (t1 - t0).count() + 50'000'000) << "sequential reads re-inflate";
}

TEST_F(GzipBig, ConcurrentReadersMatchTheOriginal) {
  auto reader = Reader(2 << 20);
  ASSERT_TRUE(reader);
  std::atomic<int> failures{0};
  std::mutex mu;
  std::string first_why;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(100 + t);
      for (int i = 0; i < 60; ++i) {
        uint64_t off = rng() % data_->size();
        // Half the threads hammer the same few chunks to collide in flight.
        if (t % 2) off = (rng() % 4) * (256 << 10) + rng() % 1000;
        std::string why;
        if (!ReadMatches(*reader, off, rng() % 600000, &why)) {
          ++failures;
          std::lock_guard lock(mu);
          if (first_why.empty()) first_why = why;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0) << first_why;
}

TEST_F(GzipBig, SerializedCheckpointsRoundTripAndServeReads) {
  std::vector<Checkpoint> restored;
  for (const Checkpoint& cp : *cps_) {
    std::string blob = cp.Serialize();
    EXPECT_LT(blob.size(), 32768u + 64);
    auto back = Checkpoint::Deserialize(blob);
    ASSERT_TRUE(back.ok()) << back.error().message();
    EXPECT_EQ(back->out_offset, cp.out_offset);
    EXPECT_EQ(back->in_offset, cp.in_offset);
    EXPECT_EQ(back->bits, cp.bits);
    EXPECT_TRUE(back->window == cp.window);
    restored.push_back(std::move(*back));
  }
  auto reader = Reader(1 << 20, restored);
  ASSERT_TRUE(reader);
  std::string why;
  EXPECT_TRUE(ReadMatches(*reader, (*cps_)[5].out_offset + 12345, 2 << 20, &why)) << why;
}

TEST_F(GzipBig, CorruptSerializationsAreRejected) {
  std::string blob = (*cps_)[3].Serialize();
  for (size_t i = 0; i < blob.size(); i += std::max<size_t>(1, blob.size() / 97)) {
    std::string bad = blob;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    auto r = Checkpoint::Deserialize(bad);
    EXPECT_FALSE(r.ok()) << "flipped byte " << i << " accepted";
  }
  for (size_t len : {size_t{0}, size_t{1}, size_t{5}, blob.size() - 1}) {
    EXPECT_FALSE(Checkpoint::Deserialize(std::string_view(blob).substr(0, len)).ok()) << len;
  }
  auto r = Checkpoint::Deserialize(blob + "x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kMalformed);
}

TEST_F(GzipBig, InvalidCheckpointListsAreRejected) {
  std::vector<Checkpoint> unordered = *cps_;
  std::swap(unordered[2], unordered[3]);
  EXPECT_FALSE(GzipRandomReader::Open(*dir_ / "data.gz", unordered, data_->size()).ok());
  std::vector<Checkpoint> no_start(cps_->begin() + 1, cps_->end());
  EXPECT_FALSE(GzipRandomReader::Open(*dir_ / "data.gz", no_start, data_->size()).ok());
  EXPECT_FALSE(GzipRandomReader::Open(*dir_ / "data.gz", {}, data_->size()).ok());
}

TEST(GzipIndex, ConcatenatedMembersReadAcrossBoundaries) {
  TempDir dir;
  std::string a = MixedData(3 << 20, 2), b = MixedData(2 << 20, 3), c = MixedData(700000, 4);
  WriteBytes(dir / "a", a);
  WriteBytes(dir / "b", b);
  WriteBytes(dir / "c", c);
  WriteBytes(dir / "e", "");
  ASSERT_EQ(Sh("cd " + dir.path() + " && gzip -k a b c e && cat a.gz e.gz b.gz c.gz > all.gz"), 0);
  std::string all = a + b + c;
  auto r = IndexGzip(dir / "all.gz", 512 << 10);
  ASSERT_FALSE(r.error) << r.error->message();
  ASSERT_TRUE(r.decoded == all);
  // Each later member starts with a checkpoint that parses its header.
  for (uint64_t start : {a.size(), a.size() + b.size()}) {
    auto it = std::find_if(r.cps.begin(), r.cps.end(), [&](const Checkpoint& cp) { return cp.out_offset == start; });
    ASSERT_NE(it, r.cps.end()) << start;
    EXPECT_TRUE(it->window.empty());
    EXPECT_EQ(it->bits, 0);
  }
  for (size_t cache : {size_t{0}, size_t{8} << 20}) {
    // Also from the first checkpoint only: inflation must cross members.
    for (bool first_only : {false, true}) {
      std::vector<Checkpoint> cps = first_only ? std::vector<Checkpoint>{r.cps[0]} : r.cps;
      auto reader = GzipRandomReader::Open(dir / "all.gz", cps, all.size(), cache);
      ASSERT_TRUE(reader.ok()) << reader.error().message();
      for (auto [off, len] : std::vector<std::pair<uint64_t, size_t>>{{a.size() - 1000, 5000},
                                                                     {a.size() + b.size() - 70000, 140000},
                                                                     {0, all.size()},
                                                                     {a.size() - 300000, 3 << 20}}) {
        std::string buf(len, '\0');
        auto n = (*reader)->ReadAt(off, buf.data(), len);
        ASSERT_TRUE(n.ok()) << n.error().message();
        size_t expect = std::min<uint64_t>(len, all.size() - off);
        ASSERT_EQ(*n, expect);
        EXPECT_TRUE(buf.compare(0, expect, all, off, expect) == 0) << off << "+" << len;
      }
    }
  }
}

class GzipBroken : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = MixedData(3 << 20, 5);
    WriteBytes(dir_ / "d", data_);
    ASSERT_EQ(Sh("gzip -c " + dir_ / "d" + " > " + dir_ / "d.gz"), 0);
    auto gz = ReadFile(dir_ / "d.gz");
    ASSERT_TRUE(gz.ok());
    gz_ = *gz;
  }
  Indexed Index(const std::string& bytes) {
    WriteBytes(dir_ / "bad.gz", bytes);
    return IndexGzip(dir_ / "bad.gz", 1 << 20);
  }
  TempDir dir_;
  std::string data_, gz_;
};

TEST_F(GzipBroken, Truncated) {
  ExpectMalformed(Index(gz_.substr(0, gz_.size() / 2)), "truncated gzip stream");
  ExpectMalformed(Index(gz_.substr(0, gz_.size() - 3)), "truncated gzip stream");  // inside the trailer
  ExpectMalformed(Index(""), "truncated gzip stream");
}

TEST_F(GzipBroken, CorruptByteInTheMiddle) {
  std::string bad = gz_;
  bad[bad.size() / 2] = static_cast<char>(bad[bad.size() / 2] ^ 0x01);
  ExpectMalformed(Index(bad), "corrupt gzip data");
}

TEST_F(GzipBroken, CorruptCrcInTheTrailer) {
  std::string bad = gz_;
  bad[bad.size() - 6] = static_cast<char>(bad[bad.size() - 6] ^ 0x01);
  ExpectMalformed(Index(bad), "incorrect data check");
}

TEST_F(GzipBroken, TrailingGarbage) {
  ExpectMalformed(Index(gz_ + "garbage"), "trailing garbage at offset " + std::to_string(gz_.size()));
  ExpectMalformed(Index(gz_ + std::string(512, '\0')), "trailing garbage");
  ExpectMalformed(Index(gz_ + "\x1f"), "trailing garbage");
}

TEST_F(GzipBroken, RandomReaderReportsCorruptionBehindACheckpoint) {
  auto r = IndexGzip(dir_ / "d.gz", 512 << 10);
  ASSERT_FALSE(r.error);
  ASSERT_GE(r.cps.size(), 3u);
  // Damage the compressed bytes after checkpoint 2, then read there.
  std::string bad = gz_;
  for (size_t i = 0; i < 64; ++i) bad[r.cps[2].in_offset + 100 + i] = static_cast<char>(0xff);
  WriteBytes(dir_ / "bad.gz", bad);
  auto reader = GzipRandomReader::Open(dir_ / "bad.gz", r.cps, data_.size(), 0);
  ASSERT_TRUE(reader.ok());
  std::string buf(r.cps[3].out_offset - r.cps[2].out_offset, '\0');
  auto n = (*reader)->ReadAt(r.cps[2].out_offset, buf.data(), buf.size());
  if (n.ok()) {
    EXPECT_FALSE(buf == data_.substr(r.cps[2].out_offset, buf.size())) << "damage went unnoticed";
  } else {
    EXPECT_EQ(n.error().code(), Errc::kMalformed) << n.error().message();
  }
}

// A tar.gz from Python, indexed in one pass; file bytes then served through
// the random reader from the extents.
TEST(TarOverGzip, IndexOnceThenReadFilesAtRandom) {
  TempDir dir;
  std::string big = MixedData(5 << 20, 6);
  WriteBytes(dir / "big", big);
  WriteBytes(dir / "gen.py", R"PY(
import io, tarfile
with tarfile.open('l.tar.gz', 'w:gz', format=tarfile.PAX_FORMAT) as tf:
    for name, data in (('small', b'hello'), ('big', open('big', 'rb').read()), ('after', b'after big')):
        ti = tarfile.TarInfo(name); ti.size = len(data); tf.addfile(ti, io.BytesIO(data))
)PY");
  ASSERT_EQ(Sh("cd " + dir.path() + " && /usr/bin/python3 gen.py"), 0);
  auto gz = GzipIndexingStream::Open(dir / "l.tar.gz", 1 << 20);
  ASSERT_TRUE(gz.ok());
  TarReader tar(**gz);
  std::vector<TarEntry> entries;
  for (;;) {
    TarEntry e;
    auto more = tar.Next(&e);
    ASSERT_TRUE(more.ok()) << more.error().message();
    if (!*more) break;
    entries.push_back(std::move(e));
  }
  // Drain what follows the end-of-archive blocks so the index covers it all.
  char sink[65536];
  for (;;) {
    auto n = (*gz)->Read(sink, sizeof sink);
    ASSERT_TRUE(n.ok());
    if (*n == 0) break;
  }
  ASSERT_EQ(entries.size(), 3u);
  ASSERT_GE((*gz)->checkpoints().size(), 4u);
  auto reader = GzipRandomReader::Open(dir / "l.tar.gz", (*gz)->checkpoints(), (*gz)->position());
  ASSERT_TRUE(reader.ok());
  std::map<std::string, std::string> want = {{"small", "hello"}, {"big", big}, {"after", "after big"}};
  for (const TarEntry& e : entries) {
    ASSERT_EQ(e.extents.size(), 1u);
    std::string got(e.size, '\0');
    auto n = (*reader)->ReadAt(e.extents[0].stream_offset, got.data(), got.size());
    ASSERT_TRUE(n.ok());
    EXPECT_TRUE(got == want[e.path]) << e.path;
  }
}

// ---- zstd ---------------------------------------------------------------

std::string ReadAllZstd(const std::string& path, std::optional<Error>* err) {
  auto s = ZstdStream::Open(path);
  if (!s.ok()) {
    *err = s.error();
    return "";
  }
  std::string out;
  char buf[100000];
  for (;;) {
    auto n = (*s)->Read(buf, sizeof buf);
    if (!n.ok()) {
      *err = n.error();
      return out;
    }
    if (*n == 0) break;
    out.append(buf, *n);
    EXPECT_EQ((*s)->position(), out.size());
  }
  return out;
}

TEST(ZstdStream, MultipleFramesAndSkippableFrames) {
  TempDir dir;
  std::string a = MixedData(2 << 20, 7), b = MixedData(1 << 20, 8);
  WriteBytes(dir / "a", a);
  WriteBytes(dir / "b", b);
  // A skippable frame (magic 0x184D2A5E, 4-byte length) between two frames,
  // as zstd:chunked puts its TOC.
  std::string skippable("\x5e\x2a\x4d\x18\x05\x00\x00\x00hello", 13);
  WriteBytes(dir / "skip", skippable);
  ASSERT_EQ(Sh("cd " + dir.path() + " && zstd -q -k a b && cat a.zst skip b.zst > all.zst"), 0);
  std::optional<Error> err;
  std::string got = ReadAllZstd(dir / "all.zst", &err);
  ASSERT_FALSE(err) << err->message();
  EXPECT_TRUE(got == a + b);
}

TEST(ZstdStream, TruncatedAndCorruptAreMalformed) {
  TempDir dir;
  WriteBytes(dir / "a", MixedData(1 << 20, 9));
  ASSERT_EQ(Sh("cd " + dir.path() + " && zstd -q -k a"), 0);
  auto z = ReadFile(dir / "a.zst");
  ASSERT_TRUE(z.ok());
  for (const std::string& bad : {z->substr(0, z->size() / 2), z->substr(0, z->size() - 1), std::string(),
                                 *z + "junk-after-the-frame"}) {
    WriteBytes(dir / "bad.zst", bad);
    std::optional<Error> err;
    ReadAllZstd(dir / "bad.zst", &err);
    ASSERT_TRUE(err) << "accepted a broken stream of " << bad.size() << " bytes";
    EXPECT_EQ(err->code(), Errc::kMalformed) << err->message();
  }
}

TEST(ZstdStream, TarOverZstd) {
  TempDir dir;
  ASSERT_EQ(Sh("cd " + dir.path() + " && mkdir s && printf abc > s/f && tar -cf - -C s . | zstd -q > l.tar.zst"), 0);
  auto z = ZstdStream::Open(dir / "l.tar.zst");
  ASSERT_TRUE(z.ok());
  TarReader tar(**z);
  TarEntry e;
  ASSERT_TRUE(*tar.Next(&e));
  EXPECT_EQ(e.path, "");
  ASSERT_TRUE(*tar.Next(&e));
  EXPECT_EQ(e.path, "f");
  EXPECT_EQ(e.extents, (std::vector<Extent>{{0, 1024, 3}}));
  auto end = tar.Next(&e);
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(*end);
}

}  // namespace
}  // namespace ucrfs::index
