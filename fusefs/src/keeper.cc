// The keeper process and the two ends of its socket (keeper.h).
#include "ucrfs/fusefs/keeper.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace ucrfs::fusefs {
namespace {

constexpr std::string_view kAdopt = "adopt";
constexpr std::string_view kBye = "bye";
constexpr std::string_view kBusyReply = "busy";
// Larger than any FUSE_INIT request (40-byte header + 64-byte body today).
constexpr size_t kMaxMessage = 4096;

Result<sockaddr_un> Address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof(a.sun_path)) {
    return Error(Errc::kInvalidArgument, fmt::format("keeper socket path {} is too long", path));
  }
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

Status Send(int fd, std::string_view msg) {
  ssize_t n;
  do {
    n = ::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(msg.size())) return ErrnoError("keeper socket send");
  return Ok();
}

// One message; "" at EOF.
Result<std::string> Recv(int fd) {
  std::string buf(kMaxMessage, '\0');
  ssize_t n;
  do {
    n = ::recv(fd, buf.data(), buf.size(), 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoError("keeper socket recv");
  buf.resize(static_cast<size_t>(n));
  return buf;
}

Result<int> Connect(const std::string& path) {
  UCRFS_ASSIGN(sockaddr_un a, Address(path));
  int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoError("socket");
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    const int err = errno;
    ::close(fd);
    // No socket file, or nobody listening on it (the keeper is gone).
    if (err == ENOENT || err == ECONNREFUSED) {
      return Error(Errc::kNotFound, fmt::format("no keeper at {}", path));
    }
    return ErrnoError(fmt::format("connect to keeper {}", path), err);
  }
  return fd;
}

// One message of one buffer with room for one passed fd (SCM_RIGHTS).
struct FdMessage {
  FdMessage(void* data, size_t size) : iov{data, size} {
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
  }
  FdMessage(const FdMessage&) = delete;
  FdMessage& operator=(const FdMessage&) = delete;

  iovec iov;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
};

// Answers one "adopt": the connection's fd and the INIT request.
Status HandOver(int conn, int fuse_fd, const std::string& init) {
  FdMessage m(const_cast<char*>(init.data()), init.size());
  msghdr& msg = m.msg;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fuse_fd, sizeof(int));
  ssize_t n;
  do {
    n = ::sendmsg(conn, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(init.size())) return ErrnoError("keeper: hand over the connection");
  return Ok();
}

}  // namespace

Result<int> ListenKeeper(const std::string& path) {
  UCRFS_ASSIGN(sockaddr_un a, Address(path));
  int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoError("socket");
  ::unlink(path.c_str());  // a dead keeper's
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 4) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoError(fmt::format("keeper socket {}", path), err);
  }
  // Only root (the owner) may take a mount's connection over.
  ::chmod(path.c_str(), 0600);
  return fd;
}

Result<StartedKeeper> StartKeeper(const std::vector<std::string>& argv, int fuse_fd, int listen_fd,
                                  const std::string& init) {
  if (argv.empty()) return Error(Errc::kInvalidArgument, "no keeper command");
  int sp[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0) return ErrnoError("socketpair");
  // Everything the child needs is built before fork: after it, in a process
  // that may have threads, only async-signal-safe calls.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(sp[0]);
    ::close(sp[1]);
    return ErrnoError("fork keeper", err);
  }
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);  // the server blocks SIGTERM & co. for its sigwait thread
    // Out of the way of 3..5 first, then into place (dup2 clears close-on-exec).
    int f = ::fcntl(fuse_fd, F_DUPFD, 10), l = ::fcntl(listen_fd, F_DUPFD, 10), s = ::fcntl(sp[1], F_DUPFD, 10);
    if (f < 0 || l < 0 || s < 0 || ::dup2(f, 3) < 0 || ::dup2(l, 4) < 0 || ::dup2(s, 5) < 0) ::_exit(127);
    ::close_range(6, ~0U, 0);
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, STDIN_FILENO);
      ::dup2(null, STDOUT_FILENO);
      ::close(null);
    }
    if (::chdir("/") != 0) ::_exit(127);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(sp[1]);
  if (Status st = Send(sp[0], init); !st.ok()) {
    ::close(sp[0]);
    ::kill(pid, SIGKILL);
    return st.error().Wrap("start keeper");
  }
  return StartedKeeper{pid, sp[0]};
}

Status RunKeeper(int fuse_fd, int listen_fd, int lease_fd) {
  ::signal(SIGPIPE, SIG_IGN);
  sockaddr_un self{};
  socklen_t self_len = sizeof self;
  std::string path;
  if (::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&self), &self_len) == 0) path = self.sun_path;
  // Connecting clients learn their peer's pid (SO_PEERCRED) from whoever
  // last called listen(): the server did; make it the keeper.
  if (::listen(listen_fd, 4) != 0) return ErrnoError("keeper: listen");
  UCRFS_ASSIGN(std::string init, Recv(lease_fd));
  if (init.empty()) return Error(Errc::kInvalidArgument, "keeper: the server sent no INIT");
  Status result;
  for (;;) {
    // events 0 on /dev/fuse: only POLLERR, which means the connection ended.
    pollfd p[3] = {{fuse_fd, 0, 0}, {listen_fd, POLLIN, 0}, {lease_fd, POLLIN, 0}};
    int n = ::poll(p, lease_fd >= 0 ? 3 : 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      result = ErrnoError("keeper: poll");
      break;
    }
    if (p[0].revents & (POLLERR | POLLHUP | POLLNVAL)) break;  // unmounted: nothing left to keep
    if (lease_fd >= 0 && p[2].revents) {
      auto msg = Recv(lease_fd);
      if (msg.ok() && *msg == kBye) break;  // the server ended cleanly
      // EOF (or a reset): the server died. Keep the connection for the next.
      spdlog::info("keeper{}: the server is gone; keeping the connection", path.empty() ? "" : " " + path);
      ::close(lease_fd);
      lease_fd = -1;
      continue;
    }
    if (p[1].revents & POLLIN) {
      int conn = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) continue;
      timeval tv{2, 0};  // a client that connects and says nothing is not waited for
      ::setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      auto msg = Recv(conn);
      if (!msg.ok() || *msg != kAdopt) {
        ::close(conn);
        continue;
      }
      if (lease_fd >= 0) {
        (void)Send(conn, kBusyReply);
        ::close(conn);
        continue;
      }
      if (Status st = HandOver(conn, fuse_fd, init); !st.ok()) {
        spdlog::warn("{}", st.error().message());
        ::close(conn);
        continue;
      }
      timeval none{0, 0};
      ::setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
      lease_fd = conn;
    }
  }
  if (!path.empty()) ::unlink(path.c_str());
  return result;
}

Result<Adopted> AdoptFromKeeper(const std::string& path) {
  UCRFS_ASSIGN(int fd, Connect(path));
  Adopted out;
  out.lease_fd = fd;
  auto fail = [&](Error e) -> Result<Adopted> {
    ::close(fd);
    return e;
  };
  ucred cred{};
  socklen_t cred_len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) == 0) out.keeper_pid = cred.pid;
  if (Status st = Send(fd, kAdopt); !st.ok()) return fail(st.error());
  std::string buf(kMaxMessage, '\0');
  FdMessage m(buf.data(), buf.size());
  msghdr& msg = m.msg;
  ssize_t n;
  do {
    n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return fail(ErrnoError(fmt::format("adopt from keeper {}", path)));
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) std::memcpy(&out.fuse_fd, CMSG_DATA(c), sizeof(int));
  }
  buf.resize(static_cast<size_t>(n));
  if (out.fuse_fd < 0) {
    if (buf == kBusyReply) return fail(Error(Errc::kBusy, fmt::format("a server already serves through {}", path)));
    return fail(Error(Errc::kIo, fmt::format("keeper {} handed over no connection", path)));
  }
  out.init = std::move(buf);
  return out;
}

bool KeeperAlive(const std::string& path) {
  auto fd = Connect(path);
  if (!fd.ok()) return false;
  ::close(*fd);
  return true;
}

void ReleaseKeeper(int lease_fd) {
  if (lease_fd < 0) return;
  (void)Send(lease_fd, kBye);
  ::close(lease_fd);
}

}  // namespace ucrfs::fusefs
