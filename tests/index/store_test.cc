#include "ucrfs/index/store.h"

#include <lmdb.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "ucrfs/common/file.h"

namespace ucrfs::index {
namespace {

namespace fs = std::filesystem;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("ucrfs-store-test-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  std::unique_ptr<Store> OpenRw() {
    auto s = Store::Open(root_, Store::Mode::kReadWrite);
    EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message());
    return s.ok() ? std::move(s).value() : nullptr;
  }

  static fetch::Descriptor Desc(std::string_view content, int64_t size = -2) {
    fetch::Descriptor d;
    d.media_type = "application/vnd.oci.image.layer.v1.tar";
    d.digest = Digest::Sha256Of(content);
    d.size = size == -2 ? static_cast<int64_t>(content.size()) : size;
    return d;
  }

  static ImageRecord Record(const std::string& key, const fetch::Descriptor& manifest, const fetch::Descriptor& config,
                            const fetch::Descriptor& layer) {
    ImageRecord r;
    r.key = key;
    r.manifest_digest = manifest.digest;
    r.manifest_media_type = "application/vnd.oci.image.manifest.v1+json";
    r.platform.os = "linux";
    r.platform.architecture = "amd64";
    r.config = config;
    r.layers = {layer};
    r.pulled_at = 42;
    return r;
  }

  std::string root_;
};

TEST_F(StoreTest, CommitPublishesBlobsAndRecord) {
  auto store = OpenRw();
  auto staging = store->BeginStaging();
  ASSERT_TRUE(staging.ok());
  auto m = Desc("manifest"), c = Desc("config"), l = Desc("layer bytes");
  ASSERT_TRUE((*staging)->PutBytes(m.digest, "manifest").ok());
  ASSERT_TRUE((*staging)->PutBytes(c.digest, "config").ok());
  auto w = (*staging)->NewBlob(l);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Write("layer ").ok());
  ASSERT_TRUE((*w)->Write("bytes").ok());
  ASSERT_TRUE((*w)->Finish().ok());
  EXPECT_FALSE(store->HasBlob(l.digest)) << "staged blobs are not visible before commit";
  ASSERT_TRUE(store->CommitImage(**staging, Record("docker://r/x:1", m, c, l)).ok());
  EXPECT_TRUE(store->HasBlob(l.digest));
  EXPECT_EQ(*ReadFile(store->BlobPath(l.digest)), "layer bytes");

  auto found = store->FindImage("docker://r/x:1");
  ASSERT_TRUE(found.ok());
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->manifest_digest, m.digest);
  ASSERT_EQ((*found)->layers.size(), 1u);
  EXPECT_EQ((*found)->layers[0].digest, l.digest);
  EXPECT_EQ((*found)->layers[0].size, 11);
  EXPECT_EQ((*found)->pulled_at, 42);

  // Visible to another opener, read-only.
  auto ro = Store::Open(root_, Store::Mode::kReadOnly);
  ASSERT_TRUE(ro.ok());
  auto all = (*ro)->ListImages();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].key, "docker://r/x:1");
}

TEST_F(StoreTest, DigestMismatchRejectsAndRemovesTheBlob) {
  auto store = OpenRw();
  auto staging = store->BeginStaging();
  ASSERT_TRUE(staging.ok());
  auto l = Desc("expected content");
  auto w = (*staging)->NewBlob(l);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Write("tampered content").ok());  // same length, other bytes
  Status st = (*w)->Finish();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kDigestMismatch);
  EXPECT_NE(st.error().message().find(l.digest.str()), std::string::npos);
  w->reset();
  EXPECT_TRUE((*staging)->staged().empty());
  EXPECT_TRUE(fs::is_empty((*staging)->path()));
}

TEST_F(StoreTest, SizeOverflowIsCutOffAtOnce) {
  auto store = OpenRw();
  auto staging = store->BeginStaging();
  auto l = Desc("abc");
  auto w = (*staging)->NewBlob(l);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Write("ab").ok());
  Status st = (*w)->Write("cd");  // 4 > 3 bytes
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kDigestMismatch);
  auto w2 = (*staging)->NewBlob(l);
  ASSERT_TRUE((*w2)->Write("ab").ok());
  EXPECT_FALSE((*w2)->Finish().ok()) << "short blob must fail";
}

TEST_F(StoreTest, RestartStartsTheHashOver) {
  auto store = OpenRw();
  auto staging = store->BeginStaging();
  auto l = Desc("final");
  auto w = (*staging)->NewBlob(l);
  ASSERT_TRUE((*w)->Write("fin").ok());
  ASSERT_TRUE((*w)->Restart().ok());
  EXPECT_EQ((*w)->written(), 0u);
  ASSERT_TRUE((*w)->Write("final").ok());
  EXPECT_TRUE((*w)->Finish().ok());
  EXPECT_EQ((*staging)->staged().size(), 1u);
}

TEST_F(StoreTest, FailedPullLeavesNothing) {
  auto store = OpenRw();
  std::string staging_path;
  {
    auto staging = store->BeginStaging();
    staging_path = (*staging)->path();
    ASSERT_TRUE((*staging)->PutBytes(Digest::Sha256Of("x"), "x").ok());
    // Dropped without commit, as on any pull error.
  }
  EXPECT_FALSE(fs::exists(staging_path));
  EXPECT_FALSE(store->HasBlob(Digest::Sha256Of("x")));
  auto all = store->ListImages();
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->empty());
}

TEST_F(StoreTest, CommitRefusesARecordWhoseBlobsAreMissing) {
  auto store = OpenRw();
  auto staging = store->BeginStaging();
  auto m = Desc("m"), c = Desc("c"), l = Desc("l");
  ASSERT_TRUE((*staging)->PutBytes(m.digest, "m").ok());
  ASSERT_TRUE((*staging)->PutBytes(c.digest, "c").ok());
  Status st = store->CommitImage(**staging, Record("k", m, c, l));
  ASSERT_FALSE(st.ok());
  auto found = store->FindImage("k");
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE(found->has_value());
}

TEST_F(StoreTest, StagingOfDeadProcessesIsRemovedOnOpen) {
  OpenRw();
  // A staging directory named after a process that has exited.
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  std::string dead = root_ + "/staging/" + std::to_string(child) + "-0-abc";
  std::string live = root_ + "/staging/" + std::to_string(::getpid()) + "-99-abc";
  fs::create_directories(dead);
  fs::create_directories(live);
  OpenRw();
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live));
}

TEST_F(StoreTest, ReadOnlyOpenOfMissingStoreIsNotFound) {
  auto s = Store::Open(root_, Store::Mode::kReadOnly);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kNotFound);
  EXPECT_FALSE(fs::exists(root_)) << "a read-only open must not create the store";
}

TEST_F(StoreTest, RefusesNewerSchema) {
  OpenRw();
  // Bump the schema version behind the store's back.
  MDB_env* env = nullptr;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 16);
  ASSERT_EQ(mdb_env_open(env, (root_ + "/index").c_str(), 0, 0644), 0);
  MDB_txn* txn = nullptr;
  MDB_dbi dbi;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
  std::string key = "schema_version", val = std::to_string(kSchemaVersion + 1);
  MDB_val k{key.size(), key.data()}, v{val.size(), val.data()};
  ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);

  auto s = Store::Open(root_, Store::Mode::kReadWrite);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kUnsupported);
  EXPECT_NE(s.error().message().find("newer"), std::string::npos);
}

TEST(ImageRecordTest, JsonRoundTrip) {
  ImageRecord r;
  r.key = "docker://registry-1.docker.io/library/alpine:3.20";
  r.manifest_digest = Digest::Sha256Of("m");
  r.manifest_media_type = "application/vnd.oci.image.manifest.v1+json";
  r.index_digest = Digest::Sha256Of("i");
  r.platform = {.os = "linux", .architecture = "arm", .variant = "v7"};
  r.config.media_type = "application/vnd.oci.image.config.v1+json";
  r.config.digest = Digest::Sha256Of("c");
  r.config.size = 1;
  fetch::Descriptor l;
  l.media_type = "application/vnd.oci.image.layer.v1.tar+zstd";
  l.digest = Digest::Of(DigestAlgorithm::kSha512, "l");
  l.size = 7;
  l.annotations["a"] = "b";
  r.layers = {l};
  auto back = ImageRecord::FromJson(r.ToJson());
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(back->key, r.key);
  EXPECT_EQ(back->index_digest, r.index_digest);
  EXPECT_EQ(back->platform.variant, "v7");
  EXPECT_EQ(back->layers[0].digest, l.digest);
  EXPECT_EQ(back->layers[0].annotations.at("a"), "b");
  EXPECT_FALSE(ImageRecord::FromJson("{\"key\": 1}").ok());
}

}  // namespace
}  // namespace ucrfs::index
