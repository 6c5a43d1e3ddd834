// The provisioner. See provisioner.h for the layout and the contract.
//
// Every rootfs has a record, <container>/rootfses/<id>.json, written before
// anything is mounted or filled, so that Destroy and Recover can undo an
// attempt that crashed half way. The fuse backend mounts the image with a
// separate `ucrfs mount` process (it daemonizes and returns once serving):
// directly at the rootfs when read-only, else at <scratch>/lower under an
// overlay whose upper and work dirs are in the scratch directory.
#include "ucrfs/provisioner/provisioner.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ucrfs/common/file.h"
#include "ucrfs/common/log.h"
#include "ucrfs/common/mounts.h"
#include "ucrfs/fusefs/server.h"
#include "ucrfs/index/gc.h"
#include "ucrfs/index/image_tree.h"

namespace ucrfs::provisioner {
namespace {

using nlohmann::json;

// Container ids become directory names: Mesos' ids are UUIDs or
// "parent.child"; refuse anything that could climb out of containers/.
Status CheckContainerId(const std::string& id) {
  if (id.empty() || id.size() > 255 || id == "." || id == "..") {
    return Error(Errc::kInvalidArgument, fmt::format("container id '{}' is not a valid name", id));
  }
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
      return Error(Errc::kInvalidArgument,
                   fmt::format("container id '{}' has a character other than [A-Za-z0-9._-]", id));
    }
  }
  return Ok();
}

Result<std::string> NewUuid() {
  UCRFS_ASSIGN(std::string u, ReadFile("/proc/sys/kernel/random/uuid"));
  while (!u.empty() && (u.back() == '\n' || u.back() == ' ')) u.pop_back();
  if (u.size() != 36) return Error(Errc::kIo, "/proc/sys/kernel/random/uuid gave no uuid");
  return u;
}

Result<std::vector<std::string>> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return out;
    return ErrnoError("opendir " + dir);
  }
  while (struct dirent* de = ::readdir(d)) {
    std::string n(de->d_name);
    if (n != "." && n != "..") out.push_back(std::move(n));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::string SelfExe() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  return std::string(buf, static_cast<size_t>(n));
}

std::string DefaultUcrfsBinary() {
  std::string self = SelfExe();
  auto slash = self.rfind('/');
  if (slash != std::string::npos) {
    if (self.substr(slash + 1) == "ucrfs") return self;
    std::string beside = self.substr(0, slash) + "/ucrfs";
    if (::access(beside.c_str(), X_OK) == 0) return beside;
  }
  return "ucrfs";  // from PATH
}

// Runs argv (argv[0] searched on PATH) and waits for it; its stderr is
// returned as the error when it fails. Used for `ucrfs mount`, which returns
// once its server serves (the server itself detaches and drops stderr).
Status RunTool(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int err[2];
  if (::pipe2(err, O_CLOEXEC) != 0) return ErrnoError("pipe");
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(err[0]);
    ::close(err[1]);
    return ErrnoError("fork");
  }
  if (pid == 0) {
    // Only async-signal-safe calls: the caller may have threads.
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
      ::dup2(null, STDIN_FILENO);
      ::dup2(null, STDOUT_FILENO);
    }
    ::dup2(err[1], STDERR_FILENO);
    ::execvp(argv[0], argv.data());
    static const char kMsg[] = "cannot execute the ucrfs binary\n";
    (void)!::write(STDERR_FILENO, kMsg, sizeof kMsg - 1);
    ::_exit(127);
  }
  ::close(err[1]);
  std::string out;
  char buf[1024];
  for (;;) {
    ssize_t n = ::read(err[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (out.size() < 16384) out.append(buf, static_cast<size_t>(n));
  }
  ::close(err[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return ErrnoError("waitpid");
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return Ok();
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  if (auto nl = out.rfind('\n'); nl != std::string::npos) out = out.substr(nl + 1);  // the error line
  if (out.rfind("ucrfs: error: ", 0) == 0) out = out.substr(14);
  if (out.empty()) out = fmt::format("{} exited with status {}", args[0], status);
  return Error(Errc::kIo, out);
}


struct RootfsRecord {
  std::string id;
  backends::Kind backend = backends::Kind::kFuse;
  bool writable = true;
  std::string image;  // as given
  std::string key;    // the store's key of it
  std::string rootfs;
  std::string scratch;
  std::string lower;  // fuse backend: where the FUSE server mounts (== rootfs when read-only)
  uint64_t lower_dev = 0;  // writable fuse: st_dev of the FUSE mount under the overlay

  std::string ToJson() const {
    return json{{"id", id},       {"backend", std::string(backends::Name(backend))},
                {"writable", writable}, {"image", image},
                {"key", key},     {"rootfs", rootfs},
                {"scratch", scratch},   {"lower", lower}, {"lowerDev", lower_dev}}
        .dump();
  }
  static Result<RootfsRecord> FromJson(const std::string& body, const std::string& where) {
    json j = json::parse(body, nullptr, false);
    RootfsRecord r;
    try {
      if (!j.is_object()) throw json::other_error::create(501, "not an object", nullptr);
      r.id = j.at("id").get<std::string>();
      auto kind = backends::ParseKind(j.at("backend").get<std::string>());
      if (!kind.ok()) throw json::other_error::create(501, "bad backend", nullptr);
      r.backend = *kind;
      r.writable = j.at("writable").get<bool>();
      r.image = j.at("image").get<std::string>();
      r.key = j.at("key").get<std::string>();
      r.rootfs = j.at("rootfs").get<std::string>();
      r.scratch = j.at("scratch").get<std::string>();
      r.lower = j.value("lower", std::string());
      r.lower_dev = j.value("lowerDev", uint64_t{0});
    } catch (const json::exception&) {
      return Error(Errc::kMalformed, fmt::format("rootfs record {} is corrupt", where));
    }
    return r;
  }
};

}  // namespace

struct Provisioner::Impl {
  Options opts;

  // One store for the whole process (LMDB allows one environment per file
  // per process), open while some call uses it, so that `ucrfs gc` (which
  // needs the store alone) can run while the provisioner is idle.
  std::mutex store_mu;
  std::weak_ptr<index::Store> store_weak;

  // Pulls in flight, by image key: concurrent provisions of one image wait
  // for the first one's pull and index instead of fetching it again.
  std::mutex flights_mu;
  std::map<std::string, std::shared_future<Result<index::ImageRecord>>> flights;

  // Serializes the creation and destruction of one container's rootfses.
  std::mutex containers_mu;
  std::map<std::string, std::shared_ptr<std::mutex>> container_locks;

  std::string ContainersDir() const { return opts.work_dir + "/provisioner/containers"; }
  std::string ContainerDir(const std::string& id) const { return ContainersDir() + "/" + id; }
  std::string RecordPath(const std::string& id, const std::string& rootfs_id) const {
    return fmt::format("{}/rootfses/{}.json", ContainerDir(id), rootfs_id);
  }

  Result<std::shared_ptr<index::Store>> OpenStore() {
    std::lock_guard<std::mutex> l(store_mu);
    if (auto s = store_weak.lock()) return s;
    UCRFS_ASSIGN(auto opened, index::Store::Open(opts.store_dir, index::Store::Mode::kReadWrite));
    std::shared_ptr<index::Store> s(std::move(opened));
    store_weak = s;
    return s;
  }

  std::shared_ptr<std::mutex> ContainerLock(const std::string& id) {
    std::lock_guard<std::mutex> l(containers_mu);
    auto& m = container_locks[id];
    if (!m) m = std::make_shared<std::mutex>();
    return m;
  }

  // The image pulled (lazily for the fuse backend) and its tree prepared;
  // at most one pull per image at a time in this process.
  Result<index::ImageRecord> Prepare(const std::string& image, const std::string& key, bool lazy) {
    std::promise<Result<index::ImageRecord>> mine;
    std::shared_future<Result<index::ImageRecord>> flight;
    bool leader = false;
    {
      std::lock_guard<std::mutex> l(flights_mu);
      auto it = flights.find(key);
      if (it != flights.end()) {
        flight = it->second;
      } else {
        flight = mine.get_future().share();
        flights.emplace(key, flight);
        leader = true;
      }
    }
    if (!leader) return flight.get();
    auto result = [&]() -> Result<index::ImageRecord> {
      UCRFS_ASSIGN(auto store, OpenStore());
      UCRFS_ASSIGN(auto record, GetOrPull(opts.images, *store, image, lazy));
      UCRFS_TRY(index::PrepareImage(*store, record));
      return record;
    }();
    mine.set_value(result);
    std::lock_guard<std::mutex> l(flights_mu);
    flights.erase(key);
    return result;
  }

  Status MountFuse(const RootfsRecord& r) {
    std::vector<std::string> args{opts.ucrfs_binary, "--store", opts.store_dir};
    for (auto& a : opts.images.ToArgs()) args.push_back(std::move(a));
    args.insert(args.end(), {"mount", "--fetch-timeout", std::to_string(opts.fetch_timeout_s)});
    if (opts.max_cache_size > 0) args.insert(args.end(), {"--max-cache-size", std::to_string(opts.max_cache_size)});
    args.insert(args.end(), {r.image, r.lower});
    return RunTool(args);
  }

  // The writable fuse rootfs: an overlay whose only lower layer is the FUSE
  // mount, upper and work dirs in the scratch directory. Records the FUSE
  // mount's device, by which Recover tells a remounted lower from the same.
  Status MountOverlay(RootfsRecord& r) {
    std::string upper = r.scratch + "/upper", work = r.scratch + "/work";
    UCRFS_TRY(MakeDirs(upper, 0755));
    UCRFS_TRY(MakeDirs(work, 0700));
    struct stat st;
    if (::stat(r.lower.c_str(), &st) != 0) return ErrnoError("stat " + r.lower);
    std::string data = fmt::format("lowerdir={},upperdir={},workdir={}", r.lower, upper, work);
    if (::mount("overlay", r.rootfs.c_str(), "overlay", 0, data.c_str()) != 0) {
      return ErrnoError("mount overlay over the FUSE mount at " + r.rootfs);
    }
    r.lower_dev = st.st_dev;
    return Ok();
  }

  Status Make(RootfsRecord& r, const index::ImageRecord& image) {
    if (r.backend == backends::Kind::kFuse) {
      UCRFS_TRY(MountFuse(r));
      if (!r.writable) return Ok();
      return MountOverlay(r);
    }
    UCRFS_ASSIGN(auto store, OpenStore());
    backends::RootfsRequest req;
    req.store = store.get();
    req.image = image;
    req.rootfs = r.rootfs;
    req.scratch = r.scratch;
    req.writable = r.writable;
    auto images = opts.images;
    std::string name = r.image;
    req.lazy.opener = [images, name]() -> Result<std::shared_ptr<fetch::ImageSource>> {
      UCRFS_ASSIGN(auto given, fetch::ImageRef::Parse(name));
      UCRFS_ASSIGN(auto so, MakeSourceOptions(images));
      UCRFS_ASSIGN(auto ref, fetch::EffectiveRef(given, so));
      UCRFS_ASSIGN(auto source, fetch::OpenSource(ref, so));
      return std::shared_ptr<fetch::ImageSource>(std::move(source));
    };
    req.lazy.prefetch = index::Prefetch::kNone;
    UCRFS_TRY(backends::Provision(r.backend, req));
    if (r.backend != backends::Kind::kCopy) {
      // gc keeps the unpacked layers an overlay or bind rootfs uses.
      index::MountRecord mrec{r.rootfs, image.key, image.manifest_digest, 0, std::string(backends::Name(r.backend))};
      if (Status st = index::RecordMount(*store, mrec); !st.ok()) spdlog::warn("{}", st.error().message());
    }
    return Ok();
  }

  // The pid of the FUSE server serving `mountpoint`, from the store's records.
  pid_t ServerOf(const std::string& mountpoint) {
    auto store = OpenStore();
    if (!store.ok()) return 0;
    auto mounts = index::ListMounts(**store);
    if (!mounts.ok()) return 0;
    for (const auto& m : *mounts) {
      if (m.record.mountpoint == mountpoint && m.record.backend == "fuse") return static_cast<pid_t>(m.record.pid);
    }
    return 0;
  }

  // Unmounts the FUSE mount at `mountpoint` and ends its server: a busy
  // mount is detached and its server told to stop, so no server outlives its
  // container (a process still holding a file there then gets errors).
  Status EndFuse(const std::string& mountpoint) {
    pid_t pid = ServerOf(mountpoint);
    bool mounted = fusefs::IsMounted(mountpoint);
    if (mounted) {
      Status st = fusefs::Unmount(mountpoint, /*lazy=*/false);
      if (!st.ok()) {
        UCRFS_TRY(fusefs::Unmount(mountpoint, /*lazy=*/true));
        if (pid > 0 && ProcessRunning(pid)) ::kill(pid, SIGTERM);
      }
    } else if (pid > 0 && ProcessRunning(pid)) {
      ::kill(pid, SIGTERM);  // a server whose mount is gone has nothing to serve
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (pid > 0 && ProcessRunning(pid)) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (auto store = OpenStore(); store.ok()) (void)index::ForgetMount(**store, mountpoint);
    return Ok();
  }

  Status Unmake(const RootfsRecord& r) {
    if (r.backend == backends::Kind::kFuse) {
      if (r.writable) {
        // The overlay first: it holds the FUSE mount as its lower layer.
        // Busy (a process still has a file open there): detached.
        for (int i = 0; i < 8 && IsMountPoint(r.rootfs); ++i) {
          if (::umount2(r.rootfs.c_str(), UMOUNT_NOFOLLOW) != 0 &&
              ::umount2(r.rootfs.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0 && errno != EINVAL) {
            return ErrnoError("unmount " + r.rootfs);
          }
        }
      }
      if (!r.lower.empty()) UCRFS_TRY(EndFuse(r.lower));
      return Ok();
    }
    UCRFS_TRY(backends::Destroy(r.backend, r.rootfs, r.scratch));
    if (r.backend != backends::Kind::kCopy) {
      if (auto store = OpenStore(); store.ok()) (void)index::ForgetMount(**store, r.rootfs);
    }
    return Ok();
  }


  Result<std::vector<RootfsRecord>> Records(const std::string& container_id) const {
    std::vector<RootfsRecord> out;
    std::string dir = ContainerDir(container_id) + "/rootfses";
    UCRFS_ASSIGN(auto names, ListDir(dir));
    for (const auto& n : names) {
      if (n.size() < 6 || n.compare(n.size() - 5, 5, ".json") != 0) continue;
      std::string path = dir + "/" + n;
      UCRFS_ASSIGN(std::string body, ReadFile(path));
      UCRFS_ASSIGN(auto r, RootfsRecord::FromJson(body, path));
      out.push_back(std::move(r));
    }
    return out;
  }

  // Removes one rootfs: its mounts, its directories, then its record (last,
  // so that a failure half way is retried by the next Destroy or Recover).
  Status RemoveRootfs(const std::string& container_id, const RootfsRecord& r) {
    UCRFS_TRY(Unmake(r));
    for (const auto& dir : {r.rootfs, r.scratch}) {
      if (dir.empty() || !PathExists(dir)) continue;
      if (IsMountPoint(dir) || !backends::Destroy(backends::Kind::kCopy, dir, "").ok()) {
        return Error(Errc::kBusy, fmt::format("{} is still mounted; not removed", dir));
      }
      UCRFS_TRY(RemoveAll(dir));
    }
    if (::unlink(RecordPath(container_id, r.id).c_str()) != 0 && errno != ENOENT) {
      return ErrnoError("unlink " + RecordPath(container_id, r.id));
    }
    return Ok();
  }

  Status DestroyLocked(const std::string& container_id) {
    std::string cdir = ContainerDir(container_id);
    if (!PathExists(cdir)) return Ok();
    UCRFS_ASSIGN(auto records, Records(container_id));
    Status first;
    for (const auto& r : records) {
      if (Status st = RemoveRootfs(container_id, r); !st.ok() && first.ok()) first = st.error().Wrap("destroy rootfs " + r.id);
    }
    if (!first.ok()) return first;
    // What is left are the empty backends/<b>/{rootfses,scratch} directories
    // (and rootfs directories of attempts that crashed before their record
    // was written: nothing is mounted there).
    for (const char* b : {"fuse", "overlay", "copy", "bind"}) {
      for (const char* sub : {"rootfses", "scratch"}) {
        std::string d = fmt::format("{}/backends/{}/{}", cdir, b, sub);
        UCRFS_ASSIGN(auto names, ListDir(d));
        for (const auto& n : names) {
          std::string p = d + "/" + n;
          if (IsMountPoint(p)) return Error(Errc::kBusy, fmt::format("{} is mounted but has no record", p));
        }
      }
    }
    return RemoveAll(cdir);
  }
};

Provisioner::Provisioner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Provisioner::~Provisioner() = default;

const Options& Provisioner::options() const { return impl_->opts; }

Result<std::unique_ptr<Provisioner>> Provisioner::Create(Options opts) {
  if (opts.work_dir.empty() || opts.work_dir.front() != '/') {
    return Error(Errc::kInvalidArgument, fmt::format("provisioner work dir '{}' is not an absolute path", opts.work_dir));
  }
  if (opts.store_dir.empty()) return Error(Errc::kInvalidArgument, "provisioner: no store directory");
  if (opts.fetch_timeout_s <= 0) return Error(Errc::kInvalidArgument, "provisioner: fetch timeout must be positive");
  if (opts.ucrfs_binary.empty()) opts.ucrfs_binary = DefaultUcrfsBinary();
  auto impl = std::make_unique<Impl>();
  impl->opts = std::move(opts);
  UCRFS_TRY(MakeDirs(impl->ContainersDir(), 0700));
  return std::unique_ptr<Provisioner>(new Provisioner(std::move(impl)));
}

Result<Rootfs> Provisioner::Provision(const std::string& container_id, const std::string& image,
                                      std::optional<backends::Kind> backend_arg, bool writable) {
  UCRFS_TRY(CheckContainerId(container_id));
  backends::Kind backend = backend_arg.value_or(impl_->opts.default_backend);
  if (backend == backends::Kind::kBind) writable = false;
  UCRFS_ASSIGN(std::string key, ImageKey(impl_->opts.images, image));
  // Slow and shared: outside the container's lock.
  UCRFS_ASSIGN(auto record, impl_->Prepare(image, key, /*lazy=*/backend == backends::Kind::kFuse));
  index::RuntimeConfig config;
  {
    UCRFS_ASSIGN(auto store, impl_->OpenStore());
    UCRFS_ASSIGN(config, index::RuntimeConfigOf(*store, record));
  }

  auto lock = impl_->ContainerLock(container_id);
  std::lock_guard<std::mutex> l(*lock);
  RootfsRecord r;
  UCRFS_ASSIGN(r.id, NewUuid());
  r.backend = backend;
  r.writable = writable;
  r.image = image;
  r.key = key;
  std::string bdir = fmt::format("{}/backends/{}", impl_->ContainerDir(container_id), backends::Name(backend));
  r.rootfs = fmt::format("{}/rootfses/{}", bdir, r.id);
  r.scratch = fmt::format("{}/scratch/{}", bdir, r.id);
  if (backend == backends::Kind::kFuse) r.lower = writable ? r.scratch + "/lower" : r.rootfs;
  UCRFS_TRY(MakeDirs(impl_->ContainerDir(container_id) + "/rootfses", 0700));
  UCRFS_TRY(WriteFileAtomic(impl_->RecordPath(container_id, r.id), r.ToJson()));
  auto made = [&]() -> Status {
    UCRFS_TRY(MakeDirs(r.rootfs, 0755));
    UCRFS_TRY(MakeDirs(r.scratch, 0700));
    if (!r.lower.empty()) UCRFS_TRY(MakeDirs(r.lower, 0755));
    UCRFS_TRY(impl_->Make(r, record));
    return WriteFileAtomic(impl_->RecordPath(container_id, r.id), r.ToJson());
  }();
  if (!made.ok()) {
    if (Status st = impl_->RemoveRootfs(container_id, r); !st.ok()) {
      spdlog::warn("cleaning up a failed provision of {}: {}", r.rootfs, st.error().message());
    }
    return made.error().Wrap(fmt::format("provision {} for container {}", image, container_id));
  }
  spdlog::info("provisioned {} for container {} at {} ({})", image, container_id, r.rootfs, backends::Name(backend));
  return Rootfs{r.id, r.rootfs, backend, writable, std::move(record), std::move(config)};
}

Status Provisioner::Destroy(const std::string& container_id) {
  UCRFS_TRY(CheckContainerId(container_id));
  auto lock = impl_->ContainerLock(container_id);
  std::lock_guard<std::mutex> l(*lock);
  return impl_->DestroyLocked(container_id);
}

Result<std::vector<std::string>> Provisioner::Containers() const { return ListDir(impl_->ContainersDir()); }

Result<std::vector<Rootfs>> Provisioner::Rootfses(const std::string& container_id) const {
  UCRFS_TRY(CheckContainerId(container_id));
  UCRFS_ASSIGN(auto records, impl_->Records(container_id));
  std::vector<Rootfs> out;
  for (const auto& r : records) {
    Rootfs f;
    f.id = r.id;
    f.path = r.rootfs;
    f.backend = r.backend;
    f.writable = r.writable;
    f.image.key = r.key;
    out.push_back(std::move(f));
  }
  return out;
}

Status Provisioner::Recover(const std::set<std::string>& live) {
  UCRFS_ASSIGN(auto ids, Containers());
  Status first;
  auto note = [&](const Status& st, const std::string& what) {
    if (!st.ok()) {
      spdlog::warn("recover: {}: {}", what, st.error().message());
      if (first.ok()) first = st.error().Wrap(what);
    }
  };
  bool restart_servers = false;
  for (const auto& id : ids) {
    if (!CheckContainerId(id).ok()) continue;
    if (!live.count(id)) {
      note(Destroy(id), "destroy orphan container " + id);
      continue;
    }
    auto records = impl_->Records(id);
    if (!records.ok()) {
      note(records.error(), "container " + id);
      continue;
    }
    for (const auto& r : *records) {
      if (r.backend != backends::Kind::kFuse) continue;
      if (!ProcessRunning(impl_->ServerOf(r.lower))) restart_servers = true;
    }
  }
  // Dead FUSE servers: `ucrfs recover` serves their mounts again (resuming
  // the very connection when it can, so the container sees nothing).
  if (restart_servers) {
    std::vector<std::string> args{impl_->opts.ucrfs_binary, "--store", impl_->opts.store_dir};
    for (auto& a : impl_->opts.images.ToArgs()) args.push_back(std::move(a));
    args.push_back("recover");
    note(RunTool(args), "restart FUSE servers");
    // A server that came back on a new mount (the old connection was lost)
    // left the overlays above it on the dead one: put them on the new one.
    // Processes already inside such a rootfs keep the dead mount.
    for (const auto& id : live) {
      auto records = impl_->Records(id);
      if (!records.ok()) continue;
      for (auto r : *records) {
        if (r.backend != backends::Kind::kFuse || !r.writable) continue;
        struct stat st;
        if (::stat(r.lower.c_str(), &st) != 0 || st.st_dev == r.lower_dev) continue;
        spdlog::warn("recover: the FUSE mount under {} is new; remounting its overlay", r.rootfs);
        if (::umount2(r.rootfs.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0 && errno != EINVAL) {
          note(ErrnoError("unmount " + r.rootfs), "container " + id);
          continue;
        }
        Status st2 = impl_->MountOverlay(r);
        if (st2.ok()) st2 = WriteFileAtomic(impl_->RecordPath(id, r.id), r.ToJson());
        note(st2, "container " + id);
      }
    }
  }
  return first;
}

}  // namespace ucrfs::provisioner
