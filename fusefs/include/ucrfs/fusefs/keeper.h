// The keeper: a small process that holds a FUSE mount's /dev/fuse connection
// open beside its server, so that the server can die (SIGKILL, crash, OOM)
// without the kernel ending the connection, and a new server can take it
// over (MountOptions::adopt_fd). While no server runs, requests to the mount
// wait in the kernel instead of failing with ENOTCONN.
//
// Protocol, over a unix SOCK_SEQPACKET socket (one message per record):
//  - the serving process holds a "lease" connection to the keeper for as
//    long as it serves. It sends "bye" when it ends cleanly (unmounted or
//    stopped): the keeper exits and lets the connection go. A lease that just
//    closes means the server died: the keeper waits for the next one.
//  - a new server connects to the keeper's listening socket and sends
//    "adopt"; the keeper answers with the connection's fd (SCM_RIGHTS) and
//    the mount's FUSE_INIT request, and that connection becomes the lease.
//    While a lease is held the answer is "busy" (two servers never share).
//  - the keeper exits by itself when the connection ends (the mount was
//    unmounted and its last user let go: poll reports POLLERR).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "ucrfs/common/error.h"

namespace ucrfs::fusefs {

// A listening keeper socket bound at `path` (a stale socket file there is
// replaced). The fd is close-on-exec.
Result<int> ListenKeeper(const std::string& path);

struct StartedKeeper {
  pid_t pid = 0;
  int lease_fd = -1;  // the server's end of the lease; close-on-exec
};

// Starts the keeper: forks and runs `argv` (argv[0] is executed; it must
// end in RunKeeper()) with fuse_fd, listen_fd and the keeper's end of a new
// lease as fds 3, 4 and 5, nothing else open but stdin/stdout/stderr
// (stdin and stdout on /dev/null), no signal blocked, and cwd "/". Sends it
// `init` (FuseServer::init_request()) over the lease.
Result<StartedKeeper> StartKeeper(const std::vector<std::string>& argv, int fuse_fd, int listen_fd,
                                  const std::string& init);

// The keeper's loop, over the fds StartKeeper passed. Returns when the
// server says "bye" or the connection ends; the listening socket's file is
// removed then.
Status RunKeeper(int fuse_fd, int listen_fd, int lease_fd);

struct Adopted {
  int fuse_fd = -1;   // the mount's connection; close-on-exec
  int lease_fd = -1;  // hold while serving; ReleaseKeeper() on a clean end
  std::string init;   // the mount's FUSE_INIT (MountOptions::adopt_init)
  pid_t keeper_pid = 0;
};

// Takes the connection over from the keeper listening at `path`. kNotFound
// when no keeper answers there; kBusy when a server still holds the lease.
Result<Adopted> AdoptFromKeeper(const std::string& path);

// Whether a keeper listens at `path` (connects, then hangs up).
bool KeeperAlive(const std::string& path);

// Tells the keeper that the server ends cleanly (it exits and lets the
// connection go), and closes the lease. Ignores a keeper that is gone.
void ReleaseKeeper(int lease_fd);

}  // namespace ucrfs::fusefs
