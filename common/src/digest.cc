#include "ucrfs/common/digest.h"

#include <openssl/evp.h>

#include <fmt/format.h>

namespace ucrfs {
namespace {

size_t HexLength(DigestAlgorithm a) { return a == DigestAlgorithm::kSha256 ? 64 : 128; }

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

const EVP_MD* Md(DigestAlgorithm a) { return a == DigestAlgorithm::kSha256 ? EVP_sha256() : EVP_sha512(); }

}  // namespace

Result<Digest> Digest::Parse(std::string_view s) {
  auto colon = s.find(':');
  if (colon == std::string_view::npos) {
    return Error(Errc::kInvalidArgument, fmt::format("invalid digest '{}': expected ALGORITHM:HEX", s));
  }
  std::string_view algo = s.substr(0, colon), hex = s.substr(colon + 1);
  DigestAlgorithm a;
  if (algo == "sha256") {
    a = DigestAlgorithm::kSha256;
  } else if (algo == "sha512") {
    a = DigestAlgorithm::kSha512;
  } else {
    return Error(Errc::kUnsupported, fmt::format("unsupported digest algorithm '{}' in '{}'", algo, s));
  }
  if (hex.size() != HexLength(a) || !IsLowerHex(hex)) {
    return Error(Errc::kInvalidArgument, fmt::format("invalid digest '{}': bad {} hex", s, algo));
  }
  return Digest(a, std::string(hex));
}

Digest Digest::FromHex(DigestAlgorithm algo, std::string hex) { return Digest(algo, std::move(hex)); }

Digest Digest::Of(DigestAlgorithm algo, std::string_view data) {
  Hasher h(algo);
  h.Update(data);
  return h.Finish();
}

std::string_view Digest::algorithm_name() const {
  return algo_ == DigestAlgorithm::kSha256 ? "sha256" : "sha512";
}

std::string Digest::str() const {
  std::string s(algorithm_name());
  s += ':';
  s += hex_;
  return s;
}

struct Hasher::Impl {
  EVP_MD_CTX* ctx = nullptr;
  ~Impl() { EVP_MD_CTX_free(ctx); }
};

Hasher::Hasher(DigestAlgorithm algo) : algo_(algo), impl_(std::make_unique<Impl>()) {
  impl_->ctx = EVP_MD_CTX_new();
  Reset();
}
Hasher::~Hasher() = default;
Hasher::Hasher(Hasher&&) noexcept = default;
Hasher& Hasher::operator=(Hasher&&) noexcept = default;

void Hasher::Reset() { EVP_DigestInit_ex(impl_->ctx, Md(algo_), nullptr); }

void Hasher::Update(const void* data, size_t len) { EVP_DigestUpdate(impl_->ctx, data, len); }

Digest Hasher::Finish() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(impl_->ctx, md, &n);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex(n * 2, '0');
  for (unsigned i = 0; i < n; ++i) {
    hex[2 * i] = kHex[md[i] >> 4];
    hex[2 * i + 1] = kHex[md[i] & 0xf];
  }
  Reset();
  return Digest::FromHex(algo_, std::move(hex));
}

Status VerifyDigest(const Digest& expected, const Digest& actual, std::string_view what) {
  if (expected == actual) return Ok();
  return Error(Errc::kDigestMismatch,
               fmt::format("digest mismatch for {} {}: content hashes to {}", what, expected.str(), actual.str()));
}

}  // namespace ucrfs
