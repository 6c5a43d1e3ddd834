// Image sources: where manifests and blobs come from. A source hands out
// bytes; it does not store them and does not know the store layout.
//
// Thread-safety: every method of an ImageSource may be called concurrently
// from several threads (a pull downloads layers in parallel).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ucrfs/common/digest.h"
#include "ucrfs/common/error.h"
#include "ucrfs/fetch/auth.h"
#include "ucrfs/fetch/manifest.h"
#include "ucrfs/fetch/reference.h"

namespace ucrfs::fetch {

// Receives a blob's bytes in order. If a transfer breaks and cannot be
// resumed where it stopped, the source calls Restart() and sends the blob
// again from its first byte.
class BlobSink {
 public:
  virtual ~BlobSink() = default;
  virtual Status Write(std::string_view data) = 0;
  virtual Status Restart() = 0;
  // Bytes accepted since the start (or the last Restart), so a source can
  // resume a broken transfer with a Range request.
  virtual uint64_t written() const = 0;
};

// A BlobSink into memory that refuses more than `limit` bytes (kTooBig,
// with the message `too_big`).
class MemorySink : public BlobSink {
 public:
  MemorySink(uint64_t limit, std::string too_big) : limit_(limit), too_big_(std::move(too_big)) {}
  void reserve(uint64_t n) { data_.reserve(std::min(n, limit_)); }
  Status Write(std::string_view data) override {
    if (data.size() > limit_ - data_.size()) return Error(Errc::kTooBig, too_big_);
    data_.append(data);
    return Ok();
  }
  Status Restart() override {
    data_.clear();
    return Ok();
  }
  uint64_t written() const override { return data_.size(); }
  std::string_view data() const { return data_; }
  std::string take() { return std::move(data_); }

 private:
  const uint64_t limit_;
  const std::string too_big_;
  std::string data_;
};

// A manifest (or index) as the source gave it, checked against its digest.
struct ManifestBlob {
  std::string body;
  std::string media_type;  // from Content-Type, a descriptor, or the body
  Digest digest = Digest::Sha256Of("");
};

struct SourceOptions {
  // Registries ("host[:port]") to reach over plain HTTP, or over HTTPS without
  // verifying the certificate.
  std::vector<std::string> insecure_registries;
  std::string registry_ca_file;   // extra CA bundle for TLS verification
  DockerConfig docker_config;
  // Registry for references that name none ("host[:port]"); empty means
  // registry-1.docker.io. Set by --docker-registry URL.
  std::string default_registry;
  std::string default_registry_scheme;  // "http"/"https" from that URL, or empty
  // Directory of `docker save` archives (--docker-registry DIR): bare names
  // resolve to DIR/<name>[:tag].tar instead of a registry.
  std::string archive_dir;
  // Appc simple discovery (appc.h): where `appc:` images are found,
  // "{prefix}{name}-{version}-{os}-{arch}.aci"; and the platform whose os and
  // arch an appc reference gets when it names none.
  std::string appc_discovery_prefix = "https://";
  Platform appc_platform = Platform::Host();
  // Retry policy for transient failures (connect errors, 5xx, 429).
  int max_attempts = 5;
  int retry_base_delay_ms = 250;
  int retry_max_delay_ms = 30000;
  int connect_timeout_s = 30;
  int stall_timeout_s = 60;  // abort a transfer below 1 B/s for this long
  int request_timeout_s = 0;  // abort any one request taking longer; 0: no limit (whole-layer downloads)
  int max_connections = 8;    // requests in flight to one registry at once
};

class ImageSource {
 public:
  virtual ~ImageSource() = default;

  // Human-readable name of what this source reads, for messages.
  virtual std::string Describe() const = 0;

  // The manifest or index that the image reference names, verified: against
  // the reference's digest if it has one, else against what the source
  // states (Docker-Content-Digest, an index descriptor).
  virtual Result<ManifestBlob> GetRootManifest() = 0;

  // A manifest by digest (an entry of an index), verified against it.
  virtual Result<ManifestBlob> GetManifest(const Descriptor& desc) = 0;

  // The manifest tagged `tag` in the image's repository (a registry tag, or
  // an OCI layout's org.opencontainers.image.ref.name), verified as
  // GetRootManifest verifies; nullopt when there is no such tag (a registry's
  // 404 / MANIFEST_UNKNOWN / NAME_UNKNOWN, no such ref name in the layout; a
  // docker archive has no tags to look up). Other failures are errors.
  virtual Result<std::optional<ManifestBlob>> GetTaggedManifest(const std::string& tag) = 0;

  // Streams a blob (config or layer) into sink. The caller verifies the digest
  // of what it received; the source only guarantees the byte count matches
  // desc.size when that is known.
  virtual Status GetBlob(const Descriptor& desc, BlobSink& sink) = 0;

  // `length` bytes of a blob from `offset` (fewer only at the blob's end), for
  // lazy layers. The caller verifies what it decodes from them. kUnsupported
  // for sources that cannot read a range without reading the whole blob.
  virtual Result<std::string> GetBlobRange(const Descriptor& desc, uint64_t offset, uint64_t length) = 0;

  // Receives the first bytes of a range as soon as they have arrived.
  using EarlyBytes = std::function<void(std::string_view first)>;

  // GetBlobRange, calling `early` once, on the calling thread, with the
  // range's first `early_bytes` bytes as soon as they have arrived, while the
  // rest are still on their way: a lazy read needs the front of a request
  // that also brings what later reads may want. Not called when the request
  // fails before then; a failure after it is returned as from GetBlobRange.
  // Sources that cannot tell call it once everything has arrived.
  virtual Result<std::string> GetBlobRangeEarly(const Descriptor& desc, uint64_t offset, uint64_t length,
                                                uint64_t early_bytes, const EarlyBytes& early) {
    auto r = GetBlobRange(desc, offset, length);
    if (r.ok() && early && r->size() >= early_bytes) early(std::string_view(*r).substr(0, early_bytes));
    return r;
  }
};

// What an ImageRef names once the options are applied: a bare name under
// --docker-registry DIR becomes the docker-archive DIR/<name>[:tag].tar; a
// name without a registry gets opts.default_registry. The result's str() is
// the image's key in the store.
Result<ImageRef> EffectiveRef(const ImageRef& ref, const SourceOptions& opts);

// Opens the source an ImageRef names (after EffectiveRef).
Result<std::unique_ptr<ImageSource>> OpenSource(const ImageRef& ref, const SourceOptions& opts);

// A fully resolved single-platform image: everything needed to fetch its
// layers and to run it. Nothing here has been stored yet.
struct ResolvedImage {
  std::optional<ManifestBlob> index;  // when the reference named an index
  ManifestBlob manifest;              // the platform's image manifest
  ImageManifest parsed;
  Descriptor config_desc;             // for schema1: a synthesized descriptor
  std::string config_body;            // verified against config_desc.digest
  ImageConfig config;
  Platform platform;                  // the platform that was resolved
};

// Fetches the root manifest; if it is an index, selects `want`; fetches and
// verifies the config. schema1 images get their config synthesized.
Result<ResolvedImage> Resolve(ImageSource& source, const Platform& want);

}  // namespace ucrfs::fetch
