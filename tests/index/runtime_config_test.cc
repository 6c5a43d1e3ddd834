#include "ucrfs/index/runtime_config.h"

#include <gtest/gtest.h>

namespace ucrfs::index {
namespace {

TEST(RuntimeConfigTest, DockerConfig) {
  auto rc = RuntimeConfig::Parse("application/vnd.oci.image.config.v1+json", R"({
    "architecture": "amd64", "os": "linux",
    "config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "Env": ["A=1", "PATH=/bin"],
               "WorkingDir": "/srv", "User": "nobody:nogroup"}})");
  ASSERT_TRUE(rc.ok()) << rc.error().message();
  EXPECT_EQ(rc->kind, RuntimeConfig::Kind::kDocker);
  EXPECT_EQ(rc->entrypoint, (std::vector<std::string>{"/bin/sh", "-c"}));
  EXPECT_EQ(rc->cmd, (std::vector<std::string>{"echo hi"}));
  EXPECT_EQ(rc->env, (std::vector<std::string>{"A=1", "PATH=/bin"}));
  EXPECT_EQ(rc->working_dir, "/srv");
  EXPECT_EQ(rc->user, "nobody:nogroup");
  EXPECT_TRUE(rc->group.empty());
}

TEST(RuntimeConfigTest, DockerConfigWithNullsAndNoConfig) {
  auto rc = RuntimeConfig::Parse("application/vnd.docker.container.image.v1+json",
                                 R"({"config": {"Entrypoint": null, "Cmd": ["/bin/true"]}})");
  ASSERT_TRUE(rc.ok()) << rc.error().message();
  EXPECT_TRUE(rc->entrypoint.empty());
  EXPECT_EQ(rc->cmd, (std::vector<std::string>{"/bin/true"}));
  auto bare = RuntimeConfig::Parse("application/vnd.oci.image.config.v1+json", R"({"os": "linux"})");
  ASSERT_TRUE(bare.ok());
  EXPECT_TRUE(bare->cmd.empty() && bare->env.empty() && bare->user.empty());
}

TEST(RuntimeConfigTest, DockerConfigMalformed) {
  for (const char* body : {"[]", "{", R"({"config": []})", R"({"config": {"Cmd": "echo"}})",
                           R"({"config": {"Env": [1]}})", R"({"config": {"User": 0}})"}) {
    auto rc = RuntimeConfig::Parse("application/vnd.oci.image.config.v1+json", body);
    ASSERT_FALSE(rc.ok()) << body;
    EXPECT_EQ(rc.error().code(), Errc::kMalformed) << body;
  }
}

TEST(RuntimeConfigTest, AppcManifest) {
  auto rc = RuntimeConfig::Parse(kAppcManifestMediaType, R"({
    "acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/app",
    "app": {"exec": ["/bin/app", "--serve"], "user": "100", "group": "300",
            "workingDirectory": "/opt", "environment": [{"name": "X", "value": "y=z"}]}})");
  ASSERT_TRUE(rc.ok()) << rc.error().message();
  EXPECT_EQ(rc->kind, RuntimeConfig::Kind::kAppc);
  EXPECT_TRUE(rc->has_app);
  EXPECT_EQ(rc->entrypoint, (std::vector<std::string>{"/bin/app", "--serve"}));
  EXPECT_TRUE(rc->cmd.empty());
  EXPECT_EQ(rc->env, (std::vector<std::string>{"X=y=z"}));
  EXPECT_EQ(rc->working_dir, "/opt");
  EXPECT_EQ(rc->user, "100");
  EXPECT_EQ(rc->group, "300");
  auto noapp = RuntimeConfig::Parse(kAppcManifestMediaType, R"({"acKind": "ImageManifest", "name": "x"})");
  ASSERT_TRUE(noapp.ok());
  EXPECT_FALSE(noapp->has_app);
  auto bad = RuntimeConfig::Parse(kAppcManifestMediaType, R"({"app": {"environment": [{"name": "X"}]}})");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kMalformed);
}

}  // namespace
}  // namespace ucrfs::index
