// An OCI image layout directory (image-spec image-layout.md): `oci-layout`,
// `index.json`, `blobs/<alg>/<hex>`. Images are named by the
// `org.opencontainers.image.ref.name` annotation of index.json entries.
#include <sys/stat.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sources.h"
#include "ucrfs/common/file.h"

namespace ucrfs::fetch {
namespace {

constexpr std::string_view kRefNameAnnotation = "org.opencontainers.image.ref.name";
constexpr int64_t kMaxManifestBytes = 4 << 20;

// The first entry named `tag`, or nullptr.
const Descriptor* FindRefName(const std::vector<Descriptor>& entries, const std::string& tag) {
  for (const auto& e : entries) {
    auto it = e.annotations.find(std::string(kRefNameAnnotation));
    if (it != e.annotations.end() && it->second == tag) return &e;
  }
  return nullptr;
}

class OciLayoutSource final : public ImageSource {
 public:
  OciLayoutSource(std::string dir, std::string tag, Descriptor root, std::vector<Descriptor> entries)
      : dir_(std::move(dir)), tag_(std::move(tag)), root_(std::move(root)), entries_(std::move(entries)) {}

  std::string Describe() const override { return fmt::format("oci:{}{}{}", dir_, tag_.empty() ? "" : ":", tag_); }

  Result<ManifestBlob> GetRootManifest() override { return GetManifest(root_); }

  Result<ManifestBlob> GetManifest(const Descriptor& desc) override {
    if (desc.size > kMaxManifestBytes) {
      return Error(Errc::kTooBig, fmt::format("manifest {} is {} bytes, over the limit", desc.digest.str(), desc.size));
    }
    auto body = ReadFile(BlobPath(desc.digest));
    if (!body.ok()) return body.error().Wrap(fmt::format("{}: manifest {}", Describe(), desc.digest.str()));
    ManifestBlob m;
    m.body = std::move(body).value();
    m.media_type = desc.media_type;
    UCRFS_ASSIGN(m.digest, ManifestDigest(m.body, desc.digest.algorithm()));
    UCRFS_TRY(VerifyDigest(desc.digest, m.digest, "manifest"));
    return m;
  }

  // Looked up in index.json as it was when the layout was opened.
  Result<std::optional<ManifestBlob>> GetTaggedManifest(const std::string& tag) override {
    const Descriptor* d = FindRefName(entries_, tag);
    if (d == nullptr) return std::optional<ManifestBlob>();
    UCRFS_ASSIGN(ManifestBlob m, GetManifest(*d));
    return std::optional<ManifestBlob>(std::move(m));
  }

  Result<std::string> GetBlobRange(const Descriptor& desc, uint64_t offset, uint64_t length) override {
    auto r = ReadFileRange(BlobPath(desc.digest), offset, length);
    if (!r.ok()) return r.error().Wrap(fmt::format("{}: blob {}", Describe(), desc.digest.str()));
    return r;
  }

  Status GetBlob(const Descriptor& desc, BlobSink& sink) override {
    Status st = StreamFile(BlobPath(desc.digest), desc.size, sink);
    if (!st.ok()) return st.error().Wrap(fmt::format("{}: blob {}", Describe(), desc.digest.str()));
    return Ok();
  }

 private:
  std::string BlobPath(const Digest& d) const {
    return fmt::format("{}/blobs/{}/{}", dir_, d.algorithm_name(), d.hex());
  }

  const std::string dir_;
  const std::string tag_;
  const Descriptor root_;
  const std::vector<Descriptor> entries_;  // index.json's manifests
};

Result<Descriptor> ParseIndexEntry(const nlohmann::json& e, size_t i) {
  if (!e.is_object() || !e.contains("digest") || !e["digest"].is_string() || !e.contains("mediaType") ||
      !e["mediaType"].is_string()) {
    return Error(Errc::kMalformed, fmt::format("index.json: manifests[{}] lacks mediaType or digest", i));
  }
  Descriptor d;
  d.media_type = e["mediaType"].get<std::string>();
  UCRFS_ASSIGN(d.digest, Digest::Parse(e["digest"].get<std::string>()));
  if (e.contains("size") && e["size"].is_number_integer()) d.size = e["size"].get<int64_t>();
  if (e.contains("annotations") && e["annotations"].is_object()) {
    for (const auto& [k, v] : e["annotations"].items()) {
      if (v.is_string()) d.annotations[k] = v.get<std::string>();
    }
  }
  return d;
}

}  // namespace

Result<std::unique_ptr<ImageSource>> OpenOciLayoutSource(const std::string& dir, const std::string& tag) {
  std::string where = fmt::format("OCI layout {}", dir);
  auto layout = ReadFile(dir + "/oci-layout");
  if (!layout.ok()) {
    if (layout.error().code() == Errc::kNotFound) {
      return Error(Errc::kNotFound, fmt::format("{}: not an OCI image layout (no oci-layout file)", where));
    }
    return layout.error().Wrap(where);
  }
  auto lj = nlohmann::json::parse(*layout, nullptr, false);
  if (!lj.is_object() || !lj.contains("imageLayoutVersion") || !lj["imageLayoutVersion"].is_string()) {
    return Error(Errc::kMalformed, fmt::format("{}: oci-layout has no imageLayoutVersion", where));
  }
  UCRFS_ASSIGN(std::string index_body, ReadFile(dir + "/index.json"));
  auto ij = nlohmann::json::parse(index_body, nullptr, false);
  if (!ij.is_object() || !ij.contains("manifests") || !ij["manifests"].is_array()) {
    return Error(Errc::kMalformed, fmt::format("{}: index.json has no manifests array", where));
  }
  std::vector<Descriptor> entries;
  for (size_t i = 0; i < ij["manifests"].size(); ++i) {
    UCRFS_ASSIGN(Descriptor d, ParseIndexEntry(ij["manifests"][i], i));
    entries.push_back(std::move(d));
  }
  const Descriptor* root = nullptr;
  if (tag.empty()) {
    if (entries.size() != 1) {
      return Error(Errc::kInvalidArgument,
                   fmt::format("{} holds {} images; name one as oci:{}:TAG", where, entries.size(), dir));
    }
    root = &entries[0];
  } else {
    root = FindRefName(entries, tag);
    if (root == nullptr) return Error(Errc::kNotFound, fmt::format("{}: no image tagged '{}'", where, tag));
  }
  Descriptor root_desc = *root;
  return std::unique_ptr<ImageSource>(new OciLayoutSource(dir, tag, std::move(root_desc), std::move(entries)));
}

}  // namespace ucrfs::fetch
