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

Result<int> Run(const GlobalFlags& g, const std::string& image, const RunFlags& f) {
  if (::geteuid() != 0) return Error(Errc::kInvalidArgument, "ucrfs run needs root (it makes namespaces and mounts)");
  const std::string work = WorkDir(g);
  if (!g.sandbox_directory.empty() && g.sandbox_directory[0] != '/')
    return Error(Errc::kInvalidArgument, "--sandbox-directory must be an absolute path");
  UCRFS_ASSIGN(auto volumes, ParseVolumes(g, f));
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

  std::string rootfs;
  index::RuntimeConfig config;
  if (f.rootfs.empty()) {
    return Error(Errc::kUnsupported, "ucrfs run IMAGE needs the provisioner; use --rootfs DIR");
  }
  UCRFS_ASSIGN(rootfs, RealDir(f.rootfs));
  for (const auto& v : volumes)
    if (v.type == isolator::Volume::Type::kImage)
      return Error(Errc::kUnsupported, "image volumes need the provisioner");

  // Rules first: a bad command line is refused before anything is made.
  UCRFS_ASSIGN(auto proc, isolator::MergeRuntime(config, over, g.sandbox_directory));
  UCRFS_ASSIGN(auto user, isolator::ResolveUserInRootfs(rootfs, proc.user, proc.group));
  bool has_home = false;
  for (const auto& e : proc.env) has_home |= e.rfind("HOME=", 0) == 0;
  if (!has_home) proc.env.push_back("HOME=" + user.home);

  isolator::ContainerRecord rec;
  rec.id = isolator::NewContainerId();
  rec.pid = ::getpid();
  rec.pid_start = isolator::ProcessStartTime(rec.pid);
  rec.image = image;
  rec.sandbox_owned = sandbox.empty();
  rec.sandbox = sandbox.empty() ? isolator::ContainerDir(work, rec.id) + "/sandbox" : sandbox;
  UCRFS_TRY(isolator::WriteRecord(work, rec));
  auto cleanup = [&]() -> Status { return isolator::RemoveContainerDir(work, rec.id); };

  auto result = [&]() -> Result<int> {
    if (rec.sandbox_owned) {
      UCRFS_TRY(MakeDirs(rec.sandbox, 0755));
      // Mesos chowns the sandbox to the task's user: it is the default cwd.
      if (::chown(rec.sandbox.c_str(), user.uid, user.gid) != 0) return ErrnoError("chown " + rec.sandbox);
    }
    isolator::ContainerSpec spec;
    spec.rootfs = rootfs;
    spec.sandbox = rec.sandbox;
    spec.sandbox_directory = g.sandbox_directory;
    for (const auto& v : volumes) spec.mounts.push_back({v.type, v.source, v.target, v.readonly});
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
  Status st = cleanup();
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
