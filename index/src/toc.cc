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

#include <isa-l/igzip_lib.h>
#include <zstd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <simdjson.h>

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

// What ISA-L's inflate says went wrong, in zlib's words where it has them.
std::string_view IsalWhy(int r) {
  switch (r) {
    case ISAL_INVALID_BLOCK: return "invalid block type or lengths";
    case ISAL_INVALID_SYMBOL: return "invalid code";
    case ISAL_INVALID_LOOKBACK: return "invalid distance too far back";
    case ISAL_INVALID_WRAPPER: return "incorrect header check";
    case ISAL_UNSUPPORTED_METHOD: return "unknown compression method";
    case ISAL_INCORRECT_CHECKSUM: return "incorrect data check";
    case ISAL_NEED_DICT: return "needs a dictionary";
    default: return "inflate failed";
  }
}

// Concatenated gzip members (RFC 1952), as eStargz chunks and the TOC are.
// Inflated by ISA-L, which checks each member's CRC32 and length as zlib
// does, in about 0.7 of zlib's time with the SHA-256 that follows
// (docs/benchmarks.md): every byte a lazy eStargz read waits for comes
// through here once the network has brought it.
Result<bool> InflateGzip(std::string_view in, const Sink& sink) {
  constexpr uint32_t kOut = 128 * 1024;
  auto st = std::make_unique<inflate_state>();
  auto buf = std::make_unique<uint8_t[]>(kOut);
  isal_inflate_init(st.get());
  st->crc_flag = ISAL_GZIP;
  size_t fed = 0;
  for (;;) {
    if (st->avail_in == 0 && fed < in.size()) {  // avail_in is 32-bit: feed big inputs in pieces
      size_t n = std::min<size_t>(in.size() - fed, UINT32_MAX);
      st->next_in = reinterpret_cast<uint8_t*>(const_cast<char*>(in.data() + fed));
      st->avail_in = static_cast<uint32_t>(n);
      fed += n;
    }
    const uint32_t avail_before = st->avail_in;
    st->next_out = buf.get();
    st->avail_out = kOut;
    int r = isal_inflate(st.get());
    if (r != ISAL_DECOMP_OK) return Error(Errc::kMalformed, fmt::format("corrupt gzip data: {}", IsalWhy(r)));
    size_t got = kOut - st->avail_out;
    if (got > 0 && !sink({reinterpret_cast<const char*>(buf.get()), got})) return true;
    const bool input_left = st->avail_in > 0 || fed < in.size();
    if (st->block_state == ISAL_BLOCK_FINISH) {
      if (!input_left) return true;
      // Another member follows: a gzip stream may be several. ISA-L has
      // handed back the input it read ahead past this member's trailer.
      uint8_t* next = st->next_in;
      uint32_t avail = st->avail_in;
      isal_inflate_reset(st.get());
      st->crc_flag = ISAL_GZIP;
      st->next_in = next;
      st->avail_in = avail;
      continue;
    }
    if (st->avail_out > 0) {  // room was left: everything given has been taken
      if (!input_left) return false;  // the input ends inside a member
      if (got == 0 && st->avail_in == avail_before) {
        return Error(Errc::kMalformed, "corrupt gzip data: inflate makes no progress");
      }
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
// `expect` is what the input says it decodes to, a hint only: the buffer
// is made that large (and simdjson's padding) up front, so a TOC of 11 MB is
// neither copied as it grows nor again to be parsed. A hint is believed up
// to 32 times the input.
Result<std::string> DecodeAll(TocFormat format, std::string_view in, uint64_t limit, std::string_view what,
                              uint64_t expect = 0) {
  std::string out;
  out.reserve(std::min({expect, limit, uint64_t{in.size()} * 32}) + simdjson::SIMDJSON_PADDING);
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
// TOC JSON. simdjson parses and validates it (parsing and reading an 11 MB
// TOC take less time than nlohmann's lexer alone), and its document is
// walked as SAX events, without a DOM of std::maps (a TOC of 30,000 entries
// would be 30,000 of them, whose building and freeing cost more than
// everything else here): TocSax fills one flat TocJsonEntry per element of
// the top-level "entries" array and hands it to TocAssembler, which checks
// it and turns it into a TarEntry at once. What is read is what a JSON
// object holds: a repeated key's last value wins, xattrs come in name order,
// and a value of the wrong type is quoted as nlohmann's dump() writes it.

// A failure inside one TOC entry, naming it.
Error Bad(size_t i, std::string_view name, std::string_view msg, Errc code = Errc::kMalformed) {
  return Error(code, fmt::format("TOC entry #{} {}: {}", i, Quote(name), msg));
}

// One known member of a TOC entry, as the JSON gave it.
struct JsonField {
  enum class Kind : uint8_t { kAbsent, kString, kUnsigned, kOther };  // kAbsent: missing or null
  Kind kind = Kind::kAbsent;
  bool numeric = false;  // read with Num: a value of another type keeps its dump() for the message
  uint64_t num = 0;      // kUnsigned
  std::string str;       // kString (its buffer is reused from entry to entry)
  std::string dump;      // kOther, numeric fields only: the value as nlohmann's dump() writes it
};

// The members of one TOC entry that are read; the others are skipped.
struct TocJsonEntry {
  enum class Xattrs : uint8_t { kAbsent, kObject, kOther };  // kAbsent: missing or null

  TocJsonEntry();
  void Clear();
  // The field for a member name; nullptr for "xattrs" and unknown members.
  JsonField* Find(std::string_view k);

  JsonField name, type, size, mode, uid, gid, modtime, link_name, dev_major, dev_minor, offset, end_offset,
      chunk_offset, chunk_size, inner_offset, chunk_digest, digest;
  Xattrs xattrs_kind = Xattrs::kAbsent;
  // In member order, repeats included; a value that is not a string is nullopt.
  std::vector<std::pair<std::string, std::optional<std::string>>> xattrs;

 private:
  // Every member read, by its name in the TOC; numeric ones keep dump().
  struct Member {
    std::string_view key;
    JsonField TocJsonEntry::*field;
    bool numeric;
  };
  static const Member kMembers[];
};

const TocJsonEntry::Member TocJsonEntry::kMembers[] = {
    {"name", &TocJsonEntry::name, false},
    {"type", &TocJsonEntry::type, false},
    {"size", &TocJsonEntry::size, true},
    {"mode", &TocJsonEntry::mode, true},
    {"uid", &TocJsonEntry::uid, true},
    {"gid", &TocJsonEntry::gid, true},
    {"modtime", &TocJsonEntry::modtime, false},
    {"linkName", &TocJsonEntry::link_name, false},
    {"devMajor", &TocJsonEntry::dev_major, true},
    {"devMinor", &TocJsonEntry::dev_minor, true},
    {"offset", &TocJsonEntry::offset, true},
    {"endOffset", &TocJsonEntry::end_offset, true},
    {"chunkOffset", &TocJsonEntry::chunk_offset, true},
    {"chunkSize", &TocJsonEntry::chunk_size, true},
    {"innerOffset", &TocJsonEntry::inner_offset, true},
    {"chunkDigest", &TocJsonEntry::chunk_digest, false},
    {"digest", &TocJsonEntry::digest, false},
};

TocJsonEntry::TocJsonEntry() {
  for (const Member& m : kMembers) (this->*m.field).numeric = m.numeric;
}

void TocJsonEntry::Clear() {
  for (const Member& m : kMembers) (this->*m.field).kind = JsonField::Kind::kAbsent;
  xattrs_kind = Xattrs::kAbsent;
  xattrs.clear();
}

JsonField* TocJsonEntry::Find(std::string_view k) {
  for (const Member& m : kMembers) {
    if (m.key == k) return &(this->*m.field);
  }
  return nullptr;
}

// A string field; absent or null means "". The view is into `f`.
Result<std::string_view> Str(const JsonField& f, const char* key) {
  if (f.kind == JsonField::Kind::kAbsent) return std::string_view();
  if (f.kind != JsonField::Kind::kString) return Error(Errc::kMalformed, fmt::format("'{}' is not a string", key));
  return std::string_view(f.str);
}

// A non-negative integer field; absent (Go's omitempty) means 0.
Result<uint64_t> Num(const JsonField& f, const char* key, uint64_t max = kMaxSize) {
  if (f.kind == JsonField::Kind::kAbsent) return uint64_t{0};
  if (f.kind != JsonField::Kind::kUnsigned || f.num > max) {
    std::string dump = f.kind == JsonField::Kind::kUnsigned ? Json(f.num).dump()
                       : f.kind == JsonField::Kind::kString ? Json(f.str).dump()
                                                             : f.dump;
    return Error(Errc::kMalformed, fmt::format("'{}' is not an integer in [0, {}]: {}", key, max, dump));
  }
  return f.num;
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

// A regular file (or a dropped landmark) and where its pieces are in the
// list of every file's pieces, in TOC order.
struct FileChunks {
  size_t entry = SIZE_MAX;  // index in Toc::entries; SIZE_MAX for entries not in the tree
  std::string hidden_path;  // the path of an entry not in the tree (the others' is in Toc::entries)
  uint64_t size = 0;
  uint64_t end_offset = 0;  // zstd:chunked: end of the file's last frame (0 = not given)
  std::optional<Digest> file_digest;
  size_t raw_begin = 0, raw_end = 0;
};

Result<RawChunk> ReadRawChunk(const TocJsonEntry& e) {
  RawChunk c;
  UCRFS_ASSIGN(c.offset, Num(e.offset, "offset"));
  UCRFS_ASSIGN(c.chunk_offset, Num(e.chunk_offset, "chunkOffset"));
  UCRFS_ASSIGN(c.chunk_size, Num(e.chunk_size, "chunkSize"));
  UCRFS_ASSIGN(c.inner_offset, Num(e.inner_offset, "innerOffset"));
  UCRFS_ASSIGN(std::string_view d, Str(e.chunk_digest, "chunkDigest"));
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
Status FillEntry(const TocJsonEntry& j, EntryType type, TarEntry* e) {
  e->type = type;
  if (e->path.empty() && type != EntryType::kDir) return Error(Errc::kMalformed, "empty path for a non-directory");
  UCRFS_ASSIGN(uint64_t mode, Num(j.mode, "mode", UINT32_MAX));
  e->mode = static_cast<uint32_t>(mode) & 07777;  // Go's tar.Header.Mode may carry c_ISDIR etc.; the type is `type`
  UCRFS_ASSIGN(e->uid, Num(j.uid, "uid", UINT32_MAX));
  UCRFS_ASSIGN(e->gid, Num(j.gid, "gid", UINT32_MAX));
  UCRFS_ASSIGN(std::string_view mtime, Str(j.modtime, "modtime"));
  if (!mtime.empty()) {
    UCRFS_TRY(ParseModTime(mtime, e));
  }
  if (type == EntryType::kFile) {
    UCRFS_ASSIGN(e->size, Num(j.size, "size"));
  }
  UCRFS_ASSIGN(std::string_view link, Str(j.link_name, "linkName"));
  if (type == EntryType::kHardlink) {
    auto target = NormalizeTarPath(link);
    if (!target.ok() || target->empty()) {
      return Error(Errc::kMalformed, "bad hardlink target " + Quote(link) +
                                         (target.ok() ? ": the root" : ": " + target.error().message()));
    }
    e->link_target = std::move(*target);
  } else if (type == EntryType::kSymlink) {
    if (link.empty() || link.find('\0') != std::string_view::npos) {
      return Error(Errc::kMalformed, "empty symlink target or NUL byte in it");
    }
    e->link_target = std::string(link);
  }
  if (type == EntryType::kCharDev || type == EntryType::kBlockDev) {
    UCRFS_ASSIGN(uint64_t major, Num(j.dev_major, "devMajor", UINT32_MAX));
    UCRFS_ASSIGN(uint64_t minor, Num(j.dev_minor, "devMinor", UINT32_MAX));
    e->dev_major = static_cast<uint32_t>(major);
    e->dev_minor = static_cast<uint32_t>(minor);
  }
  if (j.xattrs_kind == TocJsonEntry::Xattrs::kOther) return Error(Errc::kMalformed, "'xattrs' is not an object");
  if (!j.xattrs.empty()) {
    // As a JSON object held them: in name order, a repeated name's last value.
    std::vector<size_t> order(j.xattrs.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return j.xattrs[a].first < j.xattrs[b].first; });
    for (size_t k = 0; k < order.size(); ++k) {
      if (k + 1 < order.size() && j.xattrs[order[k + 1]].first == j.xattrs[order[k]].first) continue;
      const auto& [name, value] = j.xattrs[order[k]];
      // Values are base64 in both formats (Go's []byte, and c/storage).
      auto raw = value ? Base64Decode(*value) : std::nullopt;
      if (name.empty() || !raw) return Error(Errc::kMalformed, "bad xattr " + Quote(name) + ": not base64");
      e->xattrs.emplace_back(name, std::move(*raw));
    }
  }
  return Ok();
}

// Turns a file's pieces into Chunks covering [0, size) exactly. `bounds`
// holds every piece's start in the blob and the TOC's start, sorted: a
// piece's compressed bytes run to the next distinct one. The digests are
// moved out of `f`.
Result<std::vector<Chunk>> BuildChunks(FileChunks& f, std::span<RawChunk> raw, const std::vector<uint64_t>& bounds) {
  std::vector<Chunk> out;
  out.reserve(raw.size());
  uint64_t expect = 0;
  for (size_t k = 0; k < raw.size(); ++k) {
    RawChunk& r = raw[k];
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
    uint64_t end = *std::upper_bound(bounds.begin(), bounds.end(), r.offset);  // the TOC start is always above
    if (k + 1 == raw.size() && f.end_offset > r.offset) end = std::min(end, f.end_offset);
    // A one-piece file without a chunkDigest: its whole-file digest is the chunk's.
    std::optional<Digest>& digest = r.digest || raw.size() != 1 ? r.digest : f.file_digest;
    if (!digest) {
      return Error(Errc::kMalformed, fmt::format("chunk #{} has no chunkDigest: its bytes could not be verified", k));
    }
    // Every member given: `Chunk c;` would hash "" for the default digest.
    out.push_back(Chunk{expect, len, r.offset, end - r.offset, r.inner_offset, std::move(*digest)});
    expect += len;
  }
  if (expect != f.size) {
    return Error(Errc::kMalformed, fmt::format("chunks cover {} of the file's {} bytes", expect, f.size));
  }
  return out;
}

// Builds a Toc from the TOC's entries, one at a time as the parser completes
// them. `toc_start` is where the TOC begins in the blob: every chunk must lie
// before it. The first failing entry's error is kept and later entries are
// not looked at (the parser still reads them: invalid JSON anywhere is
// reported before it).
class TocAssembler {
 public:
  explicit TocAssembler(uint64_t toc_start) : toc_start_(toc_start) {}

  // Another "entries" member: as with a repeated key in a JSON object, the
  // last one is the TOC's.
  void Restart() { *this = TocAssembler(toc_start_); }

  void AddNonObject() {
    size_t idx = next_++;
    if (!error_) error_ = Bad(idx, "", "not a JSON object");
  }

  void Add(const TocJsonEntry& j) {
    size_t idx = next_++;
    if (error_) return;
    Status st = AddEntry(idx, j);
    if (!st.ok()) error_ = st.error();
  }

  Result<Toc> Finish() &&;

 private:
  Status AddEntry(size_t idx, const TocJsonEntry& j);
  const std::string& PathOf(const FileChunks& f) const {
    return f.entry == SIZE_MAX ? f.hidden_path : toc_.entries[f.entry].path;
  }

  uint64_t toc_start_;
  Toc toc_;
  std::vector<FileChunks> files_;
  std::vector<RawChunk> raw_;  // every file's pieces, file after file
  FileChunks* cur_ = nullptr;  // the file the next "chunk" entries continue: the last in files_
  std::optional<uint64_t> prefetch_;
  bool no_prefetch_ = false;
  size_t next_ = 0;  // index of the next entry
  std::optional<Error> error_;
};

Status TocAssembler::AddEntry(size_t idx, const TocJsonEntry& j) {
  auto name = Str(j.name, "name");
  auto type = Str(j.type, "type");
  if (!name.ok()) return Bad(idx, "", name.error().message());
  if (!type.ok()) return Bad(idx, *name, type.error().message());
  if (*type == "chunk") {
    // Later pieces of the file just before; older writers leave the name out.
    if (!cur_) return Bad(idx, *name, "chunk entry not after a non-empty regular file");
    if (!name->empty()) {
      auto p = NormalizeTarPath(*name);
      if (!p.ok() || *p != PathOf(*cur_)) {
        return Bad(idx, *name, "chunk entry does not continue " + Quote(PathOf(*cur_)));
      }
    }
    auto raw = ReadRawChunk(j);
    if (!raw.ok()) return Bad(idx, *name, raw.error().message());
    raw_.push_back(std::move(*raw));
    cur_->raw_end = raw_.size();
    return Ok();
  }
  cur_ = nullptr;
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
    auto off = Num(j.offset, "offset");
    if (!off.ok()) return Bad(idx, *name, off.error().message());
    if (*off >= toc_start_) return Bad(idx, *name, fmt::format("landmark offset {} is not before the TOC", *off));
    if (e.path == kNoPrefetchLandmark) no_prefetch_ = true;
    else prefetch_ = *off;
  }
  if (e.type == EntryType::kFile) {
    FileChunks f;
    f.entry = hidden ? SIZE_MAX : toc_.entries.size();
    if (hidden) f.hidden_path = e.path;
    f.size = e.size;
    auto end = Num(j.end_offset, "endOffset");
    auto digest = Str(j.digest, "digest");
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
      f.raw_begin = raw_.size();
      raw_.push_back(std::move(*raw));
      f.raw_end = raw_.size();
    }
    files_.push_back(std::move(f));
    if (files_.back().size > 0) cur_ = &files_.back();
  }
  // `cur_` points into `files_`; nothing is added to `files_` until the next
  // non-chunk entry resets it.
  if (!hidden) toc_.entries.push_back(std::move(e));
  return Ok();
}

Result<Toc> TocAssembler::Finish() && {
  if (error_) return *error_;
  toc_.prefetch_end = no_prefetch_ ? 0 : prefetch_.value_or(0);

  std::vector<uint64_t> bounds;
  bounds.reserve(raw_.size() + 1);
  bounds.push_back(toc_start_);
  for (const FileChunks& f : files_) {
    for (size_t k = f.raw_begin; k < f.raw_end; ++k) {
      if (raw_[k].offset >= toc_start_) {
        return Error(Errc::kMalformed, fmt::format("TOC: chunk of {} at blob offset {} is not before the TOC at {}",
                                                   Quote(PathOf(f)), raw_[k].offset, toc_start_));
      }
      bounds.push_back(raw_[k].offset);
    }
    if (f.end_offset > toc_start_) {
      return Error(Errc::kMalformed, fmt::format("TOC: {} ends at blob offset {}, past the TOC at {}",
                                                 Quote(PathOf(f)), f.end_offset, toc_start_));
    }
  }
  std::sort(bounds.begin(), bounds.end());
  bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
  for (FileChunks& f : files_) {
    if (f.entry == SIZE_MAX) continue;
    auto chunks = BuildChunks(f, std::span(raw_).subspan(f.raw_begin, f.raw_end - f.raw_begin), bounds);
    if (!chunks.ok()) return chunks.error().Wrap("TOC: " + Quote(PathOf(f)));
    toc_.chunks.emplace_hint(toc_.chunks.end(), f.entry, std::move(*chunks));
  }
  return std::move(toc_);
}

// A JSON value read by the SAX parser into a DOM: the few values a message
// quotes ("version", a number field of the wrong type), as dump() writes them.
class JsonCapture {
 public:
  void Begin() {
    value_ = Json();
    open_.clear();
  }
  void Key(std::string& k) { key_ = std::move(k); }
  void Scalar(Json v) { *Slot() = std::move(v); }
  void Start(bool object) {
    Json* slot = Slot();
    *slot = object ? Json::object() : Json::array();
    open_.push_back(slot);
  }
  // Closes the innermost container; true when that completes the value.
  bool End() {
    open_.pop_back();
    return open_.empty();
  }
  Json& value() { return value_; }

 private:
  // Where the next value goes. An open container's address is stable: only
  // its own members are added until it is closed.
  Json* Slot() {
    if (open_.empty()) return &value_;
    Json* top = open_.back();
    if (top->is_array()) return &top->emplace_back();
    return &(*top)[key_];  // a repeated key: the last value wins
  }

  Json value_;
  std::vector<Json*> open_;
  std::string key_;
};

// The SAX handler: follows the document's shape, hands each element of the
// top-level "entries" to the assembler, keeps "version", and skips every
// other member whatever it holds.
class TocSax final : public nlohmann::json_sax<Json> {
 public:
  enum class EntriesKind : uint8_t { kAbsent, kArray, kNull, kOther };

  explicit TocSax(TocAssembler* out) : out_(out) {}

  bool null() override { return OnScalar({Value::kNull}); }
  bool boolean(bool v) override { return OnScalar({Value::kBool, v}); }
  bool number_integer(number_integer_t v) override { return OnScalar({Value::kInt, false, v}); }
  bool number_unsigned(number_unsigned_t v) override { return OnScalar({Value::kUnsigned, false, 0, v}); }
  bool number_float(number_float_t v, const string_t&) override { return OnScalar({Value::kFloat, false, 0, 0, v}); }
  bool string(string_t& v) override { return OnScalar({Value::kString, false, 0, 0, 0, &v}); }
  bool binary(binary_t&) override { return OnScalar({Value::kOther}); }  // not in JSON text
  bool start_object(std::size_t) override { return OnStart(true); }
  bool start_array(std::size_t) override { return OnStart(false); }
  bool end_object() override { return OnEnd(); }
  bool end_array() override { return OnEnd(); }
  bool key(string_t& k) override;
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) override {
    error_ = ex.what();
    return false;
  }

  const std::string& error() const { return error_; }
  bool root_is_object() const { return root_is_object_; }
  const std::optional<Json>& version() const { return version_; }
  EntriesKind entries() const { return entries_; }

 private:
  // Where the parser is: the next value or key belongs to...
  enum class At : uint8_t {
    kRoot,     // the document
    kTop,      // the top-level object
    kEntries,  // the "entries" array
    kEntry,    // an element of it
    kXattrs,   // that element's "xattrs"
    kDone,     // nothing: the document is complete
  };
  enum class TopKey : uint8_t { kOther, kVersion, kEntries };

  struct Value {
    enum Kind : uint8_t { kNull, kBool, kInt, kUnsigned, kFloat, kString, kOther } kind;
    bool b = false;
    int64_t i = 0;
    uint64_t u = 0;
    double f = 0;
    std::string* s = nullptr;

    Json ToJson() const {
      switch (kind) {
        case kBool: return Json(b);
        case kInt: return Json(i);
        case kUnsigned: return Json(u);
        case kFloat: return Json(f);
        case kString: return Json(*s);
        default: return Json();
      }
    }
  };

  bool OnScalar(const Value& v);
  bool OnStart(bool object);
  bool OnEnd();
  void SetField(const Value& v);
  // Reads the value that starts here into capture_, for `field` (nullptr: for "version").
  void Capture(JsonField* field, bool object) {
    capture_.Begin();
    capture_.Start(object);
    capture_field_ = field;
    capturing_ = true;
  }
  void EndCapture() {
    capturing_ = false;
    if (capture_field_) capture_field_->dump = capture_.value().dump();
    else version_ = std::move(capture_.value());
  }

  TocAssembler* out_;
  At at_ = At::kRoot;
  size_t skip_ = 0;  // > 0: inside a value being skipped, this deep
  bool capturing_ = false;
  JsonCapture capture_;
  JsonField* capture_field_ = nullptr;
  TopKey top_key_ = TopKey::kOther;
  JsonField* field_ = nullptr;  // kEntry: the member being read; nullptr for xattrs and unknown members
  bool field_is_xattrs_ = false;
  TocJsonEntry entry_;

  std::string error_;
  bool root_is_object_ = false;
  std::optional<Json> version_;
  EntriesKind entries_ = EntriesKind::kAbsent;
};

bool TocSax::key(string_t& k) {
  if (skip_ > 0) return true;
  if (capturing_) {
    capture_.Key(k);
    return true;
  }
  switch (at_) {
    case At::kTop:
      top_key_ = k == "version" ? TopKey::kVersion : k == "entries" ? TopKey::kEntries : TopKey::kOther;
      break;
    case At::kEntry:
      field_ = entry_.Find(k);
      field_is_xattrs_ = !field_ && k == "xattrs";
      break;
    case At::kXattrs:
      entry_.xattrs.emplace_back(k, std::nullopt);
      break;
    default:
      break;
  }
  return true;
}

void TocSax::SetField(const Value& v) {
  if (field_is_xattrs_) {
    entry_.xattrs.clear();
    entry_.xattrs_kind = v.kind == Value::kNull ? TocJsonEntry::Xattrs::kAbsent : TocJsonEntry::Xattrs::kOther;
    return;
  }
  if (!field_) return;
  JsonField& f = *field_;
  switch (v.kind) {
    case Value::kNull:
      f.kind = JsonField::Kind::kAbsent;
      break;
    case Value::kString:
      f.kind = JsonField::Kind::kString;
      f.str.assign(*v.s);  // into the field's own buffer, reused by the next entry
      break;
    case Value::kUnsigned:
      f.kind = JsonField::Kind::kUnsigned;
      f.num = v.u;
      break;
    default:
      f.kind = JsonField::Kind::kOther;
      if (f.numeric) f.dump = v.ToJson().dump();
      break;
  }
}

bool TocSax::OnScalar(const Value& v) {
  if (skip_ > 0) return true;
  if (capturing_) {
    capture_.Scalar(v.ToJson());
    return true;
  }
  switch (at_) {
    case At::kRoot:
      at_ = At::kDone;  // not an object
      break;
    case At::kTop:
      if (top_key_ == TopKey::kVersion) {
        version_ = v.ToJson();
      } else if (top_key_ == TopKey::kEntries) {
        out_->Restart();
        entries_ = v.kind == Value::kNull ? EntriesKind::kNull : EntriesKind::kOther;
      }
      break;
    case At::kEntries:
      out_->AddNonObject();
      break;
    case At::kEntry:
      SetField(v);
      break;
    case At::kXattrs:
      if (v.kind == Value::kString) entry_.xattrs.back().second = *v.s;
      break;
    case At::kDone:
      break;
  }
  return true;
}

bool TocSax::OnStart(bool object) {
  if (skip_ > 0) {
    ++skip_;
    return true;
  }
  if (capturing_) {
    capture_.Start(object);
    return true;
  }
  switch (at_) {
    case At::kRoot:
      if (object) {
        root_is_object_ = true;
        at_ = At::kTop;
      } else {
        skip_ = 1;
        at_ = At::kDone;
      }
      break;
    case At::kTop:
      if (top_key_ == TopKey::kVersion) {
        Capture(nullptr, object);
      } else if (top_key_ == TopKey::kEntries) {
        out_->Restart();
        if (object) {
          entries_ = EntriesKind::kOther;
          skip_ = 1;
        } else {
          entries_ = EntriesKind::kArray;
          at_ = At::kEntries;
        }
      } else {
        skip_ = 1;
      }
      break;
    case At::kEntries:
      if (object) {
        entry_.Clear();
        at_ = At::kEntry;
      } else {
        out_->AddNonObject();
        skip_ = 1;
      }
      break;
    case At::kEntry:
      if (field_is_xattrs_) {
        entry_.xattrs.clear();
        if (object) {
          entry_.xattrs_kind = TocJsonEntry::Xattrs::kObject;
          at_ = At::kXattrs;
        } else {
          entry_.xattrs_kind = TocJsonEntry::Xattrs::kOther;
          skip_ = 1;
        }
      } else if (field_) {
        field_->kind = JsonField::Kind::kOther;
        if (field_->numeric) Capture(field_, object);
        else skip_ = 1;
      } else {
        skip_ = 1;
      }
      break;
    case At::kXattrs:  // a value that is not a string: the xattr stays nullopt
    case At::kDone:
      skip_ = 1;
      break;
  }
  return true;
}

bool TocSax::OnEnd() {
  if (skip_ > 0) {
    --skip_;
    return true;
  }
  if (capturing_) {
    if (capture_.End()) EndCapture();
    return true;
  }
  switch (at_) {
    case At::kTop:
      at_ = At::kDone;
      break;
    case At::kEntries:
      at_ = At::kTop;
      break;
    case At::kEntry:
      out_->Add(entry_);
      at_ = At::kEntries;
      break;
    case At::kXattrs:
      at_ = At::kEntry;
      break;
    default:
      break;
  }
  return true;
}

// Hands a parsed value to the SAX handler, in document order, as nlohmann's
// parser would: a non-negative integer as unsigned, a negative one as
// signed (-0 is 0). `buf` carries each key and string. simdjson refuses
// nesting past 1,024 levels, which bounds the recursion.
void Walk(simdjson::dom::element e, TocSax& sax, std::string& buf) {
  using Type = simdjson::dom::element_type;
  switch (e.type()) {
    case Type::OBJECT: {
      simdjson::dom::object object(e);
      sax.start_object(0);
      for (simdjson::dom::key_value_pair field : object) {
        buf.assign(field.key);
        sax.key(buf);
        Walk(field.value, sax, buf);
      }
      sax.end_object();
      return;
    }
    case Type::ARRAY: {
      simdjson::dom::array array(e);
      sax.start_array(0);
      for (simdjson::dom::element x : array) Walk(x, sax, buf);
      sax.end_array();
      return;
    }
    case Type::STRING:
      buf.assign(std::string_view(e));
      sax.string(buf);
      return;
    case Type::INT64: {
      auto v = int64_t(e);
      if (v >= 0) sax.number_unsigned(static_cast<uint64_t>(v));
      else sax.number_integer(v);
      return;
    }
    case Type::UINT64:
      sax.number_unsigned(uint64_t(e));
      return;
    case Type::DOUBLE:
      sax.number_float(double(e), buf);
      return;
    case Type::BOOL:
      sax.boolean(bool(e));
      return;
    case Type::NULL_VALUE:
      sax.null();
      return;
  }
}

// Reads the JSON with simdjson into `sax`; false, having sent nothing, when
// simdjson refuses it. `text` gets simdjson's padding.
bool ReadFast(std::string& text, TocSax& sax) {
  const size_t size = text.size();
  text.reserve(size + simdjson::SIMDJSON_PADDING);  // read past the end, never used
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(text.data(), size, /*realloc_if_needed=*/false).get(root) != simdjson::SUCCESS) return false;
  std::string buf;
  Walk(root, sax, buf);
  return true;
}

// Builds the Toc from its JSON. `toc_start` is where the TOC begins in the
// blob: every chunk must lie before it. simdjson reads what TOC writers
// write; what it refuses (invalid JSON, but also integers past 64 bits or
// nesting past 1,024 levels, which are JSON) nlohmann's parser reads
// instead, with the same outcome as always and its message on failure.
Result<Toc> BuildToc(std::string& text, uint64_t toc_start) {
  TocAssembler assembler(toc_start);
  TocSax sax(&assembler);
  if (!ReadFast(text, sax) && !Json::sax_parse(text, &sax)) {
    return Error(Errc::kMalformed, fmt::format("TOC is not valid JSON: {}", sax.error()));
  }
  if (!sax.root_is_object()) return Error(Errc::kMalformed, "TOC is not a JSON object");
  const std::optional<Json>& ver = sax.version();
  if (!ver || !ver->is_number_integer() || ver->get<int64_t>() != 1) {
    return Error(Errc::kUnsupported, "TOC version " + (!ver ? std::string("missing") : ver->dump()) +
                                         " (only 1 is known)");
  }
  if (sax.entries() != TocSax::EntriesKind::kArray && sax.entries() != TocSax::EntriesKind::kNull) {
    return Error(Errc::kMalformed, "TOC has no 'entries' array");
  }
  return std::move(assembler).Finish();
}

// eStargz: the TOC member is a gzip'd tar whose one entry is the JSON.
Result<std::string> EstargzTocJson(std::string_view data) {
  // A gzip member ends with its decoded size (ISIZE, modulo 2^32).
  uint64_t isize = data.size() >= 4 ? Le(data, data.size() - 4, 4) : 0;
  UCRFS_ASSIGN(std::string tar, DecodeAll(TocFormat::kEstargz, data, kMaxTocBytes, "eStargz TOC", isize));
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
  const uint64_t at = e.extents[0].stream_offset, len = e.extents[0].length;
  if (at > tar.size() || len > tar.size() - at) {
    return Error(Errc::kMalformed, fmt::format("eStargz TOC tar is cut short inside {}", kTocTarName));
  }
  // The JSON moves to the front of the buffer it was decoded into, which
  // keeps its room for simdjson's padding.
  tar.erase(0, at);
  tar.resize(len);
  return tar;
}

// zstd:chunked: the manifest is one zstd stream. Its annotation
// (manifest-checksum) is the digest of the compressed bytes; ctr-remote also
// gives the layer a stargz toc.digest, the digest of the JSON — either is
// accepted, so a caller may pass whichever annotation the layer has.
Result<std::string> ZstdTocJson(const TocLocation& loc, std::string_view data, const Digest& expected) {
  bool compressed_ok = Digest::Of(expected.algorithm(), data) == expected;
  uint64_t limit = kMaxTocBytes;
  if (loc.uncompressed_size != 0) limit = std::min(limit, loc.uncompressed_size);
  uint64_t expect = loc.uncompressed_size;
  if (expect == 0) {
    unsigned long long frame = ZSTD_getFrameContentSize(data.data(), data.size());
    if (frame != ZSTD_CONTENTSIZE_UNKNOWN && frame != ZSTD_CONTENTSIZE_ERROR) expect = frame;
  }
  auto json = DecodeAll(TocFormat::kZstdChunked, data, limit, "zstd:chunked TOC", expect);
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
