// The Applier that writes layers for the copy backend (whiteouts applied)
// and for unpacked overlay layers (whiteouts converted): layer rules, and
// that no entry of a hostile layer reaches outside the root. Runs as root
// (owners, devices, trusted.* xattrs); skips otherwise.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "apply.h"
#include "ucrfs/backends/backends.h"
#include "ucrfs/common/file.h"

namespace ucrfs::backends {
namespace {

using index::EntryType;
using index::TarEntry;

// A decoded layer stream held in memory: entries' data is appended to it.
class MemReader final : public index::LayerReader {
 public:
  Result<size_t> ReadAt(uint64_t offset, char* buf, size_t len) override {
    if (offset >= data.size()) return size_t{0};
    size_t n = std::min<size_t>(len, data.size() - offset);
    std::memcpy(buf, data.data() + offset, n);
    return n;
  }
  std::string data;
};

struct Layer {
  std::vector<TarEntry> entries;
  MemReader reader;

  Layer& Dir(std::string path, uint32_t mode = 0755, int64_t mtime = 1000) {
    TarEntry e;
    e.path = std::move(path);
    e.type = EntryType::kDir;
    e.mode = mode;
    e.mtime_sec = mtime;
    entries.push_back(e);
    return *this;
  }
  Layer& File(std::string path, std::string content, uint32_t mode = 0644, uint64_t uid = 0) {
    TarEntry e;
    e.path = std::move(path);
    e.type = EntryType::kFile;
    e.mode = mode;
    e.uid = uid;
    e.gid = uid;
    e.mtime_sec = 2000;
    e.mtime_nsec = 5;
    e.size = content.size();
    if (!content.empty()) e.extents.push_back({0, reader.data.size(), content.size()});
    reader.data += content;
    entries.push_back(e);
    return *this;
  }
  Layer& Symlink(std::string path, std::string target) {
    TarEntry e;
    e.path = std::move(path);
    e.type = EntryType::kSymlink;
    e.mode = 0777;
    e.link_target = std::move(target);
    entries.push_back(e);
    return *this;
  }
  Layer& Hardlink(std::string path, std::string target) {
    TarEntry e;
    e.path = std::move(path);
    e.type = EntryType::kHardlink;
    e.link_target = std::move(target);
    entries.push_back(e);
    return *this;
  }
  Layer& Whiteout(std::string dir, std::string name) {
    return File(dir.empty() ? ".wh." + name : dir + "/.wh." + name, "", 0600);
  }
  Layer& Opaque(std::string dir) { return File(dir.empty() ? ".wh..wh..opq" : dir + "/.wh..wh..opq", "", 0600); }
};

class ApplyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (owners, devices, trusted.* xattrs)";
    char tmpl[] = "/tmp/ucrfs-apply-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    root_ = base_ + "/root";
    outside_ = base_ + "/outside";
    ASSERT_TRUE(MakeDirs(root_).ok());
    ASSERT_TRUE(MakeDirs(outside_).ok());
    ASSERT_TRUE(WriteFileAtomic(outside_ + "/keep", "host file").ok());
  }
  void TearDown() override {
    if (!base_.empty()) std::filesystem::remove_all(base_);
  }

  Status Apply(Whiteouts mode, std::vector<Layer*> layers) {
    UniqueFd fd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY));
    Applier a(fd.get(), mode);
    int i = 0;
    for (Layer* l : layers) UCRFS_TRY(a.ApplyLayer(l->entries, l->reader, "layer " + std::to_string(i++)));
    return a.Finish();
  }

  std::string Read(const std::string& rel) {
    auto r = ReadFile(root_ + "/" + rel);
    return r.ok() ? *r : "<" + r.error().message() + ">";
  }
  bool Exists(const std::string& path) { return PathExists(path); }
  void ExpectOutsideUntouched() {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(outside_)) names.push_back(e.path().filename());
    EXPECT_EQ(names, std::vector<std::string>{"keep"});
    EXPECT_EQ(*ReadFile(outside_ + "/keep"), "host file");
  }

  std::string base_, root_, outside_;
};

TEST_F(ApplyTest, UpperLayerWinsAndWhiteoutsHideLowerOnly) {
  Layer l1, l2;
  l1.Dir("dir1").File("dir1/1", "1").File("file", "test1").Dir("gone").File("gone/x", "x").Dir("opq")
      .File("opq/old", "old").File("wh", "lower");
  l2.Dir("dir2").File("dir2/2", "2").File("file", "test2").Whiteout("", "gone").Opaque("opq")
      .File("opq/new", "new").File("wh", "same layer").Whiteout("", "wh");
  ASSERT_TRUE(Apply(Whiteouts::kApply, {&l1, &l2}).ok());
  EXPECT_EQ(Read("dir1/1"), "1");
  EXPECT_EQ(Read("dir2/2"), "2");
  EXPECT_EQ(Read("file"), "test2");
  EXPECT_FALSE(Exists(root_ + "/gone"));
  EXPECT_FALSE(Exists(root_ + "/opq/old"));
  EXPECT_EQ(Read("opq/new"), "new");
  EXPECT_EQ(Read("wh"), "same layer");  // a whiteout never hides its own layer's entry
  EXPECT_FALSE(Exists(root_ + "/.wh.gone"));
  EXPECT_FALSE(Exists(root_ + "/opq/.wh..wh..opq"));
}

TEST_F(ApplyTest, MetadataModesOwnersTimesAndHardlinks) {
  Layer l1;
  l1.Dir("d", 01777, 1234).File("d/suid", "s", 04755, 70000).Hardlink("d/link", "d/suid").Symlink("d/sym", "suid");
  l1.entries.back().mtime_sec = 777;
  ASSERT_TRUE(Apply(Whiteouts::kApply, {&l1}).ok());
  struct stat st;
  ASSERT_EQ(::lstat((root_ + "/d/suid").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 04755u);
  EXPECT_EQ(st.st_uid, 70000u);
  EXPECT_EQ(st.st_nlink, 2u);
  EXPECT_EQ(st.st_mtim.tv_sec, 2000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 5);
  ASSERT_EQ(::lstat((root_ + "/d").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 01777u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1234);  // set after its children were written
  ASSERT_EQ(::lstat((root_ + "/d/sym").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(st.st_mtim.tv_sec, 777);
}

// The Mesos overwrite case: a symlink in one layer, then entries written
// through that name in the next. Nothing may land outside the root.
TEST_F(ApplyTest, SymlinkInLowerLayerNeverFollowed) {
  Layer l1, l2;
  l1.Symlink("etc", outside_).Symlink("up", "../outside").Symlink("keep", outside_ + "/keep")
      .Dir("d").Symlink("d/link", "../../outside");
  l2.File("etc/passwd", "root").File("up/evil", "x").File("keep", "replaced").Whiteout("up", "keep")
      .Opaque("d/link").Whiteout("etc", "keep").File("d/link/deeper", "y");
  ASSERT_TRUE(Apply(Whiteouts::kApply, {&l1, &l2}).ok());
  ExpectOutsideUntouched();
  EXPECT_EQ(Read("etc/passwd"), "root");
  EXPECT_EQ(Read("up/evil"), "x");
  EXPECT_EQ(Read("keep"), "replaced");
  EXPECT_EQ(Read("d/link/deeper"), "y");
  struct stat st;
  ASSERT_EQ(::lstat((root_ + "/etc").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
}

TEST_F(ApplyTest, HardlinkThroughSymlinkNotFollowed) {
  Layer l1, l2;
  l1.Symlink("out", outside_);
  l2.Hardlink("stolen", "out/keep");
  Status st = Apply(Whiteouts::kApply, {&l1, &l2});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("missing target"), std::string::npos) << st.error().message();
  EXPECT_FALSE(Exists(root_ + "/stolen"));
  ExpectOutsideUntouched();
}

TEST_F(ApplyTest, HostileWhiteoutRefused) {
  Layer l1;
  l1.File(".wh...", "", 0600);
  Status st = Apply(Whiteouts::kApply, {&l1});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kMalformed);
  ExpectOutsideUntouched();
}

TEST_F(ApplyTest, ConvertMakesOverlayWhiteouts) {
  Layer l;
  l.Dir("a").Whiteout("a", "gone").Opaque("a").File("a/kept", "k").File("same", "mine").Whiteout("", "same")
      .Whiteout("implicit/dir", "x");
  ASSERT_TRUE(Apply(Whiteouts::kConvert, {&l}).ok());
  struct stat st;
  ASSERT_EQ(::lstat((root_ + "/a/gone").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(0, 0));
  char v[8] = {};
  EXPECT_EQ(::getxattr((root_ + "/a").c_str(), "trusted.overlay.opaque", v, sizeof v), 1);
  EXPECT_EQ(v[0], 'y');
  EXPECT_EQ(Read("a/kept"), "k");
  EXPECT_EQ(Read("same"), "mine");
  ASSERT_EQ(::lstat((root_ + "/implicit/dir/x").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_FALSE(Exists(root_ + "/a/.wh.gone"));
}

TEST_F(ApplyTest, ConvertRefusesHardlinkOutOfLayer) {
  Layer l;
  l.Hardlink("b", "a");
  Status st = Apply(Whiteouts::kConvert, {&l});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kUnsupported);
}

TEST_F(ApplyTest, ImageXattrsForOverlayAreDropped) {
  Layer l;
  l.Dir("d");
  l.entries.back().xattrs = {{"trusted.overlay.redirect", "/etc"}, {"user.k", "v"}};
  ASSERT_TRUE(Apply(Whiteouts::kConvert, {&l}).ok());
  char v[16];
  EXPECT_LT(::getxattr((root_ + "/d").c_str(), "trusted.overlay.redirect", v, sizeof v), 0);
  EXPECT_EQ(::getxattr((root_ + "/d").c_str(), "user.k", v, sizeof v), 1);
}

TEST_F(ApplyTest, RemoveStopsAtMounts) {
  // EmptyDir never descends into another filesystem: whatever is mounted in
  // a rootfs being destroyed keeps its files.
  std::string mnt = root_ + "/mnt";
  ASSERT_TRUE(MakeDirs(mnt).ok());
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=1m") != 0) GTEST_SKIP() << "cannot mount a tmpfs here";
  ASSERT_TRUE(WriteFileAtomic(mnt + "/precious", "p").ok());
  EXPECT_FALSE(EmptyDir(root_).ok());
  EXPECT_TRUE(Exists(mnt + "/precious"));
  ::umount2(mnt.c_str(), MNT_DETACH);
}

TEST(BackendKindTest, ParseAndName) {
  for (auto name : {"fuse", "overlay", "copy", "bind"}) {
    auto k = ParseKind(name);
    ASSERT_TRUE(k.ok());
    EXPECT_EQ(Name(*k), name);
  }
  auto bad = ParseKind("aufs");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(), "backend 'aufs' is not fuse, overlay, copy or bind");
}

}  // namespace
}  // namespace ucrfs::backends
