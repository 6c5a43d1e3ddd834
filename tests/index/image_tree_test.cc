// The merge rules, end to end through the store: layers written by Python's
// tarfile (an independent producer) are committed as blobs, indexed, merged,
// and the resulting tree is queried through the Tree interface.
#include "ucrfs/index/image_tree.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "ucrfs/common/file.h"

namespace ucrfs::index {
namespace {

namespace fs = std::filesystem;

class ImageTreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ucrfs-tree-test-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    auto s = Store::Open(dir_ + "/store", Store::Mode::kReadWrite);
    ASSERT_TRUE(s.ok()) << s.error().message();
    store_ = std::shared_ptr<Store>(std::move(s).value());
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs a Python snippet with `tf` open as a PAX tarfile writing `out`;
  // helpers f(path, data, **kw), d(path, **kw), l(path, target), h(path, target) exist.
  std::string Layer(const std::string& name, const std::string& body) {
    std::string out = dir_ + "/" + name + ".tar";
    std::string py = dir_ + "/" + name + ".py";
    std::ofstream(py) << "import io, tarfile\n"
                         "tf = tarfile.open(" << '"' << out << '"' << ", 'w', format=tarfile.PAX_FORMAT)\n"
                         "def add(ti, data=b''):\n"
                         "    ti.size = len(data); ti.mtime = ti.mtime or 1700000000\n"
                         "    tf.addfile(ti, io.BytesIO(data) if data else None)\n"
                         "def f(p, data=b'', mode=0o644, uid=0, gid=0, pax=None):\n"
                         "    ti = tarfile.TarInfo(p); ti.mode = mode; ti.uid = uid; ti.gid = gid\n"
                         "    if pax: ti.pax_headers = pax\n"
                         "    add(ti, data)\n"
                         "def d(p, mode=0o755, uid=0, gid=0):\n"
                         "    ti = tarfile.TarInfo(p); ti.type = tarfile.DIRTYPE; ti.mode = mode; ti.uid = uid; ti.gid = gid; add(ti)\n"
                         "def l(p, target):\n"
                         "    ti = tarfile.TarInfo(p); ti.type = tarfile.SYMTYPE; ti.linkname = target; add(ti)\n"
                         "def h(p, target):\n"
                         "    ti = tarfile.TarInfo(p); ti.type = tarfile.LNKTYPE; ti.linkname = target; add(ti)\n"
                         "def dev(p, kind, major, minor):\n"
                         "    ti = tarfile.TarInfo(p); ti.type = kind; ti.devmajor = major; ti.devminor = minor; add(ti)\n"
                      << body << "\ntf.close()\n";
    int rc = std::system(("/usr/bin/python3 " + py).c_str());
    EXPECT_EQ(rc, 0) << body;
    return out;
  }

  // Commits the given tar files as an image's layers and prepares its tree.
  Result<std::shared_ptr<Tree>> Image(const std::vector<std::string>& tars) {
    auto staging = store_->BeginStaging();
    if (!staging.ok()) return staging.error();
    ImageRecord rec;
    rec.key = "test:" + std::to_string(++images_);
    std::string manifest;
    for (const auto& t : tars) {
      auto bytes = ReadFile(t);
      fetch::Descriptor d;
      d.media_type = "application/vnd.oci.image.layer.v1.tar";
      d.digest = Digest::Sha256Of(*bytes);
      d.size = static_cast<int64_t>(bytes->size());
      UCRFS_TRY((*staging)->PutBytes(d.digest, *bytes));
      rec.layers.push_back(d);
      manifest += d.digest.str();
    }
    rec.manifest_digest = Digest::Sha256Of(manifest);
    rec.config.digest = Digest::Sha256Of("config" + manifest);
    UCRFS_TRY((*staging)->PutBytes(rec.manifest_digest, manifest));
    UCRFS_TRY((*staging)->PutBytes(rec.config.digest, "config" + manifest));
    UCRFS_TRY(store_->CommitImage(**staging, rec));
    UCRFS_TRY(PrepareImage(*store_, rec));
    return OpenTree(store_, rec);
  }

  // Resolves a path to its attributes; kNotFound if any component is missing.
  static Result<Attr> Walk(Tree& t, const std::string& path) {
    uint64_t ino = kRootIno;
    Attr a;
    UCRFS_ASSIGN(a, t.GetAttr(ino));
    for (auto& part : fs::path(path)) {
      if (part == "/" || part.empty()) continue;
      UCRFS_ASSIGN(a, t.Lookup(ino, part.string()));
      ino = a.ino;
    }
    return a;
  }

  static std::string Content(Tree& t, const std::string& path) {
    auto a = Walk(t, path);
    EXPECT_TRUE(a.ok()) << path;
    if (!a.ok()) return "";
    std::string buf(a->size, '\0');
    auto n = t.Read(a->ino, 0, buf.data(), buf.size());
    EXPECT_TRUE(n.ok());
    return buf;
  }

  std::string dir_;
  std::shared_ptr<Store> store_;
  int images_ = 0;
};

TEST_F(ImageTreeTest, LaterLayersShadowAndWhiteoutsHide) {
  auto l1 = Layer("l1", "d('etc'); f('etc/a', b'one'); f('etc/b', b'bee'); d('dir1'); d('dir1/sub'); f('dir1/sub/x', b'x')");
  auto l2 = Layer("l2", "d('etc'); f('etc/a', b'two'); f('etc/.wh.b'); f('.wh.dir1')");
  auto tree = Image({l1, l2});
  ASSERT_TRUE(tree.ok()) << tree.error().message();
  EXPECT_EQ(Content(**tree, "etc/a"), "two");
  EXPECT_EQ(Walk(**tree, "etc/b").error().code(), Errc::kNotFound);
  EXPECT_EQ(Walk(**tree, "dir1").error().code(), Errc::kNotFound);
  EXPECT_EQ(Walk(**tree, "etc/.wh.b").error().code(), Errc::kNotFound) << "whiteouts never show";
}

// Mesos' ROOT_INTERNET_CURL_DTYPE_Whiteout: an opaque marker hides the lower
// contents but not its own layer's entries, on either side of the marker.
TEST_F(ImageTreeTest, OpaqueKeepsSameLayerEntries) {
  auto l1 = Layer("l1", "d('dir1'); f('dir1/file1'); d('dir1/dir2'); f('dir1/dir2/file2'); d('dir1/dir2/deep'); f('dir1/dir2/deep/z')");
  auto l2 = Layer("l2", "d('dir1'); f('dir1/.wh.file1'); d('dir1/dir2'); f('dir1/dir2/before'); "
                        "f('dir1/dir2/.wh..wh..opq'); f('dir1/dir2/file3'); d('dir1/dir2/deep')");
  auto tree = Image({l1, l2});
  ASSERT_TRUE(tree.ok()) << tree.error().message();
  EXPECT_FALSE(Walk(**tree, "dir1/file1").ok());
  EXPECT_FALSE(Walk(**tree, "dir1/dir2/file2").ok());
  EXPECT_TRUE(Walk(**tree, "dir1/dir2/file3").ok());
  EXPECT_TRUE(Walk(**tree, "dir1/dir2/before").ok());
  EXPECT_TRUE(Walk(**tree, "dir1/dir2/deep").ok()) << "re-listed by the opaque layer";
  EXPECT_FALSE(Walk(**tree, "dir1/dir2/deep/z").ok()) << "lower contents under an opaque dir stay hidden";
}

// Mesos' ROOT_INTERNET_CURL_DTYPE_Overwrite: paths change type across layers,
// and a symlink in a lower layer never redirects an upper layer's file.
TEST_F(ImageTreeTest, TypeChangesAndNoSymlinkEscape) {
  auto l1 = Layer("l1", "d('replaced1'); f('replaced1/m'); f('replaced2'); l('replaced3', '/x'); d('replaced4'); f('replaced4/m1'); l('xyz', '../../../../../../../abc')");
  auto l2 = Layer("l2", "f('replaced1', b'now a file'); l('replaced2', 'target'); d('replaced3'); f('replaced4/.wh.m1'); f('xyz')");
  auto tree = Image({l1, l2});
  ASSERT_TRUE(tree.ok()) << tree.error().message();
  EXPECT_TRUE(S_ISREG(Walk(**tree, "replaced1")->mode));
  EXPECT_TRUE(S_ISLNK(Walk(**tree, "replaced2")->mode));
  EXPECT_TRUE(S_ISDIR(Walk(**tree, "replaced3")->mode));
  EXPECT_FALSE(Walk(**tree, "replaced4/m1").ok());
  auto xyz = Walk(**tree, "xyz");
  ASSERT_TRUE(xyz.ok());
  EXPECT_TRUE(S_ISREG(xyz->mode)) << "the file replaces the symlink instead of writing through it";
}

// image-spec: a whiteout applies to lower layers only; the same layer's own
// entry of that name stays.
TEST_F(ImageTreeTest, WhiteoutNeverHidesItsOwnLayer) {
  auto l1 = Layer("l1", "f('lower', b'1')");
  auto l2 = Layer("l2", "f('samelayer', b'kept'); f('.wh.samelayer'); f('.wh.lower')");
  auto tree = Image({l1, l2});
  ASSERT_TRUE(tree.ok()) << tree.error().message();
  EXPECT_EQ(Content(**tree, "samelayer"), "kept");
  EXPECT_FALSE(Walk(**tree, "lower").ok());
}

TEST_F(ImageTreeTest, DeletedThenRecreated) {
  auto l1 = Layer("l1", "d('a'); f('a/x', b'old')");
  auto l2 = Layer("l2", "f('.wh.a')");
  auto l3 = Layer("l3", "f('a', b'new file')");
  auto tree = Image({l1, l2, l3});
  ASSERT_TRUE(tree.ok()) << tree.error().message();
  auto a = Walk(**tree, "a");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(S_ISREG(a->mode));
  EXPECT_EQ(Content(**tree, "a"), "new file");
}

TEST_F(ImageTreeTest, HardlinksShareAnInodeAcrossLayers) {
  auto l1 = Layer("l1", "f('bin/tool', b'#!tool', mode=0o4755, uid=70000, gid=70001)");
  auto l2 = Layer("l2", "h('bin/tool2', 'bin/tool'); h('usr/tool3', 'bin/tool')");
  auto tree = Image({l1, l2});
  ASSERT_TRUE(tree.ok()) << tree.error().message();
  auto a = Walk(**tree, "bin/tool"), b = Walk(**tree, "bin/tool2"), c = Walk(**tree, "usr/tool3");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->ino, b->ino);
  EXPECT_EQ(a->ino, c->ino);
  EXPECT_EQ(a->nlink, 3u);
  EXPECT_EQ(a->mode & 07777, 04755u);
  EXPECT_EQ(a->uid, 70000u);
  EXPECT_EQ(Content(**tree, "usr/tool3"), "#!tool");
}

TEST_F(ImageTreeTest, SpecialFilesXattrsAndDirMetadata) {
  auto l1 = Layer("l1", "d('dev'); dev('dev/null', tarfile.CHRTYPE, 1, 3); dev('dev/sda', tarfile.BLKTYPE, 8, 0);"
                        "ti = tarfile.TarInfo('dev/fifo'); ti.type = tarfile.FIFOTYPE; add(ti);"
                        "d('tmp', mode=0o1777); f('cap', b'x', pax={'SCHILY.xattr.security.capability': '\\x01\\x00\\x00\\x02', 'SCHILY.xattr.user.k': 'v'})");
  auto l2 = Layer("l2", "d('tmp', mode=0o700, uid=5, gid=6)");
  auto tree = Image({l1, l2});
  ASSERT_TRUE(tree.ok()) << tree.error().message();
  auto null = Walk(**tree, "dev/null");
  ASSERT_TRUE(null.ok());
  EXPECT_TRUE(S_ISCHR(null->mode));
  EXPECT_EQ(null->rdev, makedev(1, 3));
  EXPECT_TRUE(S_ISBLK(Walk(**tree, "dev/sda")->mode));
  EXPECT_TRUE(S_ISFIFO(Walk(**tree, "dev/fifo")->mode));
  auto tmp = Walk(**tree, "tmp");
  EXPECT_EQ(tmp->mode & 07777, 0700u) << "the upper layer's directory entry updates metadata";
  EXPECT_EQ(tmp->uid, 5u);
  auto cap = Walk(**tree, "cap");
  ASSERT_TRUE(cap.ok());
  EXPECT_TRUE((*tree)->HasXattrs());
  auto v = (*tree)->GetXattr(cap->ino, "security.capability");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, std::string("\x01\x00\x00\x02", 4));
  auto names = (*tree)->ListXattr(cap->ino);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(names->size(), 2u);
}

TEST_F(ImageTreeTest, HostileLayersAreRefusedAndTheStoreStillServes) {
  auto missing = Layer("missing", "h('a', 'does/not/exist')");
  auto r1 = Image({missing});
  ASSERT_FALSE(r1.ok());
  EXPECT_NE(r1.error().message().find("hardlink to missing target"), std::string::npos) << r1.error().message();
  auto dotdot = Layer("dotdot", "f('x/.wh...')");
  auto r2 = Image({dotdot});
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.error().message().find("whiteout of '..'"), std::string::npos) << r2.error().message();
  auto good = Layer("good", "f('ok', b'fine')");
  auto r3 = Image({good});
  ASSERT_TRUE(r3.ok()) << r3.error().message();
  EXPECT_EQ(Content(**r3, "ok"), "fine");
}

TEST_F(ImageTreeTest, ReadDirIsSortedAndComplete) {
  auto l1 = Layer("l1", "d('big')\nfor i in range(5000): f('big/%05d' % i)");
  auto tree = Image({l1});
  ASSERT_TRUE(tree.ok()) << tree.error().message();
  auto big = Walk(**tree, "big");
  auto entries = (*tree)->ReadDir(big->ino);
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->size(), 5000u);
  EXPECT_EQ((*entries)[0].name, "00000");
  EXPECT_EQ((*entries)[4999].name, "04999");
  EXPECT_EQ(big->nlink, 2u);
}

}  // namespace
}  // namespace ucrfs::index
