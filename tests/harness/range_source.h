// An ImageSource that serves blob Ranges only, for tests of the lazy fetch
// path: manifests and whole blobs are refused, so a test that reaches for
// them fails loudly. Subclasses implement GetBlobRange.
#pragma once

#include <optional>
#include <string>

#include "ucrfs/fetch/source.h"

namespace ucrfs::harness {

class RangeOnlySource : public fetch::ImageSource {
 public:
  std::string Describe() const override { return "range-only test source"; }
  Result<fetch::ManifestBlob> GetRootManifest() override { return Error(Errc::kUnsupported, "no manifest"); }
  Result<fetch::ManifestBlob> GetManifest(const fetch::Descriptor&) override {
    return Error(Errc::kUnsupported, "no manifest");
  }
  Result<std::optional<fetch::ManifestBlob>> GetTaggedManifest(const std::string&) override {
    return std::optional<fetch::ManifestBlob>();
  }
  Status GetBlob(const fetch::Descriptor&, fetch::BlobSink&) override {
    return Error(Errc::kUnsupported, "whole blob asked for");
  }
};

}  // namespace ucrfs::harness
