// What an image says about the process it runs: the runtime half of an image
// config (Docker/OCI `config.config`, or an Appc manifest's `app`), as the
// provisioner hands it to whoever launches the container.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ucrfs/common/error.h"
#include "ucrfs/index/store.h"

namespace ucrfs::index {

// The media type under which an Appc image manifest is the ImageRecord's
// config (fetch/appc.h puts it there).
inline constexpr const char* kAppcManifestMediaType = "application/vnd.appc.image-manifest+json";

struct RuntimeConfig {
  enum class Kind { kDocker, kAppc };
  Kind kind = Kind::kDocker;
  // Docker: Entrypoint and Cmd as the image gives them. Appc: `app.exec` is
  // the entrypoint and cmd is empty.
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "NAME=value", in the image's order
  std::string working_dir;       // empty: not set
  // Docker: "", "name", "uid", "name:group", "uid:gid" ... as in the config.
  // Appc: the app's user; `group` its group (Docker: always empty).
  std::string user;
  std::string group;
  bool has_app = false;  // Appc: the manifest has an `app` section

  // The config blob: an OCI/Docker image config, or (by media type) an Appc
  // image manifest. Malformed fields are kMalformed naming the field.
  static Result<RuntimeConfig> Parse(const std::string& media_type, std::string_view body);
};

// Reads and parses the config of an image in `store`.
Result<RuntimeConfig> RuntimeConfigOf(const Store& store, const ImageRecord& image);

}  // namespace ucrfs::index
