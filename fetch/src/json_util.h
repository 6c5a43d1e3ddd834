// Typed reads of JSON members whose errors name the member's path, e.g.
// "malformed manifest: layers[2].digest: invalid digest 'sha256:xyz'".
// Nothing here throws.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "ucrfs/common/digest.h"
#include "ucrfs/common/error.h"

namespace ucrfs::fetch {

using nlohmann::json;

// Where a JSON value sits: the document kind ("manifest") and a path
// ("layers[2]"; empty for the root).
struct JsonPath {
  std::string_view doc;
  std::string path;

  JsonPath Member(std::string_view key) const;
  JsonPath Index(size_t i) const;
  // kMalformed "malformed <doc>: <path>: <why>".
  Error Bad(std::string_view why) const;
};

enum class Need { kOptional, kRequired };

// Parses a whole document that must be a JSON object.
Result<json> ParseJsonObject(std::string_view text, std::string_view doc);

// The member, or nullptr when it is missing or null: both mean "not set".
const json* FindMember(const json& obj, std::string_view key);

// Readers of obj[key] where obj is an object at `at`. Missing or null
// optional members read as empty; a required one is an error.
Result<std::string> ReadString(const json& obj, std::string_view key, const JsonPath& at, Need need = Need::kOptional);
Result<std::optional<int64_t>> ReadInt(const json& obj, std::string_view key, const JsonPath& at,
                                       Need need = Need::kOptional);
Result<std::vector<std::string>> ReadStringArray(const json& obj, std::string_view key, const JsonPath& at);
Result<std::map<std::string, std::string>> ReadStringMap(const json& obj, std::string_view key, const JsonPath& at);
// The keys of an object member (Docker's Volumes, ExposedPorts).
Result<std::vector<std::string>> ReadObjectKeys(const json& obj, std::string_view key, const JsonPath& at);
Result<Digest> ReadDigest(const json& obj, std::string_view key, const JsonPath& at);
// A value as a digest ("sha256:<hex>"), reported at `at`.
Result<Digest> ToDigest(const json& value, const JsonPath& at);

// Shortens a value quoted in a message so one line stays readable.
std::string Clip(std::string_view s);

}  // namespace ucrfs::fetch
