// Image references.
//
// Two layers:
//  * Reference: a Docker reference, `[REGISTRY[:PORT]/]REPOSITORY[:TAG|@DIGEST]`,
//    parsed by the rules Mesos and Docker share (docs: mesos-provisioner §2.2):
//    the first `/`-separated component is a registry when it contains `.` or
//    `:` or is `localhost`. Parse() fills no defaults; Normalized() applies
//    Docker's: registry `registry-1.docker.io` (docker.io and index.docker.io
//    are the same registry), `library/` before single-component names on
//    Docker Hub, tag `latest` when there is neither tag nor digest.
//  * ImageRef: what a user types on the command line, with a transport:
//    `docker://REF` or a bare REF, `oci:DIR[:TAG]`, `docker-archive:FILE[:REF]`,
//    `appc:NAME[,LABEL=VALUE]...[@IMAGEID]` (docs/appc.md).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "ucrfs/common/error.h"

namespace ucrfs::fetch {

inline constexpr std::string_view kDefaultRegistry = "registry-1.docker.io";

struct Reference {
  std::string registry;    // "host[:port]", or empty when none was given
  std::string repository;  // e.g. "library/busybox"
  std::string tag;         // empty when none was given
  std::string digest;      // "sha256:<hex>", empty when none was given

  // Parses with Mesos' rules plus Docker's validation: repository components
  // are lowercase `[a-z0-9]+([._]|__|-+)[a-z0-9]+...`, tags `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`,
  // digests `sha256:<64 hex>` or `sha512:<128 hex>`. At most one '@'.
  static Result<Reference> Parse(std::string_view s);

  // Mesos' stringify: `[registry/]repository` + (`@digest` or `:tag`); when
  // both tag and digest are present only the digest is printed.
  std::string str() const;

  // Docker's defaults (see the file comment). default_registry replaces
  // registry-1.docker.io when the reference names no registry.
  Reference Normalized(std::string_view default_registry = kDefaultRegistry) const;

  // The tag or digest to ask the registry for: digest if present, else tag,
  // else "latest".
  std::string ManifestReference() const;

  friend bool operator==(const Reference&, const Reference&) = default;
};

// Docker's tag syntax: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
bool IsValidTag(std::string_view tag);

// Mesos' GetRegistrySpec rules for a "host[:port]" string.
struct RegistryEndpoint {
  std::string host;
  std::optional<uint16_t> port;
  std::string scheme;  // "http" or "https"

  // "scheme://host[:port]".
  std::string BaseUrl() const;
};

// Port 443 -> https, 80 -> http, localhost/127.0.0.1 with any other explicit
// port -> http, everything else (including no port) -> https. Errors on an
// empty host with a colon, a non-numeric or out-of-range port, or more than
// one colon. "" parses to host "" / no port / https.
Result<RegistryEndpoint> ParseRegistryEndpoint(std::string_view registry);

// An Appc image name with its discovery labels (appc spec, discovery.md):
// `NAME[,LABEL=VALUE]...[@sha512-<128 hex>]`. NAME is an AC Identifier
// (lowercase alphanumerics and `-._~/`; ucrfs also allows `:` so that a
// name may carry a host:port, as Mesos' tests do), without empty, `.` or
// `..` components. Label values may not contain `/`, `,` or `@`: they become
// parts of a discovery URL or file name.
struct AppcRef {
  std::string name;
  std::map<std::string, std::string> labels;  // "version", "os", "arch", ...
  std::string id;  // "sha512-<128 hex>", empty when none was given

  static Result<AppcRef> Parse(std::string_view s);
  // NAME, then the labels in name order, then `@ID`.
  std::string str() const;

  friend bool operator==(const AppcRef&, const AppcRef&) = default;
};

// "sha512-<128 lowercase hex>", the form of an Appc image id.
Status ValidateAppcImageId(std::string_view id);
// An Appc label: the name an AC identifier, the value non-empty, not "." or
// "..", without '/', ',', '@' or control characters.
Status ValidateAppcLabel(std::string_view name, std::string_view value);

enum class Transport { kDocker, kOciLayout, kDockerArchive, kAppc };

struct ImageRef {
  Transport transport = Transport::kDocker;
  Reference reference;  // kDocker: the image; kDockerArchive: optional REF
  bool has_reference = false;  // kDockerArchive: whether REF was given
  std::string path;     // kOciLayout / kDockerArchive: the DIR or FILE
  std::string oci_tag;  // kOciLayout: TAG, empty when none was given
  AppcRef appc;         // kAppc: the name, labels and image id

  // Parses `docker://REF`, `REF`, `oci:DIR[:TAG]`, `docker-archive:FILE[:REF]`,
  // `appc:NAME[,LABEL=VALUE]...[@ID]`.
  // Unknown `scheme:` prefixes that are not a registry host[:port] are rejected.
  static Result<ImageRef> Parse(std::string_view s);

  // Canonical form: "docker://<normalized ref>", "oci:<abs dir>:<tag>",
  // "docker-archive:<abs file>[:<ref>]", "appc:<AppcRef::str()>". Used as the
  // store's image key (an appc reference once EffectiveRef filled in its
  // default version, os and arch).
  std::string str() const;
};

}  // namespace ucrfs::fetch
