// Image options and pull-if-missing, shared by the CLI and the provisioner.
#include "ucrfs/provisioner/images.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ucrfs/common/file.h"
#include "ucrfs/common/log.h"
#include "ucrfs/fetch/appc.h"
#include "ucrfs/index/gc.h"
#include "ucrfs/index/pull.h"

namespace ucrfs::provisioner {
namespace {

// --docker-registry: a directory of `docker save` archives (an absolute path
// or file:// URL), or the registry for names that carry none (URL or
// host[:port]), as the Mesos agent flag of the same name.
Status ApplyDockerRegistry(const std::string& value, fetch::SourceOptions& opts) {
  if (value.empty()) return Ok();
  std::string v = value;
  if (v.rfind("file://", 0) == 0) v = v.substr(7);
  if (!v.empty() && v.front() == '/') {
    opts.archive_dir = v;
    return Ok();
  }
  for (const char* scheme : {"http", "https"}) {
    std::string prefix = std::string(scheme) + "://";
    if (v.rfind(prefix, 0) == 0) {
      v = v.substr(prefix.size());
      opts.default_registry_scheme = scheme;
    }
  }
  v = v.substr(0, v.find('/'));
  UCRFS_ASSIGN(auto ep, fetch::ParseRegistryEndpoint(v));
  if (ep.host.empty()) return Error(Errc::kInvalidArgument, fmt::format("--docker-registry: bad value '{}'", value));
  opts.default_registry = v;
  return Ok();
}

// Passes everything through, counting the bytes that came from the source:
// what a mount fetched before it serves (manifests, config, TOCs, ucrfs
// indexes, downloaded layers), for `ucrfs stats`.
class CountingSource final : public fetch::ImageSource {
 public:
  CountingSource(fetch::ImageSource& inner, std::atomic<uint64_t>& bytes) : inner_(inner), bytes_(bytes) {}
  std::string Describe() const override { return inner_.Describe(); }
  Result<fetch::ManifestBlob> GetRootManifest() override { return Count(inner_.GetRootManifest()); }
  Result<fetch::ManifestBlob> GetManifest(const fetch::Descriptor& d) override { return Count(inner_.GetManifest(d)); }
  Result<std::optional<fetch::ManifestBlob>> GetTaggedManifest(const std::string& tag) override {
    auto m = inner_.GetTaggedManifest(tag);
    if (m.ok() && *m) bytes_ += (*m)->body.size();
    return m;
  }
  Status GetBlob(const fetch::Descriptor& d, fetch::BlobSink& sink) override {
    Status st = inner_.GetBlob(d, sink);
    bytes_ += sink.written();
    return st;
  }
  Result<std::string> GetBlobRange(const fetch::Descriptor& d, uint64_t offset, uint64_t length) override {
    auto r = inner_.GetBlobRange(d, offset, length);
    if (r.ok()) bytes_ += r->size();
    return r;
  }
  Result<std::string> GetBlobRangeEarly(const fetch::Descriptor& d, uint64_t offset, uint64_t length,
                                        uint64_t early_bytes, const EarlyBytes& early) override {
    auto r = inner_.GetBlobRangeEarly(d, offset, length, early_bytes, early);
    if (r.ok()) bytes_ += r->size();
    return r;
  }

 private:
  Result<fetch::ManifestBlob> Count(Result<fetch::ManifestBlob> m) {
    if (m.ok()) bytes_ += m->body.size();
    return m;
  }
  fetch::ImageSource& inner_;
  std::atomic<uint64_t>& bytes_;
};



}  // namespace

Result<fetch::SourceOptions> MakeSourceOptions(const ImageOptions& g) {
  fetch::SourceOptions opts;
  opts.insecure_registries = g.insecure_registries;
  opts.registry_ca_file = g.registry_ca;
  if (!g.registry_ca.empty() && !PathExists(g.registry_ca)) {
    return Error(Errc::kNotFound, fmt::format("--registry-ca: {} does not exist", g.registry_ca));
  }
  std::optional<std::string> cfg;
  if (!g.docker_config.empty()) cfg = g.docker_config;
  auto dc = fetch::DockerConfig::Load(cfg);
  if (!dc.ok()) return dc.error().Wrap("docker config");
  opts.docker_config = std::move(dc).value();
  UCRFS_TRY(ApplyDockerRegistry(g.docker_registry, opts));
  if (!g.appc_simple_discovery_uri_prefix.empty()) {
    // Checked now, with a name that cannot fail, so that a bad prefix is one
    // line about the flag rather than about some image.
    fetch::AppcRef probe{"x", {{"version", "v"}, {"os", "o"}, {"arch", "a"}}, ""};
    auto loc = fetch::SimpleDiscoveryLocation(g.appc_simple_discovery_uri_prefix, probe);
    if (!loc.ok()) return loc.error().Wrap("--appc-simple-discovery-uri-prefix");
    opts.appc_discovery_prefix = g.appc_simple_discovery_uri_prefix;
  }
  if (!g.platform.empty()) {
    UCRFS_ASSIGN(opts.appc_platform, WantedPlatform(g));
  }
  return opts;
}

Result<fetch::Platform> WantedPlatform(const ImageOptions& g) {
  if (g.platform.empty()) return fetch::Platform::Host();
  auto p = fetch::Platform::Parse(g.platform);
  if (!p.ok()) return p.error().Wrap("--platform");
  return p;
}

Result<index::ImageRecord> GetOrPull(const ImageOptions& g, index::Store& store, const std::string& image,
                                     bool lazy, std::atomic<uint64_t>* received) {
  UCRFS_ASSIGN(auto given, fetch::ImageRef::Parse(image));
  UCRFS_ASSIGN(auto opts, MakeSourceOptions(g));
  UCRFS_ASSIGN(auto ref, fetch::EffectiveRef(given, opts));
  auto found = [&]() -> Result<std::optional<index::ImageRecord>> {
    UCRFS_ASSIGN(auto record, store.FindImage(ref.str()));
    if (record) {
      if (Status st = store.TouchImage(ref.str()); !st.ok()) spdlog::warn("{}", st.error().message());
    }
    return record;
  };
  UCRFS_ASSIGN(auto record, found());
  if (record) return *record;
  // One pull of an image at a time across processes: N containers started
  // together fetch it once; the others wait here and find it in the store.
  UCRFS_TRY(MakeDirs(store.root() + "/locks", 0700));
  std::string lock_path = fmt::format("{}/locks/pull-{}", store.root(), Digest::Sha256Of(ref.str()).hex());
  int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0) return ErrnoError("open " + lock_path);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }  // releases the flock
  } closer{lock};
  while (::flock(lock, LOCK_EX) != 0) {
    if (errno != EINTR) return ErrnoError("flock " + lock_path);
  }
  UCRFS_ASSIGN(record, found());
  if (record) return *record;
  if (ref.transport == fetch::Transport::kAppc) {
    UCRFS_ASSIGN(auto res, index::PullAppc(store, ref.appc, ref.str(), opts));
    if (received) *received += res.bytes_fetched;
    spdlog::info("pulled {}: {} images fetched ({} bytes), {} already in the store", ref.str(), res.blobs_fetched,
                 res.bytes_fetched, res.blobs_reused);
    AutoGc(store.root(), store, ref.str());
    return res.record;
  }
  UCRFS_ASSIGN(auto platform, WantedPlatform(g));
  UCRFS_ASSIGN(auto source, fetch::OpenSource(ref, opts));
  std::atomic<uint64_t> ignored{0};
  CountingSource counting(*source, received ? *received : ignored);
  index::PullOptions po;
  po.platform = platform;
  po.lazy = lazy;
  UCRFS_ASSIGN(auto res, index::Pull(store, counting, ref.str(), po));
  spdlog::info("pulled {}: {} blobs fetched ({} bytes), {} already in the store, {} lazy layers", ref.str(),
               res.blobs_fetched, res.bytes_fetched, res.blobs_reused, res.layers_lazy);
  AutoGc(store.root(), store, ref.str());
  return res.record;
}

void AutoGc(const std::string& store_dir, index::Store& store, const std::string& using_key) {
  auto body = ReadFile(GcConfigPath(store_dir));
  if (!body.ok()) return;  // no limit configured
  auto j = nlohmann::json::parse(*body, nullptr, false);
  index::GcOptions opts;
  try {
    opts.max_size = j.at("maxCacheSize").get<uint64_t>();
    opts.keep = j.value("keep", std::vector<std::string>{});
  } catch (const nlohmann::json::exception&) {
    spdlog::warn("{} is corrupt; no automatic gc", GcConfigPath(store_dir));
    return;
  }
  if (opts.max_size == 0 || index::StoreSize(store) <= opts.max_size) return;
  opts.keep.push_back(using_key);
  auto r = index::CollectGarbage(store, opts);
  if (!r.ok()) {
    spdlog::info("automatic gc skipped: {}", r.error().message());
    return;
  }
  spdlog::info("automatic gc: removed {} image(s), freed {} bytes", r->images_removed.size(), r->bytes_freed);
}

std::vector<std::string> ImageOptions::ToArgs() const {
  std::vector<std::string> args;
  for (const auto& r : insecure_registries) args.insert(args.end(), {"--insecure-registry", r});
  if (!registry_ca.empty()) args.insert(args.end(), {"--registry-ca", registry_ca});
  if (!docker_config.empty()) args.insert(args.end(), {"--docker-config", docker_config});
  if (!docker_registry.empty()) args.insert(args.end(), {"--docker-registry", docker_registry});
  if (!platform.empty()) args.insert(args.end(), {"--platform", platform});
  if (!appc_simple_discovery_uri_prefix.empty()) {
    args.insert(args.end(), {"--appc-simple-discovery-uri-prefix", appc_simple_discovery_uri_prefix});
  }
  return args;
}

Result<std::string> ImageKey(const ImageOptions& o, const std::string& image) {
  UCRFS_ASSIGN(auto given, fetch::ImageRef::Parse(image));
  UCRFS_ASSIGN(auto opts, MakeSourceOptions(o));
  UCRFS_ASSIGN(auto ref, fetch::EffectiveRef(given, opts));
  return ref.str();
}

std::string GcConfigPath(const std::string& store_dir) { return store_dir + "/gc.json"; }

}  // namespace ucrfs::provisioner
