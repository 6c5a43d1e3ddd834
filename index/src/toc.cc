// eStargz and zstd:chunked: footers, TOCs and chunks (see toc.h).
//
// Layouts were checked against the producers' own sources:
// containerd/stargz-snapshotter estargz/{types,estargz}.go (51- and 47-byte
// footers, the TOC tar member, TOCEntry fields, how chunk ends are found) and
// estargz/zstdchunked/zstdchunked.go (40-byte footer "GnUlInUx"), and
// containers/storage pkg/chunked/internal{,/minimal}/compression.go and
// compressor/compressor.go (the 64-byte footer "GNUlInUx", manifest-checksum
// = sha256 of the *compressed* manifest, endOffset, chunkType).
#include "ucrfs/index/toc.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tar_path.h"
#include "ucrfs/common/base64.h"

namespace ucrfs::index {
namespace {

constexpr std::string_view kEstargzTocDigestKey = "containerd.io/snapshot/stargz/toc.digest";
// The old key (stargz-snapshotter, containers/storage before 1.55) and the new one.
constexpr std::string_view kZstdChecksumKeys[] = {"io.containers.zstd-chunked.manifest-checksum",
                                                  "io.github.containers.zstd-chunked.manifest-checksum"};
constexpr std::string_view kTocTarName = "stargz.index.json";
constexpr std::string_view kPrefetchLandmark = ".prefetch.landmark";
constexpr std::string_view kNoPrefetchLandmark = ".no.prefetch.landmark";

constexpr size_t kEstargzFooterSize = 51, kLegacyFooterSize = 47, kExternalTocFooterSize = 46;
constexpr size_t kGzipTrailerSize = 5 + 8;  // empty stored deflate block + CRC32/ISIZE
constexpr size_t kSkippableHeaderSize = 8;  // magic + LE32 length
constexpr size_t kZstdFooterSizeOld = 40, kZstdFooterSizeNew = 64;
constexpr std::string_view kZstdMagicOld = "GnUlInUx", kZstdMagicNew = "GNUlInUx";
constexpr uint64_t kManifestTypeCrfs = 1;

// A TOC is held in memory (decoded, then parsed): bound what a hostile layer
// can make us allocate. A layer of a million files has a TOC of ~300 MiB.
constexpr uint64_t kMaxTocBytes = uint64_t{512} << 20;
constexpr uint64_t kMaxSize = uint64_t{1} << 56;  // as tar.cc: no real file is larger

using Json = nlohmann::json;

std::string Quote(std::string_view s) { return QuotePath(s); }

uint8_t U8(std::string_view s, size_t off) { return static_cast<uint8_t>(s[off]); }
uint64_t Le(std::string_view s, size_t off, size_t n) {
  uint64_t v = 0;
  for (size_t i = n; i-- > 0;) v = (v << 8) | U8(s, off + i);
  return v;
}

// ---------------------------------------------------------------------------
// Decoders. Both feed decoded bytes to `sink` until it returns false, and
// return whether the input ended cleanly at a member/frame boundary (false:
// it ran out mid-stream). Corrupt input is kMalformed.

using Sink = std::function<bool(std::string_view)>;

// Concatenated gzip members (RFC 1952), as eStargz chunks and the TOC are.
Result<bool> InflateGzip(std::string_view in, const Sink& sink) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) return Error(Errc::kInternal, "inflateInit2 failed");
  std::unique_ptr<z_stream, decltype(&inflateEnd)> guard(&zs, &inflateEnd);
  auto buf = std::make_unique<char[]>(64 * 1024);
  size_t fed = 0;
  for (;;) {
    if (zs.avail_in == 0 && fed < in.size()) {  // avail_in is 32-bit: feed big inputs in pieces
      size_t n = std::min<size_t>(in.size() - fed, UINT_MAX);
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data() + fed));
      zs.avail_in = static_cast<uInt>(n);
      fed += n;
    }
    bool input_left = zs.avail_in > 0 || fed < in.size();
    zs.next_out = reinterpret_cast<Bytef*>(buf.get());
    zs.avail_out = 64 * 1024;
    int r = inflate(&zs, Z_NO_FLUSH);
    size_t got = 64 * 1024 - zs.avail_out;
    if (got > 0 && !sink({buf.get(), got})) return true;
    if (r == Z_STREAM_END) {
      if (zs.avail_in == 0 && fed == in.size()) return true;
      inflateReset(&zs);  // another member follows: a gzip stream may be several
      continue;
    }
    if (r == Z_BUF_ERROR) {
      if (!input_left) return false;  // the input ends inside a member
      if (got == 0) return Error(Errc::kMalformed, "corrupt gzip data: inflate makes no progress");
    } else if (r != Z_OK) {
      return Error(Errc::kMalformed, fmt::format("corrupt gzip data: {}", zs.msg ? zs.msg : "inflate failed"));
    }
  }
}

// Concatenated zstd frames; skippable frames are passed over by the library.
Result<bool> DecodeZstd(std::string_view in, const Sink& sink) {
  std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> dctx(ZSTD_createDCtx(), &ZSTD_freeDCtx);
  if (!dctx) return Error(Errc::kInternal, "ZSTD_createDCtx failed");
  // The library's default window limit (128 MiB) stays in force: a frame
  // that asks for more fails as corrupt instead of making us allocate it.
  auto buf = std::make_unique<char[]>(ZSTD_DStreamOutSize());
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  for (;;) {
    ZSTD_outBuffer ob{buf.get(), ZSTD_DStreamOutSize(), 0};
    size_t r = ZSTD_decompressStream(dctx.get(), &ob, &ib);
    if (ZSTD_isError(r)) return Error(Errc::kMalformed, fmt::format("corrupt zstd data: {}", ZSTD_getErrorName(r)));
    if (ob.pos > 0 && !sink({buf.get(), ob.pos})) return true;
    // With all input taken and room left in the output, nothing more will
    // come: r == 0 means the last frame was complete.
    if (ib.pos == ib.size && ob.pos < ob.size) return r == 0;
  }
}

// Decodes all of `in`, refusing more than `limit` bytes of output.
Result<std::string> DecodeAll(TocFormat format, std::string_view in, uint64_t limit, std::string_view what) {
  std::string out;
  bool too_big = false;
  Sink sink = [&](std::string_view piece) {
    if (piece.size() > limit - out.size()) {
      too_big = true;
      return false;
    }
    out.append(piece);
    return true;
  };
  auto r = format == TocFormat::kEstargz ? InflateGzip(in, sink) : DecodeZstd(in, sink);
  if (!r.ok()) return r.error().Wrap(what);
  if (too_big) return Error(Errc::kTooBig, fmt::format("{}: decodes to more than {} bytes", what, limit));
  if (!*r) return Error(Errc::kMalformed, fmt::format("{}: truncated compressed data", what));
  return out;
}

// A ByteStream over a buffer, to read the TOC's tar with TarReader.
class MemoryStream final : public ByteStream {
 public:
  explicit MemoryStream(std::string_view data) : data_(data) {}
  Result<size_t> Read(char* buf, size_t n) override {
    n = std::min<size_t>(n, data_.size() - pos_);
    std::memcpy(buf, data_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  Status Skip(uint64_t n) override {
    if (n > data_.size() - pos_) return Error(Errc::kMalformed, "unexpected end of TOC tar");
    pos_ += n;
    return Ok();
  }
  uint64_t position() const override { return pos_; }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

// ---------------------------------------------------------------------------
// Footers.

// The Extra field of a footer-sized empty gzip member, or nullopt when `f`
// is not one: a 10-byte header with FEXTRA (and no name, comment or header
// CRC, which would change the size), XLEN, the field, then the empty body.
std::optional<std::string_view> GzipFooterExtra(std::string_view f) {
  if (f.size() < 12 + kGzipTrailerSize) return std::nullopt;
  if (U8(f, 0) != 0x1f || U8(f, 1) != 0x8b || U8(f, 2) != 8 || (U8(f, 3) & 0x1e) != 0x04) return std::nullopt;
  size_t xlen = Le(f, 10, 2);
  if (12 + xlen + kGzipTrailerSize != f.size()) return std::nullopt;
  return f.substr(12, xlen);
}

// "%016xSTARGZ": the TOC offset in hex. nullopt when the magic is not there.
std::optional<Result<uint64_t>> StargzOffset(std::string_view field) {
  if (field.size() != 22 || field.substr(16) != "STARGZ") return std::nullopt;
  uint64_t v = 0;
  for (char c : field.substr(0, 16)) {
    int d = (c >= '0' && c <= '9')   ? c - '0'
            : (c >= 'a' && c <= 'f') ? c - 'a' + 10
            : (c >= 'A' && c <= 'F') ? c - 'A' + 10  // Go's ParseInt takes either case
                                     : -1;
    if (d < 0) {
      return Result<uint64_t>(Error(Errc::kMalformed, "eStargz footer: TOC offset is not hex: " + Quote(field)));
    }
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  return Result<uint64_t>(v);
}

Result<TocLocation> EstargzLocation(uint64_t toc_off, size_t footer_size, uint64_t blob_size) {
  uint64_t footer_start = blob_size - footer_size;
  if (toc_off >= footer_start) {
    return Error(Errc::kMalformed, fmt::format("eStargz footer: TOC offset {} is not before the {}-byte footer "
                                              "of a {}-byte blob", toc_off, footer_size, blob_size));
  }
  TocLocation loc;
  loc.format = TocFormat::kEstargz;
  loc.offset = toc_off;
  loc.size = footer_start - toc_off;
  return loc;
}

Result<TocLocation> ParseEstargzFooter(std::string_view tail, uint64_t blob_size) {
  if (tail.size() >= kEstargzFooterSize) {
    if (auto extra = GzipFooterExtra(tail.substr(tail.size() - kEstargzFooterSize))) {
      // Subfield 'S','G' with LEN 22 holding "%016xSTARGZ".
      if (extra->size() == 26 && extra->substr(0, 2) == "SG" && Le(*extra, 2, 2) == 22) {
        if (auto off = StargzOffset(extra->substr(4))) {
          if (!off->ok()) return off->error();
          return EstargzLocation(**off, kEstargzFooterSize, blob_size);
        }
      }
    }
  }
  if (tail.size() >= kExternalTocFooterSize) {
    auto extra = GzipFooterExtra(tail.substr(tail.size() - kExternalTocFooterSize));
    if (extra && *extra == std::string_view("SG\x11\x00STARGZEXTERNALTOC", 21)) {
      return Error(Errc::kUnsupported, "eStargz layer with an external TOC (a separate TOC image) is not supported");
    }
  }
  if (tail.size() >= kLegacyFooterSize) {
    // The original stargz footer: the Extra field is "%016xSTARGZ" itself.
    if (auto extra = GzipFooterExtra(tail.substr(tail.size() - kLegacyFooterSize))) {
      if (auto off = StargzOffset(*extra)) {
        if (!off->ok()) return off->error();
        return EstargzLocation(**off, kLegacyFooterSize, blob_size);
      }
    }
  }
  return Error(Errc::kNotFound, "no eStargz footer");
}

Result<TocLocation> ParseZstdFooter(std::string_view tail, uint64_t blob_size) {
  if (tail.size() < 8) return Error(Errc::kNotFound, "no zstd:chunked footer");
  // Both footers end with their magic, which is how they are told apart
  // (containers/storage changed the magic when it grew the footer, so that
  // old readers would not misread the new one).
  std::string_view magic = tail.substr(tail.size() - 8);
  size_t len = magic == kZstdMagicOld ? kZstdFooterSizeOld : magic == kZstdMagicNew ? kZstdFooterSizeNew : 0;
  if (len == 0) return Error(Errc::kNotFound, "no zstd:chunked footer");
  size_t total = kSkippableHeaderSize + len;
  if (tail.size() < total) {
    return Error(Errc::kMalformed, fmt::format("zstd:chunked footer: blob tail of {} bytes is shorter than the "
                                               "{}-byte footer frame", tail.size(), total));
  }
  std::string_view frame = tail.substr(tail.size() - total);
  // A skippable frame: magic 0x184D2A5? (little-endian), then its length.
  if ((U8(frame, 0) & 0xf0) != 0x50 || U8(frame, 1) != 0x2a || U8(frame, 2) != 0x4d || U8(frame, 3) != 0x18 ||
      Le(frame, 4, 4) != len) {
    return Error(Errc::kMalformed, "zstd:chunked footer: magic present but not in a skippable frame of its size");
  }
  std::string_view d = frame.substr(kSkippableHeaderSize);
  uint64_t offset = Le(d, 0, 8), csize = Le(d, 8, 8), usize = Le(d, 16, 8), type = Le(d, 24, 8);
  if (type != kManifestTypeCrfs) {
    return Error(Errc::kUnsupported,
                 fmt::format("zstd:chunked footer: manifest type {} (only 1, CRFS, is known)", type));
  }
  uint64_t footer_start = blob_size - total;
  if (csize == 0 || offset < kSkippableHeaderSize || offset > footer_start || csize > footer_start - offset) {
    return Error(Errc::kMalformed, fmt::format("zstd:chunked footer: manifest at {} ({} bytes) does not lie "
                                               "before the footer of a {}-byte blob", offset, csize, blob_size));
  }
  TocLocation loc;
  loc.format = TocFormat::kZstdChunked;
  loc.offset = offset;
  loc.size = csize;
  loc.uncompressed_size = usize;
  return loc;
}

// ---------------------------------------------------------------------------
// TOC JSON.

// A failure inside one TOC entry, naming it.
Error Bad(size_t i, std::string_view name, std::string_view msg, Errc code = Errc::kMalformed) {
  return Error(code, fmt::format("TOC entry #{} {}: {}", i, Quote(name), msg));
}

Result<std::string> Str(const Json& e, const char* key) {
  auto it = e.find(key);
  if (it == e.end() || it->is_null()) return std::string();
  if (!it->is_string()) return Error(Errc::kMalformed, fmt::format("'{}' is not a string", key));
  return it->get<std::string>();
}

// A non-negative integer field; absent (Go's omitempty) means 0.
Result<uint64_t> Num(const Json& e, const char* key, uint64_t max = kMaxSize) {
  auto it = e.find(key);
  if (it == e.end() || it->is_null()) return uint64_t{0};
  if (!it->is_number_unsigned() || it->get<uint64_t>() > max) {
    return Error(Errc::kMalformed, fmt::format("'{}' is not an integer in [0, {}]: {}", key, max, it->dump()));
  }
  return it->get<uint64_t>();
}

int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {  // proleptic Gregorian, 1970-01-01 = 0
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

// RFC 3339 ("2006-01-02T15:04:05.999999999Z07:00", as Go writes time.Time).
// Go's zero time (year 1), which omitempty does not drop, counts as no time.
Status ParseModTime(std::string_view s, TarEntry* e) {
  auto bad = [&] { return Error(Errc::kMalformed, "'modtime' is not an RFC 3339 time: " + Quote(s)); };
  auto num = [&](size_t pos, size_t n, int64_t* out) {
    if (pos + n > s.size()) return false;
    int64_t v = 0;
    for (size_t i = pos; i < pos + n; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
  };
  int64_t y, mo, d, h, mi, sec;
  if (!num(0, 4, &y) || s.size() < 20 || s[4] != '-' || !num(5, 2, &mo) || s[7] != '-' || !num(8, 2, &d) ||
      (s[10] != 'T' && s[10] != 't') || !num(11, 2, &h) || s[13] != ':' || !num(14, 2, &mi) || s[16] != ':' ||
      !num(17, 2, &sec)) {
    return bad();
  }
  static constexpr int kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (mo < 1 || mo > 12 || d < 1 || d > kDays[mo - 1] || h > 23 || mi > 59 || sec > 59) return bad();
  size_t pos = 19;
  uint32_t nsec = 0;
  if (pos < s.size() && s[pos] == '.') {
    size_t digits = 0;
    for (++pos; pos < s.size() && s[pos] >= '0' && s[pos] <= '9'; ++pos, ++digits) {
      if (digits < 9) nsec = nsec * 10 + static_cast<uint32_t>(s[pos] - '0');
    }
    if (digits == 0) return bad();
    for (; digits < 9; ++digits) nsec *= 10;
  }
  int64_t zone = 0;
  if (pos + 1 == s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    // UTC
  } else if (pos + 6 == s.size() && (s[pos] == '+' || s[pos] == '-') && s[pos + 3] == ':') {
    int64_t zh, zm;
    if (!num(pos + 1, 2, &zh) || !num(pos + 4, 2, &zm) || zh > 23 || zm > 59) return bad();
    zone = (s[pos] == '-' ? -1 : 1) * (zh * 3600 + zm * 60);
  } else {
    return bad();
  }
  int64_t t = DaysFromCivil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d)) * 86400 + h * 3600 + mi * 60 +
              sec - zone;
  if (y == 1 && t == DaysFromCivil(1, 1, 1) * 86400 && nsec == 0) t = 0;  // Go's zero time.Time
  e->mtime_sec = t;
  e->mtime_nsec = nsec;
  return Ok();
}

// Where one piece of a file's data is, as the TOC says.
struct RawChunk {
  uint64_t offset = 0, chunk_offset = 0, chunk_size = 0, inner_offset = 0;
  std::optional<Digest> digest;
};

// A regular file (or a dropped landmark) and its pieces, in TOC order.
struct FileChunks {
  size_t entry = SIZE_MAX;  // index in Toc::entries; SIZE_MAX for entries not in the tree
  std::string path;
  uint64_t size = 0;
  uint64_t end_offset = 0;  // zstd:chunked: end of the file's last frame (0 = not given)
  std::optional<Digest> file_digest;
  std::vector<RawChunk> raw;
};

Result<RawChunk> ReadRawChunk(const Json& e) {
  RawChunk c;
  UCRFS_ASSIGN(c.offset, Num(e, "offset"));
  UCRFS_ASSIGN(c.chunk_offset, Num(e, "chunkOffset"));
  UCRFS_ASSIGN(c.chunk_size, Num(e, "chunkSize"));
  UCRFS_ASSIGN(c.inner_offset, Num(e, "innerOffset"));
  UCRFS_ASSIGN(std::string d, Str(e, "chunkDigest"));
  if (!d.empty()) {
    auto parsed = Digest::Parse(d);
    if (!parsed.ok()) return Error(Errc::kMalformed, "bad 'chunkDigest': " + parsed.error().message());
    c.digest = std::move(*parsed);
  }
  return c;
}

Result<EntryType> MapTocType(std::string_view t) {
  if (t == "reg") return EntryType::kFile;
  if (t == "dir") return EntryType::kDir;
  if (t == "symlink") return EntryType::kSymlink;
  if (t == "hardlink") return EntryType::kHardlink;
  if (t == "char") return EntryType::kCharDev;
  if (t == "block") return EntryType::kBlockDev;
  if (t == "fifo") return EntryType::kFifo;
  return Error(Errc::kMalformed, "unknown entry type " + Quote(t));
}

// The metadata of one non-chunk entry, checked as TarReader checks a header.
Status FillEntry(const Json& j, EntryType type, TarEntry* e) {
  e->type = type;
  if (e->path.empty() && type != EntryType::kDir) return Error(Errc::kMalformed, "empty path for a non-directory");
  UCRFS_ASSIGN(uint64_t mode, Num(j, "mode", UINT32_MAX));
  e->mode = static_cast<uint32_t>(mode) & 07777;  // Go's tar.Header.Mode may carry c_ISDIR etc.; the type is `type`
  UCRFS_ASSIGN(e->uid, Num(j, "uid", UINT32_MAX));
  UCRFS_ASSIGN(e->gid, Num(j, "gid", UINT32_MAX));
  UCRFS_ASSIGN(std::string mtime, Str(j, "modtime"));
  if (!mtime.empty()) {
    UCRFS_TRY(ParseModTime(mtime, e));
  }
  if (type == EntryType::kFile) {
    UCRFS_ASSIGN(e->size, Num(j, "size"));
  }
  UCRFS_ASSIGN(std::string link, Str(j, "linkName"));
  if (type == EntryType::kHardlink) {
    auto target = NormalizeTarPath(link);
    if (!target.ok() || target->empty()) {
      return Error(Errc::kMalformed, "bad hardlink target " + Quote(link) +
                                         (target.ok() ? ": the root" : ": " + target.error().message()));
    }
    e->link_target = std::move(*target);
  } else if (type == EntryType::kSymlink) {
    if (link.empty() || link.find('\0') != std::string::npos) {
      return Error(Errc::kMalformed, "empty symlink target or NUL byte in it");
    }
    e->link_target = std::move(link);
  }
  if (type == EntryType::kCharDev || type == EntryType::kBlockDev) {
    UCRFS_ASSIGN(uint64_t major, Num(j, "devMajor", UINT32_MAX));
    UCRFS_ASSIGN(uint64_t minor, Num(j, "devMinor", UINT32_MAX));
    e->dev_major = static_cast<uint32_t>(major);
    e->dev_minor = static_cast<uint32_t>(minor);
  }
  auto xa = j.find("xattrs");
  if (xa != j.end() && !xa->is_null()) {
    if (!xa->is_object()) return Error(Errc::kMalformed, "'xattrs' is not an object");
    for (const auto& [name, value] : xa->items()) {  // values are base64 in both formats (Go's []byte, and c/storage)
      auto raw = value.is_string() ? Base64Decode(value.get<std::string>()) : std::nullopt;
      if (name.empty() || !raw) return Error(Errc::kMalformed, "bad xattr " + Quote(name) + ": not base64");
      e->xattrs.emplace_back(name, std::move(*raw));
    }
  }
  return Ok();
}

// Turns a file's pieces into Chunks covering [0, size) exactly. `bounds`
// holds every piece's start in the blob and the TOC's start, sorted: a
// piece's compressed bytes run to the next distinct one.
Result<std::vector<Chunk>> BuildChunks(const FileChunks& f, const std::vector<uint64_t>& bounds) {
  std::vector<Chunk> out;
  uint64_t expect = 0;
  for (size_t k = 0; k < f.raw.size(); ++k) {
    const RawChunk& r = f.raw[k];
    if (r.chunk_offset != expect) {
      return Error(Errc::kMalformed,
                   fmt::format("chunk #{} starts at file offset {}, not {}: its chunks leave a {}", k,
                               r.chunk_offset, expect, r.chunk_offset > expect ? "hole" : "overlap"));
    }
    if (expect >= f.size) {
      return Error(Errc::kMalformed, fmt::format("chunk #{} lies past the file's {} bytes", k, f.size));
    }
    uint64_t len = r.chunk_size != 0 ? r.chunk_size : f.size - expect;  // 0: to the end of the file
    if (len > f.size - expect) {
      return Error(Errc::kMalformed, fmt::format("chunk #{} ({} bytes at {}) runs past the file's {} bytes", k, len,
                                                 expect, f.size));
    }
    Chunk c;
    c.file_offset = expect;
    c.size = len;
    c.blob_offset = r.offset;
    c.inner_offset = r.inner_offset;
    uint64_t end = *std::upper_bound(bounds.begin(), bounds.end(), r.offset);  // the TOC start is always above
    if (k + 1 == f.raw.size() && f.end_offset > r.offset) end = std::min(end, f.end_offset);
    c.blob_size = end - r.offset;
    if (r.digest) {
      c.digest = *r.digest;
    } else if (f.raw.size() == 1 && f.file_digest) {
      c.digest = *f.file_digest;  // a one-piece file: its whole-file digest is the chunk's
    } else {
      return Error(Errc::kMalformed, fmt::format("chunk #{} has no chunkDigest: its bytes could not be verified", k));
    }
    out.push_back(std::move(c));
    expect += len;
  }
  if (expect != f.size) {
    return Error(Errc::kMalformed, fmt::format("chunks cover {} of the file's {} bytes", expect, f.size));
  }
  return out;
}

// Builds the Toc from its JSON. `toc_start` is where the TOC begins in the
// blob: every chunk must lie before it.
Result<Toc> BuildToc(const std::string& text, uint64_t toc_start) {
  Json doc = Json::parse(text);
  if (!doc.is_object()) return Error(Errc::kMalformed, "TOC is not a JSON object");
  auto ver = doc.find("version");
  if (ver == doc.end() || !ver->is_number_integer() || ver->get<int64_t>() != 1) {
    return Error(Errc::kUnsupported, "TOC version " + (ver == doc.end() ? std::string("missing") : ver->dump()) +
                                         " (only 1 is known)");
  }
  auto list = doc.find("entries");
  if (list == doc.end() || !(list->is_array() || list->is_null())) {
    return Error(Errc::kMalformed, "TOC has no 'entries' array");
  }
  Toc toc;
  std::vector<FileChunks> files;
  FileChunks* cur = nullptr;  // the file the next "chunk" entries continue
  std::optional<uint64_t> prefetch;
  bool no_prefetch = false;
  static const Json kNoEntries = Json::array();
  const Json& listed = *list;
  size_t i = 0;
  for (const Json& j : listed.is_array() ? listed : kNoEntries) {
    size_t idx = i++;
    if (!j.is_object()) return Bad(idx, "", "not a JSON object");
    auto name = Str(j, "name");
    auto type = Str(j, "type");
    if (!name.ok()) return Bad(idx, "", name.error().message());
    if (!type.ok()) return Bad(idx, *name, type.error().message());
    if (*type == "chunk") {
      // Later pieces of the file just before; older writers leave the name out.
      if (!cur) return Bad(idx, *name, "chunk entry not after a non-empty regular file");
      if (!name->empty()) {
        auto p = NormalizeTarPath(*name);
        if (!p.ok() || *p != cur->path) return Bad(idx, *name, "chunk entry does not continue " + Quote(cur->path));
      }
      auto raw = ReadRawChunk(j);
      if (!raw.ok()) return Bad(idx, *name, raw.error().message());
      cur->raw.push_back(std::move(*raw));
      continue;
    }
    cur = nullptr;
    auto etype = MapTocType(*type);
    if (!etype.ok()) return Bad(idx, *name, etype.error().message());
    auto path = NormalizeTarPath(*name);
    if (!path.ok()) return Bad(idx, *name, path.error().message());
    TarEntry e;
    e.path = std::move(*path);
    Status st = FillEntry(j, *etype, &e);
    if (!st.ok()) return Bad(idx, *name, st.error().message(), st.error().code());
    // Landmarks and the TOC's own entry describe the layer, not the tree.
    bool landmark = e.path == kPrefetchLandmark || e.path == kNoPrefetchLandmark;
    bool hidden = landmark || e.path == kTocTarName;
    if (landmark) {
      auto off = Num(j, "offset");
      if (!off.ok()) return Bad(idx, *name, off.error().message());
      if (*off >= toc_start) return Bad(idx, *name, fmt::format("landmark offset {} is not before the TOC", *off));
      if (e.path == kNoPrefetchLandmark) no_prefetch = true;
      else prefetch = *off;
    }
    if (e.type == EntryType::kFile) {
      FileChunks f;
      f.entry = hidden ? SIZE_MAX : toc.entries.size();
      f.path = e.path;
      f.size = e.size;
      auto end = Num(j, "endOffset");
      auto digest = Str(j, "digest");
      if (!end.ok()) return Bad(idx, *name, end.error().message());
      if (!digest.ok()) return Bad(idx, *name, digest.error().message());
      f.end_offset = *end;
      if (!digest->empty()) {
        auto d = Digest::Parse(*digest);
        if (!d.ok()) return Bad(idx, *name, "bad 'digest': " + d.error().message());
        f.file_digest = std::move(*d);
      }
      if (f.size > 0) {  // an empty file has no data, whatever offsets it carries
        auto raw = ReadRawChunk(j);
        if (!raw.ok()) return Bad(idx, *name, raw.error().message());
        f.raw.push_back(std::move(*raw));
      }
      files.push_back(std::move(f));
      if (files.back().size > 0) cur = &files.back();
    }
    // `cur` points into `files`; nothing is added to `files` until the next
    // non-chunk entry resets it.
    if (!hidden) toc.entries.push_back(std::move(e));
  }
  toc.prefetch_end = no_prefetch ? 0 : prefetch.value_or(0);

  std::vector<uint64_t> bounds{toc_start};
  for (const FileChunks& f : files) {
    for (const RawChunk& r : f.raw) {
      if (r.offset >= toc_start) {
        return Error(Errc::kMalformed, fmt::format("TOC: chunk of {} at blob offset {} is not before the TOC at {}",
                                                   Quote(f.path), r.offset, toc_start));
      }
      bounds.push_back(r.offset);
    }
    if (f.end_offset > toc_start) {
      return Error(Errc::kMalformed, fmt::format("TOC: {} ends at blob offset {}, past the TOC at {}",
                                                 Quote(f.path), f.end_offset, toc_start));
    }
  }
  std::sort(bounds.begin(), bounds.end());
  bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
  for (const FileChunks& f : files) {
    if (f.entry == SIZE_MAX) continue;
    auto chunks = BuildChunks(f, bounds);
    if (!chunks.ok()) return chunks.error().Wrap("TOC: " + Quote(f.path));
    toc.chunks.emplace(f.entry, std::move(*chunks));
  }
  return toc;
}

// eStargz: the TOC member is a gzip'd tar whose one entry is the JSON.
Result<std::string> EstargzTocJson(std::string_view data) {
  UCRFS_ASSIGN(std::string tar, DecodeAll(TocFormat::kEstargz, data, kMaxTocBytes, "eStargz TOC"));
  MemoryStream ms(tar);
  TarReader reader(ms);
  TarEntry e;
  auto more = reader.Next(&e);
  if (!more.ok()) return more.error().Wrap("eStargz TOC tar");
  if (!*more) return Error(Errc::kMalformed, "eStargz TOC tar is empty");
  if (e.path != kTocTarName || e.type != EntryType::kFile || e.extents.size() != 1) {
    return Error(Errc::kMalformed, fmt::format("eStargz TOC tar holds {}, not a regular file {}", Quote(e.path),
                                               kTocTarName));
  }
  return tar.substr(e.extents[0].stream_offset, e.extents[0].length);
}

// zstd:chunked: the manifest is one zstd stream. Its annotation
// (manifest-checksum) is the digest of the compressed bytes; ctr-remote also
// gives the layer a stargz toc.digest, the digest of the JSON — either is
// accepted, so a caller may pass whichever annotation the layer has.
Result<std::string> ZstdTocJson(const TocLocation& loc, std::string_view data, const Digest& expected) {
  bool compressed_ok = Digest::Of(expected.algorithm(), data) == expected;
  uint64_t limit = kMaxTocBytes;
  if (loc.uncompressed_size != 0) limit = std::min(limit, loc.uncompressed_size);
  auto json = DecodeAll(TocFormat::kZstdChunked, data, limit, "zstd:chunked TOC");
  if (!compressed_ok && (!json.ok() || Digest::Of(expected.algorithm(), *json) != expected)) {
    return Error(Errc::kDigestMismatch,
                 fmt::format("digest mismatch for zstd:chunked TOC {}: its compressed bytes hash to {}{}",
                             expected.str(), Digest::Of(expected.algorithm(), data).str(),
                             json.ok() ? ", its JSON to " + Digest::Of(expected.algorithm(), *json).str() : ""));
  }
  if (!json.ok()) return json.error();
  if (loc.uncompressed_size != 0 && json->size() != loc.uncompressed_size) {
    return Error(Errc::kMalformed, fmt::format("zstd:chunked TOC decodes to {} bytes, its footer says {}",
                                               json->size(), loc.uncompressed_size));
  }
  return json;
}

}  // namespace

std::optional<TocFormat> LazyFormatOf(const std::map<std::string, std::string>& annotations) {
  // zstd:chunked first: ctr-remote gives those layers the stargz toc.digest too.
  for (std::string_view key : kZstdChecksumKeys) {
    if (annotations.count(std::string(key))) return TocFormat::kZstdChunked;
  }
  if (annotations.count(std::string(kEstargzTocDigestKey))) return TocFormat::kEstargz;
  return std::nullopt;
}

Result<TocLocation> ParseFooter(TocFormat format, std::string_view tail, uint64_t blob_size) {
  if (tail.size() > blob_size) {
    return Error(Errc::kInvalidArgument,
                 fmt::format("footer: {} tail bytes of a {}-byte blob", tail.size(), blob_size));
  }
  return format == TocFormat::kEstargz ? ParseEstargzFooter(tail, blob_size) : ParseZstdFooter(tail, blob_size);
}

Result<Toc> ParseToc(const TocLocation& loc, std::string_view data, const Digest& expected) {
  if (data.size() != loc.size) {
    return Error(Errc::kInvalidArgument, fmt::format("TOC: got {} bytes, the location says {}", data.size(), loc.size));
  }
  try {
    std::string json;
    uint64_t toc_start = loc.offset;
    if (loc.format == TocFormat::kEstargz) {
      UCRFS_ASSIGN(json, EstargzTocJson(data));
      UCRFS_TRY(VerifyDigest(expected, Digest::Of(expected.algorithm(), json), "eStargz TOC (stargz.index.json)"));
    } else {
      UCRFS_ASSIGN(json, ZstdTocJson(loc, data, expected));
      // The manifest's skippable-frame header is where the layer data ends.
      if (toc_start >= kSkippableHeaderSize) toc_start -= kSkippableHeaderSize;
    }
    return BuildToc(json, toc_start);
  } catch (const nlohmann::json::exception& e) {
    return Error(Errc::kMalformed, fmt::format("TOC is not valid JSON: {}", e.what()));
  } catch (const std::bad_alloc&) {
    return Error(Errc::kTooBig, "TOC: out of memory");
  }
}

Result<std::string> DecodeChunk(TocFormat format, const Chunk& chunk, std::string_view data) {
  try {
    std::string out;
    out.reserve(std::min<uint64_t>(chunk.size, 16 << 20));  // sizes come from the layer: don't trust them for memory
    uint64_t skip = chunk.inner_offset;
    Sink sink = [&](std::string_view piece) {
      uint64_t n = std::min<uint64_t>(skip, piece.size());
      piece.remove_prefix(n);
      skip -= n;
      out.append(piece.substr(0, std::min<uint64_t>(piece.size(), chunk.size - out.size())));
      return out.size() < chunk.size;
    };
    auto what = [&] { return fmt::format("chunk at blob offset {}", chunk.blob_offset); };
    if (chunk.size > 0) {
      auto r = format == TocFormat::kEstargz ? InflateGzip(data, sink) : DecodeZstd(data, sink);
      // The TOC is verified, the chunk's bytes are not yet: compressed bytes
      // that do not even decode are bytes that do not match their digest.
      if (!r.ok()) {
        return Error(Errc::kDigestMismatch,
                     fmt::format("{} {}: {}", what(), chunk.digest.str(), r.error().message()));
      }
    }
    if (out.size() < chunk.size) {
      return Error(Errc::kMalformed, fmt::format("{} {}: {} compressed bytes decode to {} bytes after skipping {}, "
                                                 "the TOC says {}", what(), chunk.digest.str(), data.size(),
                                                 out.size(), chunk.inner_offset, chunk.size));
    }
    UCRFS_TRY(VerifyDigest(chunk.digest, Digest::Of(chunk.digest.algorithm(), out), what()));
    return out;
  } catch (const std::bad_alloc&) {
    return Error(Errc::kTooBig, fmt::format("chunk of {} bytes: out of memory", chunk.size));
  }
}

}  // namespace ucrfs::index
