#include "ucrfs/index/layers.h"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include "codec.h"
#include "file_stream.h"
#include "layer_internal.h"
#include "lmdb_env.h"
#include "tar_path.h"
#include "ucrfs/common/file.h"
#include "ucrfs/common/log.h"
#include "zstd_stream.h"

namespace ucrfs::index {

std::string EntryKey(uint64_t layer_id, uint64_t seq) { return Encoder().U64BE(layer_id).U64BE(seq).take(); }

std::string EncodeRecord(const LayerRecord& r) {
  Encoder enc;
  enc.Var(r.id)
      .Var(static_cast<uint8_t>(r.format))
      .Var(r.decoded_size)
      .Var(r.entries)
      .Var(r.checkpoints)
      .Var(r.chunks)
      .Var(r.prefetch_end);
  // Trailing and optional, so that records written before it decode as
  // they are.
  if (r.windows) enc.Str(r.windows->str()).Var(r.windows_size);
  return enc.take();
}

Result<LayerRecord> DecodeRecord(std::string_view v) {
  Decoder d(v);
  LayerRecord r;
  r.id = d.Var();
  uint64_t fmt = d.Var();
  r.decoded_size = d.Var();
  r.entries = d.Var();
  r.checkpoints = d.Var();
  r.chunks = d.Var();
  r.prefetch_end = d.Var();
  if (d.ok() && !d.done()) {
    auto windows = Digest::Parse(d.Str());
    r.windows_size = d.Var();
    if (!windows.ok() || !d.done()) return Error(Errc::kMalformed, "store index: corrupt record: windows blob");
    r.windows = *windows;
  }
  UCRFS_TRY(d.Check("layer record"));
  if (fmt > static_cast<uint64_t>(LayerFormat::kGzipLazy)) return Error(Errc::kMalformed, "store index: corrupt record: layer format");
  r.format = static_cast<LayerFormat>(fmt);
  return r;
}

std::string EncodeEntry(const TarEntry& e) {
  Encoder enc;
  enc.Str(e.path)
      .Var(static_cast<uint8_t>(e.type))
      .Var(e.mode)
      .Var(e.uid)
      .Var(e.gid)
      .SVar(e.mtime_sec)
      .Var(e.mtime_nsec)
      .Var(e.size)
      .Str(e.link_target)
      .Var(e.dev_major)
      .Var(e.dev_minor)
      .Var(e.xattrs.size());
  for (const auto& [k, v] : e.xattrs) enc.Str(k).Str(v);
  enc.Var(e.extents.size());
  for (const auto& x : e.extents) enc.Var(x.file_offset).Var(x.stream_offset).Var(x.length);
  return enc.take();
}

Result<TarEntry> DecodeEntry(std::string_view v) {
  Decoder d(v);
  TarEntry e;
  e.path = d.Str();
  uint64_t type = d.Var();
  e.mode = static_cast<uint32_t>(d.Var());
  e.uid = d.Var();
  e.gid = d.Var();
  e.mtime_sec = d.SVar();
  e.mtime_nsec = static_cast<uint32_t>(d.Var());
  e.size = d.Var();
  e.link_target = d.Str();
  e.dev_major = static_cast<uint32_t>(d.Var());
  e.dev_minor = static_cast<uint32_t>(d.Var());
  for (uint64_t n = d.Var(); d.ok() && n > 0; --n) {
    std::string k(d.Str());
    e.xattrs.emplace_back(std::move(k), std::string(d.Str()));
  }
  for (uint64_t n = d.Var(); d.ok() && n > 0; --n) {
    Extent x;
    x.file_offset = d.Var();
    x.stream_offset = d.Var();
    x.length = d.Var();
    e.extents.push_back(x);
  }
  UCRFS_TRY(d.Check("layer entry"));
  if (type > static_cast<uint64_t>(EntryType::kFifo)) return Error(Errc::kMalformed, "store index: corrupt entry type");
  e.type = static_cast<EntryType>(type);
  return e;
}

namespace {

Result<LayerFormat> FormatOf(const fetch::Descriptor& layer) {
  UCRFS_ASSIGN(fetch::Compression c, fetch::LayerCompression(layer.media_type));
  switch (c) {
    case fetch::Compression::kNone: return LayerFormat::kTar;
    case fetch::Compression::kGzip: return LayerFormat::kGzip;
    case fetch::Compression::kZstd: return LayerFormat::kZstd;
  }
  return Error(Errc::kInternal, "unknown compression");
}

// Passes a stream through while writing every byte read to a file: how a zstd
// layer's decoded copy is made in the same single pass that indexes it.
class TeeStream final : public ByteStream {
 public:
  TeeStream(ByteStream& in, int fd, std::string path) : in_(in), fd_(fd), path_(std::move(path)) {}
  Result<size_t> Read(char* buf, size_t n) override {
    UCRFS_ASSIGN(size_t got, in_.Read(buf, n));
    UCRFS_TRY(WriteAll(fd_, std::string_view(buf, got), path_));
    return got;
  }
  // Skip is the base class's read-and-discard, so skipped bytes are copied too.
  uint64_t position() const override { return in_.position(); }

 private:
  ByteStream& in_;
  int fd_;
  std::string path_;
};

struct Scanned {
  std::vector<TarEntry> entries;
  std::vector<Checkpoint> checkpoints;
  uint64_t decoded_size = 0;
};

}  // namespace

Status ScanTar(ByteStream& s, std::vector<TarEntry>* entries, uint64_t* decoded_size) {
  TarReader reader(s);
  for (;;) {
    TarEntry e;
    UCRFS_ASSIGN(bool more, reader.Next(&e));
    if (!more) break;
    entries->push_back(std::move(e));
  }
  // Consume the rest (end-of-archive padding) so the decoded size is whole
  // and a gzip stream is checked to its trailer.
  char buf[1 << 16];
  for (;;) {
    UCRFS_ASSIGN(size_t n, s.Read(buf, sizeof buf));
    if (n == 0) break;
  }
  *decoded_size = s.position();
  return Ok();
}

namespace {

Status ReadAllEntries(ByteStream& s, Scanned& out) { return ScanTar(s, &out.entries, &out.decoded_size); }

// An ACI's filesystem is its rootfs/ (appc spec, aci.md): entries under it
// lose the prefix ("rootfs" itself becomes the root), everything else
// (manifest, anything beside it) is not part of the filesystem. A hardlink
// must point inside rootfs/ too. The extents still point into the whole tar.
Status StripAciRootfs(std::vector<TarEntry>& entries) {
  auto strip = [](std::string& p) {
    if (p == "rootfs") {
      p.clear();
      return true;
    }
    if (p.starts_with("rootfs/")) {
      p.erase(0, 7);
      return true;
    }
    return false;
  };
  std::vector<TarEntry> kept;
  kept.reserve(entries.size());
  for (auto& e : entries) {
    if (!strip(e.path)) continue;
    if (e.type == EntryType::kHardlink && !strip(e.link_target)) {
      return Error(Errc::kMalformed, fmt::format("{}: hardlink to {} outside rootfs/", QuotePath("rootfs/" + e.path),
                                                 QuotePath(e.link_target)));
    }
    kept.push_back(std::move(e));
  }
  entries = std::move(kept);
  return Ok();
}

Result<Scanned> Scan(Store& store, const fetch::Descriptor& layer, LayerFormat format, const std::string& decoded_tmp) {
  Scanned out;
  const std::string blob = store.BlobPath(layer.digest);
  switch (format) {
    case LayerFormat::kTar: {
      UCRFS_ASSIGN(auto s, FileStream::Open(blob));
      UCRFS_TRY(ReadAllEntries(*s, out));
      if (layer.media_type == fetch::media::kAppcAci) UCRFS_TRY(StripAciRootfs(out.entries));
      break;
    }
    case LayerFormat::kGzip: {
      // The blob's sha256 was verified when it entered the store: zlib's
      // CRC-32 would only check the same bytes again.
      UCRFS_ASSIGN(auto s, GzipIndexingStream::Open(blob, 4 << 20, /*check_crc=*/false));
      UCRFS_TRY(ReadAllEntries(*s, out));
      out.checkpoints = s->checkpoints();
      break;
    }
    case LayerFormat::kZstd: {
      UCRFS_ASSIGN(auto z, ZstdStream::Open(blob));
      UniqueFd fd(::open(decoded_tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
      if (!fd.valid()) return ErrnoError("create " + decoded_tmp);
      TeeStream tee(*z, fd.get(), decoded_tmp);
      UCRFS_TRY(ReadAllEntries(tee, out));
      if (::fsync(fd.get()) != 0) return ErrnoError("fsync " + decoded_tmp);
      break;
    }
    case LayerFormat::kEstargz:
    case LayerFormat::kZstdChunked:
    case LayerFormat::kGzipLazy:
      // A downloaded eStargz or zstd:chunked blob is an ordinary tar+gzip or
      // tar+zstd; lazy layers are indexed from their TOC (lazy.cc), not here.
      return Error(Errc::kInternal, "lazy formats are not scanned");
  }
  return out;
}

}  // namespace

Result<std::optional<LayerRecord>> FindLayer(const Store& store, const Digest& layer) {
  Txn txn;
  UCRFS_TRY(txn.Begin(store.env().env, false));
  UCRFS_ASSIGN(auto v, txn.Get(store.env()[Dbi::kLayers], layer.str()));
  if (!v) return std::optional<LayerRecord>();
  UCRFS_ASSIGN(LayerRecord r, DecodeRecord(*v));
  return std::optional<LayerRecord>(r);
}

Result<LayerRecord> EnsureLayerIndexed(Store& store, const fetch::Descriptor& layer) {
  UCRFS_ASSIGN(auto existing, FindLayer(store, layer.digest));
  if (existing) return *existing;
  const std::string what = "layer " + layer.digest.str();
  UCRFS_ASSIGN(LayerFormat format, FormatOf(layer));
  if (!store.HasBlob(layer.digest)) return Error(Errc::kNotFound, what + ": blob not in the store");

  const std::string decoded = store.DecodedPath(layer.digest);
  const std::string decoded_tmp = fmt::format("{}.partial-{}", decoded, ::getpid());
  auto scanned = Scan(store, layer, format, decoded_tmp);
  if (!scanned.ok()) {
    ::unlink(decoded_tmp.c_str());
    return scanned.error().Wrap(what);
  }
  if (format == LayerFormat::kZstd) {
    // The decoded copy is in place before the record that refers to it.
    if (::rename(decoded_tmp.c_str(), decoded.c_str()) != 0) return ErrnoError("rename " + decoded_tmp);
  }

  const auto& env = store.env();
  Txn txn;
  UCRFS_TRY(txn.Begin(env.env, true));
  // Another process may have indexed it meanwhile: keep theirs.
  UCRFS_ASSIGN(auto raced, txn.Get(env[Dbi::kLayers], layer.digest.str()));
  if (raced) return DecodeRecord(*raced);
  LayerRecord rec;
  UCRFS_ASSIGN(rec.id, NextId(txn, env, "next_layer_id"));
  rec.format = format;
  rec.decoded_size = scanned->decoded_size;
  rec.entries = scanned->entries.size();
  rec.checkpoints = scanned->checkpoints.size();
  for (uint64_t i = 0; i < scanned->entries.size(); ++i) {
    UCRFS_TRY(txn.Put(env[Dbi::kLayerEntries], EntryKey(rec.id, i), EncodeEntry(scanned->entries[i]), MDB_APPEND));
  }
  for (uint64_t i = 0; i < scanned->checkpoints.size(); ++i) {
    UCRFS_TRY(txn.Put(env[Dbi::kCheckpoints], EntryKey(rec.id, i), scanned->checkpoints[i].Serialize(), MDB_APPEND));
  }
  UCRFS_TRY(txn.Put(env[Dbi::kLayers], layer.digest.str(), EncodeRecord(rec)));
  UCRFS_TRY(txn.Commit());
  spdlog::info("indexed {}: {} entries, {} bytes decoded, {} checkpoints", what, rec.entries, rec.decoded_size,
               rec.checkpoints);
  return rec;
}

Result<std::vector<TarEntry>> LoadLayerEntries(const Store& store, const LayerRecord& layer) {
  return LoadPerLayer<TarEntry>(store, Dbi::kLayerEntries, layer, layer.entries, DecodeEntry, "entries");
}

namespace {

class PreadReader final : public LayerReader {
 public:
  PreadReader(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  Result<size_t> ReadAt(uint64_t offset, char* buf, size_t len) override {
    return PreadFull(fd_.get(), buf, len, offset, path_);
  }

 private:
  UniqueFd fd_;
  std::string path_;
};

class GzipReader final : public LayerReader {
 public:
  explicit GzipReader(std::unique_ptr<GzipRandomReader> r) : r_(std::move(r)) {}
  Result<size_t> ReadAt(uint64_t offset, char* buf, size_t len) override { return r_->ReadAt(offset, buf, len); }

 private:
  std::unique_ptr<GzipRandomReader> r_;
};

Result<std::vector<Checkpoint>> LoadCheckpoints(const Store& store, const LayerRecord& layer) {
  return LoadPerLayer<Checkpoint>(store, Dbi::kCheckpoints, layer, layer.checkpoints, Checkpoint::Deserialize,
                                  "checkpoints");
}

}  // namespace

Result<std::unique_ptr<LayerReader>> LayerReader::Open(const Store& store, const fetch::Descriptor& desc,
                                                       const LayerRecord& rec, const LazyOptions& lazy) {
  const Digest& layer = desc.digest;
  if (IsLazy(rec.format)) return OpenLazyReader(store, desc, rec, lazy);
  if (rec.format == LayerFormat::kGzip) {
    UCRFS_ASSIGN(auto cps, LoadCheckpoints(store, rec));
    UCRFS_ASSIGN(auto r, GzipRandomReader::Open(store.BlobPath(layer), std::move(cps), rec.decoded_size));
    return std::unique_ptr<LayerReader>(new GzipReader(std::move(r)));
  }
  std::string path = rec.format == LayerFormat::kTar ? store.BlobPath(layer) : store.DecodedPath(layer);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError("open " + path);
  return std::unique_ptr<LayerReader>(new PreadReader(std::move(fd), path));
}

}  // namespace ucrfs::index
