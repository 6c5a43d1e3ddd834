// mount and umount.
//
// `mount` does all the slow, fallible work in the foreground (pull, index,
// merge), then forks the server: the child mounts and tells the parent over a
// pipe that it is serving (or why it is not), and the parent returns. LMDB
// environments must not cross a fork, so the store is closed before it and
// reopened in the child.
//
// A running server records itself in /run/ucrfs/mounts/<sha256(mountpoint)>
// (pid, mountpoint, image, keeper pid); `umount` unmounts and waits for the
// server and the keeper to exit.
//
// Beside the server runs its keeper (fusefs/keeper.h: the hidden
// `fuse-keeper` command), which holds the mount's /dev/fuse connection and
// listens on <record>.keeper. If the server dies, the mount's requests wait
// instead of failing, and `recover` starts a server that adopts the
// connection: processes using the mount (a container whose root it is) only
// see a pause.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <iostream>

#include "commands.h"
#include "mount_trace.h"
#include "ucrfs/common/file.h"
#include "ucrfs/common/log.h"
#include "ucrfs/common/mounts.h"
#include "ucrfs/fusefs/keeper.h"
#include "ucrfs/fusefs/server.h"
#include "ucrfs/index/chunk_cache.h"
#include "ucrfs/index/gc.h"
#include "ucrfs/index/image_tree.h"
#include "ucrfs/index/link_estimate.h"

namespace ucrfs::cli {
namespace {

constexpr const char* kRunDir = "/run/ucrfs/mounts";

std::string PidFile(const std::string& mountpoint) {
  return fmt::format("{}/{}", kRunDir, Digest::Sha256Of(mountpoint).hex());
}

std::string StatsFile(const std::string& mountpoint) { return PidFile(mountpoint) + ".stats"; }

std::string KeeperSocket(const std::string& mountpoint) { return PidFile(mountpoint) + ".keeper"; }

// Where a server in the background logs, and the log of the one before it
// (LogToFile).
std::string LogFile(const std::string& mountpoint) { return PidFile(mountpoint) + ".log"; }
std::string PreviousLogFile(const std::string& mountpoint) { return PidFile(mountpoint) + ".1.log"; }

// Forgets a server (and keeper) gone for good: its record, stats, keeper
// socket and logs.
void RemoveRunFiles(const std::string& mountpoint) {
  for (const std::string& f : {PidFile(mountpoint), StatsFile(mountpoint), KeeperSocket(mountpoint),
                               LogFile(mountpoint), PreviousLogFile(mountpoint)}) {
    ::unlink(f.c_str());
  }
}

// The pids in a mount's record: the server's (line 1) and its keeper's
// (line 4; 0 when the mount has none).
struct RecordPids {
  pid_t server = 0, keeper = 0;
};
RecordPids ReadRecordPids(const std::string& mountpoint) {
  RecordPids out;
  auto pf = ReadFile(PidFile(mountpoint));
  if (!pf.ok()) return out;
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < pf->size()) {
    size_t eol = pf->find('\n', start);
    if (eol == std::string::npos) eol = pf->size();
    lines.push_back(pf->substr(start, eol - start));
    start = eol + 1;
  }
  if (!lines.empty()) out.server = static_cast<pid_t>(std::atol(lines[0].c_str()));
  if (lines.size() > 3) out.keeper = static_cast<pid_t>(std::atol(lines[3].c_str()));
  return out;
}

// The counters, and what the mount learnt of its registry's link (the
// fitted delay and rate: null until its requests give a fit).
nlohmann::json StatsJson(const index::FetchStats& s, const index::LinkEstimate& link) {
  nlohmann::json j = {{"requests", s.requests.load()},           {"bytesFetched", s.bytes_fetched.load()},
                      {"chunksFetched", s.chunks_fetched.load()}, {"cacheHits", s.cache_hits.load()},
                      {"cacheMisses", s.cache_misses.load()},     {"fetchErrors", s.fetch_errors.load()},
                      {"waitSeconds", static_cast<double>(s.wait_ns.load()) / 1e9},
                      {"prefetchedChunks", s.prefetched_chunks.load()},
                      {"prefetchRunning", s.prefetch_running.load()},
                      {"readAheadChunks", s.read_ahead_chunks.load()},
                      {"cacheBytes", s.cache_bytes.load()},       {"evictions", s.evictions.load()},
                      {"mountBytes", s.mount_bytes.load()},       {"neighbourBytes", link.Worthwhile()},
                      {"linkDelayMs", nullptr},                   {"linkMbit", nullptr}};
  if (index::LinkEstimate::Fit fit; link.Fitted(&fit)) {
    // Rounded, so that the stats file changes only when the numbers do.
    j["linkDelayMs"] = std::round(fit.delay_s * 1e4) / 10;
    j["linkMbit"] = std::round(fit.bytes_per_s * 8 / 1e5) / 10;
  }
  return j;
}

// Keeps the mount's stats file current (rewritten when the numbers change,
// at most every 500 ms) until `serving` goes false.
void WriteStatsLoop(const std::string& mountpoint, const index::FetchStats& stats, const index::LinkEstimate& link,
                    const MountTraces& traces, const std::atomic<bool>& serving) {
  std::string last;
  while (serving) {
    nlohmann::json j = StatsJson(stats, link);
    traces.AddStats(j);
    std::string now = j.dump();
    if (now != last && WriteFileAtomic(StatsFile(mountpoint), now).ok()) last = now;
    for (int i = 0; i < 10 && serving; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::unlink(StatsFile(mountpoint).c_str());
}


// Serves the image until it is unmounted. `ready` (if >= 0) gets "OK\n" once
// the mount is serving, or the error line, and is then closed.
// Opens the image's source for lazy layers on first use, and again after a
// failure (a registry that was down may be back). Fetches from a mount are
// bounded: a read that cannot be served fails with EIO instead of hanging.
index::SourceOpener MakeOpener(fetch::ImageRef ref, fetch::SourceOptions opts, int fetch_timeout_s) {
  // Three attempts share the budget; the waits between them are short.
  int per_attempt = std::max(2, fetch_timeout_s / 3);
  opts.max_attempts = 3;
  opts.retry_max_delay_ms = 1000;
  opts.connect_timeout_s = per_attempt;
  opts.stall_timeout_s = per_attempt;
  opts.request_timeout_s = per_attempt;
  return [ref = std::move(ref), opts = std::move(opts)]() -> Result<std::shared_ptr<fetch::ImageSource>> {
    UCRFS_ASSIGN(auto source, fetch::OpenSource(ref, opts));
    return std::shared_ptr<fetch::ImageSource>(std::move(source));
  };
}

// Starts the keeper of the mount `server` made (see the top of the file).
// A mount without one still serves; it just cannot be resumed.
Result<fusefs::StartedKeeper> StartKeeper(const fusefs::FuseServer& server, const std::string& mountpoint) {
  UCRFS_ASSIGN(int listen, fusefs::ListenKeeper(KeeperSocket(mountpoint)));
  auto started = fusefs::StartKeeper({"/proc/self/exe", "fuse-keeper", "--mountpoint=" + mountpoint}, server.fd(),
                                     listen, server.init_request());
  ::close(listen);
  if (!started.ok()) ::unlink(KeeperSocket(mountpoint).c_str());
  return started;
}

// With `adopt`, takes over the connection of the mount at `mountpoint` from
// its keeper instead of mounting (the previous server died).
Status Serve(const std::string& store_dir, const index::ImageRecord& image, index::LazyOptions lazy,
             MountTraces& traces, const std::string& mountpoint, int ready, bool adopt) {
  auto report = [&](const Status& st) {
    if (ready < 0) return;
    std::string msg = st.ok() ? "OK\n" : st.error().message() + "\n";
    (void)WriteAll(ready, msg, "ready pipe");
    ::close(ready);
    ready = -1;
  };
  auto run = [&]() -> Status {
    UCRFS_ASSIGN(auto opened, index::Store::Open(store_dir, index::Store::Mode::kReadOnly));
    std::shared_ptr<index::Store> store(std::move(opened));
    auto stats = lazy.stats;
    auto link = lazy.link;
    UCRFS_ASSIGN(auto tree, index::OpenTree(store, image, std::move(lazy)));
    fusefs::MountOptions mo;
    mo.mountpoint = mountpoint;
    mo.fsname = "ucrfs";
    // All workers read the connection's own fd, which the keeper shares, so
    // that what a dying server had read can be resent to the next one.
    mo.clone_fd = false;
    fusefs::Adopted adopted;
    if (adopt) {
      UCRFS_ASSIGN(adopted, fusefs::AdoptFromKeeper(KeeperSocket(mountpoint)));
      mo.adopt_fd = adopted.fuse_fd;
      mo.adopt_init = adopted.init;
    }
    // Ours from here (the keeper's "bye" when this server ends cleanly).
    struct Lease {
      int fd = -1;
      ~Lease() { fusefs::ReleaseKeeper(fd); }
    } lease{adopted.lease_fd};
    pid_t keeper = adopted.keeper_pid;
    // SIGTERM, SIGINT and SIGHUP end the server cleanly: a thread waits for
    // them and asks the session to exit; the server's destructor unmounts.
    // They are blocked before any FUSE worker thread exists, so only that
    // thread ever takes them.
    sigset_t stop;
    sigemptyset(&stop);
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&stop, sig);
    pthread_sigmask(SIG_BLOCK, &stop, nullptr);
    UCRFS_ASSIGN(auto server, fusefs::FuseServer::Mount(traces.Serve(std::move(tree)), mo));
    UCRFS_TRY(MakeDirs(kRunDir));
    if (!adopt) {
      auto started = StartKeeper(*server, mountpoint);
      if (started.ok()) {
        lease.fd = started->lease_fd;
        keeper = started->pid;
      } else {
        spdlog::warn("{}: no keeper, so the mount cannot be resumed if its server dies: {}", mountpoint,
                     started.error().message());
      }
    }
    UCRFS_TRY(WriteFileAtomic(PidFile(mountpoint),
                              fmt::format("{}\n{}\n{}\n{}\n", ::getpid(), mountpoint, image.key, keeper)));
    // In the store too: gc keeps what a live mount serves.
    index::MountRecord mrec{mountpoint, image.key, image.manifest_digest, ::getpid(), "fuse"};
    if (Status rs = index::RecordMount(*store, mrec); !rs.ok()) spdlog::warn("{}", rs.error().message());
    std::atomic<bool> serving{true};
    std::thread stopper([&] {
      int sig = 0;
      sigwait(&stop, &sig);
      if (serving) server->Exit();
    });
    std::thread stats_writer([&] { WriteStatsLoop(mountpoint, *stats, *link, traces, serving); });
    traces.Start();
    report(Ok());
    Status st = server->Run();
    traces.Finish();
    serving = false;
    stats_writer.join();
    ::kill(::getpid(), SIGTERM);  // wakes the stopper if no signal came
    stopper.join();
    server.reset();  // unmounts if a signal, not an unmount, ended the loop
    // The keeper lets the connection go and exits: a mount still in use
    // after a lazy unmount answers ENOTCONN, as without a keeper.
    fusefs::ReleaseKeeper(lease.fd);
    lease.fd = -1;
    ::unlink(PidFile(mountpoint).c_str());
    // A server that stops on its own (umount, signal) forgets its mount; one
    // that is killed leaves the record for `ucrfs recover`.
    (void)index::ForgetMount(*store, mountpoint);
    return st;
  };
  Status st = run();
  report(st);
  return st;
}


}  // namespace

Result<std::string> RealDir(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) return ErrnoError("mountpoint " + path);
  struct stat st;
  if (::stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Error(Errc::kInvalidArgument, fmt::format("mountpoint {} is not a directory", path));
  }
  return std::string(buf);
}

Result<index::Prefetch> ParsePrefetch(const std::string& v) {
  if (v == "none") return index::Prefetch::kNone;
  if (v == "landmark") return index::Prefetch::kLandmark;
  if (v == "all") return index::Prefetch::kAll;
  return Error(Errc::kInvalidArgument, fmt::format("--prefetch: '{}' is not none, landmark or all", v));
}

namespace {

// `mount`, or with `adopt` the start of a server that takes the mount at
// mountpoint_arg over from its keeper.
Status MountFuse(const GlobalFlags& g, const std::string& image, const std::string& mountpoint_arg,
                 const MountFlags& m, bool adopt) {
  // Anything but a keyword names a trace to replay; the lazy layers then
  // carry on as `all`.
  auto keyword = ParsePrefetch(m.prefetch);
  if (!keyword.ok() && m.prefetch.empty()) return keyword.error();
  UCRFS_ASSIGN(auto traces, MountTraces::Prepare(keyword.ok() ? "" : m.prefetch, m.record));
  index::Prefetch prefetch = keyword.ok() ? *keyword : index::Prefetch::kAll;
  if (m.fetch_timeout_s <= 0) return Error(Errc::kInvalidArgument, "--fetch-timeout must be positive");
  // A mount being adopted is not touched: until a server serves it, any
  // stat of it waits. Its recorded path is canonical already.
  std::string mountpoint = mountpoint_arg;
  if (!adopt) {
    UCRFS_ASSIGN(mountpoint, RealDir(mountpoint_arg));
  }
  if (!adopt && fusefs::IsMounted(mountpoint)) {
    return Error(Errc::kInvalidArgument, fmt::format("{} is already a ucrfs mount", mountpoint));
  }
  UCRFS_ASSIGN(auto given, fetch::ImageRef::Parse(image));
  UCRFS_ASSIGN(auto opts, MakeSourceOptions(g));
  UCRFS_ASSIGN(auto ref, fetch::EffectiveRef(given, opts));
  index::ImageRecord record;
  index::LazyOptions lazy;
  {
    UCRFS_ASSIGN(auto store, index::Store::Open(g.store, index::Store::Mode::kReadWrite));
    UCRFS_ASSIGN(record, GetOrPull(g, *store, image, /*lazy=*/true, &lazy.stats->mount_bytes));
    UCRFS_TRY(index::PrepareImage(*store, record));
    if (record.trace && !m.prefetch_given) {
      // The trace pushed with the image's ucrfs index: a bad one is only
      // not replayed.
      auto body = ReadFile(store->BlobPath(*record.trace));
      auto trace = body.ok() ? index::ParseTrace(*body) : Result<index::Trace>(body.error());
      if (trace.ok()) {
        traces->ReplayIfNone(std::move(*trace));
      } else {
        spdlog::warn("not replaying the trace of {}'s ucrfs index: {}", record.key, trace.error().message());
      }
    }
  }  // closed before any fork
  lazy.opener = MakeOpener(ref, opts, m.fetch_timeout_s);
  lazy.prefetch = prefetch;
  lazy.cache = index::ChunkCache::Open(g.store + "/chunks", m.max_cache_size);
  lazy.read_ahead = m.read_ahead;
  if (m.foreground) {
    // It logs to stderr; a log an earlier server left here is not its own.
    ::unlink(LogFile(mountpoint).c_str());
    return Serve(g.store, record, std::move(lazy), *traces, mountpoint, -1, adopt);
  }

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoError("pipe");
  pid_t pid = ::fork();
  if (pid < 0) return ErrnoError("fork");
  if (pid == 0) {
    ::close(fds[0]);
    ::setsid();
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, STDIN_FILENO);
      ::dup2(null, STDOUT_FILENO);
      ::dup2(null, STDERR_FILENO);
      if (null > STDERR_FILENO) ::close(null);
    }
    if (::chdir("/") != 0) ::_exit(1);
    // Its warnings (a fetch that failed, a piece that did not verify) go to
    // a file `ucrfs stats` names while it serves; without one the server
    // still serves. A server that ends cleanly takes it (and the log of the
    // server it resumed) with it; one that dies leaves it for the next
    // server here to keep as LogFile's ".1" sibling.
    const std::string log = LogFile(mountpoint);
    if (MakeDirs(kRunDir).ok()) (void)LogToFile(log);
    Status st = Serve(g.store, record, std::move(lazy), *traces, mountpoint, fds[1], adopt);
    if (st.ok()) {
      ::unlink(log.c_str());
      ::unlink(PreviousLogFile(mountpoint).c_str());
    }
    ::_exit(st.ok() ? 0 : 1);
  }
  ::close(fds[1]);
  std::string answer;
  char buf[512];
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  if (answer == "OK\n") return Ok();
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!answer.empty() && answer.back() == '\n') answer.pop_back();
  if (answer.empty()) answer = fmt::format("mount server exited before serving (status {})", status);
  return Error(Errc::kIo, answer);
}

}  // namespace

Status Mount(const GlobalFlags& g, const std::string& image, const std::string& mountpoint_arg, const MountFlags& m) {
  if (m.backend != "fuse") return MountBackend(g, image, mountpoint_arg, m);
  return MountFuse(g, image, mountpoint_arg, m, /*adopt=*/false);
}

Status Umount(const std::string& mountpoint_arg, bool lazy) {
  // A bundle's rootfs is found by its path even when its server died.
  if (auto slash = mountpoint_arg.find_last_of('/'); slash != std::string::npos) {
    auto parent = RealDir(slash == 0 ? "/" : mountpoint_arg.substr(0, slash));
    std::string base = mountpoint_arg.substr(slash + 1);
    if (parent.ok() && !base.empty() && base != "." && base != ".." &&
        IsBundleRootfs((*parent == "/" ? "" : *parent) + "/" + base)) {
      return UmountBundle((*parent == "/" ? "" : *parent) + "/" + base);
    }
  }
  UCRFS_ASSIGN(std::string mountpoint, RealDir(mountpoint_arg));
  if (IsBundleRootfs(mountpoint)) return UmountBundle(mountpoint);
  if (IsBackendRootfs(mountpoint)) return UmountBackend(mountpoint);
  if (!fusefs::IsMounted(mountpoint)) {
    return Error(Errc::kInvalidArgument, fmt::format("{} is not a ucrfs mount", mountpoint));
  }
  const RecordPids pids = ReadRecordPids(mountpoint);
  UCRFS_TRY(fusefs::Unmount(mountpoint, lazy));
  // The server's loop ends when the kernel closes the session, and so does
  // the keeper (also when the server had died); wait for both so that no
  // process outlives the mount. After a lazy unmount of a busy mount they
  // serve on until its last user lets go.
  for (pid_t pid : {pids.server, pids.keeper}) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (pid > 0 && ProcessRunning(pid)) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid, SIGTERM);
        ::unlink(PidFile(mountpoint).c_str());
        return Error(Errc::kIo, fmt::format("{} {} for {} did not exit after unmount; sent SIGTERM",
                                            pid == pids.server ? "server" : "keeper", pid, mountpoint));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  // A server that had died could not remove its record (nor its log).
  if (pids.server > 0 && !ProcessRunning(pids.server)) RemoveRunFiles(mountpoint);
  return Ok();
}

Status Recover(const GlobalFlags& g) {
  std::vector<index::MountState> mounts;
  {
    auto store = index::Store::Open(g.store, index::Store::Mode::kReadOnly);
    if (!store.ok() && store.error().code() == Errc::kNotFound) return Ok();  // no store, nothing mounted from it
    if (!store.ok()) return store.error();
    UCRFS_ASSIGN(mounts, index::ListMounts(**store));
  }
  Status first;
  for (const auto& m : mounts) {
    const auto& r = m.record;
    if (r.backend != "fuse") continue;  // kernel mounts: nothing to restart
    if (r.pid > 0 && ProcessRunning(static_cast<pid_t>(r.pid))) {
      fmt::print("serving    {} ({})\n", r.mountpoint, r.image);
      continue;
    }
    if (fusefs::KeeperAlive(KeeperSocket(r.mountpoint))) {
      // The keeper still holds the connection: the mount's requests wait.
      // A new server adopts it; its record replaces the dead one's. (Also
      // when the mount was detached: its users still wait for answers.)
      Status st = MountFuse(g, r.image, r.mountpoint, MountFlags{}, /*adopt=*/true);
      if (st.ok()) {
        fmt::print("resumed    {} ({})\n", r.mountpoint, r.image);
        continue;
      }
      // Only when the keeper went away meanwhile does a remount still help.
      if (fusefs::KeeperAlive(KeeperSocket(r.mountpoint))) {
        fmt::print("failed     {} ({}): {}\n", r.mountpoint, r.image, st.error().message());
        if (first.ok()) first = st.error().Wrap("recover " + r.mountpoint);
        continue;
      }
    }
    auto store = index::Store::Open(g.store, index::Store::Mode::kReadOnly);
    if (!fusefs::IsMounted(r.mountpoint)) {
      // Server and mount both gone: only the record is left.
      if (store.ok()) (void)index::ForgetMount(**store, r.mountpoint);
      RemoveRunFiles(r.mountpoint);
      fmt::print("forgotten  {} ({})\n", r.mountpoint, r.image);
      continue;
    }
    // The server and its keeper died under the mount (reads answer
    // ENOTCONN): detach the dead mount and serve the image there again.
    Status st = fusefs::Unmount(r.mountpoint, /*lazy=*/true);
    if (st.ok()) {
      ::unlink(PidFile(r.mountpoint).c_str());
      if (store.ok()) (void)index::ForgetMount(**store, r.mountpoint);
      store = Error(Errc::kInternal, "closed");  // Mount opens the store read-write itself
      st = Mount(g, r.image, r.mountpoint, MountFlags{});
    }
    if (st.ok()) {
      fmt::print("restarted  {} ({})\n", r.mountpoint, r.image);
    } else {
      fmt::print("failed     {} ({}): {}\n", r.mountpoint, r.image, st.error().message());
      if (first.ok()) first = st.error().Wrap("recover " + r.mountpoint);
    }
  }
  return first;
}

Status FuseKeeper() {
  // fds 3, 4, 5: the connection, the listening socket, the lease (StartKeeper).
  return fusefs::RunKeeper(3, 4, 5);
}

Status Stats(const std::string& mountpoint_arg, bool json) {
  UCRFS_ASSIGN(std::string mountpoint, RealDir(mountpoint_arg));
  if (!fusefs::IsMounted(mountpoint)) {
    return Error(Errc::kInvalidArgument, fmt::format("{} is not a ucrfs mount", mountpoint));
  }
  auto body = ReadFile(StatsFile(mountpoint));
  nlohmann::json j = body.ok() ? nlohmann::json::parse(*body, nullptr, false)
                               : StatsJson(index::FetchStats{}, index::LinkEstimate{});
  if (j.is_discarded()) return Error(Errc::kMalformed, "stats file of " + mountpoint + " is corrupt");
  const std::string log = LogFile(mountpoint);
  const bool has_log = PathExists(log);
  if (json) {
    if (has_log) j["logFile"] = log;
    std::cout << j.dump(2) << std::endl;
    return Ok();
  }
  uint64_t hits = j.value("cacheHits", uint64_t{0}), misses = j.value("cacheMisses", uint64_t{0});
  fmt::print("mount:             {}\n", mountpoint);
  fmt::print("requests:          {}\n", j.value("requests", uint64_t{0}));
  fmt::print("bytes fetched:     {} (and {} before serving)\n", j.value("bytesFetched", uint64_t{0}),
             j.value("mountBytes", uint64_t{0}));
  fmt::print("chunks fetched:    {} ({} in the background, {} read ahead)\n", j.value("chunksFetched", uint64_t{0}),
             j.value("prefetchedChunks", uint64_t{0}), j.value("readAheadChunks", uint64_t{0}));
  fmt::print("chunk cache:       {} hits, {} misses ({:.1f}% hits)\n", hits, misses,
             hits + misses == 0 ? 100.0 : 100.0 * static_cast<double>(hits) / static_cast<double>(hits + misses));
  fmt::print("cache size:        {} bytes ({} pieces evicted)\n", j.value("cacheBytes", uint64_t{0}),
             j.value("evictions", uint64_t{0}));
  fmt::print("fetch errors:      {}\n", j.value("fetchErrors", uint64_t{0}));
  fmt::print("waited on network: {:.3f} s\n", j.value("waitSeconds", 0.0));
  if (j.contains("linkMbit") && j["linkMbit"].is_number() && j["linkDelayMs"].is_number()) {
    fmt::print("link:              {:.1f} ms + {:.1f} Mbit/s; a fetch takes up to {} bytes after what it needs\n",
               j["linkDelayMs"].get<double>(), j["linkMbit"].get<double>(), j.value("neighbourBytes", uint64_t{0}));
  } else {
    fmt::print("link:              not measured yet; a fetch takes up to {} bytes after what it needs\n",
               j.value("neighbourBytes", uint64_t{0}));
  }
  fmt::print("prefetching:       {} layer(s)\n", j.value("prefetchRunning", int64_t{0}));
  PrintTraceStats(j);
  fmt::print("log:               {}\n", has_log ? log : "stderr of the server (--foreground)");
  return Ok();
}

}  // namespace ucrfs::cli
