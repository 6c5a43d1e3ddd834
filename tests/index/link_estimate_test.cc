#include "ucrfs/index/link_estimate.h"

#include <gtest/gtest.h>

namespace ucrfs::index {
namespace {

// Requests of several sizes over a link of `delay` seconds and `rate` bytes/s.
void Feed(LinkEstimate& link, double delay, double rate, int rounds = 10) {
  for (int i = 0; i < rounds; ++i) {
    for (uint64_t size : {12u << 10, 90u << 10, 300u << 10, 1u << 20}) {
      link.Observe(size, delay + static_cast<double>(size) / rate);
    }
  }
}

TEST(LinkEstimate, UnknownLinkTakesTheDefault) {
  LinkEstimate link;
  EXPECT_EQ(link.Worthwhile(), LinkEstimate::kDefaultBytes);
  link.Observe(100 << 10, 0.02);
  link.Observe(200 << 10, 0.03);
  EXPECT_EQ(link.Worthwhile(), LinkEstimate::kDefaultBytes) << "two requests are not a fit";
}

TEST(LinkEstimate, FitsDelayAndRate) {
  LinkEstimate link;
  Feed(link, 0.008, 11e6);
  LinkEstimate::Fit fit;
  ASSERT_TRUE(link.Fitted(&fit));
  EXPECT_NEAR(fit.delay_s, 0.008, 1e-4);
  EXPECT_NEAR(fit.bytes_per_s, 11e6, 1e4);
  EXPECT_NEAR(static_cast<double>(link.Worthwhile()), 0.008 * 11e6, 1e3);
}

TEST(LinkEstimate, BoundedOnFastAndSlowLinks) {
  LinkEstimate fast;
  Feed(fast, 0.010, 2e9);  // a registry on the same host: 20 MB per round trip
  EXPECT_EQ(fast.Worthwhile(), LinkEstimate::kMaxBytes);
  LinkEstimate slow;
  Feed(slow, 0.001, 1e6);  // 1 KB per round trip
  EXPECT_EQ(slow.Worthwhile(), LinkEstimate::kMinBytes);
}

TEST(LinkEstimate, FollowsAChangedLink) {
  LinkEstimate link;
  Feed(link, 0.008, 11e6);
  Feed(link, 0.008, 200e6, 40);
  LinkEstimate::Fit fit;
  ASSERT_TRUE(link.Fitted(&fit));
  EXPECT_GT(fit.bytes_per_s, 150e6) << "the latest requests count most";
}

TEST(LinkEstimate, NoFitFromAlikeRequestsOrNonsense) {
  LinkEstimate alike;
  for (int i = 0; i < 50; ++i) alike.Observe(256 << 10, 0.02 + 0.001 * (i % 3));
  EXPECT_EQ(alike.Worthwhile(), LinkEstimate::kDefaultBytes);
  LinkEstimate backwards;  // larger requests faster: no rate to fit
  for (int i = 0; i < 10; ++i) {
    backwards.Observe(10 << 10, 0.05);
    backwards.Observe(1 << 20, 0.01);
  }
  EXPECT_EQ(backwards.Worthwhile(), LinkEstimate::kDefaultBytes);
  LinkEstimate junk;
  for (int i = 0; i < 10; ++i) {
    junk.Observe(1 << 20, 0);
    junk.Observe(1 << 20, -1);
  }
  EXPECT_EQ(junk.Worthwhile(), LinkEstimate::kDefaultBytes);
}

}  // namespace
}  // namespace ucrfs::index
