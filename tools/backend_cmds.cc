// mount --backend overlay|copy|bind, and umount of such a rootfs.
//
// Unlike the FUSE mount there is no server: the rootfs is mounted (overlay,
// bind) or filled (copy) and the command returns. What `umount` needs to undo
// it is recorded in /run/ucrfs/mounts/<sha256(DIR)>.backend (JSON: backend,
// rootfs, scratch, image), beside the FUSE servers' pid files; the rootfs'
// upper/work directories live in <store>/scratch/<sha256(DIR)>.
#include <sys/stat.h>
#include <unistd.h>

#include <climits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "ucrfs/common/log.h"
#include "ucrfs/index/gc.h"
#include "ucrfs/backends/backends.h"
#include "ucrfs/common/file.h"
#include "ucrfs/fusefs/server.h"
#include "ucrfs/index/image_tree.h"

namespace ucrfs::cli {
namespace {

constexpr const char* kRunDir = "/run/ucrfs/mounts";

std::string RecordFile(const std::string& rootfs) {
  return fmt::format("{}/{}.backend", kRunDir, Digest::Sha256Of(rootfs).hex());
}

}  // namespace

Status MountBackend(const GlobalFlags& g, const std::string& image, const std::string& mountpoint_arg,
                    const MountFlags& m) {
  UCRFS_ASSIGN(auto kind, backends::ParseKind(m.backend));
  if (m.foreground || m.prefetch_given || !m.record.empty()) {
    return Error(Errc::kInvalidArgument, "--foreground, --prefetch and --record apply to --backend fuse only");
  }
  UCRFS_ASSIGN(std::string rootfs, RealDir(mountpoint_arg));
  if (PathExists(RecordFile(rootfs)) || fusefs::IsMounted(rootfs)) {
    return Error(Errc::kInvalidArgument, fmt::format("{} is already a ucrfs mount", rootfs));
  }
  UCRFS_ASSIGN(auto given, fetch::ImageRef::Parse(image));
  UCRFS_ASSIGN(auto opts, MakeSourceOptions(g));
  UCRFS_ASSIGN(auto ref, fetch::EffectiveRef(given, opts));
  UCRFS_ASSIGN(auto store, index::Store::Open(g.store, index::Store::Mode::kReadWrite));
  backends::RootfsRequest req;
  req.store = store.get();
  // Layers are downloaded whole; an image pulled lazily before fetches what
  // its lazy layers need from its source.
  UCRFS_ASSIGN(req.image, GetOrPull(g, *store, image, /*lazy=*/false));
  UCRFS_TRY(index::PrepareImage(*store, req.image));
  req.lazy.opener = [ref, opts]() -> Result<std::shared_ptr<fetch::ImageSource>> {
    UCRFS_ASSIGN(auto source, fetch::OpenSource(ref, opts));
    return std::shared_ptr<fetch::ImageSource>(std::move(source));
  };
  req.lazy.prefetch = index::Prefetch::kNone;
  req.rootfs = rootfs;
  req.scratch = fmt::format("{}/scratch/{}", g.store, Digest::Sha256Of(rootfs).hex());
  // A scratch directory without a record is left from a crash: nothing uses it.
  UCRFS_TRY(RemoveAll(req.scratch));
  UCRFS_TRY(MakeDirs(req.scratch, 0700));
  nlohmann::json rec = {{"backend", std::string(backends::Name(kind))},
                        {"rootfs", rootfs},
                        {"scratch", req.scratch},
                        {"image", req.image.key}};
  // Recorded first, so that a crash half way is still undone by umount.
  UCRFS_TRY(MakeDirs(kRunDir));
  UCRFS_TRY(WriteFileAtomic(RecordFile(rootfs), rec.dump() + "\n"));
  if (Status st = backends::Provision(kind, req); !st.ok()) {
    (void)RemoveAll(req.scratch);
    ::unlink(RecordFile(rootfs).c_str());
    return st;
  }
  // In the store too, so that gc keeps the layers an overlay or bind mount
  // uses (a copy is alone once made: its record is dropped by gc).
  index::MountRecord mrec{rootfs, req.image.key, req.image.manifest_digest, 0, std::string(backends::Name(kind))};
  if (Status st = index::RecordMount(*store, mrec); !st.ok()) spdlog::warn("{}", st.error().message());
  return Ok();
}

bool IsBackendRootfs(const std::string& rootfs) { return PathExists(RecordFile(rootfs)); }

Status UmountBackend(const std::string& rootfs) {
  UCRFS_ASSIGN(std::string body, ReadFile(RecordFile(rootfs)));
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("backend") || !j["backend"].is_string() ||
      !j.contains("scratch") || !j["scratch"].is_string()) {
    return Error(Errc::kMalformed, fmt::format("record {} of {} is corrupt", RecordFile(rootfs), rootfs));
  }
  UCRFS_ASSIGN(auto kind, backends::ParseKind(j["backend"].get<std::string>()));
  std::string scratch = j["scratch"].get<std::string>();
  UCRFS_TRY(backends::Destroy(kind, rootfs, scratch));
  UCRFS_TRY(RemoveAll(scratch));
  // The store's record of the mount: <store>/mounts/, beside <store>/scratch/.
  if (auto at = scratch.rfind("/scratch/"); at != std::string::npos) {
    std::string record = fmt::format("{}/mounts/{}.json", scratch.substr(0, at), Digest::Sha256Of(rootfs).hex());
    ::unlink(record.c_str());
  }
  if (::unlink(RecordFile(rootfs).c_str()) != 0 && errno != ENOENT) return ErrnoError("unlink " + RecordFile(rootfs));
  return Ok();
}

}  // namespace ucrfs::cli
