// A tar reader that knows where every file's bytes are.
//
// Reads ustar, GNU (long names 'L', long links 'K', old sparse 'S') and PAX
// ('x' per-entry, 'g' global) headers from a ByteStream of the *decoded* tar,
// and reports for each entry the offsets of its data in that stream, so the
// data can later be served by reading those ranges — nothing is unpacked.
//
// It is strict about what a layer may contain: paths with a ".." component,
// absolute paths, empty names, NUL bytes, sizes over 2^56, bad checksums and
// truncated archives are errors (kMalformed) naming the entry. Paths are
// returned relative, without "./" or a trailing "/"; the root itself ("./")
// is reported with path "".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ucrfs/index/stream.h"

namespace ucrfs::index {

enum class EntryType : uint8_t { kFile, kDir, kSymlink, kHardlink, kCharDev, kBlockDev, kFifo };

// A run of file data: `length` bytes of the file at `file_offset` are at
// `stream_offset` in the decoded tar stream. Bytes of the file covered by no
// extent are zeros (sparse holes).
struct Extent {
  uint64_t file_offset = 0;
  uint64_t stream_offset = 0;
  uint64_t length = 0;
  friend bool operator==(const Extent&, const Extent&) = default;
};

// The components of a normalized path ("" for the root: none); empty
// components (leading or doubled slashes) are skipped.
std::vector<std::string_view> SplitPath(std::string_view path);

struct TarEntry {
  std::string path;         // relative, normalized (see above); may exceed 4 KiB
  EntryType type = EntryType::kFile;
  uint32_t mode = 0;        // permission bits including setuid/setgid/sticky (07777)
  uint64_t uid = 0, gid = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;  // from PAX mtime when present
  uint64_t size = 0;        // logical size of a regular file (the real size of a sparse file)
  std::string link_target;  // symlink target as written; hardlink target normalized like path
  uint32_t dev_major = 0, dev_minor = 0;
  // Extended attributes from PAX SCHILY.xattr.NAME (and LIBARCHIVE.xattr.NAME,
  // base64): name -> raw value, in header order.
  std::vector<std::pair<std::string, std::string>> xattrs;
  std::vector<Extent> extents;  // regular files only; one extent unless sparse or empty
};

class TarReader {
 public:
  explicit TarReader(ByteStream& in) : in_(in) {}
  // Reads the next entry and skips past its data. Returns false at the end
  // of the archive (two zero blocks, or a clean end of stream after an
  // entry). GNU sparse formats 0.0, 0.1 and 1.0 are decoded into extents.
  Result<bool> Next(TarEntry* entry);

 private:
  ByteStream& in_;
  std::vector<std::pair<std::string, std::string>> global_pax_;
};

}  // namespace ucrfs::index
