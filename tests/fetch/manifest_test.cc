#include "ucrfs/fetch/manifest.h"

#include <sys/utsname.h>

#include <string>

#include <gtest/gtest.h>

namespace ucrfs::fetch {
namespace {

using namespace std::string_literals;

// Removes the first occurrence of `what` from s.
std::string Erase(std::string s, std::string_view what) {
  size_t at = s.find(what);
  EXPECT_NE(at, std::string::npos) << what;
  if (at != std::string::npos) s.erase(at, what.size());
  return s;
}

// A made-up digest: "sha256:" + 64 times c (c a lowercase hex digit).
std::string D(char c) { return "sha256:" + std::string(64, c); }

ImageManifest MustImage(std::string_view body, std::string_view ct) {
  auto r = ParseManifest(body, ct);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
  if (!r.ok()) return {};
  EXPECT_TRUE(std::holds_alternative<ImageManifest>(*r));
  return std::holds_alternative<ImageManifest>(*r) ? std::get<ImageManifest>(*r) : ImageManifest{};
}

ImageIndex MustIndex(std::string_view body, std::string_view ct) {
  auto r = ParseManifest(body, ct);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
  if (!r.ok()) return {};
  EXPECT_TRUE(std::holds_alternative<ImageIndex>(*r));
  return std::holds_alternative<ImageIndex>(*r) ? std::get<ImageIndex>(*r) : ImageIndex{};
}

Error MustFail(std::string_view body, std::string_view ct) {
  auto r = ParseManifest(body, ct);
  EXPECT_FALSE(r.ok()) << "accepted: " << body;
  if (r.ok()) return Error(Errc::kInternal, "parsed");
  EXPECT_EQ(r.error().message().find('\n'), std::string::npos) << r.error().message();
  return r.error();
}

// Mesos DockerSpecTest.ParseV2_2ImageManifest (the Docker registry spec example).
constexpr char kV2_2[] = R"({
  "schemaVersion": 2,
  "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
  "config": {
    "mediaType": "application/vnd.docker.container.image.v1+json",
    "size": 7023,
    "digest": "sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7"
  },
  "layers": [
    {
      "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
      "size": 32654,
      "digest": "sha256:e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f"
    },
    {
      "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
      "size": 16724,
      "digest": "sha256:3c3a4604a545cdc127456d94e421cd355bca5b528f4a9c1905b15da2eb4a4c6b"
    },
    {
      "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
      "size": 73109,
      "digest": "sha256:ec4b8955958665577945c89419d1af06b5f7636b4ac3da7f12184802ad867736"
    }
  ]
})";

TEST(ParseManifestTest, MesosV2_2ImageManifest) {
  ImageManifest m = MustImage(kV2_2, "application/vnd.docker.distribution.manifest.v2+json");
  EXPECT_EQ(m.kind, ManifestKind::kDockerSchema2);
  EXPECT_EQ(m.media_type, media::kDockerManifest);
  ASSERT_TRUE(m.config.has_value());
  EXPECT_EQ(m.config->media_type, media::kDockerConfig);
  EXPECT_EQ(m.config->size, 7023);
  EXPECT_EQ(m.config->digest.str(), "sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7");
  ASSERT_EQ(m.layers.size(), 3u);
  EXPECT_EQ(m.layers[0].media_type, media::kDockerLayerGzip);
  EXPECT_EQ(m.layers[0].size, 32654);
  EXPECT_EQ(m.layers[0].digest.str(), "sha256:e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f");
  EXPECT_EQ(m.layers[1].size, 16724);
  EXPECT_EQ(m.layers[1].digest.str(), "sha256:3c3a4604a545cdc127456d94e421cd355bca5b528f4a9c1905b15da2eb4a4c6b");
  EXPECT_EQ(m.layers[2].size, 73109);
  EXPECT_EQ(m.layers[2].digest.str(), "sha256:ec4b8955958665577945c89419d1af06b5f7636b4ac3da7f12184802ad867736");
  EXPECT_TRUE(m.schema1_config.empty());
}

TEST(ParseManifestTest, OciManifestWithAnnotationsAndForeignUrls) {
  std::string body = R"({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 7023, "digest": ")" +
                     D('1') + R"("},
    "layers": [
      {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 32654, "digest": ")" +
                     D('2') + R"(",
       "annotations": {"containerd.io/snapshot/stargz/toc.digest": ")" +
                     D('3') + R"("}},
      {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "size": 16724,
       "digest": ")" +
                     D('4') + R"(", "urls": ["https://mirror.example.com/blob"]}
    ],
    "annotations": {"com.example.key1": "value1", "com.example.key2": "value2"}
  })";
  ImageManifest m = MustImage(body, "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(m.kind, ManifestKind::kOciManifest);
  ASSERT_EQ(m.layers.size(), 2u);
  EXPECT_EQ(m.layers[0].annotations.at("containerd.io/snapshot/stargz/toc.digest"), D('3'));
  ASSERT_EQ(m.layers[1].urls.size(), 1u);
  EXPECT_EQ(m.layers[1].urls[0], "https://mirror.example.com/blob");
  EXPECT_EQ(m.annotations.at("com.example.key2"), "value2");
}

TEST(ParseManifestTest, ZeroLayersIsValid) {
  std::string body = R"({"schemaVersion": 2, "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                         "size": 2, "digest": ")" +
                     D('a') + R"("}, "layers": []})";
  ImageManifest m = MustImage(body, "");
  EXPECT_EQ(m.kind, ManifestKind::kOciManifest);
  EXPECT_TRUE(m.layers.empty());
}

// nlohmann reports a number too large for a double by out_of_range, not
// parse_error: a one-line kMalformed like any other bad JSON.
TEST(ParseManifestTest, NumbersTooLargeForADoubleAreMalformed) {
  for (std::string_view ct : {std::string_view(), media::kOciManifest, media::kDockerManifest, media::kOciIndex}) {
    Error e = MustFail(R"({"schemaVersion": 2, "size": 1e400})", ct);
    EXPECT_EQ(e.code(), Errc::kMalformed);
    EXPECT_EQ(e.message(), "malformed manifest: invalid JSON: a number out of range");
  }
  auto cfg = ParseImageConfig(R"({"architecture": "amd64", "os": "linux", "created": -5555.0E5375})");
  ASSERT_FALSE(cfg.ok());
  EXPECT_EQ(cfg.error().message(), "malformed image config: invalid JSON: a number out of range");
}

TEST(ParseManifestTest, InvalidImageManifests) {
  const std::string ct(media::kDockerManifest);
  // Mesos ParseInvalidV2_2ImageManifest: no schemaVersion.
  std::string no_version = Erase(kV2_2, R"("schemaVersion": 2,)");
  Error e = MustFail(no_version, ct);
  EXPECT_EQ(e.code(), Errc::kMalformed);
  EXPECT_NE(e.message().find("schemaVersion"), std::string::npos) << e.message();

  std::string v3 = kV2_2;
  v3.replace(v3.find("\"schemaVersion\": 2"), 18, "\"schemaVersion\": 3");
  EXPECT_EQ(MustFail(v3, ct).code(), Errc::kMalformed);

  // Mesos ValidateV2_2ImageManifestLayersNonEmpty: no layers field.
  std::string cfg = R"("config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023,
                       "digest": ")" +
                    D('b') + R"("})";
  e = MustFail(R"({"schemaVersion": 2, )" + cfg + "}", ct);
  EXPECT_EQ(e.code(), Errc::kMalformed);
  EXPECT_EQ(e.message(), "malformed manifest: layers: missing");

  std::string layer =
      R"({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1, "digest": ")" + D('c') + R"("})";
  std::string bad_digest_layer = R"({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1,
                                     "digest": "sha256:xyz"})";
  e = MustFail(
      R"({"schemaVersion": 2, )" + cfg + ", \"layers\": [" + layer + "," + layer + "," + bad_digest_layer + "]}", ct);
  EXPECT_EQ(e.code(), Errc::kMalformed);
  EXPECT_EQ(e.message(), "malformed manifest: layers[2].digest: invalid digest 'sha256:xyz'");

  // Config of the wrong JSON type, missing, or naming a non-config blob.
  e = MustFail(R"({"schemaVersion": 2, "config": "sha256:abc", "layers": []})", ct);
  EXPECT_EQ(e.code(), Errc::kMalformed);
  EXPECT_NE(e.message().find("config"), std::string::npos) << e.message();
  EXPECT_EQ(MustFail(R"({"schemaVersion": 2, "layers": []})", ct).code(), Errc::kMalformed);
  e = MustFail(R"({"schemaVersion": 2, "config": )" + layer + R"(, "layers": []})", ct);
  EXPECT_EQ(e.code(), Errc::kUnsupported);
  EXPECT_NE(e.message().find("rootfs.diff.tar.gzip"), std::string::npos) << e.message();

  // Sizes: required, integral, non-negative.
  std::string neg = R"({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": -1, "digest": ")" +
                    D('c') + R"("})";
  e = MustFail(R"({"schemaVersion": 2, )" + cfg + ", \"layers\": [" + neg + "]}", ct);
  EXPECT_NE(e.message().find("layers[0].size"), std::string::npos) << e.message();
  std::string str_size = R"({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": "1",
                              "digest": ")" +
                         D('c') + R"("})";
  EXPECT_EQ(MustFail(R"({"schemaVersion": 2, )" + cfg + ", \"layers\": [" + str_size + "]}", ct).code(),
            Errc::kMalformed);
  EXPECT_EQ(MustFail(R"({"schemaVersion": 2, )" + cfg + ", \"layers\": {}}", ct).code(), Errc::kMalformed);

  EXPECT_EQ(MustFail("not json", ct).code(), Errc::kMalformed);
  EXPECT_EQ(MustFail("[1, 2]", ct).code(), Errc::kMalformed);
  EXPECT_EQ(MustFail("", ct).code(), Errc::kMalformed);
}

// Mesos DockerSpecTest.ParseV2ImageManifest (the Docker registry spec schema1
// example, with a signature). All four history entries share one v1 id.
std::string MesosSchema1() {
  std::string v1 =
      R"({\"id\":\"2ce2e90b0bc7224de3db1f0d646fe8e2c4dd37f1793928287f6074bc451a57ea\",)"
      R"(\"parent\":\"cf2616975b4a3cba083ca99bc3f0bf25f5f528c3c52be1596b30f60b0b1c37ff\",)"
      R"(\"created\":\"2015-05-06T22:12:23.493433287Z\",\"container\":\"cd9a6d6d4b8ea4b8a2c58e3c78a8d9e2fa5e6dbfa6b3b1e4b1e4c0e1e1e1e1e1\",)"
      R"(\"config\":{\"Cmd\":[\"/bin/sh\"],\"Env\":[\"PATH=/usr/bin\"]},\"architecture\":\"amd64\",\"os\":\"linux\",\"Size\":0})";
  std::string history;
  for (int i = 0; i < 4; ++i) history += std::string(i ? "," : "") + R"({"v1Compatibility": ")" + v1 + "\"}";
  return R"({
   "schemaVersion": 1,
   "name": "dmcgowan/test-image",
   "tag": "latest",
   "architecture": "amd64",
   "fsLayers": [
      {"blobSum": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"blobSum": "sha256:cea0d2071b01b0a79aa4a05ea56ab6fdf3fafa03369d9f4eea8d46ea33c43e5f"},
      {"blobSum": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"blobSum": "sha256:2a7812e636235448785062100bb9103096aa6655a8f6bb9ac9b13fe8290f66df"}
   ],
   "history": [)" +
         history + R"(],
   "signatures": [
      {
         "header": {
            "jwk": {"crv": "P-256", "kid": "LYRA:YAG2:QQKS:376F:QQXY:3UNK:SXH7:K6ES:Y5AU:XUN5:ZLVY:KBYL",
                    "kty": "EC", "x": "Cu_UyxwLgHzE9rvlYSmvVdqYCXY42E9eNhBb0xNv0SQ",
                    "y": "zUsjWJkeKQ5tv7S-hl1Tg71cd-CqnrtiiLxSi6N_yc8"},
            "alg": "ES256"
         },
         "signature": "m3bgdBXZYRQ4ssAbrgj8Kjl7GNgrKQvmCSY-00yzQosKi-8UBrIRrn3Iu5alj82B6u_jNrkGCjEx3TxrfT1rig",
         "protected": "eyJmb3JtYXRMZW5ndGgiOjYwNjMsImZvcm1hdFRhaWwiOiJDbjAiLCJ0aW1lIjoiMjAxNS0wNS0wN1QwMDo0NTowMloifQ"
      }
   ]
})";
}

TEST(ParseManifestTest, MesosV2ImageManifestSchema1) {
  std::string body = MesosSchema1();
  ImageManifest m = MustImage(body, "application/vnd.docker.distribution.manifest.v1+prettyjws");
  EXPECT_EQ(m.kind, ManifestKind::kDockerSchema1);
  EXPECT_EQ(m.media_type, media::kDockerSchema1Signed);
  EXPECT_FALSE(m.config.has_value());
  // One v1 id four times (MESOS-6654): one layer, the base-most entry's blob.
  ASSERT_EQ(m.layers.size(), 1u);
  EXPECT_EQ(m.layers[0].digest.str(), "sha256:2a7812e636235448785062100bb9103096aa6655a8f6bb9ac9b13fe8290f66df");
  EXPECT_EQ(m.layers[0].media_type, media::kDockerLayerGzip);
  EXPECT_EQ(m.layers[0].size, -1);
  auto cfg = ParseImageConfig(m.schema1_config);
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  EXPECT_EQ(cfg->platform.architecture, "amd64");
  EXPECT_EQ(cfg->runtime.cmd, std::vector<std::string>{"/bin/sh"});

  // The same body served as application/json is still schema1, by shape.
  EXPECT_EQ(MustImage(body, "application/json").kind, ManifestKind::kDockerSchema1);
}

std::string Schema1(const std::vector<std::pair<std::string, std::string>>& layers /* blobSum, v1 JSON */) {
  std::string fs, hist;
  for (size_t i = 0; i < layers.size(); ++i) {
    std::string v1 = layers[i].second;
    std::string escaped;
    for (char c : v1) escaped += c == '"' ? "\\\""s : std::string(1, c);
    fs += (i ? "," : "") + R"({"blobSum": ")"s + layers[i].first + "\"}";
    hist += (i ? "," : "") + R"({"v1Compatibility": ")"s + escaped + "\"}";
  }
  return R"({"schemaVersion": 1, "name": "a/b", "tag": "t", "architecture": "amd64", "fsLayers": [)" + fs +
         R"(], "history": [)" + hist + "]}";
}

TEST(ParseManifestTest, Schema1OrdersBaseFirstDropsThrowawayAndDuplicates) {
  // Child first: top (id d), a throwaway, c, base (id a).
  std::string body = Schema1({
      {D('d'), R"({"id":"d","parent":"c","config":{"Cmd":["top"]},"architecture":"arm64","os":"linux"})"},
      {D('e'), R"({"id":"e","parent":"c","throwaway":true})"},
      {D('c'), R"({"id":"c","parent":"a"})"},
      {D('a'), R"({"id":"a"})"},
  });
  ImageManifest m = MustImage(body, "application/vnd.docker.distribution.manifest.v1+json");
  EXPECT_EQ(m.media_type, media::kDockerSchema1);
  ASSERT_EQ(m.layers.size(), 3u);
  EXPECT_EQ(m.layers[0].digest.str(), D('a'));
  EXPECT_EQ(m.layers[1].digest.str(), D('c'));
  EXPECT_EQ(m.layers[2].digest.str(), D('d'));
  EXPECT_NE(m.schema1_config.find("\"top\""), std::string::npos) << m.schema1_config;

  // MESOS-6654: ids [a,a,b,b,b,c] child first.
  std::string dup = Schema1({
      {D('1'), R"({"id":"a"})"},
      {D('2'), R"({"id":"a"})"},
      {D('3'), R"({"id":"b"})"},
      {D('4'), R"({"id":"b"})"},
      {D('5'), R"({"id":"b"})"},
      {D('6'), R"({"id":"c"})"},
  });
  ImageManifest d = MustImage(dup, "");
  ASSERT_EQ(d.layers.size(), 3u);
  EXPECT_EQ(d.layers[0].digest.str(), D('6'));
  EXPECT_EQ(d.layers[1].digest.str(), D('5'));
  EXPECT_EQ(d.layers[2].digest.str(), D('2'));
}

TEST(ParseManifestTest, InvalidSchema1) {
  const std::string ct(media::kDockerSchema1);
  // Mesos ParseInvalidV2ImageManifest: only name/tag/architecture.
  EXPECT_EQ(MustFail(R"({"name": "a/b", "tag": "t", "architecture": "amd64"})", ct).code(), Errc::kMalformed);
  EXPECT_EQ(MustFail(R"({"name": "a/b", "tag": "t", "architecture": "amd64"})", "").code(), Errc::kMalformed);
  // Mesos ValidateV2ImageManifestFsLayersNonEmpty.
  Error e = MustFail(R"({"schemaVersion": 1, "fsLayers": [], "history": []})", ct);
  EXPECT_NE(e.message().find("fsLayers"), std::string::npos) << e.message();
  // Mesos ValidateV2ImageManifestSignaturesNonEmpty: fsLayers but no history.
  e = MustFail(R"({"schemaVersion": 1, "fsLayers": [{"blobSum": ")" + D('a') + R"("}]})", ct);
  EXPECT_NE(e.message().find("history"), std::string::npos) << e.message();
  // Length mismatch.
  std::string two = Schema1({{D('a'), R"({"id":"a"})"}, {D('b'), R"({"id":"b"})"}});
  std::string mismatched = Erase(two, R"({"blobSum": ")" + D('a') + R"("},)");  // drop the first fsLayer
  e = MustFail(mismatched, ct);
  EXPECT_NE(e.message().find("fsLayers has 1 entries but history has 2"), std::string::npos) << e.message();
  // Bad blobSum, v1Compatibility that is not JSON, missing id.
  e = MustFail(Schema1({{"sha256:nothex", R"({"id":"a"})"}}), ct);
  EXPECT_EQ(e.message(), "malformed manifest: fsLayers[0].blobSum: invalid digest 'sha256:nothex'");
  e = MustFail(Schema1({{D('a'), "nope"}}), ct);
  EXPECT_NE(e.message().find("history[0].v1Compatibility"), std::string::npos) << e.message();
  EXPECT_EQ(MustFail(Schema1({{D('a'), R"({"parent":"x"})"}}), ct).code(), Errc::kMalformed);
}

// An OCI index: arm64/v8 first, then amd64, then a BuildKit attestation.
std::string OciIndex() {
  return R"({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
      {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1000, "digest": ")" +
         D('a') + R"(", "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
      {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1001, "digest": ")" +
         D('b') + R"(", "platform": {"architecture": "amd64", "os": "linux"}},
      {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 500, "digest": ")" +
         D('c') + R"(", "platform": {"architecture": "unknown", "os": "unknown"},
       "annotations": {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": ")" +
         D('b') + R"("}}
    ],
    "annotations": {"key1": "value1"}
  })";
}

Platform P(std::string_view s) {
  auto p = Platform::Parse(s);
  EXPECT_TRUE(p.ok()) << s;
  return p.ok() ? *p : Platform{};
}

TEST(SelectPlatformTest, OciIndex) {
  ImageIndex idx = MustIndex(OciIndex(), "application/vnd.oci.image.index.v1+json");
  EXPECT_EQ(idx.kind, ManifestKind::kOciIndex);
  ASSERT_EQ(idx.manifests.size(), 3u);
  EXPECT_EQ(idx.annotations.at("key1"), "value1");
  ASSERT_TRUE(idx.manifests[0].platform.has_value());
  EXPECT_EQ(idx.manifests[0].platform->variant, "v8");  // as written

  auto amd64 = SelectPlatform(idx, P("linux/amd64"));
  ASSERT_TRUE(amd64.ok()) << amd64.error().message();
  EXPECT_EQ(amd64->digest.str(), D('b'));
  EXPECT_EQ(amd64->size, 1001);

  for (const char* want : {"linux/arm64", "linux/arm64/v8", "linux/aarch64"}) {
    auto arm = SelectPlatform(idx, P(want));
    ASSERT_TRUE(arm.ok()) << want;
    EXPECT_EQ(arm->digest.str(), D('a')) << want;
  }

  auto none = SelectPlatform(idx, P("linux/s390x"));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code(), Errc::kNotFound);
  EXPECT_EQ(none.error().message(),
            "no manifest for platform linux/s390x in index (available: linux/arm64/v8, linux/amd64)");

  // The attestation is never chosen, even when asked for its "platform".
  Platform unknown{"unknown", "unknown", "", "", {}};
  EXPECT_FALSE(SelectPlatform(idx, unknown).ok());
  EXPECT_FALSE(SelectPlatform(idx, P("windows/amd64")).ok());
}

// Mesos OCISpecTest.ParseIndex, with the Docker manifest list media types.
TEST(SelectPlatformTest, DockerManifestList) {
  std::string body = R"({
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
    "manifests": [
      {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 7143,
       "digest": "sha256:e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f",
       "platform": {"architecture": "ppc64le", "os": "linux", "os.version": "16.04"}},
      {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 7682,
       "digest": "sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270",
       "platform": {"architecture": "amd64", "os": "linux", "os.features": ["sse4"]}},
      {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 7000,
       "digest": ")" +
                     D('f') + R"(", "platform": {"architecture": "arm", "os": "linux", "variant": "v6"}},
      {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 7001,
       "digest": ")" +
                     D('e') + R"(", "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}}
    ]
  })";
  ImageIndex idx = MustIndex(body, "application/vnd.docker.distribution.manifest.list.v2+json");
  EXPECT_EQ(idx.kind, ManifestKind::kDockerManifestList);
  ASSERT_EQ(idx.manifests.size(), 4u);
  EXPECT_EQ(idx.manifests[0].platform->os_version, "16.04");
  EXPECT_EQ(idx.manifests[1].platform->os_features, std::vector<std::string>{"sse4"});

  auto ppc = SelectPlatform(idx, P("linux/ppc64le"));
  ASSERT_TRUE(ppc.ok());
  EXPECT_EQ(ppc->size, 7143);
  EXPECT_EQ(SelectPlatform(idx, P("linux/x86_64"))->size, 7682);
  EXPECT_EQ(SelectPlatform(idx, P("linux/arm/v7"))->size, 7001);
  EXPECT_EQ(SelectPlatform(idx, P("linux/armhf"))->size, 7001);
  EXPECT_EQ(SelectPlatform(idx, P("linux/arm"))->size, 7000);  // no variant wanted: the first arm
}

TEST(SelectPlatformTest, IndexValidation) {
  const std::string ct(media::kOciIndex);
  EXPECT_EQ(MustFail(R"({"schemaVersion": 2})", ct).message(), "malformed manifest: manifests: missing");
  std::string no_arch =
      R"({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
      "size": 1, "digest": ")" +
      D('a') + R"(", "platform": {"os": "linux"}}]})";
  EXPECT_EQ(MustFail(no_arch, ct).message(), "malformed manifest: manifests[0].platform.architecture: missing");
  // An entry without a platform parses but is never selected.
  std::string bare = R"({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
      "size": 1, "digest": ")" +
                     D('a') + R"("}]})";
  ImageIndex idx = MustIndex(bare, ct);
  auto r = SelectPlatform(idx, P("linux/amd64"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "no manifest for platform linux/amd64 in index (available: none)");
}

TEST(ParseManifestTest, MediaTypeResolution) {
  // Generic Content-Type: the body's mediaType decides.
  EXPECT_EQ(MustImage(kV2_2, "application/json").kind, ManifestKind::kDockerSchema2);
  EXPECT_EQ(MustImage(kV2_2, "text/plain; charset=utf-8").kind, ManifestKind::kDockerSchema2);
  EXPECT_EQ(MustImage(kV2_2, "").kind, ManifestKind::kDockerSchema2);
  // Parameters and case in Content-Type are ignored.
  EXPECT_EQ(MustImage(kV2_2, "Application/vnd.docker.distribution.manifest.v2+json; charset=utf-8").kind,
            ManifestKind::kDockerSchema2);
  // Specific Content-Type contradicted by the body.
  Error e = MustFail(kV2_2, media::kOciManifest);
  EXPECT_EQ(e.code(), Errc::kMalformed);
  EXPECT_NE(e.message().find("contradicts"), std::string::npos) << e.message();
  EXPECT_EQ(MustFail(OciIndex(), media::kDockerManifestList).code(), Errc::kMalformed);

  // No mediaType anywhere: the shape decides.
  std::string index_no_type = Erase(OciIndex(), R"("mediaType": "application/vnd.oci.image.index.v1+json",)");
  EXPECT_EQ(MustIndex(index_no_type, "application/octet-stream").kind, ManifestKind::kOciIndex);
  std::string manifest_no_type =
      Erase(kV2_2, R"("mediaType": "application/vnd.docker.distribution.manifest.v2+json",)");
  EXPECT_EQ(MustImage(manifest_no_type, "").kind, ManifestKind::kOciManifest);
  // ... and the Content-Type, when it is specific.
  EXPECT_EQ(MustImage(manifest_no_type, media::kDockerManifest).kind, ManifestKind::kDockerSchema2);

  // Unknown media types.
  EXPECT_EQ(MustFail(kV2_2, "text/html").code(), Errc::kMalformed);  // contradicts the body
  EXPECT_EQ(MustFail(manifest_no_type, "text/html").code(), Errc::kUnsupported);
  std::string foreign = R"({"schemaVersion": 2, "mediaType": "application/vnd.example.thing+json"})";
  e = MustFail(foreign, "application/json");
  EXPECT_EQ(e.code(), Errc::kUnsupported);
  EXPECT_NE(e.message().find("application/vnd.example.thing+json"), std::string::npos);
  EXPECT_EQ(MustFail(R"({"schemaVersion": 2, "mediaType": 5})", "").code(), Errc::kMalformed);
  EXPECT_EQ(MustFail(R"({"schemaVersion": 2})", "").code(), Errc::kMalformed);
}

TEST(ManifestAcceptHeaderTest, ListsEveryManifestType) {
  std::string h = media::ManifestAcceptHeader();
  for (std::string_view t : {media::kOciIndex, media::kDockerManifestList, media::kOciManifest, media::kDockerManifest,
                             media::kDockerSchema1Signed, media::kDockerSchema1}) {
    EXPECT_NE(h.find(t), std::string::npos) << t;
  }
  EXPECT_LT(h.find(media::kOciIndex), h.find(media::kOciManifest));
  EXPECT_EQ(h.find(media::kOciConfig), std::string::npos);
  EXPECT_EQ(h.find('\n'), std::string::npos);
}

// Base64url without padding, written independently of the code under test.
std::string B64Url(std::string_view in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += kAlphabet[(v >> s) & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    for (int s = 18; s >= 6; s -= 6) out += kAlphabet[(v >> s) & 63];
  }
  return out;
}

// A signed schema1 manifest the way libtrust builds it: the payload with its
// closing "\n}" replaced by the signatures member.
struct SignedSchema1 {
  std::string payload;
  std::string body;
};

SignedSchema1 BuildSigned(const std::string& protected_override = "") {
  SignedSchema1 s;
  s.payload =
      "{\n   \"schemaVersion\": 1,\n   \"name\": \"a/b\",\n   \"tag\": \"latest\",\n"
      "   \"architecture\": \"amd64\",\n   \"fsLayers\": [\n      {\n         \"blobSum\": \"" +
      D('a') +
      "\"\n      }\n   ],\n   \"history\": [\n      {\n         \"v1Compatibility\": "
      "\"{\\\"id\\\":\\\"a\\\",\\\"architecture\\\":\\\"amd64\\\"}\"\n      }\n   ]\n}";
  size_t format_length = s.payload.size() - 2;  // everything before "\n}"
  std::string header = R"({"formatLength":)" + std::to_string(format_length) + R"(,"formatTail":")" +
                       B64Url(s.payload.substr(format_length)) + R"(","time":"2024-01-01T00:00:00Z"})";
  std::string protected_b64 = protected_override.empty() ? B64Url(header) : protected_override;
  s.body = s.payload.substr(0, format_length) +
           ",\n   \"signatures\": [\n      {\n         \"header\": {\"alg\": \"ES256\"},\n"
           "         \"signature\": \"c2lnbmF0dXJl\",\n         \"protected\": \"" +
           protected_b64 + "\"\n      }\n   ]\n}";
  return s;
}

TEST(ManifestDigestTest, SignedSchema1DigestsThePayload) {
  SignedSchema1 s = BuildSigned();
  ASSERT_EQ(s.payload.substr(s.payload.size() - 2), "\n}");
  auto d = ManifestDigest(s.body);
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ(*d, Digest::Sha256Of(s.payload));
  EXPECT_NE(*d, Digest::Sha256Of(s.body));
  auto d512 = ManifestDigest(s.body, DigestAlgorithm::kSha512);
  ASSERT_TRUE(d512.ok());
  EXPECT_EQ(*d512, Digest::Of(DigestAlgorithm::kSha512, s.payload));
  // The signed body parses as schema1 too.
  ImageManifest m = MustImage(s.body, media::kDockerSchema1Signed);
  ASSERT_EQ(m.layers.size(), 1u);
  EXPECT_EQ(m.layers[0].digest.str(), D('a'));
}

TEST(ManifestDigestTest, UnsignedIsTheBodyHash) {
  EXPECT_EQ(*ManifestDigest(kV2_2), Digest::Sha256Of(kV2_2));
  SignedSchema1 s = BuildSigned();
  EXPECT_EQ(*ManifestDigest(s.payload), Digest::Sha256Of(s.payload));
  // A "signatures" member on a non-schema1 document does not change anything.
  std::string other = R"({"schemaVersion": 2, "signatures": [{"protected": "x"}]})";
  EXPECT_EQ(*ManifestDigest(other), Digest::Sha256Of(other));
  EXPECT_EQ(*ManifestDigest("not json \"signatures\""), Digest::Sha256Of("not json \"signatures\""));
}

TEST(ManifestDigestTest, BrokenProtectedHeader) {
  for (const std::string& prot :
       {std::string("!!!"), B64Url("not json"), B64Url(R"({"formatTail":"Cn0"})"),
        B64Url(R"({"formatLength":999999,"formatTail":"Cn0"})"), B64Url(R"({"formatLength":10,"formatTail":"*"})")}) {
    auto d = ManifestDigest(BuildSigned(prot).body);
    ASSERT_FALSE(d.ok()) << prot;
    EXPECT_EQ(d.error().code(), Errc::kMalformed);
  }
}

// Mesos OCISpecTest.ParseConfiguration (the OCI image-spec config example).
constexpr char kOciConfig[] = R"({
  "created": "2015-10-31T22:22:56.015925234Z",
  "author": "Alyssa P. Hacker <alyspdev@example.com>",
  "architecture": "amd64",
  "os": "linux",
  "config": {
    "User": "alice",
    "ExposedPorts": {"8080/tcp": {}},
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FOO=oci_is_a", "BAR=well_written_spec"],
    "Entrypoint": ["/bin/my-app-binary"],
    "Cmd": ["--foreground", "--config", "/etc/my-app.d/default.cfg"],
    "Volumes": {"/var/job-result-data": {}, "/var/log/my-app-logs": {}},
    "WorkingDir": "/home/alice",
    "Labels": {"com.example.project.git.url": "https://example.com/project.git",
               "com.example.project.git.commit": "45a939b2999782a3f005621a8d0f29aa387e1d6b"},
    "StopSignal": "SIGTERM"
  },
  "rootfs": {
    "diff_ids": ["sha256:c6f988f4874bb0add23a778f753c65efe992244e148a1d2ec2a8b664fb66bbd1",
                 "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"],
    "type": "layers"
  },
  "history": [
    {"created": "2015-10-31T22:22:54.690851953Z", "created_by": "/bin/sh -c #(nop) ADD file:a3bc1e842b69636f9df5256c49c5374fb4eef1e281fe3f282c65fb853ee171c5 in /"},
    {"created": "2015-10-31T22:22:55.613815829Z", "created_by": "/bin/sh -c #(nop) CMD [\"sh\"]", "empty_layer": true}
  ]
})";

TEST(ParseImageConfigTest, MesosParseConfiguration) {
  auto c = ParseImageConfig(kOciConfig);
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->created, "2015-10-31T22:22:56.015925234Z");
  EXPECT_EQ(c->platform.architecture, "amd64");
  EXPECT_EQ(c->platform.os, "linux");
  const RuntimeConfig& r = c->runtime;
  EXPECT_EQ(r.user, "alice");
  EXPECT_EQ(r.exposed_ports, std::vector<std::string>{"8080/tcp"});
  ASSERT_EQ(r.env.size(), 3u);
  EXPECT_EQ(r.env[1], "FOO=oci_is_a");
  EXPECT_EQ(r.entrypoint, std::vector<std::string>{"/bin/my-app-binary"});
  EXPECT_TRUE(r.has_entrypoint);
  EXPECT_EQ(r.cmd, (std::vector<std::string>{"--foreground", "--config", "/etc/my-app.d/default.cfg"}));
  EXPECT_EQ(r.volumes, (std::vector<std::string>{"/var/job-result-data", "/var/log/my-app-logs"}));
  EXPECT_EQ(r.working_dir, "/home/alice");
  EXPECT_EQ(r.labels.at("com.example.project.git.commit"), "45a939b2999782a3f005621a8d0f29aa387e1d6b");
  EXPECT_EQ(r.stop_signal, "SIGTERM");
  ASSERT_EQ(c->diff_ids.size(), 2u);
  EXPECT_EQ(c->diff_ids[1].str(), "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef");
  EXPECT_EQ(c->config["User"], "alice");
}

// Mesos DockerSpecTest.ParseV1ImageManifest: a Docker v1 image JSON.
TEST(ParseImageConfigTest, DockerV1ImageJson) {
  auto c = ParseImageConfig(R"({
    "id": "6d7d8b8a0ec1cd0cb52d2ed6c5d6e3c5de1c1a8e1b3b8e7f6d7f1c1a1b1c1d1e",
    "parent": "cfa753dfea5e68a24366dfba16e6edf573daa447abf65bc11619c1a98a3aff54",
    "created": "2016-03-08T00:00:00Z",
    "container": "f1d6f9f5b6dbcd6a0ba9f3fa1ad6e3e8e9f4f4d4c4b4a494847464544434241",
    "container_config": {"Entrypoint": ["./bin/start"], "Cmd": ["/bin/sh", "-c", "#(nop) CMD [\"sh\"]"],
                         "WorkingDir": "/marathon",
                         "Labels": {"com.nvidia.caffe.version": "0.14", "com.nvidia.digits.version": "3.0"}},
    "docker_version": "1.8.2",
    "config": {"Hostname": "", "Entrypoint": null, "Env": null, "Cmd": ["sh"], "WorkingDir": "",
               "Labels": {"com.nvidia.cuda.version": "7.5", "com.nvidia.volumes.needed": "nvidia_driver"},
               "Volumes": null, "ExposedPorts": null, "User": ""},
    "architecture": "amd64",
    "os": "linux",
    "Size": 0
  })");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->runtime.cmd, std::vector<std::string>{"sh"});
  EXPECT_TRUE(c->runtime.entrypoint.empty());
  EXPECT_TRUE(c->runtime.has_entrypoint);  // explicit null
  EXPECT_EQ(c->runtime.labels.at("com.nvidia.cuda.version"), "7.5");
  EXPECT_EQ(c->runtime.labels.at("com.nvidia.volumes.needed"), "nvidia_driver");
  EXPECT_EQ(c->runtime.working_dir, "");  // container_config is not the runtime config
  EXPECT_TRUE(c->diff_ids.empty());
}

TEST(ParseImageConfigTest, NullAndAbsentFields) {
  auto c = ParseImageConfig(R"({"architecture": "arm64", "variant": "v8", "os": "linux",
                                "config": {"Cmd": null, "Env": ["A=1"]}})");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_TRUE(c->runtime.has_cmd);
  EXPECT_TRUE(c->runtime.cmd.empty());
  EXPECT_FALSE(c->runtime.has_entrypoint);
  EXPECT_EQ(c->platform.variant, "v8");

  auto bare = ParseImageConfig(R"({"rootfs": null, "config": null, "created": null})");
  ASSERT_TRUE(bare.ok()) << bare.error().message();
  EXPECT_TRUE(bare->config.is_null());
  EXPECT_FALSE(bare->runtime.has_cmd);
  EXPECT_EQ(bare->created, "");
}

TEST(ParseImageConfigTest, WrongTypesAreRejected) {
  struct Case {
    const char* json;
    const char* path;
  };
  const Case cases[] = {
      {R"({"config": {"Env": "PATH=/bin"}})", "config.Env"},
      {R"({"config": {"Env": ["A=1", 2]}})", "config.Env[1]"},
      {R"({"config": {"Cmd": "sh"}})", "config.Cmd"},
      {R"({"config": {"Entrypoint": {"a": 1}}})", "config.Entrypoint"},
      {R"({"config": {"Labels": {"a": 1}}})", "config.Labels.a"},
      {R"({"config": {"Volumes": ["/data"]}})", "config.Volumes"},
      {R"({"config": {"WorkingDir": 7}})", "config.WorkingDir"},
      {R"({"config": []})", "config"},
      {R"({"architecture": 5})", "architecture"},
      {R"({"rootfs": {"type": "squashfs", "diff_ids": []}})", "rootfs.type"},
      {R"({"rootfs": {"diff_ids": []}})", "rootfs.type"},
      {R"({"rootfs": {"type": "layers", "diff_ids": ["sha256:zz"]}})", "rootfs.diff_ids[0]"},
      {R"({"rootfs": {"type": "layers", "diff_ids": "x"}})", "rootfs.diff_ids"},
  };
  for (const Case& c : cases) {
    auto r = ParseImageConfig(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.error().code(), Errc::kMalformed) << c.json;
    EXPECT_NE(r.error().message().find(std::string("malformed image config: ") + c.path + ":"), std::string::npos)
        << r.error().message();
  }
  EXPECT_FALSE(ParseImageConfig("[]").ok());
  EXPECT_FALSE(ParseImageConfig("{").ok());
}

TEST(LayerCompressionTest, EveryMediaType) {
  struct Case {
    std::string_view type;
    Compression want;
  };
  const Case cases[] = {
      {media::kOciLayerTar, Compression::kNone},
      {media::kOciLayerNdTar, Compression::kNone},
      {media::kDockerLayerTar, Compression::kNone},
      {media::kOciLayerGzip, Compression::kGzip},
      {media::kOciLayerNdGzip, Compression::kGzip},
      {media::kDockerLayerGzip, Compression::kGzip},
      {media::kDockerLayerForeignGzip, Compression::kGzip},
      {media::kOciLayerZstd, Compression::kZstd},
      {media::kOciLayerNdZstd, Compression::kZstd},
      {media::kDockerLayerZstd, Compression::kZstd},
  };
  for (const Case& c : cases) {
    auto r = LayerCompression(c.type);
    ASSERT_TRUE(r.ok()) << c.type;
    EXPECT_EQ(*r, c.want) << c.type;
  }
  for (std::string_view bad :
       {media::kOciConfig, media::kDockerConfig, media::kOciManifest,
        std::string_view("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"), std::string_view("")}) {
    auto r = LayerCompression(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code(), Errc::kUnsupported);
  }
}

TEST(PlatformTest, ParseNormalizes) {
  struct Case {
    const char* in;
    const char* out;
  };
  const Case cases[] = {
      {"linux/amd64", "linux/amd64"},   {"linux/x86_64", "linux/amd64"},    {"linux/x86-64", "linux/amd64"},
      {"linux/aarch64", "linux/arm64"}, {"linux/arm64/v8", "linux/arm64"},  {"linux/arm64/v9", "linux/arm64/v9"},
      {"linux/armhf", "linux/arm/v7"},  {"linux/armel", "linux/arm/v6"},    {"linux/arm/7", "linux/arm/v7"},
      {"linux/arm", "linux/arm"},       {"linux/i386", "linux/386"},        {"linux/i686", "linux/386"},
      {"Linux/AMD64", "linux/amd64"},   {"linux/ppc64le", "linux/ppc64le"}, {"windows/amd64", "windows/amd64"},
  };
  for (const Case& c : cases) {
    auto p = Platform::Parse(c.in);
    ASSERT_TRUE(p.ok()) << c.in;
    EXPECT_EQ(p->str(), c.out) << c.in;
  }
  Platform arm = P("linux/armhf");
  EXPECT_EQ(arm.architecture, "arm");
  EXPECT_EQ(arm.variant, "v7");
  for (const char* bad : {"", "linux", "linux/", "/amd64", "linux//v7", "linux/arm/v7/x"}) {
    auto p = Platform::Parse(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.error().code(), Errc::kInvalidArgument);
  }
}

TEST(PlatformTest, Matches) {
  EXPECT_TRUE(P("linux/arm64").Matches(Platform{"linux", "arm64", "v8", "", {}}));
  EXPECT_TRUE((Platform{"linux", "arm64", "v8", "", {}}).Matches(Platform{"linux", "aarch64", "", "", {}}));
  EXPECT_TRUE(P("linux/arm").Matches(Platform{"linux", "arm", "v6", "", {}}));
  EXPECT_FALSE(P("linux/arm/v7").Matches(Platform{"linux", "arm", "v6", "", {}}));
  EXPECT_FALSE(P("linux/amd64").Matches(Platform{"windows", "amd64", "", "", {}}));
  EXPECT_FALSE(P("linux/amd64").Matches(Platform{"linux", "arm64", "", "", {}}));
  EXPECT_TRUE(P("linux/amd64").Matches(Platform{"linux", "x86_64", "", "", {}}));
}

TEST(PlatformTest, HostIsUnameNormalized) {
  Platform h = Platform::Host();
  EXPECT_EQ(h.os, "linux");
  struct utsname u {};
  ASSERT_EQ(::uname(&u), 0);
  std::string machine = u.machine;
  if (machine == "x86_64") {
    EXPECT_EQ(h.str(), "linux/amd64");
  } else if (machine == "aarch64") {
    EXPECT_EQ(h.str(), "linux/arm64");
  } else if (machine == "armv7l") {
    EXPECT_EQ(h.str(), "linux/arm/v7");
  }
  EXPECT_FALSE(h.architecture.empty());
  // Whatever the machine, the host matches itself through Parse.
  EXPECT_TRUE(P(h.str()).Matches(h));
}

}  // namespace
}  // namespace ucrfs::fetch
