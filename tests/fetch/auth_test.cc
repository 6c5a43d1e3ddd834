#include "ucrfs/fetch/auth.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace ucrfs::fetch {
namespace {

std::vector<AuthChallenge> MustParse(std::string_view header) {
  auto r = ParseWwwAuthenticate(header);
  EXPECT_TRUE(r.ok()) << header << ": " << (r.ok() ? "" : r.error().message());
  return r.ok() ? *r : std::vector<AuthChallenge>{};
}

TEST(WwwAuthenticateTest, DockerHubBearer) {
  auto cs = MustParse(
      R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull")");
  ASSERT_EQ(cs.size(), 1u);
  EXPECT_EQ(cs[0].scheme, "bearer");
  ASSERT_NE(cs[0].Param("realm"), nullptr);
  EXPECT_EQ(*cs[0].Param("realm"), "https://auth.docker.io/token");
  EXPECT_EQ(*cs[0].Param("service"), "registry.docker.io");
  EXPECT_EQ(*cs[0].Param("scope"), "repository:library/busybox:pull");
  EXPECT_EQ(cs[0].Param("error"), nullptr);
}

TEST(WwwAuthenticateTest, Basic) {
  auto cs = MustParse(R"(Basic realm="Registry Realm")");
  ASSERT_EQ(cs.size(), 1u);
  EXPECT_EQ(cs[0].scheme, "basic");
  EXPECT_EQ(*cs[0].Param("realm"), "Registry Realm");

  auto bare = MustParse("Basic");
  ASSERT_EQ(bare.size(), 1u);
  EXPECT_EQ(bare[0].scheme, "basic");
  EXPECT_TRUE(bare[0].params.empty());
}

TEST(WwwAuthenticateTest, NamesAreCaseInsensitive) {
  auto cs = MustParse(R"(BEARER Realm="https://a/token", SERVICE=reg)");
  ASSERT_EQ(cs.size(), 1u);
  EXPECT_EQ(cs[0].scheme, "bearer");
  EXPECT_EQ(*cs[0].Param("realm"), "https://a/token");
  EXPECT_EQ(*cs[0].Param("REALM"), "https://a/token");
  EXPECT_EQ(*cs[0].Param("service"), "reg");
}

TEST(WwwAuthenticateTest, MultipleChallenges) {
  auto cs = MustParse(R"(Basic realm="simple", Bearer realm="https://auth/token", service="svc", Newauth)");
  ASSERT_EQ(cs.size(), 3u);
  EXPECT_EQ(cs[0].scheme, "basic");
  EXPECT_EQ(*cs[0].Param("realm"), "simple");
  EXPECT_EQ(cs[1].scheme, "bearer");
  EXPECT_EQ(*cs[1].Param("realm"), "https://auth/token");
  EXPECT_EQ(*cs[1].Param("service"), "svc");
  EXPECT_EQ(cs[0].Param("service"), nullptr);
  EXPECT_EQ(cs[2].scheme, "newauth");

  // RFC 7235 §4.1 example.
  auto rfc = MustParse(R"(Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple")");
  ASSERT_EQ(rfc.size(), 2u);
  EXPECT_EQ(*rfc[0].Param("type"), "1");
  EXPECT_EQ(*rfc[0].Param("title"), R"(Login to "apps")");
  EXPECT_EQ(*rfc[1].Param("realm"), "simple");
}

TEST(WwwAuthenticateTest, QuotedValuesKeepCommasAndEscapes) {
  auto cs = MustParse(
      R"(Bearer realm="https://auth.example/token",scope="repository:a/b:pull,push repository:c:pull",note="a\\b\"c")");
  ASSERT_EQ(cs.size(), 1u);
  EXPECT_EQ(*cs[0].Param("scope"), "repository:a/b:pull,push repository:c:pull");
  EXPECT_EQ(*cs[0].Param("note"), R"(a\b"c)");
}

TEST(WwwAuthenticateTest, Token68IsIgnored) {
  auto cs = MustParse("Basic abc==, Bearer realm=\"r\"");
  ASSERT_EQ(cs.size(), 2u);
  EXPECT_EQ(cs[0].scheme, "basic");
  EXPECT_TRUE(cs[0].params.empty());
  EXPECT_EQ(*cs[1].Param("realm"), "r");

  auto slash = MustParse("Negotiate YII/x+y=");
  ASSERT_EQ(slash.size(), 1u);
  EXPECT_EQ(slash[0].scheme, "negotiate");
  EXPECT_TRUE(slash[0].params.empty());
}

TEST(WwwAuthenticateTest, ToleratesMissingCommasAndSpaces) {
  auto cs = MustParse(R"(  Bearer   realm = "r"  service="s" error="insufficient_scope"  )");
  ASSERT_EQ(cs.size(), 1u);
  EXPECT_EQ(*cs[0].Param("realm"), "r");
  EXPECT_EQ(*cs[0].Param("service"), "s");
  EXPECT_EQ(*cs[0].Param("error"), "insufficient_scope");
}

TEST(WwwAuthenticateTest, Malformed) {
  for (const char* bad : {"", "   ", " , ", R"(Bearer realm="unterminated)", R"(Bearer realm="x\)", R"("quoted")",
                          "Bearer realm=\"a\", scope=", "Bearer realm=\"a\", =x"}) {
    auto r = ParseWwwAuthenticate(bad);
    EXPECT_FALSE(r.ok()) << "accepted '" << bad << "'";
  }
  // "realm=" alone is a token68 by the grammar, not an empty parameter.
  auto token68 = MustParse("Bearer realm=");
  ASSERT_EQ(token68.size(), 1u);
  EXPECT_EQ(token68[0].Param("realm"), nullptr);

  auto r = ParseWwwAuthenticate(R"(Bearer realm="unterminated)");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("unterminated"), std::string::npos) << r.error().message();
}

// Mesos DockerSpecTest.ParseAuthUrl.
TEST(ParseAuthUrlTest, MesosCases) {
  for (const char* host : {"registry.example.com", "localhost:8000", "registry.com"}) {
    std::string h = host;
    EXPECT_EQ(ParseAuthUrl("https://" + h + "/v1/"), h);
    EXPECT_EQ(ParseAuthUrl("http://" + h + "/v1/"), h);
    EXPECT_EQ(ParseAuthUrl(h), h);
    EXPECT_EQ(ParseAuthUrl(h + "/v1/"), h);
  }
}

// Mesos DockerSpecTest.ParseDockerConfig: the ~/.docker/config.json format.
TEST(DockerConfigTest, MesosParseDockerConfig) {
  auto cfg = DockerConfig::Parse(R"json({
    "auths": {
      "https://index.docker.io/v1/": {"auth": "bWVzb3M6dGVzdA==", "email": "user@example.com"},
      "localhost:5000": {"auth": "dW5pZmllZDpjb250YWluZXJpemVy", "email": "user@example.com"}
    },
    "HttpHeaders": {"User-Agent": "Docker-Client/1.10.2 (linux)"}
  })json");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  ASSERT_EQ(cfg->entries().size(), 2u);
  const Credential& hub = cfg->entries().at("https://index.docker.io/v1/");
  EXPECT_EQ(hub.username, "mesos");
  EXPECT_EQ(hub.password, "test");
  const Credential& local = cfg->entries().at("localhost:5000");
  EXPECT_EQ(local.username, "unified");
  EXPECT_EQ(local.password, "containerizer");
}

// Mesos DockerSpecTest.ParseDockercfg: the legacy ~/.dockercfg format.
TEST(DockerConfigTest, MesosParseDockercfg) {
  auto cfg = DockerConfig::Parse(R"({
    "quay.io": {"auth": "cXVheTp0ZXN0", "email": "user@example.com"},
    "https://index.docker.io/v1/": {"auth": "cHJpdmF0ZTpyZWdpc3RyeQ==", "email": "user@example.com"},
    "https://192.168.0.1:5050": {"auth": "aXA6YWRkcmVzcw==", "email": "user@example.com"}
  })");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  ASSERT_EQ(cfg->entries().size(), 3u);
  EXPECT_EQ(cfg->entries().at("quay.io").username, "quay");
  EXPECT_EQ(cfg->entries().at("quay.io").password, "test");
  EXPECT_EQ(cfg->entries().at("https://index.docker.io/v1/").username, "private");
  EXPECT_EQ(cfg->entries().at("https://index.docker.io/v1/").password, "registry");
  EXPECT_EQ(cfg->entries().at("https://192.168.0.1:5050").username, "ip");
  EXPECT_EQ(cfg->entries().at("https://192.168.0.1:5050").password, "address");

  auto found = cfg->Find("192.168.0.1:5050");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->username, "ip");
}

TEST(DockerConfigTest, EntryForms) {
  // "a:b:c" — passwords may contain ':'; unpadded base64 is accepted.
  auto cfg = DockerConfig::Parse(R"({"auths": {
    "colon.example": {"auth": "dXNlcjpwYTpzczp3b3Jk"},
    "unpadded.example": {"auth": "bWVzb3M6dGVzdA"},
    "fields.example": {"username": "alice", "password": "s3cret"},
    "token.example": {"auth": "", "identitytoken": "eyJhbGciOi"},
    "empty.example": {},
    "email.example": {"email": "x@example.com"}
  }, "credsStore": "desktop"})");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  EXPECT_EQ(cfg->entries().size(), 3u);
  EXPECT_EQ(cfg->entries().at("colon.example").username, "user");
  EXPECT_EQ(cfg->entries().at("colon.example").password, "pa:ss:word");
  EXPECT_EQ(cfg->entries().at("unpadded.example").password, "test");
  EXPECT_EQ(cfg->entries().at("fields.example").username, "alice");
  EXPECT_EQ(cfg->entries().at("fields.example").password, "s3cret");
  EXPECT_EQ(cfg->entries().count("token.example"), 0u);
}

TEST(DockerConfigTest, BadEntriesNameTheKeyButNotTheSecret) {
  struct Case {
    const char* json;
    const char* secret;
  };
  const Case cases[] = {
      {R"({"auths": {"bad.example": {"auth": "not*base64!"}}})", "not*base64!"},
      {R"({"auths": {"bad.example": {"auth": "bm9jb2xvbg=="}}})", "nocolon"},  // "nocolon"
      {R"({"auths": {"bad.example": {"auth": 42}}})", "42"},
      {R"({"auths": {"bad.example": "c2VjcmV0OnB3"}})", "c2VjcmV0OnB3"},
  };
  for (const Case& c : cases) {
    auto cfg = DockerConfig::Parse(c.json);
    ASSERT_FALSE(cfg.ok()) << c.json;
    EXPECT_EQ(cfg.error().code(), Errc::kMalformed);
    EXPECT_NE(cfg.error().message().find("bad.example"), std::string::npos) << cfg.error().message();
    EXPECT_EQ(cfg.error().message().find(c.secret), std::string::npos) << cfg.error().message();
  }
  auto not_json = DockerConfig::Parse(R"({"auths": {"x": {"auth": "hunter2secret")");
  ASSERT_FALSE(not_json.ok());
  EXPECT_EQ(not_json.error().message().find("hunter2secret"), std::string::npos) << not_json.error().message();
  auto huge = DockerConfig::Parse(R"({"auths": {"x": {"auth": "hunter2secret", "n": 1e400}}})");
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.error().code(), Errc::kMalformed);
  EXPECT_NE(huge.error().message().find("a number out of range"), std::string::npos) << huge.error().message();
  EXPECT_EQ(huge.error().message().find("hunter2secret"), std::string::npos) << huge.error().message();
  EXPECT_FALSE(DockerConfig::Parse("[]").ok());
  EXPECT_FALSE(DockerConfig::Parse(R"({"auths": []})").ok());
}

TEST(DockerConfigTest, FindMatchesDefaultRegistryWithAndWithoutPort) {
  // MESOS-9967: the default registry must match the key `docker login` writes,
  // with or without an explicit :443.
  auto cfg = DockerConfig::Parse(R"({"auths": {
    "https://index.docker.io/v1/": {"auth": "bWVzb3M6dGVzdA=="},
    "localhost:5000": {"auth": "dW5pZmllZDpjb250YWluZXJpemVy"}
  }})");
  ASSERT_TRUE(cfg.ok());
  for (const char* reg : {"registry-1.docker.io", "registry-1.docker.io:443", "docker.io", "index.docker.io"}) {
    auto c = cfg->Find(reg);
    ASSERT_TRUE(c.has_value()) << reg;
    EXPECT_EQ(c->username, "mesos") << reg;
  }
  auto local = cfg->Find("localhost:5000");
  ASSERT_TRUE(local.has_value());
  EXPECT_EQ(local->username, "unified");
  EXPECT_FALSE(cfg->Find("localhost:5001").has_value());
  EXPECT_FALSE(cfg->Find("localhost").has_value());
  EXPECT_FALSE(cfg->Find("quay.io").has_value());
  EXPECT_FALSE(cfg->Find("notdocker.io").has_value());
}

TEST(DockerConfigTest, FindStripsSchemeAndPathFromKeys) {
  auto cfg = DockerConfig::Parse(R"({"auths": {
    "http://localhost:5000/v2/": {"auth": "dW5pZmllZDpjb250YWluZXJpemVy"},
    "quay.io:443": {"username": "q", "password": "p"},
    "docker.io": {"username": "hub", "password": "p"}
  }})");
  ASSERT_TRUE(cfg.ok());
  ASSERT_TRUE(cfg->Find("localhost:5000").has_value());
  EXPECT_FALSE(cfg->Find("localhost:5001").has_value());
  ASSERT_TRUE(cfg->Find("quay.io").has_value());
  EXPECT_EQ(cfg->Find("quay.io")->username, "q");
  ASSERT_TRUE(cfg->Find("registry-1.docker.io:443").has_value());
  EXPECT_EQ(cfg->Find("registry-1.docker.io:443")->username, "hub");
}

TEST(DockerConfigTest, FindPrefersTheKeyDockerLoginWrites) {
  auto cfg = DockerConfig::Parse(R"({"auths": {
    "docker.io": {"username": "other", "password": "p"},
    "https://index.docker.io/v1/": {"username": "canonical", "password": "p"}
  }})");
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(cfg->Find("registry-1.docker.io")->username, "canonical");
  EXPECT_EQ(cfg->Find("docker.io")->username, "other");  // an exact key wins
}

class DockerConfigLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ucrfs-auth-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    for (const char* v : {"DOCKER_CONFIG", "HOME"}) {
      const char* old = std::getenv(v);
      saved_.emplace_back(v, old ? std::optional<std::string>(old) : std::nullopt);
    }
  }
  void TearDown() override {
    for (const auto& [k, v] : saved_) {
      if (v) {
        ::setenv(k.c_str(), v->c_str(), 1);
      } else {
        ::unsetenv(k.c_str());
      }
    }
    std::filesystem::remove_all(dir_);
  }
  void Write(const std::string& path, const std::string& text) {
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    std::ofstream(path) << text;
  }

  std::string dir_;
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

TEST_F(DockerConfigLoadTest, ExplicitPath) {
  Write(dir_ + "/cfg.json", R"({"auths": {"quay.io": {"auth": "cXVheTp0ZXN0"}}})");
  auto cfg = DockerConfig::Load(dir_ + "/cfg.json");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  EXPECT_EQ(cfg->Find("quay.io")->username, "quay");

  auto missing = DockerConfig::Load(dir_ + "/nope.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
}

TEST_F(DockerConfigLoadTest, DockerConfigEnvThenHome) {
  ::setenv("HOME", (dir_ + "/home").c_str(), 1);
  ::unsetenv("DOCKER_CONFIG");
  // Missing default file: empty config, not an error.
  auto empty = DockerConfig::Load(std::nullopt);
  ASSERT_TRUE(empty.ok()) << empty.error().message();
  EXPECT_TRUE(empty->entries().empty());

  Write(dir_ + "/home/.docker/config.json", R"({"auths": {"home.example": {"username": "h", "password": "p"}}})");
  auto home = DockerConfig::Load(std::nullopt);
  ASSERT_TRUE(home.ok());
  EXPECT_TRUE(home->Find("home.example").has_value());

  Write(dir_ + "/dc/config.json", R"({"auths": {"env.example": {"username": "e", "password": "p"}}})");
  ::setenv("DOCKER_CONFIG", (dir_ + "/dc").c_str(), 1);
  auto env = DockerConfig::Load(std::nullopt);
  ASSERT_TRUE(env.ok());
  EXPECT_TRUE(env->Find("env.example").has_value());
  EXPECT_FALSE(env->Find("home.example").has_value());

  Write(dir_ + "/dc/config.json", "{not json");
  auto bad = DockerConfig::Load(std::nullopt);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kMalformed);
}

}  // namespace
}  // namespace ucrfs::fetch
