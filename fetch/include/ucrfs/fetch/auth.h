// Registry authentication inputs: WWW-Authenticate challenges and docker
// config.json credentials. Parsing only; the flow lives in the registry client.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ucrfs/common/error.h"

namespace ucrfs::fetch {

// One challenge of a WWW-Authenticate header (RFC 7235): scheme plus
// auth-params. Scheme is lowercased ("bearer", "basic"); parameter names are
// lowercased; values are unquoted with backslash escapes resolved.
struct AuthChallenge {
  std::string scheme;
  std::map<std::string, std::string> params;

  const std::string* Param(const std::string& name) const;
};

// Parses a header value that may hold several challenges, e.g.
//   Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"
//   Basic realm="Registry Realm"
// Quoted values may contain commas. Errors on an empty header or an
// unterminated quoted string.
Result<std::vector<AuthChallenge>> ParseWwwAuthenticate(std::string_view header);

struct Credential {
  std::string username;
  std::string password;  // never log this
};

// A docker client config: `{"auths": {KEY: {"auth": base64(user:pass)} |
// {"username","password"}}}` (~/.docker/config.json) or the legacy flat
// `{KEY: {"auth": ..., "email": ...}}` (~/.dockercfg). credsStore and
// credHelpers are not consulted (they need helper binaries).
class DockerConfig {
 public:
  static Result<DockerConfig> Parse(std::string_view json);
  // Loads from path if given, else $DOCKER_CONFIG/config.json, else
  // ~/.docker/config.json. A missing default file is an empty config; a
  // missing explicit path is an error.
  static Result<DockerConfig> Load(const std::optional<std::string>& path);

  // Credential for a registry "host[:port]" (as in a Reference, after
  // normalization). Keys match after ParseAuthUrl on both sides and after
  // dropping a default port (:443); any docker.io host matches any docker.io
  // key (index.docker.io/v1/, docker.io, registry-1.docker.io).
  std::optional<Credential> Find(std::string_view registry) const;

  // KEY -> raw entry, as parsed (for tests).
  const std::map<std::string, Credential>& entries() const { return entries_; }

 private:
  std::map<std::string, Credential> entries_;
};

// Mesos' parseAuthUrl: strips "http://" / "https://" and everything from the
// first '/' on: "https://registry.example.com/v1/" -> "registry.example.com".
std::string ParseAuthUrl(std::string_view url);

}  // namespace ucrfs::fetch
