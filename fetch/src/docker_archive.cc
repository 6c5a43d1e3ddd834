// `docker save` archives, in both layouts:
//  * manifest.json: `[{"Config": "<file>", "RepoTags": ["name:tag"], "Layers": ["<id>/layer.tar", ...]}]`
//    (Docker >= 1.10; Docker >= 25 points into an OCI `blobs/` tree, possibly
//    through symlinks);
//  * legacy: `repositories` = {"name": {"tag": "<top layer id>"}}, and per
//    layer `<id>/json` (with "parent") and `<id>/layer.tar`, as Mesos' image
//    tar puller reads it.
// Either way the archive is read once at open, hashing every member, and the
// image is presented as a Docker schema2 manifest synthesized from it, so a
// pull from an archive takes the same verified path as one from a registry.
#include <archive.h>
#include <archive_entry.h>

#include <map>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sources.h"
#include "ucrfs/common/file.h"

namespace ucrfs::fetch {
namespace {

constexpr int64_t kMaxJsonBytes = 16 << 20;

struct Member {
  int64_t size = 0;
  Digest digest = Digest::Sha256Of("");
  std::string head;     // the first bytes, to tell compression
  std::string content;  // kept for JSON documents only
};

// Strips "./" and leading "/" so names compare as written in manifest.json.
std::string NormalizeName(std::string_view n) {
  while (n.substr(0, 2) == "./") n.remove_prefix(2);
  while (!n.empty() && n.front() == '/') n.remove_prefix(1);
  return std::string(n);
}

// Resolves a symlink target relative to the directory of `name`, lexically.
std::string ResolveLink(const std::string& name, std::string_view target) {
  std::vector<std::string> parts;
  if (target.empty() || target.front() != '/') {
    size_t slash = name.rfind('/');
    std::string dir = slash == std::string::npos ? "" : name.substr(0, slash);
    for (size_t p = 0; !dir.empty();) {
      size_t q = dir.find('/', p);
      parts.push_back(dir.substr(p, q - p));
      if (q == std::string::npos) break;
      p = q + 1;
    }
  }
  std::string_view t = target;
  while (!t.empty()) {
    size_t q = t.find('/');
    std::string_view c = t.substr(0, q);
    if (c == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!c.empty() && c != ".") {
      parts.emplace_back(c);
    }
    if (q == std::string_view::npos) break;
    t.remove_prefix(q + 1);
  }
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : "/") + p;
  return out;
}

std::string LayerMediaType(const std::string& head) {
  if (head.size() >= 2 && static_cast<unsigned char>(head[0]) == 0x1f && static_cast<unsigned char>(head[1]) == 0x8b) {
    return std::string(media::kDockerLayerGzip);
  }
  if (head.size() >= 4 && head.compare(0, 4, "\x28\xb5\x2f\xfd") == 0) return std::string(media::kDockerLayerZstd);
  return std::string(media::kDockerLayerTar);
}

struct ArchiveDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
using ArchivePtr = std::unique_ptr<archive, ArchiveDeleter>;

Result<ArchivePtr> OpenArchive(const std::string& file) {
  ArchivePtr a(archive_read_new());
  archive_read_support_filter_all(a.get());
  archive_read_support_format_tar(a.get());
  archive_read_support_format_gnutar(a.get());
  if (archive_read_open_filename(a.get(), file.c_str(), 1 << 16) != ARCHIVE_OK) {
    int err = archive_errno(a.get());
    if (err == ENOENT) return Error(Errc::kNotFound, fmt::format("docker archive {} not found", file));
    return Error(Errc::kIo, fmt::format("open docker archive {}: {}", file, archive_error_string(a.get())));
  }
  return a;
}

class DockerArchiveSource final : public ImageSource {
 public:
  std::string Describe() const override { return "docker-archive:" + file_; }

  Result<ManifestBlob> GetRootManifest() override { return manifest_; }

  Result<ManifestBlob> GetManifest(const Descriptor& desc) override {
    return Error(Errc::kNotFound, fmt::format("{}: no manifest {}", Describe(), desc.digest.str()));
  }

  // An archive's RepoTags name whole images, not artifacts beside them.
  Result<std::optional<ManifestBlob>> GetTaggedManifest(const std::string&) override { return std::optional<ManifestBlob>(); }

  Status GetBlob(const Descriptor& desc, BlobSink& sink) override {
    if (auto it = memory_.find(desc.digest.str()); it != memory_.end()) return sink.Write(it->second);
    auto it = by_digest_.find(desc.digest.str());
    if (it == by_digest_.end()) return Error(Errc::kNotFound, fmt::format("{}: no blob {}", Describe(), desc.digest.str()));
    UCRFS_ASSIGN(ArchivePtr a, OpenArchive(file_));
    archive_entry* e = nullptr;
    while (archive_read_next_header(a.get(), &e) == ARCHIVE_OK) {
      if (NormalizeName(archive_entry_pathname(e)) != it->second) continue;
      const void* buf;
      size_t len;
      la_int64_t off;
      int r;
      while ((r = archive_read_data_block(a.get(), &buf, &len, &off)) == ARCHIVE_OK) {
        UCRFS_TRY(sink.Write(std::string_view(static_cast<const char*>(buf), len)));
      }
      if (r != ARCHIVE_EOF) return Error(Errc::kIo, fmt::format("{}: read {}: {}", Describe(), it->second, archive_error_string(a.get())));
      return Ok();
    }
    return Error(Errc::kMalformed, fmt::format("{}: member {} vanished", Describe(), it->second));
  }

  Result<std::string> GetBlobRange(const Descriptor&, uint64_t, uint64_t) override {
    return Error(Errc::kUnsupported, Describe() + ": no ranged reads from an archive");
  }

  static Result<std::unique_ptr<ImageSource>> Open(const std::string& file, const Reference* ref);

 private:
  Status Scan();
  Result<const Member*> Find(const std::string& name) const;
  Result<const Member*> FindJson(const std::string& name) const;
  Status FromManifestJson(const Member& mj, const Reference* ref);
  Status FromRepositories(const Member& repos, const Reference* ref);
  Status Synthesize(const std::string& config, const std::vector<std::string>& layer_names);

  std::string file_;
  std::map<std::string, Member> members_;
  std::map<std::string, std::string> links_;      // symlink/hardlink name -> target name
  std::map<std::string, std::string> by_digest_;  // digest -> member name
  std::map<std::string, std::string> memory_;     // digest -> bytes (synthesized config)
  ManifestBlob manifest_;
};

Status DockerArchiveSource::Scan() {
  UCRFS_ASSIGN(ArchivePtr a, OpenArchive(file_));
  archive_entry* e = nullptr;
  int r;
  while ((r = archive_read_next_header(a.get(), &e)) == ARCHIVE_OK) {
    std::string name = NormalizeName(archive_entry_pathname(e));
    if (const char* hl = archive_entry_hardlink(e)) {
      links_[name] = NormalizeName(hl);
      continue;
    }
    if (archive_entry_filetype(e) == AE_IFLNK) {
      links_[name] = ResolveLink(name, archive_entry_symlink(e));
      continue;
    }
    if (archive_entry_filetype(e) != AE_IFREG) continue;
    Member m;
    Hasher h(DigestAlgorithm::kSha256);
    const void* buf;
    size_t len;
    la_int64_t off;
    while ((r = archive_read_data_block(a.get(), &buf, &len, &off)) == ARCHIVE_OK) {
      std::string_view chunk(static_cast<const char*>(buf), len);
      h.Update(chunk);
      if (m.size == 0 && m.head.empty()) m.head = std::string(chunk.substr(0, 512));
      if (m.size < kMaxJsonBytes && !m.head.empty() && (m.head[0] == '{' || m.head[0] == '[')) {
        m.content.append(chunk);
      }
      m.size += static_cast<int64_t>(len);
    }
    if (r != ARCHIVE_EOF) return Error(Errc::kMalformed, fmt::format("read {}: {}", name, archive_error_string(a.get())));
    if (m.size >= kMaxJsonBytes) m.content.clear();
    m.digest = h.Finish();
    members_[name] = std::move(m);
  }
  if (r != ARCHIVE_EOF) {
    return Error(Errc::kMalformed, fmt::format("not a readable tar archive: {}", archive_error_string(a.get())));
  }
  return Ok();
}

Result<const Member*> DockerArchiveSource::Find(const std::string& raw) const {
  std::string name = NormalizeName(raw);
  for (int hops = 0; hops < 16; ++hops) {
    if (auto it = members_.find(name); it != members_.end()) return &it->second;
    auto l = links_.find(name);
    if (l == links_.end()) break;
    name = l->second;
  }
  return Error(Errc::kMalformed, fmt::format("archive has no member '{}'", raw));
}

Result<const Member*> DockerArchiveSource::FindJson(const std::string& name) const {
  UCRFS_ASSIGN(const Member* m, Find(name));
  if (m->content.empty()) return Error(Errc::kMalformed, fmt::format("archive member '{}' is not a JSON document", name));
  return m;
}

bool SameImage(const Reference& a, const Reference& b) {
  Reference x = a.Normalized(), y = b.Normalized();
  return x.registry == y.registry && x.repository == y.repository && x.tag == y.tag;
}

Status DockerArchiveSource::FromManifestJson(const Member& mj, const Reference* ref) {
  auto j = nlohmann::json::parse(mj.content, nullptr, false);
  if (!j.is_array() || j.empty()) return Error(Errc::kMalformed, "manifest.json is not a non-empty array");
  const nlohmann::json* pick = nullptr;
  std::vector<std::string> tags;
  for (const auto& img : j) {
    if (!img.is_object()) return Error(Errc::kMalformed, "manifest.json entry is not an object");
    if (img.contains("RepoTags") && img["RepoTags"].is_array()) {
      for (const auto& t : img["RepoTags"]) {
        if (!t.is_string()) continue;
        tags.push_back(t.get<std::string>());
        auto tr = Reference::Parse(t.get<std::string>());
        if (ref != nullptr && tr.ok() && SameImage(*tr, *ref) && pick == nullptr) pick = &img;
      }
    }
  }
  if (ref == nullptr) {
    if (j.size() != 1) {
      return Error(Errc::kInvalidArgument, fmt::format("archive holds {} images; name one as docker-archive:FILE:REF",
                                                       j.size()));
    }
    pick = &j[0];
  }
  if (pick == nullptr) {
    // An image saved without a tag (RepoTags null or empty) can only be
    // named by the file; a tagged one must match the reference asked for.
    bool untagged = j.size() == 1 && tags.empty();
    if (!untagged) {
      return Error(Errc::kNotFound, fmt::format("archive has no image '{}' (it has: {})", ref->str(),
                                                fmt::join(tags, ", ")));
    }
    pick = &j[0];
  }
  const auto& img = *pick;
  if (!img.contains("Config") || !img["Config"].is_string() || !img.contains("Layers") || !img["Layers"].is_array()) {
    return Error(Errc::kMalformed, "manifest.json entry lacks Config or Layers");
  }
  UCRFS_ASSIGN(const Member* cfg, FindJson(img["Config"].get<std::string>()));
  std::vector<std::string> layers;
  for (const auto& l : img["Layers"]) {
    if (!l.is_string()) return Error(Errc::kMalformed, "manifest.json Layers holds a non-string");
    layers.push_back(l.get<std::string>());
  }
  return Synthesize(cfg->content, layers);
}

Status DockerArchiveSource::FromRepositories(const Member& repos, const Reference* ref) {
  auto j = nlohmann::json::parse(repos.content, nullptr, false);
  if (!j.is_object() || j.empty()) return Error(Errc::kMalformed, "repositories is not a non-empty object");
  const nlohmann::json* tags = nullptr;
  std::string tag = "latest";
  if (ref == nullptr) {
    if (j.size() != 1 || !j.begin()->is_object() || j.begin()->size() != 1) {
      return Error(Errc::kInvalidArgument, "archive holds several images; name one as docker-archive:FILE:REF");
    }
    tags = &*j.begin();
    tag = tags->begin().key();
  } else {
    if (!ref->tag.empty()) tag = ref->tag;
    Reference norm = ref->Normalized();
    for (const std::string& key : {ref->repository, ref->registry + "/" + ref->repository, norm.repository,
                                   norm.registry + "/" + norm.repository}) {
      if (j.contains(key) && j[key].is_object()) {
        tags = &j[key];
        break;
      }
    }
    if (tags == nullptr) return Error(Errc::kNotFound, fmt::format("archive has no repository '{}'", ref->repository));
  }
  if (!tags->contains(tag) || !(*tags)[tag].is_string()) {
    return Error(Errc::kNotFound, fmt::format("archive has no tag '{}'", tag));
  }
  // Walk the parent chain from the top layer down to the base.
  std::vector<std::string> ids;
  std::set<std::string> seen;
  nlohmann::json top;
  for (std::string id = (*tags)[tag].get<std::string>(); !id.empty();) {
    if (!seen.insert(id).second || id.find('/') != std::string::npos) {
      return Error(Errc::kMalformed, fmt::format("layer chain is cyclic or has a bad id at '{}'", id));
    }
    UCRFS_ASSIGN(const Member* jm, FindJson(id + "/json"));
    auto v1 = nlohmann::json::parse(jm->content, nullptr, false);
    if (!v1.is_object()) return Error(Errc::kMalformed, fmt::format("{}/json is not a JSON object", id));
    if (ids.empty()) top = v1;
    ids.push_back(id);
    if (!v1.contains("parent") || v1["parent"].is_null()) break;
    if (!v1["parent"].is_string()) return Error(Errc::kMalformed, fmt::format("{}/json: parent is not a string", id));
    id = v1["parent"].get<std::string>();
  }
  std::vector<std::string> layers;
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) layers.push_back(*it + "/layer.tar");
  // The config of a legacy archive is the top layer's v1 JSON.
  nlohmann::json cfg = nlohmann::json::object();
  cfg["architecture"] = top.value("architecture", "amd64");
  cfg["os"] = top.value("os", "linux");
  if (top.contains("created")) cfg["created"] = top["created"];
  if (top.contains("config") && top["config"].is_object()) {
    cfg["config"] = top["config"];
  } else if (top.contains("container_config") && top["container_config"].is_object()) {
    cfg["config"] = top["container_config"];
  }
  bool all_plain = true;
  nlohmann::json diff_ids = nlohmann::json::array();
  for (const auto& l : layers) {
    UCRFS_ASSIGN(const Member* m, Find(l));
    all_plain = all_plain && LayerMediaType(m->head) == media::kDockerLayerTar;
    diff_ids.push_back(m->digest.str());
  }
  if (all_plain) cfg["rootfs"] = {{"type", "layers"}, {"diff_ids", diff_ids}};
  return Synthesize(cfg.dump(), layers);
}

Status DockerArchiveSource::Synthesize(const std::string& config, const std::vector<std::string>& layer_names) {
  Digest cd = Digest::Sha256Of(config);
  by_digest_.clear();
  memory_[cd.str()] = config;
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& name : layer_names) {
    UCRFS_ASSIGN(const Member* m, Find(name));
    std::string real = NormalizeName(name);
    for (int hops = 0; hops < 16 && !members_.count(real); ++hops) real = links_.at(real);
    by_digest_[m->digest.str()] = real;
    layers.push_back({{"mediaType", LayerMediaType(m->head)}, {"size", m->size}, {"digest", m->digest.str()}});
  }
  nlohmann::json man = {
      {"schemaVersion", 2},
      {"mediaType", media::kDockerManifest},
      {"config", {{"mediaType", media::kDockerConfig}, {"size", config.size()}, {"digest", cd.str()}}},
      {"layers", layers}};
  manifest_.body = man.dump();
  manifest_.media_type = std::string(media::kDockerManifest);
  manifest_.digest = Digest::Sha256Of(manifest_.body);
  return Ok();
}

Result<std::unique_ptr<ImageSource>> DockerArchiveSource::Open(const std::string& file, const Reference* ref) {
  std::unique_ptr<DockerArchiveSource> s(new DockerArchiveSource());
  s->file_ = file;
  std::string where = "docker archive " + file;
  Status st = s->Scan();
  if (st.ok()) {
    if (auto it = s->members_.find("manifest.json"); it != s->members_.end() && !it->second.content.empty()) {
      st = s->FromManifestJson(it->second, ref);
    } else if (auto r = s->members_.find("repositories"); r != s->members_.end() && !r->second.content.empty()) {
      st = s->FromRepositories(r->second, ref);
    } else {
      st = Error(Errc::kMalformed, "neither manifest.json nor repositories found: not a docker save archive");
    }
  }
  if (!st.ok()) return st.error().code() == Errc::kNotFound && !PathExists(file) ? st.error() : st.error().Wrap(where);
  return std::unique_ptr<ImageSource>(std::move(s));
}

}  // namespace

Result<std::unique_ptr<ImageSource>> OpenDockerArchiveSource(const std::string& file, const Reference* ref) {
  return DockerArchiveSource::Open(file, ref);
}

}  // namespace ucrfs::fetch
