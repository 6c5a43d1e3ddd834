// An OCI image layout made in a test: the two-layer image of Mesos' overlay
// backend test, for tests of the provisioner and what is built on it.
#pragma once

#include <filesystem>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/test_util.h"
#include "ucrfs/common/digest.h"
#include "ucrfs/common/file.h"

namespace ucrfs::harness {

// An OCI layout with one two-layer image tagged "v1": {dir1/1, file=test1},
// {dir2/2, file=test2} (Mesos' overlay backend test layers).
inline std::string MakeLayout(const TempDir& t) {
  std::string layout = t / "layout";
  std::filesystem::create_directories(layout + "/blobs/sha256");
  WriteBytes(layout + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  auto blob = [&](const std::string& data) {
    Digest d = Digest::Sha256Of(data);
    WriteBytes(layout + "/blobs/sha256/" + d.hex(), data);
    return nlohmann::json{{"digest", d.str()}, {"size", data.size()}};
  };
  nlohmann::json layers = nlohmann::json::array(), diff_ids = nlohmann::json::array();
  for (int i = 1; i <= 2; ++i) {
    std::string src = t / fmt::format("l{}", i);
    std::filesystem::create_directories(fmt::format("{}/dir{}", src, i));
    WriteBytes(fmt::format("{}/dir{}/{}", src, i, i), std::to_string(i));
    WriteBytes(src + "/file", fmt::format("test{}", i));
    std::string tar = t / fmt::format("l{}.tar", i);
    EXPECT_EQ(Sh(fmt::format("tar --owner=0 --group=0 -C {} -cf {} dir{} file", src, tar, i)), 0);
    auto body = ReadFile(tar);
    EXPECT_TRUE(body.ok());
    auto d = blob(*body);
    d["mediaType"] = "application/vnd.oci.image.layer.v1.tar";
    layers.push_back(d);
    diff_ids.push_back(Digest::Sha256Of(*body).str());
  }
  nlohmann::json config = {{"architecture", "amd64"}, {"os", "linux"},
                           {"config", {{"Cmd", {"/bin/sh"}}, {"Env", {"A=1"}}}},
                           {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}}};
  auto cd = blob(config.dump());
  cd["mediaType"] = "application/vnd.oci.image.config.v1+json";
  nlohmann::json manifest = {{"schemaVersion", 2}, {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                             {"config", cd}, {"layers", layers}};
  auto md = blob(manifest.dump());
  md["mediaType"] = "application/vnd.oci.image.manifest.v1+json";
  md["annotations"] = {{"org.opencontainers.image.ref.name", "v1"}};
  WriteBytes(layout + "/index.json", nlohmann::json{{"schemaVersion", 2}, {"manifests", {md}}}.dump());
  return "oci:" + layout + ":v1";
}

}  // namespace ucrfs::harness
