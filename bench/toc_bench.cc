// Parses one lazy layer's TOC the way ucrfs does, and reports how fast.
//
//   ucrfs_toc_bench [--runs N] TOC.json
//
// TOC.json is a TOC's JSON ({"version":1,"entries":[...]}: an eStargz
// layer's stargz.index.json, or a zstd:chunked manifest). It is compressed
// once into a zstd:chunked manifest, then, N times each (default 7):
//   parse_toc   ParseToc: zstd decode, SHA-256 of the JSON, reading the JSON,
//               building the entries and chunks; the Toc is freed untimed
//   zstd        the zstd decode alone
//   dom         nlohmann::json::parse of the JSON and freeing the DOM: what
//               any reader through nlohmann's DOM pays before it looks at it
//   sax         nlohmann's SAX parser with a handler that does nothing: the
//               floor for a reader on nlohmann's lexer
// Chunks must lie before the TOC: the manifest is placed at 2^62.
//
// Prints one JSON object: the median and minimum milliseconds of each.
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ucrfs/common/file.h"
#include "ucrfs/index/toc.h"

namespace {

using namespace ucrfs;
using namespace ucrfs::index;
using Json = nlohmann::json;

class NullSax final : public nlohmann::json_sax<Json> {
 public:
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }
};

struct Times {
  double median_ms = 0, min_ms = 0;
};

// Runs `f` `runs` times, and `after` (untimed) after each; `f` returns false
// on failure.
Times Time(int runs, const std::function<bool()>& f, const std::function<void()>& after = [] {}) {
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    if (!f()) return {-1, -1};
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    after();
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front()};
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 7;
  std::string path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::stoi(argv[++i]));
    } else if (!a.empty() && a[0] != '-' && path.empty()) {
      path = a;
    } else {
      path.clear();
      break;
    }
  }
  if (path.empty()) {
    std::fprintf(stderr, "usage: ucrfs_toc_bench [--runs N] TOC.json\n");
    return 2;
  }
  auto json = ReadFile(path);
  if (!json.ok()) {
    std::fprintf(stderr, "ucrfs_toc_bench: %s\n", json.error().message().c_str());
    return 1;
  }
  std::string z(ZSTD_compressBound(json->size()), '\0');
  size_t zn = ZSTD_compress(z.data(), z.size(), json->data(), json->size(), 3);
  if (ZSTD_isError(zn)) {
    std::fprintf(stderr, "ucrfs_toc_bench: zstd: %s\n", ZSTD_getErrorName(zn));
    return 1;
  }
  z.resize(zn);
  TocLocation loc;
  loc.format = TocFormat::kZstdChunked;
  loc.offset = uint64_t{1} << 62;
  loc.size = z.size();
  loc.uncompressed_size = json->size();
  const Digest digest = Digest::Sha256Of(*json);

  auto first = ParseToc(loc, z, digest);
  if (!first.ok()) {
    std::fprintf(stderr, "ucrfs_toc_bench: %s\n", first.error().message().c_str());
    return 1;
  }
  const size_t entries = first->entries.size();
  first = Error(Errc::kInternal, "freed");

  std::optional<Result<Toc>> toc;
  Times parse = Time(
      runs,
      [&] {
        toc.emplace(ParseToc(loc, z, digest));
        return toc->ok();
      },
      [&] { toc.reset(); });
  std::string out(json->size(), '\0');
  Times zstd = Time(runs, [&] { return ZSTD_decompress(out.data(), out.size(), z.data(), z.size()) == out.size(); });
  Times dom = Time(runs, [&] { return !Json::parse(*json, nullptr, false).is_discarded(); });
  Times sax = Time(runs, [&] {
    NullSax h;
    return Json::sax_parse(*json, &h);
  });
  std::printf("%s\n",
              fmt::format("{{\"toc\": \"{}\", \"json_bytes\": {}, \"entries\": {}, \"runs\": {}, "
                          "\"parse_toc_ms\": {:.2f}, \"parse_toc_min_ms\": {:.2f}, \"us_per_entry\": {:.2f}, "
                          "\"zstd_ms\": {:.2f}, \"dom_ms\": {:.2f}, \"sax_ms\": {:.2f}}}",
                          path, json->size(), entries, runs, parse.median_ms, parse.min_ms,
                          entries ? parse.median_ms * 1000 / static_cast<double>(entries) : 0.0, zstd.median_ms,
                          dom.median_ms, sax.median_ms)
                  .c_str());
  return 0;
}
