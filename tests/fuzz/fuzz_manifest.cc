// What registries send: manifests and indexes (under each content type a
// server may claim), image configs, and Appc manifests. The first input
// byte picks the content type; the rest is the body.
#include <array>
#include <string_view>

#include "fuzz_check.h"
#include "ucrfs/fetch/appc.h"
#include "ucrfs/fetch/manifest.h"
#include "ucrfs/index/runtime_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ucrfs::fetch;
  using namespace ucrfs::fetch::media;
  if (size < 1) return 0;
  static constexpr std::array<std::string_view, 8> kTypes = {
      "", kOciManifest, kOciIndex, kDockerManifest, kDockerManifestList, kDockerSchema1Signed, kDockerSchema1,
      "application/json"};
  std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string_view type = kTypes[data[0] % kTypes.size()];
  auto m = ParseManifest(body, type);
  if (m.ok()) {
    if (const auto* im = std::get_if<ImageManifest>(&*m)) {
      for (const Descriptor& d : im->layers) ucrfs::fuzz::Check(d.size >= -1, "a layer size is known or -1 (schema1)");
    }
  }
  (void)ManifestDigest(body);
  (void)ParseImageConfig(body);
  (void)ucrfs::index::RuntimeConfig::Parse(std::string(data[0] & 1 ? kOciConfig : kDockerConfig), body);
  (void)ParseAppcManifest(body);
  return 0;
}
