// Docker registry HTTP API v2 client for one repository.
//
// Owns the protocol: the /v2/ ping, Bearer-token and Basic authentication
// (tokens cached per scope until they expire), redirects (credentials are
// never sent to another host), retries with exponential backoff on connect
// errors, 5xx and 429 (Retry-After honoured), resumption of a broken blob
// transfer with a Range request, and (in push mode) blob uploads and
// manifest PUTs.
//
// Thread-safety: all methods may be called concurrently; each call borrows
// an HttpClient (and so a connection) from a pool.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http.h"
#include "ucrfs/fetch/source.h"

namespace ucrfs::fetch {

class RegistryClient {
 public:
  // What the client asks a token service for on the repository: pull, or
  // pull and push.
  enum class Access { kPull, kPush };

  // registry: "host[:port]" as in the normalized reference.
  static Result<std::unique_ptr<RegistryClient>> Create(const std::string& registry, const std::string& repository,
                                                        const SourceOptions& opts, Access access = Access::kPull);
  ~RegistryClient();

  // GET /v2/: checks the registry is reachable and speaks v2. For an
  // insecure registry whose HTTPS fails, falls back to plain HTTP.
  Status Ping();

  // GET /v2/<repo>/manifests/<reference> (a tag or digest). The body is
  // verified against `expected` when given, else against the
  // Docker-Content-Digest header when the registry sends one.
  Result<ManifestBlob> GetManifest(const std::string& reference, const std::optional<Digest>& expected);

  // GetManifest(tag) that answers nullopt when the registry has no such tag
  // or repository (404, MANIFEST_UNKNOWN, NAME_UNKNOWN).
  Result<std::optional<ManifestBlob>> GetTaggedManifest(const std::string& tag);

  // HEAD /v2/<repo>/blobs/<digest>: whether the repository has the blob.
  Result<bool> HasBlob(const Digest& digest);

  // Uploads a blob in one piece: POST /v2/<repo>/blobs/uploads/, then PUT to
  // the Location it answers with ?digest=. A failure worth a retry starts
  // over from the POST. The caller has checked data against desc.
  Status PushBlob(const Descriptor& desc, std::string_view data);

  // PUT /v2/<repo>/manifests/<tag> with Content-Type media_type. Returns the
  // sha256 of body, checked against the registry's Docker-Content-Digest
  // when it sends one.
  Result<Digest> PushManifest(const std::string& tag, std::string_view body, const std::string& media_type);

  // GET /v2/<repo>/blobs/<digest> streamed into sink; resumes broken
  // transfers. The caller verifies the content.
  Status GetBlob(const Descriptor& desc, BlobSink& sink);

  // GET with "Range: bytes=offset-(offset+length-1)"; the registry must answer
  // 206 with that range (a registry that ignores Range is kProtocol).
  // See ImageSource::GetBlobRangeEarly; `early` may be null.
  Result<std::string> GetBlobRange(const Descriptor& desc, uint64_t offset, uint64_t length,
                                   uint64_t early_bytes = 0, const ImageSource::EarlyBytes* early = nullptr);

  const std::string& base_url() const { return base_url_; }

 private:
  struct Token {
    std::string value;
    std::chrono::steady_clock::time_point expires;
  };
  struct Call {
    std::string what;  // for messages: "manifest host/repo:tag"
    std::string url;
    std::vector<std::string> headers;
    BlobSink* blob = nullptr;
    // With `blob`: read only the bytes [first, first + length) of the blob,
    // by a Range request. A range is not resumed: a retry restarts `blob`
    // and asks for all of it again.
    std::optional<std::pair<uint64_t, uint64_t>> range;  // first, length
    size_t max_body = 1 << 20;
    std::string method = "GET";
    std::optional<std::string_view> body;  // PUT/POST; must outlive the call
    int max_attempts = 0;                   // 0: opts.max_attempts
    // Return the final answer whatever its status, for the caller to judge
    // (a 404 that means "absent", a 5xx that restarts an upload).
    bool any_status = false;
  };

  RegistryClient(RegistryEndpoint ep, std::string registry, std::string repository, const SourceOptions& opts,
                 Access access);

  // Runs a call to completion: auth, redirects, retries. Returns the final
  // 2xx response (any final response with call.any_status), or an error
  // naming `call.what`.
  Result<HttpResponse> Run(Call& call);
  // One blob upload, POST then PUT, each tried once: the PUT's answer, or
  // the POST's when that was not a 202.
  Result<HttpResponse> UploadOnce(const Descriptor& desc, std::string_view data, const std::string& what);
  Call ManifestCall(const std::string& reference, bool by_digest) const;
  // A manifest answer checked against `expected`, else against its
  // Docker-Content-Digest when there is one.
  static Result<ManifestBlob> VerifyManifest(const std::string& what, HttpResponse resp,
                                             const std::optional<Digest>& expected);
  Result<HttpResponse> Attempt(HttpClient& http, Call& call, const std::string& url, bool to_registry);
  HttpRequest BaseRequest(const std::string& url, bool to_registry) const;
  std::optional<std::string> AuthHeader();
  // Handles a 401 from the registry: obtains a token or switches to Basic.
  Status Authenticate(HttpClient& http, const HttpResponse& resp, const std::string& what);
  Status FetchToken(HttpClient& http, const AuthChallenge& ch, const std::string& what);
  std::chrono::milliseconds RetryDelay(int attempt, const HttpResponse* resp) const;

  // A pooled HttpClient, held for one call. At most opts.max_connections
  // are out at once (callers beyond that wait); the destructor gives it back.
  class Lease {
   public:
    explicit Lease(RegistryClient& owner);
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    HttpClient& operator*() { return *client_; }
    HttpClient* operator->() { return client_.get(); }

   private:
    RegistryClient& owner_;
    std::unique_ptr<HttpClient> client_;
  };

  const std::string registry_;    // host[:port]
  const std::string repository_;
  const SourceOptions opts_;
  const bool insecure_;
  const std::optional<Credential> credential_;
  const Access access_;
  const std::string scope_;       // repository:<repo>:pull, or :pull,push
  std::string base_url_;          // scheme://host[:port]; set once by Ping

  std::mutex mu_;
  enum class AuthScheme { kNone, kBasic, kBearer } scheme_ = AuthScheme::kNone;  // guarded by mu_
  std::optional<Token> token_;                                                  // guarded by mu_
  std::vector<std::unique_ptr<HttpClient>> pool_;                               // guarded by mu_
  int leased_ = 0;                                                              // guarded by mu_
  std::condition_variable pool_cv_;
};

}  // namespace ucrfs::fetch
