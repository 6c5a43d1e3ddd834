// A gzip checkpoint's stored form (from the store, or inside an index).
#include <string_view>

#include "fuzz_check.h"
#include "ucrfs/index/gzip_index.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ucrfs::index;
  auto cp = Checkpoint::Deserialize(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!cp.ok()) return 0;
  ucrfs::fuzz::Check(cp->bits <= 7 && cp->window.size() <= 32768, "bits and window are in range");
  auto again = Checkpoint::Deserialize(cp->Serialize());
  ucrfs::fuzz::Check(again.ok() && again->out_offset == cp->out_offset && again->in_offset == cp->in_offset &&
                         again->bits == cp->bits && again->window == cp->window,
                     "a checkpoint read back is the one written");
  return 0;
}
