// A minimal HTTP client over one libcurl easy handle.
//
// One Perform() is one attempt: no retries, no redirects followed (the
// registry client decides both, so that it can drop credentials when a
// redirect leaves the registry's host), no authentication. Reusing one
// HttpClient for many requests reuses its connections.
//
// Thread-safety: an HttpClient is used by one thread at a time.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ucrfs/common/error.h"

namespace ucrfs::fetch {

struct HttpRequest {
  std::string method = "GET";  // "HEAD" asks for no body
  std::string url;
  std::vector<std::string> headers;  // "Name: value"; never logged
  // A request body (PUT, POST), sent with its Content-Length. It must outlive
  // Perform(). Without a "Content-Type" header none is sent (curl would
  // otherwise label it a form).
  std::optional<std::string_view> body;
  bool verify_tls = true;
  std::string ca_file;  // added to the system trust store when set
  int connect_timeout_s = 30;
  int stall_timeout_s = 60;  // abort when below 1 byte/s for this long
  int total_timeout_s = 0;   // abort a request that takes longer; 0: no limit
};

struct HttpResponse {
  long status = 0;
  // Lowercased names; repeated headers joined with ", ".
  std::map<std::string, std::string> headers;
  // The body of a response that was not streamed to a sink (error answers,
  // or requests made without a sink), at most max_body bytes.
  std::string body;

  // The header's value, or "" when absent.
  std::string Header(const std::string& lowercase_name) const;
};

// Receives the body of a 2xx response as it arrives; an error aborts the
// transfer and is returned by Perform(). `head` holds the status and headers.
using BodySink = std::function<Status(const HttpResponse& head, std::string_view data)>;

class HttpClient {
 public:
  HttpClient();
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Performs one request. Transport failures are errors (kNetwork for those
  // worth a retry, kTls for certificate/handshake failures); any HTTP status
  // is a response. A 2xx body goes to `sink` if given, else into
  // response.body; a body longer than max_body is kTooBig.
  Result<HttpResponse> Perform(const HttpRequest& req, const BodySink* sink, size_t max_body);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Percent-encodes a query parameter value.
std::string UrlEncode(std::string_view s);

// The host[:port] of an absolute URL ("" if it has none), for comparing
// origins when following redirects.
std::string UrlAuthority(std::string_view url);

// Resolves a Location header against the URL it answered.
std::string ResolveLocation(std::string_view base_url, std::string_view location);

}  // namespace ucrfs::fetch
