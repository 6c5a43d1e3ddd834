// Inflates concatenated gzip members the way a lazy eStargz read does, and
// reports how fast against zlib in the same run.
//
//   ucrfs_inflate_bench [--runs N] [--mb M] FILE
//
// FILE holds gzip members back to back: an eStargz blob, whose every chunk
// is a member of its own. The members that end in its first M MiB (default
// 32) are taken as chunks, and all of them are decoded N times (default 7):
//   zlib        each member inflated by zlib (its CRC32 checked) into a
//               string, and the SHA-256 of that: the peer, and what ucrfs
//               did before
//   decode      DecodeChunk of each: ucrfs's inflate, the copy into the
//               chunk and the SHA-256 of it
// Prints one JSON object: the median and minimum milliseconds of each, the
// bytes in and out, and decode's median as a ratio to zlib's.
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "ucrfs/common/digest.h"
#include "ucrfs/common/file.h"
#include "ucrfs/index/toc.h"

namespace {

using namespace ucrfs;
using namespace ucrfs::index;

struct Times {
  double median_ms = 0, min_ms = 0;
};

Times Time(int runs, const std::function<bool()>& f) {
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    if (!f()) return {-1, -1};
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front()};
}

// Inflates the gzip member at the start of `in` with zlib (its CRC32
// checked): returns the bytes out and sets *used to the member's length, or
// returns -1 when the member is corrupt or `in` ends inside it.
int64_t ZlibMember(std::string_view in, size_t* used, const std::function<void(std::string_view)>& sink) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) return -1;
  auto buf = std::make_unique<char[]>(128 * 1024);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  int64_t out = 0;
  for (;;) {
    zs.next_out = reinterpret_cast<Bytef*>(buf.get());
    zs.avail_out = 128 * 1024;
    int r = inflate(&zs, Z_NO_FLUSH);
    size_t got = 128 * 1024 - zs.avail_out;
    out += static_cast<int64_t>(got);
    sink({buf.get(), got});
    if (r == Z_STREAM_END) {
      *used = in.size() - zs.avail_in;
      break;
    }
    if (r != Z_OK) {
      out = -1;
      break;
    }
  }
  inflateEnd(&zs);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 7;
  uint64_t mb = 32;
  std::string path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--mb" && i + 1 < argc) {
      mb = std::max(1, std::atoi(argv[++i]));
    } else if (path.empty() && a[0] != '-') {
      path = a;
    } else {
      std::fprintf(stderr, "usage: ucrfs_inflate_bench [--runs N] [--mb M] FILE\n");
      return 2;
    }
  }
  if (path.empty()) {
    std::fprintf(stderr, "usage: ucrfs_inflate_bench [--runs N] [--mb M] FILE\n");
    return 2;
  }
  auto data = ReadFileRange(path, 0, mb << 20);
  if (!data.ok()) {
    std::fprintf(stderr, "%s\n", data.error().message().c_str());
    return 1;
  }
  // One pass to find the members that end inside the prefix, and what they hold.
  std::vector<Chunk> chunks;
  size_t at = 0;
  for (;;) {
    std::string plain;
    size_t used = 0;
    if (ZlibMember(std::string_view(*data).substr(at), &used, [&](std::string_view s) { plain.append(s); }) < 0) {
      break;  // cut inside this member, or not gzip
    }
    Chunk c;
    c.blob_offset = at;
    c.blob_size = used;
    c.size = plain.size();
    c.digest = Digest::Sha256Of(plain);
    chunks.push_back(c);
    at += used;
  }
  if (chunks.empty()) {
    std::fprintf(stderr, "%s: no complete gzip member in its first %llu MiB\n", path.c_str(),
                 static_cast<unsigned long long>(mb));
    return 1;
  }
  uint64_t bytes_in = at, bytes_out = 0;
  for (const Chunk& c : chunks) bytes_out += c.size;

  Times zlib = Time(runs, [&] {
    for (const Chunk& c : chunks) {
      std::string out;
      out.reserve(c.size);
      size_t used = 0;
      std::string_view in = std::string_view(*data).substr(c.blob_offset, c.blob_size);
      if (ZlibMember(in, &used, [&](std::string_view s) { out.append(s); }) != static_cast<int64_t>(c.size)) {
        return false;
      }
      if (Digest::Sha256Of(out) != c.digest) return false;
    }
    return true;
  });
  Times decode = Time(runs, [&] {
    for (const Chunk& c : chunks) {
      auto r = DecodeChunk(TocFormat::kEstargz, c, std::string_view(*data).substr(c.blob_offset, c.blob_size));
      if (!r.ok()) {
        std::fprintf(stderr, "%s\n", r.error().message().c_str());
        return false;
      }
    }
    return true;
  });
  std::printf("%s\n", fmt::format(R"({{"bytes_in":{},"bytes_out":{},"chunks":{},"runs":{},)"
                                  R"("zlib":{{"median_ms":{:.2f},"min_ms":{:.2f}}},)"
                                  R"("decode":{{"median_ms":{:.2f},"min_ms":{:.2f}}},"decode_to_zlib":{:.3f}}})",
                                  bytes_in, bytes_out, chunks.size(), runs, zlib.median_ms, zlib.min_ms, decode.median_ms,
                                  decode.min_ms, decode.median_ms / zlib.median_ms)
                          .c_str());
  return zlib.median_ms < 0 || decode.median_ms < 0 ? 1 : 0;
}
