#include "ucrfs/common/base64.h"

#include <openssl/evp.h>

namespace ucrfs {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool IsStdAlphabet(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

}  // namespace

std::optional<std::string> Base64Decode(std::string_view in) {
  while (!in.empty() && IsSpace(in.front())) in.remove_prefix(1);
  while (!in.empty() && IsSpace(in.back())) in.remove_suffix(1);
  // Strip padding and validate ourselves: EVP_DecodeBlock skips some
  // characters silently and reports padding bytes as decoded zeros.
  size_t pad = 0;
  while (!in.empty() && in.back() == '=' && pad < 2) {
    in.remove_suffix(1);
    ++pad;
  }
  for (char c : in) {
    if (!IsStdAlphabet(c)) return std::nullopt;
  }
  size_t rem = in.size() % 4;
  if (rem == 1) return std::nullopt;
  if (pad != 0 && rem + pad != 4) return std::nullopt;  // wrong amount of padding
  size_t missing = rem == 0 ? 0 : 4 - rem;
  std::string padded(in);
  padded.append(missing, '=');
  if (padded.empty()) return std::string();
  std::string out(padded.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(padded.data()), static_cast<int>(padded.size()));
  if (n < 0 || static_cast<size_t>(n) < missing) return std::nullopt;
  // EVP_DecodeBlock counts each '=' as a decoded zero byte.
  out.resize(static_cast<size_t>(n) - missing);
  return out;
}

std::string Base64Encode(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::optional<std::string> Base64UrlDecode(std::string_view in) {
  std::string s(in);
  for (char& c : s) {
    if (c == '+' || c == '/') return std::nullopt;  // not in the URL-safe alphabet
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  return Base64Decode(s);
}

}  // namespace ucrfs
