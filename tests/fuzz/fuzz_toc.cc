// The eStargz / zstd:chunked TOC reader over hostile JSON (the input is the
// TOC's JSON; it is compressed as a zstd:chunked manifest and its digest
// given, so that parsing, not the digest check, is what is tried). Whatever
// it accepts keeps the promises ParseToc makes: normalized names, every
// regular file covered exactly by its chunks, every chunk before the TOC.
#include <string>

#include "fuzz_check.h"
#include "ucrfs/index/toc.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ucrfs::index;
  using ucrfs::fuzz::Check;
  std::string_view json(reinterpret_cast<const char*>(data), size);
  std::string z = ucrfs::fuzz::Zstd(json);
  TocLocation loc;
  loc.format = TocFormat::kZstdChunked;
  loc.offset = 1 << 20;
  loc.size = z.size();
  loc.uncompressed_size = json.size();
  auto toc = ParseToc(loc, z, ucrfs::Digest::Sha256Of(json));
  if (!toc.ok()) return 0;
  Check(toc->prefetch_end <= loc.offset, "the prefetch landmark is before the TOC");
  for (const TarEntry& e : toc->entries) {
    Check(ucrfs::fuzz::NormalizedPath(e.path), "TOC entry name is normalized");
    Check(e.extents.empty(), "TOC entries carry chunks, not extents");
  }
  for (const auto& [i, chunks] : toc->chunks) {
    Check(i < toc->entries.size(), "chunks belong to an entry");
    const TarEntry& e = toc->entries[i];
    Check(e.type == EntryType::kFile, "only regular files have chunks");
    uint64_t next = 0;
    for (const Chunk& c : chunks) {
      Check(c.file_offset == next, "chunks are in file order, without gaps");
      Check(c.size > 0 && c.size <= e.size - c.file_offset, "a chunk lies inside its file");
      Check(c.blob_size > 0 && c.blob_offset < loc.offset && c.blob_size <= loc.offset - c.blob_offset,
            "a chunk's bytes lie before the TOC");
      next = c.file_offset + c.size;
    }
    Check(next == e.size, "chunks cover their file exactly");
  }
  for (size_t i = 0; i < toc->entries.size(); ++i) {
    const TarEntry& e = toc->entries[i];
    if (e.type == EntryType::kFile && e.size > 0) Check(toc->chunks.contains(i), "a non-empty file has chunks");
  }
  return 0;
}
