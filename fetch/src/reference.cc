#include "ucrfs/fetch/reference.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <filesystem>
#include <system_error>

#include <fmt/format.h>

#include "ucrfs/common/digest.h"

namespace ucrfs::fetch {
namespace {

// Docker's limit on the length of a name (registry + repository).
constexpr size_t kMaxNameLength = 255;
constexpr size_t kMaxTagLength = 128;

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsAlnum(char c) { return IsLowerAlnum(c) || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool HasUpper(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

Error BadRef(std::string_view ref, std::string_view why) {
  return Error(Errc::kInvalidArgument, fmt::format("invalid image reference '{}': {}", ref, why));
}

// path-component := [a-z0-9]+ (separator [a-z0-9]+)*, separator := [_.] | __ | -+
bool IsPathComponent(std::string_view c) {
  size_t i = 0;
  auto alnum_run = [&] {
    size_t start = i;
    while (i < c.size() && IsLowerAlnum(c[i])) ++i;
    return i > start;
  };
  if (!alnum_run()) return false;
  while (i < c.size()) {
    if (c[i] == '.') {
      ++i;
    } else if (c[i] == '_') {
      ++i;
      if (i < c.size() && c[i] == '_') ++i;
    } else if (c[i] == '-') {
      while (i < c.size() && c[i] == '-') ++i;
    } else {
      return false;
    }
    if (!alnum_run()) return false;
  }
  return true;
}

// domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
bool IsDomainComponent(std::string_view c) {
  if (c.empty() || !IsAlnum(c.front()) || !IsAlnum(c.back())) return false;
  return std::all_of(c.begin(), c.end(), [](char ch) { return IsAlnum(ch) || ch == '-'; });
}

bool IsIpv6Literal(std::string_view host) {
  if (host.size() < 3 || host.front() != '[' || host.back() != ']') return false;
  std::string_view in = host.substr(1, host.size() - 2);
  return std::all_of(in.begin(), in.end(), [](char c) {
    return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' || c == '.';
  });
}

// Host part of a registry: dot-separated domain components or "[ipv6]".
bool IsRegistryHost(std::string_view host) {
  if (IsIpv6Literal(host)) return true;
  if (host.empty()) return false;
  size_t start = 0;
  for (;;) {
    size_t dot = host.find('.', start);
    if (!IsDomainComponent(host.substr(start, dot - start))) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

Status ValidateRepository(std::string_view ref, std::string_view repo) {
  if (repo.empty()) return BadRef(ref, "empty repository name");
  if (HasUpper(repo)) return BadRef(ref, fmt::format("repository name '{}' must be lowercase", repo));
  size_t start = 0;
  for (;;) {
    size_t slash = repo.find('/', start);
    std::string_view comp = repo.substr(start, slash - start);
    if (!IsPathComponent(comp)) {
      return BadRef(ref, fmt::format("invalid repository path component '{}'", comp));
    }
    if (slash == std::string_view::npos) return Ok();
    start = slash + 1;
  }
}

Status ValidateRegistry(std::string_view ref, std::string_view registry) {
  auto ep = ParseRegistryEndpoint(registry);
  if (!ep.ok()) return BadRef(ref, ep.error().message());
  if (!IsRegistryHost(ep->host)) return BadRef(ref, fmt::format("invalid registry host '{}'", ep->host));
  return Ok();
}

bool IsDockerHubHost(std::string_view registry) {
  std::string_view host = registry.substr(0, registry.find(':'));
  return host == "docker.io" || (host.size() > 10 && host.ends_with(".docker.io"));
}

// The split position of "host:port" (the colon), or npos when there is no
// port. A bracketed IPv6 host keeps its colons.
size_t PortColon(std::string_view registry) {
  size_t from = 0;
  if (registry.starts_with('[')) {
    size_t close = registry.find(']');
    if (close == std::string_view::npos) return std::string_view::npos;
    from = close;
  }
  return registry.find(':', from);
}

bool IsLoopbackHost(std::string_view host) { return host == "localhost" || host == "127.0.0.1" || host == "[::1]"; }

std::string AbsolutePath(const std::string& path) {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::absolute(path, ec);
  if (ec) return path;
  std::string s = p.lexically_normal().string();
  // "/a/b/" and "/a/b" name the same directory; keep one key for both.
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

}  // namespace

namespace {

// AC Identifier characters (appc spec types.md), plus ':' for host:port.
bool IsAppcNameChar(char c) {
  return IsLowerAlnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '/' || c == ':';
}

Status ValidateAppcName(std::string_view name) {
  if (name.empty()) return Error(Errc::kInvalidArgument, "empty appc image name");
  if (name.size() > kMaxNameLength) return Error(Errc::kInvalidArgument, "appc image name longer than 255 characters");
  for (char c : name) {
    if (!IsAppcNameChar(c)) {
      return Error(Errc::kInvalidArgument, fmt::format("appc image name '{}': character '{}' is not allowed "
                                                       "(lowercase letters, digits and -._~/: only)", name, c));
    }
  }
  if (!IsLowerAlnum(name.front()) || !IsLowerAlnum(name.back())) {
    return Error(Errc::kInvalidArgument,
                 fmt::format("appc image name '{}' must start and end with a letter or digit", name));
  }
  // Components become directories under a local discovery prefix.
  size_t start = 0;
  for (;;) {
    size_t slash = name.find('/', start);
    std::string_view comp = name.substr(start, slash - start);
    if (comp.empty() || comp == "." || comp == "..") {
      return Error(Errc::kInvalidArgument, fmt::format("appc image name '{}' has an empty, '.' or '..' component", name));
    }
    if (slash == std::string_view::npos) return Ok();
    start = slash + 1;
  }
}

}  // namespace

Status ValidateAppcImageId(std::string_view id) {
  constexpr std::string_view kPrefix = "sha512-";
  bool ok = id.starts_with(kPrefix) && id.size() == kPrefix.size() + 128 &&
            std::all_of(id.begin() + kPrefix.size(), id.end(), [](char c) { return IsDigit(c) || (c >= 'a' && c <= 'f'); });
  if (!ok) return Error(Errc::kInvalidArgument, fmt::format("appc image id '{}' is not sha512-<128 lowercase hex>", id));
  return Ok();
}

Status ValidateAppcLabel(std::string_view name, std::string_view value) {
  if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) { return IsAppcNameChar(c) && c != ':'; }) ||
      !IsLowerAlnum(name.front()) || !IsLowerAlnum(name.back())) {
    return Error(Errc::kInvalidArgument, fmt::format("appc label name '{}' is not an AC identifier", name));
  }
  bool bad_char = std::any_of(value.begin(), value.end(), [](char c) {
    return c == '/' || c == ',' || c == '@' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
  if (value.empty() || value == "." || value == ".." || bad_char) {
    return Error(Errc::kInvalidArgument,
                 fmt::format("appc label {}='{}': values must be non-empty, not '.' or '..', without '/', ',' or '@'",
                             name, value));
  }
  return Ok();
}

Result<AppcRef> AppcRef::Parse(std::string_view s) {
  AppcRef r;
  std::string_view rest = s;
  if (size_t at = rest.find('@'); at != std::string_view::npos) {
    r.id = rest.substr(at + 1);
    UCRFS_TRY(ValidateAppcImageId(r.id));
    rest = rest.substr(0, at);
  }
  size_t comma = rest.find(',');
  r.name = rest.substr(0, comma);
  UCRFS_TRY(ValidateAppcName(r.name));
  while (comma != std::string_view::npos) {
    rest = rest.substr(comma + 1);
    comma = rest.find(',');
    std::string_view label = rest.substr(0, comma);
    size_t eq = label.find('=');
    if (eq == std::string_view::npos) {
      return Error(Errc::kInvalidArgument, fmt::format("appc label '{}' is not NAME=VALUE", label));
    }
    std::string name(label.substr(0, eq));
    std::string value(label.substr(eq + 1));
    UCRFS_TRY(ValidateAppcLabel(name, value));
    if (!r.labels.emplace(name, value).second) {
      return Error(Errc::kInvalidArgument, fmt::format("appc label '{}' given twice", name));
    }
  }
  return r;
}

std::string AppcRef::str() const {
  std::string out = name;
  for (const auto& [k, v] : labels) out += "," + k + "=" + v;
  if (!id.empty()) out += "@" + id;
  return out;
}

bool IsValidTag(std::string_view tag) {
  if (tag.empty() || tag.size() > kMaxTagLength) return false;
  auto word = [](char c) { return IsAlnum(c) || c == '_'; };
  if (!word(tag.front())) return false;
  return std::all_of(tag.begin(), tag.end(), [&](char c) { return word(c) || c == '.' || c == '-'; });
}

Result<Reference> Reference::Parse(std::string_view s) {
  if (s.empty()) return BadRef(s, "empty reference");
  Reference r;
  std::string_view rest = s;
  if (size_t at = rest.find('@'); at != std::string_view::npos) {
    if (rest.find('@', at + 1) != std::string_view::npos) return BadRef(s, "multiple '@' symbols");
    std::string_view digest = rest.substr(at + 1);
    auto d = Digest::Parse(digest);
    if (!d.ok()) return BadRef(s, fmt::format("invalid digest '{}'", digest));
    r.digest = d->str();
    rest = rest.substr(0, at);
  }
  // A ':' after the last '/' starts the tag; one before it is a registry port.
  if (size_t colon = rest.rfind(':'); colon != std::string_view::npos) {
    std::string_view tail = rest.substr(colon + 1);
    if (tail.find('/') == std::string_view::npos) {
      if (!IsValidTag(tail)) return BadRef(s, fmt::format("invalid tag '{}'", tail));
      r.tag = tail;
      rest = rest.substr(0, colon);
    }
  }
  if (rest.size() > kMaxNameLength) return BadRef(s, "name longer than 255 characters");
  size_t slash = rest.find('/');
  if (slash != std::string_view::npos) {
    std::string_view first = rest.substr(0, slash);
    if (first.find_first_of(".:") != std::string_view::npos || first == "localhost") {
      UCRFS_TRY(ValidateRegistry(s, first));
      r.registry = first;
      rest = rest.substr(slash + 1);
    }
  }
  UCRFS_TRY(ValidateRepository(s, rest));
  r.repository = rest;
  return r;
}

std::string Reference::str() const {
  std::string out;
  if (!registry.empty()) out = registry + "/";
  out += repository;
  if (!digest.empty()) {
    out += "@" + digest;
  } else if (!tag.empty()) {
    out += ":" + tag;
  }
  return out;
}

Reference Reference::Normalized(std::string_view default_registry) const {
  Reference r = *this;
  if (r.registry.empty()) r.registry = default_registry.empty() ? kDefaultRegistry : default_registry;
  if (r.registry == "docker.io" || r.registry == "index.docker.io") r.registry = kDefaultRegistry;
  // Official images live under library/ on Docker Hub only (MESOS-4877).
  if (IsDockerHubHost(r.registry) && r.repository.find('/') == std::string::npos) {
    r.repository = "library/" + r.repository;
  }
  if (r.tag.empty() && r.digest.empty()) r.tag = "latest";
  return r;
}

std::string Reference::ManifestReference() const {
  if (!digest.empty()) return digest;
  if (!tag.empty()) return tag;
  return "latest";
}

std::string RegistryEndpoint::BaseUrl() const {
  std::string url = scheme + "://" + host;
  if (port) url += ":" + std::to_string(*port);
  return url;
}

Result<RegistryEndpoint> ParseRegistryEndpoint(std::string_view registry) {
  auto bad = [&](std::string_view why) {
    return Error(Errc::kInvalidArgument, fmt::format("invalid registry '{}': {}", registry, why));
  };
  RegistryEndpoint ep;
  size_t colon = PortColon(registry);
  ep.host = registry.substr(0, colon);
  if (registry.starts_with('[') && registry.find(']') == std::string_view::npos) return bad("unterminated '['");
  if (colon != std::string_view::npos) {
    if (ep.host.empty()) return bad("empty host");
    std::string_view port = registry.substr(colon + 1);
    if (port.find(':') != std::string_view::npos) return bad("more than one ':'");
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    bool digits = !port.empty() && std::all_of(port.begin(), port.end(), IsDigit);
    if (!digits) return bad(fmt::format("port '{}' is not a number", port));
    if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
      return bad(fmt::format("port {} out of range", port));
    }
    ep.port = static_cast<uint16_t>(value);
  }
  if (ep.port == 443) {
    ep.scheme = "https";
  } else if (ep.port == 80) {
    ep.scheme = "http";
  } else if (ep.port && IsLoopbackHost(ep.host)) {
    ep.scheme = "http";
  } else {
    ep.scheme = "https";
  }
  return ep;
}

namespace {

constexpr std::string_view kDockerPrefix = "docker://";
constexpr std::string_view kOciPrefix = "oci:";
constexpr std::string_view kArchivePrefix = "docker-archive:";
constexpr std::string_view kAppcPrefix = "appc:";

// Transports other tools (skopeo, containers/image) know but ucrfs' fetch
// layer does not read; naming them beats misparsing "dir:/x" as a registry.
constexpr std::array<std::string_view, 7> kForeignTransports = {
    "dir", "oci-archive", "docker-daemon", "containers-storage", "ostree", "sif", "tarball"};

bool IsSchemeWord(std::string_view w) {
  if (w.empty() || !((w[0] >= 'a' && w[0] <= 'z') || (w[0] >= 'A' && w[0] <= 'Z'))) return false;
  return std::all_of(w.begin(), w.end(), [](char c) { return IsAlnum(c) || c == '-' || c == '+' || c == '.'; });
}

Result<ImageRef> ParseOciLayout(std::string_view full, std::string_view rest) {
  ImageRef r;
  r.transport = Transport::kOciLayout;
  size_t colon = rest.find(':');
  r.path = rest.substr(0, colon);
  if (r.path.empty()) return BadRef(full, "missing OCI layout directory");
  if (colon != std::string_view::npos) {
    r.oci_tag = rest.substr(colon + 1);
    if (r.oci_tag.empty()) return BadRef(full, "empty tag after ':'");
  }
  return r;
}

Result<ImageRef> ParseDockerArchive(std::string_view full, std::string_view rest) {
  ImageRef r;
  r.transport = Transport::kDockerArchive;
  size_t colon = rest.find(':');
  r.path = rest.substr(0, colon);
  if (r.path.empty()) return BadRef(full, "missing archive file");
  if (colon != std::string_view::npos) {
    auto ref = Reference::Parse(rest.substr(colon + 1));
    if (!ref.ok()) return ref.error();
    r.reference = std::move(*ref);
    r.has_reference = true;
  }
  return r;
}

Result<ImageRef> ParseDocker(std::string_view rest) {
  UCRFS_ASSIGN(Reference ref, Reference::Parse(rest));
  ImageRef r;
  r.transport = Transport::kDocker;
  r.reference = std::move(ref);
  return r;
}

}  // namespace

Result<ImageRef> ImageRef::Parse(std::string_view s) {
  if (s.starts_with(kAppcPrefix)) {
    auto a = AppcRef::Parse(s.substr(kAppcPrefix.size()));
    if (!a.ok()) return BadRef(s, a.error().message());
    ImageRef r;
    r.transport = Transport::kAppc;
    r.appc = std::move(*a);
    return r;
  }
  if (s.starts_with(kDockerPrefix)) return ParseDocker(s.substr(kDockerPrefix.size()));
  if (s.starts_with(kOciPrefix)) return ParseOciLayout(s, s.substr(kOciPrefix.size()));
  if (s.starts_with(kArchivePrefix)) return ParseDockerArchive(s, s.substr(kArchivePrefix.size()));
  size_t colon = s.find(':');
  if (colon != std::string_view::npos) {
    std::string_view word = s.substr(0, colon);
    if (IsSchemeWord(word) && s.substr(colon + 1).starts_with("//")) {
      return Error(Errc::kInvalidArgument,
                   fmt::format("invalid image reference '{}': unknown transport '{}'", s, word));
    }
    if (std::find(kForeignTransports.begin(), kForeignTransports.end(), word) != kForeignTransports.end()) {
      return Error(Errc::kUnsupported, fmt::format("image '{}': transport '{}' is not supported here", s, word));
    }
  }
  return ParseDocker(s);
}

std::string ImageRef::str() const {
  switch (transport) {
    case Transport::kDocker:
      return std::string(kDockerPrefix) + reference.Normalized().str();
    case Transport::kOciLayout: {
      std::string out = std::string(kOciPrefix) + AbsolutePath(path);
      if (!oci_tag.empty()) out += ":" + oci_tag;
      return out;
    }
    case Transport::kDockerArchive: {
      std::string out = std::string(kArchivePrefix) + AbsolutePath(path);
      if (has_reference) out += ":" + reference.str();
      return out;
    }
    case Transport::kAppc:
      return std::string(kAppcPrefix) + appc.str();
  }
  return {};
}

}  // namespace ucrfs::fetch
