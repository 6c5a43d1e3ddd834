// Read traces (trace.h): the file format, RecordingTree over the in-memory
// tree, and Replay against a tree that logs the reads it is asked for.
#include "ucrfs/index/trace.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/memory_tree.h"
#include "harness/test_util.h"

namespace ucrfs::index {
namespace {

using harness::MemoryTree;

constexpr uint64_t B = kTraceBlock;

std::string Bytes(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i * 31 + i / 7);
  return s;
}

// ------------------------------------------------------------------ format

TEST(TraceFormat, RoundTripsOddNames) {
  Trace t;
  const std::vector<std::string> paths = {
      "/usr/bin/python3.11",
      "/caf\xe9",                      // Latin-1: not UTF-8
      "/100%",                         // the escape character itself
      "/%41%",                         // looks escaped already
      "/\xff\xfe/\x80lone",            // bytes that never start or continue a sequence
      "/\xc0\xaf-overlong",            // overlong '/'
      "/\xed\xa0\x80-surrogate",       // UTF-16 surrogate in UTF-8
      "/\xf4\x90\x80\x80-beyond",      // above U+10FFFF
      "/trunc\xe5\x90",                // a sequence cut at the end
      "/名前/ünïcødé/\xf0\x9f\x98\x80",  // well-formed UTF-8, 2, 3 and 4 bytes
      "/tab\tnl\nquote\"back\\slash",  // JSON escapes
      "/" + std::string(255, 'L'),
  };
  uint64_t off = 0;
  for (const auto& p : paths) t.reads.push_back(TraceRead{p, off, B}), off += B;
  t.reads.push_back(TraceRead{"/big", kTraceMaxEnd - 2, 2});
  std::string text = SerializeTrace(t);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << "one line, newline-terminated";
  auto back = ParseTrace(text);
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(*back, t);
  EXPECT_EQ(SerializeTrace(*back), text);
}

TEST(TraceFormat, DocumentedShapeAndEscapes) {
  Trace t;
  t.reads = {{"/caf\xe9", 0, 10}, {"/100%", 65536, 5}, {"/ok/é", 1, 2}};
  auto j = nlohmann::json::parse(SerializeTrace(t));
  EXPECT_EQ(j["version"], 1);
  ASSERT_EQ(j["reads"].size(), 3u);
  EXPECT_EQ(j["reads"][0]["path"], "/caf%E9");
  EXPECT_EQ(j["reads"][0]["offset"], 0);
  EXPECT_EQ(j["reads"][0]["length"], 10);
  EXPECT_EQ(j["reads"][1]["path"], "/100%25");
  EXPECT_EQ(j["reads"][2]["path"], "/ok/é") << "well-formed UTF-8 is written as it is";
  // Readers decode any %XX, lower-case too.
  auto lower = ParseTrace(R"({"version":1,"reads":[{"path":"/caf%e9%2f","offset":0,"length":1}]})");
  // "%2f" decodes to '/', making an empty trailing name.
  ASSERT_FALSE(lower.ok());
  auto ok = ParseTrace(R"({"version":1,"reads":[{"path":"/caf%e9","offset":0,"length":1,"extra":true}],"x":1})");
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_EQ(ok->reads[0].path, "/caf\xe9");
  auto empty = ParseTrace(SerializeTrace(Trace{}));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->reads.empty());
}

TEST(TraceFormat, RejectsBadInput) {
  auto one = [](const std::string& read) { return R"({"version":1,"reads":[)" + read + "]}"; };
  auto rd = [&](const std::string& path, const std::string& off = "0", const std::string& len = "1") {
    return one(R"({"path":)" + path + R"(,"offset":)" + off + R"(,"length":)" + len + "}");
  };
  std::string long_path;  // names of 250 bytes, 5020 in all
  for (int i = 0; i < 20; ++i) long_path += "/" + std::string(250, 'd');
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "invalid JSON"},
      {"{\"version\":1,", "invalid JSON"},
      {"[]", "not a JSON object"},
      {R"({"reads":[]})", "no version"},
      {R"({"version":2,"reads":[]})", "version 2 is not supported"},
      {R"({"version":"1","reads":[]})", "version \"1\" is not supported"},
      {R"({"version":1.0,"reads":[]})", "is not supported"},
      // Too large for a double: nlohmann reports these by another exception.
      {R"({"version":1,"reads":[{"path":"/a","offset":1e400,"length":1}]})", "invalid JSON: a number out of range"},
      {R"({"version":1})", "no reads"},
      {R"({"version":1,"reads":{}})", "reads: expected an array"},
      {one("7"), "reads[0]: expected an object"},
      {one(R"({"offset":0,"length":1})"), "reads[0].path: missing"},
      {rd("5"), "reads[0].path: expected a string"},
      {rd(R"("")"), "reads[0].path: empty path"},
      {rd(R"("etc/passwd")"), "reads[0].path: relative path 'etc/passwd'"},
      {rd(R"("/")"), "empty name"},
      {rd(R"("//etc")"), "empty name"},
      {rd(R"("/etc/")"), "empty name"},
      {rd(R"("/a/../b")"), "'..' component in '/a/../b'"},
      {rd(R"("/..")"), "'..' component"},
      {rd(R"("/a/./b")"), "'.' component"},
      {rd(R"("/a%2F..%2Fb")"), "'..' component"},
      {rd(R"("/nul%00byte")"), "NUL byte"},
      {rd(R"("/a\u0000b")"), "NUL byte"},
      {rd(R"("/bad%G1")"), "bad %-escape"},
      {rd(R"("/bad%4")"), "bad %-escape"},
      {rd(R"("/bad%")"), "bad %-escape"},
      {rd("\"/" + std::string(256, 'n') + "\""), "name longer than 255 bytes"},
      {rd("\"" + long_path + "\""), "path longer than 4096 bytes"},
      {one(R"({"path":"/a","length":1})"), "reads[0].offset: missing"},
      {one(R"({"path":"/a","offset":0})"), "reads[0].length: missing"},
      {rd(R"("/a")", "-1"), "reads[0].offset: expected a non-negative integer, got number"},
      {rd(R"("/a")", "0.5"), "reads[0].offset: expected a non-negative integer"},
      {rd(R"("/a")", R"("0")"), "reads[0].offset: expected a non-negative integer, got string"},
      {rd(R"("/a")", "0", "null"), "reads[0].length: expected a non-negative integer, got null"},
      {rd(R"("/a")", "0", "0"), "reads[0].length: 0"},
      {rd(R"("/a")", "9007199254740991", "2"), "ends beyond 2^53"},
      {rd(R"("/a")", "0", "18446744073709551615"), "ends beyond 2^53"},
      {rd(R"("/a")", "18446744073709551615", "18446744073709551615"), "ends beyond 2^53"},
      {rd(R"("/a")", "0", "99999999999999999999999"), "expected a non-negative integer"},
  };
  for (const auto& [text, want] : cases) {
    auto r = ParseTrace(text);
    ASSERT_FALSE(r.ok()) << "accepted: " << text.substr(0, 200);
    EXPECT_EQ(r.error().code(), Errc::kMalformed) << text.substr(0, 200);
    EXPECT_NE(r.error().message().find(want), std::string::npos)
        << "input " << text.substr(0, 200) << "\n got: " << r.error().message() << "\n want: " << want;
    EXPECT_EQ(r.error().message().find('\n'), std::string::npos) << r.error().message();
    EXPECT_LT(r.error().message().size(), 400u) << r.error().message();
  }
  // Later reads are checked too, and named by index.
  Trace t;
  t.reads = {{"/a", 0, 1}, {"/b", 0, 1}};
  std::string text = SerializeTrace(t);
  text.replace(text.find("/b"), 2, "b/");
  auto r = ParseTrace(text);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("reads[1].path: relative path 'b/'"), std::string::npos)
      << r.error().message();
}

TEST(TraceFormat, ReadTraceFileNamesTheFile) {
  harness::TempDir dir;
  auto missing = ReadTraceFile(dir / "nope.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find(dir / "nope.json"), std::string::npos) << missing.error().message();
  auto isdir = ReadTraceFile(dir.path());
  ASSERT_FALSE(isdir.ok());
  EXPECT_NE(isdir.error().message().find("not a regular file"), std::string::npos) << isdir.error().message();
  harness::WriteBytes(dir / "bad.json", R"({"version":1,"reads":[{"path":"x","offset":0,"length":1}]})");
  auto bad = ReadTraceFile(dir / "bad.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kMalformed);
  EXPECT_EQ(bad.error().message(), "trace " + (dir / "bad.json") + ": reads[0].path: relative path 'x'");
  Trace t;
  t.reads = {{"/caf\xe9", 3, 4}};
  harness::WriteBytes(dir / "good.json", SerializeTrace(t));
  auto good = ReadTraceFile(dir / "good.json");
  ASSERT_TRUE(good.ok()) << good.error().message();
  EXPECT_EQ(*good, t);
}

// ------------------------------------------------------------------ RecordingTree

// A tree of a few files of known sizes, recorded.
class RecordingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mem_ = std::make_shared<MemoryTree>();
    mem_->AddDir("/d");
    mem_->AddDir("/d/e");
    a_ = mem_->AddFile("/d/a", Bytes(5 * B + 100, 'a'));  // 6 blocks, the last one short
    b_ = mem_->AddFile("/b", Bytes(10000, 'b'));          // one short block
    c_ = mem_->AddFile("/d/e/c", Bytes(3 * B, 'c'));      // exactly 3 blocks
    mem_->AddSymlink("/link", "d/a");
    mem_->AddHardlink("/d/a-again", "/d/a");
    rec_ = std::make_shared<RecordingTree>(mem_);
  }

  // Resolves a path through the recorder, as the kernel would.
  uint64_t Walk(const std::string& path) {
    uint64_t ino = kRootIno;
    size_t start = 1;
    while (start <= path.size()) {
      size_t end = path.find('/', start);
      if (end == std::string::npos) end = path.size();
      auto a = rec_->Lookup(ino, path.substr(start, end - start));
      EXPECT_TRUE(a.ok()) << path;
      if (!a.ok()) return 0;
      ino = a->ino;
      start = end + 1;
    }
    return ino;
  }

  std::string Read(uint64_t ino, uint64_t off, size_t len) {
    std::string buf(len, '\0');
    auto n = rec_->Read(ino, off, buf.data(), len);
    EXPECT_TRUE(n.ok());
    buf.resize(n.ok() ? *n : 0);
    return buf;
  }

  std::shared_ptr<MemoryTree> mem_;
  std::shared_ptr<RecordingTree> rec_;
  uint64_t a_ = 0, b_ = 0, c_ = 0;
};

TEST_F(RecordingTest, RecordsFirstReadsInOrderAndOnce) {
  ASSERT_EQ(Walk("/d/a"), a_);
  ASSERT_EQ(Walk("/b"), b_);
  ASSERT_EQ(Walk("/d/e/c"), c_);
  EXPECT_EQ(rec_->Snapshot(), Trace{}) << "lookups alone record nothing";
  EXPECT_EQ(Read(b_, 0, 4096), Bytes(10000, 'b').substr(0, 4096)) << "reads pass through";
  Read(a_, 2 * B + 10, 100);  // block 2
  Read(b_, 4096, 4096);       // block 0 again
  Read(a_, 2 * B, B);         // block 2 again
  Read(c_, B, 10);            // block 1
  Read(a_, 0, 10);            // block 0: not consecutive to block 2
  Read(b_, 0, 20000);         // again, past EOF
  Trace want;
  want.reads = {{"/b", 0, 10000}, {"/d/a", 2 * B, B}, {"/d/e/c", B, B}, {"/d/a", 0, B}};
  EXPECT_EQ(rec_->Snapshot(), want);
  EXPECT_EQ(rec_->RecordedBlocks(), 4u);
  // Reading it all now adds only what was not read, in read order.
  for (uint64_t off = 0; off < 5 * B + 100; off += 4096) Read(a_, off, 4096);
  want.reads.back().length = B * 2;              // block 1 follows block 0
  want.reads.push_back({"/d/a", 3 * B, 2 * B + 100});  // blocks 3..5, the last cut at the size
  EXPECT_EQ(rec_->Snapshot(), want);
  EXPECT_EQ(rec_->RecordedBlocks(), 8u);
}

TEST_F(RecordingTest, MergesConsecutiveBlocksReadInARow) {
  ASSERT_EQ(Walk("/d/a"), a_);
  ASSERT_EQ(Walk("/d/e/c"), c_);
  Read(c_, 0, 3 * B);        // one read of three blocks
  Read(a_, 0, 1);            // block 0
  Read(a_, B + 5, 1);        // block 1: extends
  Read(a_, 2 * B - 1, 2);    // blocks 1 (seen) and 2: extends
  Read(c_, 0, 1);            // seen: no entry, and does not break the run
  Read(a_, 3 * B, 1);        // block 3: extends
  Read(a_, 5 * B, 1);        // block 5: a gap
  Read(a_, 4 * B, 1);        // block 4: after 5, so a range of its own
  Trace want;
  want.reads = {{"/d/e/c", 0, 3 * B}, {"/d/a", 0, 4 * B}, {"/d/a", 5 * B, 100}, {"/d/a", 4 * B, B}};
  EXPECT_EQ(rec_->Snapshot(), want);
}

TEST_F(RecordingTest, LearnsPathsFromReadDir) {
  // Inodes the kernel learned from READDIRPLUS were never looked up.
  ASSERT_TRUE(rec_->ReadDir(kRootIno).ok());
  uint64_t d = mem_->InodeOf("/d"), e = mem_->InodeOf("/d/e");
  ASSERT_TRUE(rec_->ReadDir(d).ok());
  ASSERT_TRUE(rec_->ReadDir(e).ok());
  Read(c_, 0, 1);
  Read(b_, 0, 1);
  Trace want;
  want.reads = {{"/d/e/c", 0, B}, {"/b", 0, 10000}};
  EXPECT_EQ(rec_->Snapshot(), want);
}

TEST_F(RecordingTest, SkipsInodesWithoutAKnownPath) {
  // /d/e was never listed or looked up, so neither was its file.
  ASSERT_TRUE(rec_->ReadDir(kRootIno).ok());
  Read(c_, 0, 1);
  // The path of a lookup under an unknown parent is unknown too.
  ASSERT_TRUE(rec_->Lookup(mem_->InodeOf("/d/e"), "c").ok());
  Read(c_, 0, 1);
  EXPECT_EQ(rec_->Snapshot(), Trace{});
  EXPECT_EQ(rec_->RecordedBlocks(), 0u);
  // Non-regular files and failed reads of unknown inodes are passed through.
  EXPECT_FALSE(rec_->Read(mem_->InodeOf("/d"), 0, nullptr, 0).ok());
  EXPECT_FALSE(rec_->Read(999, 0, nullptr, 0).ok());
  EXPECT_EQ(rec_->Snapshot(), Trace{});
}

TEST_F(RecordingTest, HardlinksKeepTheirFirstName) {
  ASSERT_EQ(Walk("/d/a-again"), a_);
  ASSERT_EQ(Walk("/d/a"), a_);
  Read(a_, 0, 1);
  ASSERT_EQ(rec_->Snapshot().reads.size(), 1u);
  EXPECT_EQ(rec_->Snapshot().reads[0].path, "/d/a-again");
}

TEST_F(RecordingTest, FailedReadsAreRecordedOnce) {
  ASSERT_EQ(Walk("/b"), b_);
  mem_->InjectError(b_, Errc::kIo);
  std::string buf(10, '\0');
  EXPECT_FALSE(rec_->Read(b_, 0, buf.data(), buf.size()).ok());
  mem_->ClearError(b_);
  EXPECT_EQ(Read(b_, 0, 10), Bytes(10000, 'b').substr(0, 10));
  Trace want;
  want.reads = {{"/b", 0, 10000}};
  EXPECT_EQ(rec_->Snapshot(), want);
}

TEST_F(RecordingTest, PassesEverythingThrough) {
  mem_->SetXattr("/b", "user.x", "1");
  EXPECT_EQ(rec_->GetAttr(b_)->size, 10000u);
  EXPECT_EQ(*rec_->ReadLink(Walk("/link")), "d/a");
  EXPECT_EQ(*rec_->GetXattr(b_, "user.x"), "1");
  EXPECT_EQ(rec_->ListXattr(b_)->size(), 1u);
  EXPECT_TRUE(rec_->HasXattrs());
  EXPECT_EQ(rec_->InodeCount(), mem_->InodeCount());
  EXPECT_EQ(rec_->TotalBytes(), mem_->TotalBytes());
  EXPECT_EQ(rec_->Lookup(kRootIno, "nope").error().code(), Errc::kNotFound);
  EXPECT_EQ(rec_->ReadDir(b_).error().code(), mem_->ReadDir(b_).error().code());
}

TEST_F(RecordingTest, OddNamesRecordAsTheyAre) {
  const std::string odd = "caf\xe9 100% \xff";
  mem_->AddDir("/\xc0\xaf");
  uint64_t f = mem_->AddFile("/\xc0\xaf/" + odd, "x");
  ASSERT_EQ(Walk("/\xc0\xaf/" + odd), f);
  Read(f, 0, 1);
  auto back = ParseTrace(SerializeTrace(rec_->Snapshot()));
  ASSERT_TRUE(back.ok()) << back.error().message();
  ASSERT_EQ(back->reads.size(), 1u);
  EXPECT_EQ(back->reads[0].path, "/\xc0\xaf/" + odd);
}

TEST(RecordingTreeConcurrency, EveryBlockOnceUnderConcurrentReaders) {
  auto mem = std::make_shared<MemoryTree>();
  constexpr int kFiles = 12;
  std::vector<uint64_t> sizes;
  for (int i = 0; i < kFiles; ++i) {
    sizes.push_back(static_cast<uint64_t>(i + 1) * 37 * B / 3 + static_cast<uint64_t>(i) * 123);
    mem->AddFile(fmt::format("/f{}", i), std::string(sizes.back(), static_cast<char>('a' + i)));
  }
  auto rec = std::make_shared<RecordingTree>(mem);
  std::vector<uint64_t> inos;
  for (int i = 0; i < kFiles; ++i) inos.push_back(rec->Lookup(kRootIno, fmt::format("f{}", i))->ino);

  constexpr int kThreads = 8;
  std::vector<std::set<std::pair<int, uint64_t>>> touched(kThreads);  // (file, block)
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t) * 7919);
      std::string buf(3 * B, '\0');
      for (int k = 0; k < 4000; ++k) {
        int f = static_cast<int>(rng() % kFiles);
        uint64_t off = rng() % sizes[f];
        size_t len = 1 + rng() % (2 * B);
        auto n = rec->Read(inos[f], off, buf.data(), len);
        if (!n.ok() || *n == 0 || buf[0] != static_cast<char>('a' + f)) ++bad;
        uint64_t end = std::min<uint64_t>(sizes[f], off + len);
        for (uint64_t b = off / B; b <= (end - 1) / B; ++b) touched[t].insert({f, b});
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad, 0);
  std::set<std::pair<int, uint64_t>> all;
  for (auto& s : touched) all.insert(s.begin(), s.end());

  Trace trace = rec->Snapshot();
  std::set<std::pair<int, uint64_t>> recorded;
  size_t blocks = 0;
  for (const TraceRead& r : trace.reads) {
    int f = std::stoi(r.path.substr(2));
    ASSERT_EQ(r.offset % B, 0u) << r.path;
    ASSERT_GT(r.length, 0u);
    ASSERT_LE(r.offset + r.length, sizes[f]) << r.path;
    ASSERT_TRUE(r.length % B == 0 || r.offset + r.length == sizes[f]) << r.path << " " << r.length;
    for (uint64_t b = r.offset / B; b * B < r.offset + r.length; ++b) {
      EXPECT_TRUE(recorded.insert({f, b}).second) << "block " << b << " of " << r.path << " recorded twice";
      ++blocks;
    }
  }
  EXPECT_EQ(recorded, all);
  EXPECT_EQ(blocks, rec->RecordedBlocks());
  // Ranges that follow each other in one file were merged.
  for (size_t i = 1; i < trace.reads.size(); ++i) {
    const auto &p = trace.reads[i - 1], &r = trace.reads[i];
    EXPECT_FALSE(p.path == r.path && p.offset + p.length == r.offset) << "unmerged run at " << i;
  }
}

// ------------------------------------------------------------------ Replay

// Forwards to a tree and logs the reads it is asked for.
class LoggingTree final : public Tree {
 public:
  explicit LoggingTree(std::shared_ptr<Tree> inner) : inner_(std::move(inner)) {}
  struct Call {
    uint64_t ino, offset;
    size_t len;
    bool operator==(const Call&) const = default;
  };
  std::vector<Call> calls() const {
    std::lock_guard lock(mu_);
    return calls_;
  }
  std::function<void()> on_read;

  Result<Attr> GetAttr(uint64_t ino) override { return inner_->GetAttr(ino); }
  Result<Attr> Lookup(uint64_t parent, std::string_view name) override {
    ++lookups;
    return inner_->Lookup(parent, name);
  }
  Result<std::vector<DirEntry>> ReadDir(uint64_t ino) override { return inner_->ReadDir(ino); }
  Result<std::string> ReadLink(uint64_t ino) override { return inner_->ReadLink(ino); }
  Result<std::string> GetXattr(uint64_t ino, std::string_view n) override { return inner_->GetXattr(ino, n); }
  Result<std::vector<std::string>> ListXattr(uint64_t ino) override { return inner_->ListXattr(ino); }
  bool HasXattrs() override { return inner_->HasXattrs(); }
  Result<size_t> Read(uint64_t ino, uint64_t offset, char* buf, size_t len) override {
    {
      std::lock_guard lock(mu_);
      calls_.push_back(Call{ino, offset, len});
    }
    if (on_read) on_read();
    if (ino == fail_ino) return Error(Errc::kIo, "injected");
    return inner_->Read(ino, offset, buf, len);
  }
  uint64_t InodeCount() override { return inner_->InodeCount(); }
  uint64_t TotalBytes() override { return inner_->TotalBytes(); }

  std::atomic<int> lookups{0};
  uint64_t fail_ino = 0;  // reads of it fail

 private:
  std::shared_ptr<Tree> inner_;
  mutable std::mutex mu_;
  std::vector<Call> calls_;
};

TEST(Replay, ReadsTheRangesInOrderAndCountsMissing) {
  auto mem = std::make_shared<MemoryTree>();
  mem->AddDir("/usr");
  mem->AddDir("/usr/lib");
  uint64_t big = mem->AddFile("/usr/lib/big", Bytes(3 * (1 << 20) + 5, 'x'));
  uint64_t small = mem->AddFile("/usr/small", Bytes(100, 's'));
  uint64_t odd = mem->AddFile("/caf\xe9 100%", "odd");
  mem->AddSymlink("/usr/link", "small");
  LoggingTree log(mem);
  Trace t;
  t.reads = {
      {"/usr/small", 0, 100},
      {"/usr/lib/big", B, (1 << 20) + 2 * B},  // more than one piece
      {"/usr/nope", 0, 10},                   // missing
      {"/usr/lib", 0, 10},                    // a directory
      {"/usr/link", 0, 10},                   // a symlink: not followed
      {"/usr/small/x", 0, 10},                // under a file
      {"/gone/deeper/still", 0, 10},          // under a missing directory
      {"/caf\xe9 100%", 0, 3},
      {"/usr/lib/big", 3 * (1 << 20), B},     // runs past the end of the file
      {"/usr/small", 0, 100},                 // again: read again (the tree may have dropped it)
  };
  std::vector<ReplayStats> seen;
  std::atomic<bool> stop{false};
  ReplayStats st = Replay(log, t, stop, [&](const ReplayStats& s) { seen.push_back(s); });
  EXPECT_EQ(st.reads, 5u);
  EXPECT_EQ(st.missing, 5u);
  EXPECT_EQ(st.failed, 0u);
  EXPECT_EQ(st.bytes, 100u + (1 << 20) + 2 * B + 3 + 5 + 100);
  ASSERT_EQ(seen.size(), t.reads.size()) << "progress after each range";
  EXPECT_EQ(seen.back().reads, st.reads);
  using C = LoggingTree::Call;
  std::vector<C> want = {{small, 0, 100},
                         {big, B, 1 << 20},
                         {big, B + (1 << 20), 2 * B},
                         {odd, 0, 3},
                         {big, 3 * (1 << 20), B},
                         {small, 0, 100}};
  EXPECT_EQ(log.calls(), want);
  // Each path and parent is looked up once: usr, small, lib, big, nope, link,
  // x (under a file: not looked up), gone, odd.
  EXPECT_EQ(log.lookups.load(), 8);
}

TEST(Replay, InParallelReadsEveryRangeWithSeveralInFlight) {
  auto mem = std::make_shared<MemoryTree>();
  std::vector<uint64_t> inos;
  Trace t;
  for (int i = 0; i < 12; ++i) {
    std::string path = "/f" + std::to_string(i);
    inos.push_back(mem->AddFile(path, Bytes(100 + i, 'a' + i)));
    t.reads.push_back({path, 0, static_cast<uint64_t>(100 + i)});
  }
  t.reads.push_back({"/nope", 0, 1});
  LoggingTree log(mem);
  // Each of the first four reads waits until four are in flight at once:
  // with one at a time the wait would time out and the count stay at 1.
  std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0, most = 0, started = 0;
  log.on_read = [&] {
    std::unique_lock<std::mutex> l(mu);
    ++in_flight;
    most = std::max(most, in_flight);
    if (++started <= 4) cv.wait_for(l, std::chrono::seconds(5), [&] { return most >= 4; });
    cv.notify_all();
    --in_flight;
  };
  std::atomic<bool> stop{false};
  size_t progress_calls = 0;
  ReplayStats st = Replay(log, t, stop, [&](const ReplayStats&) { ++progress_calls; }, 4);
  EXPECT_EQ(most, 4) << "four ranges in flight at once";
  EXPECT_EQ(st.reads, 12u);
  EXPECT_EQ(st.missing, 1u);
  EXPECT_EQ(st.failed, 0u);
  EXPECT_EQ(st.bytes, 12u * 100 + 66);
  EXPECT_EQ(progress_calls, t.reads.size());
  // Every range read once; the first four started are the first four ranges.
  auto calls = log.calls();
  ASSERT_EQ(calls.size(), 12u);
  std::set<uint64_t> first4, read;
  for (size_t i = 0; i < calls.size(); ++i) {
    if (i < 4) first4.insert(calls[i].ino);
    read.insert(calls[i].ino);
  }
  EXPECT_EQ(first4, (std::set<uint64_t>{inos[0], inos[1], inos[2], inos[3]}));
  EXPECT_EQ(read.size(), 12u);
}

TEST(Replay, CountsFailedReadsAndCarriesOn) {
  auto mem = std::make_shared<MemoryTree>();
  uint64_t a = mem->AddFile("/a", Bytes(10, 'a'));
  uint64_t b = mem->AddFile("/b", Bytes(10, 'b'));
  LoggingTree log(mem);
  log.fail_ino = a;
  Trace t;
  t.reads = {{"/a", 0, 10}, {"/b", 0, 10}};
  std::atomic<bool> stop{false};
  ReplayStats st = Replay(log, t, stop);
  EXPECT_EQ(st.failed, 1u);
  EXPECT_EQ(st.reads, 1u);
  EXPECT_EQ(st.bytes, 10u);
  using C = LoggingTree::Call;
  EXPECT_EQ(log.calls(), (std::vector<C>{{a, 0, 10}, {b, 0, 10}}));
}

TEST(Replay, StopsWhenAsked) {
  auto mem = std::make_shared<MemoryTree>();
  mem->AddFile("/a", Bytes(4 << 20, 'a'));
  LoggingTree log(mem);
  Trace t;
  for (int i = 0; i < 10; ++i) t.reads.push_back({"/a", 0, 4 << 20});
  std::atomic<bool> stop{true};
  EXPECT_EQ(Replay(log, t, stop).reads, 0u);
  EXPECT_TRUE(log.calls().empty());
  // Stopped in the middle of a range: between pieces, not at its end.
  stop = false;
  log.on_read = [&] {
    if (log.calls().size() == 2) stop = true;
  };
  ReplayStats st = Replay(log, t, stop);
  EXPECT_EQ(log.calls().size(), 2u);
  EXPECT_EQ(st.reads, 0u);
  EXPECT_EQ(st.bytes, 2u << 20);
}

TEST(Replay, ReplaysWhatWasRecorded) {
  // Recorded on one tree, written, read back and replayed on another with
  // other inode numbers: the same ranges, in the same order.
  auto build = [](bool shuffled) {
    auto m = std::make_shared<MemoryTree>();
    if (shuffled) m->AddFile("/pad", "p");
    m->AddDir("/lib");
    m->AddFile("/lib/x\xff", Bytes(300000, 'x'));
    m->AddFile("/y", Bytes(70000, 'y'));
    return m;
  };
  auto first = build(false);
  RecordingTree rec(first);
  uint64_t lib = rec.Lookup(kRootIno, "lib")->ino;
  uint64_t x = rec.Lookup(lib, "x\xff")->ino;
  uint64_t y = rec.Lookup(kRootIno, "y")->ino;
  std::string buf(B, '\0');
  ASSERT_TRUE(rec.Read(y, B, buf.data(), 10).ok());
  ASSERT_TRUE(rec.Read(x, 0, buf.data(), B).ok());
  ASSERT_TRUE(rec.Read(x, B, buf.data(), B).ok());
  ASSERT_TRUE(rec.Read(y, 0, buf.data(), 10).ok());
  auto trace = ParseTrace(SerializeTrace(rec.Snapshot()));
  ASSERT_TRUE(trace.ok()) << trace.error().message();

  auto second = build(true);
  LoggingTree log(second);
  std::atomic<bool> stop{false};
  ReplayStats st = Replay(log, *trace, stop);
  EXPECT_EQ(st.missing, 0u);
  EXPECT_EQ(st.reads, 3u);
  uint64_t x2 = second->InodeOf("/lib/x\xff"), y2 = second->InodeOf("/y");
  ASSERT_NE(x2, x);
  using C = LoggingTree::Call;
  EXPECT_EQ(log.calls(), (std::vector<C>{{y2, B, 70000 - B}, {x2, 0, 2 * B}, {y2, 0, B}}));
}

}  // namespace
}  // namespace ucrfs::index
