#include "ucrfs/isolator/launcher.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>
#include <grp.h>

#include <cstring>
#include <sstream>

#include <fmt/format.h>

#include "in_root.h"

namespace ucrfs::isolator {

const std::vector<std::string> kMaskedPaths = {
    "/proc/acpi",          "/proc/asound",    "/proc/kcore",       "/proc/keys",
    "/proc/key-users",     "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi",
    "/proc/timer_list",    "/proc/timer_stats", "/sys/firmware",
};
const std::vector<std::string> kReadonlyPaths = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

namespace {

constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
// Exit status of init when the container could not be set up (the reason is
// on the error pipe).
constexpr int kSetupFailed = 125;

int g_self_pipe = -1;

// The caller's handler: hands the signal to the wait loop. Signals the kernel
// sends (the terminal's ^C to the whole foreground process group) reach the
// command directly and are not forwarded again.
void ParentHandler(int sig, siginfo_t* info, void*) {
  if (sig != SIGCHLD && info != nullptr && info->si_code == SI_KERNEL) return;
  int saved = errno;
  unsigned char b = static_cast<unsigned char>(sig);
  ssize_t n = ::write(g_self_pipe, &b, 1);
  (void)n;
  errno = saved;
}

// Init only needs a handler to exist: a PID namespace's init does not receive
// a signal it has no handler for. It then takes them with sigwaitinfo.
void NoopHandler(int) {}

Status Mount(const std::string& source, const std::string& target, const char* type, unsigned long flags,
             const std::string& data, const std::string& what) {
  if (::mount(source.c_str(), target.c_str(), type, flags, data.empty() ? nullptr : data.c_str()) != 0)
    return ErrnoError("mount " + what);
  return Ok();
}

// Binds `source` onto `path` in the root, read-only if asked: a bind mount
// ignores MS_RDONLY, so it is remounted, through a fresh fd of the path (the
// old one names the covered directory, not the new mount).
Status BindInRoot(int root, const std::string& source, const std::string& path, bool readonly,
                  unsigned long extra, const std::string& what) {
  UCRFS_ASSIGN(UniqueFd at, OpenInRoot(root, path, O_PATH));
  UCRFS_TRY(Mount(source, FdPath(at.get()), nullptr, MS_BIND | MS_REC, "", what));
  if (!readonly) return Ok();
  UCRFS_ASSIGN(UniqueFd top, OpenInRoot(root, path, O_PATH));
  return Mount("", FdPath(top.get()), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | extra, "",
               what + " (read-only remount)");
}

// The filesystem/linux isolator's mounts, in its order, then pivot_root.
Status SetUpRootfs(const ContainerSpec& spec) {
  const std::string& r = spec.rootfs;
  // Nothing mounted in here propagates back to the host, and the host's
  // unmounts (of a rootfs being destroyed) still reach in.
  UCRFS_TRY(Mount("", "/", nullptr, MS_SLAVE | MS_REC, "", "/ as rslave"));
  // pivot_root needs the new root to be a mount point.
  UCRFS_TRY(Mount(r, r, nullptr, MS_BIND | MS_REC, "", "bind " + r + " onto itself"));
  UCRFS_ASSIGN(UniqueFd root, OpenDir(r));
  const int rf = root.get();

  {
    UCRFS_ASSIGN(UniqueFd at, MakeDirsInRoot(rf, "/proc"));
    UCRFS_TRY(Mount("proc", FdPath(at.get()), "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV, "", "proc on " + r + "/proc"));
  }
  for (const auto& p : kReadonlyPaths) {
    auto at = OpenInRoot(rf, p, O_PATH);
    if (!at.ok() && at.error().code() == Errc::kNotFound) continue;
    if (!at.ok()) return at.error();
    UCRFS_TRY(BindInRoot(rf, FdPath(at->get()), p, true, MS_NOSUID | MS_NODEV | MS_NOEXEC, p + " read-only"));
  }
  {
    UCRFS_ASSIGN(UniqueFd at, MakeDirsInRoot(rf, "/sys"));
    Status st = Mount("sysfs", FdPath(at.get()), "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "",
                      "sysfs on " + r + "/sys");
    // The host's own sysfs already there (a rootfs of "/"): the same
    // superblock cannot be mounted on itself; a read-only bind shows it.
    if (!st.ok() && errno == EBUSY) st = BindInRoot(rf, "/sys", "/sys", true, MS_NOSUID | MS_NODEV | MS_NOEXEC, "/sys");
    UCRFS_TRY(st);
  }
  {
    // The host's nodes, same mode and device number (Mesos copies them too);
    // looked at first, as the tmpfs may cover them (a rootfs of "/").
    const char* const kDevices[] = {"null", "zero", "full", "random", "urandom", "tty"};
    struct stat devs[std::size(kDevices)];
    for (size_t i = 0; i < std::size(kDevices); ++i) {
      std::string host = std::string("/dev/") + kDevices[i];
      if (::stat(host.c_str(), &devs[i]) != 0) return ErrnoError("stat " + host);
    }
    UCRFS_ASSIGN(UniqueFd at, MakeDirsInRoot(rf, "/dev"));
    UCRFS_TRY(Mount("tmpfs", FdPath(at.get()), "tmpfs", MS_NOSUID | MS_NOEXEC | MS_STRICTATIME, "mode=755",
                    "tmpfs on " + r + "/dev"));
    UCRFS_ASSIGN(UniqueFd dev, OpenInRoot(rf, "/dev", O_RDONLY | O_DIRECTORY));
    for (size_t i = 0; i < std::size(kDevices); ++i)
      if (::mknodat(dev.get(), kDevices[i], S_IFCHR | (devs[i].st_mode & 07777), devs[i].st_rdev) != 0)
        return ErrnoError(fmt::format("mknod {}/dev/{}", r, kDevices[i]));
    const std::pair<const char*, const char*> links[] = {
        {"fd", "/proc/self/fd"},         {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
        {"stderr", "/proc/self/fd/2"}, {"ptmx", "pts/ptmx"}};
    for (const auto& [name, target] : links)
      if (::symlinkat(target, dev.get(), name) != 0) return ErrnoError(fmt::format("symlink {}/dev/{}", r, name));
    if (::mkdirat(dev.get(), "pts", 0755) != 0) return ErrnoError("mkdir " + r + "/dev/pts");
    if (::mkdirat(dev.get(), "shm", 01777) != 0) return ErrnoError("mkdir " + r + "/dev/shm");
    UCRFS_ASSIGN(UniqueFd pts, OpenInRoot(rf, "/dev/pts", O_PATH));
    UCRFS_TRY(Mount("devpts", FdPath(pts.get()), "devpts", MS_NOSUID | MS_NOEXEC,
                    "newinstance,ptmxmode=0666,mode=0620,gid=5", "devpts on " + r + "/dev/pts"));
    UCRFS_ASSIGN(UniqueFd shm, OpenInRoot(rf, "/dev/shm", O_PATH));
    UCRFS_TRY(Mount("shm", FdPath(shm.get()), "tmpfs", MS_NOSUID | MS_NODEV | MS_STRICTATIME, "mode=1777",
                    "tmpfs on " + r + "/dev/shm"));
  }
  {
    UCRFS_ASSIGN(UniqueFd at, MakeDirsInRoot(rf, spec.sandbox_directory));
    UCRFS_TRY(Mount(spec.sandbox, FdPath(at.get()), nullptr, MS_BIND | MS_REC, "",
                    fmt::format("sandbox {} on {}{}", spec.sandbox, r, spec.sandbox_directory)));
  }
  for (const auto& m : spec.mounts) {
    const std::string what = fmt::format("volume on {}{}", r, m.target);
    if (m.type == Volume::Type::kTmpfs) {
      UCRFS_ASSIGN(UniqueFd at, MakeDirsInRoot(rf, m.target));
      UCRFS_TRY(Mount("tmpfs", FdPath(at.get()), "tmpfs", MS_NOSUID | MS_NODEV | (m.readonly ? MS_RDONLY : 0),
                      "mode=1777", "tmpfs " + what));
      continue;
    }
    struct stat st;
    if (::stat(m.source.c_str(), &st) != 0) return ErrnoError("volume source " + m.source);
    UCRFS_ASSIGN(UniqueFd at, MakeMountPointInRoot(rf, m.target, !S_ISDIR(st.st_mode)));
    UCRFS_TRY(BindInRoot(rf, m.source, m.target, m.readonly, 0, m.source + " " + what));
  }
  for (const auto& p : kMaskedPaths) {
    auto at = OpenInRoot(rf, p, O_PATH);
    if (!at.ok() && at.error().code() == Errc::kNotFound) continue;
    if (!at.ok()) return at.error();
    struct stat st;
    if (::fstat(at->get(), &st) != 0) return ErrnoError("stat " + r + p);
    if (S_ISDIR(st.st_mode)) {
      UCRFS_TRY(Mount("tmpfs", FdPath(at->get()), "tmpfs", MS_RDONLY, "size=0", "masking tmpfs on " + r + p));
    } else {
      UCRFS_TRY(BindInRoot(rf, "/dev/null", p, true, 0, "/dev/null masking " + r + p));
    }
  }

  // pivot_root(".", "."): the old root ends up stacked under the new one and
  // is detached at once, no directory for it needed (a read-only rootfs
  // works).
  if (::fchdir(rf) != 0) return ErrnoError("chdir " + r);
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return ErrnoError("pivot_root to " + r);
  if (::umount2(".", MNT_DETACH) != 0) return ErrnoError("detach the old root");
  if (::chdir("/") != 0) return ErrnoError("chdir /");

  UCRFS_ASSIGN(UniqueFd newroot, OpenDir("/"));
  auto cwd = MakeDirsInRoot(newroot.get(), spec.cwd);
  if (!cwd.ok()) return cwd.error().Wrap("working directory " + spec.cwd);
  return Ok();
}

// A container without a container image (Mesos' command task without an
// image): the host's filesystem in a mount namespace of its own, /proc of
// its PID namespace, the volumes at their host paths (a relative target is
// under the sandbox, which it then may create; an absolute one must exist,
// as Mesos requires), no pivot_root.
Status SetUpHost(const ContainerSpec& spec) {
  UCRFS_TRY(Mount("", "/", nullptr, MS_SLAVE | MS_REC, "", "/ as rslave"));
  UCRFS_TRY(Mount("proc", "/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV, "", "proc on /proc"));
  auto under_sandbox = [&](const std::string& p) { return p.rfind(spec.sandbox + "/", 0) == 0; };
  for (const auto& m : spec.mounts) {
    const std::string what = "volume on " + m.target;
    if (!PathExists(m.target)) {
      if (!under_sandbox(m.target)) {
        return Error(Errc::kNotFound, fmt::format("{}: {} does not exist (no container image)", what, m.target));
      }
      struct stat st;
      bool file = m.type == Volume::Type::kBind && ::stat(m.source.c_str(), &st) == 0 && !S_ISDIR(st.st_mode);
      if (file) {
        UCRFS_TRY(MakeDirs(m.target.substr(0, m.target.rfind('/')), 0755));
        UCRFS_TRY(WriteFileAtomic(m.target, ""));
      } else {
        UCRFS_TRY(MakeDirs(m.target, 0755));
      }
    }
    if (m.type == Volume::Type::kTmpfs) {
      UCRFS_TRY(Mount("tmpfs", m.target, "tmpfs", MS_NOSUID | MS_NODEV | (m.readonly ? MS_RDONLY : 0), "mode=1777",
                      "tmpfs " + what));
      continue;
    }
    UCRFS_TRY(Mount(m.source, m.target, nullptr, MS_BIND | MS_REC, "", m.source + " " + what));
    if (m.readonly) {
      UCRFS_TRY(Mount("", m.target, nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, "", what + " (read-only remount)"));
    }
  }
  if (!spec.cwd.empty()) {
    if (under_sandbox(spec.cwd) || spec.cwd == spec.sandbox) UCRFS_TRY(MakeDirs(spec.cwd, 0755));
    if (::chdir(spec.cwd.c_str()) != 0) return ErrnoError("working directory " + spec.cwd);
  }
  return Ok();
}

[[noreturn]] void Die(int fd, std::string_view msg, int code) {
  std::string line(msg);
  line += "\n";
  ssize_t n = ::write(fd, line.data(), line.size());
  (void)n;
  ::_exit(code);
}

std::string Lookup(const std::string& exe, const std::vector<std::string>& env) {
  if (exe.find('/') != std::string::npos) return exe;
  std::string path = kDefaultPath;
  for (const auto& e : env)
    if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
  std::stringstream in(path);
  std::string dir;
  while (std::getline(in, dir, ':')) {
    std::string cand = (dir.empty() ? "." : dir) + "/" + exe;
    struct stat st;
    if (::access(cand.c_str(), X_OK) == 0 && ::stat(cand.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return cand;
  }
  return "";
}

// The command (PID 2): drops to the user and execs.
[[noreturn]] void ExecCommand(const ContainerSpec& spec, int err_fd) {
  sigset_t none;
  sigemptyset(&none);
  for (int s : kForwarded) ::signal(s, SIG_DFL);
  ::signal(SIGCHLD, SIG_DFL);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);

  const Credentials& u = spec.user;
  if (::setgroups(u.groups.size(), u.groups.data()) != 0)
    Die(err_fd, ErrnoError("setgroups").message(), kSetupFailed);
  if (::setgid(u.gid) != 0) Die(err_fd, ErrnoError(fmt::format("setgid {}", u.gid)).message(), kSetupFailed);
  if (::setuid(u.uid) != 0) Die(err_fd, ErrnoError(fmt::format("setuid {}", u.uid)).message(), kSetupFailed);
  if (::chdir(spec.cwd.c_str()) != 0)
    Die(err_fd, ErrnoError(fmt::format("chdir {} as uid {}", spec.cwd, u.uid)).message(), kSetupFailed);
  ::umask(022);

  std::vector<char*> argv, envp;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  std::string exe = Lookup(spec.argv[0], spec.env);
  // No fd of ucrfs (the store, sockets) reaches the command; stdio does.
  ::syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC);
  int err = ENOENT;
  if (!exe.empty()) {
    ::execve(exe.c_str(), argv.data(), envp.data());
    err = errno;
  }
  // Not a setup failure: the command itself cannot run, as a shell reports it.
  std::string msg = exe.empty() ? fmt::format("ucrfs: error: exec {}: executable file not found in $PATH\n", spec.argv[0])
                                : fmt::format("ucrfs: error: exec {}: {}\n", exe, std::strerror(err));
  ssize_t n = ::write(2, msg.data(), msg.size());
  (void)n;
  ::_exit(err == ENOENT ? 127 : 126);
}

// The container's init (PID 1 in its namespace).
[[noreturn]] void Init(const ContainerSpec& spec, int go_fd, int err_fd) {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kForwarded) sigaddset(&set, s);
  sigaddset(&set, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  struct sigaction sa = {};
  sa.sa_handler = NoopHandler;
  for (int s : kForwarded) ::sigaction(s, &sa, nullptr);
  ::sigaction(SIGCHLD, &sa, nullptr);

  // Wait until the caller recorded this process (so a crash of the caller
  // from here on leaves a record that recovery finds).
  char go = 0;
  ssize_t n;
  do {
    n = ::read(go_fd, &go, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) ::_exit(kSetupFailed);
  ::close(go_fd);

  ::umask(0);
  if (Status st = spec.rootfs.empty() ? SetUpHost(spec) : SetUpRootfs(spec); !st.ok()) {
    Die(err_fd, st.error().message(), kSetupFailed);
  }

  pid_t cmd = ::fork();
  if (cmd < 0) Die(err_fd, ErrnoError("fork the command").message(), kSetupFailed);
  if (cmd == 0) ExecCommand(spec, err_fd);
  ::close(err_fd);

  for (;;) {
    siginfo_t info;
    int sig = ::sigwaitinfo(&set, &info);
    if (sig < 0) continue;
    if (sig != SIGCHLD) {
      if (info.si_code != SI_KERNEL) ::kill(cmd, sig);
      continue;
    }
    int status;
    pid_t w;
    while ((w = ::waitpid(-1, &status, WNOHANG)) > 0) {
      if (w != cmd) continue;  // an orphan init adopted
      if (WIFEXITED(status)) ::_exit(WEXITSTATUS(status));
      if (WIFSIGNALED(status)) ::_exit(128 + WTERMSIG(status));
    }
  }
}

struct Pipe {
  UniqueFd r, w;
};
Result<Pipe> MakePipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoError("pipe");
  return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

bool ReadAll(int fd, std::string& out) {  // false at EOF
  char buf[4096];
  ssize_t n = ::read(fd, buf, sizeof(buf));
  if (n < 0) return errno == EINTR || errno == EAGAIN;
  if (n == 0) return false;
  out.append(buf, static_cast<size_t>(n));
  return true;
}

}  // namespace

uint64_t ProcessStartTime(pid_t pid) {
  auto stat = ReadFile(fmt::format("/proc/{}/stat", pid));
  if (!stat.ok()) return 0;
  auto close = stat->rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream in(stat->substr(close + 1));
  std::string field;
  for (int i = 3; i <= 22 && (in >> field); ++i)
    if (i == 22) return std::strtoull(field.c_str(), nullptr, 10);
  return 0;
}

Result<int> Launch(const ContainerSpec& spec, const std::function<Status(pid_t)>& started) {
  if (spec.argv.empty()) return Error(Errc::kInvalidArgument, "no command to run");
  UCRFS_ASSIGN(Pipe self, MakePipe());
  UCRFS_ASSIGN(Pipe pid_pipe, MakePipe());
  UCRFS_ASSIGN(Pipe go, MakePipe());
  UCRFS_ASSIGN(Pipe err, MakePipe());
  ::fcntl(self.w.get(), F_SETFL, O_NONBLOCK);
  g_self_pipe = self.w.get();

  struct sigaction sa = {}, old[std::size(kForwarded) + 1];
  sa.sa_sigaction = ParentHandler;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  for (size_t i = 0; i < std::size(kForwarded); ++i) ::sigaction(kForwarded[i], &sa, &old[i]);
  ::sigaction(SIGCHLD, &sa, &old[std::size(kForwarded)]);
  auto restore = [&] {
    for (size_t i = 0; i < std::size(kForwarded); ++i) ::sigaction(kForwarded[i], &old[i], nullptr);
    ::sigaction(SIGCHLD, &old[std::size(kForwarded)], nullptr);
  };

  // Init's parent is a helper that exits at once: as a subreaper for that
  // moment this process adopts init and can wait for it.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  pid_t helper = ::fork();
  if (helper < 0) {
    restore();
    ::prctl(PR_SET_CHILD_SUBREAPER, 0);
    return ErrnoError("fork");
  }
  if (helper == 0) {
    for (int s : kForwarded) ::signal(s, SIG_DFL);
    ::signal(SIGCHLD, SIG_DFL);
    if (::unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC) != 0)
      Die(err.w.get(), ErrnoError("unshare mount, PID, UTS and IPC namespaces").message(), kSetupFailed);
    pid_t init = ::fork();
    if (init < 0) Die(err.w.get(), ErrnoError("fork the container's init").message(), kSetupFailed);
    if (init == 0) {
      ::close(pid_pipe.w.release());
      ::close(go.w.release());
      Init(spec, go.r.get(), err.w.get());
    }
    ssize_t n = ::write(pid_pipe.w.get(), &init, sizeof(init));
    ::_exit(n == sizeof(init) ? 0 : 1);
  }
  pid_pipe.w.reset();
  go.r.reset();
  err.w.reset();
  pid_t init = -1;
  ssize_t n;
  do {
    n = ::read(pid_pipe.r.get(), &init, sizeof(init));
  } while (n < 0 && errno == EINTR);
  int hs;
  while (::waitpid(helper, &hs, 0) < 0 && errno == EINTR) {
  }
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  if (n != sizeof(init)) {
    restore();
    std::string msg;
    while (ReadAll(err.r.get(), msg)) {
    }
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    return Error(Errc::kIo, msg.empty() ? "the container's init did not start" : msg);
  }

  auto kill_init = [&] {
    ::kill(init, SIGKILL);
    int st;
    while (::waitpid(init, &st, 0) < 0 && errno == EINTR) {
    }
  };
  if (Status st = started(init); !st.ok()) {
    kill_init();
    restore();
    return st.error();
  }
  char one = 1;
  if (::write(go.w.get(), &one, 1) != 1) {
    kill_init();
    restore();
    return ErrnoError("start the container's init");
  }
  go.w.reset();

  std::string errmsg;
  bool err_open = true;
  int status = 0;
  for (bool done = false; !done;) {
    struct pollfd fds[2] = {{self.r.get(), POLLIN, 0}, {err.r.get(), POLLIN, 0}};
    if (::poll(fds, err_open ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (err_open && (fds[1].revents & (POLLIN | POLLHUP))) err_open = ReadAll(err.r.get(), errmsg);
    if (fds[0].revents & POLLIN) {
      unsigned char sigs[64];
      ssize_t k = ::read(self.r.get(), sigs, sizeof(sigs));
      for (ssize_t i = 0; i < k; ++i) {
        if (sigs[i] != SIGCHLD) {
          ::kill(init, sigs[i]);
          continue;
        }
      }
      pid_t w = ::waitpid(init, &status, WNOHANG);
      if (w == init || (w < 0 && errno == ECHILD)) done = true;
    }
  }
  // Init is gone, and with it every process of the namespace: the pipe is
  // closed by all of them.
  while (err_open && ReadAll(err.r.get(), errmsg)) {
  }
  restore();
  g_self_pipe = -1;
  while (!errmsg.empty() && errmsg.back() == '\n') errmsg.pop_back();
  if (!errmsg.empty()) return Error(Errc::kIo, errmsg.substr(errmsg.rfind('\n') + 1));
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

}  // namespace ucrfs::isolator
