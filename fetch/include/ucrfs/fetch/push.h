// Pushing to a registry: blobs and one manifest under a tag, for artifacts
// that ucrfs stores beside an image (e.g. a layer index) in its repository.
#pragma once

#include <string>
#include <vector>

#include "ucrfs/common/digest.h"
#include "ucrfs/common/error.h"
#include "ucrfs/fetch/manifest.h"
#include "ucrfs/fetch/reference.h"
#include "ucrfs/fetch/source.h"

namespace ucrfs::fetch {

// A blob to push: desc.digest and desc.size describe data.
struct PushBlob {
  Descriptor desc;
  std::string data;
};

// Pushes to the repository `ref` names (after EffectiveRef; only a registry
// reference can be pushed to, anything else is kUnsupported): every blob the
// registry does not have yet, then `manifest` with Content-Type `media_type`
// under `tag`. Every blob is checked against its descriptor's digest and size
// before anything is sent; the registry's Docker-Content-Digest, when it
// sends one, must equal what was pushed. Authentication asks for pull and
// push on the repository. Returns the manifest's sha256 digest.
Result<Digest> PushArtifact(const ImageRef& ref, const SourceOptions& opts, const std::vector<PushBlob>& blobs,
                            const std::string& manifest, const std::string& media_type, const std::string& tag);

}  // namespace ucrfs::fetch
