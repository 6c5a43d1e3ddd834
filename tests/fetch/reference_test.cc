#include "ucrfs/fetch/reference.h"

#include <filesystem>
#include <optional>
#include <string>

#include <gtest/gtest.h>

namespace ucrfs::fetch {
namespace {

constexpr char kDigest[] = "sha256:bc8813ea7b3603864987522f02a76101c17ad122e1c46d790efc0fca78ca7bfb";

Reference MustParse(std::string_view s) {
  auto r = Reference::Parse(s);
  EXPECT_TRUE(r.ok()) << s << ": " << (r.ok() ? "" : r.error().message());
  return r.ok() ? *r : Reference{};
}

// Mesos DockerSpecTest.ParseImageReference.
struct RefCase {
  const char* input;
  const char* registry;
  const char* repository;
  const char* tag;
  const char* digest;
};

class ParseImageReferenceTest : public ::testing::TestWithParam<RefCase> {};

TEST_P(ParseImageReferenceTest, MatchesMesosTable) {
  const RefCase& c = GetParam();
  Reference r = MustParse(c.input);
  EXPECT_EQ(r.registry, c.registry);
  EXPECT_EQ(r.repository, c.repository);
  EXPECT_EQ(r.tag, c.tag);
  EXPECT_EQ(r.digest, c.digest);
}

INSTANTIATE_TEST_SUITE_P(
    Mesos, ParseImageReferenceTest,
    ::testing::Values(
        RefCase{"library/busybox", "", "library/busybox", "", ""}, RefCase{"busybox", "", "busybox", "", ""},
        RefCase{"library/busybox:tag", "", "library/busybox", "tag", ""},
        RefCase{"library/busybox@sha256:bc8813ea7b3603864987522f02a76101c17ad122e1c46d790efc0fca78ca7bfb", "",
                "library/busybox", "", kDigest},
        RefCase{"registry.io/library/busybox", "registry.io", "library/busybox", "", ""},
        RefCase{"registry.io/library/busybox:tag", "registry.io", "library/busybox", "tag", ""},
        RefCase{"registry.io:80/library/busybox:tag", "registry.io:80", "library/busybox", "tag", ""},
        RefCase{
            "registry.io:80/library/busybox@sha256:bc8813ea7b3603864987522f02a76101c17ad122e1c46d790efc0fca78ca7bfb",
            "registry.io:80", "library/busybox", "", kDigest},
        // Beyond the Mesos table.
        RefCase{"localhost/foo", "localhost", "foo", "", ""},
        RefCase{"localhost:5000/foo", "localhost:5000", "foo", "", ""},
        RefCase{"host:5000/repo", "host:5000", "repo", "", ""},
        RefCase{"127.0.0.1:5000/x:tag", "127.0.0.1:5000", "x", "tag", ""},
        RefCase{"[::1]:5000/a/b:v1", "[::1]:5000", "a/b", "v1", ""},
        RefCase{"a/b/c/d:1.2-rc_3", "", "a/b/c/d", "1.2-rc_3", ""},
        RefCase{"my-org/my__repo.name:Latest", "", "my-org/my__repo.name", "Latest", ""},
        RefCase{"busybox:tag@sha256:bc8813ea7b3603864987522f02a76101c17ad122e1c46d790efc0fca78ca7bfb", "", "busybox",
                "tag", kDigest}));

TEST(ReferenceTest, InvalidReferencesAreRejected) {
  const char* bad[] = {
      "",                                              // empty
      "BusyBox",                                       // uppercase repository
      "library/BusyBox:tag",                           // uppercase component
      "busybox@sha256:abc@sha256:def",                 // two '@'
      "busybox@sha256:xyz",                            // bad digest
      "busybox@md5:d41d8cd98f00b204e9800998ecf8427e",  // unknown algorithm
      "busybox@",                                      // empty digest
      "busybox:",                                      // empty tag
      "busybox:-tag",                                  // tag starting with '-'
      "busybox:ta/g@sha256:bc88",                      // junk
      "registry.io/",                                  // no repository
      "registry.io//busybox",                          // empty component
      "a__-b",                                         // bad separator
      "-busybox",                                      // leading separator
      "busybox-",                                      // trailing separator
      "invalid_host:x80/busybox",                      // non-numeric port
      "host:99999/busybox",                            // port out of range
      "under_score.io/busybox",                        // '_' in a registry host
      "busy box",                                      // space
  };
  for (const char* s : bad) {
    auto r = Reference::Parse(s);
    ASSERT_FALSE(r.ok()) << "accepted '" << s << "'";
    EXPECT_EQ(r.error().code(), Errc::kInvalidArgument) << s;
    EXPECT_EQ(r.error().message().find('\n'), std::string::npos);
  }
  auto r = Reference::Parse("busybox@sha256:a@sha256:b");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("'@'"), std::string::npos) << r.error().message();
}

TEST(ReferenceTest, TagLengthLimit) {
  EXPECT_TRUE(Reference::Parse("busybox:" + std::string(128, 'a')).ok());
  EXPECT_FALSE(Reference::Parse("busybox:" + std::string(129, 'a')).ok());
  EXPECT_FALSE(Reference::Parse(std::string(256, 'a')).ok());
}

TEST(ReferenceTest, StrIsMesosStringify) {
  EXPECT_EQ(MustParse("busybox").str(), "busybox");
  EXPECT_EQ(MustParse("library/busybox:tag").str(), "library/busybox:tag");
  EXPECT_EQ(MustParse("registry.io:80/library/busybox:tag").str(), "registry.io:80/library/busybox:tag");
  EXPECT_EQ(MustParse(std::string("busybox:tag@") + kDigest).str(), std::string("busybox@") + kDigest);
}

TEST(ReferenceTest, NormalizedAppliesDockerDefaults) {
  EXPECT_EQ(MustParse("busybox").Normalized().str(), "registry-1.docker.io/library/busybox:latest");
  EXPECT_EQ(MustParse("docker.io/foo/bar").Normalized().str(), "registry-1.docker.io/foo/bar:latest");
  EXPECT_EQ(MustParse("docker.io/busybox:1.36").Normalized().str(), "registry-1.docker.io/library/busybox:1.36");
  EXPECT_EQ(MustParse("index.docker.io/busybox").Normalized().str(), "registry-1.docker.io/library/busybox:latest");
  EXPECT_EQ(MustParse("library/busybox").Normalized().str(), "registry-1.docker.io/library/busybox:latest");
  EXPECT_EQ(MustParse("localhost:5000/x").Normalized().str(), "localhost:5000/x:latest");
  // library/ is a Docker Hub convention only.
  EXPECT_EQ(MustParse("quay.io/busybox").Normalized().str(), "quay.io/busybox:latest");
  EXPECT_EQ(MustParse("busybox").Normalized("mirror.example.com:5000").str(), "mirror.example.com:5000/busybox:latest");
  EXPECT_EQ(MustParse("busybox").Normalized("").registry, "registry-1.docker.io");

  Reference d = MustParse(std::string("busybox@") + kDigest).Normalized();
  EXPECT_EQ(d.tag, "");
  EXPECT_EQ(d.digest, kDigest);
  EXPECT_EQ(d.repository, "library/busybox");
  EXPECT_EQ(d.str(), std::string("registry-1.docker.io/library/busybox@") + kDigest);
}

TEST(ReferenceTest, ManifestReference) {
  EXPECT_EQ(MustParse("busybox").ManifestReference(), "latest");
  EXPECT_EQ(MustParse("busybox:1.0").ManifestReference(), "1.0");
  EXPECT_EQ(MustParse(std::string("busybox:1.0@") + kDigest).ManifestReference(), kDigest);
}

// Mesos DockerSpecTest.GetRegistrySpec.
TEST(RegistryEndpointTest, MesosGetRegistrySpec) {
  struct Case {
    const char* in;
    std::optional<uint16_t> port;
    const char* scheme;
    const char* host;
  };
  const Case ok[] = {
      {"", std::nullopt, "https", ""},
      {"index.docker.io", std::nullopt, "https", "index.docker.io"},
      {"localhost:80", 80, "http", "localhost"},
      {"registry-1.docker.io:443", 443, "https", "registry-1.docker.io"},
      {"127.0.0.1:443", 443, "https", "127.0.0.1"},
      {"127.0.0.1:1234", 1234, "http", "127.0.0.1"},
      {"localhost:1234", 1234, "http", "localhost"},
      {"registry.example.com:5000", 5000, "https", "registry.example.com"},
      {"[::1]:5000", 5000, "http", "[::1]"},
  };
  for (const Case& c : ok) {
    auto ep = ParseRegistryEndpoint(c.in);
    ASSERT_TRUE(ep.ok()) << c.in << ": " << ep.error().message();
    EXPECT_EQ(ep->port, c.port) << c.in;
    EXPECT_EQ(ep->scheme, c.scheme) << c.in;
    EXPECT_EQ(ep->host, c.host) << c.in;
  }
  for (const char* bad : {":", "invalid_host:x80", "invalid_port:80:80", "host:", "host:0", "host:65536", "host:-1"}) {
    auto ep = ParseRegistryEndpoint(bad);
    ASSERT_FALSE(ep.ok()) << bad;
    EXPECT_EQ(ep.error().code(), Errc::kInvalidArgument);
  }
}

TEST(RegistryEndpointTest, BaseUrl) {
  EXPECT_EQ(ParseRegistryEndpoint("localhost:5000")->BaseUrl(), "http://localhost:5000");
  EXPECT_EQ(ParseRegistryEndpoint("registry-1.docker.io")->BaseUrl(), "https://registry-1.docker.io");
  EXPECT_EQ(ParseRegistryEndpoint("quay.io:443")->BaseUrl(), "https://quay.io:443");
}

ImageRef MustParseImage(std::string_view s) {
  auto r = ImageRef::Parse(s);
  EXPECT_TRUE(r.ok()) << s << ": " << (r.ok() ? "" : r.error().message());
  return r.ok() ? *r : ImageRef{};
}

TEST(ImageRefTest, DockerTransport) {
  ImageRef a = MustParseImage("docker://busybox:1.36");
  EXPECT_EQ(a.transport, Transport::kDocker);
  EXPECT_EQ(a.reference.repository, "busybox");
  EXPECT_EQ(a.reference.tag, "1.36");
  EXPECT_EQ(a.str(), "docker://registry-1.docker.io/library/busybox:1.36");

  ImageRef bare = MustParseImage("busybox");
  EXPECT_EQ(bare.transport, Transport::kDocker);
  EXPECT_EQ(bare.str(), "docker://registry-1.docker.io/library/busybox:latest");
  // Equivalent spellings share one canonical key.
  EXPECT_EQ(MustParseImage("docker.io/library/busybox:latest").str(), bare.str());

  for (const char* s : {"localhost:5000/foo", "127.0.0.1:5000/x:tag"}) {
    ImageRef r = MustParseImage(s);
    EXPECT_EQ(r.transport, Transport::kDocker) << s;
    EXPECT_EQ(r.str(), std::string("docker://") + s + (r.reference.tag.empty() ? ":latest" : "")) << s;
  }
  EXPECT_EQ(MustParseImage("127.0.0.1:5000/x:tag").reference.registry, "127.0.0.1:5000");

  ImageRef dig = MustParseImage(std::string("docker://busybox:1@") + kDigest);
  EXPECT_EQ(dig.str(), std::string("docker://registry-1.docker.io/library/busybox@") + kDigest);
}

TEST(ImageRefTest, OciLayout) {
  ImageRef r = MustParseImage("oci:/var/images/alpine:3.19");
  EXPECT_EQ(r.transport, Transport::kOciLayout);
  EXPECT_EQ(r.path, "/var/images/alpine");
  EXPECT_EQ(r.oci_tag, "3.19");
  EXPECT_EQ(r.str(), "oci:/var/images/alpine:3.19");

  ImageRef no_tag = MustParseImage("oci:/var/images/../images/alpine/");
  EXPECT_EQ(no_tag.oci_tag, "");
  EXPECT_EQ(no_tag.str(), "oci:/var/images/alpine");

  ImageRef rel = MustParseImage("oci:layout:v1");
  EXPECT_EQ(rel.path, "layout");
  std::string abs = (std::filesystem::current_path() / "layout").lexically_normal().string();
  EXPECT_EQ(rel.str(), "oci:" + abs + ":v1");

  EXPECT_FALSE(ImageRef::Parse("oci:").ok());
  EXPECT_FALSE(ImageRef::Parse("oci::tag").ok());
  EXPECT_FALSE(ImageRef::Parse("oci:/dir:").ok());
}

TEST(ImageRefTest, DockerArchive) {
  ImageRef r = MustParseImage("docker-archive:/tmp/busybox.tar");
  EXPECT_EQ(r.transport, Transport::kDockerArchive);
  EXPECT_EQ(r.path, "/tmp/busybox.tar");
  EXPECT_FALSE(r.has_reference);
  EXPECT_EQ(r.str(), "docker-archive:/tmp/busybox.tar");

  ImageRef with_ref = MustParseImage("docker-archive:/tmp/a.tar:localhost:5000/foo:tag");
  EXPECT_EQ(with_ref.path, "/tmp/a.tar");
  ASSERT_TRUE(with_ref.has_reference);
  EXPECT_EQ(with_ref.reference.registry, "localhost:5000");
  EXPECT_EQ(with_ref.reference.repository, "foo");
  EXPECT_EQ(with_ref.reference.tag, "tag");
  EXPECT_EQ(with_ref.str(), "docker-archive:/tmp/a.tar:localhost:5000/foo:tag");

  EXPECT_FALSE(ImageRef::Parse("docker-archive:").ok());
  EXPECT_FALSE(ImageRef::Parse("docker-archive:/tmp/a.tar:BAD").ok());
}

TEST(ImageRefTest, UnknownTransportsAreRejected) {
  auto r = ImageRef::Parse("http://example.com/busybox");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
  EXPECT_NE(r.error().message().find("unknown transport"), std::string::npos) << r.error().message();
  EXPECT_FALSE(ImageRef::Parse("foo://bar").ok());

  auto dir = ImageRef::Parse("dir:/tmp/image");
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.error().code(), Errc::kUnsupported);

  EXPECT_FALSE(ImageRef::Parse("docker://").ok());
  EXPECT_FALSE(ImageRef::Parse("docker://UPPER").ok());
}

}  // namespace
}  // namespace ucrfs::fetch
