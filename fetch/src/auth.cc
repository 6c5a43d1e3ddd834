#include "ucrfs/fetch/auth.h"

#include <cstdlib>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ucrfs/common/base64.h"
#include "ucrfs/common/file.h"

namespace ucrfs::fetch {
namespace {

using nlohmann::json;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool IsAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

// RFC 7230 tchar.
bool IsTchar(char c) { return IsAlnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos; }

// RFC 7235 token68, without its trailing '=' padding.
bool IsToken68Char(char c) { return IsAlnum(c) || std::string_view("-._~+/").find(c) != std::string_view::npos; }

// A recursive-descent reader of a WWW-Authenticate value (RFC 7235 §4.1).
// Commas between auth-params are optional (some registries leave them out);
// a token that is not followed by '=' starts the next challenge.
class ChallengeParser {
 public:
  explicit ChallengeParser(std::string_view s) : s_(s) {}

  Result<std::vector<AuthChallenge>> Run() {
    std::vector<AuthChallenge> out;
    SkipSeparators();
    if (AtEnd()) return Fail("empty header");
    while (!AtEnd()) {
      UCRFS_ASSIGN(AuthChallenge c, Challenge());
      out.push_back(std::move(c));
      SkipSeparators();
    }
    return out;
  }

 private:
  bool AtEnd() const { return pos_ >= s_.size(); }
  bool IsSpace(char c) const { return c == ' ' || c == '\t'; }

  Error Fail(std::string_view why) const {
    return Error(Errc::kProtocol, fmt::format("invalid WWW-Authenticate header: {} at offset {}", why, pos_));
  }

  bool SkipSpace() {
    size_t start = pos_;
    while (!AtEnd() && IsSpace(s_[pos_])) ++pos_;
    return pos_ > start;
  }

  void SkipSeparators() {
    while (!AtEnd() && (IsSpace(s_[pos_]) || s_[pos_] == ',')) ++pos_;
  }

  std::string_view Token() {
    size_t start = pos_;
    while (!AtEnd() && IsTchar(s_[pos_])) ++pos_;
    return s_.substr(start, pos_ - start);
  }

  // Whether an auth-param (token BWS "=" BWS value) starts here, as opposed
  // to a token68 ("abc==") or the scheme of the next challenge.
  bool AtParam() const {
    size_t p = pos_;
    while (p < s_.size() && IsTchar(s_[p])) ++p;
    if (p == pos_) return false;
    while (p < s_.size() && IsSpace(s_[p])) ++p;
    if (p >= s_.size() || s_[p] != '=') return false;
    ++p;
    while (p < s_.size() && IsSpace(s_[p])) ++p;
    return p < s_.size() && s_[p] != ',' && s_[p] != '=';
  }

  // token68 credentials carry nothing a client needs from a challenge.
  void SkipToken68() {
    while (!AtEnd() && IsToken68Char(s_[pos_])) ++pos_;
    while (!AtEnd() && s_[pos_] == '=') ++pos_;
  }

  Result<std::string> QuotedString() {
    std::string out;
    ++pos_;  // opening quote
    while (!AtEnd()) {
      char c = s_[pos_++];
      if (c == '"') return out;
      if (c == '\\') {
        if (AtEnd()) break;
        c = s_[pos_++];
      }
      out += c;
    }
    return Fail("unterminated quoted string");
  }

  Result<std::string> Value() {
    if (!AtEnd() && s_[pos_] == '"') return QuotedString();
    // Lenient: an unquoted value runs to the next separator, so that
    // `realm=https://host/token` is read whole although ':' and '/' are not tchars.
    size_t start = pos_;
    while (!AtEnd() && s_[pos_] != ',' && !IsSpace(s_[pos_])) ++pos_;
    return std::string(s_.substr(start, pos_ - start));
  }

  Result<AuthChallenge> Challenge() {
    AuthChallenge c;
    std::string_view scheme = Token();
    if (scheme.empty()) return Fail("expected an auth scheme");
    c.scheme = Lower(scheme);
    if (!AtEnd() && !IsSpace(s_[pos_]) && s_[pos_] != ',') return Fail("unexpected character after auth scheme");
    if (SkipSpace() && !AtEnd() && s_[pos_] != ',' && !AtParam()) SkipToken68();
    for (;;) {
      SkipSeparators();
      if (AtEnd() || !AtParam()) break;
      std::string name = Lower(Token());
      SkipSpace();
      ++pos_;  // '=' (AtParam checked it)
      SkipSpace();
      UCRFS_ASSIGN(std::string value, Value());
      c.params.emplace(std::move(name), std::move(value));  // the first of duplicates wins
    }
    return c;
  }

  std::string_view s_;
  size_t pos_ = 0;
};

Error BadConfig(std::string_view why) {
  return Error(Errc::kMalformed, fmt::format("malformed docker config: {}", why));
}

// One credential entry. nullopt for entries without credentials ucrfs can
// use (identity tokens, email-only, HttpHeaders). Messages name the key only:
// the values are secrets.
Result<std::optional<Credential>> ParseEntry(const std::string& key, const json& e) {
  if (!e.is_object()) return BadConfig(fmt::format("entry '{}' is not an object", key));
  auto string_field = [&](const char* name) -> Result<std::string> {
    auto it = e.find(name);
    if (it == e.end() || it->is_null()) return std::string();
    if (!it->is_string()) return BadConfig(fmt::format("entry '{}': '{}' is not a string", key, name));
    return it->get<std::string>();
  };
  UCRFS_ASSIGN(std::string auth, string_field("auth"));
  UCRFS_ASSIGN(std::string username, string_field("username"));
  UCRFS_ASSIGN(std::string password, string_field("password"));
  if (!auth.empty()) {
    std::optional<std::string> decoded = Base64Decode(auth);
    if (!decoded) return BadConfig(fmt::format("entry '{}': 'auth' is not valid base64", key));
    size_t colon = decoded->find(':');
    if (colon == std::string::npos) {
      return BadConfig(fmt::format("entry '{}': 'auth' does not decode to USER:PASSWORD", key));
    }
    return std::optional<Credential>(Credential{decoded->substr(0, colon), decoded->substr(colon + 1)});
  }
  if (!username.empty()) return std::optional<Credential>(Credential{std::move(username), std::move(password)});
  return std::optional<Credential>();
}

// "host[:port]" of a key or registry for matching: scheme and path gone,
// lowercased, the default HTTPS port dropped (MESOS-9967).
std::string AuthKey(std::string_view s) {
  std::string k = Lower(ParseAuthUrl(s));
  if (k.ends_with(":443")) k.resize(k.size() - 4);
  return k;
}

bool IsDockerHub(std::string_view key) {
  std::string_view host = key.substr(0, key.find(':'));
  return host == "docker.io" || (host.size() > 10 && host.ends_with(".docker.io"));
}

constexpr std::string_view kCanonicalHubKey = "https://index.docker.io/v1/";

}  // namespace

const std::string* AuthChallenge::Param(const std::string& name) const {
  auto it = params.find(Lower(name));
  return it == params.end() ? nullptr : &it->second;
}

Result<std::vector<AuthChallenge>> ParseWwwAuthenticate(std::string_view header) {
  return ChallengeParser(header).Run();
}

Result<DockerConfig> DockerConfig::Parse(std::string_view text) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::parse_error& e) {
    // e.what() quotes the input near the error, which may be a secret.
    return BadConfig(fmt::format("invalid JSON at byte {}", e.byte));
  } catch (const json::out_of_range&) {
    return BadConfig("invalid JSON: a number out of range");
  }
  if (!doc.is_object()) return BadConfig("not a JSON object");
  DockerConfig cfg;
  auto auths = doc.find("auths");
  bool legacy = auths == doc.end();
  if (!legacy && !auths->is_object()) return BadConfig("'auths' is not an object");
  const json& entries = legacy ? doc : *auths;
  for (const auto& [key, value] : entries.items()) {
    // The legacy flat format has only entries, but tolerate stray scalars.
    if (legacy && !value.is_object()) continue;
    UCRFS_ASSIGN(std::optional<Credential> cred, ParseEntry(key, value));
    if (cred) cfg.entries_.emplace(key, std::move(*cred));
  }
  return cfg;
}

Result<DockerConfig> DockerConfig::Load(const std::optional<std::string>& path) {
  std::string file;
  if (path) {
    file = *path;
  } else if (const char* dir = std::getenv("DOCKER_CONFIG"); dir != nullptr && *dir != '\0') {
    file = std::string(dir) + "/config.json";
  } else if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    file = std::string(home) + "/.docker/config.json";
  } else {
    return DockerConfig();
  }
  auto text = ReadFile(file);
  if (!text.ok()) {
    if (!path && text.error().code() == Errc::kNotFound) return DockerConfig();
    return text.error().Wrap("docker config");
  }
  auto cfg = Parse(*text);
  if (!cfg.ok()) return cfg.error().Wrap(file);
  return cfg;
}

std::optional<Credential> DockerConfig::Find(std::string_view registry) const {
  std::string want = AuthKey(registry);
  if (want.empty()) return std::nullopt;
  for (const auto& [key, cred] : entries_) {
    if (AuthKey(key) == want) return cred;
  }
  if (!IsDockerHub(want)) return std::nullopt;
  // Docker Hub goes by several names; prefer the key `docker login` writes.
  const Credential* hub = nullptr;
  for (const auto& [key, cred] : entries_) {
    if (key == kCanonicalHubKey) return cred;
    if (hub == nullptr && IsDockerHub(AuthKey(key))) hub = &cred;
  }
  if (hub != nullptr) return *hub;
  return std::nullopt;
}

std::string ParseAuthUrl(std::string_view url) {
  std::string lower = Lower(url.substr(0, 8));
  if (lower.starts_with("http://")) {
    url.remove_prefix(7);
  } else if (lower.starts_with("https://")) {
    url.remove_prefix(8);
  }
  return std::string(url.substr(0, url.find('/')));
}

}  // namespace ucrfs::fetch
