// Indexes one layer file the way ucrfs does, and reports how fast.
//
//   ucrfs_index_bench [--mode index|drain|zlib] [--readahead BYTES] LAYER
//
// --mode index (default) is what layers.cc's Scan does for a tar or gzip
// layer: GzipIndexingStream (gzip, by magic) or FileStream (anything else),
// TarReader::Next until the end keeping every entry in a vector, then draining
// the rest of the stream in 64 KiB reads. The checkpoints are then serialized
// as EnsureLayerIndexed would before its LMDB puts (timed apart; no LMDB here).
// --mode drain reads the decoded stream to its end in 64 KiB reads, without
// parsing tar (gzip: inflate + checkpoints only). --mode zlib inflates with
// plain zlib, 256 KiB buffers, no checkpoints: the floor for any gzip indexer.
// --readahead BYTES puts a read-ahead buffer of that size between the stream
// and the tar reader (an experiment, not what ucrfs does today).
//
// Prints one JSON object. MB are 10^6 bytes; cpu is user+sys from getrusage.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "file_stream.h"
#include "ucrfs/index/gzip_index.h"
#include "ucrfs/index/stream.h"
#include "ucrfs/index/tar.h"

namespace {

using namespace ucrfs;
using namespace ucrfs::index;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Cpu {
  double user = 0, sys = 0;
  long max_rss_kib = 0;
};

Cpu CpuNow() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto tv = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return {tv(ru.ru_utime), tv(ru.ru_stime), ru.ru_maxrss};
}

// Serves small reads (tar headers, padding) from a large buffer so the
// decoder underneath is called with big output buffers.
class ReadAhead final : public ByteStream {
 public:
  ReadAhead(ByteStream& in, size_t cap) : in_(in), buf_(new char[cap]), cap_(cap) {}
  Result<size_t> Read(char* buf, size_t n) override {
    if (off_ == len_) {
      if (n >= cap_) return in_.Read(buf, n);  // large reads bypass the buffer
      UCRFS_ASSIGN(len_, in_.Read(buf_.get(), cap_));
      off_ = 0;
      if (len_ == 0) return size_t{0};
    }
    size_t k = std::min(n, len_ - off_);
    std::memcpy(buf, buf_.get() + off_, k);
    off_ += k;
    return k;
  }
  Status Skip(uint64_t n) override {
    uint64_t k = std::min<uint64_t>(n, len_ - off_);
    off_ += k;
    n -= k;
    if (n >= cap_) return in_.Skip(n);  // file data: the stream's own skip (a seek for FileStream)
    while (n > 0) {  // padding, small files: refill and discard through our own buffer
      UCRFS_ASSIGN(len_, in_.Read(buf_.get(), cap_));
      off_ = 0;
      if (len_ == 0) return Error(Errc::kMalformed, "unexpected end of stream");
      k = std::min<uint64_t>(n, len_);
      off_ = k;
      n -= k;
    }
    return Ok();
  }
  uint64_t position() const override { return in_.position() - (len_ - off_); }

 private:
  ByteStream& in_;
  std::unique_ptr<char[]> buf_;
  size_t cap_, len_ = 0, off_ = 0;
};

struct Out {
  std::string format;
  uint64_t decoded = 0, entries = 0, checkpoints = 0, checkpoint_bytes = 0;
  double serialize_s = 0;
};

// layers.cc ReadAllEntries, verbatim in substance.
Status ReadAllEntries(ByteStream& s, std::vector<TarEntry>* entries, uint64_t* decoded) {
  TarReader reader(s);
  for (;;) {
    TarEntry e;
    UCRFS_ASSIGN(bool more, reader.Next(&e));
    if (!more) break;
    entries->push_back(std::move(e));
  }
  char buf[1 << 16];
  for (;;) {
    UCRFS_ASSIGN(size_t n, s.Read(buf, sizeof buf));
    if (n == 0) break;
  }
  *decoded = s.position();
  return Ok();
}

Status Drain(ByteStream& s, uint64_t* decoded) {
  std::vector<char> buf(1 << 16);
  for (;;) {
    UCRFS_ASSIGN(size_t n, s.Read(buf.data(), buf.size()));
    if (n == 0) break;
  }
  *decoded = s.position();
  return Ok();
}

Status PlainZlib(const std::string& path, uint64_t* decoded) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error(Errc::kIo, "open " + path);
  z_stream z{};
  if (inflateInit2(&z, 47) != Z_OK) return Error(Errc::kInternal, "inflateInit2");
  std::vector<unsigned char> in(256 << 10), out(256 << 10);
  uint64_t total = 0;
  bool eof = false;
  Status st = Ok();
  for (;;) {
    if (z.avail_in == 0 && !eof) {
      ssize_t got = ::read(fd, in.data(), in.size());
      if (got < 0) { st = Error(Errc::kIo, "read"); break; }
      if (got == 0) eof = true;
      z.next_in = in.data();
      z.avail_in = static_cast<uInt>(got);
    }
    if (z.avail_in == 0 && eof) break;
    z.next_out = out.data();
    z.avail_out = static_cast<uInt>(out.size());
    int ret = inflate(&z, Z_NO_FLUSH);
    total += out.size() - z.avail_out;
    if (ret == Z_STREAM_END) {
      if (z.avail_in == 0 && !eof) {  // another member may follow
        ssize_t got = ::read(fd, in.data(), in.size());
        if (got <= 0) break;
        z.next_in = in.data();
        z.avail_in = static_cast<uInt>(got);
      }
      if (z.avail_in == 0) break;
      inflateReset(&z);
      continue;
    }
    if (ret != Z_OK && ret != Z_BUF_ERROR) { st = Error(Errc::kMalformed, "corrupt gzip"); break; }
  }
  inflateEnd(&z);
  ::close(fd);
  *decoded = total;
  return st;
}

Result<bool> IsGzip(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error(Errc::kIo, "open " + path);
  unsigned char m[2] = {0, 0};
  ssize_t got = ::pread(fd, m, 2, 0);
  ::close(fd);
  return got == 2 && m[0] == 0x1f && m[1] == 0x8b;
}

Status Run(const std::string& path, const std::string& mode, size_t readahead, Out* out) {
  UCRFS_ASSIGN(bool gz, IsGzip(path));
  out->format = gz ? "gzip" : "tar";
  if (mode == "zlib") {
    if (!gz) return Error(Errc::kInvalidArgument, "--mode zlib needs a gzip layer");
    return PlainZlib(path, &out->decoded);
  }
  std::unique_ptr<GzipIndexingStream> gzs;
  std::unique_ptr<FileStream> fs;
  ByteStream* s = nullptr;
  if (gz) {
    UCRFS_ASSIGN(gzs, GzipIndexingStream::Open(path));
    s = gzs.get();
  } else {
    UCRFS_ASSIGN(fs, FileStream::Open(path));
    s = fs.get();
  }
  std::unique_ptr<ReadAhead> ra;
  if (readahead > 0) {
    ra = std::make_unique<ReadAhead>(*s, readahead);
    s = ra.get();
  }
  if (mode == "drain") {
    UCRFS_TRY(Drain(*s, &out->decoded));
  } else {
    std::vector<TarEntry> entries;
    UCRFS_TRY(ReadAllEntries(*s, &entries, &out->decoded));
    out->entries = entries.size();
  }
  if (gzs) {
    std::vector<Checkpoint> cps = gzs->checkpoints();  // layers.cc copies them too
    out->checkpoints = cps.size();
    double t = Now();
    for (const auto& cp : cps) out->checkpoint_bytes += cp.Serialize().size();
    out->serialize_s = Now() - t;
  }
  return Ok();
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = "index", path;
  size_t readahead = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--mode" && i + 1 < argc) {
      mode = argv[++i];
    } else if (a == "--readahead" && i + 1 < argc) {
      readahead = std::stoull(argv[++i]);
    } else if (!a.empty() && a[0] != '-' && path.empty()) {
      path = a;
    } else {
      std::fprintf(stderr, "usage: ucrfs_index_bench [--mode index|drain|zlib] [--readahead BYTES] LAYER\n");
      return 2;
    }
  }
  if (path.empty() || (mode != "index" && mode != "drain" && mode != "zlib")) {
    std::fprintf(stderr, "usage: ucrfs_index_bench [--mode index|drain|zlib] [--readahead BYTES] LAYER\n");
    return 2;
  }
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) {
    std::perror(path.c_str());
    return 1;
  }
  Cpu c0 = CpuNow();
  double t0 = Now();
  Out out;
  Status s = Run(path, mode, readahead, &out);
  double wall = Now() - t0;
  Cpu c1 = CpuNow();
  if (!s.ok()) {
    std::fprintf(stderr, "ucrfs_index_bench: %s\n", s.error().message().c_str());
    return 1;
  }
  double cpu = (c1.user - c0.user) + (c1.sys - c0.sys);
  std::printf("%s\n",
              fmt::format("{{\"layer\": \"{}\", \"format\": \"{}\", \"mode\": \"{}\", \"readahead\": {}, "
                          "\"decoded_bytes\": {}, \"compressed_bytes\": {}, \"entries\": {}, \"checkpoints\": {}, "
                          "\"checkpoint_serialized_bytes\": {}, \"checkpoint_serialize_s\": {:.4f}, "
                          "\"wall_s\": {:.4f}, \"cpu_s\": {:.4f}, \"user_s\": {:.4f}, \"sys_s\": {:.4f}, "
                          "\"mb_per_s\": {:.1f}, \"mb_per_cpu_s\": {:.1f}, \"max_rss_kib\": {}}}",
                          path, out.format, mode, readahead, out.decoded,
                          out.format == "gzip" ? static_cast<uint64_t>(st.st_size) : 0, out.entries,
                          out.checkpoints, out.checkpoint_bytes, out.serialize_s, wall, cpu, c1.user - c0.user,
                          c1.sys - c0.sys, out.decoded / wall / 1e6, cpu > 0 ? out.decoded / cpu / 1e6 : 0.0,
                          c1.max_rss_kib)
                  .c_str());
  return 0;
}
