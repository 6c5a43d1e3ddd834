// libfuse glue: unpack a request, call the Dispatcher, reply exactly once.
// Per-operation logic and the errno mapping live in dispatcher.cc.
#include "ucrfs/fusefs/server.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "dispatcher.h"
#include "fuse_ll.h"

namespace ucrfs::fusefs {

// Largest read request. Must be the same in the "max_read=" mount option and
// conn->max_read at init, or libfuse fails the session with EPROTO.
constexpr unsigned kMaxRead = 1u << 20;

// The kernel's wire format (<linux/fuse.h>), which libfuse does not install
// and which clashes with libfuse's headers; only what adoption needs.
struct KernelInHeader {
  uint32_t len;
  uint32_t opcode;
  uint64_t unique;
  uint64_t nodeid;
  uint32_t uid, gid, pid;
  uint16_t total_extlen, padding;
};
static_assert(sizeof(KernelInHeader) == 40);
struct KernelOutHeader {
  uint32_t len;
  int32_t error;  // for a notification (unique 0): its code
  uint64_t unique;
};
static_assert(sizeof(KernelOutHeader) == 16);
constexpr uint32_t kOpInit = 26;  // FUSE_INIT
// Linux 6.9 (protocol 7.40) and later: a notification that moves every
// request a server read but did not answer back to the pending queue, to be
// read again. Debian 12's <linux/fuse.h> (7.38) predates it.
constexpr int32_t kNotifyResend = 7;

// The unique id of the FUSE_INIT that an adopting server feeds its own
// session (see "Adoption" below). The kernel numbers requests upwards from 0
// in steps of 2 and marks resent ones with bit 63; bit 62 it never reaches,
// so the reply to this id matches no request and the kernel drops it.
constexpr uint64_t kAdoptUnique = uint64_t{1} << 62;

struct FuseServer::Impl {
  Impl(std::shared_ptr<index::Tree> tree, MountOptions o)
      : opts(std::move(o)), dispatcher(std::move(tree), Timeouts{opts.entry_timeout_s, opts.attr_timeout_s}) {}

  // Constant after Mount().
  const MountOptions opts;  // opts.mountpoint is canonical
  fuse_session* se = nullptr;
  // The session took over another server's connection (MountOptions::
  // adopt_fd): libfuse did not mount, so it will not unmount either.
  bool adopted = false;
  std::string init_request;  // see FuseServer::init_request()
  // Shared by all worker threads; thread-safe.
  Dispatcher dispatcher;

  std::mutex run_mu;
  bool running = false;   // guarded by run_mu: Run() is inside the session loop
  pthread_t run_thread{};  // guarded by run_mu; valid while running
};

namespace {

FuseServer::Impl& ImplOf(fuse_req_t req) { return *static_cast<FuseServer::Impl*>(fuse_req_userdata(req)); }
Dispatcher& D(fuse_req_t req) { return ImplOf(req).dispatcher; }

const char* OpName(Op op) {
  switch (op) {
    case Op::kLookup: return "lookup";
    case Op::kGetAttr: return "getattr";
    case Op::kReadLink: return "readlink";
    case Op::kOpenDir: return "opendir";
    case Op::kReadDir: return "readdir";
    case Op::kOpen: return "open";
    case Op::kRead: return "read";
    case Op::kGetXattr: return "getxattr";
    case Op::kListXattr: return "listxattr";
    case Op::kStatFs: return "statfs";
    case Op::kModify: return "modify";
  }
  return "?";
}

// A request and the duty to answer it exactly once. Every path through a
// handler ends in one of these methods; debug builds abort on a second
// answer or on none. The fuse_reply_* results are ignored except for open:
// a reply fails only when the kernel no longer waits for it (the caller was
// interrupted, or the mount is gone), and then there is nothing to undo.
class Request {
 public:
  explicit Request(fuse_req_t req) : req_(req) {}
  ~Request() { assert(req_ == nullptr && "FUSE request left unanswered"); }
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;

  void Fail(Op op, const Error& e) {
    const int err = ErrnoFor(op, e);
    assert(err > 0);
    if (err == EIO) {
      spdlog::warn("fuse {}: {}", OpName(op), e.message());
    } else {
      spdlog::debug("fuse {}: {} ({})", OpName(op), e.message(), std::strerror(err));
    }
    fuse_reply_err(Take(), err);
  }
  void Success() { fuse_reply_err(Take(), 0); }
  // ENOSYS from open means "success, and send no more opens" when the kernel
  // offered FUSE_CAP_NO_OPEN_SUPPORT. Not an error, so not ErrnoFor's.
  void OpenNeedsNoMessage() { fuse_reply_err(Take(), ENOSYS); }
  void Entry(const fuse_entry_param& e) { fuse_reply_entry(Take(), &e); }
  void Attr(const struct stat& st, double timeout) { fuse_reply_attr(Take(), &st, timeout); }
  void Link(const std::string& target) { fuse_reply_readlink(Take(), target.c_str()); }
  // Returns fuse_reply_open's result: non-zero means the kernel dropped the
  // open, and will send no release for the handle in fi->fh.
  int Open(const fuse_file_info& fi) { return fuse_reply_open(Take(), &fi); }
  void Buf(const char* data, size_t n) { fuse_reply_buf(Take(), data, n); }
  void XattrSize(size_t n) { fuse_reply_xattr(Take(), n); }
  void StatFs(const struct statvfs& s) { fuse_reply_statfs(Take(), &s); }
  void None() { fuse_reply_none(Take()); }

 private:
  fuse_req_t Take() {
    assert(req_ != nullptr && "FUSE request answered twice");
    fuse_req_t r = req_;
    req_ = nullptr;
    return r;
  }
  fuse_req_t req_;
};

fuse_entry_param EntryParam(const index::Attr& a, const Timeouts& t) {
  fuse_entry_param e{};
  e.ino = a.ino;  // 0: a negative entry, cached for entry_timeout
  e.generation = 0;  // inode numbers are never reused within a mount
  if (a.ino != 0) e.attr = ToStat(a);
  e.attr_timeout = t.attr_s;
  e.entry_timeout = t.entry_s;
  return e;
}

void OnInit(void* userdata, fuse_conn_info* conn) {
  auto& impl = *static_cast<FuseServer::Impl*>(userdata);
  auto want = [conn](unsigned cap) {
    // Asking for a capability the kernel lacks makes libfuse fail the session.
    if (conn->capable & cap) conn->want |= cap;
  };
  // readdirplus answers "ls -l" without a lookup per name; "auto" lets the
  // kernel fall back to plain readdir when it sees no stat()s follow.
  want(FUSE_CAP_READDIRPLUS);
  want(FUSE_CAP_READDIRPLUS_AUTO);
  // Symlink targets in the page cache: readlink is asked once per link.
  want(FUSE_CAP_CACHE_SYMLINKS);
  // Content never changes, so there is nothing to invalidate when an mtime
  // or size appears to change (libfuse enables this by default).
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  conn->max_read = kMaxRead;
  const bool zero_open = impl.opts.zero_message_open && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT);
  impl.dispatcher.set_zero_message_open(zero_open);
  const bool zero_opendir = impl.opts.zero_message_open && (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT);
  if (zero_opendir) conn->want |= FUSE_CAP_NO_OPENDIR_SUPPORT;
  impl.dispatcher.set_zero_message_opendir(zero_opendir);
  spdlog::debug("fuse init at {}: protocol 7.{}, capable {:#x}, want {:#x}, max_read {}, max_write {}, "
                "zero-message open {}",
                impl.opts.mountpoint, conn->proto_minor, conn->capable, conn->want, conn->max_read, conn->max_write,
                zero_open);
}

void OnLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Request r(req);
  auto a = D(req).Lookup(parent, name);
  if (!a.ok()) return r.Fail(Op::kLookup, a.error());
  r.Entry(EntryParam(*a, D(req).timeouts()));
}

// Inode numbers are the Tree's (numbered when the index was built, stored in
// it), stable and valid for the life of the mount and the same in every
// server of it; nothing is allocated per lookup, so the kernel's lookup
// counts need no bookkeeping and forgetting frees nothing. A server that
// adopts a connection (see "Adoption") never learns the counts the dead one
// saw; for an immutable tree nothing depends on them.
void OnForget(fuse_req_t req, fuse_ino_t, uint64_t) { Request(req).None(); }
void OnForgetMulti(fuse_req_t req, size_t, fuse_forget_data*) { Request(req).None(); }

void OnGetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  Request r(req);
  auto a = D(req).GetAttr(ino);
  if (!a.ok()) return r.Fail(Op::kGetAttr, a.error());
  r.Attr(ToStat(*a), D(req).timeouts().attr_s);
}

void OnReadLink(fuse_req_t req, fuse_ino_t ino) {
  Request r(req);
  auto t = D(req).ReadLink(ino);
  if (!t.ok()) return r.Fail(Op::kReadLink, t.error());
  r.Link(*t);
}

void OnOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Request r(req);
  auto o = D(req).Open(ino, fi->flags);
  if (!o.ok()) return r.Fail(Op::kOpen, o.error());
  if (o->zero_message) return r.OpenNeedsNoMessage();
  fi->keep_cache = o->keep_cache;
  fi->direct_io = 0;  // reads go through the page cache
  // fi->fh stays 0: read needs only the inode, so a file opened under a
  // server that died reads the same under the one that adopted the mount.
  r.Open(*fi);
}

void OnRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Request r(req);
  // One buffer per worker thread, grown to at most max_read (1 MiB).
  thread_local std::vector<char> buf;
  if (buf.size() < size) buf.resize(size);
  auto n = D(req).Read(ino, static_cast<uint64_t>(off), buf.data(), size);
  if (!n.ok()) return r.Fail(Op::kRead, n.error());
  r.Buf(buf.data(), *n);
}

void OnRelease(fuse_req_t req, fuse_ino_t, fuse_file_info*) { Request(req).Success(); }

void OnOpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Request r(req);
  // ENOSYS here, when the kernel offered FUSE_CAP_NO_OPENDIR_SUPPORT, means
  // "success, and send no more opendir/releasedir": a warm walk then costs no
  // request per directory (the kernel still caches listings).
  if (D(req).zero_message_opendir()) return r.OpenNeedsNoMessage();
  // No state in fi->fh (it stays 0): a directory opened under a server that
  // died is read under the server that adopted its connection, and a
  // pointer from the old process would be garbage here. readdir uses the
  // shared per-directory handle, which is all an immutable listing needs.
  (void)ino;
  fi->fh = 0;
  // The kernel may keep the listing in its page cache and serve later
  // opendir+readdir from it: directories never change.
  fi->cache_readdir = 1;
  fi->keep_cache = 1;
  r.Open(*fi);
}

void ReplyReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi, bool plus) {
  Request r(req);
  // fi->fh is never read: see OnOpenDir.
  (void)fi;
  std::shared_ptr<DirHandle> dir = D(req).SharedDir(ino);
  std::vector<char> buf(size);
  size_t used = 0;
  const Timeouts& t = D(req).timeouts();
  auto emit = [&](const DirItem& it) {
    const off_t next = static_cast<off_t>(it.next_offset);
    size_t n;
    if (plus) {
      fuse_entry_param e{};
      e.ino = it.entry_ino;  // 0 for "." and "..": no lookup count taken
      e.attr = ToStat(it.attr);
      e.attr_timeout = t.attr_s;
      e.entry_timeout = t.entry_s;
      n = fuse_add_direntry_plus(req, buf.data() + used, size - used, it.name.c_str(), &e, next);
    } else {
      struct stat st {};
      st.st_ino = it.attr.ino;
      st.st_mode = it.attr.mode;  // only the type bits are used
      n = fuse_add_direntry(req, buf.data() + used, size - used, it.name.c_str(), &st, next);
    }
    if (n > size - used) return false;  // did not fit: the next call resumes here
    used += n;
    return true;
  };
  Status s = D(req).ReadDir(*dir, static_cast<uint64_t>(off), emit);
  if (!s.ok()) return r.Fail(Op::kReadDir, s.error());
  r.Buf(buf.data(), used);  // empty: end of directory
}

void OnReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  ReplyReadDir(req, ino, size, off, fi, /*plus=*/false);
}
void OnReadDirPlus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  ReplyReadDir(req, ino, size, off, fi, /*plus=*/true);
}

void OnReleaseDir(fuse_req_t req, fuse_ino_t, fuse_file_info*) { Request(req).Success(); }

void OnStatFs(fuse_req_t req, fuse_ino_t) { Request(req).StatFs(D(req).StatFs()); }

void OnGetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Request r(req);
  auto x = D(req).GetXattr(ino, name, size);
  if (!x.ok()) return r.Fail(Op::kGetXattr, x.error());
  if (x->size_only) return r.XattrSize(x->size);
  r.Buf(x->data.data(), x->data.size());
}

void OnListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Request r(req);
  auto x = D(req).ListXattr(ino, size);
  if (!x.ok()) return r.Fail(Op::kListXattr, x.error());
  if (x->size_only) return r.XattrSize(x->size);
  r.Buf(x->data.data(), x->data.size());
}

// Every modifying operation. The "ro" mount makes the kernel refuse most of
// them before they reach us; this answers the rest.
template <typename... Args>
void OnModify(fuse_req_t req, Args...) {
  Request(req).Fail(Op::kModify, D(req).Modify("modifying operation"));
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops{};
  ops.init = OnInit;
  ops.lookup = OnLookup;
  ops.forget = OnForget;
  ops.forget_multi = OnForgetMulti;
  ops.getattr = OnGetAttr;
  ops.readlink = OnReadLink;
  ops.open = OnOpen;
  ops.read = OnRead;
  ops.release = OnRelease;
  ops.opendir = OnOpenDir;
  ops.readdir = OnReadDir;
  ops.readdirplus = OnReadDirPlus;
  ops.releasedir = OnReleaseDir;
  ops.statfs = OnStatFs;
  ops.getxattr = OnGetXattr;
  ops.listxattr = OnListXattr;
  // No access(): "default_permissions" makes the kernel check modes itself.
  ops.setattr = OnModify<fuse_ino_t, struct stat*, int, fuse_file_info*>;
  ops.mknod = OnModify<fuse_ino_t, const char*, mode_t, dev_t>;
  ops.mkdir = OnModify<fuse_ino_t, const char*, mode_t>;
  ops.unlink = OnModify<fuse_ino_t, const char*>;
  ops.rmdir = OnModify<fuse_ino_t, const char*>;
  ops.symlink = OnModify<const char*, fuse_ino_t, const char*>;
  ops.rename = OnModify<fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned>;
  ops.link = OnModify<fuse_ino_t, fuse_ino_t, const char*>;
  ops.write = OnModify<fuse_ino_t, const char*, size_t, off_t, fuse_file_info*>;
  ops.create = OnModify<fuse_ino_t, const char*, mode_t, fuse_file_info*>;
  ops.setxattr = OnModify<fuse_ino_t, const char*, const char*, size_t, int>;
  ops.removexattr = OnModify<fuse_ino_t, const char*>;
  ops.fallocate = OnModify<fuse_ino_t, int, off_t, off_t, fuse_file_info*>;
  return ops;
}

const fuse_lowlevel_ops kOps = MakeOps();

// libfuse reports mount failures and, with -d, every request through its log
// function; route it to spdlog.
void LogFromFuse(enum fuse_log_level level, const char* fmt, va_list ap) {
  char line[2048];
  int n = std::vsnprintf(line, sizeof(line), fmt, ap);
  if (n < 0) return;
  size_t len = std::strlen(line);
  while (len > 0 && line[len - 1] == '\n') line[--len] = '\0';
  switch (level) {
    case FUSE_LOG_EMERG:
    case FUSE_LOG_ALERT:
    case FUSE_LOG_CRIT:
    case FUSE_LOG_ERR: spdlog::error("libfuse: {}", line); break;
    case FUSE_LOG_WARNING: spdlog::warn("libfuse: {}", line); break;
    case FUSE_LOG_NOTICE:
    case FUSE_LOG_INFO: spdlog::info("libfuse: {}", line); break;
    case FUSE_LOG_DEBUG: spdlog::debug("libfuse: {}", line); break;
  }
}

#if FUSE_VERSION < FUSE_MAKE_VERSION(3, 18)
// Before libfuse 3.18 (libfuse issue #997) fuse_session_exit() only sets a
// flag, and the thread in fuse_session_loop_mt() sleeps in sem_wait() until a
// worker finishes a request: an idle mount would never stop. A signal with a
// handler interrupts that sleep (sem_wait is never restarted), so Exit()
// sends this one to Run()'s thread, which unblocks it while it serves.
int WakeSignal() { return SIGRTMIN + 4; }

void IgnoreWake(int) {}

// Installs a do-nothing handler unless the program has its own (any handler
// interrupts sem_wait just as well).
void InstallWakeHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction old {};
    if (sigaction(WakeSignal(), nullptr, &old) != 0) return;
    if (!(old.sa_flags & SA_SIGINFO) && (old.sa_handler == SIG_DFL || old.sa_handler == SIG_IGN)) {
      struct sigaction sa {};
      sa.sa_handler = IgnoreWake;
      sigemptyset(&sa.sa_mask);
      sa.sa_flags = 0;
      sigaction(WakeSignal(), &sa, nullptr);
    }
  });
}
#endif

Result<std::string> CanonicalDir(const std::string& path) {
  if (path.empty()) return Error(Errc::kInvalidArgument, "no mountpoint given");
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) return ErrnoError(fmt::format("mountpoint {}", path));
  struct stat st {};
  if (::stat(buf, &st) != 0) return ErrnoError(fmt::format("mountpoint {}", path));
  if (!S_ISDIR(st.st_mode)) return Error(Errc::kInvalidArgument, fmt::format("mountpoint {} is not a directory", path));
  return std::string(buf);
}

// The first request of a new mount is the kernel's FUSE_INIT. Reads and
// answers it here, before any worker exists, keeping a copy of it for a
// server that may one day adopt the connection.
Status Handshake(fuse_session* se, const std::string& mountpoint, std::string* init) {
  fuse_buf buf{};
  int n;
  do {
    n = fuse_session_receive_buf(se, &buf);
  } while (n == -EINTR || n == -EAGAIN);
  if (n <= 0) {
    std::free(buf.mem);
    return Error(Errc::kIo, fmt::format("FUSE mount at {}: no INIT from the kernel ({})", mountpoint,
                                        n == 0 ? "connection closed" : std::strerror(-n)));
  }
  const auto* in = static_cast<const KernelInHeader*>(buf.mem);
  if (static_cast<size_t>(n) < sizeof(KernelInHeader) || in->opcode != kOpInit) {
    std::free(buf.mem);
    return Error(Errc::kIo, fmt::format("FUSE mount at {}: the first request is not INIT", mountpoint));
  }
  init->assign(static_cast<const char*>(buf.mem), static_cast<size_t>(n));
  fuse_session_process_buf(se, &buf);
  std::free(buf.mem);
  if (fuse_session_exited(se)) {
    return Error(Errc::kIo, fmt::format("FUSE mount at {}: INIT failed (libfuse logged why)", mountpoint));
  }
  return Ok();
}

// Adoption. The kernel did FUSE_INIT with the server that mounted; libfuse
// answers nothing but INIT until its session has seen one (got_init). So
// the adopting server feeds its session a copy of that INIT, under an id no
// request has (kAdoptUnique): libfuse negotiates exactly what the first
// server did (same kernel offer, same init callback, same options), and its
// reply is refused by the kernel with ENOENT, which libfuse takes for an
// interrupted request and ignores. Then FUSE_NOTIFY_RESEND puts back in the
// queue the requests the dead server had read but not answered (they sit on
// the connection's fd, which the keeper held open), and this server answers
// them like any other.
Status Adopt(fuse_session* se, const std::string& mountpoint, const std::string& init) {
  // major, minor, max_readahead, flags: the init_in of every protocol 7.6+.
  constexpr size_t kInitInMin = 16;
  if (init.size() < sizeof(KernelInHeader) + kInitInMin) {
    return Error(Errc::kInvalidArgument, fmt::format("adopting {}: the recorded INIT is too short", mountpoint));
  }
  std::string req = init;
  KernelInHeader hdr;
  std::memcpy(&hdr, req.data(), sizeof hdr);
  if (hdr.opcode != kOpInit || hdr.len != req.size()) {
    return Error(Errc::kInvalidArgument, fmt::format("adopting {}: the recorded INIT is not one", mountpoint));
  }
  hdr.unique = kAdoptUnique;
  std::memcpy(req.data(), &hdr, sizeof hdr);
  fuse_buf buf{};
  buf.mem = req.data();
  buf.size = req.size();
  fuse_session_process_buf(se, &buf);
  if (fuse_session_exited(se)) {
    return Error(Errc::kIo, fmt::format("adopting {}: INIT failed (libfuse logged why)", mountpoint));
  }
  KernelOutHeader resend{};
  resend.len = sizeof resend;
  resend.error = kNotifyResend;
  resend.unique = 0;  // a notification
  ssize_t w;
  do {
    w = ::write(fuse_session_fd(se), &resend, sizeof resend);
  } while (w < 0 && errno == EINTR);
  if (w != static_cast<ssize_t>(sizeof resend)) {
    // Before Linux 6.9 (EINVAL): what the dead server had read stays
    // unanswered, and those callers wait for good. Everything else serves.
    spdlog::warn("adopting {}: the kernel refused FUSE_NOTIFY_RESEND ({}); requests the previous server had "
                 "taken stay unanswered",
                 mountpoint, std::strerror(errno));
  }
  return Ok();
}

}  // namespace

FuseServer::FuseServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<FuseServer>> FuseServer::Mount(std::shared_ptr<index::Tree> tree, MountOptions opts) {
  if (!tree) return Error(Errc::kInvalidArgument, "no tree to mount");
  // An adopted mount is not looked at: until this server answers, a stat of
  // it would wait for ever. The caller passes its canonical path.
  if (opts.adopt_fd < 0) {
    UCRFS_ASSIGN(opts.mountpoint, CanonicalDir(opts.mountpoint));
  }
  static std::once_flag log_once;
  std::call_once(log_once, [] { fuse_set_log_func(LogFromFuse); });

  // "ro": the kernel refuses writes itself. "default_permissions": the
  // kernel enforces modes and owners from our attributes (no access op).
  std::string o = fmt::format("ro,default_permissions,max_read={}", kMaxRead);
  if (opts.allow_other) o += ",allow_other";
  char* optstr = nullptr;
  bool ok = fuse_opt_add_opt(&optstr, o.c_str()) == 0 &&
            fuse_opt_add_opt_escaped(&optstr, ("fsname=" + opts.fsname).c_str()) == 0 &&
            fuse_opt_add_opt_escaped(&optstr, ("subtype=" + opts.subtype).c_str()) == 0;
  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  ok = ok && fuse_opt_add_arg(&args, "ucrfs") == 0 && fuse_opt_add_arg(&args, "-o") == 0 &&
       fuse_opt_add_arg(&args, optstr) == 0 && (!opts.debug || fuse_opt_add_arg(&args, "-d") == 0);
  std::free(optstr);
  if (!ok) {
    fuse_opt_free_args(&args);
    return Error(Errc::kInternal, "out of memory building FUSE options");
  }

  auto impl = std::make_unique<Impl>(std::move(tree), opts);
  fuse_session* se = fuse_session_new(&args, &kOps, sizeof(kOps), impl.get());
  fuse_opt_free_args(&args);
  if (se == nullptr) {
    return Error(Errc::kInternal,
                 fmt::format("cannot create a FUSE session for {} (libfuse logged why)", opts.mountpoint));
  }
  if (opts.adopt_fd >= 0) {
    // libfuse takes "/dev/fd/N" for an fd whose mount someone else made.
    const std::string dev = fmt::format("/dev/fd/{}", opts.adopt_fd);
    if (fuse_session_mount(se, dev.c_str()) != 0) {
      fuse_session_destroy(se);
      ::close(opts.adopt_fd);
      return Error(Errc::kIo, fmt::format("adopting {}: libfuse refused fd {}", opts.mountpoint, opts.adopt_fd));
    }
    impl->se = se;
    impl->adopted = true;
    impl->init_request = opts.adopt_init;
    if (Status st = Adopt(se, opts.mountpoint, opts.adopt_init); !st.ok()) {
      fuse_session_destroy(se);  // closes adopt_fd; the keeper still holds the connection
      return st.error();
    }
    spdlog::debug("adopted the ucrfs mount at {}", opts.mountpoint);
    return std::unique_ptr<FuseServer>(new FuseServer(std::move(impl)));
  }
  if (fuse_session_mount(se, opts.mountpoint.c_str()) != 0) {
    fuse_session_destroy(se);
    return Error(Errc::kIo, fmt::format("cannot mount FUSE at {} (libfuse logged why; needs /dev/fuse, and root "
                                        "or fusermount3 with user_allow_other for allow_other)",
                                        opts.mountpoint));
  }
  impl->se = se;
  auto server = std::unique_ptr<FuseServer>(new FuseServer(std::move(impl)));
  UCRFS_TRY(Handshake(se, opts.mountpoint, &server->impl_->init_request));
  spdlog::debug("mounted ucrfs at {}", opts.mountpoint);
  return server;
}

FuseServer::~FuseServer() {
  assert(!impl_->running);
  // Unmounts lazily unless the kernel already ended the connection (then it
  // only closes the fd), and frees the session.
  if (impl_->adopted) {
    // libfuse did not mount, so it does not unmount: do as it would.
    pollfd p{fuse_session_fd(impl_->se), 0, 0};
    const bool ended = ::poll(&p, 1, 0) == 1 && (p.revents & POLLERR);
    if (!ended && IsMounted(impl_->opts.mountpoint)) {
      ::umount2(impl_->opts.mountpoint.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
    }
  }
  fuse_session_unmount(impl_->se);
  fuse_session_destroy(impl_->se);
}

Status FuseServer::Run() {
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  if (cfg == nullptr) return Error(Errc::kInternal, "out of memory creating the FUSE loop config");
  // One /dev/fuse fd per worker: the kernel hands requests to idle readers
  // without them contending on one fd (unless opts.clone_fd is off).
  fuse_loop_cfg_set_clone_fd(cfg, impl_->opts.clone_fd ? 1 : 0);
  fuse_loop_cfg_set_max_threads(cfg, impl_->opts.max_threads > 0 ? impl_->opts.max_threads : 1);
  // max_idle_threads stays at libfuse's default (-1: idle workers are never
  // reaped); libfuse discourages other values because of thread churn.
#if FUSE_VERSION < FUSE_MAKE_VERSION(3, 18)
  InstallWakeHandler();
  sigset_t wake, saved;
  sigemptyset(&wake);
  sigaddset(&wake, WakeSignal());
  pthread_sigmask(SIG_UNBLOCK, &wake, &saved);
#endif
  {
    std::lock_guard<std::mutex> lock(impl_->run_mu);
    impl_->running = true;
    impl_->run_thread = pthread_self();
  }
  const int rc = fuse_session_loop_mt(impl_->se, cfg);
  {
    std::lock_guard<std::mutex> lock(impl_->run_mu);
    impl_->running = false;
  }
#if FUSE_VERSION < FUSE_MAKE_VERSION(3, 18)
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
#endif
  fuse_loop_cfg_destroy(cfg);
  // 0: unmounted or Exit(); > 0: the signal that stopped a libfuse handler.
  if (rc < 0) {
    return Error(Errc::kIo, fmt::format("FUSE session at {}: {}", impl_->opts.mountpoint, std::strerror(-rc)));
  }
  return Ok();
}

void FuseServer::Exit() {
  fuse_session_exit(impl_->se);
#if FUSE_VERSION < FUSE_MAKE_VERSION(3, 18)
  std::lock_guard<std::mutex> lock(impl_->run_mu);
  if (impl_->running) pthread_kill(impl_->run_thread, WakeSignal());
#endif
}

int FuseServer::fd() const { return fuse_session_fd(impl_->se); }

const std::string& FuseServer::init_request() const { return impl_->init_request; }

const std::string& FuseServer::mountpoint() const { return impl_->opts.mountpoint; }

}  // namespace ucrfs::fusefs
