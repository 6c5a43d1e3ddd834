#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include "registry.h"
#include "ucrfs/fetch/appc.h"
#include "sources.h"
#include "ucrfs/common/file.h"
#include "ucrfs/common/log.h"

namespace ucrfs::fetch {
namespace {

class RegistrySource final : public ImageSource {
 public:
  RegistrySource(Reference ref, std::unique_ptr<RegistryClient> client)
      : ref_(std::move(ref)), client_(std::move(client)) {}

  std::string Describe() const override { return ref_.str(); }

  Result<ManifestBlob> GetRootManifest() override {
    std::optional<Digest> expected;
    if (!ref_.digest.empty()) {
      UCRFS_ASSIGN(Digest d, Digest::Parse(ref_.digest));
      expected = d;
    }
    return client_->GetManifest(ref_.ManifestReference(), expected);
  }

  Result<ManifestBlob> GetManifest(const Descriptor& desc) override {
    UCRFS_ASSIGN(ManifestBlob m, client_->GetManifest(desc.digest.str(), desc.digest));
    if (m.media_type.empty()) m.media_type = desc.media_type;
    return m;
  }

  Result<std::optional<ManifestBlob>> GetTaggedManifest(const std::string& tag) override {
    return client_->GetTaggedManifest(tag);
  }

  Status GetBlob(const Descriptor& desc, BlobSink& sink) override { return client_->GetBlob(desc, sink); }

  Result<std::string> GetBlobRange(const Descriptor& desc, uint64_t offset, uint64_t length) override {
    return client_->GetBlobRange(desc, offset, length);
  }

  Result<std::string> GetBlobRangeEarly(const Descriptor& desc, uint64_t offset, uint64_t length,
                                        uint64_t early_bytes, const EarlyBytes& early) override {
    return client_->GetBlobRange(desc, offset, length, early_bytes, &early);
  }

 private:
  const Reference ref_;
  std::unique_ptr<RegistryClient> client_;
};

}  // namespace

Result<std::unique_ptr<ImageSource>> OpenRegistrySource(const Reference& ref, const SourceOptions& opts) {
  Reference n = ref.Normalized(opts.default_registry.empty() ? kDefaultRegistry : opts.default_registry);
  UCRFS_ASSIGN(auto client, RegistryClient::Create(n.registry, n.repository, opts));
  UCRFS_TRY(client->Ping());
  return std::unique_ptr<ImageSource>(new RegistrySource(std::move(n), std::move(client)));
}

Status StreamFile(const std::string& path, int64_t expected_size, BlobSink& sink) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError("open " + path);
  char buf[1 << 16];
  int64_t total = 0;
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("read " + path);
    }
    if (n == 0) break;
    total += n;
    UCRFS_TRY(sink.Write(std::string_view(buf, static_cast<size_t>(n))));
  }
  if (expected_size >= 0 && total != expected_size) {
    return Error(Errc::kMalformed, fmt::format("{} has {} bytes, its descriptor says {}", path, total, expected_size));
  }
  return Ok();
}

Result<ImageRef> EffectiveRef(const ImageRef& ref, const SourceOptions& opts) {
  if (ref.transport == Transport::kAppc) {
    ImageRef out = ref;
    out.appc = WithAppcDefaults(ref.appc, opts.appc_platform);
    return out;
  }
  if (ref.transport != Transport::kDocker) return ref;
  ImageRef out = ref;
  if (!opts.archive_dir.empty()) {
    // Mesos' image tar puller: DIR/<reference as given>.tar.
    std::string file = fmt::format("{}/{}.tar", opts.archive_dir, ref.reference.str());
    if (!PathExists(file) && ref.reference.tag.empty() && ref.reference.digest.empty()) {
      std::string tagged = fmt::format("{}/{}:latest.tar", opts.archive_dir, ref.reference.str());
      if (PathExists(tagged)) file = tagged;
    }
    if (!PathExists(file)) {
      return Error(Errc::kNotFound, fmt::format("no archive for image '{}' at '{}'", ref.reference.str(), file));
    }
    out.transport = Transport::kDockerArchive;
    out.path = file;
    out.has_reference = true;
    return out;
  }
  if (out.reference.registry.empty() && !opts.default_registry.empty()) {
    out.reference.registry = opts.default_registry;
  }
  return out;
}

Result<std::unique_ptr<ImageSource>> OpenSource(const ImageRef& given, const SourceOptions& opts) {
  UCRFS_ASSIGN(ImageRef ref, EffectiveRef(given, opts));
  switch (ref.transport) {
    case Transport::kOciLayout:
      return OpenOciLayoutSource(ref.path, ref.oci_tag);
    case Transport::kDockerArchive:
      return OpenDockerArchiveSource(ref.path, ref.has_reference ? &ref.reference : nullptr);
    case Transport::kDocker:
      return OpenRegistrySource(ref.reference, opts);
    case Transport::kAppc:
      // An Appc image is not a manifest with blobs: index::PullAppc fetches it.
      return Error(Errc::kUnsupported, fmt::format("{}: appc images are pulled whole (ucrfs pull or mount)", ref.str()));
  }
  return Error(Errc::kInternal, "unknown transport");
}

}  // namespace ucrfs::fetch
