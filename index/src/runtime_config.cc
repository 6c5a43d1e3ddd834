// Parsing of the runtime part of image configs. Docker/OCI:
// https://github.com/opencontainers/image-spec/blob/main/config.md
// Appc: https://github.com/appc/spec/blob/master/spec/aci.md#image-manifest-schema
#include "ucrfs/index/runtime_config.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ucrfs/common/file.h"

namespace ucrfs::index {
namespace {

using nlohmann::json;

Result<std::vector<std::string>> StringList(const json& obj, const char* key, const char* where) {
  std::vector<std::string> out;
  if (!obj.contains(key) || obj[key].is_null()) return out;
  const json& v = obj[key];
  if (!v.is_array()) return Error(Errc::kMalformed, fmt::format("{}.{} is not an array of strings", where, key));
  for (const auto& s : v) {
    if (!s.is_string()) return Error(Errc::kMalformed, fmt::format("{}.{} is not an array of strings", where, key));
    out.push_back(s.get<std::string>());
  }
  return out;
}

Result<std::string> String(const json& obj, const char* key, const char* where) {
  if (!obj.contains(key) || obj[key].is_null()) return std::string();
  if (!obj[key].is_string()) return Error(Errc::kMalformed, fmt::format("{}.{} is not a string", where, key));
  return obj[key].get<std::string>();
}

Result<RuntimeConfig> ParseDocker(const json& doc) {
  RuntimeConfig rc;
  rc.kind = RuntimeConfig::Kind::kDocker;
  if (!doc.contains("config") || doc["config"].is_null()) return rc;  // a config may leave everything unset
  const json& c = doc["config"];
  if (!c.is_object()) return Error(Errc::kMalformed, "image config: config is not an object");
  UCRFS_ASSIGN(rc.entrypoint, StringList(c, "Entrypoint", "image config"));
  UCRFS_ASSIGN(rc.cmd, StringList(c, "Cmd", "image config"));
  UCRFS_ASSIGN(rc.env, StringList(c, "Env", "image config"));
  UCRFS_ASSIGN(rc.working_dir, String(c, "WorkingDir", "image config"));
  UCRFS_ASSIGN(rc.user, String(c, "User", "image config"));
  return rc;
}

// Appc ids, user and group: https://github.com/appc/spec/blob/master/spec/aci.md
Result<RuntimeConfig> ParseAppc(const json& doc) {
  RuntimeConfig rc;
  rc.kind = RuntimeConfig::Kind::kAppc;
  if (!doc.contains("app") || doc["app"].is_null()) return rc;
  const json& app = doc["app"];
  if (!app.is_object()) return Error(Errc::kMalformed, "appc manifest: app is not an object");
  rc.has_app = true;
  UCRFS_ASSIGN(rc.entrypoint, StringList(app, "exec", "appc manifest app"));
  UCRFS_ASSIGN(rc.working_dir, String(app, "workingDirectory", "appc manifest app"));
  UCRFS_ASSIGN(rc.user, String(app, "user", "appc manifest app"));
  UCRFS_ASSIGN(rc.group, String(app, "group", "appc manifest app"));
  if (app.contains("environment") && !app["environment"].is_null()) {
    const json& env = app["environment"];
    if (!env.is_array()) return Error(Errc::kMalformed, "appc manifest app.environment is not an array");
    for (const auto& e : env) {
      if (!e.is_object() || !e.contains("name") || !e["name"].is_string() || !e.contains("value") ||
          !e["value"].is_string()) {
        return Error(Errc::kMalformed, "appc manifest app.environment entry is not {name, value}");
      }
      rc.env.push_back(e["name"].get<std::string>() + "=" + e["value"].get<std::string>());
    }
  }
  return rc;
}

}  // namespace

Result<RuntimeConfig> RuntimeConfig::Parse(const std::string& media_type, std::string_view body) {
  json doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
  bool appc = media_type == kAppcManifestMediaType;
  const char* what = appc ? "appc manifest" : "image config";
  if (doc.is_discarded() || !doc.is_object()) return Error(Errc::kMalformed, fmt::format("{} is not a JSON object", what));
  return appc ? ParseAppc(doc) : ParseDocker(doc);
}

Result<RuntimeConfig> RuntimeConfigOf(const Store& store, const ImageRecord& image) {
  UCRFS_ASSIGN(std::string body, ReadFile(store.BlobPath(image.config.digest)));
  auto rc = RuntimeConfig::Parse(image.config.media_type, body);
  if (!rc.ok()) return rc.error().Wrap(image.key);
  return rc;
}

}  // namespace ucrfs::index
