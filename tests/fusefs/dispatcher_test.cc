// Dispatcher: the FUSE per-operation logic, without a kernel.
#include "dispatcher.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness/memory_tree.h"

namespace ucrfs::fusefs {
namespace {

using harness::MemoryTree;

constexpr Errc kAllErrc[] = {
    Errc::kInvalidArgument, Errc::kNotFound, Errc::kUnauthorized,    Errc::kForbidden, Errc::kDigestMismatch,
    Errc::kMalformed,       Errc::kUnsupported, Errc::kNetwork,      Errc::kTls,       Errc::kTooManyRequests,
    Errc::kServer,          Errc::kProtocol, Errc::kIo,              Errc::kTooBig,    Errc::kCanceled,
    Errc::kInternal,
};
constexpr Op kAllOps[] = {Op::kLookup, Op::kGetAttr,   Op::kReadLink,  Op::kOpenDir, Op::kReadDir, Op::kOpen,
                          Op::kRead,   Op::kGetXattr, Op::kListXattr, Op::kStatFs,  Op::kModify};

int E(Op op, Errc c) { return ErrnoFor(op, Error(c, "x")); }

TEST(ErrnoForTest, EveryCodeAndOpMapsToAPositiveErrno) {
  for (Op op : kAllOps) {
    for (Errc c : kAllErrc) EXPECT_GT(E(op, c), 0) << static_cast<int>(op) << " " << ErrcName(c);
  }
}

TEST(ErrnoForTest, NotFound) {
  EXPECT_EQ(E(Op::kLookup, Errc::kNotFound), ENOENT);
  EXPECT_EQ(E(Op::kGetAttr, Errc::kNotFound), ENOENT);
  EXPECT_EQ(E(Op::kRead, Errc::kNotFound), ENOENT);
  EXPECT_EQ(E(Op::kListXattr, Errc::kNotFound), ENOENT);
  EXPECT_EQ(E(Op::kGetXattr, Errc::kNotFound), ENODATA);
}

TEST(ErrnoForTest, InvalidArgumentIsNotADirectoryForDirectoryOps) {
  EXPECT_EQ(E(Op::kLookup, Errc::kInvalidArgument), ENOTDIR);
  EXPECT_EQ(E(Op::kOpenDir, Errc::kInvalidArgument), ENOTDIR);
  EXPECT_EQ(E(Op::kReadDir, Errc::kInvalidArgument), ENOTDIR);
  EXPECT_EQ(E(Op::kReadLink, Errc::kInvalidArgument), EINVAL);
  EXPECT_EQ(E(Op::kRead, Errc::kInvalidArgument), EINVAL);
}

TEST(ErrnoForTest, RemoteAndLocalFailuresAreIo) {
  for (Errc c : {Errc::kIo, Errc::kNetwork, Errc::kServer, Errc::kTls, Errc::kDigestMismatch, Errc::kInternal,
                 Errc::kMalformed, Errc::kUnauthorized, Errc::kForbidden, Errc::kTooManyRequests, Errc::kProtocol}) {
    EXPECT_EQ(E(Op::kRead, c), EIO) << ErrcName(c);
    EXPECT_EQ(E(Op::kLookup, c), EIO) << ErrcName(c);
  }
  EXPECT_EQ(E(Op::kRead, Errc::kUnsupported), EIO);
}

TEST(ErrnoForTest, CanceledTooBigUnsupported) {
  EXPECT_EQ(E(Op::kRead, Errc::kCanceled), EINTR);
  EXPECT_EQ(E(Op::kRead, Errc::kTooBig), E2BIG);
  EXPECT_EQ(E(Op::kGetXattr, Errc::kTooBig), ERANGE);
  EXPECT_EQ(E(Op::kListXattr, Errc::kTooBig), ERANGE);
  EXPECT_EQ(E(Op::kGetXattr, Errc::kUnsupported), ENOSYS);
  EXPECT_EQ(E(Op::kListXattr, Errc::kUnsupported), ENOSYS);
  EXPECT_EQ(E(Op::kOpen, Errc::kUnsupported), EROFS);
}

TEST(ErrnoForTest, ModifyingIsAlwaysReadOnly) {
  for (Errc c : kAllErrc) EXPECT_EQ(E(Op::kModify, c), EROFS) << ErrcName(c);
}

class DispatcherTest : public ::testing::Test {
 protected:
  DispatcherTest() : tree_(std::make_shared<MemoryTree>()), d_(tree_, Timeouts{}) {}

  std::shared_ptr<MemoryTree> tree_;
  Dispatcher d_;
};

TEST_F(DispatcherTest, LookupFoundMissingAndNotADirectory) {
  uint64_t f = tree_->AddFile("/f", "abc");
  auto a = d_.Lookup(index::kRootIno, "f");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->ino, f);
  EXPECT_EQ(a->size, 3u);

  // A miss is a negative entry (ino 0), not an error: the kernel caches it.
  auto miss = d_.Lookup(index::kRootIno, "nope");
  ASSERT_TRUE(miss.ok());
  EXPECT_EQ(miss->ino, 0u);

  auto notdir = d_.Lookup(f, "x");
  ASSERT_FALSE(notdir.ok());
  EXPECT_EQ(ErrnoFor(Op::kLookup, notdir.error()), ENOTDIR);

  // Other failures are not cached as negative entries.
  tree_->InjectError(index::kRootIno, Errc::kNetwork);
  auto io = d_.Lookup(index::kRootIno, "f");
  ASSERT_FALSE(io.ok());
  EXPECT_EQ(ErrnoFor(Op::kLookup, io.error()), EIO);
}

// Reads a whole directory as the kernel does: repeated calls from the last
// next_offset, each taking at most `per_call` items, until one yields none.
std::vector<std::string> ListAll(Dispatcher& d, DirHandle& h, size_t per_call, uint64_t start = 0,
                                 std::vector<uint64_t>* entry_inos = nullptr) {
  std::vector<std::string> names;
  uint64_t off = start;
  for (int calls = 0; calls < 100000; ++calls) {
    size_t taken = 0;
    uint64_t last = off;
    Status s = d.ReadDir(h, off, [&](const DirItem& it) {
      if (taken == per_call) return false;
      EXPECT_GT(it.next_offset, last) << "offsets must increase";
      last = it.next_offset;
      names.push_back(it.name);
      if (entry_inos) entry_inos->push_back(it.entry_ino);
      ++taken;
      return true;
    });
    EXPECT_TRUE(s.ok());
    if (taken == 0) break;
    off = last;
  }
  return names;
}

TEST_F(DispatcherTest, ReadDirPagesThroughEveryEntryOnce) {
  tree_->AddDir("/big");
  std::set<std::string> want;
  for (int i = 0; i < 5000; ++i) {
    std::string name = "entry-" + std::to_string(i);
    tree_->AddFile("/big/" + name, "");
    want.insert(name);
  }
  auto big = d_.Lookup(index::kRootIno, "big");
  ASSERT_TRUE(big.ok());
  for (size_t per_call : {size_t{1}, size_t{7}, size_t{128}, size_t{100000}}) {
    auto h = d_.OpenDir(big->ino);
    auto names = ListAll(d_, *h, per_call);
    ASSERT_EQ(names.size(), 5002u) << per_call;
    EXPECT_EQ(names[0], ".");
    EXPECT_EQ(names[1], "..");
    std::set<std::string> got(names.begin() + 2, names.end());
    EXPECT_EQ(got.size(), 5000u) << "duplicates with " << per_call << " per call";
    EXPECT_EQ(got, want);
  }
}

TEST_F(DispatcherTest, ReadDirOffsetsAreStableIndexes) {
  tree_->AddDir("/d");
  for (const char* n : {"a", "b", "c", "d"}) tree_->AddFile(std::string("/d/") + n, "");
  auto d = d_.Lookup(index::kRootIno, "d");
  ASSERT_TRUE(d.ok());
  auto h = d_.OpenDir(d->ino);
  // seekdir to any offset handed out earlier resumes right after that item.
  EXPECT_EQ(ListAll(d_, *h, 100, 0), (std::vector<std::string>{".", "..", "a", "b", "c", "d"}));
  EXPECT_EQ(ListAll(d_, *h, 100, 1), (std::vector<std::string>{"..", "a", "b", "c", "d"}));
  EXPECT_EQ(ListAll(d_, *h, 100, 4), (std::vector<std::string>{"c", "d"}));
  EXPECT_TRUE(ListAll(d_, *h, 100, 6).empty());
  EXPECT_TRUE(ListAll(d_, *h, 100, 1000).empty());
}

TEST_F(DispatcherTest, ReadDirDotsCarryNoLookupAndTheRightInodes) {
  uint64_t a = tree_->AddDir("/a");
  uint64_t b = tree_->AddDir("/a/b");
  uint64_t f = tree_->AddFile("/a/b/f", "");
  ASSERT_TRUE(d_.Lookup(index::kRootIno, "a").ok());
  ASSERT_TRUE(d_.Lookup(a, "b").ok());
  auto h = d_.OpenDir(b);
  std::vector<uint64_t> inos, entry_inos;
  std::vector<uint32_t> modes;
  Status s = d_.ReadDir(*h, 0, [&](const DirItem& it) {
    inos.push_back(it.attr.ino);
    entry_inos.push_back(it.entry_ino);
    modes.push_back(it.attr.mode);
    return true;
  });
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(inos.size(), 3u);
  EXPECT_EQ(inos, (std::vector<uint64_t>{b, a, f}));
  // readdirplus must not take lookup counts for "." and "..".
  EXPECT_EQ(entry_inos, (std::vector<uint64_t>{0, 0, f}));
  EXPECT_TRUE(S_ISDIR(modes[0]) && S_ISDIR(modes[1]) && S_ISREG(modes[2]));

  // The root is its own parent; a directory first seen through a listing
  // (readdirplus) still knows its parent.
  auto root = d_.OpenDir(index::kRootIno);
  EXPECT_EQ(root->parent(), index::kRootIno);
  uint64_t c = tree_->AddDir("/a/c");
  auto ha = d_.OpenDir(a);
  ASSERT_EQ(ListAll(d_, *ha, 100).size(), 4u);
  EXPECT_EQ(d_.OpenDir(c)->parent(), a);
}

TEST_F(DispatcherTest, ReadDirLoadsTheListingOnceAndLazily) {
  uint64_t d = tree_->AddDir("/d");
  tree_->AddFile("/d/x", "");
  auto h = d_.OpenDir(d);
  EXPECT_EQ(tree_->counters().readdir.load(), 0u) << "opendir must not read the listing";
  ListAll(d_, *h, 1);
  EXPECT_EQ(tree_->counters().readdir.load(), 1u);
}

TEST_F(DispatcherTest, ReadDirErrorIsReportedAndRetried) {
  uint64_t d = tree_->AddDir("/d");
  tree_->AddFile("/d/x", "");
  auto h = d_.OpenDir(d);
  tree_->InjectError(d, Errc::kIo);
  int emitted = 0;
  Status s = d_.ReadDir(*h, 0, [&](const DirItem&) {
    ++emitted;
    return true;
  });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(emitted, 0);
  EXPECT_EQ(ErrnoFor(Op::kReadDir, s.error()), EIO);
  tree_->ClearError(d);
  EXPECT_EQ(ListAll(d_, *h, 100).size(), 3u);
}

TEST_F(DispatcherTest, XattrSizeProtocol) {
  uint64_t f = tree_->AddFile("/f", "");
  tree_->SetXattr("/f", "user.x", "hello");
  tree_->SetXattr("/f", "security.capability", std::string("\x01\x00\x00\x02\x00\x04", 6));

  auto size = d_.GetXattr(f, "user.x", 0);
  ASSERT_TRUE(size.ok());
  EXPECT_TRUE(size->size_only);
  EXPECT_EQ(size->size, 5u);
  EXPECT_TRUE(size->data.empty());

  auto exact = d_.GetXattr(f, "user.x", 5);
  ASSERT_TRUE(exact.ok());
  EXPECT_FALSE(exact->size_only);
  EXPECT_EQ(exact->data, "hello");

  auto bin = d_.GetXattr(f, "security.capability", 100);
  ASSERT_TRUE(bin.ok());
  EXPECT_EQ(bin->data, std::string("\x01\x00\x00\x02\x00\x04", 6));

  auto small = d_.GetXattr(f, "user.x", 4);
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(ErrnoFor(Op::kGetXattr, small.error()), ERANGE);

  auto missing = d_.GetXattr(f, "user.nope", 100);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(ErrnoFor(Op::kGetXattr, missing.error()), ENODATA);

  // The list: names each followed by NUL ("security.capability\0user.x\0").
  const std::string list = std::string("security.capability") + '\0' + "user.x" + '\0';
  auto lsize = d_.ListXattr(f, 0);
  ASSERT_TRUE(lsize.ok());
  EXPECT_TRUE(lsize->size_only);
  EXPECT_EQ(lsize->size, list.size());
  auto l = d_.ListXattr(f, list.size());
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->data, list);
  auto lsmall = d_.ListXattr(f, list.size() - 1);
  ASSERT_FALSE(lsmall.ok());
  EXPECT_EQ(ErrnoFor(Op::kListXattr, lsmall.error()), ERANGE);

  // An inode without xattrs has an empty list.
  auto none = d_.ListXattr(index::kRootIno, 0);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->size, 0u);
}

TEST_F(DispatcherTest, XattrsOnAnImageWithoutAnyAreNotImplemented) {
  uint64_t f = tree_->AddFile("/f", "");
  auto g = d_.GetXattr(f, "user.x", 0);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(ErrnoFor(Op::kGetXattr, g.error()), ENOSYS);
  auto l = d_.ListXattr(f, 0);
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(ErrnoFor(Op::kListXattr, l.error()), ENOSYS);
}

TEST_F(DispatcherTest, OpenIsReadOnlyAndKeepsTheCache) {
  uint64_t f = tree_->AddFile("/f", "x");
  for (int flags : {O_WRONLY, O_RDWR, O_RDONLY | O_TRUNC, O_WRONLY | O_CREAT | O_APPEND}) {
    auto o = d_.Open(f, flags);
    ASSERT_FALSE(o.ok()) << flags;
    EXPECT_EQ(ErrnoFor(Op::kOpen, o.error()), EROFS);
  }
  auto o = d_.Open(f, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  ASSERT_TRUE(o.ok());
  EXPECT_TRUE(o->keep_cache);
  EXPECT_FALSE(o->zero_message) << "off until init finds kernel support";
  d_.set_zero_message_open(true);
  auto z = d_.Open(f, O_RDONLY);
  ASSERT_TRUE(z.ok());
  EXPECT_TRUE(z->zero_message);
  EXPECT_FALSE(d_.Open(f, O_RDWR).ok()) << "writers are refused even with zero-message open";
}

TEST_F(DispatcherTest, ModifyIsReadOnly) {
  Error e = d_.Modify("mkdir");
  EXPECT_EQ(ErrnoFor(Op::kModify, e), EROFS);
  EXPECT_NE(e.message().find("read-only"), std::string::npos);
}

TEST_F(DispatcherTest, ReadPassesThroughAndStopsAtEof) {
  uint64_t f = tree_->AddFile("/f", "0123456789");
  char buf[16];
  auto n = d_.Read(f, 3, buf, 4);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, *n), "3456");
  n = d_.Read(f, 8, buf, 16);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, *n), "89");
  n = d_.Read(f, 10, buf, 16);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  tree_->InjectError(f, Errc::kNetwork);
  n = d_.Read(f, 0, buf, 16);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(ErrnoFor(Op::kRead, n.error()), EIO);
}

TEST(ToStatTest, ConvertsEveryField) {
  index::Attr a;
  a.ino = 42;
  a.mode = S_IFREG | 04755;
  a.nlink = 3;
  a.uid = 70000;
  a.gid = 70001;
  a.size = 4097;
  a.rdev = makedev(259, 70000);
  a.mtime_sec = 1234567890;
  a.mtime_nsec = 123456789;
  struct stat st = ToStat(a);
  EXPECT_EQ(st.st_ino, 42u);
  EXPECT_EQ(st.st_mode, static_cast<mode_t>(S_IFREG | 04755));
  EXPECT_EQ(st.st_nlink, 3u);
  EXPECT_EQ(st.st_uid, 70000u);
  EXPECT_EQ(st.st_gid, 70001u);
  EXPECT_EQ(st.st_size, 4097);
  EXPECT_EQ(major(st.st_rdev), 259u);
  EXPECT_EQ(minor(st.st_rdev), 70000u);
  EXPECT_EQ(st.st_blocks, 9);  // ceil(4097 / 512)
  EXPECT_EQ(st.st_blksize, 4096);
  EXPECT_EQ(st.st_mtim.tv_sec, 1234567890);
  EXPECT_EQ(st.st_mtim.tv_nsec, 123456789);
  EXPECT_EQ(st.st_atim.tv_sec, st.st_mtim.tv_sec);
  EXPECT_EQ(st.st_ctim.tv_nsec, st.st_mtim.tv_nsec);
  a.size = 0;
  EXPECT_EQ(ToStat(a).st_blocks, 0);
  a.size = 512;
  EXPECT_EQ(ToStat(a).st_blocks, 1);
}

TEST_F(DispatcherTest, StatFsReportsTotalsReadOnly) {
  tree_->AddFile("/a", std::string(5000, 'a'));
  tree_->AddFile("/b", std::string(100, 'b'));
  tree_->AddDir("/d");
  struct statvfs s = d_.StatFs();
  EXPECT_EQ(s.f_bsize, 4096u);
  EXPECT_EQ(s.f_frsize, 4096u);
  EXPECT_EQ(s.f_blocks, 2u);  // ceil(5100 / 4096)
  EXPECT_EQ(s.f_bfree, 0u);
  EXPECT_EQ(s.f_bavail, 0u);
  EXPECT_EQ(s.f_files, 4u);  // root, a, b, d
  EXPECT_EQ(s.f_ffree, 0u);
  EXPECT_EQ(s.f_namemax, 255u);
  EXPECT_TRUE(s.f_flag & ST_RDONLY);
}

}  // namespace
}  // namespace ucrfs::fusefs
