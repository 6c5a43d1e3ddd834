// `ucrfs run` and `ucrfs bundle`: a container from an image, through the
// provisioner (rootfs, image volumes) and the isolator (namespaces, mounts,
// runtime config, user). See docs/run.md.
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "ucrfs/common/file.h"
#include "ucrfs/isolator/container.h"
#include "ucrfs/isolator/launcher.h"
#include "ucrfs/isolator/runtime.h"
#include "ucrfs/isolator/user.h"
#include "ucrfs/provisioner/provisioner.h"

namespace ucrfs::cli {
namespace {

// What the container runs and where, from the flags and the image's config.
struct Plan {
  isolator::ContainerSpec spec;
  std::vector<isolator::Volume> image_volumes;  // provisioned once the container id exists
};

Result<std::vector<isolator::Volume>> ParseVolumes(const GlobalFlags& g, const RunFlags& f) {
  std::vector<isolator::Volume> out;
  for (const auto& v : f.volumes) {
    UCRFS_ASSIGN(auto vol, isolator::ParseVolumeFlag(v, g.sandbox_directory));
    out.push_back(vol);
  }
  for (const auto& m : f.mounts) {
    UCRFS_ASSIGN(auto vol, isolator::ParseMountFlag(m, g.sandbox_directory));
    out.push_back(vol);
  }
  for (const auto& v : out) {
    if (v.type != isolator::Volume::Type::kBind) continue;
    struct stat st;
    if (::stat(v.source.c_str(), &st) != 0) return ErrnoError("volume source " + v.source);
  }
  return out;
}

}  // namespace

Status RecoverRuns(const GlobalFlags& g) {
  const std::string work = WorkDir(g);
  UCRFS_ASSIGN(auto records, isolator::ListRecords(work));
  bool orphans = false;
  for (const auto& r : records) orphans |= !isolator::RunnerAlive(r);
  if (!orphans) return Ok();
  UCRFS_ASSIGN(auto prov, MakeProvisioner(g));
  UCRFS_ASSIGN(auto cleaned, isolator::RecoverContainers(
                                 work, [&](const std::string& id) { return prov->Destroy(id); }));
  for (const auto& id : cleaned) fmt::print("cleaned    container {} (its `ucrfs run` was gone)\n", id);
  return Ok();
}

Result<int> Run(const GlobalFlags& g, const std::string& image, const RunFlags& f) {
  if (::geteuid() != 0) return Error(Errc::kInvalidArgument, "ucrfs run needs root (it makes namespaces and mounts)");
  if (g.sandbox_directory.empty() || g.sandbox_directory[0] != '/')
    return Error(Errc::kInvalidArgument, "--sandbox-directory must be an absolute path");
  UCRFS_ASSIGN(auto volumes, ParseVolumes(g, f));
  UCRFS_ASSIGN(auto backend, backends::ParseKind(f.backend));
  std::string sandbox;
  if (!f.sandbox.empty()) {
    UCRFS_ASSIGN(sandbox, RealDir(f.sandbox));
  }
  isolator::Overrides over;
  over.argv = f.args;
  over.shell = f.shell;
  over.command = f.command;
  over.env = f.env;
  over.user = f.user;
  over.ignore_runtime = f.ignore_runtime;
  // What earlier runs that were killed left behind goes first.
  if (Status st = RecoverRuns(g); !st.ok()) spdlog::warn("recovering earlier containers: {}", st.error().message());

  const std::string work = WorkDir(g);
  isolator::ContainerRecord rec;
  rec.id = isolator::NewContainerId();
  rec.pid = ::getpid();
  rec.pid_start = isolator::ProcessStartTime(rec.pid);
  rec.image = image;
  rec.sandbox_owned = sandbox.empty();
  rec.sandbox = sandbox.empty() ? isolator::ContainerDir(work, rec.id) + "/sandbox" : sandbox;
  // Recorded before anything is provisioned, so that a crash from here on is
  // undone by `ucrfs recover`.
  UCRFS_TRY(isolator::WriteRecord(work, rec));
  std::unique_ptr<provisioner::Provisioner> prov;

  auto result = [&]() -> Result<int> {
    bool need_prov = f.rootfs.empty();
    for (const auto& v : volumes) need_prov |= v.type == isolator::Volume::Type::kImage;
    if (need_prov) {
      UCRFS_ASSIGN(prov, MakeProvisioner(g));
    }
    std::string rootfs;
    index::RuntimeConfig config;
    if (f.rootfs.empty()) {
      UCRFS_ASSIGN(auto r, prov->Provision(rec.id, image, backend, /*writable=*/true));
      rootfs = r.path;
      config = r.config;
    } else {
      UCRFS_ASSIGN(rootfs, RealDir(f.rootfs));
    }
    // The rules before any volume is provisioned: a bad command line costs
    // no pull.
    UCRFS_ASSIGN(auto proc, isolator::MergeRuntime(config, over, g.sandbox_directory));
    UCRFS_ASSIGN(auto user, isolator::ResolveUserInRootfs(rootfs, proc.user, proc.group));
    bool has_home = false;
    for (const auto& e : proc.env) has_home |= e.rfind("HOME=", 0) == 0;
    if (!has_home) proc.env.push_back("HOME=" + user.home);

    isolator::ContainerSpec spec;
    spec.rootfs = rootfs;
    spec.sandbox = rec.sandbox;
    spec.sandbox_directory = g.sandbox_directory;
    for (const auto& v : volumes) {
      std::string source = v.source;
      if (v.type == isolator::Volume::Type::kImage) {
        // Mesos' volume/image: the same container id, so Destroy takes it too.
        auto r = prov->Provision(rec.id, v.source, backend, !v.readonly);
        if (!r.ok()) return r.error().Wrap("image volume " + v.source);
        source = r->path;
      }
      spec.mounts.push_back({v.type, source, v.target, v.readonly});
    }
    if (rec.sandbox_owned) {
      UCRFS_TRY(MakeDirs(rec.sandbox, 0755));
      // Mesos chowns the sandbox to the task's user: it is the default cwd.
      if (::chown(rec.sandbox.c_str(), user.uid, user.gid) != 0) return ErrnoError("chown " + rec.sandbox);
    }
    spec.argv = proc.argv;
    spec.env = proc.env;
    spec.cwd = proc.cwd;
    spec.user = user;
    return isolator::Launch(spec, [&](pid_t init) -> Status {
      rec.init_pid = init;
      rec.init_start = isolator::ProcessStartTime(init);
      return isolator::WriteRecord(work, rec);
    });
  }();
  // The container's own mounts went with its mount namespace; the rootfses
  // (and their FUSE servers) are the provisioner's.
  Status st;
  if (prov) st = prov->Destroy(rec.id);
  if (Status rm = isolator::RemoveContainerDir(work, rec.id); st.ok() && !rm.ok()) st = rm;
  if (!result.ok()) return result.error();
  if (!st.ok()) return st.error();
  return *result;
}

Status Bundle(const GlobalFlags&, const std::string&, const std::string&, const RunFlags&) {
  return Error(Errc::kUnsupported, "ucrfs bundle is not implemented yet");
}

bool IsBundleRootfs(const std::string&) { return false; }
Status UmountBundle(const std::string&) { return Ok(); }

}  // namespace ucrfs::cli
