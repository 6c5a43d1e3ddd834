#include "http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <mutex>

#include <fmt/format.h>

namespace ucrfs::fetch {
namespace {

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool IsTlsError(CURLcode c) {
  switch (c) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_ENGINE_NOTFOUND:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::string HttpResponse::Header(const std::string& lowercase_name) const {
  auto it = headers.find(lowercase_name);
  return it == headers.end() ? std::string() : it->second;
}

struct HttpClient::Impl {
  CURL* curl = nullptr;
  // Per-request state, reset by Perform().
  HttpResponse resp;
  const BodySink* sink = nullptr;
  size_t max_body = 0;
  Status sink_status;
  bool too_big = false;

  static size_t OnHeader(char* data, size_t size, size_t n, void* self) {
    auto* impl = static_cast<Impl*>(self);
    std::string_view line(data, size * n);
    line = Trim(line);
    if (line.substr(0, 5) == "HTTP/") {
      // A new response starts (a 100 Continue, or a proxy's answer): forget
      // what came before.
      impl->resp.headers.clear();
      auto sp = line.find(' ');
      impl->resp.status = sp == std::string_view::npos ? 0 : std::atol(std::string(line.substr(sp + 1, 3)).c_str());
      return size * n;
    }
    auto colon = line.find(':');
    if (colon != std::string_view::npos) {
      std::string name = Lower(Trim(line.substr(0, colon)));
      std::string value(Trim(line.substr(colon + 1)));
      auto [it, inserted] = impl->resp.headers.emplace(name, value);
      if (!inserted) it->second += ", " + value;
    }
    return size * n;
  }

  static size_t OnBody(char* data, size_t size, size_t n, void* self) {
    auto* impl = static_cast<Impl*>(self);
    std::string_view chunk(data, size * n);
    long st = impl->resp.status;
    if (impl->sink != nullptr && st >= 200 && st < 300) {
      impl->sink_status = (*impl->sink)(impl->resp, chunk);
      return impl->sink_status.ok() ? chunk.size() : 0;
    }
    if (impl->resp.body.size() + chunk.size() > impl->max_body) {
      impl->too_big = true;
      return 0;
    }
    impl->resp.body.append(chunk);
    return chunk.size();
  }
};

HttpClient::HttpClient() : impl_(std::make_unique<Impl>()) {
  GlobalInit();
  impl_->curl = curl_easy_init();
}

HttpClient::~HttpClient() { curl_easy_cleanup(impl_->curl); }

Result<HttpResponse> HttpClient::Perform(const HttpRequest& req, const BodySink* sink, size_t max_body) {
  CURL* c = impl_->curl;
  if (c == nullptr) return Error(Errc::kInternal, "curl_easy_init failed");
  curl_easy_reset(c);  // keeps the connection cache
  impl_->resp = HttpResponse{};
  impl_->sink = sink;
  impl_->max_body = max_body;
  impl_->sink_status = Ok();
  impl_->too_big = false;

  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_slist* headers = nullptr;
  bool has_content_type = false;
  for (const auto& h : req.headers) {
    headers = curl_slist_append(headers, h.c_str());
    has_content_type |= Lower(h.substr(0, 13)) == "content-type:";
  }
  if (req.body && !has_content_type) headers = curl_slist_append(headers, "Content-Type:");

  curl_easy_setopt(c, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  if (req.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else {
    if (req.body) {
      // A POST body from memory, sent under whatever method was asked for;
      // curl does not copy it.
      curl_easy_setopt(c, CURLOPT_POST, 1L);
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body->size()));
      // A null pointer would make curl read the body from stdin.
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, req.body->empty() ? "" : req.body->data());
    }
    if (req.method != "GET" && !(req.method == "POST" && req.body)) {
      curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req.method.c_str());
    }
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "ucrfs/0.1");
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, static_cast<long>(req.connect_timeout_s));
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(req.stall_timeout_s));
  if (req.total_timeout_s > 0) curl_easy_setopt(c, CURLOPT_TIMEOUT, static_cast<long>(req.total_timeout_s));
  // Blobs are hashed as sent: never let curl decode a Content-Encoding.
  curl_easy_setopt(c, CURLOPT_HTTP_CONTENT_DECODING, 0L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, req.verify_tls ? 1L : 0L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, req.verify_tls ? 2L : 0L);
  if (!req.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, req.ca_file.c_str());
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &Impl::OnHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, impl_.get());
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &Impl::OnBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, impl_.get());

  CURLcode rc = curl_easy_perform(c);
  curl_slist_free_all(headers);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, nullptr);

  if (rc == CURLE_WRITE_ERROR && !impl_->sink_status.ok()) return impl_->sink_status.error();
  if (rc == CURLE_WRITE_ERROR && impl_->too_big) {
    return Error(Errc::kTooBig, fmt::format("{} {}: response larger than {} bytes", req.method, req.url, max_body));
  }
  if (rc != CURLE_OK) {
    std::string detail = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
    return Error(IsTlsError(rc) ? Errc::kTls : Errc::kNetwork, fmt::format("{} {}: {}", req.method, req.url, detail));
  }
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  impl_->resp.status = code;
  return std::move(impl_->resp);
}

std::string UrlEncode(std::string_view s) {
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      out += static_cast<char>(ch);
    } else {
      out += fmt::format("%{:02X}", ch);
    }
  }
  return out;
}

std::string UrlAuthority(std::string_view url) {
  auto p = url.find("://");
  if (p == std::string_view::npos) return "";
  std::string_view rest = url.substr(p + 3);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  auto at = rest.rfind('@');
  if (at != std::string_view::npos) rest = rest.substr(at + 1);
  return Lower(rest);
}

std::string ResolveLocation(std::string_view base_url, std::string_view location) {
  if (location.find("://") != std::string_view::npos) return std::string(location);
  auto p = base_url.find("://");
  std::string_view scheme = base_url.substr(0, p);
  if (location.substr(0, 2) == "//") return fmt::format("{}:{}", scheme, location);
  std::string origin = fmt::format("{}://{}", scheme, base_url.substr(p + 3, base_url.find('/', p + 3) - (p + 3)));
  if (!location.empty() && location.front() == '/') return origin + std::string(location);
  // Relative path: resolve against the base's directory.
  std::string_view path = base_url.substr(origin.size());
  path = path.substr(0, path.find_first_of("?#"));
  auto slash = path.rfind('/');
  std::string dir = slash == std::string_view::npos ? "/" : std::string(path.substr(0, slash + 1));
  return origin + dir + std::string(location);
}

}  // namespace ucrfs::fetch
