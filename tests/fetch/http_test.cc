#include "http.h"

#include <gtest/gtest.h>

namespace ucrfs::fetch {
namespace {

TEST(HttpTest, UrlAuthority) {
  EXPECT_EQ(UrlAuthority("https://Registry.Example.com:5000/v2/x"), "registry.example.com:5000");
  EXPECT_EQ(UrlAuthority("http://127.0.0.1:8080"), "127.0.0.1:8080");
  EXPECT_EQ(UrlAuthority("https://user@host/p?q"), "host");
  EXPECT_EQ(UrlAuthority("no-scheme/path"), "");
}

TEST(HttpTest, ResolveLocation) {
  const std::string base = "http://127.0.0.1:5000/v2/repo/blobs/sha256:abc?x=1";
  EXPECT_EQ(ResolveLocation(base, "https://s3.example.com/bucket/obj?sig=1"), "https://s3.example.com/bucket/obj?sig=1");
  EXPECT_EQ(ResolveLocation(base, "/storage/abc"), "http://127.0.0.1:5000/storage/abc");
  EXPECT_EQ(ResolveLocation(base, "//cdn.example.com/x"), "http://cdn.example.com/x");
  EXPECT_EQ(ResolveLocation(base, "other"), "http://127.0.0.1:5000/v2/repo/blobs/other");
}

TEST(HttpTest, UrlEncode) {
  EXPECT_EQ(UrlEncode("repository:library/busybox:pull"), "repository%3Alibrary%2Fbusybox%3Apull");
  EXPECT_EQ(UrlEncode("a b&c=d"), "a%20b%26c%3Dd");
  EXPECT_EQ(UrlEncode("safe-_.~09AZ"), "safe-_.~09AZ");
}

TEST(HttpTest, ConnectionRefusedIsANetworkError) {
  HttpClient c;
  HttpRequest req;
  req.url = "http://127.0.0.1:1/v2/";  // port 1: nothing listens
  req.connect_timeout_s = 5;
  auto r = c.Perform(req, nullptr, 1024);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kNetwork);
  EXPECT_NE(r.error().message().find("127.0.0.1"), std::string::npos);
}

}  // namespace
}  // namespace ucrfs::fetch
