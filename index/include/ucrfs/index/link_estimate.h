// What a request to a mount's registry costs, learnt from the requests the
// mount makes: a fixed delay (the round trip and the registry's own time to
// start answering) plus the bytes at the link's rate. A read that must fetch
// also takes the missing pieces that follow what it needs, as many bytes as
// cost no more than the request they would otherwise need later: the
// bandwidth-delay product, bounded to 64 KiB..1 MiB: the maximum on a local
// link, tens of KiB on a slow one.
#pragma once

#include <cstdint>
#include <mutex>

namespace ucrfs::index {

class LinkEstimate {
 public:
  // Bounds of Worthwhile(), and what it is until the link is known.
  static constexpr uint64_t kMinBytes = 64 << 10;
  static constexpr uint64_t kMaxBytes = 1 << 20;
  static constexpr uint64_t kDefaultBytes = 128 << 10;

  // One request: `bytes` received in `seconds`, from sending it to the last byte.
  void Observe(uint64_t bytes, double seconds);

  // Bytes worth adding to a request rather than fetching later on their own.
  uint64_t Worthwhile() const;

  // The fitted model; false until enough requests of different sizes were seen.
  struct Fit {
    double delay_s = 0;
    double bytes_per_s = 0;
  };
  bool Fitted(Fit* out) const;

 private:
  mutable std::mutex mu_;
  // Exponentially weighted sums over requests (the latest count most: the
  // link and the registry's load change), for a least-squares line through
  // (bytes, seconds).
  double w_ = 0, b_ = 0, t_ = 0, bb_ = 0, bt_ = 0;
  int samples_ = 0;
};

}  // namespace ucrfs::index
