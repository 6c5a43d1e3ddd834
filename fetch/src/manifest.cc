#include "ucrfs/fetch/manifest.h"

#include <sys/utsname.h>

#include <array>
#include <set>
#include <utility>

#include <fmt/format.h>

#include "ucrfs/common/base64.h"
#include "json_util.h"

namespace ucrfs::fetch {

namespace media {

std::string ManifestAcceptHeader() {
  // Indexes first: given the choice, a registry should hand us the index so we
  // pick the platform ourselves instead of getting its default.
  static constexpr std::array<std::string_view, 6> kTypes = {
      kOciIndex, kDockerManifestList, kOciManifest, kDockerManifest, kDockerSchema1Signed, kDockerSchema1,
  };
  std::string out;
  for (std::string_view t : kTypes) {
    if (!out.empty()) out += ", ";
    out += t;
  }
  return out;
}

}  // namespace media

namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// ---- Platforms ----------------------------------------------------------

struct ArchVariant {
  std::string arch;
  std::string variant;
};

// containerd's normalization, plus the uname spellings (armv7l, i686).
ArchVariant NormalizeArch(std::string_view arch_in, std::string_view variant_in) {
  ArchVariant a{Lower(arch_in), Lower(variant_in)};
  auto arm = [&](std::string_view v) {
    a.arch = "arm";
    if (a.variant.empty()) a.variant = v;
  };
  if (a.arch == "aarch64") {
    a.arch = "arm64";
  } else if (a.arch == "x86_64" || a.arch == "x86-64") {
    a.arch = "amd64";
  } else if (a.arch == "i386" || a.arch == "i486" || a.arch == "i586" || a.arch == "i686") {
    a.arch = "386";
  } else if (a.arch == "armhf" || a.arch == "armv7l" || a.arch == "armv7") {
    arm("v7");
  } else if (a.arch == "armel" || a.arch == "armv6l" || a.arch == "armv6") {
    arm("v6");
  } else if (a.arch == "armv5tel" || a.arch == "armv5") {
    arm("v5");
  }
  if (a.variant.size() == 1 && a.variant[0] >= '5' && a.variant[0] <= '9') a.variant = "v" + a.variant;
  // Every arm64 machine is v8 or a superset of it.
  if (a.arch == "arm64" && a.variant == "v8") a.variant.clear();
  return a;
}

std::string NormalizeOs(std::string_view os) {
  std::string o = Lower(os);
  if (o == "macos") o = "darwin";
  return o;
}

Result<Platform> ReadPlatform(const json& j, const JsonPath& at) {
  if (!j.is_object()) return at.Bad(fmt::format("expected an object, got {}", j.type_name()));
  Platform p;
  UCRFS_ASSIGN(p.architecture, ReadString(j, "architecture", at, Need::kRequired));
  UCRFS_ASSIGN(p.os, ReadString(j, "os", at, Need::kRequired));
  UCRFS_ASSIGN(p.variant, ReadString(j, "variant", at));
  UCRFS_ASSIGN(p.os_version, ReadString(j, "os.version", at));
  UCRFS_ASSIGN(p.os_features, ReadStringArray(j, "os.features", at));
  return p;
}

// ---- Descriptors --------------------------------------------------------

Result<Descriptor> ReadDescriptor(const json& j, const JsonPath& at) {
  if (!j.is_object()) return at.Bad(fmt::format("expected an object, got {}", j.type_name()));
  Descriptor d;
  UCRFS_ASSIGN(d.media_type, ReadString(j, "mediaType", at, Need::kRequired));
  UCRFS_ASSIGN(d.digest, ReadDigest(j, "digest", at));
  UCRFS_ASSIGN(std::optional<int64_t> size, ReadInt(j, "size", at, Need::kRequired));
  if (*size < 0) return at.Member("size").Bad(fmt::format("negative size {}", *size));
  d.size = *size;
  UCRFS_ASSIGN(d.urls, ReadStringArray(j, "urls", at));
  UCRFS_ASSIGN(d.annotations, ReadStringMap(j, "annotations", at));
  if (const json* p = FindMember(j, "platform")) {
    UCRFS_ASSIGN(d.platform, ReadPlatform(*p, at.Member("platform")));
  }
  return d;
}

Result<std::vector<Descriptor>> ReadDescriptorArray(const json& j, std::string_view key, const JsonPath& at) {
  const json* arr = FindMember(j, key);
  JsonPath here = at.Member(key);
  if (arr == nullptr) return here.Bad("missing");
  if (!arr->is_array()) return here.Bad(fmt::format("expected an array, got {}", arr->type_name()));
  std::vector<Descriptor> out;
  out.reserve(arr->size());
  for (size_t i = 0; i < arr->size(); ++i) {
    UCRFS_ASSIGN(Descriptor d, ReadDescriptor((*arr)[i], here.Index(i)));
    out.push_back(std::move(d));
  }
  return out;
}

Status CheckSchemaVersion(const json& j, int64_t want, const JsonPath& at) {
  UCRFS_ASSIGN(std::optional<int64_t> v, ReadInt(j, "schemaVersion", at, Need::kRequired));
  if (*v != want) return at.Member("schemaVersion").Bad(fmt::format("expected {}, got {}", want, *v));
  return Ok();
}

// ---- Manifests ----------------------------------------------------------

bool IsSchema1(std::string_view t) { return t == media::kDockerSchema1 || t == media::kDockerSchema1Signed; }

bool IsGenericContentType(std::string_view t) {
  return t.empty() || t == "application/json" || t == "text/plain" || t == "application/octet-stream" ||
         t == "binary/octet-stream";
}

// "Application/JSON; charset=utf-8" -> "application/json".
std::string CanonicalContentType(std::string_view ct) {
  ct = ct.substr(0, ct.find(';'));
  while (!ct.empty() && (ct.front() == ' ' || ct.front() == '\t')) ct.remove_prefix(1);
  while (!ct.empty() && (ct.back() == ' ' || ct.back() == '\t')) ct.remove_suffix(1);
  return Lower(ct);
}

// The media type the body is parsed as: a specific Content-Type, else the
// body's own mediaType, else a guess from the document's shape.
Result<std::string> ResolveMediaType(const json& j, std::string_view content_type, const JsonPath& at) {
  std::string ct = CanonicalContentType(content_type);
  UCRFS_ASSIGN(std::string body_type, ReadString(j, "mediaType", at));
  if (!IsGenericContentType(ct)) {
    bool agree = body_type.empty() || body_type == ct || (IsSchema1(body_type) && IsSchema1(ct));
    if (!agree) return at.Bad(fmt::format("mediaType '{}' contradicts Content-Type '{}'", Clip(body_type), ct));
    return ct;
  }
  if (!body_type.empty()) return body_type;
  if (j.contains("manifests")) return std::string(media::kOciIndex);
  if (j.contains("config") || j.contains("layers")) return std::string(media::kOciManifest);
  if (j.contains("fsLayers") || j.value("schemaVersion", json()) == 1) {
    return std::string(j.contains("signatures") ? media::kDockerSchema1Signed : media::kDockerSchema1);
  }
  return at.Bad("no mediaType and neither manifests, layers nor fsLayers: cannot tell what it is");
}

Result<ImageManifest> ParseImage(const json& j, std::string media_type, ManifestKind kind, const JsonPath& at) {
  UCRFS_TRY(CheckSchemaVersion(j, 2, at));
  ImageManifest m;
  m.kind = kind;
  m.media_type = std::move(media_type);
  const json* config = FindMember(j, "config");
  if (config == nullptr) return at.Member("config").Bad("missing");
  UCRFS_ASSIGN(Descriptor cfg, ReadDescriptor(*config, at.Member("config")));
  if (cfg.media_type != media::kOciConfig && cfg.media_type != media::kDockerConfig) {
    // A valid manifest, but of an artifact (Helm chart, signature...), not of a container image.
    return Error(Errc::kUnsupported,
                 fmt::format("manifest config media type '{}' is not a container image config", Clip(cfg.media_type)));
  }
  m.config = std::move(cfg);
  UCRFS_ASSIGN(m.layers, ReadDescriptorArray(j, "layers", at));
  UCRFS_ASSIGN(m.annotations, ReadStringMap(j, "annotations", at));
  return m;
}

Result<ImageIndex> ParseIndex(const json& j, std::string media_type, ManifestKind kind, const JsonPath& at) {
  UCRFS_TRY(CheckSchemaVersion(j, 2, at));
  ImageIndex idx;
  idx.kind = kind;
  idx.media_type = std::move(media_type);
  UCRFS_ASSIGN(idx.manifests, ReadDescriptorArray(j, "manifests", at));
  UCRFS_ASSIGN(idx.annotations, ReadStringMap(j, "annotations", at));
  return idx;
}

// A JSON array member that must be present and non-empty.
Result<const json*> NonEmptyArray(const json& j, std::string_view key, const JsonPath& at) {
  const json* v = FindMember(j, key);
  if (v == nullptr) return at.Member(key).Bad("missing");
  if (!v->is_array()) return at.Member(key).Bad(fmt::format("expected an array, got {}", v->type_name()));
  if (v->empty()) return at.Member(key).Bad("empty");
  return v;
}

struct Schema1Entry {
  Digest blob;
  std::string id;
  bool throwaway = false;
};

Result<Schema1Entry> ReadSchema1Entry(const json& fs_layer, const json& history, size_t i, const JsonPath& at) {
  JsonPath fs_at = at.Member("fsLayers").Index(i);
  JsonPath h_at = at.Member("history").Index(i);
  if (!fs_layer.is_object()) return fs_at.Bad("expected an object");
  if (!history.is_object()) return h_at.Bad("expected an object");
  UCRFS_ASSIGN(Digest blob, ReadDigest(fs_layer, "blobSum", fs_at));
  UCRFS_ASSIGN(std::string v1_text, ReadString(history, "v1Compatibility", h_at, Need::kRequired));
  JsonPath v1_at = h_at.Member("v1Compatibility");
  auto v1 = ParseJsonObject(v1_text, "schema1 v1Compatibility");
  if (!v1.ok()) return v1_at.Bad("not a JSON object");
  Schema1Entry e{std::move(blob), {}, false};
  UCRFS_ASSIGN(e.id, ReadString(*v1, "id", v1_at, Need::kRequired));
  if (const json* t = FindMember(*v1, "throwaway")) {
    if (!t->is_boolean()) return v1_at.Member("throwaway").Bad("expected a boolean");
    e.throwaway = t->get<bool>();
  }
  return e;
}

Result<ImageManifest> ParseSchema1(const json& j, std::string media_type, const JsonPath& at) {
  UCRFS_TRY(CheckSchemaVersion(j, 1, at));
  UCRFS_ASSIGN(const json* fs_layers, NonEmptyArray(j, "fsLayers", at));
  UCRFS_ASSIGN(const json* history, NonEmptyArray(j, "history", at));
  if (fs_layers->size() != history->size()) {
    return at.Bad(fmt::format("fsLayers has {} entries but history has {}", fs_layers->size(), history->size()));
  }
  ImageManifest m;
  m.kind = ManifestKind::kDockerSchema1;
  m.media_type = std::move(media_type);
  std::set<std::string> seen;
  // Both lists run child first; layers run base first. A v1 id may repeat
  // (MESOS-6654): only its first occurrence, base first, is a layer.
  for (size_t n = fs_layers->size(), i = n; i-- > 0;) {
    UCRFS_ASSIGN(Schema1Entry e, ReadSchema1Entry((*fs_layers)[i], (*history)[i], i, at));
    if (e.throwaway || !seen.insert(e.id).second) continue;
    Descriptor d;
    d.media_type = media::kDockerLayerGzip;
    d.digest = std::move(e.blob);
    d.size = -1;
    m.layers.push_back(std::move(d));
  }
  m.schema1_config = (*history).at(0).at("v1Compatibility").get<std::string>();
  return m;
}

// Wraps a Result<T> into Result<ParsedManifest>.
template <typename T>
Result<ParsedManifest> AsParsed(Result<T> r) {
  if (!r.ok()) return r.error();
  return ParsedManifest(std::move(*r));
}

Result<ParsedManifest> ParseManifestJson(const json& j, std::string_view content_type) {
  const JsonPath at{"manifest", ""};
  UCRFS_ASSIGN(std::string type, ResolveMediaType(j, content_type, at));
  if (type == media::kOciManifest) return AsParsed(ParseImage(j, type, ManifestKind::kOciManifest, at));
  if (type == media::kDockerManifest) return AsParsed(ParseImage(j, type, ManifestKind::kDockerSchema2, at));
  if (type == media::kOciIndex) return AsParsed(ParseIndex(j, type, ManifestKind::kOciIndex, at));
  if (type == media::kDockerManifestList) return AsParsed(ParseIndex(j, type, ManifestKind::kDockerManifestList, at));
  if (IsSchema1(type)) return AsParsed(ParseSchema1(j, type, at));
  return Error(Errc::kUnsupported, fmt::format("unsupported manifest media type '{}'", Clip(type)));
}

// ---- Schema1 JWS payload -----------------------------------------------

// libtrust signs the manifest with "signatures" spliced in before the final
// closing brace; the protected header records how to cut it out again: keep
// body[0:formatLength] and append base64url(formatTail).
Result<std::string> JwsPayload(std::string_view body, const json& signature) {
  const JsonPath at{"schema1 signature", "signatures[0]"};
  if (!signature.is_object()) return at.Bad("expected an object");
  UCRFS_ASSIGN(std::string protected_b64, ReadString(signature, "protected", at, Need::kRequired));
  std::optional<std::string> header_text = Base64UrlDecode(protected_b64);
  if (!header_text) return at.Member("protected").Bad("not base64url");
  const JsonPath hdr_at{"schema1 signature", "signatures[0].protected"};
  auto header = ParseJsonObject(*header_text, "schema1 signature protected header");
  if (!header.ok()) return hdr_at.Bad("not a JSON object");
  UCRFS_ASSIGN(std::optional<int64_t> length, ReadInt(*header, "formatLength", hdr_at, Need::kRequired));
  UCRFS_ASSIGN(std::string tail_b64, ReadString(*header, "formatTail", hdr_at, Need::kRequired));
  if (*length < 0 || static_cast<uint64_t>(*length) > body.size()) {
    return hdr_at.Member("formatLength").Bad(fmt::format("{} is outside the body of {} bytes", *length, body.size()));
  }
  std::optional<std::string> tail = Base64UrlDecode(tail_b64);
  if (!tail) return hdr_at.Member("formatTail").Bad("not base64url");
  std::string payload(body.substr(0, static_cast<size_t>(*length)));
  payload += *tail;
  return payload;
}

// ---- Image config -------------------------------------------------------

// Entrypoint and Cmd: absent, null, or an array of strings.
Status ReadCommand(const json& cfg, std::string_view key, const JsonPath& at, std::vector<std::string>* out,
                   bool* present) {
  *present = cfg.contains(std::string(key));
  UCRFS_ASSIGN(*out, ReadStringArray(cfg, key, at));
  return Ok();
}

Result<RuntimeConfig> ReadRuntime(const json& cfg, const JsonPath& at) {
  RuntimeConfig r;
  UCRFS_TRY(ReadCommand(cfg, "Entrypoint", at, &r.entrypoint, &r.has_entrypoint));
  UCRFS_TRY(ReadCommand(cfg, "Cmd", at, &r.cmd, &r.has_cmd));
  UCRFS_ASSIGN(r.env, ReadStringArray(cfg, "Env", at));
  UCRFS_ASSIGN(r.working_dir, ReadString(cfg, "WorkingDir", at));
  UCRFS_ASSIGN(r.user, ReadString(cfg, "User", at));
  UCRFS_ASSIGN(r.volumes, ReadObjectKeys(cfg, "Volumes", at));
  UCRFS_ASSIGN(r.exposed_ports, ReadObjectKeys(cfg, "ExposedPorts", at));
  UCRFS_ASSIGN(r.labels, ReadStringMap(cfg, "Labels", at));
  UCRFS_ASSIGN(r.stop_signal, ReadString(cfg, "StopSignal", at));
  return r;
}

Result<std::vector<Digest>> ReadRootfs(const json& j, const JsonPath& at) {
  std::vector<Digest> out;
  const json* rootfs = FindMember(j, "rootfs");
  if (rootfs == nullptr) return out;
  JsonPath here = at.Member("rootfs");
  if (!rootfs->is_object()) return here.Bad(fmt::format("expected an object, got {}", rootfs->type_name()));
  UCRFS_ASSIGN(std::string type, ReadString(*rootfs, "type", here, Need::kRequired));
  if (type != "layers") return here.Member("type").Bad(fmt::format("expected \"layers\", got '{}'", Clip(type)));
  const json* ids = FindMember(*rootfs, "diff_ids");
  if (ids == nullptr) return out;
  JsonPath ids_at = here.Member("diff_ids");
  if (!ids->is_array()) return ids_at.Bad(fmt::format("expected an array, got {}", ids->type_name()));
  for (size_t i = 0; i < ids->size(); ++i) {
    UCRFS_ASSIGN(Digest d, ToDigest((*ids)[i], ids_at.Index(i)));
    out.push_back(std::move(d));
  }
  return out;
}

Result<ImageConfig> ParseImageConfigJson(const json& j) {
  const JsonPath at{"image config", ""};
  ImageConfig c;
  UCRFS_ASSIGN(c.platform.architecture, ReadString(j, "architecture", at));
  UCRFS_ASSIGN(c.platform.os, ReadString(j, "os", at));
  UCRFS_ASSIGN(c.platform.variant, ReadString(j, "variant", at));
  UCRFS_ASSIGN(c.platform.os_version, ReadString(j, "os.version", at));
  UCRFS_ASSIGN(c.platform.os_features, ReadStringArray(j, "os.features", at));
  UCRFS_ASSIGN(c.created, ReadString(j, "created", at));
  if (const json* cfg = FindMember(j, "config")) {
    if (!cfg->is_object()) return at.Member("config").Bad(fmt::format("expected an object, got {}", cfg->type_name()));
    UCRFS_ASSIGN(c.runtime, ReadRuntime(*cfg, at.Member("config")));
    c.config = *cfg;
  }
  UCRFS_ASSIGN(c.diff_ids, ReadRootfs(j, at));
  return c;
}

}  // namespace

Result<Compression> LayerCompression(std::string_view media_type) {
  using namespace media;  // NOLINT: the constants read better unqualified here
  if (media_type == kOciLayerTar || media_type == kOciLayerNdTar || media_type == kDockerLayerTar ||
      media_type == kAppcAci) {
    return Compression::kNone;
  }
  if (media_type == kOciLayerGzip || media_type == kOciLayerNdGzip || media_type == kDockerLayerGzip ||
      media_type == kDockerLayerForeignGzip) {
    return Compression::kGzip;
  }
  if (media_type == kOciLayerZstd || media_type == kOciLayerNdZstd || media_type == kDockerLayerZstd) {
    return Compression::kZstd;
  }
  return Error(Errc::kUnsupported, fmt::format("unsupported layer media type '{}'", Clip(media_type)));
}

Result<Platform> Platform::Parse(std::string_view s) {
  std::vector<std::string_view> parts;
  for (size_t start = 0;;) {
    size_t slash = s.find('/', start);
    parts.push_back(s.substr(start, slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  bool empty_part = false;
  for (std::string_view p : parts) empty_part = empty_part || p.empty();
  if (parts.size() < 2 || parts.size() > 3 || empty_part) {
    return Error(Errc::kInvalidArgument, fmt::format("invalid platform '{}': expected OS/ARCH[/VARIANT]", s));
  }
  ArchVariant av = NormalizeArch(parts[1], parts.size() == 3 ? parts[2] : std::string_view());
  Platform p;
  p.os = NormalizeOs(parts[0]);
  p.architecture = std::move(av.arch);
  p.variant = std::move(av.variant);
  return p;
}

Platform Platform::Host() {
  Platform p;
  p.os = "linux";
  struct utsname u {};
  std::string_view machine = ::uname(&u) == 0 ? std::string_view(u.machine) : std::string_view("x86_64");
  ArchVariant av = NormalizeArch(machine, "");
  p.architecture = std::move(av.arch);
  p.variant = std::move(av.variant);
  return p;
}

std::string Platform::str() const {
  std::string s = os + "/" + architecture;
  if (!variant.empty()) s += "/" + variant;
  return s;
}

bool Platform::Matches(const Platform& candidate) const {
  if (NormalizeOs(os) != NormalizeOs(candidate.os)) return false;
  ArchVariant want = NormalizeArch(architecture, variant);
  ArchVariant have = NormalizeArch(candidate.architecture, candidate.variant);
  if (want.arch != have.arch) return false;
  return want.variant.empty() || want.variant == have.variant;
}

Result<ParsedManifest> ParseManifest(std::string_view body, std::string_view content_type) {
  try {
    UCRFS_ASSIGN(json j, ParseJsonObject(body, "manifest"));
    return ParseManifestJson(j, content_type);
  } catch (const json::exception& e) {
    // Not expected: every access above checks types first.
    return Error(Errc::kMalformed, fmt::format("malformed manifest: {}", e.what()));
  }
}

Result<Digest> ManifestDigest(std::string_view body, DigestAlgorithm algo) {
  // Only a signed schema1 manifest digests differently; skip parsing the rest.
  if (body.find("\"signatures\"") == std::string_view::npos) return Digest::Of(algo, body);
  try {
    json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
    const json* sigs = FindMember(j, "signatures");
    bool signed_schema1 =
        j.is_object() && j.value("schemaVersion", json()) == 1 && sigs != nullptr && sigs->is_array() && !sigs->empty();
    if (!signed_schema1) return Digest::Of(algo, body);
    UCRFS_ASSIGN(std::string payload, JwsPayload(body, (*sigs)[0]));
    return Digest::Of(algo, payload);
  } catch (const json::exception& e) {
    return Error(Errc::kMalformed, fmt::format("malformed schema1 signature: {}", e.what()));
  }
}

Result<Descriptor> SelectPlatform(const ImageIndex& index, const Platform& want) {
  std::string available;
  for (const Descriptor& d : index.manifests) {
    if (!d.platform || d.platform->os == "unknown") continue;
    if (want.Matches(*d.platform)) return d;
    if (!available.empty()) available += ", ";
    available += d.platform->str();
  }
  if (available.empty()) available = "none";
  return Error(Errc::kNotFound,
               fmt::format("no manifest for platform {} in index (available: {})", want.str(), available));
}

Result<ImageConfig> ParseImageConfig(std::string_view body) {
  try {
    UCRFS_ASSIGN(json j, ParseJsonObject(body, "image config"));
    return ParseImageConfigJson(j);
  } catch (const json::exception& e) {
    return Error(Errc::kMalformed, fmt::format("malformed image config: {}", e.what()));
  }
}

}  // namespace ucrfs::fetch
