// The OCI config.json writer of `ucrfs bundle`.
#include "ucrfs/isolator/bundle.h"

#include "ucrfs/isolator/launcher.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include <set>

namespace ucrfs::isolator {
namespace {

BundleSpec Spec() {
  BundleSpec s;
  s.argv = {"sh", "-c", "echo hi"};
  s.env = {"PATH=/bin", "HOME=/home/alice"};
  s.cwd = "/mnt/mesos/sandbox";
  s.user.uid = 1000;
  s.user.gid = 1000;
  s.user.groups = {4, 44};
  s.hostname = "bundle-0123456789abcdef";
  s.sandbox = "/srv/b/sandbox";
  s.capabilities = {"CAP_CHOWN", "CAP_KILL"};
  return s;
}

nlohmann::json Parse(const BundleSpec& s) {
  auto text = BundleConfig(s);
  EXPECT_TRUE(text.ok()) << text.error().message();
  return nlohmann::json::parse(*text);
}

std::set<std::string> Keys(const nlohmann::json& j) {
  std::set<std::string> out;
  for (const auto& [k, v] : j.items()) out.insert(k);
  return out;
}

TEST(BundleConfig, HasWhatCrunNeedsAndNothingElse) {
  auto j = Parse(Spec());
  EXPECT_EQ(Keys(j), (std::set<std::string>{"ociVersion", "process", "root", "hostname", "mounts", "linux"}));
  EXPECT_EQ(j["ociVersion"], "1.0.2");
  EXPECT_EQ(Keys(j["process"]),
            (std::set<std::string>{"terminal", "user", "args", "env", "cwd", "capabilities"}));
  EXPECT_EQ(j["process"]["args"], nlohmann::json({"sh", "-c", "echo hi"}));
  EXPECT_EQ(j["process"]["env"], nlohmann::json({"PATH=/bin", "HOME=/home/alice"}));
  EXPECT_EQ(j["process"]["cwd"], "/mnt/mesos/sandbox");
  EXPECT_EQ(j["process"]["terminal"], false);
  EXPECT_EQ(j["process"]["user"], nlohmann::json({{"uid", 1000}, {"gid", 1000}, {"additionalGids", {4, 44}}}));
  EXPECT_EQ(j["root"], nlohmann::json({{"path", "rootfs"}, {"readonly", false}}));
  EXPECT_EQ(j["hostname"], "bundle-0123456789abcdef");
  // linux: the launcher's namespaces (host network), masks; no resources.
  EXPECT_EQ(Keys(j["linux"]), (std::set<std::string>{"namespaces", "maskedPaths", "readonlyPaths"}));
  std::set<std::string> ns;
  for (const auto& n : j["linux"]["namespaces"]) {
    EXPECT_EQ(Keys(n), std::set<std::string>{"type"});
    ns.insert(n["type"].get<std::string>());
  }
  EXPECT_EQ(ns, (std::set<std::string>{"pid", "ipc", "uts", "mount"}));
  EXPECT_EQ(j["linux"]["maskedPaths"].get<std::vector<std::string>>(), kMaskedPaths);
  EXPECT_EQ(j["linux"]["readonlyPaths"].get<std::vector<std::string>>(), kReadonlyPaths);
}

TEST(BundleConfig, MountsAreTheLaunchers) {
  auto j = Parse(Spec());
  std::vector<std::string> dst;
  for (const auto& m : j["mounts"]) {
    EXPECT_EQ(Keys(m), (std::set<std::string>{"destination", "type", "source", "options"}));
    dst.push_back(m["destination"]);
    if (m["destination"] == "/sys") {
      EXPECT_NE(std::find(m["options"].begin(), m["options"].end(), "ro"), m["options"].end());
    }
    if (m["destination"] == "/mnt/mesos/sandbox") {
      EXPECT_EQ(m["type"], "bind");
      EXPECT_EQ(m["source"], "/srv/b/sandbox");
    }
  }
  EXPECT_EQ(dst, (std::vector<std::string>{"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
                                           "/sys/fs/cgroup", "/mnt/mesos/sandbox"}));
  auto s = Spec();
  s.sandbox.clear();
  EXPECT_EQ(Parse(s)["mounts"].size(), 7u);
}

TEST(BundleConfig, CapabilitiesOnlyForRoot) {
  auto j = Parse(Spec());
  EXPECT_EQ(j["process"]["capabilities"]["bounding"], nlohmann::json({"CAP_CHOWN", "CAP_KILL"}));
  EXPECT_TRUE(j["process"]["capabilities"]["effective"].empty());
  EXPECT_TRUE(j["process"]["capabilities"]["permitted"].empty());
  auto s = Spec();
  s.user = Credentials{};
  j = Parse(s);
  EXPECT_EQ(j["process"]["capabilities"]["effective"], nlohmann::json({"CAP_CHOWN", "CAP_KILL"}));
  EXPECT_EQ(j["process"]["capabilities"]["permitted"], nlohmann::json({"CAP_CHOWN", "CAP_KILL"}));
  EXPECT_EQ(j["process"]["user"], nlohmann::json({{"uid", 0}, {"gid", 0}}));  // no empty additionalGids
}

TEST(BundleConfig, ReadOnlyRoot) {
  auto s = Spec();
  s.readonly_root = true;
  EXPECT_EQ(Parse(s)["root"]["readonly"], true);
}

TEST(BundleConfig, RefusesNoCommandOrRelativeCwd) {
  auto s = Spec();
  s.argv.clear();
  EXPECT_FALSE(BundleConfig(s).ok());
  s = Spec();
  s.cwd = "relative";
  EXPECT_FALSE(BundleConfig(s).ok());
}

TEST(BundleConfig, BoundingCapabilitiesAreKnownNames) {
  auto caps = BoundingCapabilities();
  for (const auto& c : caps) EXPECT_EQ(c.rfind("CAP_", 0), 0u) << c;
  if (::geteuid() == 0) {
    EXPECT_FALSE(caps.empty());
  }
}

}  // namespace
}  // namespace ucrfs::isolator
