// Appc: manifests, simple discovery, ACI download and decoding (appc.h).
#include "ucrfs/fetch/appc.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <thread>

#include <fmt/format.h>

#include "http.h"
#include "json_util.h"
#include "ucrfs/common/file.h"
#include "ucrfs/common/log.h"

namespace ucrfs::fetch {
namespace {

constexpr size_t kMaxManifestBytes = 1 << 20;
constexpr int kMaxRedirects = 10;

Result<std::map<std::string, std::string>> ReadLabels(const json& obj, const JsonPath& at) {
  std::map<std::string, std::string> out;
  const json* labels = FindMember(obj, "labels");
  if (!labels) return out;
  JsonPath lp = at.Member("labels");
  if (!labels->is_array()) return lp.Bad("not an array");
  for (size_t i = 0; i < labels->size(); ++i) {
    const json& l = (*labels)[i];
    JsonPath ip = lp.Index(i);
    if (!l.is_object()) return ip.Bad("not an object");
    UCRFS_ASSIGN(std::string name, ReadString(l, "name", ip, Need::kRequired));
    UCRFS_ASSIGN(std::string value, ReadString(l, "value", ip, Need::kRequired));
    if (Status st = ValidateAppcLabel(name, value); !st.ok()) return ip.Bad(st.error().message());
    if (!out.emplace(name, value).second) return ip.Bad(fmt::format("label '{}' given twice", name));
  }
  return out;
}

// Checks a name by parsing it as a reference (the same rules).
Status CheckName(const std::string& name, const JsonPath& at) {
  auto r = AppcRef::Parse(name);
  if (!r.ok() || r->name != name) return at.Bad(r.ok() ? "not a plain name" : r.error().message());
  return Ok();
}

struct ArchiveFree {
  void operator()(archive* a) const { archive_read_free(a); }
};
using ArchivePtr = std::unique_ptr<archive, ArchiveFree>;

Error ArchiveError(archive* a, std::string_view what) {
  const char* msg = archive_error_string(a);
  return Error(Errc::kMalformed, fmt::format("{}: {}", what, msg ? msg : "unreadable archive"));
}

// Downloads `url` into `fd`, following redirects and retrying transient
// failures from the start. Returns the bytes received.
Result<uint64_t> Download(const std::string& url, const SourceOptions& opts, int fd, const std::string& path) {
  HttpClient client;
  std::string current = url;
  int redirects = 0;
  for (int attempt = 1;; ++attempt) {
    if (::ftruncate(fd, 0) != 0 || ::lseek(fd, 0, SEEK_SET) != 0) return ErrnoError("truncate " + path);
    HttpRequest req;
    req.url = current;
    std::string authority = UrlAuthority(current);
    bool insecure = std::find(opts.insecure_registries.begin(), opts.insecure_registries.end(), authority) !=
                    opts.insecure_registries.end();
    req.verify_tls = !insecure;
    req.ca_file = opts.registry_ca_file;
    req.connect_timeout_s = opts.connect_timeout_s;
    req.stall_timeout_s = opts.stall_timeout_s;
    uint64_t received = 0;
    BodySink sink = [&](const HttpResponse&, std::string_view data) -> Status {
      received += data.size();
      return WriteAll(fd, data, path);
    };
    auto resp = client.Perform(req, &sink, 64 << 10);
    Errc transient = Errc::kInternal;
    std::string why;
    if (!resp.ok()) {
      if (resp.error().code() != Errc::kNetwork) return resp.error().Wrap(url);
      transient = Errc::kNetwork;
      why = resp.error().message();
    } else if (resp->status >= 200 && resp->status < 300) {
      return received;
    } else if (resp->status == 301 || resp->status == 302 || resp->status == 303 || resp->status == 307 ||
               resp->status == 308) {
      std::string location = resp->Header("location");
      if (location.empty() || ++redirects > kMaxRedirects) {
        return Error(Errc::kProtocol, fmt::format("{}: HTTP {} without a usable Location", url, resp->status));
      }
      current = ResolveLocation(current, location);
      --attempt;  // a redirect is not a failed attempt
      continue;
    } else if (resp->status == 404 || resp->status == 410) {
      return Error(Errc::kNotFound, fmt::format("appc image not found at {} (HTTP {})", url, resp->status));
    } else if (resp->status == 401 || resp->status == 403) {
      return Error(resp->status == 401 ? Errc::kUnauthorized : Errc::kForbidden,
                   fmt::format("{}: HTTP {}", url, resp->status));
    } else if (resp->status == 429 || resp->status >= 500) {
      transient = resp->status == 429 ? Errc::kTooManyRequests : Errc::kServer;
      why = fmt::format("HTTP {}", resp->status);
    } else {
      return Error(Errc::kProtocol, fmt::format("{}: unexpected HTTP {}", url, resp->status));
    }
    if (attempt >= std::max(1, opts.max_attempts)) {
      return Error(transient, fmt::format("{}: {} (after {} attempts)", url, why, attempt));
    }
    int delay = std::min(opts.retry_max_delay_ms, opts.retry_base_delay_ms << std::min(attempt - 1, 16));
    spdlog::info("{}: {}; retrying in {} ms", url, why, delay);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
  }
}

// Decodes `raw` (any compression libarchive recognises by its magic, or
// none) into `tar_path`, hashing the decoded bytes with SHA-512.
Result<std::pair<Digest, uint64_t>> Decode(const std::string& raw, const std::string& tar_path,
                                           const std::string& what) {
  ArchivePtr a(archive_read_new());
  archive_read_support_filter_all(a.get());
  archive_read_support_format_raw(a.get());
  if (archive_read_open_filename(a.get(), raw.c_str(), 1 << 16) != ARCHIVE_OK) return ArchiveError(a.get(), what);
  archive_entry* e = nullptr;
  int r = archive_read_next_header(a.get(), &e);
  if (r == ARCHIVE_EOF) return Error(Errc::kMalformed, what + ": empty file");
  if (r != ARCHIVE_OK) return ArchiveError(a.get(), what);
  UniqueFd out(::open(tar_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!out.valid()) return ErrnoError("create " + tar_path);
  Hasher hasher(DigestAlgorithm::kSha512);
  uint64_t size = 0;
  char buf[1 << 16];
  for (;;) {
    la_ssize_t n = archive_read_data(a.get(), buf, sizeof buf);
    if (n < 0) return ArchiveError(a.get(), what);
    if (n == 0) break;
    std::string_view chunk(buf, static_cast<size_t>(n));
    hasher.Update(chunk);
    UCRFS_TRY(WriteAll(out.get(), chunk, tar_path));
    size += static_cast<uint64_t>(n);
  }
  return std::make_pair(hasher.Finish(), size);
}

}  // namespace

Result<AppcManifest> ParseAppcManifest(std::string_view body) {
  UCRFS_ASSIGN(json doc, ParseJsonObject(body, "appc manifest"));
  JsonPath root{"appc manifest", ""};
  AppcManifest m;
  UCRFS_ASSIGN(std::string kind, ReadString(doc, "acKind", root, Need::kRequired));
  if (kind != "ImageManifest") return root.Member("acKind").Bad(fmt::format("'{}' is not ImageManifest", Clip(kind)));
  UCRFS_ASSIGN(m.ac_version, ReadString(doc, "acVersion", root, Need::kRequired));
  UCRFS_ASSIGN(m.name, ReadString(doc, "name", root, Need::kRequired));
  UCRFS_TRY(CheckName(m.name, root.Member("name")));
  UCRFS_ASSIGN(m.labels, ReadLabels(doc, root));
  if (const json* deps = FindMember(doc, "dependencies")) {
    JsonPath dp = root.Member("dependencies");
    if (!deps->is_array()) return dp.Bad("not an array");
    for (size_t i = 0; i < deps->size(); ++i) {
      const json& d = (*deps)[i];
      JsonPath ip = dp.Index(i);
      if (!d.is_object()) return ip.Bad("not an object");
      AppcDependency dep;
      UCRFS_ASSIGN(dep.image_name, ReadString(d, "imageName", ip, Need::kRequired));
      UCRFS_TRY(CheckName(dep.image_name, ip.Member("imageName")));
      UCRFS_ASSIGN(dep.image_id, ReadString(d, "imageID", ip));
      if (!dep.image_id.empty()) {
        if (Status st = ValidateAppcImageId(dep.image_id); !st.ok()) {
          return ip.Member("imageID").Bad(st.error().message());
        }
      }
      UCRFS_ASSIGN(dep.labels, ReadLabels(d, ip));
      m.dependencies.push_back(std::move(dep));
    }
  }
  UCRFS_ASSIGN(m.path_whitelist, ReadStringArray(doc, "pathWhitelist", root));
  return m;
}

std::string AppcOs(const Platform& p) { return p.os.empty() ? "linux" : p.os; }

std::string AppcArch(const Platform& p) {
  if (p.architecture == "arm64") return "aarch64";
  if (p.architecture == "386") return "i386";
  if (p.architecture == "arm") return p.variant == "v6" ? "armv6l" : "armv7l";
  return p.architecture;
}

AppcRef WithAppcDefaults(const AppcRef& ref, const Platform& platform) {
  AppcRef r = ref;
  r.labels.try_emplace("version", "latest");
  r.labels.try_emplace("os", AppcOs(platform));
  r.labels.try_emplace("arch", AppcArch(platform));
  return r;
}

Result<std::string> SimpleDiscoveryLocation(std::string_view prefix, const AppcRef& ref) {
  for (const char* label : {"version", "os", "arch"}) {
    if (!ref.labels.contains(label)) {
      return Error(Errc::kInvalidArgument, fmt::format("appc image {}: no '{}' label", ref.name, label));
    }
  }
  std::string file = fmt::format("{}-{}-{}-{}.aci", ref.name, ref.labels.at("version"), ref.labels.at("os"),
                                 ref.labels.at("arch"));
  std::string p(prefix);
  if (p.starts_with("http://") || p.starts_with("https://")) return p + file;
  if (p.starts_with("file://")) {
    p = p.substr(7);
    if (!p.starts_with("/")) {
      return Error(Errc::kInvalidArgument, fmt::format("appc discovery prefix '{}': a file:// URL needs an absolute path", prefix));
    }
  }
  if (p.find("://") != std::string::npos) {
    return Error(Errc::kInvalidArgument,
                 fmt::format("appc discovery prefix '{}': only http://, https://, file:// or a path", prefix));
  }
  if (p.empty()) return Error(Errc::kInvalidArgument, "appc discovery prefix is empty");
  if (!p.starts_with("/")) {
    std::error_code ec;
    std::string cwd = std::filesystem::current_path(ec).string();
    if (ec) return Error(Errc::kIo, "appc discovery prefix: no current directory: " + ec.message());
    p = cwd + "/" + p;
  }
  return p + file;
}

namespace {

// `what` names the ACI in messages (its location rather than a work file).
Result<std::string> ReadManifestOf(const std::string& tar_path, const std::string& what) {
  ArchivePtr a(archive_read_new());
  archive_read_support_format_tar(a.get());
  archive_read_support_format_gnutar(a.get());
  if (archive_read_open_filename(a.get(), tar_path.c_str(), 1 << 16) != ARCHIVE_OK) return ArchiveError(a.get(), what);
  std::optional<std::string> manifest;
  bool rootfs = false;
  archive_entry* e = nullptr;
  int r;
  while ((r = archive_read_next_header(a.get(), &e)) == ARCHIVE_OK) {
    std::string_view path = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
    while (path.starts_with("./")) path.remove_prefix(2);
    while (path.ends_with('/')) path.remove_suffix(1);
    if (path == "rootfs" || path.starts_with("rootfs/")) rootfs = true;
    if (path != "manifest") continue;
    if (manifest) return Error(Errc::kMalformed, what + ": more than one manifest");
    if (archive_entry_filetype(e) != AE_IFREG) return Error(Errc::kMalformed, what + ": manifest is not a regular file");
    if (archive_entry_size(e) > static_cast<la_int64_t>(kMaxManifestBytes)) {
      return Error(Errc::kTooBig, fmt::format("{}: manifest larger than {} bytes", what, kMaxManifestBytes));
    }
    std::string body;
    char buf[1 << 14];
    for (la_ssize_t n; (n = archive_read_data(a.get(), buf, sizeof buf)) != 0;) {
      if (n < 0) return ArchiveError(a.get(), what);
      body.append(buf, static_cast<size_t>(n));
    }
    manifest = std::move(body);
  }
  if (r != ARCHIVE_EOF) return ArchiveError(a.get(), what);
  if (!manifest) return Error(Errc::kMalformed, what + ": no manifest");
  if (!rootfs) return Error(Errc::kMalformed, what + ": no rootfs/");
  return *manifest;
}

}  // namespace

Result<std::string> ReadAciManifest(const std::string& tar_path) { return ReadManifestOf(tar_path, "ACI " + tar_path); }

Result<FetchedAci> FetchAci(const std::string& location, const SourceOptions& opts, const std::string& work_dir) {
  FetchedAci out;
  std::string raw = location;
  if (location.starts_with("http://") || location.starts_with("https://")) {
    raw = work_dir + "/aci.download";
    UniqueFd fd(::open(raw.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd.valid()) return ErrnoError("create " + raw);
    UCRFS_ASSIGN(out.received, Download(location, opts, fd.get(), raw));
  } else {
    if (::access(location.c_str(), F_OK) != 0) {
      return Error(Errc::kNotFound, fmt::format("appc image not found at {}", location));
    }
    std::error_code ec;
    out.received = std::filesystem::file_size(location, ec);
  }
  out.tar_path = work_dir + "/aci.tar";
  UCRFS_ASSIGN(auto decoded, Decode(raw, out.tar_path, "ACI " + location));
  out.id = decoded.first;
  out.size = decoded.second;
  if (raw != location) ::unlink(raw.c_str());
  UCRFS_ASSIGN(out.manifest, ReadManifestOf(out.tar_path, "ACI " + location));
  return out;
}

Result<Digest> AppcIdToDigest(std::string_view id) {
  UCRFS_TRY(ValidateAppcImageId(id));
  return Digest::FromHex(DigestAlgorithm::kSha512, std::string(id.substr(7)));
}

std::string DigestToAppcId(const Digest& d) { return "sha512-" + d.hex(); }

}  // namespace ucrfs::fetch
