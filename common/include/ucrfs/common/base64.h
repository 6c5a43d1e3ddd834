// Base64 (standard and URL-safe alphabets) over OpenSSL.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ucrfs {

// Decodes standard base64 (RFC 4648 §4). Padding is optional; surrounding
// whitespace is ignored. nullopt when the input is not valid base64.
std::optional<std::string> Base64Decode(std::string_view in);

// Decodes the URL-safe alphabet (RFC 4648 §5), as JWS uses it: '-' and '_'
// instead of '+' and '/', padding usually omitted.
std::optional<std::string> Base64UrlDecode(std::string_view in);

// Standard base64 with padding.
std::string Base64Encode(std::string_view in);

}  // namespace ucrfs
