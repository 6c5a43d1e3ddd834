// The Mesos isolator lifecycle over the provisioner: labels to volumes,
// prepare's mounts and their targets, cleanup, recover. Provisioning needs
// root, /dev/fuse and the ucrfs binary (UCRFS_BIN); the label parsing does
// not.
#include "ucrfs/isolator/lifecycle.h"

#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "harness/oci_layout.h"
#include "harness/test_util.h"
#include "ucrfs/common/file.h"

namespace ucrfs::isolator {
namespace {

using harness::TempDir;
namespace fs = std::filesystem;

TEST(VolumesFromLabelsTest, ParsesImagePathAndMode) {
  auto v = VolumesFromLabels({{"ucrfs.volume", "127.0.0.1:5000/tools:1.2:/opt/tools:ro"},
                              {"other", "x:y"},
                              {"ucrfs.volume.2", "busybox:cache"},
                              {"ucrfs.volume.10", "oci:/srv/layout:v1:/data:rw"},
                              {"ucrfs.volumes", "not:ours"}});
  ASSERT_TRUE(v.ok()) << v.error().message();
  ASSERT_EQ(v->size(), 3u);
  EXPECT_EQ((*v)[0].image, "127.0.0.1:5000/tools:1.2");
  EXPECT_EQ((*v)[0].path, "/opt/tools");
  EXPECT_TRUE((*v)[0].readonly);
  EXPECT_EQ((*v)[1].image, "busybox");
  EXPECT_EQ((*v)[1].path, "cache");
  EXPECT_FALSE((*v)[1].readonly);
  EXPECT_EQ((*v)[2].image, "oci:/srv/layout:v1");
  EXPECT_EQ((*v)[2].path, "/data");
  EXPECT_FALSE((*v)[2].readonly);
}

TEST(VolumesFromLabelsTest, RefusesBadValues) {
  for (const char* bad : {"nopath", ":/x", "img:", "img:../up", "img:/a/../../etc", "img:a/..:ro"}) {
    auto v = VolumesFromLabels({{"ucrfs.volume", bad}});
    ASSERT_FALSE(v.ok()) << bad;
    EXPECT_EQ(v.error().code(), Errc::kInvalidArgument) << bad;
    EXPECT_NE(v.error().message().find("ucrfs.volume"), std::string::npos) << v.error().message();
  }
}

class LifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (FUSE and overlay mounts)";
    if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "needs /dev/fuse";
    const char* bin = std::getenv("UCRFS_BIN") ? std::getenv("UCRFS_BIN") : UCRFS_TEST_BIN;
    if (::access(bin, X_OK) != 0) GTEST_SKIP() << "needs the ucrfs binary (" << bin << ", or UCRFS_BIN)";
    image_ = harness::MakeLayout(tmp_);
    provisioner::Options o;
    o.work_dir = tmp_ / "work";
    o.store_dir = tmp_ / "store";
    o.ucrfs_binary = bin;
    auto p = provisioner::Provisioner::Create(o);
    ASSERT_TRUE(p.ok()) << p.error().message();
    iso_ = std::make_unique<LazyVolumeIsolator>(std::move(*p));
    fs::create_directories(tmp_ / "sandbox");
    fs::create_directories(tmp_ / "rootfs");
  }
  void TearDown() override {
    if (iso_) {
      for (const char* c : {"c1", "c2", "c3"}) (void)iso_->Cleanup(c);
    }
  }

  TempDir tmp_{"ucrfs-lifecycle"};
  std::string image_;
  std::unique_ptr<LazyVolumeIsolator> iso_;
};

TEST_F(LifecycleTest, PrepareMountsVolumesWhereMesosWould) {
  ContainerConfig cfg;
  cfg.directory = tmp_ / "sandbox";
  cfg.rootfs = tmp_ / "rootfs";
  cfg.labels = {{"ucrfs.volume", image_ + ":/opt/tools:ro"}, {"ucrfs.volume.2", image_ + ":cache"}};
  auto info = iso_->Prepare("c1", cfg);
  ASSERT_TRUE(info.ok()) << info.error().message();
  ASSERT_TRUE(info->has_value());
  const auto& mounts = (*info)->mounts;
  ASSERT_EQ(mounts.size(), 2u);
  EXPECT_TRUE((*info)->clone_mount_namespace);
  EXPECT_EQ(mounts[0].target, tmp_ / "rootfs/opt/tools");
  EXPECT_EQ(mounts[0].flags, static_cast<unsigned long>(MS_BIND | MS_REC | MS_RDONLY));
  EXPECT_EQ(mounts[1].target, tmp_ / "rootfs/mnt/mesos/sandbox/cache");
  EXPECT_EQ(mounts[1].flags, static_cast<unsigned long>(MS_BIND | MS_REC));
  for (const auto& m : mounts) {
    EXPECT_TRUE(fs::is_directory(m.target)) << m.target;
    auto body = ReadFile(m.source + "/file");  // the source serves the image now
    ASSERT_TRUE(body.ok()) << body.error().message();
    EXPECT_EQ(*body, "test2");
    EXPECT_EQ(m.source.find(tmp_ / "work/provisioner/containers/c1/backends/fuse/rootfses/"), 0u) << m.source;
  }
  // The read-only volume is a read-only FUSE mount, the other writable.
  EXPECT_FALSE(WriteFileAtomic(mounts[0].source + "/new", "x").ok());
  EXPECT_TRUE(WriteFileAtomic(mounts[1].source + "/new", "x").ok());

  ASSERT_TRUE(iso_->Isolate("c1", 1).ok());
  Status st = iso_->Cleanup("c1");
  ASSERT_TRUE(st.ok()) << st.error().message();
  for (const auto& m : mounts) EXPECT_FALSE(fs::exists(m.source)) << m.source;
  EXPECT_FALSE(fs::exists(tmp_ / "work/provisioner/containers/c1"));
  EXPECT_TRUE(iso_->Cleanup("never-prepared").ok());
}

TEST_F(LifecycleTest, WithoutRootfsAndWithoutVolumes) {
  ContainerConfig cfg;
  cfg.directory = tmp_ / "sandbox";
  auto none = iso_->Prepare("c2", cfg);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  // Host paths: relative under the host sandbox; absolute must exist.
  cfg.labels = {{"ucrfs.volume", image_ + ":vol"}};
  auto info = iso_->Prepare("c2", cfg);
  ASSERT_TRUE(info.ok()) << info.error().message();
  EXPECT_EQ((*info)->mounts.at(0).target, tmp_ / "sandbox/vol");
  cfg.labels = {{"ucrfs.volume", image_ + ":/no/such/host/dir"}};
  auto missing = iso_->Prepare("c3", cfg);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
  EXPECT_FALSE(fs::exists(tmp_ / "work/provisioner/containers/c3")) << "a failed prepare leaves nothing";
}

TEST_F(LifecycleTest, RecoverDestroysWhatTheAgentNoLongerHas) {
  ContainerConfig cfg;
  cfg.directory = tmp_ / "sandbox";
  cfg.rootfs = tmp_ / "rootfs";
  cfg.labels = {{"ucrfs.volume", image_ + ":/v"}};
  ASSERT_TRUE(iso_->Prepare("c1", cfg).ok());
  ASSERT_TRUE(iso_->Prepare("c2", cfg).ok());
  Status st = iso_->Recover({"c2"});
  ASSERT_TRUE(st.ok()) << st.error().message();
  auto ids = iso_->provisioner().Containers();
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, std::vector<std::string>{"c2"});
}

}  // namespace
}  // namespace ucrfs::isolator
