// The FUSE server: serves an index::Tree (a container image's merged rootfs)
// as one read-only filesystem through the libfuse3 low-level API.
//
// Threading: Mount() and the destructor run on the owner's thread; Run()
// blocks its caller while a pool of libfuse worker threads (one cloned
// /dev/fuse fd each) answers requests. Those workers call into the Tree and
// nowhere else, so a slow Tree read only ever holds up the request it serves.
// Exit() may be called from any thread, including one that handles signals.
//
// Policy (docs: DESIGN.md "FUSE policy"): the image never changes, so the
// kernel is told to cache everything for a long time (entries, negative
// entries, attributes, page cache, symlink targets, directory listings).
#pragma once

#include <memory>
#include <string>

#include "ucrfs/common/error.h"
#include "ucrfs/index/tree.h"

namespace ucrfs::fusefs {

struct MountOptions {
  std::string mountpoint;
  std::string fsname = "ucrfs";   // shown as the mount source
  std::string subtype = "ucrfs";  // the mount's type is "fuse.<subtype>"
  // Containers run as other users than the one serving the mount. Needs root
  // or `user_allow_other` in /etc/fuse.conf.
  bool allow_other = true;
  unsigned max_threads = 16;
  bool debug = false;  // libfuse request tracing, logged at debug level
  // The image never changes: let the kernel cache entries and attributes.
  double entry_timeout_s = 86400, attr_timeout_s = 86400;
  // Answer the first open() with ENOSYS where the kernel supports it, so the
  // kernel opens files itself from then on (one round trip less per open).
  // The kernel then keeps the page cache across opens (FOPEN_KEEP_CACHE), as
  // the open reply does when this is off.
  bool zero_message_open = true;
  // One cloned /dev/fuse fd per worker thread. Off for a mount another
  // server may take over (keeper.h): the kernel aborts the requests a server
  // had read from a cloned fd when that fd closes, while those read from the
  // shared session fd stay queued for FUSE_NOTIFY_RESEND.
  bool clone_fd = true;
  // Take over a live connection instead of mounting: adopt_fd is a /dev/fuse
  // fd whose mount another (dead) server made and initialised, and
  // adopt_init that server's init_request(). Mount() then makes the mount
  // serve again (see server.cc, "Adoption") and owns adopt_fd.
  int adopt_fd = -1;
  std::string adopt_init;
};

class FuseServer {
 public:
  // Creates the session and mounts `tree` at opts.mountpoint (read-only),
  // and answers the kernel's FUSE_INIT; or adopts opts.adopt_fd. When it
  // returns OK the mount exists; requests to it wait until Run().
  static Result<std::unique_ptr<FuseServer>> Mount(std::shared_ptr<index::Tree> tree, MountOptions opts);

  // Unmounts (lazily, as libfuse does) if still mounted and destroys the
  // session. REQUIRES: Run() is not running.
  ~FuseServer();
  FuseServer(const FuseServer&) = delete;
  FuseServer& operator=(const FuseServer&) = delete;

  // Serves requests (multithreaded, one cloned fd per worker) until the
  // filesystem is unmounted or Exit() is called. Call at most once at a time.
  // With libfuse < 3.18, the calling thread unblocks signal SIGRTMIN+4 while
  // serving and a do-nothing handler is installed for it (unless the program
  // has one): Exit() uses it to wake the loop.
  Status Run();

  // Makes Run() return soon. Does not unmount: the destructor does. Safe from
  // any thread, e.g. one that waits for signals with sigwait(); not from an
  // asynchronous signal handler (it takes a short lock).
  void Exit();

  // The /dev/fuse fd of the session: handed to a keeper (keeper.h).
  int fd() const;

  // The FUSE_INIT request the kernel sent for this mount (header and body,
  // as read from /dev/fuse): what a server that adopts the connection needs
  // (MountOptions::adopt_init). Set once Mount() returns.
  const std::string& init_request() const;

  const std::string& mountpoint() const;

  struct Impl;  // public so that the libfuse callbacks in server.cc can name it

 private:
  explicit FuseServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Unmounts the ucrfs mount at `mountpoint` with umount2(2). A busy mount (a
// process has a file open or its working directory there) is an error that
// names the mountpoint unless `lazy`, which detaches it (MNT_DETACH): it
// disappears from the namespace now and ends when the last user lets go.
// Refuses (kNotFound) when the path is not a ucrfs mount. Needs root.
Status Unmount(const std::string& mountpoint, bool lazy = false);

// Whether `path` is currently the mount point of a ucrfs FUSE mount (fstype
// "fuse.ucrfs" in /proc/self/mountinfo; the topmost mount there counts). Does
// not touch the mount itself, so a hung server cannot hang the caller.
bool IsMounted(const std::string& path);

}  // namespace ucrfs::fusefs
