// `ucrfs run` and `ucrfs bundle`: a container from an image, through the
// provisioner (rootfs, image volumes) and the isolator (namespaces, mounts,
// runtime config, user). See docs/run.md.
#include <dirent.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "ucrfs/common/digest.h"
#include "ucrfs/common/file.h"
#include "ucrfs/common/mounts.h"
#include "ucrfs/isolator/bundle.h"
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

// `sandbox`: where relative targets go (the sandbox as the container sees it).
Result<std::vector<isolator::Volume>> ParseVolumes(const std::string& sandbox, const RunFlags& f) {
  std::vector<isolator::Volume> out;
  for (const auto& v : f.volumes) {
    UCRFS_ASSIGN(auto vol, isolator::ParseVolumeFlag(v, sandbox));
    out.push_back(vol);
  }
  for (const auto& m : f.mounts) {
    UCRFS_ASSIGN(auto vol, isolator::ParseMountFlag(m, sandbox));
    out.push_back(vol);
  }
  for (const auto& v : out) {
    if (v.type != isolator::Volume::Type::kBind) continue;
    struct stat st;
    if (::stat(v.source.c_str(), &st) != 0) return ErrnoError("volume source " + v.source);
  }
  return out;
}

// What the command line says over the image's runtime config.
isolator::Overrides OverridesOf(const RunFlags& f) {
  isolator::Overrides over;
  over.argv = f.args;
  over.shell = f.shell;
  over.command = f.command;
  over.env = f.env;
  over.user = f.user;
  over.ignore_runtime = f.ignore_runtime;
  return over;
}

bool IsEmptyDir(const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  if (!d) return false;
  bool empty = true;
  while (auto* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") empty = false;
  }
  ::closedir(d);
  return empty;
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
  if (f.no_image && (!image.empty() || !f.rootfs.empty()))
    return Error(Errc::kInvalidArgument, "--no-image takes neither IMAGE nor --rootfs");
  UCRFS_ASSIGN(auto volumes, ParseVolumes(g.sandbox_directory, f));
  UCRFS_ASSIGN(auto backend, backends::ParseKind(f.backend));
  std::string sandbox;
  if (!f.sandbox.empty()) {
    UCRFS_ASSIGN(sandbox, RealDir(f.sandbox));
  }
  const isolator::Overrides over = OverridesOf(f);
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
    // Without a container image the container sees the host's paths: the
    // sandbox is its host directory, relative volume targets go there.
    const std::string sandbox_seen = f.no_image ? rec.sandbox : g.sandbox_directory;
    if (f.no_image) {
      UCRFS_ASSIGN(volumes, ParseVolumes(sandbox_seen, f));
    }
    bool need_prov = f.rootfs.empty() && !f.no_image;
    for (const auto& v : volumes) need_prov |= v.type == isolator::Volume::Type::kImage;
    if (need_prov) {
      UCRFS_ASSIGN(prov, MakeProvisioner(g));
    }
    std::string rootfs;
    index::RuntimeConfig config;
    if (f.no_image) {
      rootfs = "/";  // users and groups are the host's
    } else if (f.rootfs.empty()) {
      UCRFS_ASSIGN(auto r, prov->Provision(rec.id, image, backend, /*writable=*/true));
      rootfs = r.path;
      config = r.config;
    } else {
      UCRFS_ASSIGN(rootfs, RealDir(f.rootfs));
    }
    // The rules before any volume is provisioned: a bad command line costs
    // no pull.
    UCRFS_ASSIGN(auto proc, isolator::MergeRuntime(config, over, sandbox_seen));
    UCRFS_ASSIGN(auto user, isolator::ResolveUserInRootfs(rootfs, proc.user, proc.group));
    bool has_home = false;
    for (const auto& e : proc.env) has_home |= e.rfind("HOME=", 0) == 0;
    if (!has_home) proc.env.push_back("HOME=" + user.home);

    isolator::ContainerSpec spec;
    spec.rootfs = f.no_image ? "" : rootfs;
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

// A bundle is recorded in /run/ucrfs/bundles/<sha256(DIR/rootfs)>.json
// (dir, rootfs, container, store, work dir): what `ucrfs umount DIR/rootfs`
// needs to end it. Written before anything is provisioned, so that umount
// also undoes a bundle whose `ucrfs bundle` died half way.
namespace {

constexpr const char* kBundleRunDir = "/run/ucrfs/bundles";

std::string BundleRecordFile(const std::string& rootfs) {
  return fmt::format("{}/{}.json", kBundleRunDir, Digest::Sha256Of(rootfs).hex());
}


// Unmounts everything stacked at `path` (detaching what is busy).
Status UnmountAll(const std::string& path) {
  for (int i = 0; i < 64 && IsMountPoint(path); ++i) {
    if (::umount2(path.c_str(), 0) == 0) continue;
    if (errno == EINVAL) break;  // not a mount point after all
    if (errno != EBUSY || ::umount2(path.c_str(), MNT_DETACH) != 0) return ErrnoError("unmount " + path);
  }
  return Ok();
}

struct BundleRecord {
  std::string dir, rootfs, container, store, work_dir;
};

Result<BundleRecord> ReadBundleRecord(const std::string& rootfs) {
  UCRFS_ASSIGN(auto text, ReadFile(BundleRecordFile(rootfs)));
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Error(Errc::kInvalidArgument, "bad bundle record " + BundleRecordFile(rootfs));
  BundleRecord r;
  r.dir = j.value("dir", "");
  r.rootfs = j.value("rootfs", "");
  r.container = j.value("container", "");
  r.store = j.value("store", "");
  r.work_dir = j.value("work_dir", "");
  if (r.dir.empty() || r.container.empty() || r.store.empty() || r.work_dir.empty())
    return Error(Errc::kInvalidArgument, "bad bundle record " + BundleRecordFile(rootfs));
  return r;
}

// Undoes a bundle: the mount at DIR/rootfs, the provisioner's container
// (its rootfs, FUSE server, scratch), config.json, the empty DIR/rootfs and
// the record. DIR and DIR/sandbox stay.
Status EndBundle(const BundleRecord& r) {
  const std::string rootfs = r.dir + "/rootfs";
  UCRFS_TRY(UnmountAll(rootfs));
  GlobalFlags g;
  g.store = r.store;
  g.work_dir = r.work_dir;
  UCRFS_ASSIGN(auto prov, MakeProvisioner(g));
  UCRFS_TRY(prov->Destroy(r.container));
  if (::unlink((r.dir + "/config.json").c_str()) != 0 && errno != ENOENT) return ErrnoError("remove " + r.dir + "/config.json");
  if (::rmdir(rootfs.c_str()) != 0 && errno != ENOENT) return ErrnoError("remove " + rootfs);
  if (::unlink(BundleRecordFile(rootfs).c_str()) != 0 && errno != ENOENT) return ErrnoError("remove bundle record");
  return Ok();
}

}  // namespace

Status Bundle(const GlobalFlags& g, const std::string& image, const std::string& dir_arg, const RunFlags& f) {
  if (::geteuid() != 0) return Error(Errc::kInvalidArgument, "ucrfs bundle needs root (it mounts the rootfs)");
  if (!f.volumes.empty() || !f.mounts.empty() || !f.sandbox.empty() || !f.rootfs.empty())
    return Error(Errc::kInvalidArgument, "ucrfs bundle takes no --volume, --mount, --sandbox or --rootfs");
  if (g.sandbox_directory.empty() || g.sandbox_directory[0] != '/')
    return Error(Errc::kInvalidArgument, "--sandbox-directory must be an absolute path");
  UCRFS_ASSIGN(auto backend, backends::ParseKind(f.backend));
  const isolator::Overrides over = OverridesOf(f);

  UCRFS_TRY(MakeDirs(dir_arg, 0755));
  UCRFS_ASSIGN(std::string dir, RealDir(dir_arg));
  BundleRecord rec;
  rec.dir = dir;
  rec.rootfs = dir + "/rootfs";
  rec.container = "bundle-" + Digest::Sha256Of(dir).hex().substr(0, 16);
  rec.store = g.store;
  rec.work_dir = WorkDir(g);
  if (rec.store.front() != '/' || rec.work_dir.front() != '/') {
    UCRFS_ASSIGN(std::string cwd, RealDir("."));
    if (rec.store.front() != '/') rec.store = cwd + "/" + rec.store;
    if (rec.work_dir.front() != '/') rec.work_dir = cwd + "/" + rec.work_dir;
  }
  struct stat st;
  const bool rootfs_busy = ::lstat(rec.rootfs.c_str(), &st) == 0 &&
                           (!S_ISDIR(st.st_mode) || IsMountPoint(rec.rootfs) || !IsEmptyDir(rec.rootfs));
  if (PathExists(dir + "/config.json") || PathExists(BundleRecordFile(rec.rootfs)) || rootfs_busy) {
    return Error(Errc::kInvalidArgument,
                 fmt::format("{} already holds a bundle (`ucrfs umount {}/rootfs` ends it)", dir, dir));
  }
  UCRFS_TRY(MakeDirs(rec.rootfs, 0755));
  nlohmann::json j = {{"dir", rec.dir}, {"rootfs", rec.rootfs}, {"container", rec.container},
                      {"store", rec.store}, {"work_dir", rec.work_dir}};
  UCRFS_TRY(MakeDirs(kBundleRunDir));
  UCRFS_TRY(WriteFileAtomic(BundleRecordFile(rec.rootfs), j.dump() + "\n"));

  auto made = [&]() -> Status {
    UCRFS_ASSIGN(auto prov, MakeProvisioner(g));
    UCRFS_ASSIGN(auto r, prov->Provision(rec.container, image, backend, !f.read_only));
    UCRFS_ASSIGN(auto proc, isolator::MergeRuntime(r.config, over, g.sandbox_directory));
    UCRFS_ASSIGN(auto user, isolator::ResolveUserInRootfs(r.path, proc.user, proc.group));
    bool has_home = false;
    for (const auto& e : proc.env) has_home |= e.rfind("HOME=", 0) == 0;
    if (!has_home) proc.env.push_back("HOME=" + user.home);

    // The provisioned rootfs, bound where the runtime looks for it.
    if (::mount(r.path.c_str(), rec.rootfs.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0)
      return ErrnoError("bind " + r.path + " at " + rec.rootfs);
    if (!r.writable && ::mount("", rec.rootfs.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0)
      return ErrnoError("remount " + rec.rootfs + " read-only");
    // The sandbox as `ucrfs run` gives it (MESOS_SANDBOX, the default
    // working directory), owned by the container's user; it outlives the
    // bundle, as Mesos keeps sandboxes.
    isolator::BundleSpec spec;
    spec.sandbox = dir + "/sandbox";
    UCRFS_TRY(MakeDirs(spec.sandbox, 0755));
    if (::chown(spec.sandbox.c_str(), user.uid, user.gid) != 0) return ErrnoError("chown " + spec.sandbox);
    spec.sandbox_directory = g.sandbox_directory;
    spec.argv = proc.argv;
    spec.env = proc.env;
    spec.cwd = proc.cwd;
    spec.user = user;
    spec.hostname = rec.container;
    spec.readonly_root = !r.writable;
    spec.capabilities = isolator::BoundingCapabilities();
    UCRFS_ASSIGN(auto config, isolator::BundleConfig(spec));
    return WriteFileAtomic(dir + "/config.json", config);
  }();
  if (!made.ok()) {
    if (Status st = EndBundle(rec); !st.ok()) spdlog::warn("undoing the bundle: {}", st.error().message());
    return made;
  }
  fmt::print("{}\n", dir);
  return Ok();
}

bool IsBundleRootfs(const std::string& rootfs) { return PathExists(BundleRecordFile(rootfs)); }

Status UmountBundle(const std::string& rootfs) {
  UCRFS_ASSIGN(auto rec, ReadBundleRecord(rootfs));
  return EndBundle(rec);
}

}  // namespace ucrfs::cli
