#include "ucrfs/common/digest.h"

#include <gtest/gtest.h>

namespace ucrfs {
namespace {

TEST(DigestTest, KnownVectors) {
  EXPECT_EQ(Digest::Sha256Of("").str(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Digest::Of(DigestAlgorithm::kSha512, "abc").str(),
            "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd"
            "454d4423643ce80e2a9ac94fa54ca49f");
}

TEST(DigestTest, IncrementalEqualsWhole) {
  Hasher h(DigestAlgorithm::kSha256);
  h.Update("hello ");
  h.Update("world");
  EXPECT_EQ(h.Finish(), Digest::Sha256Of("hello world"));
  // Finish resets: the hasher can be reused.
  h.Update("hello world");
  EXPECT_EQ(h.Finish(), Digest::Sha256Of("hello world"));
}

TEST(DigestTest, ParseAcceptsOnlyWellFormed) {
  std::string hex64(64, 'a');
  EXPECT_TRUE(Digest::Parse("sha256:" + hex64).ok());
  EXPECT_TRUE(Digest::Parse("sha512:" + std::string(128, '0')).ok());
  EXPECT_FALSE(Digest::Parse("sha256:" + std::string(63, 'a')).ok());
  EXPECT_FALSE(Digest::Parse("sha256:" + std::string(64, 'A')).ok());  // uppercase hex is not canonical
  EXPECT_FALSE(Digest::Parse("sha256:../../etc/passwd").ok());
  EXPECT_FALSE(Digest::Parse(hex64).ok());
  auto md5 = Digest::Parse("md5:d41d8cd98f00b204e9800998ecf8427e");
  ASSERT_FALSE(md5.ok());
  EXPECT_EQ(md5.error().code(), Errc::kUnsupported);
}

TEST(DigestTest, VerifyNamesBothDigests) {
  auto a = Digest::Sha256Of("a"), b = Digest::Sha256Of("b");
  EXPECT_TRUE(VerifyDigest(a, a, "blob").ok());
  Status st = VerifyDigest(a, b, "blob");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kDigestMismatch);
  EXPECT_NE(st.error().message().find(a.str()), std::string::npos);
  EXPECT_NE(st.error().message().find(b.str()), std::string::npos);
}

}  // namespace
}  // namespace ucrfs
