// Traces (`mount --record`, or pushed beside an index: anyone may write
// one). One accepted serializes to a trace that parses to itself.
#include <string_view>

#include "fuzz_check.h"
#include "ucrfs/index/trace.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ucrfs::index;
  auto trace = ParseTrace(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!trace.ok()) return 0;
  for (const TraceRead& r : trace->reads) {
    ucrfs::fuzz::Check(!r.path.empty() && r.path.front() == '/', "a trace path is absolute");
    ucrfs::fuzz::Check(r.length > 0 && r.offset <= kTraceMaxEnd && r.length <= kTraceMaxEnd - r.offset,
                       "a trace range is bounded");
  }
  auto again = ParseTrace(SerializeTrace(*trace));
  ucrfs::fuzz::Check(again.ok() && *again == *trace, "a trace read back is the one written");
  return 0;
}
