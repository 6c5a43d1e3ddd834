#include "ucrfs/index/link_estimate.h"

#include <algorithm>
#include <cmath>

namespace ucrfs::index {
namespace {

// Each new request weighs as much as this fraction of all before it: about
// the last 30 requests make the estimate.
constexpr double kForget = 0.97;
constexpr int kMinSamples = 4;
// Sizes must differ this much (as a standard deviation) for a slope to mean
// anything: a mount whose requests are all alike has no fit.
constexpr double kMinSpreadBytes = 16 << 10;

}  // namespace

void LinkEstimate::Observe(uint64_t bytes, double seconds) {
  if (!(seconds > 0) || !std::isfinite(seconds)) return;
  double b = static_cast<double>(bytes);
  std::lock_guard lock(mu_);
  w_ = w_ * kForget + 1;
  b_ = b_ * kForget + b;
  t_ = t_ * kForget + seconds;
  bb_ = bb_ * kForget + b * b;
  bt_ = bt_ * kForget + b * seconds;
  ++samples_;
}

bool LinkEstimate::Fitted(Fit* out) const {
  std::lock_guard lock(mu_);
  if (samples_ < kMinSamples) return false;
  double mb = b_ / w_, mt = t_ / w_;
  double var = bb_ / w_ - mb * mb, cov = bt_ / w_ - mb * mt;
  if (!(var >= kMinSpreadBytes * kMinSpreadBytes) || !(cov > 0)) return false;
  double per_byte = cov / var;
  double delay = mt - per_byte * mb;
  // A line through noisy times can cross zero: no delay is the least there is.
  out->delay_s = std::max(0.0, delay);
  out->bytes_per_s = 1 / per_byte;
  return std::isfinite(out->bytes_per_s);
}

uint64_t LinkEstimate::Worthwhile() const {
  Fit fit;
  if (!Fitted(&fit)) return kDefaultBytes;
  double bdp = fit.delay_s * fit.bytes_per_s;
  return static_cast<uint64_t>(std::clamp(bdp, static_cast<double>(kMinBytes), static_cast<double>(kMaxBytes)));
}

}  // namespace ucrfs::index
