// Appc images (github.com/appc/spec, spec/aci.md and spec/discovery.md):
// the image manifest, simple discovery, and fetching an ACI.
//
// An ACI is a tar (uncompressed, or compressed: recognised by its magic) of
// `manifest` (JSON, acKind ImageManifest) and `rootfs/`. Its image id is
// "sha512-" + the hex SHA-512 of the *uncompressed* tar (aci.md, "Image ID"),
// which is why the store keeps the decoded tar, under the digest sha512:<hex>.
// The index strips `rootfs/` when it indexes that tar as a layer
// (media::kAppcAci); the manifest and anything else outside rootfs/ are not
// part of the filesystem.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "ucrfs/common/digest.h"
#include "ucrfs/common/error.h"
#include "ucrfs/fetch/manifest.h"
#include "ucrfs/fetch/reference.h"
#include "ucrfs/fetch/source.h"

namespace ucrfs::fetch {

namespace media {
// (kAppcAci, the layer media type of an ACI, is in manifest.h.)
// The record ucrfs writes for a resolved Appc image (its layers in order).
inline constexpr std::string_view kAppcImage = "application/vnd.ucrfs.appc.image.v1+json";
}  // namespace media

struct AppcDependency {
  std::string image_name;
  std::string image_id;  // "sha512-<hex>", or empty
  std::map<std::string, std::string> labels;
};

struct AppcManifest {
  std::string ac_version;
  std::string name;
  std::map<std::string, std::string> labels;
  std::vector<AppcDependency> dependencies;  // in the manifest's order
  std::vector<std::string> path_whitelist;
};

// Parses and checks an image manifest: acKind "ImageManifest", a valid name,
// labels and dependencies {imageName, imageID?, labels?} of the right types,
// image ids of the form sha512-<128 hex>. kMalformed naming the field.
Result<AppcManifest> ParseAppcManifest(std::string_view body);

// The Appc spelling of a platform (types.md, "os"/"arch" labels): os as is;
// arch amd64, i386, aarch64, armv6l, armv7l, ppc64, ppc64le, s390x.
std::string AppcOs(const Platform& p);
std::string AppcArch(const Platform& p);

// The reference with the defaults discovery needs: version "latest", os and
// arch from `platform` (Appc spelling) unless given.
AppcRef WithAppcDefaults(const AppcRef& ref, const Platform& platform);

// Where simple discovery finds the image: prefix + "{name}-{version}-{os}-{arch}.aci".
// The prefix is "http://...", "https://...", "file:///dir/" or a local path
// (made absolute here); the result is an http(s) URL or an absolute path.
// Needs the version, os and arch labels (WithAppcDefaults).
Result<std::string> SimpleDiscoveryLocation(std::string_view prefix, const AppcRef& ref);

// An ACI fetched and decoded into a work directory.
struct FetchedAci {
  Digest id = Digest::Sha256Of("");  // sha512 of the uncompressed tar
  std::string tar_path;               // the uncompressed tar, in the work directory
  uint64_t size = 0;                  // its size
  std::string manifest;               // the body of its `manifest`
  uint64_t received = 0;              // bytes read from the source (compressed)
};

// Fetches the ACI at `location` (SimpleDiscoveryLocation) into `work_dir`
// (which must exist), decoding it whatever its compression, hashing the tar,
// and reading its manifest. HTTP(S) follows redirects, retries transient
// failures and honours opts' CA file and insecure hosts. A missing image is
// kNotFound naming the location.
Result<FetchedAci> FetchAci(const std::string& location, const SourceOptions& opts, const std::string& work_dir);

// The `manifest` of an uncompressed ACI on disk; kMalformed when it has no
// manifest or no rootfs/.
Result<std::string> ReadAciManifest(const std::string& tar_path);

// "sha512-<hex>" <-> the digest sha512:<hex>.
Result<Digest> AppcIdToDigest(std::string_view id);
std::string DigestToAppcId(const Digest& d);

}  // namespace ucrfs::fetch
