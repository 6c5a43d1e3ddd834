// Content digests ("sha256:<64 hex>", "sha512:<128 hex>") and streaming
// hashing. Every byte ucrfs takes from outside is checked against one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "ucrfs/common/error.h"

namespace ucrfs {

enum class DigestAlgorithm { kSha256, kSha512 };

// A validated digest. Only sha256 and sha512 with lowercase hex of the right
// length parse; anything else is rejected, so a Digest is always safe to use
// as a file name component.
class Digest {
 public:
  static Result<Digest> Parse(std::string_view s);
  static Digest FromHex(DigestAlgorithm algo, std::string hex);
  // Digest of a whole buffer.
  static Digest Of(DigestAlgorithm algo, std::string_view data);
  static Digest Sha256Of(std::string_view data) { return Of(DigestAlgorithm::kSha256, data); }

  DigestAlgorithm algorithm() const { return algo_; }
  std::string_view algorithm_name() const;
  const std::string& hex() const { return hex_; }
  std::string str() const;  // "sha256:<hex>"

  friend bool operator==(const Digest&, const Digest&) = default;
  friend auto operator<=>(const Digest& a, const Digest& b) { return a.str() <=> b.str(); }

 private:
  Digest(DigestAlgorithm a, std::string hex) : algo_(a), hex_(std::move(hex)) {}
  DigestAlgorithm algo_;
  std::string hex_;
};

// Incremental hasher. Not thread-safe.
class Hasher {
 public:
  explicit Hasher(DigestAlgorithm algo);
  ~Hasher();
  Hasher(Hasher&&) noexcept;
  Hasher& operator=(Hasher&&) noexcept;
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;

  void Update(const void* data, size_t len);
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  // Finishes the hash. The hasher is reset and may be reused.
  Digest Finish();
  void Reset();
  DigestAlgorithm algorithm() const { return algo_; }

 private:
  struct Impl;
  DigestAlgorithm algo_;
  std::unique_ptr<Impl> impl_;
};

// Checks data against an expected digest: kDigestMismatch naming both if not.
Status VerifyDigest(const Digest& expected, const Digest& actual, std::string_view what);

}  // namespace ucrfs
