#include "registry.h"

#include <curl/curl.h>

#include <algorithm>
#include <random>
#include <thread>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ucrfs/common/base64.h"
#include "ucrfs/common/log.h"

namespace ucrfs::fetch {
namespace {

constexpr int kMaxRedirects = 10;
constexpr size_t kMaxManifestBytes = 4 << 20;  // as containerd
constexpr size_t kMaxTokenBytes = 1 << 20;

bool IsRedirect(long s) { return s == 301 || s == 302 || s == 303 || s == 307 || s == 308; }
bool IsRetryableStatus(long s) { return s == 429 || s == 500 || s == 502 || s == 503 || s == 504; }

// The first entry of a registry's error body `{"errors": [{"code", "message"}]}`.
struct RegistryErrorBody {
  std::string code;  // e.g. MANIFEST_UNKNOWN
  std::string message;
};

RegistryErrorBody ParseRegistryError(const HttpResponse& resp) {
  RegistryErrorBody out;
  auto j = nlohmann::json::parse(resp.body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("errors") && j["errors"].is_array() && !j["errors"].empty()) {
    const auto& e = j["errors"][0];
    if (e.contains("code") && e["code"].is_string()) out.code = e["code"].get<std::string>();
    if (e.contains("message") && e["message"].is_string()) out.message = e["message"].get<std::string>();
  }
  return out;
}

// "GET .../manifests/x answered 404 (MANIFEST_UNKNOWN: manifest unknown)".
std::string RegistryErrorDetail(const HttpResponse& resp) {
  std::string detail = fmt::format("HTTP {}", resp.status);
  auto [code, msg] = ParseRegistryError(resp);
  if (!code.empty() || !msg.empty()) detail += fmt::format(" ({}{}{})", code, code.empty() ? "" : ": ", msg);
  return detail;
}

Error StatusError(const std::string& what, const HttpResponse& resp) {
  std::string detail = RegistryErrorDetail(resp);
  switch (resp.status) {
    case 401: return Error(Errc::kUnauthorized, fmt::format("{}: unauthorized: {}", what, detail));
    case 403: return Error(Errc::kForbidden, fmt::format("{}: access denied: {}", what, detail));
    case 404: return Error(Errc::kNotFound, fmt::format("{}: not found: {}", what, detail));
    case 429: return Error(Errc::kTooManyRequests, fmt::format("{}: too many requests: {}", what, detail));
    default:
      if (resp.status >= 500) return Error(Errc::kServer, fmt::format("{}: registry error: {}", what, detail));
      return Error(Errc::kProtocol, fmt::format("{}: unexpected answer: {}", what, detail));
  }
}

// Retry-After: delta-seconds or an HTTP-date.
std::optional<std::chrono::milliseconds> ParseRetryAfter(const std::string& v) {
  if (v.empty()) return std::nullopt;
  if (std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); })) {
    return std::chrono::seconds(std::stoll(v.substr(0, 9)));
  }
  time_t t = curl_getdate(v.c_str(), nullptr);
  if (t < 0) return std::nullopt;
  auto delta = t - std::time(nullptr);
  return std::chrono::seconds(std::max<time_t>(0, delta));
}

}  // namespace

Result<std::unique_ptr<RegistryClient>> RegistryClient::Create(const std::string& registry,
                                                               const std::string& repository,
                                                               const SourceOptions& opts, Access access) {
  UCRFS_ASSIGN(RegistryEndpoint ep, ParseRegistryEndpoint(registry));
  if (ep.host.empty()) return Error(Errc::kInvalidArgument, fmt::format("invalid registry '{}'", registry));
  if (!opts.default_registry_scheme.empty() && registry == opts.default_registry) {
    ep.scheme = opts.default_registry_scheme;
  }
  return std::unique_ptr<RegistryClient>(new RegistryClient(std::move(ep), registry, repository, opts, access));
}

RegistryClient::RegistryClient(RegistryEndpoint ep, std::string registry, std::string repository,
                               const SourceOptions& opts, Access access)
    : registry_(std::move(registry)),
      repository_(std::move(repository)),
      opts_(opts),
      insecure_(std::find(opts.insecure_registries.begin(), opts.insecure_registries.end(), registry_) !=
                opts.insecure_registries.end()),
      credential_(opts.docker_config.Find(registry_)),
      access_(access),
      scope_(fmt::format("repository:{}:{}", repository_, access == Access::kPush ? "pull,push" : "pull")),
      base_url_(ep.BaseUrl()) {}

RegistryClient::~RegistryClient() = default;

RegistryClient::Lease::Lease(RegistryClient& owner) : owner_(owner) {
  std::unique_lock lock(owner_.mu_);
  owner_.pool_cv_.wait(lock, [&] { return owner_.leased_ < std::max(1, owner_.opts_.max_connections); });
  ++owner_.leased_;
  if (owner_.pool_.empty()) {
    client_ = std::make_unique<HttpClient>();
  } else {
    client_ = std::move(owner_.pool_.back());
    owner_.pool_.pop_back();
  }
}

RegistryClient::Lease::~Lease() {
  std::lock_guard lock(owner_.mu_);
  owner_.pool_.push_back(std::move(client_));
  --owner_.leased_;
  owner_.pool_cv_.notify_one();
}

HttpRequest RegistryClient::BaseRequest(const std::string& url, bool to_registry) const {
  HttpRequest req;
  req.url = url;
  req.verify_tls = !(insecure_ && to_registry);
  req.ca_file = opts_.registry_ca_file;
  req.connect_timeout_s = opts_.connect_timeout_s;
  req.stall_timeout_s = opts_.stall_timeout_s;
  req.total_timeout_s = opts_.request_timeout_s;
  return req;
}

std::optional<std::string> RegistryClient::AuthHeader() {
  std::lock_guard lock(mu_);
  if (scheme_ == AuthScheme::kBearer && token_ && std::chrono::steady_clock::now() < token_->expires) {
    return "Authorization: Bearer " + token_->value;
  }
  if (scheme_ == AuthScheme::kBasic && credential_) {
    return "Authorization: Basic " + Base64Encode(credential_->username + ":" + credential_->password);
  }
  return std::nullopt;
}

std::chrono::milliseconds RegistryClient::RetryDelay(int attempt, const HttpResponse* resp) const {
  std::chrono::milliseconds cap(opts_.retry_max_delay_ms);
  if (resp != nullptr) {
    if (auto ra = ParseRetryAfter(resp->Header("retry-after"))) return std::min(*ra, cap);
  }
  // Exponential backoff with jitter in [50%, 100%] of base * 2^(attempt-1).
  int64_t ms = static_cast<int64_t>(opts_.retry_base_delay_ms) << std::min(attempt - 1, 16);
  ms = std::min<int64_t>(ms, cap.count());
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<int64_t> dist(ms / 2, ms);
  return std::chrono::milliseconds(dist(rng));
}

Status RegistryClient::Ping() {
  Call call{.what = fmt::format("registry {}", registry_), .url = base_url_ + "/v2/"};
  Lease http(*this);
  for (int attempt = 1;; ++attempt) {
    auto r = http->Perform(BaseRequest(call.url, true), nullptr, 1 << 20);
    if (!r.ok()) {
      // An insecure registry may speak plain HTTP on its port: fall back once.
      if (insecure_ && base_url_.rfind("https://", 0) == 0 &&
          (r.error().code() == Errc::kTls || r.error().code() == Errc::kNetwork)) {
        base_url_ = "http://" + base_url_.substr(8);
        call.url = base_url_ + "/v2/";
        spdlog::info("{} is insecure and HTTPS failed; trying {}", registry_, call.url);
        continue;
      }
      if (r.error().code() == Errc::kNetwork && attempt < opts_.max_attempts) {
        auto d = RetryDelay(attempt, nullptr);
        spdlog::info("{} (attempt {}/{}); retrying in {} ms", r.error().message(), attempt, opts_.max_attempts,
                     d.count());
        std::this_thread::sleep_for(d);
        continue;
      }
      return r.error().Wrap(fmt::format("registry {} unreachable", registry_));
    }
    if (IsRetryableStatus(r->status) && attempt < opts_.max_attempts) {
      std::this_thread::sleep_for(RetryDelay(attempt, &r.value()));
      continue;
    }
    if (r->status == 200 || r->status == 401) return Ok();
    if (r->status == 404) {
      return Error(Errc::kProtocol, fmt::format("{} does not speak the registry v2 API (GET /v2/ answered 404)",
                                                call.what));
    }
    return StatusError(call.what, r.value());
  }
}

Result<HttpResponse> RegistryClient::Attempt(HttpClient& http, Call& call, const std::string& url,
                                             bool to_registry) {
  HttpRequest req = BaseRequest(url, to_registry);
  req.method = call.method;
  req.body = call.body;
  req.headers = call.headers;
  if (to_registry) {
    if (auto h = AuthHeader()) req.headers.push_back(*h);
  }
  uint64_t offset = 0;
  if (call.range) {
    if (call.blob->written() > 0) UCRFS_TRY(call.blob->Restart());
    offset = call.range->first;
    req.headers.push_back(fmt::format("Range: bytes={}-{}", offset, offset + call.range->second - 1));
  } else {
    offset = call.blob != nullptr ? call.blob->written() : 0;
    if (offset > 0) req.headers.push_back(fmt::format("Range: bytes={}-", offset));
  }

  bool first_chunk = true;
  BodySink sink = [&](const HttpResponse& head, std::string_view data) -> Status {
    if (first_chunk) {
      first_chunk = false;
      if (call.range && head.status == 200 && offset > 0) {
        return Error(Errc::kProtocol, fmt::format("{}: the registry ignores Range requests", call.what));
      }
      if (call.range && head.status != 206 && head.status != 200) {
        return Error(Errc::kProtocol, fmt::format("{}: expected 206, got HTTP {}", call.what, head.status));
      }
      if (offset > 0 && head.status == 200) {
        spdlog::debug("{}: server ignored the Range request; restarting from byte 0", call.what);
        UCRFS_TRY(call.blob->Restart());
      } else if (head.status == 206) {
        // "Content-Range: bytes START-END/TOTAL" must start where we asked.
        std::string cr = head.Header("content-range");
        std::string want = fmt::format("bytes {}-", offset);
        if (cr.compare(0, want.size(), want) != 0) {
          return Error(Errc::kProtocol, fmt::format("{}: asked for bytes {}- but got Content-Range '{}'", call.what,
                                                    offset, cr));
        }
      }
    }
    return call.blob->Write(data);
  };
  return http.Perform(req, call.blob != nullptr ? &sink : nullptr, call.max_body);
}

Result<HttpResponse> RegistryClient::Run(Call& call) {
  Lease http(*this);
  const int max_attempts = call.max_attempts > 0 ? call.max_attempts : opts_.max_attempts;
  const std::string registry_authority = UrlAuthority(base_url_);
  std::string url = call.url;
  int attempt = 1, redirects = 0;
  bool authenticated = false;
  for (;;) {
    bool to_registry = UrlAuthority(url) == registry_authority;
    auto r = Attempt(*http, call, url, to_registry);
    const HttpResponse* resp = r.ok() ? &r.value() : nullptr;
    if (resp != nullptr && resp->status >= 200 && resp->status < 300) {
      return std::move(r).value();
    }
    if (resp != nullptr && IsRedirect(resp->status) && !resp->Header("location").empty()) {
      if (++redirects > kMaxRedirects) {
        return Error(Errc::kProtocol, fmt::format("{}: more than {} redirects", call.what, kMaxRedirects));
      }
      url = ResolveLocation(url, resp->Header("location"));
      spdlog::debug("{}: redirected to {}", call.what, UrlAuthority(url));
      continue;
    }
    if (resp != nullptr && resp->status == 401 && to_registry && !authenticated) {
      authenticated = true;
      UCRFS_TRY(Authenticate(*http, *resp, call.what));
      url = call.url;
      redirects = 0;
      continue;
    }
    bool retryable = resp != nullptr ? IsRetryableStatus(resp->status) : r.error().code() == Errc::kNetwork;
    if (!retryable || attempt >= max_attempts) {
      if (resp == nullptr) return r.error().Wrap(call.what);
      if (call.any_status) return std::move(r).value();
      return StatusError(call.what, *resp);
    }
    auto delay = RetryDelay(attempt, resp);
    spdlog::info("{}: {} (attempt {}/{}); retrying in {} ms", call.what,
                 resp != nullptr ? fmt::format("HTTP {}", resp->status) : r.error().message(), attempt,
                 max_attempts, delay.count());
    std::this_thread::sleep_for(delay);
    ++attempt;
    url = call.url;  // a redirect target (e.g. a signed storage URL) may have expired
    redirects = 0;
  }
}

Status RegistryClient::Authenticate(HttpClient& http, const HttpResponse& resp, const std::string& what) {
  std::string header = resp.Header("www-authenticate");
  if (header.empty()) {
    return Error(Errc::kUnauthorized, fmt::format("{}: unauthorized (HTTP 401 without a WWW-Authenticate challenge)",
                                                  what));
  }
  UCRFS_ASSIGN(auto challenges, ParseWwwAuthenticate(header));
  for (const auto& ch : challenges) {
    if (ch.scheme == "bearer") return FetchToken(http, ch, what);
  }
  for (const auto& ch : challenges) {
    if (ch.scheme != "basic") continue;
    if (!credential_) {
      return Error(Errc::kUnauthorized,
                   fmt::format("{}: unauthorized: registry {} requires credentials and the docker config has none "
                               "for it",
                               what, registry_));
    }
    std::lock_guard lock(mu_);
    if (scheme_ == AuthScheme::kBasic) {
      return Error(Errc::kUnauthorized,
                   fmt::format("{}: unauthorized: registry {} rejected the credentials", what, registry_));
    }
    scheme_ = AuthScheme::kBasic;
    return Ok();
  }
  return Error(Errc::kUnsupported,
               fmt::format("{}: registry {} asks for an unsupported authentication scheme '{}'", what, registry_,
                           challenges.empty() ? std::string() : challenges.front().scheme));
}

Status RegistryClient::FetchToken(HttpClient& http, const AuthChallenge& ch, const std::string& what) {
  const std::string* realm = ch.Param("realm");
  if (realm == nullptr || realm->empty()) {
    return Error(Errc::kProtocol, fmt::format("{}: Bearer challenge without a realm", what));
  }
  const std::string* service = ch.Param("service");
  const std::string* scope = ch.Param("scope");
  std::string url = *realm + (realm->find('?') == std::string::npos ? "?" : "&");
  if (service != nullptr) url += "service=" + UrlEncode(*service) + "&";
  const std::string& asked = scope != nullptr && !scope->empty() ? *scope : scope_;
  url += "scope=" + UrlEncode(asked);
  // A push needs pull and push whatever the one challenged request needed (a
  // HEAD is challenged for pull only): ask for both, so that one token serves
  // the whole push.
  if (access_ == Access::kPush && asked != scope_) url += "&scope=" + UrlEncode(scope_);

  HttpRequest req = BaseRequest(url, UrlAuthority(url) == UrlAuthority(base_url_));
  if (credential_) {
    req.headers.push_back("Authorization: Basic " + Base64Encode(credential_->username + ":" + credential_->password));
  }
  Result<HttpResponse> r = Error(Errc::kInternal, "");
  for (int attempt = 1;; ++attempt) {
    r = http.Perform(req, nullptr, kMaxTokenBytes);
    bool retryable = r.ok() ? IsRetryableStatus(r->status) : r.error().code() == Errc::kNetwork;
    if (!retryable || attempt >= opts_.max_attempts) break;
    std::this_thread::sleep_for(RetryDelay(attempt, r.ok() ? &r.value() : nullptr));
  }
  std::string token_what = fmt::format("{}: token from {}", what, UrlAuthority(url));
  if (!r.ok()) return r.error().Wrap(token_what);
  if (r->status == 401 || r->status == 403) {
    return Error(Errc::kUnauthorized,
                 fmt::format("{}: unauthorized: the token service {} for {}", what,
                             credential_ ? "rejected the credentials" : "requires credentials (none in docker config)",
                             registry_));
  }
  if (r->status != 200) return StatusError(token_what, r.value());
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  std::string value;
  if (j.is_object()) {
    for (const char* key : {"token", "access_token"}) {
      if (j.contains(key) && j[key].is_string() && !j[key].get<std::string>().empty()) {
        value = j[key].get<std::string>();
        break;
      }
    }
  }
  if (value.empty()) return Error(Errc::kProtocol, fmt::format("{}: answer has no token", token_what));
  int64_t expires_in = 60;  // the distribution spec's default
  if (j.contains("expires_in") && j["expires_in"].is_number_integer()) {
    expires_in = std::max<int64_t>(j["expires_in"].get<int64_t>(), 1);
  }
  // Refresh a little early so a request is not sent with a token that dies
  // on the way.
  auto margin = std::chrono::seconds(std::min<int64_t>(expires_in / 10, 30));
  std::lock_guard lock(mu_);
  scheme_ = AuthScheme::kBearer;
  token_ = Token{std::move(value), std::chrono::steady_clock::now() + std::chrono::seconds(expires_in) - margin};
  spdlog::debug("got a registry token for {} valid {} s", registry_, expires_in);
  return Ok();
}

RegistryClient::Call RegistryClient::ManifestCall(const std::string& reference, bool by_digest) const {
  return Call{.what = fmt::format("manifest {}/{}{}{}", registry_, repository_, by_digest ? "@" : ":", reference),
              .url = fmt::format("{}/v2/{}/manifests/{}", base_url_, repository_, reference),
              .headers = {"Accept: " + media::ManifestAcceptHeader()},
              .max_body = kMaxManifestBytes};
}

Result<ManifestBlob> RegistryClient::GetManifest(const std::string& reference, const std::optional<Digest>& expected) {
  Call call = ManifestCall(reference, expected.has_value());
  UCRFS_ASSIGN(HttpResponse resp, Run(call));
  return VerifyManifest(call.what, std::move(resp), expected);
}

Result<std::optional<ManifestBlob>> RegistryClient::GetTaggedManifest(const std::string& tag) {
  if (!IsValidTag(tag)) {
    return Error(Errc::kInvalidArgument, fmt::format("manifest {}/{}: invalid tag '{}'", registry_, repository_, tag));
  }
  Call call = ManifestCall(tag, false);
  call.any_status = true;
  UCRFS_ASSIGN(HttpResponse resp, Run(call));
  if (resp.status < 200 || resp.status >= 300) {
    // The distribution spec answers 404 with MANIFEST_UNKNOWN (no such tag)
    // or NAME_UNKNOWN (no such repository); the codes count whatever the
    // status, for registries that differ.
    std::string code = ParseRegistryError(resp).code;
    if (resp.status == 404 || code == "MANIFEST_UNKNOWN" || code == "NAME_UNKNOWN") {
      return std::optional<ManifestBlob>();
    }
    return StatusError(call.what, resp);
  }
  UCRFS_ASSIGN(ManifestBlob m, VerifyManifest(call.what, std::move(resp), std::nullopt));
  return std::optional<ManifestBlob>(std::move(m));
}

Result<ManifestBlob> RegistryClient::VerifyManifest(const std::string& what, HttpResponse resp,
                                                    const std::optional<Digest>& expected) {
  ManifestBlob m;
  m.body = std::move(resp.body);
  m.media_type = resp.Header("content-type");
  if (auto semi = m.media_type.find(';'); semi != std::string::npos) m.media_type.resize(semi);
  std::optional<Digest> want = expected;
  if (!want) {
    std::string dcd = resp.Header("docker-content-digest");
    if (!dcd.empty()) {
      auto d = Digest::Parse(dcd);
      if (!d.ok()) return d.error().Wrap(what + ": Docker-Content-Digest header");
      want = *d;
    }
  }
  UCRFS_ASSIGN(m.digest, ManifestDigest(m.body, want ? want->algorithm() : DigestAlgorithm::kSha256));
  if (want) UCRFS_TRY(VerifyDigest(*want, m.digest, "manifest"));
  return m;
}

Status RegistryClient::GetBlob(const Descriptor& desc, BlobSink& sink) {
  Call call{.what = fmt::format("blob {}", desc.digest.str()),
            .url = fmt::format("{}/v2/{}/blobs/{}", base_url_, repository_, desc.digest.str()),
            .blob = &sink};
  UCRFS_TRY(Run(call));
  return Ok();
}

namespace {

// Collects the answer to a Range request, handing its first bytes to
// `early` as soon as they are in. More bytes than the range is kTooBig: a
// registry that ignores Range sends the whole blob.
class RangeSink final : public MemorySink {
 public:
  RangeSink(uint64_t length, uint64_t early_bytes, const ImageSource::EarlyBytes* early)
      : MemorySink(length, "more bytes than the range"), early_bytes_(early_bytes),
        early_(early != nullptr && *early ? early : nullptr) {
    reserve(std::min<uint64_t>(length, 64 << 20));
  }
  Status Write(std::string_view bytes) override {
    UCRFS_TRY(MemorySink::Write(bytes));
    if (early_ != nullptr && written() >= early_bytes_) {
      auto early = std::exchange(early_, nullptr);  // once, even if the transfer restarts
      (*early)(data().substr(0, early_bytes_));
    }
    return Ok();
  }

 private:
  const uint64_t early_bytes_;
  const ImageSource::EarlyBytes* early_;
};

}  // namespace

Result<std::string> RegistryClient::GetBlobRange(const Descriptor& desc, uint64_t offset, uint64_t length,
                                                 uint64_t early_bytes, const ImageSource::EarlyBytes* early) {
  if (length == 0) return std::string();
  RangeSink sink(length, std::min(early_bytes, length), early);
  Call call{.what = fmt::format("blob {} bytes {}+{}", desc.digest.str(), offset, length),
            .url = fmt::format("{}/v2/{}/blobs/{}", base_url_, repository_, desc.digest.str()),
            .blob = &sink,
            .range = std::pair(offset, length)};
  auto resp = Run(call);
  if (!resp.ok()) {
    if (resp.error().code() == Errc::kTooBig) {
      return Error(Errc::kProtocol, fmt::format("{}: the registry ignores Range requests", call.what));
    }
    return resp.error();
  }
  // The body's first bytes were checked as they came; an empty body was not.
  if (resp->status != 206) {
    // A 200 with the whole blob is only acceptable when that is the range.
    if (!(resp->status == 200 && offset == 0)) {
      return Error(Errc::kProtocol, fmt::format("{}: expected 206, got HTTP {}", call.what, resp->status));
    }
  } else {
    std::string want = fmt::format("bytes {}-", offset);
    if (resp->Header("content-range").compare(0, want.size(), want) != 0) {
      return Error(Errc::kProtocol, fmt::format("{}: answered Content-Range '{}'", call.what,
                                                resp->Header("content-range")));
    }
  }
  return sink.take();
}

Result<bool> RegistryClient::HasBlob(const Digest& digest) {
  Call call{.what = fmt::format("blob {} in {}/{}", digest.str(), registry_, repository_),
            .url = fmt::format("{}/v2/{}/blobs/{}", base_url_, repository_, digest.str()),
            .method = "HEAD",
            .any_status = true};
  UCRFS_ASSIGN(HttpResponse resp, Run(call));
  if (resp.status == 200) return true;
  if (resp.status == 404) return false;
  return StatusError(call.what, resp);
}

Result<HttpResponse> RegistryClient::UploadOnce(const Descriptor& desc, std::string_view data,
                                                const std::string& what) {
  Call post{.what = what,
            .url = fmt::format("{}/v2/{}/blobs/uploads/", base_url_, repository_),
            .method = "POST",
            .body = std::string_view(),
            .max_attempts = 1,
            .any_status = true};
  UCRFS_ASSIGN(HttpResponse started, Run(post));
  if (started.status != 202) {
    if (started.status >= 200 && started.status < 300) {
      return Error(Errc::kProtocol, fmt::format("{}: starting the upload answered HTTP {}, not 202", what,
                                                started.status));
    }
    return started;
  }
  std::string location = started.Header("location");
  if (location.empty()) {
    return Error(Errc::kProtocol, fmt::format("{}: the registry started an upload without a Location", what));
  }
  // The Location may be relative, and usually carries the upload's state in
  // its query already.
  std::string url = ResolveLocation(post.url, location);
  url += url.find('?') == std::string::npos ? "?" : "&";
  url += "digest=" + UrlEncode(desc.digest.str());
  Call put{.what = what,
           .url = std::move(url),
           .headers = {"Content-Type: application/octet-stream"},
           .method = "PUT",
           .body = data,
           .max_attempts = 1,
           .any_status = true};
  return Run(put);
}

Status RegistryClient::PushBlob(const Descriptor& desc, std::string_view data) {
  const std::string what = fmt::format("blob {} upload to {}/{}", desc.digest.str(), registry_, repository_);
  for (int attempt = 1;; ++attempt) {
    auto r = UploadOnce(desc, data, what);
    if (r.ok() && r->status == 201) {
      std::string dcd = r->Header("docker-content-digest");
      if (!dcd.empty() && dcd != desc.digest.str()) {
        return Error(Errc::kDigestMismatch,
                     fmt::format("{}: the registry stored it as {}", what, dcd.substr(0, 200)));
      }
      return Ok();
    }
    // An upload session that failed half-way is not resumed: the next attempt
    // starts a new one.
    bool retryable = r.ok() ? IsRetryableStatus(r->status) : r.error().code() == Errc::kNetwork;
    if (!retryable || attempt >= opts_.max_attempts) {
      if (!r.ok()) return r.error();
      return StatusError(what, r.value());
    }
    auto delay = RetryDelay(attempt, r.ok() ? &r.value() : nullptr);
    spdlog::info("{}: {} (attempt {}/{}); starting over in {} ms", what,
                 r.ok() ? fmt::format("HTTP {}", r->status) : r.error().message(), attempt, opts_.max_attempts,
                 delay.count());
    std::this_thread::sleep_for(delay);
  }
}

Result<Digest> RegistryClient::PushManifest(const std::string& tag, std::string_view body,
                                            const std::string& media_type) {
  Call call{.what = fmt::format("manifest {}/{}:{}", registry_, repository_, tag),
            .url = fmt::format("{}/v2/{}/manifests/{}", base_url_, repository_, tag),
            .headers = {"Content-Type: " + media_type},
            .method = "PUT",
            .body = body};
  if (!IsValidTag(tag)) return Error(Errc::kInvalidArgument, fmt::format("{}: invalid tag", call.what));
  UCRFS_ASSIGN(HttpResponse resp, Run(call));
  if (resp.status != 201) return StatusError(call.what, resp);
  Digest digest = Digest::Sha256Of(body);
  std::string dcd = resp.Header("docker-content-digest");
  if (!dcd.empty() && dcd != digest.str()) {
    return Error(Errc::kDigestMismatch, fmt::format("{}: pushed {} but the registry stored it as {}", call.what,
                                                    digest.str(), dcd.substr(0, 200)));
  }
  return digest;
}

}  // namespace ucrfs::fetch
