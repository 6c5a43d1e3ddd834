#include "json_util.h"

#include <limits>

#include <fmt/format.h>

namespace ucrfs::fetch {

JsonPath JsonPath::Member(std::string_view key) const {
  return JsonPath{doc, path.empty() ? std::string(key) : fmt::format("{}.{}", path, key)};
}

JsonPath JsonPath::Index(size_t i) const { return JsonPath{doc, fmt::format("{}[{}]", path, i)}; }

Error JsonPath::Bad(std::string_view why) const {
  if (path.empty()) return Error(Errc::kMalformed, fmt::format("malformed {}: {}", doc, why));
  return Error(Errc::kMalformed, fmt::format("malformed {}: {}: {}", doc, path, why));
}

std::string Clip(std::string_view s) {
  constexpr size_t kMax = 96;
  if (s.size() <= kMax) return std::string(s);
  return std::string(s.substr(0, kMax)) + "...";
}

Result<json> ParseJsonObject(std::string_view text, std::string_view doc) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    return Error(Errc::kMalformed, fmt::format("malformed {}: invalid JSON at byte {}", doc, e.byte));
  } catch (const json::out_of_range&) {  // a number too large for a double
    return Error(Errc::kMalformed, fmt::format("malformed {}: invalid JSON: a number out of range", doc));
  }
  if (!j.is_object()) return Error(Errc::kMalformed, fmt::format("malformed {}: not a JSON object", doc));
  return j;
}

const json* FindMember(const json& obj, std::string_view key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(std::string(key));
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

Result<std::string> ReadString(const json& obj, std::string_view key, const JsonPath& at, Need need) {
  const json* v = FindMember(obj, key);
  if (v == nullptr) {
    if (need == Need::kRequired) return at.Member(key).Bad("missing");
    return std::string();
  }
  if (!v->is_string()) return at.Member(key).Bad(fmt::format("expected a string, got {}", v->type_name()));
  return v->get<std::string>();
}

Result<std::optional<int64_t>> ReadInt(const json& obj, std::string_view key, const JsonPath& at, Need need) {
  const json* v = FindMember(obj, key);
  if (v == nullptr) {
    if (need == Need::kRequired) return at.Member(key).Bad("missing");
    return std::optional<int64_t>();
  }
  if (v->is_number_unsigned()) {
    auto u = v->get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return at.Member(key).Bad("out of range");
    return std::optional<int64_t>(static_cast<int64_t>(u));
  }
  if (v->is_number_integer()) return std::optional<int64_t>(v->get<int64_t>());
  return at.Member(key).Bad(fmt::format("expected an integer, got {}", v->type_name()));
}

Result<std::vector<std::string>> ReadStringArray(const json& obj, std::string_view key, const JsonPath& at) {
  std::vector<std::string> out;
  const json* v = FindMember(obj, key);
  if (v == nullptr) return out;
  JsonPath here = at.Member(key);
  if (!v->is_array()) return here.Bad(fmt::format("expected an array of strings, got {}", v->type_name()));
  for (size_t i = 0; i < v->size(); ++i) {
    const json& e = (*v)[i];
    if (!e.is_string()) return here.Index(i).Bad(fmt::format("expected a string, got {}", e.type_name()));
    out.push_back(e.get<std::string>());
  }
  return out;
}

Result<std::map<std::string, std::string>> ReadStringMap(const json& obj, std::string_view key, const JsonPath& at) {
  std::map<std::string, std::string> out;
  const json* v = FindMember(obj, key);
  if (v == nullptr) return out;
  JsonPath here = at.Member(key);
  if (!v->is_object()) return here.Bad(fmt::format("expected an object of strings, got {}", v->type_name()));
  for (const auto& [k, e] : v->items()) {
    if (!e.is_string()) return here.Member(k).Bad(fmt::format("expected a string, got {}", e.type_name()));
    out.emplace(k, e.get<std::string>());
  }
  return out;
}

Result<std::vector<std::string>> ReadObjectKeys(const json& obj, std::string_view key, const JsonPath& at) {
  std::vector<std::string> out;
  const json* v = FindMember(obj, key);
  if (v == nullptr) return out;
  if (!v->is_object()) return at.Member(key).Bad(fmt::format("expected an object, got {}", v->type_name()));
  for (const auto& [k, e] : v->items()) out.push_back(k);
  return out;
}

Result<Digest> ToDigest(const json& value, const JsonPath& at) {
  if (!value.is_string()) return at.Bad(fmt::format("expected a digest string, got {}", value.type_name()));
  const auto& s = value.get_ref<const std::string&>();
  auto d = Digest::Parse(s);
  if (!d.ok()) return at.Bad(fmt::format("invalid digest '{}'", Clip(s)));
  return d;
}

Result<Digest> ReadDigest(const json& obj, std::string_view key, const JsonPath& at) {
  const json* v = FindMember(obj, key);
  if (v == nullptr) return at.Member(key).Bad("missing");
  return ToDigest(*v, at.Member(key));
}

}  // namespace ucrfs::fetch
