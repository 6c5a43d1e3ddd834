// Footers of eStargz and zstd:chunked blobs. The first input byte picks the
// format, the next eight the blob's size; the rest is the blob's tail. A
// footer accepted points at a TOC inside the blob, before the footer's bytes.
#include <algorithm>
#include <string_view>

#include "fuzz_check.h"
#include "ucrfs/index/toc.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ucrfs::index;
  if (size < 9) return 0;
  TocFormat format = (data[0] & 1) ? TocFormat::kZstdChunked : TocFormat::kEstargz;
  uint64_t blob_size = 0;
  for (int i = 0; i < 8; ++i) blob_size = blob_size << 8 | data[1 + i];
  std::string_view tail(reinterpret_cast<const char*>(data) + 9, size - 9);
  if (tail.size() > blob_size) tail = tail.substr(tail.size() - blob_size);
  tail = tail.substr(tail.size() - std::min<size_t>(tail.size(), kFooterFetchSize));
  if (tail.size() != std::min<uint64_t>(kFooterFetchSize, blob_size)) return 0;  // as the caller guarantees
  auto loc = ParseFooter(format, tail, blob_size);
  if (!loc.ok()) return 0;
  ucrfs::fuzz::Check(loc->format == format, "the footer is of the format asked for");
  ucrfs::fuzz::Check(loc->size > 0 && loc->offset < blob_size && loc->size <= blob_size - loc->offset,
                     "the TOC lies inside the blob");
  return 0;
}
