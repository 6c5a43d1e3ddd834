// Image names as users and Mesos give them, and registry endpoints. One
// parsed prints back to a name that parses to the same reference.
#include <string_view>

#include "fuzz_check.h"
#include "ucrfs/fetch/manifest.h"
#include "ucrfs/fetch/reference.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ucrfs::fetch;
  std::string_view s(reinterpret_cast<const char*>(data), size);
  (void)ImageRef::Parse(s);
  (void)AppcRef::Parse(s);
  (void)ParseRegistryEndpoint(s);
  (void)Platform::Parse(s);
  (void)ValidateAppcImageId(s);
  auto ref = Reference::Parse(s);
  if (ref.ok()) {
    auto again = Reference::Parse(ref->str());
    ucrfs::fuzz::Check(again.ok() && again->str() == ref->str(), "a reference prints to one that parses the same");
  }
  return 0;
}
