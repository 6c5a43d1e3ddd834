// Lazy layer formats: eStargz and zstd:chunked. Such a layer is a valid
// tar+gzip / tar+zstd blob whose files are compressed in independent pieces
// (chunks), with a table of contents (TOC) near the end and a footer that
// says where the TOC is. ucrfs reads the footer and the TOC with two Range
// requests, indexes the layer from the TOC, and fetches a chunk only when a
// file's bytes are first read.
//
// eStargz: tar+gzip; footer = the last 51 bytes (an empty gzip member whose
// extra field holds "%016x" TOC offset + "STARGZ"; the legacy stargz footer
// is 47 bytes); the TOC is a gzip member holding a tar with one file,
// `stargz.index.json`. Its digest (sha256 of that JSON) is the layer
// descriptor's `containerd.io/snapshot/stargz/toc.digest` annotation.
// zstd:chunked: tar+zstd; the TOC ("manifest", the same CRFS-style JSON) is
// zstd-compressed inside a skippable frame, and a 40-byte footer (itself in a
// skippable frame: offset, compressed length, uncompressed length, manifest
// type, magic "GnUlInUx") gives its place; the annotation
// `io.containers.zstd-chunked.manifest-checksum` is its digest, and
// `io.containers.zstd-chunked.manifest-position` (offset:len:rawlen:type) may
// give the place without the footer. Newer containers/storage writes a 64-byte
// footer instead (the same four fields, then the tar-split's offset and
// lengths, magic "GNUlInUx") and names the annotations
// `io.github.containers.zstd-chunked.*`.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ucrfs/common/digest.h"
#include "ucrfs/common/error.h"
#include "ucrfs/index/tar.h"

namespace ucrfs::index {

enum class TocFormat : uint8_t { kEstargz = 1, kZstdChunked = 2 };

// Where a layer's TOC is, read from its footer (or its annotations).
struct TocLocation {
  TocFormat format = TocFormat::kEstargz;
  uint64_t offset = 0;  // first byte of the TOC's compressed bytes in the blob
  uint64_t size = 0;    // compressed bytes of the TOC
  uint64_t uncompressed_size = 0;  // zstd:chunked only; 0 if unknown
};

// How many trailing bytes of the blob ParseFooter needs: the largest footer
// is containers/storage's 64-byte one in its 8-byte skippable-frame header.
inline constexpr size_t kFooterFetchSize = 72;

// Whether a layer descriptor announces a lazy format (by its annotations).
std::optional<TocFormat> LazyFormatOf(const std::map<std::string, std::string>& annotations);

// Parses the footer from the last bytes of a blob of `blob_size` bytes
// (`tail` holds min(kFooterFetchSize, blob_size) bytes). kNotFound when the
// blob has no footer of that format (an ordinary layer); kMalformed when a
// footer is there but lies (offsets past the end, overlapping the footer).
Result<TocLocation> ParseFooter(TocFormat format, std::string_view tail, uint64_t blob_size);

// One independently compressed piece of a regular file.
struct Chunk {
  uint64_t file_offset = 0;   // where its bytes go in the file
  uint64_t size = 0;          // decoded bytes
  uint64_t blob_offset = 0;   // first compressed byte (start of its gzip member / zstd frame)
  uint64_t blob_size = 0;     // compressed bytes to fetch, up to the next chunk's start (or the TOC)
  uint64_t inner_offset = 0;  // decoded bytes to skip inside that member/frame before the chunk's bytes
  Digest digest = Digest::Sha256Of("");  // of the decoded bytes (chunkDigest; a one-chunk file's digest)
};

struct Toc {
  // Every entry, as a tar reader would report it; regular files have no
  // extents (their bytes are in `chunks`). Hardlinks, whiteouts and
  // directories appear as in a tar.
  std::vector<TarEntry> entries;
  // For each regular-file entry (by index in `entries`), its chunks in file
  // order, covering the file exactly.
  std::map<size_t, std::vector<Chunk>> chunks;
  // Blob offset of the end of the prefetch region (".prefetch.landmark"),
  // or 0 when there is none or ".no.prefetch.landmark" says so.
  uint64_t prefetch_end = 0;
};

// Parses a TOC from its compressed bytes as they sit in the blob (`data`,
// loc.size bytes from loc.offset), after checking them against `expected`
// (the annotation's digest; required — a lazy layer whose TOC cannot be
// verified is not trusted). Every offset is checked to lie before the TOC;
// names are normalized and refused like tar names (.., absolute paths).
Result<Toc> ParseToc(const TocLocation& loc, std::string_view data, const Digest& expected);

// Decodes one chunk from its fetched compressed bytes (`data`, chunk.blob_size
// bytes from chunk.blob_offset) and checks the result against chunk.digest:
// kDigestMismatch naming the digest when it does not match.
Result<std::string> DecodeChunk(TocFormat format, const Chunk& chunk, std::string_view data);

}  // namespace ucrfs::index
