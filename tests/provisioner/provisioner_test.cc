// The Provisioner in one process: several threads provisioning one image at
// once (Mesos' concurrent provisioning), the layout, Destroy and Recover.
// The copy and overlay backends need root (owners, mounts); the fuse
// backend also needs the ucrfs binary (UCRFS_BIN) and /dev/fuse. Without
// them the tests skip and say why.
#include "ucrfs/provisioner/provisioner.h"

#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/oci_layout.h"
#include "harness/test_util.h"
#include "ucrfs/common/digest.h"
#include "ucrfs/common/file.h"

namespace ucrfs::provisioner {
namespace {

using harness::MakeLayout;
using harness::Sh;
using harness::TempDir;
using harness::WriteBytes;
namespace fs = std::filesystem;

class ProvisionerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (owners of copied files, overlay mounts)";
    image_ = MakeLayout(tmp_);
    Options o;
    o.work_dir = tmp_ / "work";
    o.store_dir = tmp_ / "store";
    o.default_backend = backends::Kind::kCopy;
    o.ucrfs_binary = std::getenv("UCRFS_BIN") ? std::getenv("UCRFS_BIN") : UCRFS_TEST_BIN;
    auto p = Provisioner::Create(o);
    ASSERT_TRUE(p.ok()) << p.error().message();
    p_ = std::move(*p);
  }

  static std::string Read(const std::string& path) {
    auto r = ReadFile(path);
    return r.ok() ? *r : "<" + r.error().message() + ">";
  }

  TempDir tmp_{"ucrfs-provisioner"};
  std::string image_;
  std::unique_ptr<Provisioner> p_;
};

TEST_F(ProvisionerTest, ConcurrentProvisionsInOneProcess) {
  constexpr int kThreads = 6;
  std::vector<Result<Rootfs>> got(kThreads, Result<Rootfs>(Error(Errc::kInternal, "not run")));
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      got[i] = p_->Provision(fmt::format("c{}", i % 3), image_, i % 2 ? backends::Kind::kCopy : backends::Kind::kOverlay);
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> paths;
  for (int i = 0; i < kThreads; ++i) {
    ASSERT_TRUE(got[i].ok()) << i << ": " << got[i].error().message();
    const Rootfs& r = *got[i];
    EXPECT_EQ(fs::path(r.path).parent_path().string(),
              fmt::format("{}/provisioner/containers/c{}/backends/{}/rootfses", tmp_ / "work", i % 3,
                          i % 2 ? "copy" : "overlay"));
    EXPECT_EQ(Read(r.path + "/file"), "test2") << r.path;
    EXPECT_EQ(Read(r.path + "/dir1/1"), "1") << r.path;
    EXPECT_EQ(r.config.cmd, std::vector<std::string>{"/bin/sh"});
    paths.insert(r.path);
  }
  EXPECT_EQ(paths.size(), size_t{kThreads});
  auto ids = p_->Containers();
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<std::string>{"c0", "c1", "c2"}));
  auto rootfses = p_->Rootfses("c0");
  ASSERT_TRUE(rootfses.ok());
  EXPECT_EQ(rootfses->size(), 2u);

  // Destroy concurrently too; nothing is left.
  threads.clear();
  std::vector<Status> destroyed(3);
  for (int c = 0; c < 3; ++c) threads.emplace_back([&, c] { destroyed[c] = p_->Destroy(fmt::format("c{}", c)); });
  for (auto& t : threads) t.join();
  for (const auto& st : destroyed) EXPECT_TRUE(st.ok()) << st.error().message();
  for (const auto& path : paths) EXPECT_FALSE(fs::exists(path)) << path;
  ids = p_->Containers();
  ASSERT_TRUE(ids.ok());
  EXPECT_TRUE(ids->empty());
}

TEST_F(ProvisionerTest, RecoverDestroysAllButTheLive) {
  for (const char* c : {"keep", "drop1", "drop2"}) ASSERT_TRUE(p_->Provision(c, image_).ok()) << c;
  // A provision that crashed after writing its record: a record, a rootfs
  // directory half filled.
  std::string half = tmp_ / "work/provisioner/containers/drop2/backends/copy/rootfses/half";
  fs::create_directories(half + "/etc");
  WriteBytes(tmp_ / "work/provisioner/containers/drop2/rootfses/half.json",
             nlohmann::json{{"id", "half"}, {"backend", "copy"}, {"writable", true}, {"image", image_},
                            {"key", image_}, {"rootfs", half}, {"scratch", half + "-scratch"}}
                 .dump());
  Status st = p_->Recover({"keep"});
  ASSERT_TRUE(st.ok()) << st.error().message();
  auto ids = p_->Containers();
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, std::vector<std::string>{"keep"});
  auto keep = p_->Rootfses("keep");
  ASSERT_TRUE(keep.ok());
  ASSERT_EQ(keep->size(), 1u);
  EXPECT_EQ(Read((*keep)[0].path + "/file"), "test2");
}

TEST_F(ProvisionerTest, RefusesUnsafeIdsAndLeavesNothingOfAFailure) {
  for (const char* bad : {"", "..", "a/b", "x y", "../../etc"}) {
    auto r = p_->Provision(bad, image_);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code(), Errc::kInvalidArgument) << bad;
  }
  auto missing = p_->Provision("c", image_ + "-nosuch");
  ASSERT_FALSE(missing.ok());
  auto ids = p_->Containers();
  ASSERT_TRUE(ids.ok());
  // The container directory may exist (empty); no rootfs is recorded.
  for (const auto& id : *ids) {
    auto r = p_->Rootfses(id);
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->empty()) << id;
  }
  EXPECT_TRUE(p_->Destroy("never-made").ok());
}

}  // namespace
}  // namespace ucrfs::provisioner
