// Manifests, indexes and image configs: OCI image manifest and index, Docker
// schema2 manifest and manifest list, Docker schema1 (read only), and the
// image config's runtime part. Pure parsing: no I/O.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "ucrfs/common/digest.h"
#include "ucrfs/common/error.h"

namespace ucrfs::fetch {

namespace media {
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kOciLayerTar = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kOciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kOciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kOciLayerNdTar = "application/vnd.oci.image.layer.nondistributable.v1.tar";
inline constexpr std::string_view kOciLayerNdGzip = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
inline constexpr std::string_view kOciLayerNdZstd = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
inline constexpr std::string_view kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kDockerSchema1 = "application/vnd.docker.distribution.manifest.v1+json";
inline constexpr std::string_view kDockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws";
inline constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kDockerLayerTar = "application/vnd.docker.image.rootfs.diff.tar";
inline constexpr std::string_view kDockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kDockerLayerForeignGzip = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
inline constexpr std::string_view kDockerLayerZstd = "application/vnd.docker.image.rootfs.diff.tar.zstd";
// An uncompressed Appc ACI as a layer (appc.h): a tar whose filesystem is
// under rootfs/; the index strips that prefix and drops everything else.
inline constexpr std::string_view kAppcAci = "application/vnd.appc.aci.tar";

// The Accept header value for manifest requests: every type above that a
// manifest GET may return, most specific first.
std::string ManifestAcceptHeader();
}  // namespace media

enum class Compression { kNone, kGzip, kZstd };

// Compression of a layer media type, or kUnsupported for a media type that is
// not a filesystem layer ucrfs can read.
Result<Compression> LayerCompression(std::string_view media_type);

struct Platform {
  std::string os;            // "linux"
  std::string architecture;  // GOARCH: "amd64", "arm64", "arm", ...
  std::string variant;       // "v8", "v7", or empty
  std::string os_version;
  std::vector<std::string> os_features;

  // "os/arch[/variant]"; os and arch required. Normalizes like containerd:
  // aarch64 -> arm64, x86_64/x86-64 -> amd64, armhf -> arm/v7, armel -> arm/v6,
  // i386/i686 -> 386; arm64 with variant "v8" is stored as variant "".
  static Result<Platform> Parse(std::string_view s);
  // The running machine's platform (uname), normalized as above.
  static Platform Host();
  std::string str() const;  // "linux/amd64", "linux/arm/v7"

  // Whether an index entry of platform `candidate` serves a machine that asked
  // for `*this`: os and architecture equal (after normalization) and, when
  // this has a variant, the candidate's variant equals it (arm64: "" == "v8").
  bool Matches(const Platform& candidate) const;

  friend bool operator==(const Platform&, const Platform&) = default;
};

struct Descriptor {
  std::string media_type;
  Digest digest = Digest::Sha256Of("");
  int64_t size = -1;  // -1: unknown (schema1 layers)
  std::vector<std::string> urls;
  std::map<std::string, std::string> annotations;
  std::optional<Platform> platform;
};

enum class ManifestKind { kOciManifest, kDockerSchema2, kDockerSchema1, kOciIndex, kDockerManifestList };

// A single-platform image manifest.
struct ImageManifest {
  ManifestKind kind = ManifestKind::kOciManifest;
  std::string media_type;
  // The config blob. Absent for schema1, whose config is synthesized into
  // schema1_config (the `v1Compatibility` of the top history entry).
  std::optional<Descriptor> config;
  std::vector<Descriptor> layers;  // base first
  std::map<std::string, std::string> annotations;
  std::string schema1_config;  // schema1 only: JSON of the image config
};

// A multi-platform index (OCI index or Docker manifest list).
struct ImageIndex {
  ManifestKind kind = ManifestKind::kOciIndex;
  std::string media_type;
  std::vector<Descriptor> manifests;
  std::map<std::string, std::string> annotations;
};

using ParsedManifest = std::variant<ImageManifest, ImageIndex>;

// Parses a manifest body. content_type is the HTTP Content-Type (parameters
// like "; charset=utf-8" ignored) or the media type recorded by the source;
// when it is empty or generic (application/json, text/plain,
// application/octet-stream) the body's `mediaType` decides, and failing that
// the shape (schemaVersion 1 -> schema1, `manifests` -> OCI index, `config` +
// `layers` -> OCI manifest). A body `mediaType` that contradicts a specific
// content_type is kMalformed. Validation: schemaVersion 2 (1 for schema1),
// every digest valid, sizes non-negative, config present with a config media
// type, schema1 fsLayers/history non-empty and of equal length. An image
// manifest with zero layers is valid (e.g. scratch images with only a config).
// Unknown manifest media types are kUnsupported.
Result<ParsedManifest> ParseManifest(std::string_view body, std::string_view content_type);

// The digest that names a manifest body: sha256 of the bytes, except for a
// signed schema1 (prettyjws) manifest, whose digest is taken over the JWS
// payload (the body with the "signatures" member removed, rebuilt from the
// first signature's protected header formatLength/formatTail).
Result<Digest> ManifestDigest(std::string_view body, DigestAlgorithm algo = DigestAlgorithm::kSha256);

// Picks the index entry for `want`: the first entry whose platform Matches.
// Entries without a platform, or with os "unknown" (attestations), are never
// chosen. kNotFound naming the wanted platform and listing the available ones.
Result<Descriptor> SelectPlatform(const ImageIndex& index, const Platform& want);

// The runtime part of an image config (`config` object). Absent lists stay
// empty; has_entrypoint/has_cmd tell an explicit null/[] from "not set".
struct RuntimeConfig {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  bool has_entrypoint = false;  // "Entrypoint" is a member of config, even as null or []
  bool has_cmd = false;         // "Cmd" is a member of config, even as null or []
  std::vector<std::string> env;
  std::string working_dir;
  std::string user;
  std::vector<std::string> volumes;         // keys of Volumes
  std::vector<std::string> exposed_ports;   // keys of ExposedPorts
  std::map<std::string, std::string> labels;
  std::string stop_signal;
};

struct ImageConfig {
  Platform platform;
  RuntimeConfig runtime;
  nlohmann::json config;  // the raw `config` object (null when absent)
  std::vector<Digest> diff_ids;  // rootfs.diff_ids (empty for schema1)
  std::string created;
};

// Parses an image config (OCI config or Docker v1 image JSON, including a
// schema1 v1Compatibility entry). kMalformed for non-objects, wrong field
// types, or a rootfs.type other than "layers".
Result<ImageConfig> ParseImageConfig(std::string_view body);

}  // namespace ucrfs::fetch
