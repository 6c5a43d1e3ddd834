// ucrfs layer index blobs (pushed to registries: anyone may write one). The
// input is the blob's content before compression; it is compressed here,
// and must name the layer of digest sha256("fuzz layer") and 1 MiB. An
// index accepted has checkpoints a reader can start from, spans and windows
// inside their blobs, and entries inside the decoded stream.
#include <string>

#include "fuzz_check.h"
#include "ucrfs/index/remote_index.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ucrfs::index;
  using ucrfs::fuzz::Check;
  std::string_view raw(reinterpret_cast<const char*>(data), size);
  std::string z = ucrfs::fuzz::Zstd(raw);
  ucrfs::fetch::Descriptor layer;
  layer.media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
  layer.digest = ucrfs::Digest::Sha256Of("fuzz layer");
  layer.size = 1 << 20;
  auto index = DecodeLayerIndex(z, layer);
  if (!index.ok()) return 0;
  const auto& cps = index->checkpoints;
  Check(!cps.empty(), "an index has checkpoints");
  Check(index->span_digests.size() == cps.size() && index->windows.size() == cps.size(),
        "one span digest and one window per checkpoint");
  std::vector<uint64_t> sizes;
  for (const WindowRef& w : index->windows) {
    Check(w.length == 0 || (w.size > 0 && w.offset < index->windows_size && w.size <= index->windows_size - w.offset),
          "a window lies inside the windows blob");
    sizes.push_back(w.length);
  }
  Check(ValidateCheckpoints(cps, index->decoded_size, index->layer_size, "fuzz", &sizes).ok(),
        "the checkpoints are ones a reader accepts");
  for (size_t i = 0; i < cps.size(); ++i) {
    SpanRange r = SpanOf(cps, i, index->layer_size);
    Check(r.size > 0 && r.offset + r.size <= index->layer_size, "a span lies inside the layer");
  }
  for (const TarEntry& e : index->entries) {
    Check(ucrfs::fuzz::NormalizedPath(e.path), "index entry path is normalized");
    for (const Extent& x : e.extents) {
      Check(x.stream_offset <= index->decoded_size && x.length <= index->decoded_size - x.stream_offset,
            "an entry's bytes lie inside the decoded layer");
      Check(x.length <= e.size && x.file_offset <= e.size - x.length, "an extent lies inside its file");
    }
  }
  return 0;
}
