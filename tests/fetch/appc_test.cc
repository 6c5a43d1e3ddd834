#include "ucrfs/fetch/appc.h"

#include <unistd.h>

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "ucrfs/fetch/reference.h"
#include "ucrfs/fetch/source.h"

namespace ucrfs::fetch {
namespace {

const std::string kId = "sha512-" + std::string(128, 'a');

AppcRef MustParse(std::string_view s) {
  auto r = AppcRef::Parse(s);
  EXPECT_TRUE(r.ok()) << s << ": " << (r.ok() ? "" : r.error().message());
  return r.ok() ? *r : AppcRef{};
}

TEST(AppcRefTest, ParsesNameLabelsAndId) {
  AppcRef r = MustParse("example.com/reduce-worker,version=1.0.0,os=linux,arch=amd64");
  EXPECT_EQ(r.name, "example.com/reduce-worker");
  EXPECT_EQ(r.labels.size(), 3u);
  EXPECT_EQ(r.labels.at("version"), "1.0.0");
  EXPECT_EQ(r.labels.at("os"), "linux");
  EXPECT_EQ(r.labels.at("arch"), "amd64");
  EXPECT_TRUE(r.id.empty());
  // Labels in name order, so one image has one key however it was typed.
  EXPECT_EQ(r.str(), "example.com/reduce-worker,arch=amd64,os=linux,version=1.0.0");

  AppcRef bare = MustParse("busybox");
  EXPECT_EQ(bare.name, "busybox");
  EXPECT_TRUE(bare.labels.empty());

  AppcRef withid = MustParse("127.0.0.1:8080/x/img,version=2@" + kId);
  EXPECT_EQ(withid.name, "127.0.0.1:8080/x/img");
  EXPECT_EQ(withid.id, kId);
  EXPECT_EQ(withid.str(), "127.0.0.1:8080/x/img,version=2@" + kId);
}

TEST(AppcRefTest, RefusesBadReferences) {
  for (const char* bad : {"", ",version=1", "Busybox", "a b", "-x", "x-", "a//b", "a/./b", "a/../b",
                          "x,version", "x,version=", "x,version=1,version=2", "x,version=../../etc",
                          "x,version=a/b", "x,Os=linux", "x@sha512-abc", "x@sha256-" "0000",
                          "x,version=1@sha512-"}) {
    auto r = AppcRef::Parse(bad);
    EXPECT_FALSE(r.ok()) << "'" << bad << "' parsed";
    if (!r.ok()) {
      EXPECT_EQ(r.error().message().find('\n'), std::string::npos);
    }
  }
  auto upper = AppcRef::Parse("x@sha512-" + std::string(128, 'A'));
  EXPECT_FALSE(upper.ok());
}

TEST(AppcRefTest, ImageRefTransportAndKey) {
  auto r = ImageRef::Parse("appc:example.com/app,version=1");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->transport, Transport::kAppc);
  EXPECT_EQ(r->appc.name, "example.com/app");
  SourceOptions opts;
  opts.appc_platform = *Platform::Parse("linux/arm64");
  auto eff = EffectiveRef(*r, opts);
  ASSERT_TRUE(eff.ok());
  EXPECT_EQ(eff->str(), "appc:example.com/app,arch=aarch64,os=linux,version=1");

  auto bad = ImageRef::Parse("appc:Bad");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("appc:Bad"), std::string::npos) << bad.error().message();
  // Docker references are untouched.
  auto docker = ImageRef::Parse("busybox");
  ASSERT_TRUE(docker.ok());
  EXPECT_EQ(docker->str(), "docker://registry-1.docker.io/library/busybox:latest");
}

TEST(AppcRefTest, DefaultsUseAppcSpelling) {
  AppcRef r = MustParse("x,os=freebsd");
  AppcRef d = WithAppcDefaults(r, *Platform::Parse("linux/amd64"));
  EXPECT_EQ(d.labels.at("version"), "latest");
  EXPECT_EQ(d.labels.at("os"), "freebsd");  // given labels win
  EXPECT_EQ(d.labels.at("arch"), "amd64");
  EXPECT_EQ(AppcArch(*Platform::Parse("linux/arm64")), "aarch64");
  EXPECT_EQ(AppcArch(*Platform::Parse("linux/386")), "i386");
  EXPECT_EQ(AppcArch(*Platform::Parse("linux/arm/v7")), "armv7l");
  EXPECT_EQ(AppcArch(*Platform::Parse("linux/arm/v6")), "armv6l");
  EXPECT_EQ(AppcArch(*Platform::Parse("linux/ppc64le")), "ppc64le");
}

TEST(AppcDiscoveryTest, BuildsLocations) {
  AppcRef r = MustParse("example.com/reduce-worker,version=1.0.0,os=linux,arch=amd64");
  // Mesos' example (mesos-provisioner §1.8).
  EXPECT_EQ(*SimpleDiscoveryLocation("/tmp/appc/", r), "/tmp/appc/example.com/reduce-worker-1.0.0-linux-amd64.aci");
  EXPECT_EQ(*SimpleDiscoveryLocation("file:///tmp/appc/", r),
            "/tmp/appc/example.com/reduce-worker-1.0.0-linux-amd64.aci");
  EXPECT_EQ(*SimpleDiscoveryLocation("https://", r), "https://example.com/reduce-worker-1.0.0-linux-amd64.aci");
  EXPECT_EQ(*SimpleDiscoveryLocation("http://127.0.0.1:8080/images/", r),
            "http://127.0.0.1:8080/images/example.com/reduce-worker-1.0.0-linux-amd64.aci");
  auto rel = SimpleDiscoveryLocation("images/", r);
  ASSERT_TRUE(rel.ok());
  EXPECT_EQ(*rel, std::filesystem::current_path().string() + "/images/example.com/reduce-worker-1.0.0-linux-amd64.aci");

  for (const char* bad : {"ftp://host/", "hdfs://x/", "file://relative/", ""}) {
    auto l = SimpleDiscoveryLocation(bad, r);
    EXPECT_FALSE(l.ok()) << bad;
  }
  auto noarch = SimpleDiscoveryLocation("/tmp/", MustParse("x,version=1,os=linux"));
  ASSERT_FALSE(noarch.ok());
  EXPECT_NE(noarch.error().message().find("arch"), std::string::npos);
}

TEST(AppcManifestTest, ParsesDependenciesAndLabels) {
  auto m = ParseAppcManifest(R"({
    "acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/app",
    "labels": [{"name": "version", "value": "1.0"}, {"name": "os", "value": "linux"}],
    "dependencies": [
      {"imageName": "example.com/base", "imageID": ")" + kId + R"(",
       "labels": [{"name": "version", "value": "2"}]},
      {"imageName": "example.com/tools"}
    ],
    "app": {"exec": ["/bin/sh"], "user": "0", "group": "0"}
  })");
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_EQ(m->name, "example.com/app");
  EXPECT_EQ(m->labels.at("version"), "1.0");
  ASSERT_EQ(m->dependencies.size(), 2u);
  EXPECT_EQ(m->dependencies[0].image_name, "example.com/base");
  EXPECT_EQ(m->dependencies[0].image_id, kId);
  EXPECT_EQ(m->dependencies[0].labels.at("version"), "2");
  EXPECT_EQ(m->dependencies[1].image_name, "example.com/tools");
  EXPECT_TRUE(m->dependencies[1].image_id.empty());
  EXPECT_TRUE(m->path_whitelist.empty());
}

TEST(AppcManifestTest, Refusals) {
  struct Case {
    std::string body;
    const char* mentions;
  };
  const std::string head = R"("acVersion": "0.8.11", "name": "x")";
  Case cases[] = {
      {R"({"acKind": "PodManifest", )" + head + "}", "acKind"},
      {R"({"acKind": "ImageManifest", )" + head + R"(, "app": {"user": 1e400}})", "a number out of range"},
      {"{" + head + "}", "acKind"},
      {R"({"acKind": "ImageManifest", "name": "x"})", "acVersion"},
      {R"({"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "Bad Name"})", "name"},
      {R"({"acKind": "ImageManifest", )" + head + R"(, "dependencies": {"imageName": "y"}})", "dependencies"},
      {R"({"acKind": "ImageManifest", )" + head + R"(, "dependencies": [{"imageID": ")" + kId + R"("}]})",
       "imageName"},
      {R"({"acKind": "ImageManifest", )" + head + R"(, "dependencies": [{"imageName": "y", "imageID": "sha256-00"}]})",
       "imageID"},
      {R"({"acKind": "ImageManifest", )" + head + R"(, "dependencies": [{"imageName": 7}]})", "imageName"},
      {R"({"acKind": "ImageManifest", )" + head + R"(, "dependencies": ["y"]})", "dependencies[0]"},
      {R"({"acKind": "ImageManifest", )" + head + R"(, "labels": [{"name": "version"}]})", "labels[0]"},
      {R"({"acKind": "ImageManifest", )" + head + R"(, "labels": [{"name": "os", "value": "../x"}]})", "labels[0]"},
      {"not json", "appc manifest"},
      {"[]", "appc manifest"},
  };
  for (const auto& c : cases) {
    auto m = ParseAppcManifest(c.body);
    ASSERT_FALSE(m.ok()) << c.body;
    EXPECT_EQ(m.error().code(), Errc::kMalformed) << c.body;
    EXPECT_NE(m.error().message().find(c.mentions), std::string::npos) << m.error().message();
    EXPECT_EQ(m.error().message().find('\n'), std::string::npos);
  }
}

TEST(AppcIdTest, RoundTrips) {
  auto d = AppcIdToDigest(kId);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->algorithm(), DigestAlgorithm::kSha512);
  EXPECT_EQ(DigestToAppcId(*d), kId);
  EXPECT_FALSE(AppcIdToDigest("sha512-abc").ok());
}

}  // namespace
}  // namespace ucrfs::fetch
