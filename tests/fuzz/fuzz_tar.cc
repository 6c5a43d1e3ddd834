// The tar reader over hostile archives: every entry it reports has a
// normalized path and extents that lie in the stream it has read, in file
// order, inside the file.
#include <algorithm>
#include <cstring>
#include <string_view>

#include "fuzz_check.h"
#include "ucrfs/index/tar.h"

namespace {

class MemoryStream final : public ucrfs::index::ByteStream {
 public:
  explicit MemoryStream(std::string_view data) : data_(data) {}
  ucrfs::Result<size_t> Read(char* buf, size_t n) override {
    n = std::min(n, data_.size() - pos_);
    std::memcpy(buf, data_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  uint64_t position() const override { return pos_; }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ucrfs::index;
  using ucrfs::fuzz::Check;
  MemoryStream in(std::string_view(reinterpret_cast<const char*>(data), size));
  TarReader reader(in);
  TarEntry e;
  for (int i = 0; i < 4096; ++i) {
    auto more = reader.Next(&e);
    if (!more.ok() || !*more) break;
    Check(ucrfs::fuzz::NormalizedPath(e.path), "tar entry path is normalized");
    Check(e.mode <= 07777, "tar entry mode is permission bits only");
    if (e.type == EntryType::kHardlink) {
      Check(!e.link_target.empty() && ucrfs::fuzz::NormalizedPath(e.link_target), "hardlink target is normalized");
    }
    if (e.type != EntryType::kFile) {
      Check(e.extents.empty(), "only regular files have extents");
      continue;
    }
    uint64_t file_end = 0;
    for (const Extent& x : e.extents) {
      Check(x.file_offset >= file_end, "extents are in file order and do not overlap");
      Check(x.length <= e.size && x.file_offset <= e.size - x.length, "extents lie inside the file");
      Check(x.stream_offset <= in.position() && x.length <= in.position() - x.stream_offset,
            "extents lie in the stream read so far");
      file_end = x.file_offset + x.length;
    }
  }
  return 0;
}
