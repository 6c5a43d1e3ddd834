// provision, destroy, containers: the library's provisioner on the command
// line, for scripts and for debugging what an agent did.
#include <filesystem>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "ucrfs/common/file.h"
#include "ucrfs/isolator/container.h"
#include "ucrfs/provisioner/provisioner.h"

namespace ucrfs::cli {

std::string WorkDir(const GlobalFlags& g) { return g.work_dir.empty() ? g.store + "/work" : g.work_dir; }

Result<std::unique_ptr<provisioner::Provisioner>> MakeProvisioner(const GlobalFlags& g, int fetch_timeout_s) {
  provisioner::Options o;
  o.work_dir = WorkDir(g);
  if (!o.work_dir.empty() && o.work_dir.front() != '/') {
    UCRFS_ASSIGN(std::string cwd, RealDir("."));
    o.work_dir = cwd + "/" + o.work_dir;
  }
  o.store_dir = g.store;
  o.images = g;
  o.fetch_timeout_s = fetch_timeout_s;
  return provisioner::Provisioner::Create(std::move(o));
}

namespace {

nlohmann::json ConfigJson(const index::RuntimeConfig& c) {
  nlohmann::json j = {{"kind", c.kind == index::RuntimeConfig::Kind::kAppc ? "appc" : "docker"},
                      {"entrypoint", c.entrypoint}, {"cmd", c.cmd}, {"env", c.env},
                      {"workingDir", c.working_dir}, {"user", c.user}};
  if (c.kind == index::RuntimeConfig::Kind::kAppc) j["group"] = c.group;
  return j;
}

}  // namespace

Status Provision(const GlobalFlags& g, const ProvisionFlags& f) {
  UCRFS_ASSIGN(auto kind, backends::ParseKind(f.backend));
  UCRFS_ASSIGN(auto p, MakeProvisioner(g, f.fetch_timeout_s));
  UCRFS_ASSIGN(auto rootfs, p->Provision(f.container_id, f.image, kind, !f.read_only));
  if (f.json) {
    nlohmann::json j = {{"container", f.container_id},         {"rootfs", rootfs.path},
                        {"id", rootfs.id},                     {"backend", std::string(backends::Name(rootfs.backend))},
                        {"writable", rootfs.writable},         {"image", rootfs.image.key},
                        {"digest", rootfs.image.manifest_digest.str()}, {"config", ConfigJson(rootfs.config)}};
    std::cout << j.dump(2) << std::endl;
  } else {
    std::cout << rootfs.path << std::endl;
  }
  return Ok();
}

Status Destroy(const GlobalFlags& g, const std::string& container_id) {
  UCRFS_ASSIGN(auto p, MakeProvisioner(g));
  return p->Destroy(container_id);
}

Status RecoverContainers(const GlobalFlags& g, const std::vector<std::string>& live) {
  std::set<std::string> keep(live.begin(), live.end());
  // The containers of `ucrfs run`s that still run are live whatever the
  // caller named.
  UCRFS_ASSIGN(auto runs, isolator::ListRecords(WorkDir(g)));
  for (const auto& r : runs) {
    if (isolator::RunnerAlive(r)) keep.insert(r.id);
  }
  // So are bundles that `ucrfs umount` has not ended (run_cmds.cc records
  // them in /run/ucrfs/bundles/).
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/run/ucrfs/bundles", ec)) {
    auto body = ReadFile(e.path().string());
    if (!body.ok()) continue;
    auto j = nlohmann::json::parse(*body, nullptr, false);
    if (j.is_object() && j.contains("container") && j["container"].is_string()) {
      keep.insert(j["container"].get<std::string>());
    }
  }
  UCRFS_ASSIGN(auto p, MakeProvisioner(g));
  return p->Recover(keep);
}

Status Containers(const GlobalFlags& g, bool json) {
  UCRFS_ASSIGN(auto p, MakeProvisioner(g));
  UCRFS_ASSIGN(auto ids, p->Containers());
  nlohmann::json all = nlohmann::json::array();
  for (const auto& id : ids) {
    auto rootfses = p->Rootfses(id);
    if (!rootfses.ok()) {
      fmt::print(stderr, "ucrfs: warning: container {}: {}\n", id, rootfses.error().message());
      continue;
    }
    nlohmann::json c = {{"container", id}, {"rootfses", nlohmann::json::array()}};
    for (const auto& r : *rootfses) {
      c["rootfses"].push_back({{"id", r.id}, {"rootfs", r.path}, {"backend", std::string(backends::Name(r.backend))},
                               {"writable", r.writable}, {"image", r.image.key}});
      if (!json) fmt::print("{}  {}  {}  {}\n", id, backends::Name(r.backend), r.image.key, r.path);
    }
    if (!json && rootfses->empty()) fmt::print("{}  (no rootfs)\n", id);
    all.push_back(std::move(c));
  }
  if (json) std::cout << all.dump(2) << std::endl;
  return Ok();
}

}  // namespace ucrfs::cli
