#include "ucrfs/isolator/runtime.h"

#include <fmt/format.h>

#include <map>
#include <sstream>

namespace ucrfs::isolator {
namespace {

// Sets NAME=VALUE in env, replacing an earlier value in place so the order
// stays the order in which names first appeared.
void SetEnv(std::vector<std::string>& env, const std::string& entry) {
  const std::string name = entry.substr(0, entry.find('='));
  for (auto& e : env) {
    if (e.compare(0, name.size() + 1, name + "=") == 0) {
      e = entry;
      return;
    }
  }
  env.push_back(entry);
}

bool HasEnv(const std::vector<std::string>& env, const std::string& name) {
  for (const auto& e : env)
    if (e.compare(0, name.size() + 1, name + "=") == 0) return true;
  return false;
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) out.push_back(cur);
  if (!s.empty() && s.back() == sep) out.emplace_back();
  return out;
}

}  // namespace

std::string ContainerPath(const std::string& path, const std::string& base) {
  std::string full = (!path.empty() && path[0] == '/') ? path : base + "/" + path;
  std::vector<std::string> parts;
  for (const auto& p : Split(full, '/')) {
    if (p.empty() || p == ".") continue;
    if (p == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(p);
  }
  std::string out;
  for (const auto& p : parts) out += "/" + p;
  return out.empty() ? "/" : out;
}

Result<ProcessSpec> MergeRuntime(const index::RuntimeConfig& image_in, const Overrides& over,
                                 const std::string& sandbox_directory) {
  // --docker-ignore-runtime (MESOS-9760): the image's config does not exist.
  const index::RuntimeConfig image = over.ignore_runtime ? index::RuntimeConfig{} : image_in;
  ProcessSpec spec;

  if (over.shell && over.command)
    return Error(Errc::kInvalidArgument, "--shell and --command exclude each other");
  if (over.shell) {
    // Mesos: "Shell specified but no command value provided".
    if (over.shell->empty()) return Error(Errc::kInvalidArgument, "--shell needs a command");
    if (!over.argv.empty())
      return Error(Errc::kInvalidArgument, "--shell CMD takes no arguments after --; put them in CMD");
    spec.argv = {"/bin/sh", "-c", *over.shell};
  } else if (over.command) {
    if (over.command->empty()) return Error(Errc::kInvalidArgument, "--command needs an executable");
    spec.argv = {*over.command};
    spec.argv.insert(spec.argv.end(), over.argv.begin(), over.argv.end());
  } else if (!image.entrypoint.empty()) {
    spec.argv = image.entrypoint;
    const auto& rest = over.argv.empty() ? image.cmd : over.argv;
    spec.argv.insert(spec.argv.end(), rest.begin(), rest.end());
  } else if (!image.cmd.empty()) {
    spec.argv = {image.cmd[0]};
    if (over.argv.empty()) {
      spec.argv.insert(spec.argv.end(), image.cmd.begin() + 1, image.cmd.end());
    } else {
      spec.argv.insert(spec.argv.end(), over.argv.begin(), over.argv.end());
    }
  } else if (!over.argv.empty()) {
    // No image command at all: the arguments are the whole command line
    // (an image without Entrypoint and Cmd, or --docker-ignore-runtime).
    spec.argv = over.argv;
  } else {
    return Error(Errc::kInvalidArgument,
                 "No executable is found: the image has no Entrypoint or Cmd and no command was given");
  }
  if (spec.argv[0].empty()) return Error(Errc::kInvalidArgument, "the executable to run is an empty string");

  SetEnv(spec.env, "MESOS_SANDBOX=" + sandbox_directory);
  for (const auto& e : image.env)
    if (e.find('=') != std::string::npos && e[0] != '=') SetEnv(spec.env, e);
  for (const auto& e : over.env) {
    auto eq = e.find('=');
    if (eq == std::string::npos || eq == 0)
      return Error(Errc::kInvalidArgument, fmt::format("--env {:?}: expected NAME=VALUE", e));
    SetEnv(spec.env, e);
  }
  if (!HasEnv(spec.env, "PATH")) SetEnv(spec.env, std::string("PATH=") + kDefaultPath);

  spec.cwd = image.working_dir.empty() ? ContainerPath(sandbox_directory, "/")
                                       : ContainerPath(image.working_dir, "/");

  if (!over.user.empty()) {
    auto colon = over.user.find(':');
    spec.user = over.user.substr(0, colon);
    spec.group = colon == std::string::npos ? "" : over.user.substr(colon + 1);
    if (spec.user.empty()) return Error(Errc::kInvalidArgument, fmt::format("--user {:?}: no user", over.user));
  } else if (image.kind == index::RuntimeConfig::Kind::kAppc) {
    spec.user = image.user;
    spec.group = image.group;
  } else {
    auto colon = image.user.find(':');
    spec.user = image.user.substr(0, colon);
    spec.group = colon == std::string::npos ? "" : image.user.substr(colon + 1);
  }
  return spec;
}

Result<Volume> ParseVolumeFlag(const std::string& spec, const std::string& sandbox_directory) {
  auto parts = Split(spec, ':');
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty())
    return Error(Errc::kInvalidArgument, fmt::format("--volume {:?}: expected HOST:CONTAINER[:ro|rw]", spec));
  Volume v;
  v.type = Volume::Type::kBind;
  if (parts[0][0] != '/')
    return Error(Errc::kInvalidArgument, fmt::format("--volume {:?}: the host path must be absolute", spec));
  v.source = parts[0];
  v.target = ContainerPath(parts[1], sandbox_directory);
  if (parts.size() == 3) {
    if (parts[2] == "ro") {
      v.readonly = true;
    } else if (parts[2] != "rw") {
      return Error(Errc::kInvalidArgument, fmt::format("--volume {:?}: mode {:?} is not ro or rw", spec, parts[2]));
    }
  }
  return v;
}

Result<Volume> ParseMountFlag(const std::string& spec, const std::string& sandbox_directory) {
  Volume v;
  std::optional<std::string> type, src, dst;
  for (const auto& kv : Split(spec, ',')) {
    auto eq = kv.find('=');
    std::string key = kv.substr(0, eq);
    std::string val = eq == std::string::npos ? "" : kv.substr(eq + 1);
    if (key == "type") {
      type = val;
    } else if (key == "src" || key == "source") {
      src = val;
    } else if (key == "dst" || key == "target" || key == "destination") {
      dst = val;
    } else if (key == "ro" || key == "readonly") {
      if (eq == std::string::npos || val == "true" || val == "1") {
        v.readonly = true;
      } else if (val != "false" && val != "0") {
        return Error(Errc::kInvalidArgument, fmt::format("--mount {:?}: {}={:?} is not true or false", spec, key, val));
      }
    } else {
      return Error(Errc::kInvalidArgument, fmt::format("--mount {:?}: unknown key {:?}", spec, key));
    }
  }
  if (!type) return Error(Errc::kInvalidArgument, fmt::format("--mount {:?}: no type=", spec));
  if (*type == "bind") {
    v.type = Volume::Type::kBind;
  } else if (*type == "image") {
    v.type = Volume::Type::kImage;
  } else if (*type == "tmpfs") {
    v.type = Volume::Type::kTmpfs;
  } else {
    return Error(Errc::kInvalidArgument,
                 fmt::format("--mount {:?}: type {:?} is not bind, image or tmpfs", spec, *type));
  }
  if (!dst || dst->empty()) return Error(Errc::kInvalidArgument, fmt::format("--mount {:?}: no dst=", spec));
  v.target = ContainerPath(*dst, sandbox_directory);
  if (v.type == Volume::Type::kTmpfs) {
    if (src) return Error(Errc::kInvalidArgument, fmt::format("--mount {:?}: tmpfs takes no src=", spec));
  } else {
    if (!src || src->empty()) return Error(Errc::kInvalidArgument, fmt::format("--mount {:?}: no src=", spec));
    if (v.type == Volume::Type::kBind && (*src)[0] != '/')
      return Error(Errc::kInvalidArgument, fmt::format("--mount {:?}: the bind source must be absolute", spec));
    v.source = *src;
  }
  return v;
}

}  // namespace ucrfs::isolator
