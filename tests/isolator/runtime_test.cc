// The docker/runtime rules (Mesos' runtime_isolator_tests.cpp rows and
// docker/runtime.cpp's branches), volume flags, and user resolution.
#include <gtest/gtest.h>

#include "ucrfs/isolator/runtime.h"
#include "ucrfs/isolator/user.h"

namespace ucrfs::isolator {
namespace {

using V = std::vector<std::string>;
const std::string kSb = "/mnt/mesos/sandbox";

index::RuntimeConfig Docker(V entrypoint, V cmd) {
  index::RuntimeConfig c;
  c.entrypoint = std::move(entrypoint);
  c.cmd = std::move(cmd);
  return c;
}

V Argv(const index::RuntimeConfig& c, Overrides o) {
  auto r = MergeRuntime(c, o, kSb);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
  return r.ok() ? r->argv : V{"<error>"};
}

// Rows: (shell, command value, user argv, image Entrypoint, image Cmd).
TEST(RuntimeRules, DefaultCmdRowKeepsCmd0AndTakesArgv) {
  // ROOT_DockerDefaultCmdImageTarPuller: Cmd ["sh"], argv ["-c", "echo 'hello world'"].
  EXPECT_EQ(Argv(Docker({}, {"sh"}), {.argv = {"-c", "echo 'hello world'"}}),
            (V{"sh", "-c", "echo 'hello world'"}));
}
TEST(RuntimeRules, DefaultEntrypointRowAppendsArgv) {
  // ROOT_DockerDefaultEntryptImageTarPuller: Entrypoint ["echo"], argv ["hello world"].
  EXPECT_EQ(Argv(Docker({"echo"}, {}), {.argv = {"hello world"}}), (V{"echo", "hello world"}));
}
TEST(RuntimeRules, ArgvReplacesCmdAfterEntrypoint) {
  EXPECT_EQ(Argv(Docker({"/e", "x"}, {"c1", "c2"}), {.argv = {"a"}}), (V{"/e", "x", "a"}));
  EXPECT_EQ(Argv(Docker({"/e", "x"}, {"c1", "c2"}), {}), (V{"/e", "x", "c1", "c2"}));
}
TEST(RuntimeRules, CmdAloneRunsWhole) {
  EXPECT_EQ(Argv(Docker({}, {"/bin/ls", "-l", "/"}), {}), (V{"/bin/ls", "-l", "/"}));
  EXPECT_EQ(Argv(Docker({}, {"/bin/ls", "-l", "/"}), {.argv = {"/tmp"}}), (V{"/bin/ls", "/tmp"}));
}
TEST(RuntimeRules, ShellIgnoresImage) {
  EXPECT_EQ(Argv(Docker({"/e"}, {"c"}), {.shell = "echo $X"}), (V{"/bin/sh", "-c", "echo $X"}));
}
TEST(RuntimeRules, CommandValueIgnoresImage) {
  EXPECT_EQ(Argv(Docker({"/e"}, {"c"}), {.argv = {"-l"}, .command = "/bin/ls"}), (V{"/bin/ls", "-l"}));
}
TEST(RuntimeRules, NoExecutableIsAnError) {
  auto r = MergeRuntime(Docker({}, {}), {}, kSb);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("No executable is found"), std::string::npos);
  // Arguments alone are the command line then.
  EXPECT_EQ(Argv(Docker({}, {}), {.argv = {"/bin/true", "x"}}), (V{"/bin/true", "x"}));
}
TEST(RuntimeRules, ShellWithoutValueOrWithArgvIsRefused) {
  EXPECT_FALSE(MergeRuntime(Docker({}, {"sh"}), {.shell = ""}, kSb).ok());
  EXPECT_FALSE(MergeRuntime(Docker({}, {"sh"}), {.argv = {"x"}, .shell = "true"}, kSb).ok());
}
TEST(RuntimeRules, IgnoreRuntimeDropsEverythingFromTheImage) {
  index::RuntimeConfig c = Docker({"/e"}, {"c"});
  c.env = {"DOCKER_RUNTIME_ENV=true"};
  c.working_dir = "/srv";
  c.user = "nobody";
  auto r = MergeRuntime(c, {.argv = {"/bin/sh"}, .ignore_runtime = true}, kSb);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->argv, V{"/bin/sh"});
  EXPECT_EQ(r->cwd, kSb);
  EXPECT_EQ(r->user, "");
  for (const auto& e : r->env) EXPECT_EQ(e.find("DOCKER_RUNTIME_ENV"), std::string::npos) << e;
}
TEST(RuntimeRules, EnvPrecedenceAndDefaults) {
  index::RuntimeConfig c = Docker({}, {"sh"});
  c.env = {"A=image", "NOEQUALS", "B=image", "MESOS_SANDBOX=/image"};
  auto r = MergeRuntime(c, {.env = {"B=flag", "C=x=y"}}, kSb);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->env, (V{"MESOS_SANDBOX=/image", "A=image", "B=flag", "C=x=y",
                       std::string("PATH=") + kDefaultPath}));
  auto bad = MergeRuntime(c, {.env = {"NOVALUE"}}, kSb);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("NOVALUE"), std::string::npos);
  // Without image Env, MESOS_SANDBOX is the sandbox directory.
  auto s = MergeRuntime(Docker({}, {"sh"}), {}, "/sb");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->env[0], "MESOS_SANDBOX=/sb");
}
TEST(RuntimeRules, WorkingDirAndUser) {
  index::RuntimeConfig c = Docker({}, {"sh"});
  c.working_dir = "srv/../app";
  c.user = "1000:50";
  auto r = MergeRuntime(c, {}, kSb);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->cwd, "/app");
  EXPECT_EQ(r->user, "1000");
  EXPECT_EQ(r->group, "50");
  auto o = MergeRuntime(c, {.user = "alice"}, kSb);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->user, "alice");
  EXPECT_EQ(o->group, "");
}
TEST(RuntimeRules, AppcAppSection) {
  index::RuntimeConfig c;
  c.kind = index::RuntimeConfig::Kind::kAppc;
  c.entrypoint = {"/bin/app", "--x"};
  c.user = "daemon";
  c.group = "adm";
  c.working_dir = "/opt";
  auto r = MergeRuntime(c, {.argv = {"y"}}, kSb);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->argv, (V{"/bin/app", "--x", "y"}));
  EXPECT_EQ(r->user, "daemon");
  EXPECT_EQ(r->group, "adm");
  EXPECT_EQ(r->cwd, "/opt");
}

TEST(VolumeFlags, Volume) {
  auto v = ParseVolumeFlag("/host/d:data:ro", kSb);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->source, "/host/d");
  EXPECT_EQ(v->target, kSb + "/data");
  EXPECT_TRUE(v->readonly);
  auto a = ParseVolumeFlag("/h:/abs", kSb);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->target, "/abs");
  EXPECT_FALSE(a->readonly);
  EXPECT_FALSE(ParseVolumeFlag("rel:/abs", kSb).ok());
  EXPECT_FALSE(ParseVolumeFlag("/h:/abs:rx", kSb).ok());
  EXPECT_FALSE(ParseVolumeFlag("/h", kSb).ok());
}
TEST(VolumeFlags, Mount) {
  auto m = ParseMountFlag("type=image,src=reg/img:1,dst=rootfs,readonly", kSb);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->type, Volume::Type::kImage);
  EXPECT_EQ(m->source, "reg/img:1");
  EXPECT_EQ(m->target, kSb + "/rootfs");
  EXPECT_TRUE(m->readonly);
  auto t = ParseMountFlag("type=tmpfs,target=/scratch", kSb);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->type, Volume::Type::kTmpfs);
  EXPECT_FALSE(t->readonly);
  EXPECT_FALSE(ParseMountFlag("type=nfs,src=/a,dst=/b", kSb).ok());
  EXPECT_FALSE(ParseMountFlag("type=bind,src=rel,dst=/b", kSb).ok());
  EXPECT_FALSE(ParseMountFlag("type=bind,dst=/b", kSb).ok());
  EXPECT_FALSE(ParseMountFlag("type=bind,src=/a,dst=/b,colour=red", kSb).ok());
}
TEST(VolumeFlags, ContainerPathNeverClimbsAboveRoot) {
  EXPECT_EQ(ContainerPath("../../etc", "/mnt/s"), "/etc");
  EXPECT_EQ(ContainerPath("/../../x/./y/", "/"), "/x/y");
  EXPECT_EQ(ContainerPath("", "/a"), "/a");
}

const char* kPasswd =
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1::/usr/sbin:/bin/false\n"
    "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
    "# comment\n"
    "broken:x:notanumber:1::/:/bin/sh\n"
    "1001:x:2000:2000::/home/numeric:/bin/sh\n";
const char* kGroup =
    "root:x:0:\n"
    "adm:x:4:alice,daemon\n"
    "alice:x:1000:\n"
    "video:x:44:bob,alice\n"
    "staff:x:50:\n";

Result<Credentials> Resolve(const std::string& u, const std::string& g) {
  return ResolveUser(u, g, ParsePasswd(kPasswd), ParseGroup(kGroup));
}

TEST(Users, NameGetsPasswdIdsAndSupplementaryGroups) {
  auto c = Resolve("alice", "");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->uid, 1000u);
  EXPECT_EQ(c->gid, 1000u);
  EXPECT_EQ(c->groups, (std::vector<gid_t>{4, 44}));
  EXPECT_EQ(c->home, "/home/alice");
}
TEST(Users, UidInPasswdIsThatEntry) {
  auto c = Resolve("1000", "");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->gid, 1000u);
  EXPECT_EQ(c->groups.size(), 2u);
}
TEST(Users, NameBeforeUid) {
  auto c = Resolve("1001", "");  // a user named "1001" with uid 2000
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->uid, 2000u);
}
TEST(Users, UnknownUidWorksAsDocker) {
  auto c = Resolve("4242", "");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->uid, 4242u);
  EXPECT_EQ(c->gid, 0u);
  EXPECT_TRUE(c->groups.empty());
  EXPECT_EQ(c->home, "/");
}
TEST(Users, ExplicitGroupReplacesSupplementary) {
  auto c = Resolve("alice", "staff");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->gid, 50u);
  EXPECT_TRUE(c->groups.empty());
  auto n = Resolve("4242", "7");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->gid, 7u);
}
TEST(Users, EmptyIsRoot) {
  auto c = Resolve("", "");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->uid, 0u);
  EXPECT_EQ(c->home, "/root");
}
TEST(Users, UnknownNamesAreErrorsNamingThem) {
  auto u = Resolve("mallory", "");
  ASSERT_FALSE(u.ok());
  EXPECT_NE(u.error().message().find("\"mallory\""), std::string::npos) << u.error().message();
  EXPECT_NE(u.error().message().find("/etc/passwd"), std::string::npos);
  auto g = Resolve("alice", "wheel");
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.error().message().find("\"wheel\""), std::string::npos);
  EXPECT_FALSE(Resolve("broken", "").ok());  // its line is malformed: skipped
}

}  // namespace
}  // namespace ucrfs::isolator
