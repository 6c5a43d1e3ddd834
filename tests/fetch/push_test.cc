// Pushing artifacts and reading manifests by tag, against Debian's real
// docker-registry (distribution 2.8) started on loopback for each suite, and
// against a scripted HTTP server for what a well-behaved registry never does
// (a failed upload, a wrong Docker-Content-Digest, a token service).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/test_util.h"
#include "http.h"
#include "ucrfs/common/base64.h"
#include "ucrfs/common/file.h"
#include "ucrfs/fetch/push.h"
#include "ucrfs/fetch/source.h"

extern char** environ;

namespace ucrfs::fetch {
namespace {

using harness::TempDir;
using harness::WriteBytes;

constexpr const char* kRegistryBin = "/usr/bin/docker-registry";
constexpr std::string_view kIndexConfigType = "application/vnd.ucrfs.index.config.v1+json";
constexpr std::string_view kLayerIndexType = "application/vnd.ucrfs.layer-index.v1+zstd";

// A TCP port on 127.0.0.1 that nothing listens on right now.
uint16_t FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ADD_FAILURE() << "cannot bind a loopback port";
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

// Runs a command and returns its stdout, or nullopt if it failed.
std::optional<std::string> Capture(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return std::nullopt;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return std::nullopt;
  return out;
}

Descriptor Desc(std::string_view media_type, std::string_view data) {
  Descriptor d;
  d.media_type = std::string(media_type);
  d.digest = Digest::Sha256Of(data);
  d.size = static_cast<int64_t>(data.size());
  return d;
}

PushBlob Blob(std::string_view media_type, std::string data) {
  return PushBlob{Desc(media_type, data), std::move(data)};
}

nlohmann::json DescJson(const Descriptor& d) {
  return {{"mediaType", d.media_type}, {"digest", d.digest.str()}, {"size", d.size}};
}

// An OCI image manifest over config + layers, with an optional subject.
std::string ManifestJson(const Descriptor& config, const std::vector<PushBlob>& layers,
                         const std::optional<Descriptor>& subject = std::nullopt) {
  nlohmann::json j = {{"schemaVersion", 2},
                      {"mediaType", std::string(media::kOciManifest)},
                      {"config", DescJson(config)},
                      {"layers", nlohmann::json::array()}};
  for (const auto& l : layers) j["layers"].push_back(DescJson(l.desc));
  if (subject) j["subject"] = DescJson(*subject);
  return j.dump();
}

ImageRef Ref(const std::string& s) {
  auto r = ImageRef::Parse(s);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
  return r.ok() ? *r : ImageRef{};
}

SourceOptions FastOptions() {
  SourceOptions o;
  o.max_attempts = 3;
  o.retry_base_delay_ms = 10;
  o.retry_max_delay_ms = 50;
  o.connect_timeout_s = 5;
  return o;
}

DockerConfig ConfigWith(const std::string& registry, const std::string& user, const std::string& password) {
  std::string json = nlohmann::json{{"auths", {{registry, {{"auth", Base64Encode(user + ":" + password)}}}}}}.dump();
  auto c = DockerConfig::Parse(json);
  EXPECT_TRUE(c.ok());
  return c.ok() ? *c : DockerConfig{};
}

// ---------------------------------------------------------------- registry

// docker-registry serve on 127.0.0.1:<free port>, filesystem storage in a
// temporary directory, optionally behind htpasswd Basic auth.
class RealRegistry {
 public:
  ~RealRegistry() { Stop(); }

  static bool Available() { return ::access(kRegistryBin, X_OK) == 0; }

  // Starts the registry and waits until /v2/ answers. An empty string on
  // success, else why not.
  std::string Start(const std::string& htpasswd_file = "") {
    for (int attempt = 0; attempt < 3; ++attempt) {
      port_ = FreePort();
      std::string cfg = dir_ / "config.yml";
      WriteBytes(cfg, ConfigYaml(htpasswd_file));
      std::string log = dir_ / "registry.log";
      posix_spawn_file_actions_t fa;
      posix_spawn_file_actions_init(&fa);
      posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
      posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      posix_spawn_file_actions_adddup2(&fa, 1, 2);
      std::vector<std::string> args = {kRegistryBin, "serve", cfg};
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      int rc = ::posix_spawn(&pid_, kRegistryBin, &fa, nullptr, argv.data(), environ);
      posix_spawn_file_actions_destroy(&fa);
      if (rc != 0) {
        pid_ = -1;
        return fmt::format("posix_spawn {}: {}", kRegistryBin, std::strerror(rc));
      }
      if (WaitReady()) return "";
      bool exited = Reaped();
      Stop();
      // A registry that exited lost the free port to someone else: try another.
      if (!exited) break;
    }
    auto log = Capture("tail -n 20 " + dir_ / "registry.log");
    return "docker-registry did not come up; its log ends:\n" + log.value_or("");
  }

  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  std::string addr() const { return fmt::format("127.0.0.1:{}", port_); }
  const TempDir& dir() const { return dir_; }

 private:
  std::string ConfigYaml(const std::string& htpasswd_file) const {
    std::string y = fmt::format(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        "storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n"
        "http:\n  addr: 127.0.0.1:{}\n  secret: ucrfs-registry-test-secret\n",
        dir_ / "storage", port_);
    if (!htpasswd_file.empty()) {
      y += fmt::format("auth:\n  htpasswd:\n    realm: ucrfs-test\n    path: {}\n", htpasswd_file);
    }
    return y;
  }

  // Whether the child has exited (and reaps it).
  bool Reaped() {
    if (pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return true;
    }
    return false;
  }

  bool WaitReady() {
    HttpClient http;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      if (Reaped()) return false;
      HttpRequest req;
      req.url = fmt::format("http://{}/v2/", addr());
      req.connect_timeout_s = 2;
      req.total_timeout_s = 5;
      auto r = http.Perform(req, nullptr, 1 << 16);
      if (r.ok() && (r->status == 200 || r->status == 401)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  TempDir dir_{"ucrfs-registry"};
  pid_t pid_ = -1;
  uint16_t port_ = 0;
};

#define SKIP_WITHOUT_REGISTRY()                                                                              \
  do {                                                                                                       \
    if (!RealRegistry::Available()) {                                                                        \
      std::fprintf(stderr, "*** SKIPPED: %s is missing (apt-get install docker-registry); registry push "   \
                           "tests did not run ***\n", kRegistryBin);                                          \
      GTEST_SKIP() << kRegistryBin << " is missing (apt-get install docker-registry): registry push tests "  \
                      "did not run";                                                                         \
    }                                                                                                        \
  } while (0)

// An image (config + one layer) and an index artifact whose subject it is.
struct Fixture {
  std::vector<PushBlob> image_blobs;
  std::string image_manifest;
  std::vector<PushBlob> artifact_blobs;
  std::string artifact_manifest;
  std::string artifact_tag;

  Fixture() {
    PushBlob config = Blob(media::kOciConfig,
                           R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}})");
    PushBlob layer = Blob(media::kOciLayerGzip, std::string("\x1f\x8b not really a layer", 22));
    image_manifest = ManifestJson(config.desc, {layer});
    image_blobs = {config, layer};

    Descriptor subject = Desc(media::kOciManifest, image_manifest);
    PushBlob index_config = Blob(kIndexConfigType, R"({"version":1,"layers":2})");
    std::vector<PushBlob> layers = {Blob(kLayerIndexType, std::string("index of layer 0\0\x01\x02", 20)),
                                    Blob(kLayerIndexType, "index of layer 1")};
    artifact_manifest = ManifestJson(index_config.desc, layers, subject);
    artifact_blobs = {index_config, layers[0], layers[1]};
    artifact_tag = fmt::format("sha256-{}.ucrfs", subject.digest.hex());
  }
};

class RegistryPushTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_REGISTRY();
    std::string err = registry_.Start();
    ASSERT_EQ(err, "");
  }

  std::string RefTo(const std::string& repo_tag) const { return registry_.addr() + "/" + repo_tag; }

  RealRegistry registry_;
  Fixture f_;
};

// Everything the artifact test needs: the image first, then the artifact.
Result<Digest> PushBoth(const ImageRef& ref, const SourceOptions& opts, const Fixture& f) {
  UCRFS_ASSIGN(Digest image, PushArtifact(ref, opts, f.image_blobs, f.image_manifest,
                                          std::string(media::kOciManifest), "v1"));
  EXPECT_EQ(image, Digest::Sha256Of(f.image_manifest));
  return PushArtifact(ref, opts, f.artifact_blobs, f.artifact_manifest, std::string(media::kOciManifest),
                      f.artifact_tag);
}

TEST_F(RegistryPushTest, PushedArtifactReadsBackByTag) {
  ImageRef ref = Ref(RefTo("ucrfs/app:v1"));
  auto pushed = PushBoth(ref, FastOptions(), f_);
  ASSERT_TRUE(pushed.ok()) << pushed.error().message();
  EXPECT_EQ(*pushed, Digest::Sha256Of(f_.artifact_manifest));

  auto source = OpenSource(ref, FastOptions());
  ASSERT_TRUE(source.ok()) << source.error().message();
  auto root = (*source)->GetRootManifest();
  ASSERT_TRUE(root.ok()) << root.error().message();
  EXPECT_EQ(root->body, f_.image_manifest);

  auto tagged = (*source)->GetTaggedManifest(f_.artifact_tag);
  ASSERT_TRUE(tagged.ok()) << tagged.error().message();
  ASSERT_TRUE(tagged->has_value());
  EXPECT_EQ((*tagged)->body, f_.artifact_manifest);
  EXPECT_EQ((*tagged)->digest, *pushed);
  EXPECT_EQ((*tagged)->media_type, media::kOciManifest);

  // The artifact's blobs are in the repository, byte for byte.
  for (const auto& b : f_.artifact_blobs) {
    auto got = (*source)->GetBlobRange(b.desc, 0, b.data.size());
    ASSERT_TRUE(got.ok()) << got.error().message();
    EXPECT_EQ(*got, b.data);
  }
}

TEST_F(RegistryPushTest, PushingAgainSucceeds) {
  ImageRef ref = Ref(RefTo("ucrfs/app:v1"));
  auto first = PushBoth(ref, FastOptions(), f_);
  ASSERT_TRUE(first.ok()) << first.error().message();
  auto again = PushBoth(ref, FastOptions(), f_);
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(*again, *first);
}

TEST_F(RegistryPushTest, AbsentTagOrRepositoryIsNullopt) {
  ImageRef ref = Ref(RefTo("ucrfs/app:v1"));
  auto pushed = PushBoth(ref, FastOptions(), f_);
  ASSERT_TRUE(pushed.ok()) << pushed.error().message();
  auto source = OpenSource(ref, FastOptions());
  ASSERT_TRUE(source.ok()) << source.error().message();
  auto absent = (*source)->GetTaggedManifest("sha256-0000.ucrfs");
  ASSERT_TRUE(absent.ok()) << absent.error().message();
  EXPECT_FALSE(absent->has_value());

  // NAME_UNKNOWN: nothing was ever pushed to this repository.
  auto other = OpenSource(Ref(RefTo("ucrfs/never-pushed:v1")), FastOptions());
  ASSERT_TRUE(other.ok()) << other.error().message();
  auto none = (*other)->GetTaggedManifest(f_.artifact_tag);
  ASSERT_TRUE(none.ok()) << none.error().message();
  EXPECT_FALSE(none->has_value());

  auto bad = (*source)->GetTaggedManifest("../v1");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kInvalidArgument);
}

TEST_F(RegistryPushTest, ManifestReferringToAMissingBlobIsRefusedByTheRegistry) {
  ImageRef ref = Ref(RefTo("ucrfs/app:v1"));
  // The layers are not pushed: the registry must refuse the manifest.
  std::vector<PushBlob> config_only = {f_.artifact_blobs[0]};
  auto r = PushArtifact(ref, FastOptions(), config_only, f_.artifact_manifest, std::string(media::kOciManifest),
                        "incomplete");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find(registry_.addr() + "/ucrfs/app:incomplete"), std::string::npos)
      << r.error().message();
  EXPECT_EQ(r.error().message().find('\n'), std::string::npos);
}

class RegistryAuthTest : public ::testing::Test {
 protected:
  static constexpr const char* kUser = "ucrfs-user";
  static constexpr const char* kPassword = "S3cret-Pw-71c9e";

  void SetUp() override {
    SKIP_WITHOUT_REGISTRY();
    if (::access("/usr/bin/htpasswd", X_OK) != 0) {
      GTEST_SKIP() << "/usr/bin/htpasswd is missing (apt-get install apache2-utils): Basic auth tests did not run";
    }
    auto line = Capture(fmt::format("/usr/bin/htpasswd -Bbn {} {}", kUser, kPassword));
    ASSERT_TRUE(line.has_value()) << "htpasswd failed";
    WriteBytes(dir_ / "htpasswd", *line);
    std::string err = registry_.Start(dir_ / "htpasswd");
    ASSERT_EQ(err, "");
  }

  SourceOptions WithCredentials(const std::string& password) const {
    SourceOptions o = FastOptions();
    o.docker_config = ConfigWith(registry_.addr(), kUser, password);
    return o;
  }

  void ExpectCleanFailure(const Error& e, const std::string& password) const {
    const std::string& m = e.message();
    EXPECT_EQ(e.code(), Errc::kUnauthorized) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    EXPECT_NE(m.find(registry_.addr()), std::string::npos) << m;
    EXPECT_EQ(m.find(password), std::string::npos) << m;
    EXPECT_EQ(m.find(Base64Encode(std::string(kUser) + ":" + password)), std::string::npos) << m;
  }

  TempDir dir_{"ucrfs-auth"};
  RealRegistry registry_;
  Fixture f_;
};

TEST_F(RegistryAuthTest, PushWithCredentialsFromDockerConfig) {
  ImageRef ref = Ref(registry_.addr() + "/ucrfs/private:v1");
  auto pushed = PushBoth(ref, WithCredentials(kPassword), f_);
  ASSERT_TRUE(pushed.ok()) << pushed.error().message();
  auto source = OpenSource(ref, WithCredentials(kPassword));
  ASSERT_TRUE(source.ok()) << source.error().message();
  auto tagged = (*source)->GetTaggedManifest(f_.artifact_tag);
  ASSERT_TRUE(tagged.ok()) << tagged.error().message();
  ASSERT_TRUE(tagged->has_value());
  EXPECT_EQ((*tagged)->body, f_.artifact_manifest);
}

TEST_F(RegistryAuthTest, WrongPasswordFailsWithoutShowingIt) {
  const std::string wrong = "Wr0ng-Pw-5a0d3";
  ImageRef ref = Ref(registry_.addr() + "/ucrfs/private:v1");
  auto r = PushArtifact(ref, WithCredentials(wrong), f_.image_blobs, f_.image_manifest,
                        std::string(media::kOciManifest), "v1");
  ASSERT_FALSE(r.ok());
  ExpectCleanFailure(r.error(), wrong);

  // Reading by tag fails the same way; it is not "no such tag".
  auto source = OpenSource(ref, WithCredentials(wrong));
  ASSERT_TRUE(source.ok()) << source.error().message();
  auto tagged = (*source)->GetTaggedManifest("v1");
  ASSERT_FALSE(tagged.ok());
  ExpectCleanFailure(tagged.error(), wrong);
}

TEST_F(RegistryAuthTest, NoCredentialsFails) {
  ImageRef ref = Ref(registry_.addr() + "/ucrfs/private:v1");
  auto r = PushArtifact(ref, FastOptions(), f_.image_blobs, f_.image_manifest, std::string(media::kOciManifest),
                        "v1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kUnauthorized) << r.error().message();
  EXPECT_EQ(r.error().message().find('\n'), std::string::npos);
}

// ---------------------------------------------------------------- no registry needed

TEST(PushTest, BlobNotMatchingItsDescriptorIsRefusedBeforeSending) {
  // Nothing listens there: a request would fail as kNetwork.
  ImageRef ref = Ref(fmt::format("127.0.0.1:{}/ucrfs/app:v1", FreePort()));
  Fixture f;

  std::vector<PushBlob> wrong_digest = f.artifact_blobs;
  wrong_digest[1].data[0] ^= 1;
  auto r = PushArtifact(ref, FastOptions(), wrong_digest, f.artifact_manifest, std::string(media::kOciManifest),
                        f.artifact_tag);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kDigestMismatch) << r.error().message();
  EXPECT_NE(r.error().message().find(f.artifact_blobs[1].desc.digest.str()), std::string::npos);

  std::vector<PushBlob> wrong_size = f.artifact_blobs;
  wrong_size[2].desc.size += 1;
  r = PushArtifact(ref, FastOptions(), wrong_size, f.artifact_manifest, std::string(media::kOciManifest),
                   f.artifact_tag);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument) << r.error().message();

  r = PushArtifact(ref, FastOptions(), f.artifact_blobs, f.artifact_manifest, std::string(media::kOciManifest),
                   "not/a/tag");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument) << r.error().message();

  r = PushArtifact(ref, FastOptions(), f.artifact_blobs, f.artifact_manifest, "text/plain\r\nX-Injected: 1",
                   f.artifact_tag);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument) << r.error().message();
}

TEST(PushTest, UnreachableRegistryFailsNamingIt) {
  std::string addr = fmt::format("127.0.0.1:{}", FreePort());
  Fixture f;
  SourceOptions o = FastOptions();
  o.max_attempts = 2;
  auto r = PushArtifact(Ref(addr + "/ucrfs/app:v1"), o, f.image_blobs, f.image_manifest,
                        std::string(media::kOciManifest), "v1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kNetwork) << r.error().message();
  EXPECT_NE(r.error().message().find(addr), std::string::npos) << r.error().message();
  EXPECT_EQ(r.error().message().find('\n'), std::string::npos) << r.error().message();
}

TEST(PushTest, OnlyRegistryReferencesCanBePushedTo) {
  Fixture f;
  for (const char* s : {"oci:/tmp/ucrfs-no-such-layout:v1", "docker-archive:/tmp/ucrfs-no-such.tar"}) {
    auto r = PushArtifact(Ref(s), FastOptions(), f.image_blobs, f.image_manifest, std::string(media::kOciManifest),
                          "v1");
    ASSERT_FALSE(r.ok()) << s;
    EXPECT_EQ(r.error().code(), Errc::kUnsupported) << r.error().message();
    EXPECT_NE(r.error().message().find("needs an image in a registry"), std::string::npos) << r.error().message();
  }
  // A bare name under --docker-registry DIR is an archive too.
  TempDir dir("ucrfs-archives");
  WriteBytes(dir / "app:v1.tar", "");
  SourceOptions o = FastOptions();
  o.archive_dir = dir.path();
  auto r = PushArtifact(Ref("app:v1"), o, f.image_blobs, f.image_manifest, std::string(media::kOciManifest), "v1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kUnsupported) << r.error().message();
}

// A two-image OCI layout: "v1" (an image) and the artifact under its tag.
class OciLayoutTaggedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(dir_ / "blobs/sha256");
    WriteBytes(dir_ / "oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
    nlohmann::json index = {{"schemaVersion", 2}, {"manifests", nlohmann::json::array()}};
    auto add = [&](const std::string& manifest, const std::string& name) {
      Descriptor d = Desc(media::kOciManifest, manifest);
      WriteBytes(dir_ / ("blobs/sha256/" + d.digest.hex()), manifest);
      nlohmann::json e = DescJson(d);
      e["annotations"] = {{"org.opencontainers.image.ref.name", name}};
      index["manifests"].push_back(e);
    };
    add(f_.image_manifest, "v1");
    add(f_.artifact_manifest, f_.artifact_tag);
    for (const auto* blobs : {&f_.image_blobs, &f_.artifact_blobs}) {
      for (const auto& b : *blobs) WriteBytes(dir_ / ("blobs/sha256/" + b.desc.digest.hex()), b.data);
    }
    WriteBytes(dir_ / "index.json", index.dump());
  }

  TempDir dir_{"ucrfs-layout"};
  Fixture f_;
};

TEST_F(OciLayoutTaggedTest, FindsRefNameAndNotAnUnknownOne) {
  auto source = OpenSource(Ref("oci:" + dir_.path() + ":v1"), SourceOptions{});
  ASSERT_TRUE(source.ok()) << source.error().message();
  auto tagged = (*source)->GetTaggedManifest(f_.artifact_tag);
  ASSERT_TRUE(tagged.ok()) << tagged.error().message();
  ASSERT_TRUE(tagged->has_value());
  EXPECT_EQ((*tagged)->body, f_.artifact_manifest);
  EXPECT_EQ((*tagged)->digest, Digest::Sha256Of(f_.artifact_manifest));
  EXPECT_EQ((*tagged)->media_type, media::kOciManifest);

  auto absent = (*source)->GetTaggedManifest("sha256-0000.ucrfs");
  ASSERT_TRUE(absent.ok()) << absent.error().message();
  EXPECT_FALSE(absent->has_value());
}

TEST_F(OciLayoutTaggedTest, TamperedManifestIsAnError) {
  auto source = OpenSource(Ref("oci:" + dir_.path() + ":v1"), SourceOptions{});
  ASSERT_TRUE(source.ok()) << source.error().message();
  std::string tampered = f_.artifact_manifest;
  tampered.back() = ' ';
  WriteBytes(dir_ / ("blobs/sha256/" + Digest::Sha256Of(f_.artifact_manifest).hex()), tampered);
  auto tagged = (*source)->GetTaggedManifest(f_.artifact_tag);
  ASSERT_FALSE(tagged.ok());
  EXPECT_EQ(tagged.error().code(), Errc::kDigestMismatch) << tagged.error().message();
}

TEST(DockerArchiveTaggedTest, HasNoTags) {
  TempDir dir("ucrfs-archive");
  std::string layer_dir = dir / "layer";
  std::filesystem::create_directories(layer_dir);
  WriteBytes(layer_dir + "/hello", "hello\n");
  ASSERT_EQ(harness::Sh(fmt::format("tar -C {} -cf {} hello", layer_dir, dir / "layer.tar")), 0);
  auto layer = ReadFile(dir / "layer.tar");
  ASSERT_TRUE(layer.ok());
  WriteBytes(dir / "config.json",
             nlohmann::json{{"architecture", "amd64"},
                            {"os", "linux"},
                            {"rootfs", {{"type", "layers"}, {"diff_ids", {Digest::Sha256Of(*layer).str()}}}}}
                 .dump());
  WriteBytes(dir / "manifest.json", R"([{"Config":"config.json","RepoTags":["app:v1"],"Layers":["layer.tar"]}])");
  ASSERT_EQ(harness::Sh(fmt::format("tar -C {} -cf {} manifest.json config.json layer.tar", dir.path(),
                                    dir / "app.tar")),
            0);
  auto source = OpenSource(Ref("docker-archive:" + dir / "app.tar"), SourceOptions{});
  ASSERT_TRUE(source.ok()) << source.error().message();
  auto tagged = (*source)->GetTaggedManifest("v1");
  ASSERT_TRUE(tagged.ok()) << tagged.error().message();
  EXPECT_FALSE(tagged->has_value());
}

// ---------------------------------------------------------------- scripted server

struct SeenRequest {
  std::string method;
  std::string target;  // path and query
  std::map<std::string, std::string> headers;  // lowercased names
  std::string body;
};

struct Reply {
  int status = 200;
  std::vector<std::string> headers;
  std::string body;
  // Sends the body's first `split` bytes, then calls `between`, then the rest.
  size_t split = std::string::npos;
  std::function<void()> between;
};

// An HTTP/1.1 server on 127.0.0.1 answering each request on its own
// connection with what `handler` says, and recording what it was asked.
class ScriptedServer {
 public:
  explicit ScriptedServer(std::function<Reply(const SeenRequest&)> handler) : handler_(std::move(handler)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ADD_FAILURE() << "cannot listen on loopback";
    }
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Loop(); });
  }
  ~ScriptedServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }

  std::string addr() const { return fmt::format("127.0.0.1:{}", port_); }
  std::vector<SeenRequest> seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  void Loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      Serve(c);
      ::close(c);
    }
  }

  void Serve(int c) {
    std::string in;
    char buf[8192];
    size_t end;
    while ((end = in.find("\r\n\r\n")) == std::string::npos) {
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      in.append(buf, static_cast<size_t>(n));
    }
    SeenRequest req;
    std::string head = in.substr(0, end);
    size_t line_end = head.find("\r\n");
    std::string first = head.substr(0, line_end);
    req.method = first.substr(0, first.find(' '));
    req.target = first.substr(req.method.size() + 1, first.rfind(' ') - req.method.size() - 1);
    for (size_t p = line_end; p != std::string::npos && p < head.size();) {
      size_t q = head.find("\r\n", p + 2);
      std::string h = head.substr(p + 2, q == std::string::npos ? std::string::npos : q - p - 2);
      auto colon = h.find(':');
      if (colon != std::string::npos) {
        std::string name = h.substr(0, colon);
        for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        req.headers[name] = h.substr(h.find_first_not_of(' ', colon + 1));
      }
      p = q;
    }
    if (req.headers.count("expect")) {
      std::string cont = "HTTP/1.1 100 Continue\r\n\r\n";
      (void)!::send(c, cont.data(), cont.size(), MSG_NOSIGNAL);
    }
    req.body = in.substr(end + 4);
    size_t want = req.headers.count("content-length") ? std::stoul(req.headers["content-length"]) : 0;
    while (req.body.size() < want) {
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      req.body.append(buf, static_cast<size_t>(n));
    }
    Reply r = handler_(req);
    {
      std::lock_guard lock(mu_);
      seen_.push_back(req);
    }
    std::string out = fmt::format("HTTP/1.1 {} X\r\nConnection: close\r\n", r.status);
    for (const auto& h : r.headers) out += h + "\r\n";
    out += fmt::format("Content-Length: {}\r\n", r.body.size());
    out += "\r\n";
    std::string rest;
    if (req.method != "HEAD") {
      size_t split = std::min(r.split, r.body.size());
      out += r.body.substr(0, split);
      rest = r.body.substr(split);
    }
    (void)!::send(c, out.data(), out.size(), MSG_NOSIGNAL);
    if (r.between) r.between();
    if (!rest.empty()) (void)!::send(c, rest.data(), rest.size(), MSG_NOSIGNAL);
  }

  std::function<Reply(const SeenRequest&)> handler_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<SeenRequest> seen_;
};

// What a compliant registry says, plus a hook to misbehave.
Reply CompliantRegistry(const SeenRequest& req, const std::string& addr, int& uploads, int fail_puts,
                        const std::string& present_digest) {
  if (req.target == "/v2/") return {200};
  if (req.method == "HEAD") {
    bool present = !present_digest.empty() && req.target.find(present_digest) != std::string::npos;
    return {present ? 200 : 404};
  }
  if (req.method == "POST") {
    ++uploads;
    // Absolute, with a query already, as distribution sends it.
    return {202, {fmt::format("Location: http://{}/v2/ucrfs/app/blobs/uploads/u{}?_state=s%3D{}", addr, uploads,
                              uploads)}};
  }
  if (req.method == "PUT" && req.target.find("/blobs/uploads/") != std::string::npos) {
    if (uploads <= fail_puts) return {503, {}, R"({"errors":[{"code":"UNAVAILABLE","message":"try later"}]})"};
    Digest got = Digest::Sha256Of(req.body);
    if (req.target.substr(req.target.find("digest=") + 7) != "sha256%3A" + got.hex()) {
      return {400, {}, R"({"errors":[{"code":"DIGEST_INVALID","message":"digest did not match"}]})"};
    }
    return {201, {"Docker-Content-Digest: " + got.str()}};
  }
  return {400};
}

TEST(ScriptedPushTest, UploadStartsOverFromPostAndSkipsBlobsThatArePresent) {
  Fixture f;
  const std::string present = f.artifact_blobs[0].desc.digest.str();
  int uploads = 0;
  std::string addr;
  ScriptedServer server([&](const SeenRequest& req) -> Reply {
    if (req.method == "PUT" && req.target.find("/manifests/") != std::string::npos) {
      return {201, {"Docker-Content-Digest: " + Digest::Sha256Of(req.body).str()}};
    }
    return CompliantRegistry(req, addr, uploads, /*fail_puts=*/1, present);
  });
  addr = server.addr();
  auto r = PushArtifact(Ref(addr + "/ucrfs/app:v1"), FastOptions(), f.artifact_blobs, f.artifact_manifest,
                        std::string(media::kOciManifest), f.artifact_tag);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(*r, Digest::Sha256Of(f.artifact_manifest));

  std::vector<std::string> lines;
  for (const auto& q : server.seen()) lines.push_back(q.method + " " + q.target);
  const auto& b1 = f.artifact_blobs[1].desc.digest;
  const auto& b2 = f.artifact_blobs[2].desc.digest;
  std::string enc1 = "sha256%3A" + b1.hex(), enc2 = "sha256%3A" + b2.hex();
  std::vector<std::string> want = {
      "GET /v2/",
      "HEAD /v2/ucrfs/app/blobs/" + present,
      "HEAD /v2/ucrfs/app/blobs/" + b1.str(),
      "POST /v2/ucrfs/app/blobs/uploads/",
      "PUT /v2/ucrfs/app/blobs/uploads/u1?_state=s%3D1&digest=" + enc1,  // 503
      "POST /v2/ucrfs/app/blobs/uploads/",
      "PUT /v2/ucrfs/app/blobs/uploads/u2?_state=s%3D2&digest=" + enc1,
      "HEAD /v2/ucrfs/app/blobs/" + b2.str(),
      "POST /v2/ucrfs/app/blobs/uploads/",
      "PUT /v2/ucrfs/app/blobs/uploads/u3?_state=s%3D3&digest=" + enc2,
      "PUT /v2/ucrfs/app/manifests/" + f.artifact_tag,
  };
  EXPECT_EQ(lines, want);

  for (const auto& q : server.seen()) {
    if (q.method == "PUT" && q.target.find("/blobs/") != std::string::npos) {
      EXPECT_EQ(q.headers.at("content-type"), "application/octet-stream");
      EXPECT_EQ(q.headers.at("content-length"), std::to_string(q.body.size()));
      const PushBlob& sent = q.target.find(enc1) != std::string::npos ? f.artifact_blobs[1] : f.artifact_blobs[2];
      EXPECT_EQ(q.body, sent.data);
    }
    if (q.method == "PUT" && q.target.find("/manifests/") != std::string::npos) {
      EXPECT_EQ(q.headers.at("content-type"), media::kOciManifest);
      EXPECT_EQ(q.body, f.artifact_manifest);
    }
    if (q.method == "POST") {
      EXPECT_EQ(q.headers.at("content-length"), "0");
      EXPECT_EQ(q.headers.count("content-type"), 0u);  // not curl's form type
    }
  }
}

TEST(ScriptedPushTest, UploadFailingEveryTimeGivesUpAfterMaxAttempts) {
  Fixture f;
  int uploads = 0;
  std::string addr;
  ScriptedServer server(
      [&](const SeenRequest& req) { return CompliantRegistry(req, addr, uploads, /*fail_puts=*/100, ""); });
  addr = server.addr();
  auto r = PushArtifact(Ref(addr + "/ucrfs/app:v1"), FastOptions(), f.image_blobs, f.image_manifest,
                        std::string(media::kOciManifest), "v1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kServer) << r.error().message();
  EXPECT_NE(r.error().message().find(f.image_blobs[0].desc.digest.str()), std::string::npos);
  EXPECT_NE(r.error().message().find(addr + "/ucrfs/app"), std::string::npos) << r.error().message();
  EXPECT_EQ(uploads, FastOptions().max_attempts);
}

TEST(ScriptedPushTest, WrongDockerContentDigestForTheManifestIsAnError) {
  Fixture f;
  int uploads = 0;
  std::string addr;
  ScriptedServer server([&](const SeenRequest& req) -> Reply {
    if (req.method == "PUT" && req.target.find("/manifests/") != std::string::npos) {
      return {201, {"Docker-Content-Digest: " + Digest::Sha256Of("something else").str()}};
    }
    return CompliantRegistry(req, addr, uploads, 0, "");
  });
  addr = server.addr();
  auto r = PushArtifact(Ref(addr + "/ucrfs/app:v1"), FastOptions(), f.image_blobs, f.image_manifest,
                        std::string(media::kOciManifest), "v1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kDigestMismatch) << r.error().message();
  EXPECT_NE(r.error().message().find(addr + "/ucrfs/app:v1"), std::string::npos) << r.error().message();
}

TEST(ScriptedPushTest, TokenIsAskedForPullAndPush) {
  Fixture f;
  int uploads = 0;
  std::string addr;
  std::vector<std::string> token_queries;
  ScriptedServer server([&](const SeenRequest& req) -> Reply {
    if (req.target.rfind("/token?", 0) == 0) {
      token_queries.push_back(req.target.substr(7));
      EXPECT_EQ(req.headers.at("authorization"), "Basic " + Base64Encode("u:p"));
      return {200, {"Content-Type: application/json"}, R"({"token":"tok-1","expires_in":300})"};
    }
    if (req.target != "/v2/" && (!req.headers.count("authorization") || req.headers.at("authorization") !=
                                                                             "Bearer tok-1")) {
      return {401,
              {fmt::format(R"(WWW-Authenticate: Bearer realm="http://{}/token",service="scripted",)"
                           R"(scope="repository:ucrfs/app:pull")",
                           addr)}};
    }
    if (req.method == "PUT" && req.target.find("/manifests/") != std::string::npos) {
      return {201, {"Docker-Content-Digest: " + Digest::Sha256Of(req.body).str()}};
    }
    return CompliantRegistry(req, addr, uploads, 0, "");
  });
  addr = server.addr();
  SourceOptions o = FastOptions();
  o.docker_config = ConfigWith(addr, "u", "p");
  auto r = PushArtifact(Ref(addr + "/ucrfs/app:v1"), o, f.image_blobs, f.image_manifest,
                        std::string(media::kOciManifest), "v1");
  ASSERT_TRUE(r.ok()) << r.error().message();
  // One token, for the challenge's scope and for pull,push.
  ASSERT_EQ(token_queries.size(), 1u);
  EXPECT_EQ(token_queries[0],
            "service=scripted&scope=repository%3Aucrfs%2Fapp%3Apull&scope=repository%3Aucrfs%2Fapp%3Apull%2Cpush");
}

// ---------------------------------------------------------------- ranges

// A lazy read's request brings neighbours after the bytes the read needs:
// those first bytes are handed over as soon as they are in.
TEST(ScriptedRangeTest, TheFirstBytesOfARangeComeBeforeTheRest) {
  using namespace std::chrono_literals;
  std::string blob(1000, '\0');
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<char>('a' + i % 26);
  Descriptor desc;
  desc.digest = Digest::Sha256Of(blob);
  desc.size = static_cast<int64_t>(blob.size());
  std::promise<void> rest;
  std::shared_future<void> rest_sent = rest.get_future().share();
  ScriptedServer server([&](const SeenRequest& req) -> Reply {
    if (req.target == "/v2/") return {200};
    if (req.target != "/v2/ucrfs/app/blobs/" + desc.digest.str()) return {404};
    auto range = req.headers.find("range");
    if (range != req.headers.end() && range->second == "bytes=100-399") {
      Reply r{206, {"Content-Range: bytes 100-399/1000"}, blob.substr(100, 300)};
      r.split = 50;
      r.between = [rest_sent] { rest_sent.wait_for(10s); };
      return r;
    }
    return {200, {}, blob};  // a registry that ignores Range
  });
  auto source = OpenSource(Ref(server.addr() + "/ucrfs/app:v1"), FastOptions());
  ASSERT_TRUE(source.ok()) << source.error().message();

  std::promise<std::string> early;
  auto first = early.get_future();
  auto got = std::async(std::launch::async, [&] {
    return (*source)->GetBlobRangeEarly(desc, 100, 300, 40,
                                        [&](std::string_view bytes) { early.set_value(std::string(bytes)); });
  });
  if (first.wait_for(10s) != std::future_status::ready) {
    rest.set_value();
    FAIL() << "the first bytes were held back until the rest came";
  }
  EXPECT_EQ(first.get(), blob.substr(100, 40));
  EXPECT_EQ(got.wait_for(100ms), std::future_status::timeout) << "the range ended before its rest was sent";
  rest.set_value();
  auto all = got.get();
  ASSERT_TRUE(all.ok()) << all.error().message();
  EXPECT_EQ(*all, blob.substr(100, 300));

  // A whole blob in answer to a Range is refused, and nothing is handed over.
  bool handed = false;
  auto whole = (*source)->GetBlobRangeEarly(desc, 500, 100, 10, [&](std::string_view) { handed = true; });
  ASSERT_FALSE(whole.ok());
  EXPECT_EQ(whole.error().code(), Errc::kProtocol);
  EXPECT_NE(whole.error().message().find("ignores Range"), std::string::npos) << whole.error().message();
  EXPECT_FALSE(handed);
}

}  // namespace
}  // namespace ucrfs::fetch
