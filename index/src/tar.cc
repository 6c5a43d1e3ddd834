#include "ucrfs/index/tar.h"


#include <algorithm>
#include <cstring>
#include <optional>
#include <string_view>

#include <fmt/format.h>

#include "ucrfs/common/base64.h"
#include "tar_path.h"

namespace ucrfs::index {
namespace {

constexpr size_t kBlock = 512;
constexpr uint64_t kMaxSize = uint64_t{1} << 56;
// PAX and GNU long-name data is held in memory: bound it so a hostile header
// cannot make us allocate gigabytes. 16 MiB leaves room for large xattrs.
constexpr uint64_t kMaxMetaSize = 16 << 20;
constexpr size_t kMaxSparseRuns = 1 << 20;

using Records = std::vector<std::pair<std::string, std::string>>;

// ustar header layout (offset, length).
struct Field {
  size_t off, len;
};
constexpr Field kName{0, 100}, kMode{100, 8}, kUid{108, 8}, kGid{116, 8}, kSize{124, 12}, kMtime{136, 12},
    kChksum{148, 8}, kLinkname{157, 100}, kDevMajor{329, 8}, kDevMinor{337, 8}, kPrefix{345, 155};
constexpr size_t kTypeflag = 156, kMagic = 257;
// Old GNU sparse header: 4 (offset, numbytes) pairs, an "extended" flag and
// the real size; extension blocks hold 21 pairs and their own flag.
constexpr size_t kGnuSparse = 386, kGnuIsExtended = 482, kGnuSparsePairs = 4, kExtPairs = 21, kExtIsExtended = 504;
constexpr Field kGnuRealSize{483, 12};

std::string_view Raw(const char* blk, Field f) { return {blk + f.off, f.len}; }

// A NUL-terminated field that may fill its whole width without a NUL.
std::string CString(const char* blk, Field f) { return std::string(blk + f.off, strnlen(blk + f.off, f.len)); }

uint64_t Padding(uint64_t n) { return (kBlock - n % kBlock) % kBlock; }

std::string Quote(std::string_view s) { return QuotePath(s); }

Error Bad(uint64_t hdr_off, std::string_view path, std::string_view msg, Errc code = Errc::kMalformed) {
  if (path.empty()) return Error(code, fmt::format("tar header at offset {}: {}", hdr_off, msg));
  return Error(code, fmt::format("tar entry {} at offset {}: {}", Quote(path), hdr_off, msg));
}

// Numeric header fields: octal text (leading spaces, trailing NULs/spaces),
// or base-256 when the high bit of the first byte is set (GNU and star use it
// for values the octal width cannot hold: uid/gid >= 2^21, sizes >= 8 GiB,
// mtimes before 1970).
std::optional<int64_t> ParseNumeric(std::string_view f) {
  if (!f.empty() && (static_cast<unsigned char>(f[0]) & 0x80)) {
    unsigned char inv = (static_cast<unsigned char>(f[0]) & 0x40) ? 0xff : 0;  // negative: two's complement
    uint64_t x = 0;
    for (size_t i = 0; i < f.size(); ++i) {
      auto c = static_cast<unsigned char>(static_cast<unsigned char>(f[i]) ^ inv);
      if (i == 0) c &= 0x7f;
      if (x >> 56) return std::nullopt;
      x = (x << 8) | c;
    }
    if (x >> 63) return std::nullopt;
    return inv ? ~static_cast<int64_t>(x) : static_cast<int64_t>(x);
  }
  size_t i = 0;
  while (i < f.size() && f[i] == ' ') ++i;
  int64_t v = 0;
  for (; i < f.size() && f[i] >= '0' && f[i] <= '7'; ++i) v = v * 8 + (f[i] - '0');  // <= 12 digits: no overflow
  for (; i < f.size(); ++i) {
    if (f[i] != ' ' && f[i] != '\0') return std::nullopt;
  }
  return v;
}

std::optional<uint64_t> ParseDecimal(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;  // 19 digits always fit in 64 bits
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

// PAX times: "[-]seconds[.fraction]"; the fraction is truncated to ns.
std::optional<std::pair<int64_t, uint32_t>> ParsePaxTime(std::string_view s) {
  bool neg = !s.empty() && s[0] == '-';
  if (neg) s.remove_prefix(1);
  std::string_view frac;
  if (auto dot = s.find('.'); dot != std::string_view::npos) {
    frac = s.substr(dot + 1);
    s = s.substr(0, dot);
  }
  auto sec = ParseDecimal(s);
  if (!sec || *sec > static_cast<uint64_t>(INT64_MAX) - 1) return std::nullopt;
  uint32_t ns = 0;
  for (size_t i = 0; i < frac.size(); ++i) {
    if (frac[i] < '0' || frac[i] > '9') return std::nullopt;
    if (i < 9) ns = ns * 10 + static_cast<uint32_t>(frac[i] - '0');
  }
  for (size_t i = frac.size(); i < 9; ++i) ns *= 10;
  auto v = static_cast<int64_t>(*sec);
  if (!neg) return std::make_pair(v, ns);
  if (ns == 0) return std::make_pair(-v, ns);
  return std::make_pair(-v - 1, 1000000000u - ns);  // -1.25 s is -2 s + 0.75 s
}

// "%d %s=%s\n" records. Values are raw bytes (xattr values may hold NULs).
Result<Records> ParsePaxRecords(std::string_view data) {
  Records out;
  while (!data.empty()) {
    if (data.find_first_not_of('\0') == std::string_view::npos) break;  // NUL padding some writers add
    size_t sp = data.find(' ');
    auto len = ParseDecimal(sp == std::string_view::npos ? std::string_view() : data.substr(0, sp));
    if (!len || *len < sp + 3 || *len > data.size()) return Error(Errc::kMalformed, "bad PAX record length");
    std::string_view rec = data.substr(sp + 1, *len - sp - 1);
    if (rec.back() != '\n') return Error(Errc::kMalformed, "PAX record does not end with a newline");
    rec.remove_suffix(1);
    size_t eq = rec.find('=');
    if (eq == std::string_view::npos || eq == 0) return Error(Errc::kMalformed, "PAX record without a key");
    out.emplace_back(std::string(rec.substr(0, eq)), std::string(rec.substr(eq + 1)));
    data.remove_prefix(*len);
  }
  return out;
}

std::optional<std::string> UrlDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    unsigned v = 0;
    for (size_t k = 1; k <= 2; ++k) {
      char c = s[i + k];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<unsigned>(c - 'A' + 10);
      else return std::nullopt;
    }
    out += static_cast<char>(v);
    i += 2;
  }
  return out;
}

// Relative, without "." components, duplicate or trailing slashes; "" for
// the root. Rejects what could escape the image root.
Result<std::string> NormalizePath(std::string_view raw) {
  if (raw.empty()) return Error(Errc::kMalformed, "empty path");
  if (raw.find('\0') != std::string_view::npos) return Error(Errc::kMalformed, "NUL byte in path");
  // "/" alone is how some producers (umoci among them) name the root; any
  // other absolute path is refused rather than silently re-rooted.
  if (raw.find_first_not_of('/') == std::string_view::npos) return std::string();
  if (raw[0] == '/') return Error(Errc::kMalformed, "absolute path");
  std::string out;
  out.reserve(raw.size());
  while (!raw.empty()) {
    size_t slash = raw.find('/');
    std::string_view comp = raw.substr(0, slash);
    raw.remove_prefix(slash == std::string_view::npos ? raw.size() : slash + 1);
    if (comp.empty() || comp == ".") continue;
    if (comp == "..") return Error(Errc::kMalformed, "path has a '..' component");
    if (!out.empty()) out += '/';
    out += comp;
  }
  return out;
}

enum class ReadState { kBlock, kEof };

// One header block, or kEof when the stream ends exactly before it.
Result<ReadState> ReadBlock(ByteStream& in, char* blk) {
  uint64_t start = in.position();
  size_t have = 0;
  while (have < kBlock) {
    UCRFS_ASSIGN(size_t n, in.Read(blk + have, kBlock - have));
    if (n == 0) break;
    have += n;
  }
  if (have == 0) return ReadState::kEof;
  if (have < kBlock) return Bad(start, "", fmt::format("truncated header ({} of 512 bytes)", have));
  return ReadState::kBlock;
}

bool AllZero(const char* blk) {
  return blk[0] == 0 && std::memcmp(blk, blk + 1, kBlock - 1) == 0;
}

// After one zero block: the archive ends at a second zero block or at the end
// of the stream. Anything else is an error (as Go's archive/tar, which umoci
// uses, treats it) rather than silently dropping the rest.
Status CheckEnd(ByteStream& in) {
  uint64_t off = in.position();
  char blk[kBlock];
  size_t have = 0;
  while (have < kBlock) {
    UCRFS_ASSIGN(size_t n, in.Read(blk + have, kBlock - have));
    if (n == 0) break;
    have += n;
  }
  for (size_t i = 0; i < have; ++i) {
    if (blk[i] != 0) return Bad(off, "", "non-zero block after a zero block (a lone zero block)");
  }
  return Ok();
}

Status VerifyChecksum(const char* blk, uint64_t hdr_off) {
  auto stored = ParseNumeric(Raw(blk, kChksum));
  if (!stored) return Bad(hdr_off, "", "unparsable checksum field");
  int64_t usum = 0, ssum = 0;  // historic tars summed signed chars
  for (size_t i = 0; i < kBlock; ++i) {
    char c = (i >= kChksum.off && i < kChksum.off + kChksum.len) ? ' ' : blk[i];
    usum += static_cast<unsigned char>(c);
    ssum += static_cast<signed char>(c);
  }
  if (*stored != usum && *stored != ssum) {
    return Bad(hdr_off, "", fmt::format("bad header checksum (stored {}, computed {})", *stored, usum));
  }
  return Ok();
}

// Data of a meta header ('x', 'g', 'L', 'K'), with its padding skipped.
Result<std::string> ReadMetaData(ByteStream& in, const char* blk, uint64_t hdr_off) {
  auto size = ParseNumeric(Raw(blk, kSize));
  if (!size || *size < 0) return Bad(hdr_off, "", "unparsable size field");
  if (static_cast<uint64_t>(*size) > kMaxMetaSize) {
    return Bad(hdr_off, "", fmt::format("extension header '{}' of {} bytes is over the limit", blk[kTypeflag], *size),
               Errc::kTooBig);
  }
  std::string data(static_cast<size_t>(*size), '\0');
  Status st = ReadFull(in, data.data(), data.size());
  if (st.ok()) st = in.Skip(Padding(data.size()));
  if (!st.ok()) return Bad(hdr_off, "", "extension header data truncated");
  return data;
}

// The extension headers that precede an entry.
struct Pending {
  Records pax;
  std::optional<std::string> long_name, long_link;
  bool any() const { return !pax.empty() || long_name || long_link; }
};

using Runs = std::vector<std::pair<uint64_t, uint64_t>>;  // (file offset, length)

// What the GNU.sparse.* PAX keys said.
struct SparsePax {
  std::string major, minor, map;
  std::optional<std::string> name;
  std::optional<uint64_t> size, realsize;
  Runs runs00;  // format 0.0: GNU.sparse.offset / GNU.sparse.numbytes pairs in record order
  std::optional<uint64_t> pending_offset;
  bool bad = false;
};

// The header fields once every extension has been applied.
struct Merged {
  std::string name, link;
  char type = '0';
  bool old_sparse = false;
  uint64_t size = 0;  // bytes of data in the archive
  SparsePax sparse;
};

Status ApplyNumber(std::string_view key, std::string_view v, uint64_t* out) {
  auto n = ParseDecimal(v);
  if (!n) return Error(Errc::kMalformed, fmt::format("bad PAX {} value", key));
  *out = *n;
  return Ok();
}

// A zero-length value deletes the keyword (POSIX pax; Go's archive/tar and so
// umoci read it that way too): no attribute, and a global one is cancelled.
void SetXattr(TarEntry* e, std::string name, std::string value) {
  if (value.empty()) {
    std::erase_if(e->xattrs, [&](const auto& kv) { return kv.first == name; });
    return;
  }
  for (auto& [k, v] : e->xattrs) {
    if (k == name) {  // bsdtar writes both SCHILY. and LIBARCHIVE. forms of one attribute
      v = std::move(value);
      return;
    }
  }
  e->xattrs.emplace_back(std::move(name), std::move(value));
}

void ApplySparseKey(std::string_view key, const std::string& v, SparsePax* sp) {
  auto num = [&](std::optional<uint64_t>* out) {
    auto n = ParseDecimal(v);
    if (!n) sp->bad = true;
    *out = n;
  };
  if (key == "major") sp->major = v;
  else if (key == "minor") sp->minor = v;
  else if (key == "map") sp->map = v;
  else if (key == "name") sp->name = v;
  else if (key == "size") num(&sp->size);
  else if (key == "realsize") num(&sp->realsize);
  else if (key == "offset") {
    if (sp->pending_offset) sp->bad = true;
    num(&sp->pending_offset);
  } else if (key == "numbytes") {
    auto n = ParseDecimal(v);
    if (!n || !sp->pending_offset) {
      sp->bad = true;
    } else {
      sp->runs00.emplace_back(*sp->pending_offset, *n);
      sp->pending_offset.reset();
    }
  }
}

// Applies one PAX record. Global records ('g') may not rename, resize or
// make sparse: those keys describe one file, and applying them to every later
// entry would only corrupt the archive.
Status ApplyPax(const std::string& key, const std::string& v, bool global, Merged* m, TarEntry* e) {
  static constexpr std::string_view kSchily = "SCHILY.xattr.", kLibarchive = "LIBARCHIVE.xattr.",
                                    kSparse = "GNU.sparse.";
  bool per_file = key == "path" || key == "linkpath" || key == "size" || key.starts_with(kSparse);
  if (global && per_file) return Ok();
  if (key == "path") {
    if (!v.empty()) m->name = v;
  } else if (key == "linkpath") {
    if (!v.empty()) m->link = v;
  } else if (key == "size") {
    if (!v.empty()) UCRFS_TRY(ApplyNumber(key, v, &m->size));
  } else if (v.empty() && (key == "uid" || key == "gid" || key == "mtime")) {
    return Ok();  // an empty value only cancels a global record: keep the header's field
  } else if (key == "uid") {
    UCRFS_TRY(ApplyNumber(key, v, &e->uid));
  } else if (key == "gid") {
    UCRFS_TRY(ApplyNumber(key, v, &e->gid));
  } else if (key == "mtime") {
    auto t = ParsePaxTime(v);
    if (!t) return Error(Errc::kMalformed, "bad PAX mtime value");
    std::tie(e->mtime_sec, e->mtime_nsec) = *t;
  } else if (key.starts_with(kSchily)) {
    SetXattr(e, key.substr(kSchily.size()), v);
  } else if (key.starts_with(kLibarchive)) {
    auto name = UrlDecode(std::string_view(key).substr(kLibarchive.size()));
    auto value = Base64Decode(v);
    if (!name || !value) return Error(Errc::kMalformed, "bad " + std::string(kLibarchive) + " record");
    SetXattr(e, std::move(*name), std::move(*value));
  } else if (key.starts_with(kSparse)) {
    ApplySparseKey(std::string_view(key).substr(kSparse.size()), v, &m->sparse);
  }
  return Ok();  // uname, gname, atime, ctime, comment, charset and others do not matter here
}

// Reads the fixed header fields, then lets GNU long names and PAX records
// (global first, then the entry's own) override them.
Status MergeHeader(const char* blk, uint64_t hdr_off, const Records& global, const Pending& p, Merged* m,
                   TarEntry* e) {
  bool posix = std::memcmp(blk + kMagic, "ustar\0", 6) == 0;  // GNU's magic is "ustar  \0": no prefix field
  m->type = blk[kTypeflag];
  m->name = CString(blk, kName);
  std::string prefix = posix ? CString(blk, kPrefix) : "";
  if (!prefix.empty()) m->name = prefix + "/" + m->name;
  m->link = CString(blk, kLinkname);
  auto mode = ParseNumeric(Raw(blk, kMode));
  auto uid = ParseNumeric(Raw(blk, kUid)), gid = ParseNumeric(Raw(blk, kGid));
  auto size = ParseNumeric(Raw(blk, kSize)), mtime = ParseNumeric(Raw(blk, kMtime));
  if (!mode || !uid || !gid || !size || !mtime || *mode < 0 || *uid < 0 || *gid < 0 || *size < 0) {
    return Bad(hdr_off, m->name, "unparsable numeric header field");
  }
  e->mode = static_cast<uint32_t>(*mode) & 07777;
  e->uid = static_cast<uint64_t>(*uid);
  e->gid = static_cast<uint64_t>(*gid);
  e->mtime_sec = *mtime;
  m->size = static_cast<uint64_t>(*size);
  if (m->type == '3' || m->type == '4') {
    auto maj = ParseNumeric(Raw(blk, kDevMajor)), min = ParseNumeric(Raw(blk, kDevMinor));
    if (!maj || !min || *maj < 0 || *min < 0 || *maj > UINT32_MAX || *min > UINT32_MAX) {
      return Bad(hdr_off, m->name, "bad device number");
    }
    e->dev_major = static_cast<uint32_t>(*maj);
    e->dev_minor = static_cast<uint32_t>(*min);
  }
  if (p.long_name) m->name = *p.long_name;
  if (p.long_link) m->link = *p.long_link;
  for (bool is_global : {true, false}) {
    for (const auto& [k, v] : is_global ? global : p.pax) {
      Status st = ApplyPax(k, v, is_global, m, e);
      if (!st.ok()) return Bad(hdr_off, m->name, st.error().message());
    }
  }
  if (m->sparse.bad || m->sparse.pending_offset) return Bad(hdr_off, m->name, "bad GNU.sparse PAX records");
  if (m->sparse.name) m->name = *m->sparse.name;  // 0.1/1.0 hide the real name there
  if (m->size > kMaxSize) return Bad(hdr_off, m->name, fmt::format("absurd size {}", m->size));
  return Ok();
}

Result<EntryType> MapType(char t, const std::string& raw_name, bool* old_sparse) {
  switch (t) {
    case '0': case '7': return EntryType::kFile;
    case '\0': return raw_name.ends_with('/') ? EntryType::kDir : EntryType::kFile;  // pre-POSIX directories
    case 'S': *old_sparse = true; return EntryType::kFile;
    case '1': return EntryType::kHardlink;
    case '2': return EntryType::kSymlink;
    case '3': return EntryType::kCharDev;
    case '4': return EntryType::kBlockDev;
    case '5': return EntryType::kDir;
    case '6': return EntryType::kFifo;
    default: break;
  }
  auto c = static_cast<unsigned char>(t);
  return Error(Errc::kUnsupported, (c >= 0x20 && c < 0x7f) ? fmt::format("unsupported entry type '{}'", t)
                                                            : fmt::format("unsupported entry type 0x{:02x}", c));
}

Status ReadOldGnuSparse(ByteStream& in, const char* blk, Runs* runs) {
  auto parse_pairs = [&](const char* p, size_t count) -> Status {
    for (size_t i = 0; i < count; ++i) {
      const char* pair = p + i * 24;
      if (pair[0] == '\0') break;  // unused slots are left empty
      auto off = ParseNumeric({pair, 12}), len = ParseNumeric({pair + 12, 12});
      if (!off || !len || *off < 0 || *len < 0) return Error(Errc::kMalformed, "bad old GNU sparse map entry");
      if (runs->size() >= kMaxSparseRuns) return Error(Errc::kTooBig, "too many sparse runs");
      runs->emplace_back(static_cast<uint64_t>(*off), static_cast<uint64_t>(*len));
    }
    return Ok();
  };
  UCRFS_TRY(parse_pairs(blk + kGnuSparse, kGnuSparsePairs));
  bool extended = blk[kGnuIsExtended] != 0;
  char ext[kBlock];
  while (extended) {
    UCRFS_ASSIGN(ReadState rs, ReadBlock(in, ext));
    if (rs == ReadState::kEof) return Error(Errc::kMalformed, "truncated in the old GNU sparse map");
    UCRFS_TRY(parse_pairs(ext, kExtPairs));
    extended = ext[kExtIsExtended] != 0;
  }
  return Ok();
}

// Format 1.0 keeps the map in the data: decimal numbers, one per line (the
// run count, then offset/length pairs), padded to a block. Returns the bytes
// the map took.
Result<uint64_t> ReadSparseMap10(ByteStream& in, uint64_t data_size, Runs* runs) {
  std::string buf;
  size_t pos = 0;
  uint64_t used = 0;
  auto next_number = [&]() -> Result<uint64_t> {
    for (;;) {
      size_t nl = buf.find('\n', pos);
      if (nl != std::string::npos) {
        auto n = ParseDecimal(std::string_view(buf).substr(pos, nl - pos));
        if (!n) return Error(Errc::kMalformed, "bad number in the sparse 1.0 map");
        pos = nl + 1;
        return *n;
      }
      if (used + kBlock > data_size || buf.size() - pos > 64) {
        return Error(Errc::kMalformed, "unterminated sparse 1.0 map");
      }
      buf.erase(0, pos);
      pos = 0;
      size_t old = buf.size();
      buf.resize(old + kBlock);
      UCRFS_TRY(ReadFull(in, buf.data() + old, kBlock));
      used += kBlock;
    }
  };
  UCRFS_ASSIGN(uint64_t count, next_number());
  if (count > kMaxSparseRuns) return Error(Errc::kTooBig, "too many sparse runs");
  for (uint64_t i = 0; i < count; ++i) {
    UCRFS_ASSIGN(uint64_t off, next_number());
    UCRFS_ASSIGN(uint64_t len, next_number());
    runs->emplace_back(off, len);
  }
  return used;
}

Result<Runs> ParseSparseMap01(const std::string& map) {
  Runs runs;
  std::vector<uint64_t> nums;
  std::string_view s = map;
  while (!s.empty()) {
    size_t comma = s.find(',');
    auto n = ParseDecimal(s.substr(0, comma));
    if (!n) return Error(Errc::kMalformed, "bad GNU.sparse.map");
    if (nums.size() >= 2 * kMaxSparseRuns) return Error(Errc::kTooBig, "too many sparse runs");
    nums.push_back(*n);
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
    if (s.empty()) return Error(Errc::kMalformed, "bad GNU.sparse.map");
  }
  if (nums.size() % 2) return Error(Errc::kMalformed, "odd number of values in GNU.sparse.map");
  for (size_t i = 0; i < nums.size(); i += 2) runs.emplace_back(nums[i], nums[i + 1]);
  return runs;
}

// Runs must be ordered, disjoint, inside the file, and account for exactly
// the data stored in the archive.
Status BuildSparseExtents(const Runs& runs, uint64_t real_size, uint64_t stored, uint64_t data_start, TarEntry* e) {
  if (real_size > kMaxSize) return Error(Errc::kMalformed, fmt::format("absurd sparse size {}", real_size));
  uint64_t prev_end = 0, total = 0;
  for (const auto& [off, len] : runs) {
    if (off < prev_end || off > real_size || len > real_size - off) {
      return Error(Errc::kMalformed, fmt::format("sparse run {}+{} out of order or past size {}", off, len, real_size));
    }
    prev_end = off + len;
    if (len == 0) continue;  // GNU tar ends the map with an empty run at the real size
    e->extents.push_back({off, data_start + total, len});
    total += len;
  }
  if (total != stored) {
    return Error(Errc::kMalformed, fmt::format("sparse map covers {} bytes but {} are stored", total, stored));
  }
  e->size = real_size;
  return Ok();
}

enum class SparseKind { kNone, kOldGnu, kPax0x, kPax10 };

Result<SparseKind> ClassifySparse(const Merged& m) {
  const SparsePax& sp = m.sparse;
  if (m.old_sparse) return SparseKind::kOldGnu;
  if (sp.major == "1" && sp.minor == "0") return SparseKind::kPax10;
  if (!sp.major.empty() || !sp.minor.empty()) {
    if (sp.major == "0" && (sp.minor == "0" || sp.minor == "1")) return SparseKind::kPax0x;
    return Error(Errc::kUnsupported, fmt::format("GNU sparse format {}.{}", sp.major, sp.minor));
  }
  // 0.0 and 0.1 wrote no version records: recognise them by their map.
  return (!sp.map.empty() || !sp.runs00.empty()) ? SparseKind::kPax0x : SparseKind::kNone;
}

// Decodes the sparse map of whichever GNU format the entry uses into
// extents. Returns the bytes of entry data the map itself took (1.0 keeps it
// in the data), or nullopt for an entry that is not sparse.
Result<std::optional<uint64_t>> ReadSparse(ByteStream& in, const char* blk, const Merged& m, TarEntry* e) {
  const SparsePax& sp = m.sparse;
  UCRFS_ASSIGN(SparseKind kind, ClassifySparse(m));
  Runs runs;
  uint64_t real_size = 0, map_bytes = 0;
  switch (kind) {
    case SparseKind::kNone:
      return std::optional<uint64_t>();
    case SparseKind::kOldGnu: {
      UCRFS_TRY(ReadOldGnuSparse(in, blk, &runs));
      auto rs = ParseNumeric(Raw(blk, kGnuRealSize));
      if (!rs || *rs < 0) return Error(Errc::kMalformed, "bad old GNU sparse real size");
      real_size = static_cast<uint64_t>(*rs);
      break;
    }
    case SparseKind::kPax10: {
      if (!sp.realsize && !sp.size) return Error(Errc::kMalformed, "sparse 1.0 entry without GNU.sparse.realsize");
      real_size = sp.realsize ? *sp.realsize : *sp.size;
      UCRFS_ASSIGN(map_bytes, ReadSparseMap10(in, m.size, &runs));
      break;
    }
    case SparseKind::kPax0x:
      if (!sp.size && !sp.realsize) return Error(Errc::kMalformed, "sparse entry without GNU.sparse.size");
      real_size = sp.size ? *sp.size : *sp.realsize;
      if (!sp.map.empty()) {
        UCRFS_ASSIGN(runs, ParseSparseMap01(sp.map));
      } else {
        runs = sp.runs00;
      }
      break;
  }
  UCRFS_TRY(BuildSparseExtents(runs, real_size, m.size - map_bytes, in.position(), e));
  return std::optional<uint64_t>(map_bytes);
}

// Turns a merged header into `e` and moves past the entry's data.
Status FinishEntry(ByteStream& in, const char* blk, uint64_t hdr_off, Merged& m, TarEntry* e) {
  auto type = MapType(m.type, m.name, &m.old_sparse);
  if (!type.ok()) return Bad(hdr_off, m.name, type.error().message(), type.error().code());
  e->type = *type;
  auto path = NormalizePath(m.name);
  if (!path.ok()) return Bad(hdr_off, m.name, path.error().message());
  e->path = std::move(*path);
  if (e->path.empty() && e->type != EntryType::kDir) return Bad(hdr_off, m.name, "empty path for a non-directory");
  if (e->type == EntryType::kHardlink) {
    auto target = NormalizePath(m.link);
    if (!target.ok() || target->empty()) {
      return Bad(hdr_off, e->path, "bad hardlink target " + Quote(m.link) +
                                       (target.ok() ? ": the root" : ": " + target.error().message()));
    }
    e->link_target = std::move(*target);
  } else if (e->type == EntryType::kSymlink) {
    if (m.link.empty() || m.link.find('\0') != std::string::npos) {
      return Bad(hdr_off, e->path, "empty symlink target or NUL byte in it");
    }
    e->link_target = m.link;
  }
  if (e->type != EntryType::kFile) return Ok();  // header-only types: no data follows (as Go's archive/tar reads them)
  auto sparse = ReadSparse(in, blk, m, e);
  if (!sparse.ok()) return Bad(hdr_off, e->path, sparse.error().message(), sparse.error().code());
  uint64_t consumed = sparse->value_or(0);
  if (!sparse->has_value()) {
    e->size = m.size;
    if (m.size > 0) e->extents.push_back({0, in.position(), m.size});
  }
  Status st = in.Skip(m.size - consumed);
  if (!st.ok()) {
    return Bad(hdr_off, e->path, fmt::format("data truncated ({} bytes from offset {})", m.size - consumed,
                                             in.position()));
  }
  // Some writers (umoci 0.4's insert among them) end the archive right after
  // the last entry's data, without padding or end-of-archive blocks. The data
  // is whole, so that is accepted: a failed padding skip leaves the stream at
  // its end, where the next Next() reports the end of the archive (and a real
  // decoding error surfaces again on that read).
  (void)in.Skip(Padding(m.size));
  return Ok();
}

// A later global record replaces an earlier one with the same key; the total
// stays bounded however many 'g' headers an archive has.
Status MergeGlobal(Records records, uint64_t hdr_off, Records* global) {
  for (auto& rec : records) {
    auto it = std::find_if(global->begin(), global->end(), [&](const auto& r) { return r.first == rec.first; });
    if (it != global->end()) {
      it->second = std::move(rec.second);
    } else {
      global->push_back(std::move(rec));
    }
  }
  uint64_t total = 0;
  for (const auto& [k, v] : *global) total += k.size() + v.size();
  if (total > kMaxMetaSize) return Bad(hdr_off, "", "global PAX records over the size limit", Errc::kTooBig);
  return Ok();
}

}  // namespace

std::string QuotePath(std::string_view s) {
  std::string out = "'";
  size_t n = std::min<size_t>(s.size(), 200);
  for (size_t i = 0; i < n; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7f || c == '\\' || c == '\'') {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + (n < s.size() ? "...'" : "'");
}

Result<std::string> NormalizeTarPath(std::string_view raw) { return NormalizePath(raw); }

Result<bool> TarReader::Next(TarEntry* entry) {
  Pending pending;
  char blk[kBlock];
  for (;;) {
    uint64_t hdr_off = in_.position();
    UCRFS_ASSIGN(ReadState rs, ReadBlock(in_, blk));
    if (rs == ReadState::kEof || AllZero(blk)) {
      if (pending.any()) return Bad(hdr_off, "", "archive ends after an extension header");
      if (rs == ReadState::kBlock) UCRFS_TRY(CheckEnd(in_));
      return false;
    }
    UCRFS_TRY(VerifyChecksum(blk, hdr_off));
    char type = blk[kTypeflag];
    if (type == 'x' || type == 'g' || type == 'L' || type == 'K') {
      UCRFS_ASSIGN(std::string data, ReadMetaData(in_, blk, hdr_off));
      if (type == 'L' || type == 'K') {
        data.resize(strnlen(data.data(), data.size()));  // NUL-terminated, possibly padded
        (type == 'L' ? pending.long_name : pending.long_link) = std::move(data);
        continue;
      }
      auto records = ParsePaxRecords(data);
      if (!records.ok()) return Bad(hdr_off, "", records.error().message());
      if (type == 'x') {
        pending.pax.insert(pending.pax.end(), records->begin(), records->end());
      } else {
        UCRFS_TRY(MergeGlobal(std::move(*records), hdr_off, &global_pax_));
      }
      continue;
    }
    TarEntry e;
    Merged m;
    UCRFS_TRY(MergeHeader(blk, hdr_off, global_pax_, pending, &m, &e));
    UCRFS_TRY(FinishEntry(in_, blk, hdr_off, m, &e));
    *entry = std::move(e);
    return true;
  }
}

std::vector<std::string_view> SplitPath(std::string_view path) {
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    size_t s = path.find('/');
    if (s != 0) parts.push_back(path.substr(0, s));
    if (s == std::string_view::npos) break;
    path.remove_prefix(s + 1);
  }
  return parts;
}

}  // namespace ucrfs::index
