// PullAppc against ACIs in a local discovery directory.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "ucrfs/common/file.h"
#include "ucrfs/fetch/appc.h"
#include "ucrfs/index/layers.h"
#include "ucrfs/index/pull.h"
#include "ucrfs/index/runtime_config.h"
#include "ucrfs/index/store.h"

namespace ucrfs::index {
namespace {

namespace fs = std::filesystem;

// A minimal ustar writer: enough for manifests, directories and small files.
void TarHeader(std::string& out, const std::string& name, char type, size_t size, const std::string& link = "") {
  char h[512] = {};
  std::memcpy(h, name.data(), std::min<size_t>(name.size(), 100));
  std::snprintf(h + 100, 8, "%07o", type == '5' ? 0755 : 0644);
  std::snprintf(h + 108, 8, "%07o", 0);
  std::snprintf(h + 116, 8, "%07o", 0);
  std::snprintf(h + 124, 12, "%011zo", size);
  std::snprintf(h + 136, 12, "%011o", 1700000000);
  h[156] = type;
  std::memcpy(h + 157, link.data(), std::min<size_t>(link.size(), 100));
  std::memcpy(h + 257, "ustar", 6);
  std::memcpy(h + 263, "00", 2);
  std::memset(h + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  std::snprintf(h + 148, 8, "%06o", sum);
  out.append(h, 512);
}

void TarFile(std::string& out, const std::string& name, const std::string& data) {
  TarHeader(out, name, '0', data.size());
  out += data;
  out.append((512 - data.size() % 512) % 512, '\0');
}

std::string Aci(const std::string& manifest, const std::map<std::string, std::string>& files,
                const std::vector<std::pair<std::string, std::string>>& hardlinks = {}) {
  std::string t;
  TarFile(t, "manifest", manifest);
  TarHeader(t, "rootfs/", '5', 0);
  for (const auto& [path, data] : files) TarFile(t, "rootfs/" + path, data);
  for (const auto& [path, target] : hardlinks) TarHeader(t, "rootfs/" + path, '1', 0, target);
  TarFile(t, "notes.txt", "outside rootfs");
  t.append(1024, '\0');
  return t;
}

std::string Manifest(const std::string& name, const std::string& deps = "[]", const std::string& extra = "") {
  return fmt::format(R"({{"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "{}",
    "labels": [{{"name": "version", "value": "1.0"}}, {{"name": "os", "value": "linux"}}],
    "dependencies": {}, "app": {{"exec": ["/app"]}}{}}})",
                     name, deps, extra);
}

class AppcPullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = fs::temp_directory_path() / ("ucrfs-appc-test-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    fs::create_directories(base_ / "images" / "example.com");
    auto s = Store::Open(base_ / "store", Store::Mode::kReadWrite);
    ASSERT_TRUE(s.ok()) << s.error().message();
    store_ = std::move(s).value();
    opts_.appc_discovery_prefix = (base_ / "images").string() + "/";
  }
  void TearDown() override { fs::remove_all(base_); }

  // Writes NAME-1.0-linux-amd64.aci; returns its image id.
  std::string Put(const std::string& name, const std::string& tar) {
    EXPECT_TRUE(WriteFileAtomic((base_ / "images" / (name + "-1.0-linux-amd64.aci")).string(), tar).ok());
    return fetch::DigestToAppcId(Digest::Of(DigestAlgorithm::kSha512, tar));
  }

  Result<PullResult> Pull(const std::string& ref) {
    auto r = fetch::AppcRef::Parse(ref);
    EXPECT_TRUE(r.ok()) << ref;
    fetch::AppcRef full = fetch::WithAppcDefaults(*r, *fetch::Platform::Parse("linux/amd64"));
    full.labels["version"] = "1.0";
    return PullAppc(*store_, full, "appc:" + full.str(), opts_);
  }

  fs::path base_;
  std::unique_ptr<Store> store_;
  fetch::SourceOptions opts_;
};

TEST_F(AppcPullTest, DependenciesBeneathTheImageAndItsOwnManifestAsConfig) {
  std::string base_id = Put("example.com/base", Aci(Manifest("example.com/base"), {{"shared", "base"}, {"b", "b"}}));
  std::string top_manifest = Manifest("example.com/app", R"([{"imageName": "example.com/base", "imageID": ")" +
                                                             base_id + R"(", "labels": [{"name": "version", "value": "1.0"}]}])");
  std::string top_id = Put("example.com/app", Aci(top_manifest, {{"shared", "top"}, {"app", "#!"}}, {{"link", "rootfs/app"}}));

  auto res = Pull("example.com/app");
  ASSERT_TRUE(res.ok()) << res.error().message();
  const ImageRecord& r = res->record;
  ASSERT_EQ(r.layers.size(), 2u);
  EXPECT_EQ(fetch::DigestToAppcId(r.layers[0].digest), base_id);
  EXPECT_EQ(fetch::DigestToAppcId(r.layers[1].digest), top_id);
  EXPECT_EQ(r.layers[1].media_type, fetch::media::kAppcAci);
  // The config is the image's own manifest, not its dependency's (Mesos
  // took imageIds.at(0), the base's).
  EXPECT_EQ(r.config.media_type, kAppcManifestMediaType);
  EXPECT_EQ(r.config.digest, Digest::Of(DigestAlgorithm::kSha512, top_manifest));
  auto rc = RuntimeConfigOf(*store_, r);
  ASSERT_TRUE(rc.ok()) << rc.error().message();
  EXPECT_EQ(rc->entrypoint, std::vector<std::string>{"/app"});
  EXPECT_EQ(r.platform.os, "linux");
  EXPECT_EQ(r.platform.architecture, "amd64");
  auto stored = store_->FindImage(r.key);
  ASSERT_TRUE(stored.ok() && *stored);

  // The layer is the tar under rootfs/: the prefix goes, the manifest and
  // anything else outside rootfs/ are not in it; hardlinks are rewritten.
  auto layer = EnsureLayerIndexed(*store_, r.layers[1]);
  ASSERT_TRUE(layer.ok()) << layer.error().message();
  auto entries = LoadLayerEntries(*store_, *layer);
  ASSERT_TRUE(entries.ok());
  std::vector<std::string> paths;
  for (const auto& e : *entries) paths.push_back(e.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"", "app", "shared", "link"}));
  EXPECT_EQ(entries->back().link_target, "app");
}

TEST_F(AppcPullTest, WrongImageIdRefused) {
  std::string id = Put("example.com/app", Aci(Manifest("example.com/app"), {{"f", "x"}}));
  std::string wrong = "sha512-" + std::string(128, '0');
  auto res = Pull("example.com/app@" + wrong);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code(), Errc::kDigestMismatch);
  EXPECT_NE(res.error().message().find(id), std::string::npos) << res.error().message();
  EXPECT_NE(res.error().message().find(wrong), std::string::npos);
  EXPECT_EQ(res.error().message().find('\n'), std::string::npos);
  auto images = store_->ListImages();
  ASSERT_TRUE(images.ok());
  EXPECT_TRUE(images->empty());
  EXPECT_FALSE(store_->HasBlob(*fetch::AppcIdToDigest(id)));

  auto right = Pull("example.com/app@" + id);
  EXPECT_TRUE(right.ok()) << right.error().message();
}

TEST_F(AppcPullTest, WrongDependencyIdRefused) {
  Put("example.com/base", Aci(Manifest("example.com/base"), {{"f", "x"}}));
  std::string wrong = "sha512-" + std::string(128, 'f');
  Put("example.com/app", Aci(Manifest("example.com/app", R"([{"imageName": "example.com/base", "imageID": ")" +
                                                            wrong + R"(", "labels": [{"name": "version", "value": "1.0"}]}])"),
                             {{"g", "y"}}));
  auto res = Pull("example.com/app");
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code(), Errc::kDigestMismatch) << res.error().message();
  EXPECT_NE(res.error().message().find("example.com/base"), std::string::npos) << res.error().message();
}

TEST_F(AppcPullTest, CycleRefused) {
  Put("example.com/a", Aci(Manifest("example.com/a", R"([{"imageName": "example.com/b", "labels": [{"name": "version", "value": "1.0"}]}])"), {{"a", "a"}}));
  Put("example.com/b", Aci(Manifest("example.com/b", R"([{"imageName": "example.com/a", "labels": [{"name": "version", "value": "1.0"}]}])"), {{"b", "b"}}));
  auto res = Pull("example.com/a");
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().message().find("depends on itself"), std::string::npos) << res.error().message();
}

TEST_F(AppcPullTest, MissingImageNamesTheLocation) {
  auto res = Pull("example.com/nothing");
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code(), Errc::kNotFound);
  EXPECT_NE(res.error().message().find((base_ / "images/example.com/nothing-1.0-linux-amd64.aci").string()),
            std::string::npos)
      << res.error().message();
}

TEST_F(AppcPullTest, RefusesWrongNameLabelsWhitelistAndNoRootfs) {
  Put("example.com/app", Aci(Manifest("example.com/other"), {{"f", "x"}}));
  auto name = Pull("example.com/app");
  ASSERT_FALSE(name.ok());
  EXPECT_NE(name.error().message().find("example.com/other"), std::string::npos) << name.error().message();

  // The file name says freebsd; the manifest linux.
  ASSERT_TRUE(WriteFileAtomic((base_ / "images/example.com/app-1.0-freebsd-amd64.aci").string(),
                              Aci(Manifest("example.com/app"), {{"f", "x"}}))
                  .ok());
  auto os = Pull("example.com/app,os=freebsd");
  ASSERT_FALSE(os.ok());
  EXPECT_NE(os.error().message().find("os=linux"), std::string::npos) << os.error().message();

  Put("example.com/app", Aci(Manifest("example.com/app", "[]", R"(, "pathWhitelist": ["/f"])"), {{"f", "x"}}));
  auto wl = Pull("example.com/app");
  ASSERT_FALSE(wl.ok());
  EXPECT_EQ(wl.error().code(), Errc::kUnsupported);
  EXPECT_NE(wl.error().message().find("pathWhitelist"), std::string::npos);

  std::string t;
  TarFile(t, "manifest", Manifest("example.com/app"));
  t.append(1024, '\0');
  Put("example.com/app", t);
  auto norootfs = Pull("example.com/app");
  ASSERT_FALSE(norootfs.ok());
  EXPECT_NE(norootfs.error().message().find("rootfs"), std::string::npos) << norootfs.error().message();

  Put("example.com/app", Aci(R"({"acKind": "PodManifest", "acVersion": "0.8.11", "name": "example.com/app"})", {{"f", "x"}}));
  auto kind = Pull("example.com/app");
  ASSERT_FALSE(kind.ok());
  EXPECT_NE(kind.error().message().find("acKind"), std::string::npos) << kind.error().message();
}

}  // namespace
}  // namespace ucrfs::index
