// FuseServer against the real kernel: mount a MemoryTree, then use syscalls.
// Needs root and /dev/fuse; every test skips with that reason otherwise.
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "harness/memory_tree.h"
#include "ucrfs/common/file.h"
#include "ucrfs/fusefs/server.h"

namespace ucrfs::fusefs {
namespace {

using harness::Meta;
using harness::MemoryTree;
using namespace std::chrono_literals;

bool FuseAvailable() { return geteuid() == 0 && access("/dev/fuse", R_OK | W_OK) == 0; }

std::string Bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// A VFS v2 file capability (struct vfs_cap_data, little endian):
// effective, permitted = CAP_NET_BIND_SERVICE. Binary, with NULs.
std::string CapNetBindService() {
  const unsigned char raw[20] = {0x01, 0x00, 0x00, 0x02,   // magic_etc: REVISION_2 | FLAGS_EFFECTIVE
                                 0x00, 0x04, 0x00, 0x00,   // data[0].permitted: bit 10
                                 0x00, 0x00, 0x00, 0x00,   // data[0].inheritable
                                 0x00, 0x00, 0x00, 0x00,   // data[1].permitted
                                 0x00, 0x00, 0x00, 0x00};  // data[1].inheritable
  return std::string(reinterpret_cast<const char*>(raw), sizeof(raw));
}

struct Dent {
  uint64_t ino;
  unsigned char type;
  std::string name;
};

// Lists a directory with raw getdents64 and a small buffer, so that both
// the caller and the kernel page through it.
std::vector<Dent> GetDents(const std::string& path, size_t bufsize = 1024) {
  std::vector<Dent> out;
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << path << ": " << std::strerror(errno);
  if (fd < 0) return out;
  std::vector<char> buf(bufsize);
  for (;;) {
    long n = syscall(SYS_getdents64, fd, buf.data(), buf.size());
    EXPECT_GE(n, 0) << std::strerror(errno);
    if (n <= 0) break;
    for (long pos = 0; pos < n;) {
      auto* d = reinterpret_cast<struct dirent64*>(buf.data() + pos);
      out.push_back({d->d_ino, d->d_type, d->d_name});
      pos += d->d_reclen;
    }
  }
  close(fd);
  return out;
}

class MountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!FuseAvailable()) GTEST_SKIP() << "needs root and /dev/fuse";
    char tmpl[] = "/tmp/ucrfs-fuse-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr) << std::strerror(errno);
    dir_ = tmpl;
    tree_ = std::make_shared<MemoryTree>();
  }

  void TearDown() override {
    if (server_) Stop();
    if (!dir_.empty()) {
      EXPECT_FALSE(IsMounted(dir_)) << "mount left behind at " << dir_;
      rmdir(dir_.c_str());
    }
  }

  void MountTree(MountOptions opts = {}, bool run = true) {
    opts.mountpoint = dir_;
    auto r = FuseServer::Mount(tree_, opts);
    ASSERT_TRUE(r.ok()) << r.error().message();
    server_ = std::move(*r);
    if (run) StartRun();
  }

  void StartRun() {
    run_ = std::async(std::launch::async, [s = server_.get()] { return s->Run(); });
  }

  bool RunReturned(std::chrono::milliseconds timeout = 10s) {
    return run_.wait_for(timeout) == std::future_status::ready;
  }

  // Ends the session however the test left it.
  void Stop() {
    if (IsMounted(dir_)) {
      EXPECT_TRUE(Unmount(dir_, /*lazy=*/true).ok());
    }
    server_->Exit();
    if (!RunReturned()) {
      // Destroying a server whose loop still runs is undefined; give up.
      std::fprintf(stderr, "FuseServer::Run() did not return; aborting\n");
      umount2(dir_.c_str(), MNT_DETACH);
      std::abort();
    }
    Status s = run_.get();
    EXPECT_TRUE(s.ok()) << s.error().message();
    server_.reset();
  }

  std::string P(const std::string& rel) const { return dir_ + "/" + rel; }

  std::string ReadAll(const std::string& path) {
    auto r = ReadFile(path);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
    return r.ok() ? *r : "";
  }

  std::string dir_;
  std::shared_ptr<MemoryTree> tree_;
  std::unique_ptr<FuseServer> server_;
  std::future<Status> run_;
};

TEST_F(MountTest, MountsReadOnlyWithTheRequestedOptions) {
  MountTree();
  EXPECT_TRUE(IsMounted(dir_));
  EXPECT_TRUE(IsMounted(dir_ + "/"));
  EXPECT_GE(server_->fd(), 0);
  auto table = ReadFile("/proc/self/mountinfo");
  ASSERT_TRUE(table.ok());
  std::string line;
  for (size_t pos = 0, eol; pos < table->size(); pos = eol + 1) {
    eol = table->find('\n', pos);
    std::string l = table->substr(pos, eol - pos);
    if (l.find(" " + dir_ + " ") != std::string::npos) line = l;
  }
  ASSERT_FALSE(line.empty());
  EXPECT_NE(line.find(" ro,"), std::string::npos) << line;
  EXPECT_NE(line.find(" - fuse.ucrfs ucrfs "), std::string::npos) << line;
  for (const char* opt : {"default_permissions", "allow_other", "max_read=1048576"}) {
    EXPECT_NE(line.find(opt), std::string::npos) << opt << " missing: " << line;
  }
}

TEST_F(MountTest, StatShowsEveryNodeTypeAndAttribute) {
  const Meta owned{70000, 70001, 1600000000, 123456789};
  tree_->AddDir("/dir", 0750, owned);
  tree_->AddDir("/dir/sub1");
  tree_->AddDir("/dir/sub2");
  tree_->AddDir("/tmp", 01777);
  tree_->AddDir("/bin");
  tree_->AddFile("/bin/su", "su", 04755);
  tree_->AddFile("/bin/wall", "wall", 02755, Meta{0, 5, 1, 999999999});
  const std::string content = "hello world\n";
  tree_->AddFile("/file", content, 0640, owned);
  tree_->AddFile("/big", std::string(4097, 'b'));
  tree_->AddSymlink("/link", "dir/sub1");
  tree_->AddSpecial("/null", S_IFCHR, makedev(1, 3), 0666);
  tree_->AddSpecial("/nvme", S_IFBLK, makedev(259, 70000), 0660, Meta{0, 6, 0, 0});
  tree_->AddSpecial("/fifo", S_IFIFO, 0, 0600);
  tree_->AddSpecial("/sock", S_IFSOCK, 0, 0755);
  uint64_t hard = tree_->AddFile("/hard1", "linked");
  tree_->AddHardlink("/dir/hard2", "/hard1");
  MountTree();

  struct stat st {};
  ASSERT_EQ(lstat(dir_.c_str(), &st), 0) << std::strerror(errno);
  EXPECT_EQ(st.st_ino, index::kRootIno);
  EXPECT_EQ(st.st_mode, static_cast<mode_t>(S_IFDIR | 0755));
  EXPECT_EQ(st.st_nlink, 5u);  // 2 + dir, tmp, bin

  ASSERT_EQ(lstat(P("dir").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode, static_cast<mode_t>(S_IFDIR | 0750));
  EXPECT_EQ(st.st_nlink, 4u);  // 2 + sub1, sub2
  EXPECT_EQ(st.st_uid, 70000u);
  EXPECT_EQ(st.st_gid, 70001u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1600000000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 123456789);

  ASSERT_EQ(lstat(P("tmp").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode, static_cast<mode_t>(S_IFDIR | 01777));

  ASSERT_EQ(lstat(P("bin/su").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode, static_cast<mode_t>(S_IFREG | 04755));
  ASSERT_EQ(lstat(P("bin/wall").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode, static_cast<mode_t>(S_IFREG | 02755));
  EXPECT_EQ(st.st_gid, 5u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1);
  EXPECT_EQ(st.st_mtim.tv_nsec, 999999999);

  ASSERT_EQ(lstat(P("file").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode, static_cast<mode_t>(S_IFREG | 0640));
  EXPECT_EQ(st.st_size, static_cast<off_t>(content.size()));
  EXPECT_EQ(st.st_uid, 70000u);
  EXPECT_EQ(st.st_nlink, 1u);
  EXPECT_EQ(st.st_mtim.tv_nsec, 123456789);
  EXPECT_EQ(st.st_atim.tv_sec, st.st_mtim.tv_sec);
  EXPECT_EQ(st.st_ctim.tv_nsec, st.st_mtim.tv_nsec);
  EXPECT_EQ(st.st_blocks, 1);
  EXPECT_EQ(ReadAll(P("file")), content);

  ASSERT_EQ(lstat(P("big").c_str(), &st), 0);
  EXPECT_EQ(st.st_blocks, 9);  // ceil(4097 / 512)
  EXPECT_EQ(st.st_blksize, 4096);

  ASSERT_EQ(lstat(P("link").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(st.st_size, 8);  // strlen("dir/sub1")
  ASSERT_EQ(stat(P("link").c_str(), &st), 0) << "following the link";
  EXPECT_TRUE(S_ISDIR(st.st_mode));

  ASSERT_EQ(lstat(P("null").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode, static_cast<mode_t>(S_IFCHR | 0666));
  EXPECT_EQ(major(st.st_rdev), 1u);
  EXPECT_EQ(minor(st.st_rdev), 3u);
  ASSERT_EQ(lstat(P("nvme").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode, static_cast<mode_t>(S_IFBLK | 0660));
  EXPECT_EQ(major(st.st_rdev), 259u);
  EXPECT_EQ(minor(st.st_rdev), 70000u);
  EXPECT_EQ(st.st_gid, 6u);
  ASSERT_EQ(lstat(P("fifo").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode, static_cast<mode_t>(S_IFIFO | 0600));
  ASSERT_EQ(lstat(P("sock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode, static_cast<mode_t>(S_IFSOCK | 0755));

  struct stat h1 {}, h2 {};
  ASSERT_EQ(lstat(P("hard1").c_str(), &h1), 0);
  ASSERT_EQ(lstat(P("dir/hard2").c_str(), &h2), 0);
  EXPECT_EQ(h1.st_ino, hard);
  EXPECT_EQ(h2.st_ino, hard);
  EXPECT_EQ(h1.st_nlink, 2u);
  EXPECT_EQ(h2.st_nlink, 2u);
  EXPECT_EQ(ReadAll(P("dir/hard2")), "linked");
}

TEST_F(MountTest, ReadDirShowsAllNamesWithTypes) {
  const std::string long_name(255, 'L');
  const std::string latin1 = "caf\xe9-\xff\xfe";  // not UTF-8
  uint64_t d = tree_->AddDir("/d");
  uint64_t sub = tree_->AddDir("/d/sub");
  uint64_t f1 = tree_->AddFile("/d/" + long_name, "");
  uint64_t f2 = tree_->AddFile("/d/" + latin1, "x");
  uint64_t l = tree_->AddSymlink("/d/link", "sub");
  uint64_t c = tree_->AddSpecial("/d/null", S_IFCHR, makedev(1, 3));
  MountTree();

  std::map<std::string, std::pair<uint64_t, unsigned char>> got;
  for (const Dent& e : GetDents(P("d"), 600)) {
    EXPECT_TRUE(got.emplace(e.name, std::make_pair(e.ino, e.type)).second) << "duplicate " << e.name;
  }
  std::map<std::string, std::pair<uint64_t, unsigned char>> want = {
      {".", {d, DT_DIR}},       {"..", {index::kRootIno, DT_DIR}}, {"sub", {sub, DT_DIR}},
      {long_name, {f1, DT_REG}}, {latin1, {f2, DT_REG}},            {"link", {l, DT_LNK}},
      {"null", {c, DT_CHR}},
  };
  EXPECT_EQ(got, want);
  struct stat st {};
  ASSERT_EQ(lstat(P("d/" + long_name).c_str(), &st), 0) << std::strerror(errno);
  ASSERT_EQ(lstat(P("d/" + latin1).c_str(), &st), 0) << std::strerror(errno);
  EXPECT_EQ(st.st_size, 1);
  // ".." of a subdirectory is its parent.
  bool found = false;
  for (const Dent& e : GetDents(P("d/sub"))) {
    if (e.name == "..") found = e.ino == d;
  }
  EXPECT_TRUE(found);
}

TEST_F(MountTest, ReadDirOfFiveThousandEntries) {
  tree_->AddDir("/many");
  std::set<std::string> want = {".", ".."};
  for (int i = 0; i < 5000; ++i) {
    std::string name = "file-" + std::to_string(i) + std::string(static_cast<size_t>(i % 40), 'x');
    tree_->AddFile("/many/" + name, "");
    want.insert(name);
  }
  MountTree();
  for (int round = 0; round < 2; ++round) {  // the second from the kernel's cache
    std::set<std::string> got;
    auto entries = GetDents(P("many"), 4096);
    for (const Dent& e : entries) {
      EXPECT_TRUE(got.insert(e.name).second) << "duplicate " << e.name;
      if (e.name[0] != '.') {
        EXPECT_EQ(e.type, DT_REG);
      }
    }
    EXPECT_EQ(entries.size(), 5002u);
    EXPECT_EQ(got, want);
  }
}

TEST_F(MountTest, ReadLink) {
  const std::string long_target = std::string(200, 'a') + "/" + std::string(3000, 'b');
  tree_->AddSymlink("/short", "../etc/os-release");
  tree_->AddSymlink("/long", long_target);
  tree_->AddFile("/file", "");
  MountTree();
  char buf[4096];
  ssize_t n = readlink(P("short").c_str(), buf, sizeof(buf));
  ASSERT_GT(n, 0) << std::strerror(errno);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), "../etc/os-release");
  n = readlink(P("long").c_str(), buf, sizeof(buf));
  ASSERT_GT(n, 0) << std::strerror(errno);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), long_target);
  EXPECT_EQ(readlink(P("file").c_str(), buf, sizeof(buf)), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST_F(MountTest, Xattrs) {
  tree_->AddFile("/ping", "");
  tree_->SetXattr("/ping", "security.capability", CapNetBindService());
  tree_->SetXattr("/ping", "user.x", "hello");
  tree_->AddDir("/plain");
  MountTree();
  const std::string ping = P("ping");

  ssize_t n = lgetxattr(ping.c_str(), "security.capability", nullptr, 0);
  EXPECT_EQ(n, 20) << std::strerror(errno);
  char buf[256];
  n = lgetxattr(ping.c_str(), "security.capability", buf, sizeof(buf));
  ASSERT_EQ(n, 20) << std::strerror(errno);
  EXPECT_EQ(std::string(buf, 20), CapNetBindService());

  EXPECT_EQ(lgetxattr(ping.c_str(), "user.x", nullptr, 0), 5);
  n = lgetxattr(ping.c_str(), "user.x", buf, sizeof(buf));
  ASSERT_EQ(n, 5);
  EXPECT_EQ(std::string(buf, 5), "hello");
  EXPECT_EQ(lgetxattr(ping.c_str(), "user.x", buf, 3), -1);
  EXPECT_EQ(errno, ERANGE);
  EXPECT_EQ(lgetxattr(ping.c_str(), "user.missing", buf, sizeof(buf)), -1);
  EXPECT_EQ(errno, ENODATA);

  const std::string list = std::string("security.capability") + '\0' + "user.x" + '\0';
  EXPECT_EQ(llistxattr(ping.c_str(), nullptr, 0), static_cast<ssize_t>(list.size()));
  n = llistxattr(ping.c_str(), buf, sizeof(buf));
  ASSERT_EQ(n, static_cast<ssize_t>(list.size()));
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), list);
  EXPECT_EQ(llistxattr(ping.c_str(), buf, 4), -1);
  EXPECT_EQ(errno, ERANGE);
  EXPECT_EQ(llistxattr(P("plain").c_str(), buf, sizeof(buf)), 0);
}

TEST_F(MountTest, XattrsOfAnImageWithoutAnyAreAskedOnce) {
  tree_->AddFile("/f", "");
  MountTree();
  char buf[64];
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(lgetxattr(P("f").c_str(), "user.x", buf, sizeof(buf)), -1);
    EXPECT_EQ(errno, EOPNOTSUPP);  // the kernel's answer once we said ENOSYS
    EXPECT_EQ(llistxattr(P("f").c_str(), buf, sizeof(buf)), -1);
    EXPECT_EQ(errno, EOPNOTSUPP);
  }
  // One getxattr and one listxattr reached us; the kernel stopped asking.
  EXPECT_EQ(tree_->counters().hasxattrs.load(), 2u);
}

TEST_F(MountTest, ParallelRandomReadsOfALargeFile) {
  const std::string content = Bytes(3 << 20, 42);
  tree_->AddFile("/blob", content);
  MountTree();
  EXPECT_EQ(ReadAll(P("blob")), content);

  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0}, failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      int fd = open(P("blob").c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        ++failures;
        return;
      }
      std::mt19937 rng(static_cast<uint32_t>(t));
      std::vector<char> buf(1 << 21);
      for (int i = 0; i < 150; ++i) {
        size_t off = rng() % (content.size() + 4096);
        size_t len = 1 + rng() % (i % 10 == 0 ? buf.size() : 64 * 1024);
        ssize_t n = pread(fd, buf.data(), len, static_cast<off_t>(off));
        size_t want = off >= content.size() ? 0 : std::min(len, content.size() - off);
        if (n != static_cast<ssize_t>(want)) {
          ++failures;
        } else if (want > 0 && std::memcmp(buf.data(), content.data() + off, want) != 0) {
          ++mismatches;
        }
      }
      close(fd);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_F(MountTest, EveryWriteIsReadOnly) {
  tree_->AddFile("/file", "data");
  tree_->AddDir("/dir");
  MountTree();
  auto expect_erofs = [](int rc, const char* what) {
    EXPECT_EQ(rc, -1) << what;
    EXPECT_EQ(errno, EROFS) << what << ": " << std::strerror(errno);
  };
  expect_erofs(open(P("file").c_str(), O_WRONLY), "open O_WRONLY");
  expect_erofs(open(P("file").c_str(), O_RDWR), "open O_RDWR");
  expect_erofs(open(P("new").c_str(), O_WRONLY | O_CREAT, 0644), "create");
  expect_erofs(mkdir(P("newdir").c_str(), 0755), "mkdir");
  expect_erofs(rmdir(P("dir").c_str()), "rmdir");
  expect_erofs(unlink(P("file").c_str()), "unlink");
  expect_erofs(rename(P("file").c_str(), P("file2").c_str()), "rename");
  expect_erofs(symlink("file", P("sl").c_str()), "symlink");
  expect_erofs(link(P("file").c_str(), P("hl").c_str()), "link");
  expect_erofs(mknod(P("fifo").c_str(), S_IFIFO | 0644, 0), "mknod");
  expect_erofs(chmod(P("file").c_str(), 0777), "chmod");
  expect_erofs(chown(P("file").c_str(), 1, 1), "chown");
  expect_erofs(truncate(P("file").c_str(), 0), "truncate");
  expect_erofs(utimensat(AT_FDCWD, P("file").c_str(), nullptr, 0), "utimensat");
  expect_erofs(setxattr(P("file").c_str(), "user.y", "1", 1, 0), "setxattr");
  expect_erofs(removexattr(P("file").c_str(), "user.y"), "removexattr");
  EXPECT_EQ(ReadAll(P("file")), "data");
}

TEST_F(MountTest, StatFsIsReadOnlyWithTreeTotals) {
  tree_->AddFile("/a", std::string(10000, 'a'));
  tree_->AddDir("/d");
  MountTree();
  struct statvfs s {};
  ASSERT_EQ(statvfs(dir_.c_str(), &s), 0) << std::strerror(errno);
  EXPECT_TRUE(s.f_flag & ST_RDONLY);
  EXPECT_EQ(s.f_bsize, 4096u);
  EXPECT_EQ(s.f_blocks, 3u);  // ceil(10000 / 4096)
  EXPECT_EQ(s.f_bavail, 0u);
  EXPECT_EQ(s.f_files, 3u);
  EXPECT_EQ(s.f_namemax, 255u);
  struct statfs fs {};
  ASSERT_EQ(statfs(dir_.c_str(), &fs), 0);
  EXPECT_EQ(fs.f_type, FUSE_SUPER_MAGIC);
}

TEST_F(MountTest, MissingNamesAreNegativeEntries) {
  tree_->AddFile("/file", "");
  MountTree();
  struct stat st {};
  uint64_t before = tree_->counters().lookup.load();
  EXPECT_EQ(stat(P("missing").c_str(), &st), -1);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(tree_->counters().lookup.load(), before + 1);
  EXPECT_EQ(stat(P("missing").c_str(), &st), -1);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(tree_->counters().lookup.load(), before + 1) << "the negative entry was not cached";
  EXPECT_EQ(stat(P("file/x").c_str(), &st), -1);
  EXPECT_EQ(errno, ENOTDIR);
}

// Entries, attributes, symlinks, listings and file pages never change, so the
// kernel should ask for each once.
class CachingTest : public MountTest, public ::testing::WithParamInterface<bool> {};

TEST_P(CachingTest, KernelAsksOnceForWhatNeverChanges) {
  const std::string content = Bytes(300000, 7);
  uint64_t file = tree_->AddFile("/file", content);
  tree_->AddSymlink("/link", "file");
  tree_->AddDir("/listed");
  for (int i = 0; i < 20; ++i) tree_->AddFile("/listed/f" + std::to_string(i), std::to_string(i));
  MountOptions opts;
  opts.zero_message_open = GetParam();
  MountTree(opts);
  const auto& c = tree_->counters();

  struct stat st {};
  ASSERT_EQ(stat(P("file").c_str(), &st), 0);
  uint64_t meta = c.lookup + c.getattr;
  ASSERT_EQ(stat(P("file").c_str(), &st), 0);
  EXPECT_EQ(c.lookup + c.getattr, meta) << "entry/attr not cached";

  EXPECT_EQ(ReadAll(P("file")), content);
  uint64_t reads = tree_->ReadsOf(file);
  EXPECT_GT(reads, 0u);
  EXPECT_EQ(ReadAll(P("file")), content);
  EXPECT_EQ(tree_->ReadsOf(file), reads) << "page cache dropped on open (keep_cache)";

  char buf[64];
  ASSERT_EQ(readlink(P("link").c_str(), buf, sizeof(buf)), 4);
  ASSERT_EQ(readlink(P("link").c_str(), buf, sizeof(buf)), 4);
  EXPECT_EQ(c.readlink.load(), 1u) << "symlink not cached";

  ASSERT_EQ(GetDents(P("listed")).size(), 22u);
  // readdirplus made the dentries: no lookups for the listed names.
  uint64_t lookups = c.lookup;
  for (int i = 0; i < 20; ++i) ASSERT_EQ(lstat(P("listed/f" + std::to_string(i)).c_str(), &st), 0);
  EXPECT_EQ(c.lookup.load(), lookups) << "readdirplus entries not used";
  ASSERT_EQ(GetDents(P("listed")).size(), 22u);
  EXPECT_EQ(c.readdir.load(), 1u) << "listing not cached (cache_readdir)";
}

INSTANTIATE_TEST_SUITE_P(ZeroMessageOpen, CachingTest, ::testing::Bool());

TEST_F(MountTest, TreeErrorsReachTheCallerAsErrnos) {
  uint64_t f = tree_->AddFile("/file", "content");
  MountTree();
  struct stat st {};
  ASSERT_EQ(stat(P("file").c_str(), &st), 0);  // entry now cached
  char buf[16];
  int fd = open(P("file").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  tree_->InjectError(f, Errc::kNetwork);
  EXPECT_EQ(pread(fd, buf, sizeof(buf), 0), -1);
  EXPECT_EQ(errno, EIO);
  tree_->InjectError(f, Errc::kCanceled);
  EXPECT_EQ(pread(fd, buf, sizeof(buf), 0), -1);
  EXPECT_EQ(errno, EINTR);
  tree_->ClearError(f);
  EXPECT_EQ(pread(fd, buf, sizeof(buf), 0), 7);
  close(fd);
}

TEST_F(MountTest, UnmountEndsRun) {
  tree_->AddFile("/file", "x");
  MountTree();
  EXPECT_EQ(ReadAll(P("file")), "x");
  Status s = Unmount(dir_);
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_FALSE(IsMounted(dir_));
  ASSERT_TRUE(RunReturned()) << "Run() still serving after unmount";
  Status r = run_.get();
  EXPECT_TRUE(r.ok()) << r.error().message();
  server_.reset();  // nothing left to unmount
  EXPECT_FALSE(IsMounted(dir_));
}

TEST_F(MountTest, BusyMountNeedsLazyUnmount) {
  tree_->AddFile("/file", "still readable");
  MountTree();
  int fd = open(P("file").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << std::strerror(errno);

  Status busy = Unmount(dir_);
  ASSERT_FALSE(busy.ok());
  EXPECT_NE(busy.error().message().find(dir_), std::string::npos) << busy.error().message();
  EXPECT_NE(busy.error().message().find("busy"), std::string::npos) << busy.error().message();
  EXPECT_TRUE(IsMounted(dir_));

  Status lazy = Unmount(dir_, /*lazy=*/true);
  ASSERT_TRUE(lazy.ok()) << lazy.error().message();
  EXPECT_FALSE(IsMounted(dir_));
  // Detached, the filesystem still serves what is open in it...
  char buf[64];
  EXPECT_EQ(pread(fd, buf, sizeof(buf), 0), 14);
  EXPECT_FALSE(RunReturned(200ms));
  // ...and ends when the last user lets go.
  close(fd);
  EXPECT_TRUE(RunReturned()) << "Run() did not return after the detached mount was released";
}

TEST_F(MountTest, ExitEndsRunAndDestructorUnmounts) {
  tree_->AddFile("/file", "x");
  MountTree();
  EXPECT_EQ(ReadAll(P("file")), "x");
  // Let in-flight requests (releases, forgets) finish: an idle session is the
  // case libfuse < 3.18 cannot end by itself.
  std::this_thread::sleep_for(300ms);
  server_->Exit();
  ASSERT_TRUE(RunReturned()) << "Exit() did not wake an idle session";
  Status r = run_.get();
  EXPECT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(IsMounted(dir_)) << "Exit() alone does not unmount";
  server_.reset();
  EXPECT_FALSE(IsMounted(dir_));
}

TEST_F(MountTest, ExitBeforeRunMakesRunReturnAtOnce) {
  MountTree({}, /*run=*/false);
  EXPECT_TRUE(IsMounted(dir_)) << "Mount() returns with the mount in place";
  server_->Exit();
  StartRun();
  ASSERT_TRUE(RunReturned());
  Status r = run_.get();
  EXPECT_TRUE(r.ok()) << r.error().message();
  server_.reset();
  EXPECT_FALSE(IsMounted(dir_));
}

TEST_F(MountTest, MountpointNamesThatMountinfoEscapes) {
  tree_->AddFile("/file", "x");
  const std::string odd = dir_ + "/a b\\c\td";  // space, backslash, tab
  ASSERT_EQ(mkdir(odd.c_str(), 0755), 0) << std::strerror(errno);
  MountOptions opts;
  opts.mountpoint = odd;
  auto r = FuseServer::Mount(tree_, opts);
  ASSERT_TRUE(r.ok()) << r.error().message();
  std::unique_ptr<FuseServer> server = std::move(*r);
  auto run = std::async(std::launch::async, [s = server.get()] { return s->Run(); });
  EXPECT_TRUE(IsMounted(odd));
  EXPECT_TRUE(IsMounted(odd + "/."));
  EXPECT_FALSE(IsMounted(dir_));
  EXPECT_EQ(ReadAll(odd + "/file"), "x");
  Status s = Unmount(odd);
  EXPECT_TRUE(s.ok()) << s.error().message();
  if (!s.ok()) umount2(odd.c_str(), MNT_DETACH);
  EXPECT_FALSE(IsMounted(odd));
  ASSERT_EQ(run.wait_for(10s), std::future_status::ready);
  server.reset();
  rmdir(odd.c_str());
}

TEST_F(MountTest, UnmountRefusesWhatIsNotOurs) {
  Status s = Unmount(dir_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kNotFound);
  EXPECT_FALSE(IsMounted(dir_));
  EXPECT_FALSE(IsMounted("/"));
  EXPECT_FALSE(IsMounted("/proc"));  // a mount, but not ucrfs
}

TEST_F(MountTest, MountFailsOnAMissingMountpoint) {
  MountOptions opts;
  opts.mountpoint = dir_ + "/does-not-exist";
  auto r = FuseServer::Mount(tree_, opts);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("does-not-exist"), std::string::npos) << r.error().message();
}

}  // namespace
}  // namespace ucrfs::fusefs
