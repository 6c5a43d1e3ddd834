// A Mesos isolator module over ucrfs::isolator::LazyVolumeIsolator: lazy
// image volumes for Mesos containers. Built only when Mesos' headers are
// given (cmake -DUCRFS_MESOS_ROOT=<prefix of a Mesos install>); all of its
// logic is in the library, where it is tested. See docs/mesos.md.
//
// Agent flags:
//   --modules='{"libraries": [{"file": "/usr/lib/libucrfs_mesos_isolator.so",
//       "modules": [{"name": "org_ucrfs_LazyVolumeIsolator",
//                    "parameters": [{"key": "store_dir", "value": "/var/lib/ucrfs"}]}]}]}'
//   --isolation=filesystem/linux,docker/runtime,org_ucrfs_LazyVolumeIsolator
#include <sched.h>

#include <string>
#include <utility>
#include <vector>

#include <mesos/mesos.hpp>
#include <mesos/module/isolator.hpp>
#include <mesos/slave/isolator.hpp>
#include <process/async.hpp>
#include <process/future.hpp>
#include <stout/hashset.hpp>
#include <stout/nothing.hpp>
#include <stout/option.hpp>
#include <stout/stringify.hpp>

#include "ucrfs/isolator/lifecycle.h"

namespace {

using mesos::slave::ContainerConfig;
using mesos::slave::ContainerLaunchInfo;
using mesos::slave::ContainerState;
using process::Failure;
using process::Future;

// Nested containers are "parent.child" (stringify), which the provisioner
// accepts as a directory name.
std::string IdOf(const mesos::ContainerID& id) { return stringify(id); }

class UcrfsIsolator : public mesos::slave::Isolator {
 public:
  explicit UcrfsIsolator(std::shared_ptr<ucrfs::isolator::LazyVolumeIsolator> impl) : impl_(std::move(impl)) {}

  bool supportsNesting() override { return true; }
  bool supportsStandalone() override { return true; }

  Future<Nothing> recover(const std::vector<ContainerState>& states,
                          const hashset<mesos::ContainerID>& /*orphans*/) override {
    std::set<std::string> live;
    for (const auto& s : states) live.insert(IdOf(s.container_id()));
    auto impl = impl_;
    return process::async([impl, live]() -> Future<Nothing> {
      ucrfs::Status st = impl->Recover(live);
      if (!st.ok()) return Failure(st.error().message());
      return Nothing();
    });
  }

  Future<Option<ContainerLaunchInfo>> prepare(const mesos::ContainerID& id, const ContainerConfig& cfg) override {
    ucrfs::isolator::ContainerConfig c;
    c.directory = cfg.directory();
    if (cfg.has_rootfs()) c.rootfs = cfg.rootfs();
    auto add_labels = [&c](const mesos::Labels& labels) {
      for (const auto& l : labels.labels()) c.labels.emplace_back(l.key(), l.has_value() ? l.value() : "");
    };
    if (cfg.has_task_info() && cfg.task_info().has_labels()) add_labels(cfg.task_info().labels());
    if (cfg.has_executor_info() && cfg.executor_info().has_labels()) add_labels(cfg.executor_info().labels());
    auto impl = impl_;
    std::string cid = IdOf(id);
    return process::async([impl, cid, c]() -> Future<Option<ContainerLaunchInfo>> {
      auto info = impl->Prepare(cid, c);
      if (!info.ok()) return Failure(info.error().message());
      if (!*info) return None();
      ContainerLaunchInfo launch;
      if ((*info)->clone_mount_namespace) launch.add_clone_namespaces(CLONE_NEWNS);
      for (const auto& m : (*info)->mounts) {
        auto* mount = launch.add_mounts();
        mount->set_source(m.source);
        mount->set_target(m.target);
        mount->set_flags(static_cast<uint32_t>(m.flags));
      }
      return launch;
    });
  }

  Future<Nothing> isolate(const mesos::ContainerID&, pid_t) override { return Nothing(); }

  Future<Nothing> cleanup(const mesos::ContainerID& id) override {
    auto impl = impl_;
    std::string cid = IdOf(id);
    return process::async([impl, cid]() -> Future<Nothing> {
      ucrfs::Status st = impl->Cleanup(cid);
      if (!st.ok()) return Failure(st.error().message());
      return Nothing();
    });
  }

 private:
  std::shared_ptr<ucrfs::isolator::LazyVolumeIsolator> impl_;
};

mesos::slave::Isolator* Create(const mesos::Parameters& parameters) {
  ucrfs::provisioner::Options o;
  o.store_dir = "/var/lib/ucrfs";
  for (const auto& p : parameters.parameter()) {
    if (p.key() == "store_dir") o.store_dir = p.value();
    if (p.key() == "work_dir") o.work_dir = p.value();
    if (p.key() == "ucrfs_binary") o.ucrfs_binary = p.value();
    if (p.key() == "insecure_registry") o.images.insecure_registries.push_back(p.value());
    if (p.key() == "registry_ca") o.images.registry_ca = p.value();
    if (p.key() == "docker_config") o.images.docker_config = p.value();
    if (p.key() == "docker_registry") o.images.docker_registry = p.value();
    if (p.key() == "fetch_timeout") o.fetch_timeout_s = std::stoi(p.value());
  }
  if (o.work_dir.empty()) o.work_dir = o.store_dir + "/work";
  auto p = ucrfs::provisioner::Provisioner::Create(std::move(o));
  if (!p.ok()) return nullptr;  // the agent reports that the module could not be created
  return new UcrfsIsolator(std::make_shared<ucrfs::isolator::LazyVolumeIsolator>(std::move(*p)));
}

}  // namespace

mesos::modules::Module<mesos::slave::Isolator> org_ucrfs_LazyVolumeIsolator(
    MESOS_MODULE_API_VERSION, MESOS_VERSION, "ucrfs", "ucrfs@localhost",
    "Lazy image volumes: images mounted by ucrfs before they have downloaded.", nullptr, Create);
